//! The command line as a user runs it.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_kube-harness");

#[test]
fn exec_runs_kubectl_against_a_fresh_cluster() -> anyhow::Result<()> {
    let out = Command::new(BIN)
        .args(["exec", "--", "kubectl", "get", "--raw", "/readyz"])
        .output()?;
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "ok");
    assert!(String::from_utf8_lossy(&out.stderr).contains("ready in"), "{out:?}");
    Ok(())
}

#[test]
fn exec_exits_with_the_commands_status() -> anyhow::Result<()> {
    let status = Command::new(BIN)
        .args(["exec", "--", "sh", "-c", "test -n \"$KUBECONFIG\" && exit 7"])
        .status()?;
    assert_eq!(status.code(), Some(7));
    Ok(())
}

/// `--feature-gates` and `--apiserver-arg` reach the cluster `exec` starts (kube-apiserver's
/// metrics report the gate off); an unknown gate and a malformed flag are refused before any
/// cluster starts, each named.
#[test]
fn exec_passes_feature_gates_and_refuses_unknown_or_malformed_ones() -> anyhow::Result<()> {
    let out = Command::new(BIN)
        .args([
            "--feature-gates",
            "WatchListCompression=false",
            "--apiserver-arg",
            "audit-log-maxage=3",
            "exec",
            "--",
            "kubectl",
            "get",
            "--raw",
            "/metrics",
        ])
        .output()?;
    assert!(out.status.success(), "{:?}", String::from_utf8_lossy(&out.stderr));
    let metrics = String::from_utf8_lossy(&out.stdout);
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("kubernetes_feature_enabled{name=\"WatchListCompression\"") && l.ends_with(" 0")),
        "WatchListCompression is not off in kube-apiserver's metrics"
    );
    for (args, words) in [
        (
            &["--feature-gates", "NoSuchGate=false"][..],
            "feature gate \"NoSuchGate\" is not known to Kubernetes",
        ),
        (
            &["--apiserver-arg", "audit-log-maxage"],
            "--apiserver-arg: \"audit-log-maxage\": expected NAME=VALUE",
        ),
        (
            &["--feature-gates", "A=maybe"],
            "--feature-gates: \"A=maybe\": expected a feature gate",
        ),
        (
            &["--publish", "x"],
            "--publish: \"x\": expected NODE_PORT or HOST_PORT:NODE_PORT",
        ),
        (&["--publish", "10250"], "--publish and --load-image are for kind"),
        (
            &["--provider", "kind", "--load-image", "kube-harness/absent:v0"],
            "--load-image kube-harness/absent:v0: no such image in the local Docker engine",
        ),
    ] {
        let started = Instant::now();
        let out = Command::new(BIN).args(args).args(["exec", "--", "true"]).output()?;
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && stderr.contains(words), "{args:?}: {stderr}");
        assert!(!stderr.contains("ready in"), "{args:?}: a cluster started: {stderr}");
        assert!(
            started.elapsed() < Duration::from_secs(15),
            "{args:?}: refused after {:?}",
            started.elapsed()
        );
    }
    Ok(())
}

#[test]
fn assets_prints_the_binaries_directory() -> anyhow::Result<()> {
    let out = Command::new(BIN).arg("assets").output()?;
    assert!(out.status.success(), "{out:?}");
    let dir = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    for b in ["kube-apiserver", "etcd", "kubectl"] {
        assert!(std::path::Path::new(&dir).join(b).is_file(), "{b} not in {dir}");
    }
    Ok(())
}

#[test]
fn a_bad_version_is_a_clear_error() -> anyhow::Result<()> {
    let out = Command::new(BIN).args(["--k8s-version", "latest", "assets"]).output()?;
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("invalid Kubernetes version \"latest\""), "{err}");
    Ok(())
}

#[test]
fn up_serves_until_sigint_and_then_cleans_up() -> anyhow::Result<()> {
    let dir = std::env::temp_dir().join(format!("kh-cli-up-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let kubeconfig = dir.join("kubeconfig");
    let mut child = Command::new(BIN)
        .args(["up", "--kubeconfig"])
        .arg(&kubeconfig)
        .stdout(Stdio::piped())
        .spawn()?;
    let stdout = child.stdout.take().ok_or_else(|| anyhow::anyhow!("no stdout"))?;
    let mut port = None;
    for line in BufReader::new(stdout).lines() {
        let line = line?;
        if let Some(rest) = line.split("is up at https://127.0.0.1:").nth(1) {
            port = rest.trim().parse::<u16>().ok();
        }
        if line.starts_with("Press Ctrl-C") {
            break;
        }
    }
    let port = port.ok_or_else(|| anyhow::anyhow!("up did not print its address"))?;
    let assets = String::from_utf8(Command::new(BIN).arg("assets").output()?.stdout)?;
    let out = Command::new(std::path::Path::new(assets.trim()).join("kubectl"))
        .args(["get", "namespace", "default", "-o", "name"])
        .env("KUBECONFIG", &kubeconfig)
        .output()?;
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "namespace/default",
        "{out:?}"
    );

    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(child.id())?),
        nix::sys::signal::Signal::SIGINT,
    )?;
    let status = child.wait()?;
    assert!(status.success(), "{status}");
    assert!(!kubeconfig.exists(), "up left its kubeconfig behind");
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpListener::bind(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "port {port} still bound after up stopped");
        std::thread::sleep(Duration::from_millis(50));
    }
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}

