//! What only a cluster that runs pods can show: a target's backend as a Deployment under its
//! own ServiceAccount. Runs when the shared cluster is a kind one (`KUBE_HARNESS_PROVIDER=kind`,
//! as `scripts/test` runs it); elsewhere each test prints why it skips.

mod common;

use std::time::Duration;

use kube_harness::{Capability, Target};

/// The tests below bring up copies of the same targets (one namespace, one ServiceAccount,
/// one Service): one at a time.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The shared cluster, if it runs backends in pods; `None` (reason printed) otherwise.
async fn pod_cluster() -> anyhow::Result<Option<&'static kube_harness::Cluster>> {
    let cluster = kube_harness::shared().await?;
    for capability in [Capability::RunsPods] {
        if let Some(reason) = cluster.lacks(capability) {
            println!("skipped: {reason}");
            return Ok(None);
        }
    }
    if cluster.has(Capability::HostBackends) {
        println!("skipped: this cluster reaches host backends, so targets run none in pods");
        return Ok(None);
    }
    Ok(Some(cluster))
}

/// Bring up a copy of shipped target `name` whose file `file` is changed by `edit`; the
/// bring-up must fail: its error, and how long it took.
async fn failed_bring_up(
    cluster: &kube_harness::Cluster,
    (name, copy, file): (&str, &str, &str),
    edit: impl Fn(String) -> String,
) -> anyhow::Result<(String, std::time::Duration)> {
    let dir = common::copy_target(name, copy, |f, text| if f == file { edit(text) } else { text })?;
    let target = Target::load(&dir)?;
    let started = std::time::Instant::now();
    let err = cluster.up_target(&target).await.err().map(|e| e.to_string());
    let err = err.ok_or_else(|| anyhow::anyhow!("{copy}: the bring-up succeeded"))?;
    println!("{err}");
    Ok((err, started.elapsed()))
}

#[tokio::test]
async fn a_backend_that_crashes_fails_the_bring_up_with_its_pod_state_and_log() -> anyhow::Result<()> {
    let _one = ONE_AT_A_TIME.lock().await;
    let Some(cluster) = pod_cluster().await? else {
        return Ok(());
    };
    let (err, took) = failed_bring_up(cluster, ("samples", "samples-crashing", "target.yaml"), |text| {
        text.replace(
            "args: [\"--kubeconfig={{backendKubeconfig}}\"]",
            "args: [\"--no-such-flag\"]",
        )
    })
    .await?;
    assert!(
        err.contains("Deployment default/samples-backend") && err.contains("is not ready"),
        "{err}"
    );
    assert!(err.contains("CrashLoopBackOff"), "named at once: {err}");
    assert!(err.contains("--no-such-flag"), "the container's own words: {err}");
    assert!(
        took < Duration::from_secs(60),
        "hopeless states fail before the deadline"
    );
    Ok(())
}

#[tokio::test]
async fn a_backend_without_its_rbac_is_refused_by_the_cluster_not_the_harness() -> anyhow::Result<()> {
    let _one = ONE_AT_A_TIME.lock().await;
    let Some(cluster) = pod_cluster().await? else {
        return Ok(());
    };
    // The requests server, with its RBAC file gone: in its pod it runs as its ServiceAccount
    // only, so its SubjectAccessReviews are forbidden and it never becomes ready.
    let (err, _) = failed_bring_up(cluster, ("requests", "requests-without-rbac", "rbac.yaml"), |_| {
        "apiVersion: v1\nkind: ServiceAccount\nmetadata:\n  name: requests-apiserver\n  namespace: requests-system\n"
            .to_owned()
    })
    .await?;
    assert!(
        err.contains("Deployment requests-system/requests-backend is not ready"),
        "{err}"
    );
    assert!(err.contains("CrashLoopBackOff"), "{err}");
    assert!(
        err.contains(
            "User \"system:serviceaccount:requests-system:requests-apiserver\" cannot get resource \"configmaps\""
        ),
        "the server's own words, about its own identity: {err}"
    );
    Ok(())
}

#[tokio::test]
async fn a_backend_that_never_becomes_ready_fails_at_its_deadline_with_the_probe_named() -> anyhow::Result<()> {
    let _one = ONE_AT_A_TIME.lock().await;
    let Some(cluster) = pod_cluster().await? else {
        return Ok(());
    };
    // The requests server, probed on a path it does not serve: it runs, and is never ready.
    let (err, took) = failed_bring_up(cluster, ("requests", "requests-never-ready", "target.yaml"), |text| {
        text.replace(
            "    cargoPackage: requests-apiserver\n",
            "    cargoPackage: requests-apiserver\n    readinessPath: /no-such-path\n    startTimeoutSeconds: 8\n",
        )
    })
    .await?;
    assert!(
        err.contains("Deployment requests-system/requests-backend is not ready after"),
        "{err}"
    );
    assert!(err.contains("Readiness probe failed"), "the probe's event: {err}");
    assert!(err.contains("(ready false, 0 restarts)"), "{err}");
    assert!(took < Duration::from_secs(60), "bounded by startTimeoutSeconds");
    Ok(())
}
