//! `up --detach` and `down`: one cluster shared by several processes (test binaries run by
//! cargo-nextest, a CI job's steps). A background `up` owns the cluster; others attach to it
//! through the handle file named by `KUBE_HARNESS_CLUSTER`.

use std::io::{BufRead as _, BufReader, Write as _};
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{ExitCode, Stdio};
use std::time::{Duration, Instant};

use crate::ClusterHandle;
use crate::assets::KubeVersion;
use anyhow::{Context as _, bail};

/// Names the background process's stderr file, which it removes when it stops.
const DAEMON_LOG_VAR: &str = "KUBE_HARNESS_DAEMON_LOG";

/// Remove the background process's stderr file (called as it stops).
pub(crate) fn remove_daemon_log() {
    if let Some(log) = std::env::var_os(DAEMON_LOG_VAR) {
        let _ = std::fs::remove_file(log);
    }
}

/// The line the background `up` prints when the cluster is ready.
const READY: &str = "KUBE-HARNESS-READY";
/// Environment variable naming the handle file.
pub(crate) const CLUSTER_VAR: &str = "KUBE_HARNESS_CLUSTER";

/// The foreground half of `up --detach`: start `up --serve-detached` in its own session, relay
/// its progress, and return once it reports the cluster ready (or fail with its error).
pub(crate) fn detach(args: &[String]) -> anyhow::Result<ExitCode> {
    let exe = std::env::current_exe().context("cannot find the kube-harness executable")?;
    // The background process's stderr (progress, errors) goes to a private file: shown if it
    // fails to start, removed by it when it stops.
    let log = std::env::temp_dir().join(format!("kube-harness-up-{}.log", std::process::id()));
    let log_file = {
        use std::os::unix::fs::OpenOptionsExt as _;
        std::fs::OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(true)
            .mode(0o600)
            .open(&log)
            .with_context(|| format!("cannot create {}", log.display()))?
    };
    let mut child = std::process::Command::new(exe)
        .args(args)
        .arg("--serve-detached")
        .env(DAEMON_LOG_VAR, &log)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(log_file))
        .process_group(0)
        .spawn()
        .context("cannot start the background kube-harness")?;
    let stdout = child
        .stdout
        .take()
        .context("no pipe from the background kube-harness")?;
    for line in BufReader::new(stdout).lines() {
        let line = line?;
        if line == READY {
            eprintln!("kube-harness: running in the background as pid {}", child.id());
            return Ok(ExitCode::SUCCESS);
        }
        eprintln!("{line}");
    }
    let status = child.wait()?;
    let tail = std::fs::read_to_string(&log).unwrap_or_default();
    let _ = std::fs::remove_file(&log);
    let tail: Vec<&str> = tail.lines().rev().take(30).collect();
    for line in tail.iter().rev() {
        eprintln!("{line}");
    }
    bail!("the background kube-harness ended before the cluster was ready ({status})")
}

/// The background half: called once the cluster (and targets) are up. Writes the handle file
/// and the env file, tells the foreground half, and stops printing (the pipe closes when the
/// foreground exits).
pub(crate) fn announce(handle: &ClusterHandle, env_file: Option<&Path>, kubeconfig: &Path) -> anyhow::Result<PathBuf> {
    let handle_file = handle.info.run_dir.join("cluster.json");
    let json = serde_json::to_string_pretty(handle)?;
    write_private(&handle_file, json.as_bytes())?;
    let lines = format!(
        "{CLUSTER_VAR}={}\nKUBECONFIG={}\n",
        handle_file.display(),
        kubeconfig.display()
    );
    if let Some(env_file) = env_file {
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(env_file)
            .with_context(|| format!("cannot write {}", env_file.display()))?;
        file.write_all(lines.as_bytes())?;
    }
    let mut out = std::io::stdout().lock();
    let _ = write!(out, "{lines}");
    let _ = writeln!(out, "{READY}");
    let _ = out.flush();
    Ok(handle_file)
}