#[test]
fn exec_with_fixtures_serves_the_aggregated_group_to_kubectl() -> anyhow::Result<()> {
    let wardle = concat!(env!("CARGO_MANIFEST_DIR"), "/../fixtures/targets/wardle");
    let out = Command::new(BIN)
        .args([
            "exec",
            "--fixtures",
            wardle,
            "--",
            "kubectl",
            "get",
            "--raw",
            "/apis/wardle.example.com/v1alpha1",
        ])
        .output()?;
    assert!(out.status.success(), "{out:?}");
    let body: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    assert_eq!(body["groupVersion"], "wardle.example.com/v1alpha1");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("target wardle is up"),
        "{out:?}"
    );
    Ok(())
}

#[test]
fn exec_with_a_malformed_fixture_fails_before_starting_anything() -> anyhow::Result<()> {
    let bad = concat!(env!("CARGO_MANIFEST_DIR"), "/../tests/bad-fixtures/missing-kind");
    let out = Command::new(BIN)
        .args(["exec", "--fixtures", bad, "--", "true"])
        .output()?;
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("objects.yaml (document 1): missing `kind`"), "{err}");
    assert!(
        !err.contains("starting Kubernetes"),
        "a cluster was started for a malformed fixture: {err}"
    );
    Ok(())
}

#[test]
fn verify_passes_on_every_shipped_target_and_writes_junit() -> anyhow::Result<()> {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
    let junit = std::env::temp_dir().join(format!("kh-verify-{}.xml", std::process::id()));
    let out = Command::new(BIN)
        .current_dir(root)
        .args(["verify", "fixtures/targets", "--junit"])
        .arg(&junit)
        .output()?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for target in [
        "metrics —",
        "requests —",
        "samples —",
        "wardle —",
        "webhooks —",
        "widgets —",
    ] {
        assert!(stdout.contains(target), "{target} missing from:\n{stdout}");
    }
    assert!(stdout.contains(" 0 failed"), "{stdout}");
    // Each denial names the layer that answered it.
    for line in [
        "PASS access: alice list k8s.wujiuye.com/v1beta1 requests in requests-system",
        "denied by kube-apiserver's RBAC (the request never reached a backend)",
        "PASS access: requests-viewer get k8s.wujiuye.com/v1beta1 requests/reserved-quota in requests-system",
        "denied by the extension server of k8s.wujiuye.com/v1beta1 itself (kube-apiserver's RBAC allows the request)",
    ] {
        assert!(stdout.contains(line), "{line:?} missing from:\n{stdout}");
    }
    let xml = std::fs::read_to_string(&junit)?;
    assert_eq!(xml.matches("<testsuite ").count(), 6, "{xml}");
    assert!(!xml.contains("<failure"), "{xml}");
    std::fs::remove_file(junit)?;
    Ok(())
}

#[test]
fn verify_fails_naming_the_failed_check() -> anyhow::Result<()> {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
    let junit = std::env::temp_dir().join(format!("kh-verify-fail-{}.xml", std::process::id()));
    let bundle = std::env::temp_dir().join(format!("kh-verify-bundle-{}", std::process::id()));
    let out = Command::new(BIN)
        .current_dir(root)
        .args(["verify", "tests/apply-fixtures/backend-exits", "--junit"])
        .arg(&junit)
        .arg("--bundle")
        .arg(&bundle)
        .output()?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("FAIL bring up"), "{stdout}");
    assert!(
        stdout.contains("backend exited before becoming ready (exit status: 4)"),
        "{stdout}"
    );
    let xml = std::fs::read_to_string(&junit)?;
    assert!(
        xml.contains("<testcase classname=\"backend-exits\" name=\"bring up\""),
        "{xml}"
    );
    assert_eq!(xml.matches("<failure ").count(), 1, "{xml}");
    std::fs::remove_file(junit)?;
    // The failure bundle has the logs and the API's view.
    let target_bundle = bundle.join("backend-exits");
    assert!(
        stdout.contains(&format!("failure bundle: {}", target_bundle.display())),
        "{stdout}"
    );
    // The console shows the whole message, the backend's log tail indented under the check.
    assert!(
        stdout.contains("\n         backend: cannot start, simulated\n"),
        "{stdout}"
    );
    let backend_log = std::fs::read_to_string(target_bundle.join("backend.log"))?;
    assert!(backend_log.contains("cannot start, simulated"), "{backend_log}");
    assert!(std::fs::read_to_string(target_bundle.join("kube-apiserver.log"))?.len() > 100);
    let apiservices: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(target_bundle.join("apiservices.json"))?)?;
    assert!(apiservices.as_array().is_some_and(|a| !a.is_empty()), "{apiservices}");
    assert!(target_bundle.join("events.json").is_file());
    std::fs::remove_dir_all(&bundle)?;

    // --quiet: one line per failed check.
    let out = Command::new(BIN)
        .current_dir(root)
        .args(["verify", "tests/apply-fixtures/backend-exits", "--quiet", "--bundle"])
        .arg(&bundle)
        .output()?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("FAIL bring up"), "{stdout}");
    assert!(!stdout.contains("cannot start, simulated"), "{stdout}");
    std::fs::remove_dir_all(&bundle)?;
    Ok(())
}

