//! Bad environments give clear, typed errors and leave nothing running: a child that crashes
//! at start, one that never becomes ready, and a port that is already taken.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use kube_harness::{ControlPlane, Error};

/// An assets directory whose binaries are the given shell scripts; `real` ones are linked to
/// the real binaries.
fn assets_dir(name: &str, scripts: &[(&str, &str)]) -> anyhow::Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("kh-errors-{name}-{}", std::process::id()));
    if dir.exists() {
        std::fs::remove_dir_all(&dir)?;
    }
    std::fs::create_dir_all(&dir)?;
    let real = kube_harness::assets::Resolver::new(kube_harness::assets::KubeVersion::from_env()?).resolve()?;
    for binary in kube_harness::assets::BINARIES {
        let target = dir.join(binary);
        match scripts.iter().find(|(b, _)| *b == binary) {
            Some((_, body)) => {
                std::fs::write(&target, format!("#!/bin/sh\n{body}\n"))?;
                std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o755))?;
            }
            None => std::os::unix::fs::symlink(real.dir().join(binary), &target)?,
        }
    }
    Ok(dir)
}

fn pid_alive(pid_file: &Path) -> bool {
    std::fs::read_to_string(pid_file)
        .ok()
        .and_then(|p| p.trim().parse::<u32>().ok())
        .is_some_and(kube_harness::process::alive)
}

#[tokio::test]
async fn an_etcd_that_crashes_at_start_is_reported_with_its_log() -> anyhow::Result<()> {
    let dir = assets_dir("crash", &[("etcd", "echo 'etcd: simulated fatal error' >&2; exit 3")])?;
    let err = ControlPlane::builder().with_assets_dir(&dir).start().await.err();
    let Some(err @ Error::ExitedBeforeReady { component: "etcd", .. }) = err else {
        panic!("expected ExitedBeforeReady for etcd, got {err:?}");
    };
    let text = err.to_string();
    assert!(text.contains("simulated fatal error"), "{text}");
    assert!(text.contains("exit status: 3"), "{text}");
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}

#[tokio::test]
async fn a_component_that_never_becomes_ready_times_out_and_is_killed() -> anyhow::Result<()> {
    let pid_file = std::env::temp_dir().join(format!("kh-errors-hang-pid-{}", std::process::id()));
    let script = format!(
        "echo $$ > {}; echo 'etcd: waiting forever'; exec sleep 600",
        pid_file.display()
    );
    let dir = assets_dir("hang", &[("etcd", &script)])?;
    let started = Instant::now();
    let err = ControlPlane::builder()
        .with_assets_dir(&dir)
        .with_start_timeout(Duration::from_secs(2))
        .start()
        .await
        .err();
    let Some(err @ Error::StartupTimeout { component: "etcd", .. }) = err else {
        panic!("expected StartupTimeout for etcd, got {err:?}");
    };
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "took {:?}",
        started.elapsed()
    );
    assert!(err.to_string().contains("waiting forever"), "{err}");
    let deadline = Instant::now() + Duration::from_secs(10);
    while pid_alive(&pid_file) {
        assert!(Instant::now() < deadline, "the hung etcd was not killed");
        std::thread::sleep(Duration::from_millis(20));
    }
    std::fs::remove_dir_all(&dir)?;
    std::fs::remove_file(&pid_file)?;
    Ok(())
}

#[tokio::test]
async fn a_taken_port_is_retried_and_then_reported() -> anyhow::Result<()> {
    let taken = std::net::TcpListener::bind(("127.0.0.1", 0))?;
    let port = taken.local_addr()?.port();
    let err = ControlPlane::builder()
        .with_apiserver_arg("secure-port", port.to_string())
        .start()
        .await
        .err();
    let Some(
        err @ Error::Ports {
            component: "kube-apiserver",
            attempts: 4,
            ..
        },
    ) = err
    else {
        panic!("expected a Ports error for kube-apiserver, got {err:?}");
    };
    assert!(err.to_string().contains("address already in use"), "{err}");
    Ok(())
}

