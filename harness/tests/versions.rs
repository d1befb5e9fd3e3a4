//! Versions are refused up front: a malformed `KUBE_HARNESS_K8S_VERSION` fails `shared()` (as
//! it fails the command line) instead of silently running the default, and a version outside
//! the verified range fails before any download or build, naming the range.

use std::process::Command;

use kube_harness::{ControlPlane, Error};

const HELPER: &str = "KUBE_HARNESS_VERSIONS_HELPER";

/// Run in a child process (the shared cluster is per process): print what `shared()` did.
#[tokio::test]
async fn shared_helper() {
    if std::env::var_os(HELPER).is_none() {
        return;
    }
    match kube_harness::shared().await {
        Ok(c) => println!("HELPER started {}", c.info().version),
        Err(e) => println!("HELPER error: {e}"),
    }
}

fn shared_with(version: &str) -> anyhow::Result<String> {
    let out = Command::new(std::env::current_exe()?)
        .args(["--exact", "shared_helper", "--nocapture", "--test-threads=1"])
        .env(HELPER, "1")
        .env("KUBE_HARNESS_K8S_VERSION", version)
        .env_remove("KUBE_HARNESS_UNVERIFIED_VERSION")
        .env_remove("KUBE_HARNESS_CLUSTER")
        .env("KUBE_HARNESS_PROVIDER", "local")
        .output()?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    stdout
        .lines()
        .find_map(|l| l.split_once("HELPER ").map(|(_, rest)| rest.to_owned()))
        .ok_or_else(|| anyhow::anyhow!("the helper printed nothing: {stdout}"))
}

#[test]
fn a_malformed_version_variable_fails_shared_naming_it() -> anyhow::Result<()> {
    assert_eq!(
        shared_with("1.30")?,
        "error: the shared cluster of this test process failed to start: KUBE_HARNESS_K8S_VERSION: invalid Kubernetes version \"1.30\": expected MAJOR.MINOR.PATCH such as 1.37.2"
    );
    Ok(())
}

#[test]
fn a_version_outside_the_verified_range_fails_shared_before_building() -> anyhow::Result<()> {
    let started = std::time::Instant::now();
    assert_eq!(
        shared_with("1.99.0")?,
        "error: the shared cluster of this test process failed to start: Kubernetes 1.99.0 is outside the versions this kube-harness is verified with (1.35.x–1.37.x); pick one of those, or set KUBE_HARNESS_UNVERIFIED_VERSION=1 to try it anyway"
    );
    // No module fetch or build was attempted (either takes many seconds).
    assert!(started.elapsed().as_secs() < 20, "took {:?}", started.elapsed());
    Ok(())
}

#[tokio::test]
async fn the_builder_refuses_an_unverified_version_up_front() -> anyhow::Result<()> {
    let err = ControlPlane::builder().with_version_str("1.30.0")?.start().await.err();
    assert!(
        matches!(&err, Some(Error::UnverifiedVersion { version, range }) if version == "1.30.0" && range == "1.35.x–1.37.x"),
        "{err:?}"
    );
    Ok(())
}
