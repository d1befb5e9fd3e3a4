//! Broken copies of the shipped targets fail `verify`, each naming the rule that caught it:
//! an expected 422 that does not come (the CEL rule removed from the samples CRD), a GET
//! whose answer no longer matches its snapshot (the requests sample object changed), and a
//! conversion webhook nobody runs (added to the samples CRD). (A 500 to an allowed user: the
//! requests copy in harness/tests/cli.rs and the wardle copies in backend_identity.rs.)

use kube_harness::Target;
use kube_harness::check::{CheckResult, verify_target};

mod common;

/// Verify the copy at `dir` on a cluster of its own (two samples copies share the CRD's name).
async fn failed_checks(dir: &std::path::Path) -> anyhow::Result<Vec<CheckResult>> {
    let cluster = kube_harness::ControlPlane::builder().start().await?;
    let results = verify_target(&cluster, &Target::load(dir)?).await;
    std::fs::remove_dir_all(dir)?;
    Ok(results.into_iter().filter(|r| !r.passed).collect())
}

#[tokio::test]
async fn an_expected_422_that_does_not_come_fails_its_rule() -> anyhow::Result<()> {
    let without_cel = |file: &str, text: String| {
        if file == "crd.yaml" {
            text.replace(
                "                - rule: \"self.size() <= 64\"\n",
                "                - rule: \"true\"\n",
            )
        } else {
            text
        }
    };
    let dir = common::copy_target("samples", "samples-without-cel", without_cel)?;
    let crd = std::fs::read_to_string(dir.join("crd.yaml"))?;
    anyhow::ensure!(!crd.contains("self.size()"), "samples/crd.yaml changed shape");
    let failed = failed_checks(&dir).await?;
    let names: Vec<&str> = failed.iter().map(|r| r.check.as_str()).collect();
    assert_eq!(
        names,
        ["request: a Sample with a testString over 64 characters is refused by its CEL rule"],
        "{failed:#?}"
    );
    assert!(
        failed[0].detail.starts_with("expected 422, but POST "),
        "{}",
        failed[0].detail
    );
    assert!(failed[0].detail.contains(" answered 201"), "{}", failed[0].detail);
    Ok(())
}

#[tokio::test]
async fn a_get_whose_answer_changed_fails_its_snapshot() -> anyhow::Result<()> {
    let changed = |file: &str, text: String| {
        if file == "objects.yaml" {
            text.replace("cpu: 100m", "cpu: 200m")
        } else {
            text
        }
    };
    let dir = common::copy_target("requests", "requests-changed", changed)?;
    let failed = failed_checks(&dir).await?;
    let names: Vec<&str> = failed.iter().map(|r| r.check.as_str()).collect();
    assert_eq!(names, ["request: the nginx requests object as served"], "{failed:#?}");
    assert!(
        failed[0].detail.contains("differs from")
            && failed[0]
                .detail
                .contains("expected \"\\\"cpu\\\": \\\"100m\\\",\", got \"\\\"cpu\\\": \\\"200m\\\",\""),
        "{}",
        failed[0].detail
    );
    Ok(())
}

#[tokio::test]
async fn a_conversion_webhook_that_does_not_answer_fails_bring_up() -> anyhow::Result<()> {
    // The samples CRD with a second version and a conversion webhook nobody runs.
    let with_conversion = |file: &str, text: String| {
        if file == "crd.yaml" {
            // Appended after the last version's printer columns: a second version, and
            // spec.conversion.
            text + "    - name: v1beta1\n      served: true\n      storage: false\n      \
                    schema: {openAPIV3Schema: {type: object, x-kubernetes-preserve-unknown-fields: true}}\n  \
                    conversion:\n    strategy: Webhook\n    webhook:\n      conversionReviewVersions: [v1]\n      \
                    clientConfig:\n        service: {namespace: default, name: sample-converter, path: /convert}\n"
        } else {
            text
        }
    };
    let dir = common::copy_target("samples", "samples-with-conversion", with_conversion)?;
    anyhow::ensure!(
        std::fs::read_to_string(dir.join("crd.yaml"))?.contains("strategy: Webhook"),
        "samples/crd.yaml changed shape"
    );
    let failed = failed_checks(&dir).await?;
    let (check, detail) = failed
        .first()
        .map(|r| (r.check.clone(), r.detail.clone()))
        .unwrap_or_default();
    assert_eq!(check, "bring up", "{failed:#?}");
    assert!(
        detail.contains(
            "CustomResourceDefinition/samples.example.com: conversion webhook (service default/sample-converter:443) \
             does not answer: service \"sample-converter\" not found in namespace \"default\""
        ),
        "{detail}"
    );
    Ok(())
}