#[tokio::test]
async fn an_assets_directory_without_kube_apiserver_names_it() -> anyhow::Result<()> {
    let dir = assets_dir("missing", &[])?;
    std::fs::remove_file(dir.join("kube-apiserver"))?;
    let err = ControlPlane::builder().with_assets_dir(&dir).start().await.err();
    let Some(
        err @ Error::AssetsDirIncomplete {
            binary: "kube-apiserver",
            ..
        },
    ) = err
    else {
        panic!("expected AssetsDirIncomplete for kube-apiserver, got {err:?}");
    };
    assert!(err.to_string().contains("KUBE_HARNESS_ASSETS"), "{err}");
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}

/// Killing etcd or kube-apiserver under a running test: `Cluster::watch` turns the request
/// that would otherwise hang (kube-apiserver holds requests for a minute without etcd) into
/// an `Error::Exited` naming the component, with its log tail, within seconds.
#[rstest::rstest]
#[case::etcd("etcd", 1)]
#[case::kube_apiserver("kube-apiserver", 0)]
#[tokio::test]
async fn a_component_killed_mid_test_fails_the_test_within_seconds(
    #[case] component: &str,
    #[case] index: usize,
) -> anyhow::Result<()> {
    use k8s_openapi::api::core::v1::Namespace;
    let cluster = ControlPlane::builder().start().await?;
    let api: kube::Api<Namespace> = kube::Api::all(cluster.client().await?);
    cluster.watch(api.list(&Default::default())).await??;
    let pid = cluster.pids()[index];
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(pid)?),
        nix::sys::signal::Signal::SIGKILL,
    )?;
    let started = Instant::now();
    // A loop of requests, as a test would make; it must end with the watch's error.
    let work = async {
        loop {
            let _ = api.list(&Default::default()).await;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    let err = cluster.watch(work).await.err();
    let elapsed = started.elapsed();
    let Some(Error::Exited {
        component: dead, tail, ..
    }) = &err
    else {
        panic!("expected Error::Exited, got {err:?}");
    };
    assert_eq!(*dead, component);
    assert!(elapsed < Duration::from_secs(5), "took {elapsed:?}");
    let message = err.as_ref().map(ToString::to_string).unwrap_or_default();
    assert!(message.contains("signal: 9"), "{message}");
    assert!(message.contains("start a new one"), "{message}");
    // The log tail is there (etcd logs at warn level, so its tail may be short but the
    // apiserver's never is).
    if component == "kube-apiserver" {
        assert!(!tail.trim().is_empty(), "{message}");
    }
    Ok(())
}

/// Binaries of another version in an environment directory (no manifest there) are caught by
/// what kube-apiserver logs at start, and named with both versions.
#[tokio::test]
async fn a_kube_apiserver_of_another_version_is_refused() -> anyhow::Result<()> {
    let real = kube_harness::assets::Resolver::new(kube_harness::assets::KubeVersion::from_env()?).resolve()?;
    let real_apiserver = real.kube_apiserver().display().to_string();
    // It says it is v1.30.0 (first, as the real one would), then runs the real binary.
    let script = format!(
        "echo 'I0101 00:00:00.000000       1 server.go:151] Version: v1.30.0' >&2\nexec {real_apiserver} \"$@\"\n"
    );
    let dir = assets_dir("wrong-version", &[("kube-apiserver", script.as_str())])?;
    // No template: the wrapper is a new binary every run and would each leave one behind.
    let err = ControlPlane::builder()
        .with_assets_dir(&dir)
        .without_etcd_template()
        .start()
        .await
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(
        err.contains(&format!(
            "is Kubernetes 1.30.0, but {} was asked for",
            kube_harness::assets::KubeVersion::from_env()?
        )) && err.contains("KUBE_HARNESS_K8S_VERSION=1.30.0"),
        "{err}"
    );
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}