/// `--target` picks targets by name and `--budget` turns a slow start into a failed check
/// (0.001 s cannot be met), shown in the table and in JUnit; startup phases are printed.
#[test]
fn verify_selects_targets_and_enforces_a_startup_budget() -> anyhow::Result<()> {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
    let junit = std::env::temp_dir().join(format!("kh-verify-budget-{}.xml", std::process::id()));
    let out = Command::new(BIN)
        .current_dir(root)
        .args(["verify", "--target", "samples", "--budget", "0.001", "--junit"])
        .arg(&junit)
        .output()?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("FAIL startup within the 0.001s budget"), "{stdout}");
    assert!(stdout.contains("\nsamples — "), "{stdout}");
    assert!(
        !stdout.contains("\nwardle — ") && !stdout.contains("\nrequests — "),
        "{stdout}"
    );
    assert!(
        stdout.contains("startup: ") && stdout.contains("kube-apiserver "),
        "{stdout}"
    );
    let xml = std::fs::read_to_string(&junit)?;
    assert_eq!(xml.matches("<failure ").count(), 1, "{xml}");
    assert!(xml.contains("classname=\"control-plane\""), "{xml}");
    std::fs::remove_file(junit)?;
    Ok(())
}

/// An unknown `--target` is refused before any cluster starts, naming the known targets.
#[test]
fn verify_names_the_known_targets_when_one_is_unknown() -> anyhow::Result<()> {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
    let out = Command::new(BIN)
        .current_dir(root)
        .args(["verify", "--target", "nope"])
        .output()?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("no target named \"nope\"; the directories given hold: metrics, requests, samples, wardle"),
        "{stderr}"
    );
    assert!(!stderr.contains("starting Kubernetes"), "{stderr}");
    Ok(())
}

/// Child processes of `pid` (by /proc's parent pid field).
fn children_of(pid: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return vec![];
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()))
        .filter(|p| {
            std::fs::read_to_string(format!("/proc/{p}/stat")).is_ok_and(|stat| {
                stat.rsplit_once(')')
                    .and_then(|(_, rest)| rest.split_whitespace().nth(1))
                    .is_some_and(|ppid| ppid == pid.to_string())
            })
        })
        .collect()
}

/// `kube-harness up` ended by SIGTERM (graceful) or SIGKILL (no chance to clean up): its
/// etcd and kube-apiserver go with it, and its run directory is removed.
#[rstest::rstest]
#[case::sigterm(nix::sys::signal::Signal::SIGTERM, 0)]
#[case::sigkill(nix::sys::signal::Signal::SIGKILL, 0)]
#[case::sigkill_with_nodes(nix::sys::signal::Signal::SIGKILL, 2)]
fn up_ended_by_a_signal_leaves_nothing_behind(
    #[case] signal: nix::sys::signal::Signal,
    #[case] nodes: u32,
) -> anyhow::Result<()> {
    let mut child = Command::new(BIN)
        .args(["--nodes", &nodes.to_string(), "up"])
        .stdout(Stdio::piped())
        .spawn()?;
    let stdout = child.stdout.take().ok_or_else(|| anyhow::anyhow!("no stdout"))?;
    let mut run_dir = None;
    for line in BufReader::new(stdout).lines() {
        let line = line?;
        if let Some(dir) = line.trim().strip_prefix("logs: ") {
            run_dir = Some(std::path::PathBuf::from(dir));
        }
        if line.starts_with("Press Ctrl-C") {
            break;
        }
    }
    let run_dir = run_dir.ok_or_else(|| anyhow::anyhow!("up did not print its run directory"))?;
    let components: Vec<u32> = children_of(child.id())
        .into_iter()
        .filter(|p| {
            std::fs::read_link(format!("/proc/{p}/exe")).is_ok_and(|exe| {
                ["etcd", "kube-apiserver", "kube-scheduler", "cmd_kwok"]
                    .iter()
                    .any(|name| exe.ends_with(name))
            })
        })
        .collect();
    let expected = if nodes > 0 { 4 } else { 2 };
    assert_eq!(
        components.len(),
        expected,
        "expected etcd and kube-apiserver (and kube-scheduler and kwok with nodes) under up"
    );
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(i32::try_from(child.id())?), signal)?;
    child.wait()?;
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let live: Vec<u32> = components
            .iter()
            .copied()
            .filter(|p| std::fs::read_to_string(format!("/proc/{p}/stat")).is_ok_and(|s| !s.contains(") Z ")))
            .collect();
        if live.is_empty() && !run_dir.exists() {
            return Ok(());
        }
        assert!(
            Instant::now() < deadline,
            "after {signal}: live {live:?}, run dir left: {}",
            run_dir.exists()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `verify --provider existing` checks a target on a cluster it did not start, found through
/// KUBECONFIG, and leaves that cluster running.
#[tokio::test]
async fn verify_runs_on_an_existing_cluster() -> anyhow::Result<()> {
    let cluster = kube_harness::ControlPlane::builder().start().await?;
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
    let out = tokio::process::Command::new(BIN)
        .current_dir(root)
        .args(["verify", "--provider", "existing", "--target", "requests"])
        .env("KUBECONFIG", cluster.kubeconfig_path())
        .output()
        .await?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("\nrequests — "), "{stdout}");
    assert!(!stdout.contains("FAIL"), "{stdout}");
    cluster.check_alive()?;
    Ok(())
}

