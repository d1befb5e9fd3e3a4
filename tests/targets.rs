//! Each target directory comes up from nothing to `Available=True` through the public API,
//! answers through the aggregator (kubectl included), and tears down leaving no process.

use std::time::Duration;

use k8s_openapi::kube_aggregator::pkg::apis::apiregistration::v1::APIService;
use kube::Api;
use kube_harness::Cluster;
use kube_harness::target::{Target, apply::available_condition};
use rstest::rstest;

mod common;
use common::{cluster, target_dir};

#[rstest]
#[tokio::test]
async fn wardle_comes_up_behind_the_aggregator_and_goes_away(
    #[future] cluster: &'static Cluster,
) -> anyhow::Result<()> {
    let cluster = cluster.await;
    let target = Target::load(target_dir("wardle"))?;
    let running = cluster.up_target(&target).await?;
    println!("wardle timings: {:?}", running.timings());
    let client = cluster.client().await?;

    let apiservices: Api<APIService> = Api::all(client.clone());
    let svc = apiservices.get("v1alpha1.wardle.example.com").await?;
    let available = available_condition(&svc)
        .map(|(status, reason, message)| serde_json::json!({"status": status, "reason": reason, "message": message}));
    insta::assert_yaml_snapshot!("wardle_available_condition", available);

    let resources = client
        .request_text(http::Request::get("/apis/wardle.example.com/v1alpha1").body(Vec::new())?)
        .await?;
    let resources: serde_json::Value = serde_json::from_str(&resources)?;
    insta::assert_yaml_snapshot!("wardle_v1alpha1_resources", resources);

    // The built kubectl, through the aggregator.
    let out = std::process::Command::new(cluster.assets().kubectl())
        .args(["get", "flunders", "-A", "-o", "name"])
        .env("KUBECONFIG", cluster.kubeconfig_path())
        .output()?;
    assert!(out.status.success(), "kubectl get flunders: {out:?}");

    let backend_pid = running
        .backend()
        .map(|b| b.pid())
        .ok_or_else(|| anyhow::anyhow!("no backend"))?;
    running.down(cluster).await?;
    assert!(apiservices.get_opt("v1alpha1.wardle.example.com").await?.is_none());
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !kube_harness::process::live_group_members(backend_pid).is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "sample-apiserver still running after down"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

#[rstest]
#[tokio::test]
async fn requests_comes_up_behind_the_aggregator_and_serves_its_sample(
    #[future] cluster: &'static Cluster,
) -> anyhow::Result<()> {
    let cluster = cluster.await;
    let target = Target::load(target_dir("requests"))?;
    let running = cluster.up_target(&target).await?;
    println!("requests timings: {:?}", running.timings());
    let client = cluster.client().await?;

    let svc = Api::<APIService>::all(client.clone())
        .get("v1beta1.k8s.wujiuye.com")
        .await?;
    let (status, reason, _) = available_condition(&svc).unwrap_or_default();
    assert_eq!((status.as_str(), reason.as_str()), ("True", "Passed"));

    let resources = client
        .request_text(http::Request::get("/apis/k8s.wujiuye.com/v1beta1").body(Vec::new())?)
        .await?;
    let resources: serde_json::Value = serde_json::from_str(&resources)?;
    insta::assert_yaml_snapshot!("requests_v1beta1_resources", resources);

    // The sample object was applied through the aggregator; kubectl reads it back.
    let out = std::process::Command::new(cluster.assets().kubectl())
        .args([
            "get",
            "requests.v1beta1.k8s.wujiuye.com",
            "-A",
            "-o",
            "jsonpath={.items[*].resources}",
        ])
        .env("KUBECONFIG", cluster.kubeconfig_path())
        .output()?;
    assert!(out.status.success(), "kubectl get requests: {out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        r#"{"cpu":"100m","memory":"100Mi"}"#
    );

    running.down(cluster).await?;
    Ok(())
}

#[rstest]
#[tokio::test]
async fn samples_crd_is_established_and_its_controller_reconciles(
    #[future] cluster: &'static Cluster,
) -> anyhow::Result<()> {
    use kube::api::DynamicObject;
    use kube::core::{ApiResource, GroupVersionKind};
    use kube::runtime::wait::await_condition;

    let cluster = cluster.await;
    let target = Target::load(target_dir("samples"))?;
    let running = cluster.up_target(&target).await?;
    let client = cluster.client().await?;
    let resource =
        ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk("example.com", "v1alpha1", "Sample"), "samples");
    let samples: Api<DynamicObject> = Api::namespaced_with(client, "default", &resource);
    let reconciled = |obj: Option<&DynamicObject>| {
        obj.and_then(|o| o.metadata.annotations.as_ref())
            .is_some_and(|a| a.contains_key("samples.example.com/reconciled-test-string"))
    };
    let sample = tokio::time::timeout(
        Duration::from_secs(30),
        await_condition(samples, "first-sample", reconciled),
    )
    .await??
    .ok_or_else(|| anyhow::anyhow!("first-sample disappeared"))?;
    let mut sample = serde_json::to_value(sample)?;
    kube_harness::snapshot::redact(&mut sample);
    insta::assert_yaml_snapshot!("samples_reconciled_object", sample);
    let backend_pid = running
        .backend()
        .map(|b| b.pid())
        .ok_or_else(|| anyhow::anyhow!("no backend"))?;
    running.down(cluster).await?;
    assert!(
        kube_harness::process::live_group_members(backend_pid).is_empty(),
        "controller still running"
    );
    Ok(())
}

