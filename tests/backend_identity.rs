//! wardle runs as its own ServiceAccount with the RBAC sample-apiserver ships; a copy missing
//! any one of those bindings fails, and the failure names the permission and the binding that
//! usually grants it — in the check's own message, not only in the bundle.

use kube_harness::Target;
use kube_harness::check::verify_target;

mod common;

/// A wardle copy without the rbac.yaml document that names `binding`; with `timeout`, the
/// backend's start timeout in seconds.
fn wardle_without(binding: &str, timeout: Option<u64>) -> anyhow::Result<Target> {
    let edit = |file: &str, text: String| match file {
        "rbac.yaml" => text
            .split("\n---\n")
            .filter(|doc| !doc.contains(&format!("name: {binding}")))
            .collect::<Vec<_>>()
            .join("\n---\n"),
        "target.yaml" => match timeout {
            Some(t) => text.replace(
                "    serviceAccount: wardle/apiserver\n",
                &format!("    serviceAccount: wardle/apiserver\n    startTimeoutSeconds: {t}\n"),
            ),
            None => text,
        },
        _ => text,
    };
    let label = binding.trim_matches('"').replace(':', "-");
    let dir = common::copy_target("wardle", &format!("wardle-without-{label}"), edit)?;
    let rbac = std::fs::read_to_string(dir.join("rbac.yaml"))?;
    anyhow::ensure!(!rbac.contains(&format!("name: {binding}")), "rbac.yaml changed shape");
    Ok(Target::load(&dir)?)
}

/// Verify `target` on a cluster of its own: the copies share cluster-scoped names (APIServices,
/// ClusterRoleBindings), so they must not meet.
async fn failures(target: &Target) -> anyhow::Result<Vec<(String, String)>> {
    let cluster = kube_harness::ControlPlane::builder().start().await?;
    let results = verify_target(&cluster, target).await;
    std::fs::remove_dir_all(&target.dir)?;
    for r in results.iter().filter(|r| !r.passed) {
        // How long the fault took to be reported, for the record.
        println!(
            "{}: {} failed after {:.2}s",
            target.name,
            r.check,
            r.duration.as_secs_f64()
        );
    }
    Ok(results
        .into_iter()
        .filter(|r| !r.passed)
        .map(|r| (r.check, r.detail))
        .collect())
}

#[tokio::test]
async fn without_the_auth_reader_binding_bring_up_names_it() -> anyhow::Result<()> {
    let failed = failures(&wardle_without("wardle-auth-reader", Some(20))?).await?;
    let (check, detail) = failed.first().cloned().unwrap_or_default();
    assert_eq!(check, "bring up", "{failed:#?}");
    assert!(
        detail.contains("The backend's identity lacks a permission")
            && detail.contains("configmaps \"extension-apiserver-authentication\" is forbidden: User \"system:serviceaccount:wardle:apiserver\"")
            && detail.contains("Role extension-apiserver-authentication-reader"),
        "{detail}"
    );
    Ok(())
}

#[tokio::test]
async fn without_the_auth_delegator_binding_an_allowed_user_gets_a_named_500() -> anyhow::Result<()> {
    let failed = failures(&wardle_without("\"wardle:system:auth-delegator\"", None)?).await?;
    let access = failed
        .iter()
        .find(|(check, _)| check == "access: flunder-reader list wardle.example.com/v1alpha1 flunders in wardle");
    let (_, detail) = access.cloned().unwrap_or_default();
    assert!(
        detail.contains("answered 500")
            && detail.contains("subjectaccessreviews.authorization.k8s.io is forbidden")
            && detail.contains("ClusterRole system:auth-delegator"),
        "{failed:#?}"
    );
    Ok(())
}

/// sample-apiserver retries its forbidden list forever and never turns ready: with the default
/// 60 s start timeout, bring-up fails a few seconds after the first `forbidden` in its log.
#[tokio::test]
async fn without_read_access_bring_up_fails_soon_after_the_forbidden_list() -> anyhow::Result<()> {
    let target = wardle_without("sample-apiserver-clusterrolebinding", None)?;
    let cluster = kube_harness::ControlPlane::builder().start().await?;
    let results = verify_target(&cluster, &target).await;
    std::fs::remove_dir_all(&target.dir)?;
    let failed: Vec<_> = results.iter().filter(|r| !r.passed).collect();
    let bring_up = failed.first().filter(|r| r.check == "bring up");
    let Some(bring_up) = bring_up else {
        anyhow::bail!("bring up did not fail first: {failed:#?}");
    };
    let detail = &bring_up.detail;
    assert!(
        detail.contains("the backend logged a forbidden request and was still not ready 5 s later")
            && detail.contains("The backend's identity lacks a permission")
            && detail.contains("is forbidden: User \"system:serviceaccount:wardle:apiserver\" cannot list resource")
            && detail.contains("Grant it with a Role or ClusterRole allowing list on"),
        "{detail}"
    );
    // Without the early failure this waited out the whole 60 s.
    assert!(
        bring_up.duration < std::time::Duration::from_secs(40),
        "bring up failed only after {:?}",
        bring_up.duration
    );
    Ok(())
}

/// metrics-server's /readyz needs scraped metrics, which a plane without kubelets never has:
/// with the default readiness the timeout says to use /livez (as the shipped target does).
#[tokio::test]
async fn a_readyz_that_never_passes_suggests_livez() -> anyhow::Result<()> {
    let edit = |file: &str, text: String| {
        if file == "target.yaml" {
            text.replace("    readinessPath: /livez\n", "    startTimeoutSeconds: 20\n")
        } else {
            text
        }
    };
    let dir = common::copy_target("metrics", "metrics-readyz", edit)?;
    anyhow::ensure!(
        !std::fs::read_to_string(dir.join("target.yaml"))?.contains("readinessPath: /livez"),
        "metrics/target.yaml changed shape"
    );
    let failed = failures(&Target::load(&dir)?).await?;
    let (check, detail) = failed.first().cloned().unwrap_or_default();
    assert_eq!(check, "bring up", "{failed:#?}");
    assert!(
        detail.contains("backend not ready after 20s") && detail.contains("set `readinessPath: /livez`"),
        "{detail}"
    );
    Ok(())
}