/// `up --provider existing` brings a target up on a cluster it did not start (found through
/// KUBECONFIG), serves until SIGTERM, then takes the target down and leaves the cluster
/// running.
#[tokio::test]
async fn up_on_an_existing_cluster_serves_a_target_and_leaves_the_cluster() -> anyhow::Result<()> {
    use tokio::io::AsyncBufReadExt as _;
    let cluster = kube_harness::ControlPlane::builder().start().await?;
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
    let mut child = tokio::process::Command::new(BIN)
        .current_dir(root)
        .args([
            "up",
            "--provider",
            "existing",
            "--fixtures",
            "fixtures/targets/requests",
        ])
        .env("KUBECONFIG", cluster.kubeconfig_path())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let stdout = child.stdout.take().ok_or_else(|| anyhow::anyhow!("no stdout"))?;
    let mut lines = tokio::io::BufReader::new(stdout).lines();
    let mut seen = Vec::new();
    // The target's backend is a cargo package: `up` builds it first (scripts/test builds it
    // beforehand; cold, in parallel with other tests, it took over 120 s once).
    let ready = tokio::time::timeout(Duration::from_secs(300), async {
        while let Some(line) = lines.next_line().await? {
            let done = line.starts_with("Press Ctrl-C");
            seen.push(line);
            if done {
                return Ok::<bool, std::io::Error>(true);
            }
        }
        Ok(false)
    })
    .await;
    assert!(
        matches!(ready, Ok(Ok(true))),
        "up did not come up: {ready:?}\n{}",
        seen.join("\n")
    );
    assert!(
        seen.iter()
            .any(|l| l.contains("(existing) is up at") && l.contains(cluster.server_url())),
        "{seen:?}"
    );
    let gvk = kube::api::GroupVersionKind::gvk("apiregistration.k8s.io", "v1", "APIService");
    let apiservices: kube::Api<kube::api::DynamicObject> =
        kube::Api::all_with(cluster.client().await?, &kube::api::ApiResource::from_gvk(&gvk));
    assert!(apiservices.get_opt("v1beta1.k8s.wujiuye.com").await?.is_some());

    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(child.id().unwrap_or_default())?),
        nix::sys::signal::Signal::SIGTERM,
    )?;
    let status = tokio::time::timeout(Duration::from_secs(60), child.wait()).await??;
    assert!(status.success(), "{status}");
    cluster.check_alive()?;
    assert!(
        apiservices.get_opt("v1beta1.k8s.wujiuye.com").await?.is_none(),
        "the target's APIService was left behind"
    );
    Ok(())
}

/// A server that answers 500 to a user RBAC allows — what requests-apiserver does once its
/// ServiceAccount loses its `system:auth-delegator` binding — fails `verify`: a server error
/// is neither allowed nor denied, and the message names the binding.
/// The failure bundle is taken before teardown, and a later passing run removes it.
#[test]
fn verify_fails_an_access_rule_answered_with_a_server_error() -> anyhow::Result<()> {
    let (root, work, dir) = requests_copy("500")?;
    // The real fault: the server's ServiceAccount lost its system:auth-delegator binding.
    let rbac = std::fs::read_to_string(dir.join("rbac.yaml"))?;
    let broken: Vec<&str> = rbac
        .split("\n---\n")
        .filter(|doc| !doc.contains("name: \"system:auth-delegator\""))
        .collect();
    assert_eq!(broken.len(), 2, "rbac.yaml changed shape");
    std::fs::write(dir.join("rbac.yaml"), broken.join("\n---\n"))?;
    let bundle = work.join("bundles");
    let out = Command::new(BIN)
        .current_dir(&root)
        .arg("verify")
        .arg(&dir)
        .arg("--bundle")
        .arg(&bundle)
        .output()?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("FAIL access: requests-viewer list k8s.wujiuye.com/v1beta1 requests in requests-system"),
        "{stdout}"
    );
    let failed = std::fs::read_to_string(bundle.join("requests/failed-checks.txt"))?;
    assert!(
        failed.contains("answered 500 InternalError: authorization check failed: subjectaccessreviews.authorization.k8s.io is forbidden"),
        "{failed}"
    );
    assert!(
        failed.contains("a server error is neither allowed nor denied"),
        "{failed}"
    );
    assert!(
        failed.contains("The server's own identity lacks a permission. It usually comes from a ClusterRoleBinding to the ClusterRole system:auth-delegator"),
        "{failed}"
    );
    // The bundle was taken at the failure, before teardown: the target's APIService is in it.
    let apiservices = std::fs::read_to_string(bundle.join("requests/apiservices.json"))?;
    assert!(apiservices.contains("\"v1beta1.k8s.wujiuye.com\""), "{apiservices}");

    // Fixed, the target passes, and the stale bundle of the failed run is removed.
    std::fs::write(dir.join("rbac.yaml"), rbac)?;
    let out = Command::new(BIN)
        .current_dir(&root)
        .arg("verify")
        .arg(&dir)
        .arg("--bundle")
        .arg(&bundle)
        .output()?;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stdout));
    assert!(!bundle.join("requests").exists(), "the stale bundle is still there");
    std::fs::remove_dir_all(&work)?;
    Ok(())
}