/// Applying a target that fails part-way reports the file and object, and removes what it had
/// already applied, so the shared cluster stays clean for other tests.
#[rstest]
#[case::unknown_kind("unknown-kind", "before-the-widget")]
#[case::backend_exits("backend-exits", "backend-exits-config")]
#[case::backend_missing_program("backend-missing-program", "backend-missing-program-config")]
#[case::backend_hangs("backend-hangs", "backend-hangs-config")]
#[case::conversion_webhook_down("conversion-webhook-down", "conversion-webhook-down-config")]
#[case::admission_webhook_refused("admission-webhook-refused", "admission-webhook-refused-config")]
#[tokio::test]
async fn a_failed_bring_up_is_reported_and_rolled_back(
    #[future] cluster: &'static Cluster,
    #[case] case: &str,
    #[case] applied_first: &str,
) -> anyhow::Result<()> {
    use k8s_openapi::api::core::v1::ConfigMap;
    let cluster = cluster.await;
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/apply-fixtures")
        .join(case);
    let target = Target::load(&dir)?;
    let err = cluster
        .up_target(&target)
        .await
        .err()
        .ok_or_else(|| anyhow::anyhow!("{case} came up"))?;
    let message = err
        .to_string()
        .replace(&format!("{}/", dir.display()), "")
        .replace(&cluster.info().run_dir.display().to_string(), "[run-dir]");
    // What discovery itself answered is upstream's wording; keep ours.
    let shown = kube_harness::snapshot::redact_ports(message.split(" (discovery said:").next().unwrap_or_default());
    insta::with_settings!({ snapshot_suffix => case }, {
        insta::assert_snapshot!("failed_bring_up", shown);
    });
    let configmaps: Api<ConfigMap> = Api::namespaced(cluster.client().await?, "default");
    assert!(
        configmaps.get_opt(applied_first).await?.is_none(),
        "{applied_first} was left behind"
    );
    Ok(())
}

/// A webhook backend that takes the connection and hangs up without an answer: bring-up fails
/// naming kube-harness's reachability probe and what it sent, with the backend's log, which
/// shows the probe's request arriving (it once failed as a bare
/// `peer closed connection without sending TLS close_notify`).
#[rstest]
#[tokio::test]
async fn a_webhook_that_hangs_up_on_the_probe_is_named_with_the_backend_log(
    #[future] cluster: &'static Cluster,
) -> anyhow::Result<()> {
    let cluster = cluster.await;
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/apply-fixtures/admission-webhook-hangs-up");
    let err = cluster
        .up_target(&Target::load(&dir)?)
        .await
        .err()
        .ok_or_else(|| anyhow::anyhow!("a webhook that never answers came up"))?
        .to_string();
    for expected in [
        "ValidatingWebhookConfiguration/hanging-up-webhook: webhook deny.hanging-up.example.com",
        "kube-harness's reachability probe got no HTTP answer",
        "POST https://hanging-up-webhook.default.svc:",
        "/validate (the name kube-apiserver verifies), body: AdmissionReview uid kube-harness-reachability-probe: ",
        "last lines of the backend's log:",
        "webhook: POST /validate HTTP/1.1: hanging up without an answer",
    ] {
        assert!(err.contains(expected), "{expected:?} is not in:\n{err}");
    }
    Ok(())
}

/// `env:` in a backend spec reaches the backend, placeholders expanded (it was parsed and
/// validated but never passed on).
#[rstest]
#[tokio::test]
async fn a_backend_gets_the_environment_its_spec_names(#[future] cluster: &'static Cluster) -> anyhow::Result<()> {
    let cluster = cluster.await;
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/apply-fixtures/backend-env");
    let running = cluster.up_target(&Target::load(&dir)?).await?;
    let port = running
        .port()
        .ok_or_else(|| anyhow::anyhow!("the backend got no port"))?;
    let log = running
        .backend()
        .map(|b| std::fs::read_to_string(b.log()))
        .transpose()?
        .unwrap_or_default();
    running.down(cluster).await?;
    assert!(
        log.contains(&format!("plain=a value without placeholders port={port}")),
        "backend log: {log}"
    );
    Ok(())
}