fn write_private(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    file.write_all(bytes)?;
    Ok(())
}

/// Wait until a shutdown signal arrives or `stop_with` (a pid) is gone.
pub(crate) async fn wait_for_stop(stop_with: Option<u32>) -> anyhow::Result<()> {
    let watch = async {
        match stop_with {
            Some(pid) => {
                while crate::process::alive(pid) {
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
            }
            None => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        r = super::wait_for_shutdown_signal() => r,
        () = watch => Ok(()),
    }
}

/// The handle file: `--cluster`, else `KUBE_HARNESS_CLUSTER=` in `--env-file`, else the
/// environment variable.
fn handle_file(cluster: Option<&Path>, env_file: Option<&Path>) -> anyhow::Result<PathBuf> {
    if let Some(path) = cluster {
        return Ok(path.to_owned());
    }
    if let Some(env_file) = env_file {
        let text = std::fs::read_to_string(env_file).with_context(|| format!("cannot read {}", env_file.display()))?;
        let prefix = format!("{CLUSTER_VAR}=");
        return text
            .lines()
            .rev()
            .find_map(|l| l.strip_prefix(&prefix))
            .map(PathBuf::from)
            .with_context(|| format!("{} does not set {CLUSTER_VAR}", env_file.display()));
    }
    std::env::var_os(CLUSTER_VAR)
        .map(PathBuf::from)
        .with_context(|| format!("which cluster? pass --env-file or --cluster, or set {CLUSTER_VAR}"))
}

/// `down`: stop the background `up` that owns the cluster and wait until its processes are
/// gone.
pub(crate) fn down(cluster: Option<&Path>, env_file: Option<&Path>) -> anyhow::Result<ExitCode> {
    let file = handle_file(cluster, env_file)?;
    let text = std::fs::read_to_string(&file)
        .with_context(|| format!("no cluster at {} (already stopped?)", file.display()))?;
    let handle: ClusterHandle =
        serde_json::from_str(&text).with_context(|| format!("{} is not a cluster handle", file.display()))?;
    let owner = nix::unistd::Pid::from_raw(i32::try_from(handle.owner_pid)?);
    nix::sys::signal::kill(owner, nix::sys::signal::Signal::SIGTERM)
        .with_context(|| format!("cannot signal the owner (pid {})", handle.owner_pid))?;
    let deadline = Instant::now() + Duration::from_secs(30);
    let pids = [handle.owner_pid, handle.apiserver_pid, handle.etcd_pid];
    while pids.iter().any(|p| crate::process::alive(*p)) {
        if Instant::now() > deadline {
            bail!("the cluster did not stop within 30 s (pids {pids:?})");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    eprintln!(
        "kube-harness: stopped the cluster at {} (owner pid {})",
        handle.info.server, handle.owner_pid
    );
    Ok(ExitCode::SUCCESS)
}

/// The arguments that re-create this `up` in the background.
pub(crate) fn background_args(
    version: KubeVersion,
    kubeconfig: Option<&Path>,
    fixtures: &[PathBuf],
    env_file: Option<&Path>,
    stop_with: Option<u32>,
) -> Vec<String> {
    let mut args = vec!["--k8s-version".to_owned(), version.to_string(), "up".to_owned()];
    let abs = |p: &Path| std::path::absolute(p).unwrap_or_else(|_| p.to_owned());
    if let Some(k) = kubeconfig {
        args.extend(["--kubeconfig".to_owned(), abs(k).display().to_string()]);
    }
    for f in fixtures {
        args.extend(["--fixtures".to_owned(), abs(f).display().to_string()]);
    }
    if let Some(e) = env_file {
        args.extend(["--env-file".to_owned(), abs(e).display().to_string()]);
    }
    if let Some(pid) = stop_with {
        args.extend(["--stop-with".to_owned(), pid.to_string()]);
    }
    args
}