/// A run directory kept with `KUBE_HARNESS_KEEP=1` survives the next run's stale sweep (it
/// did not: the next process deleted it, even another KEEP run's).
#[test]
fn a_kept_run_directory_survives_the_next_run() -> anyhow::Result<()> {
    let root = std::env::temp_dir().join(format!("kh-keep-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    let run = |keep: bool| -> anyhow::Result<()> {
        let mut command = Command::new(BIN);
        command.args(["exec", "--", "true"]).env("KUBE_HARNESS_RUN_ROOT", &root);
        if keep {
            command.env("KUBE_HARNESS_KEEP", "1");
        } else {
            command.env_remove("KUBE_HARNESS_KEEP");
        }
        let out = command.output()?;
        anyhow::ensure!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        Ok(())
    };
    run(true)?;
    let kept: Vec<_> = std::fs::read_dir(&root)?.flatten().map(|e| e.path()).collect();
    assert_eq!(kept.len(), 1, "{kept:?}");
    run(false)?;
    assert!(kept[0].join("kube-apiserver.log").is_file(), "{:?} was swept", kept[0]);
    std::fs::remove_dir_all(&root)?;
    Ok(())
}

/// `program: ./run.sh` works with the target directory given relative to the current
/// directory (it was joined relatively and then not found from the backend's run directory).
#[test]
fn a_relative_program_works_from_a_relative_target_directory() -> anyhow::Result<()> {
    let work = std::env::temp_dir().join(format!("kh-relative-{}", std::process::id()));
    let target = work.join("targets/rel");
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&target)?;
    std::fs::write(
        target.join("target.yaml"),
        "apiVersion: kube-harness.dev/v1alpha1\nkind: Target\nmetadata:\n  name: rel\nspec:\n  backend:\n    \
         program: ./run.sh\n    readinessLog: relative-backend-ready\n",
    )?;
    std::fs::write(
        target.join("objects.yaml"),
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: rel-marker, namespace: default}\n",
    )?;
    let script = target.join("run.sh");
    std::fs::write(&script, "#!/bin/sh\necho relative-backend-ready\nexec sleep 600\n")?;
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755))?;
    let out = Command::new(BIN)
        .current_dir(&work)
        .args(["exec", "--fixtures", "targets/rel", "--", "true"])
        .output()?;
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    std::fs::remove_dir_all(&work)?;
    Ok(())
}

/// A copy of the requests target in a fresh work directory inside the workspace (so its cargo
/// backend still builds): `(workspace root, work directory, the copy)`.
fn requests_copy(label: &str) -> anyhow::Result<(std::path::PathBuf, std::path::PathBuf, std::path::PathBuf)> {
    let root = std::path::PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/.."));
    let work = root
        .join("target")
        .join(format!("kh-verify-{label}-{}", std::process::id()));
    let dir = work.join("requests");
    let _ = std::fs::remove_dir_all(&work);
    copy_dir(&root.join("fixtures/targets/requests"), &dir)?;
    Ok((root, work, dir))
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        if entry.path().is_dir() {
            copy_dir(&entry.path(), &to.join(entry.file_name()))?;
        } else {
            std::fs::copy(entry.path(), to.join(entry.file_name()))?;
        }
    }
    Ok(())
}

/// The expectations flow a user without Rust goes through: a target copy without snapshots
/// fails naming the CRUD check; `--update` writes the snapshot and passes; a second run
/// accepts it; with its RoleBinding removed the access check fails, and the JUnit report
/// reads back (with Python's XML parser) with exactly that failure.
#[test]
fn verify_update_writes_snapshots_a_second_run_accepts_and_missing_rbac_is_named() -> anyhow::Result<()> {
    let (root, work, dir) = requests_copy("update")?;
    std::fs::remove_dir_all(dir.join("snapshots"))?;
    let verify = |extra: &[&str]| -> anyhow::Result<(Option<i32>, String)> {
        let out = Command::new(BIN)
            .current_dir(&root)
            .arg("verify")
            .arg(&dir)
            .args(extra)
            .output()?;
        Ok((out.status.code(), String::from_utf8_lossy(&out.stdout).into_owned()))
    };
    let bundle = work.join("bundles");
    let bundle_arg = bundle.to_string_lossy().into_owned();

    let (code, out) = verify(&["--bundle", &bundle_arg])?;
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("FAIL CRUD Requests/verify-requests matches its snapshot"),
        "{out}"
    );
    assert!(out.contains("run `kube-harness verify --update`"), "{out}");

    let (code, out) = verify(&["--update"])?;
    assert_eq!(code, Some(0), "{out}");
    let snapshot = dir.join("snapshots/Requests-verify-requests.snap");
    let written = std::fs::read_to_string(&snapshot)?;
    assert!(written.contains("\"reason\": \"AlreadyExists\""), "{written}");
    assert_eq!(
        written,
        std::fs::read_to_string(root.join("fixtures/targets/requests/snapshots/Requests-verify-requests.snap"))?,
        "the committed snapshot and a fresh one differ"
    );

    let (code, out) = verify(&[])?;
    assert_eq!(code, Some(0), "second run: {out}");
    assert!(
        out.contains("PASS CRUD Requests/verify-requests matches its snapshot"),
        "{out}"
    );

    // Break it: no RoleBinding for requests-viewer.
    let expectations = std::fs::read_to_string(dir.join("expectations.yaml"))?;
    let without_binding = expectations
        .split("\n---\n")
        .filter(|doc| !doc.contains("kind: RoleBinding"))
        .collect::<Vec<_>>()
        .join("\n---\n");
    std::fs::write(dir.join("expectations.yaml"), without_binding)?;
    let junit = work.join("junit.xml");
    let junit_arg = junit.to_string_lossy().into_owned();
    let (code, out) = verify(&["--junit", &junit_arg, "--bundle", &bundle_arg])?;
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("FAIL access: requests-viewer list k8s.wujiuye.com/v1beta1 requests in requests-system"),
        "{out}"
    );
    assert!(bundle.join("requests/kube-apiserver.log").is_file());
    let failed_checks = std::fs::read_to_string(bundle.join("requests/failed-checks.txt"))?;
    assert!(
        failed_checks.contains(
            "expected allowed, but kube-apiserver's RBAC (the request never reached a backend) denied it: \
             GET /apis/k8s.wujiuye.com/v1beta1/namespaces/requests-system/requests: 403 Forbidden"
        ),
        "{failed_checks}"
    );
    let parsed = Command::new("python3")
        .arg("-c")
        .arg(
            "import sys, xml.etree.ElementTree as ET\n\
             root = ET.parse(sys.argv[1]).getroot()\n\
             cases = root.iter('testcase')\n\
             print('\\n'.join(c.get('name') for c in cases if c.find('failure') is not None))",
        )
        .arg(&junit)
        .output()?;
    assert!(parsed.status.success(), "{}", String::from_utf8_lossy(&parsed.stderr));
    let failed = String::from_utf8_lossy(&parsed.stdout);
    assert_eq!(
        failed.trim().lines().collect::<Vec<_>>(),
        [
            "access: requests-viewer list k8s.wujiuye.com/v1beta1 requests in requests-system",
            "access: requests-viewer get k8s.wujiuye.com/v1beta1 requests/nginx in requests-system",
            // Its denial must come from the backend; without the binding kube-apiserver's RBAC
            // answers first, with other words.
            "request: the backend itself refuses a reserved object to a user RBAC lets read it as requests-viewer"
        ],
        "{failed}"
    );
    std::fs::remove_dir_all(&work)?;
    Ok(())
}

/// On a terminal, long steps show a spinner that redraws in place and ends with a done line;
/// `KUBE_HARNESS_PROGRESS=plain` (and any non-terminal stderr, as in the other tests) gives
/// plain lines. The terminal is a pseudo-terminal from util-linux `script`.
#[test]
fn progress_is_a_spinner_on_a_terminal_and_plain_lines_otherwise() -> anyhow::Result<()> {
    if Command::new("script").arg("--version").output().is_err() {
        println!("skipped: no `script` command (util-linux) to provide a terminal");
        return Ok(());
    }
    let run = |plain: bool| -> anyhow::Result<String> {
        let mut cmd = Command::new("script");
        cmd.args(["-qec", &format!("{BIN} exec -- true"), "/dev/null"]);
        if plain {
            cmd.env("KUBE_HARNESS_PROGRESS", "plain");
        }
        let out = cmd.output()?;
        assert!(out.status.success(), "{out:?}");
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    };
    let tty = run(false)?;
    assert!(tty.contains("\u{1b}[2K"), "no in-place redraw: {tty:?}");
    assert!(tty.contains("✓ kube-harness: starting Kubernetes"), "{tty:?}");
    let plain = run(true)?;
    assert!(!plain.contains("\u{1b}[2K"), "{plain:?}");
    assert!(plain.contains("(etcd + kube-apiserver) …"), "{plain:?}");
    assert!(plain.contains("(etcd + kube-apiserver): done in"), "{plain:?}");
    Ok(())
}

/// `--k8s-version 1.36.3,1.37.2`: one cluster per version, the target checked on each, check
/// names carrying the version, one JUnit report for both.
#[test]
fn verify_checks_each_version_asked_for() -> anyhow::Result<()> {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
    let junit = std::env::temp_dir().join(format!("kh-verify-versions-{}.xml", std::process::id()));
    let out = Command::new(BIN)
        .current_dir(root)
        .args([
            "--k8s-version",
            "1.36.3,1.37.2",
            "verify",
            "--target",
            "samples",
            "--junit",
        ])
        .arg(&junit)
        .output()?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    for v in ["1.36.3", "1.37.2"] {
        assert!(stdout.contains(&format!("\nsamples@{v} — ")), "{stdout}");
        assert!(stdout.contains(&format!("startup of {v}: ")), "{stdout}");
    }
    assert!(stdout.contains("1 targets × 2 version(s)"), "{stdout}");
    let xml = std::fs::read_to_string(&junit)?;
    assert!(xml.contains("classname=\"samples@1.36.3\"") && xml.contains("classname=\"samples@1.37.2\""));
    std::fs::remove_file(&junit)?;
    // Several versions are for verify only.
    let err = Command::new(BIN)
        .args(["--k8s-version", "1.36.3,1.37.2", "assets"])
        .output()?;
    assert_eq!(err.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&err.stderr).contains("are for `verify` only"));
    Ok(())
}

/// Log lines on a redirected stderr carry no colour codes, and an error naming a log in the
/// (already removed) run directory says how to keep it.
#[test]
fn redirected_output_is_plain_and_a_removed_log_is_explained() -> anyhow::Result<()> {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
    let out = Command::new(BIN)
        .current_dir(root)
        .args(["exec", "--fixtures", "tests/apply-fixtures/backend-exits", "--", "true"])
        .env("KUBE_HARNESS_LOG", "info")
        .env_remove("KUBE_HARNESS_KEEP")
        .output()?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains(" INFO "), "no log lines at info: {stderr}");
    assert!(
        !stderr.contains('\u{1b}'),
        "colour codes in redirected output: {stderr:?}"
    );
    assert!(
        stderr.contains("the logs named above were removed with the cluster; rerun with KUBE_HARNESS_KEEP=1"),
        "{stderr}"
    );
    Ok(())
}

/// A directory of targets where one does not load: it is a failed target of its own (with
/// the whole error), the others still run, and `--target` gets around it.
#[test]
fn a_target_that_does_not_load_fails_alone_and_the_rest_run() -> anyhow::Result<()> {
    let root = std::env::temp_dir().join(format!("kh-broken-load-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    let (good, bad) = (root.join("gadgets"), root.join("broken-steps"));
    std::fs::create_dir_all(&good)?;
    std::fs::create_dir_all(&bad)?;
    std::fs::write(
        good.join("crd.yaml"),
        "apiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\nmetadata: {name: gadgets.example.org}\n\
         spec:\n  group: example.org\n  names: {kind: Gadget, plural: gadgets}\n  scope: Namespaced\n  versions:\n\
         \x20   - {name: v1, served: true, storage: true, schema: {openAPIV3Schema: {type: object, x-kubernetes-preserve-unknown-fields: true}}}\n",
    )?;
    std::fs::write(
        good.join("target.yaml"),
        "apiVersion: kube-harness.dev/v1alpha1\nkind: Target\nmetadata: {name: gadgets}\nspec: {}\n",
    )?;
    std::fs::write(
        bad.join("expectations.yaml"),
        "apiVersion: kube-harness.dev/v1alpha1\nkind: Expectations\nmetadata: {name: b}\nspec:\n  steps:\n    - waitFor: {}\n",
    )?;
    let out = Command::new(BIN).arg("verify").arg(&root).output()?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(stdout.contains("broken-steps — 0/1 checks passed"), "{stdout}");
    assert!(stdout.contains("FAIL load the target directory"), "{stdout}");
    assert!(
        stdout.contains("steps[0] (step 1): unknown field `waitFor`"),
        "{stdout}"
    );
    assert!(
        stdout.contains("gadgets — ") && stdout.contains("PASS CRD gadgets.example.org Established"),
        "{stdout}"
    );
    assert!(
        stdout.contains("2 targets × 1 version(s)") && stdout.contains("(1 target(s) did not load)"),
        "{stdout}"
    );

    let out = Command::new(BIN)
        .arg("verify")
        .arg(&root)
        .args(["--target", "gadgets"])
        .output()?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert!(!stdout.contains("broken-steps"), "{stdout}");
    std::fs::remove_dir_all(&root)?;
    Ok(())
}

/// A Go backend whose module, version or package is not there fails before any cluster starts,
/// naming target.yaml, the field and — for a package — the main packages the module has (it
/// once surfaced after the cluster started, as "toolchain upgrade needed").
#[test]
fn a_go_backend_that_is_not_there_fails_before_any_cluster_starts() -> anyhow::Result<()> {
    let root = std::env::temp_dir().join(format!("kh-go-preflight-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&root);
    let cases = [
        ("no-such-package", "goPackage: cmd/no-such-server", "goVersion: v0.37.2"),
        ("a-library", "goPackage: pkg/apiserver", "goVersion: v0.37.2"),
        ("no-such-version", "goPackage: cmd/wardle", "goVersion: v0.99.2"),
    ];
    for (name, package, version) in cases {
        let dir = root.join(name);
        std::fs::create_dir_all(&dir)?;
        std::fs::write(
            dir.join("target.yaml"),
            format!(
                "apiVersion: kube-harness.dev/v1alpha1\nkind: Target\nmetadata: {{name: {name}}}\nspec:\n  backend:\n\
                 \x20   goModule: k8s.io/sample-apiserver\n    {package}\n    {version}\n    args: [\"--secure-port={{{{port}}}}\"]\n"
            ),
        )?;
    }
    let out = Command::new(BIN).arg("verify").arg(&root).output()?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(!stdout.contains("verifying target"), "a cluster was started:\n{stdout}");
    for expected in [
        "no-such-package/target.yaml): spec.backend.goPackage: k8s.io/sample-apiserver@v0.37.2 has no package \
         k8s.io/sample-apiserver/cmd/no-such-server; main packages in k8s.io/sample-apiserver@v0.37.2: its root (leave goPackage out)",
        "a-library/target.yaml): spec.backend.goPackage: k8s.io/sample-apiserver/pkg/apiserver is not a main package",
        "no-such-version/target.yaml): spec.backend.goModule/goVersion: k8s.io/sample-apiserver@v0.99.2 cannot be downloaded",
        "3 targets × 1 version(s)",
    ] {
        assert!(stdout.contains(expected), "{expected:?} is not in:\n{stdout}");
    }
    std::fs::remove_dir_all(&root)?;
    Ok(())
}

/// `init` in a kubebuilder-style operator crate it was not written for: what it finds (two
/// CustomResource types, one private module, the `run(Client)` entry, the Deployment's
/// ServiceAccount and probe, a patch file that is no object) and the files it writes; the
/// target loads with the shipped manifests included and their Deployment left out; a second
/// run keeps every file.
#[test]
fn init_writes_a_test_and_a_target_from_an_operator_crate_and_never_overwrites() -> anyhow::Result<()> {
    let root = std::path::PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/.."));
    let work = std::env::temp_dir().join(format!("kh-init-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&work);
    let dir = work.join("gauge-operator");
    copy_dir(&root.join("tests/init-fixtures/gauge-operator"), &dir)?;
    let init = || Command::new(BIN).arg("init").arg(&dir).output();
    let out = init()?;
    assert!(out.status.success(), "{out:?}");
    let stdout = String::from_utf8_lossy(&out.stdout).replace(&*dir.to_string_lossy(), "[crate]");
    let mut files = String::new();
    for file in [
        "tests/kube_harness.rs",
        "fixtures/targets/gauge-operator/target.yaml",
        "fixtures/targets/gauge-operator/expectations.yaml",
        "fixtures/targets/gauge-operator/steps/cpu.yaml",
    ] {
        files.push_str(&format!("==> {file}\n{}\n", std::fs::read_to_string(dir.join(file))?));
    }
    insta::assert_snapshot!("init_output", stdout);
    insta::assert_snapshot!("init_files", files);

    let target = kube_harness::Target::load(dir.join("fixtures/targets/gauge-operator"))?;
    let mut kinds: Vec<String> = target
        .plan
        .prerequisites
        .iter()
        .map(|p| p.doc())
        .chain(&target.plan.rest)
        .map(|d| format!("{}/{}", d.kind, d.name))
        .collect();
    kinds.sort();
    assert_eq!(
        kinds,
        [
            "ClusterRole/gauge-manager",
            "ClusterRoleBinding/gauge-manager",
            "CustomResourceDefinition/gauges.metrics.example.com",
            "Namespace/gauge-system",
            "ServiceAccount/controller-manager",
        ]
    );

    let again = init()?;
    assert!(again.status.success(), "{again:?}");
    let stdout = String::from_utf8_lossy(&again.stdout);
    assert_eq!(stdout.matches("kept  ").count(), 4, "{stdout}");
    assert!(!stdout.contains("wrote"), "{stdout}");
    assert_eq!(
        files,
        [
            "tests/kube_harness.rs",
            "fixtures/targets/gauge-operator/target.yaml",
            "fixtures/targets/gauge-operator/expectations.yaml",
            "fixtures/targets/gauge-operator/steps/cpu.yaml"
        ]
        .iter()
        .map(|f| Ok(format!("==> {f}\n{}\n", std::fs::read_to_string(dir.join(f))?)))
        .collect::<anyhow::Result<String>>()?
    );
    std::fs::remove_dir_all(&work)?;
    Ok(())
}

/// `init` where there is nothing to write a test for says what it looked for, and where.
#[test]
fn init_says_what_it_looked_for_when_it_finds_nothing() -> anyhow::Result<()> {
    let root = std::path::PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/.."));
    let work = std::env::temp_dir().join(format!("kh-init-bad-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&work);
    let no_crd = work.join("no-crd");
    copy_dir(&root.join("tests/init-fixtures/no-crd"), &no_crd)?;
    let no_manifests = work.join("no-manifests");
    copy_dir(&root.join("tests/init-fixtures/gauge-operator"), &no_manifests)?;
    std::fs::remove_dir_all(no_manifests.join("config"))?;
    let err = |dir: &std::path::Path, extra: &[&str]| -> anyhow::Result<String> {
        let out = Command::new(BIN).arg("init").arg(dir).args(extra).output()?;
        assert_eq!(out.status.code(), Some(1), "{out:?}");
        assert!(!dir.join("tests").exists() && !dir.join("fixtures").exists());
        Ok(String::from_utf8_lossy(&out.stderr).replace(&*work.to_string_lossy(), "[work]"))
    };
    let messages = [
        err(&no_crd, &[])?,
        err(&no_manifests, &[])?,
        err(&work.join("nowhere"), &[])?,
        err(&no_crd.join("src"), &[])?,
        err(&no_manifests, &["--manifests", "/nonexistent-manifests"])?,
    ];
    insta::assert_snapshot!(messages.join(""));
    std::fs::remove_dir_all(&work)?;
    Ok(())
}
