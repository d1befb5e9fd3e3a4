//! Nothing outlives its owner: a process that starts a cluster and then returns, panics,
//! keeps it in a `static`, or is killed with SIGKILL leaves no etcd or kube-apiserver
//! process, no bound port and no run directory behind. Two clusters in one process, and two
//! processes at once, do not collide.
//!
//! Each case re-runs this test binary as a child (`helper_process`, which does nothing
//! unless `KH_HELPER_MODE` is set), reads the cluster's pids, ports and run directory from
//! its stdout, lets it end in the chosen way, and then checks.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use kube_harness::{Cluster, ControlPlane};

const MODE: &str = "KH_HELPER_MODE";
const REPORT: &str = "KH-CLUSTER ";

#[derive(Debug, serde::Deserialize, serde::Serialize)]
struct Report {
    pids: Vec<u32>,
    ports: Vec<u16>,
    run_dir: PathBuf,
}

fn report(cluster: &Cluster) -> Report {
    let port = |url: &str| url.rsplit(':').next().and_then(|p| p.parse().ok()).unwrap_or(0);
    Report {
        pids: cluster.pids(),
        ports: vec![port(cluster.server_url()), port(&cluster.info().etcd_url)],
        run_dir: cluster.info().run_dir.clone(),
    }
}

/// The child side. A no-op in a normal test run.
#[tokio::test]
async fn helper_process() {
    let Ok(mode) = std::env::var(MODE) else {
        return;
    };
    static KEPT: OnceLock<Cluster> = OnceLock::new();
    let cluster = match ControlPlane::builder().start().await {
        Ok(c) => c,
        Err(e) => panic!("helper could not start a cluster: {e}"),
    };
    println!(
        "{REPORT}{}",
        serde_json::to_string(&report(&cluster)).unwrap_or_default()
    );
    // Go on only once the parent has seen the processes running.
    let mut go = String::new();
    let _ = std::io::stdin().read_line(&mut go);
    match mode.as_str() {
        "return" => drop(cluster),
        "panic" => panic!("helper panics while holding a cluster (expected)"),
        "static" => {
            let _ = KEPT.set(cluster);
        }
        "exit" => std::process::exit(3),
        "hang" => loop {
            tokio::time::sleep(Duration::from_secs(60)).await;
        },
        other => panic!("unknown helper mode {other}"),
    }
}

fn spawn_helper(mode: &str) -> anyhow::Result<(Child, Report)> {
    let exe = std::env::current_exe()?;
    let mut child = Command::new(exe)
        .args(["--exact", "helper_process", "--nocapture", "--test-threads=1"])
        .env(MODE, mode)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()?;
    let stdout = child.stdout.take().ok_or_else(|| anyhow::anyhow!("no stdout"))?;
    let mut lines = BufReader::new(stdout).lines();
    let report = loop {
        let Some(line) = lines.next() else {
            let status = child.wait()?;
            anyhow::bail!("helper ({mode}) ended ({status}) before reporting a cluster");
        };
        // libtest may have printed "test helper_process ... " on the same line.
        if let Some((_, json)) = line?.split_once(REPORT) {
            break serde_json::from_str::<Report>(json)?;
        }
    };
    // Keep draining stdout so the helper never blocks on a full pipe.
    std::thread::spawn(move || lines.for_each(drop));
    Ok((child, report))
}

fn alive(pid: u32) -> bool {
    // A zombie (state Z) has exited; only its parent has not collected it yet.
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z"),
        Err(_) => false,
    }
}

fn port_free(port: u16) -> bool {
    TcpListener::bind(("127.0.0.1", port)).is_ok()
}

/// Poll until everything the helper started is gone (the kernel and the cleanup watcher act
/// asynchronously, so allow a few seconds), then assert.
fn assert_cleaned_up(mode: &str, report: &Report) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let live: Vec<u32> = report.pids.iter().copied().filter(|p| alive(*p)).collect();
        let bound: Vec<u16> = report.ports.iter().copied().filter(|p| !port_free(*p)).collect();
        let dir = report.run_dir.exists();
        if live.is_empty() && bound.is_empty() && !dir {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "after mode {mode}: live pids {live:?}, bound ports {bound:?}, run dir left: {dir} ({:?})",
            report.run_dir
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Tell the helper to go on with its mode.
fn release(child: &mut Child) -> anyhow::Result<()> {
    let stdin = child.stdin.as_mut().ok_or_else(|| anyhow::anyhow!("no stdin"))?;
    stdin.write_all(b"go\n")?;
    stdin.flush()?;
    Ok(())
}

fn run_mode(mode: &str, expect_success: bool) -> anyhow::Result<()> {
    let (mut child, report) = spawn_helper(mode)?;
    assert_eq!(report.pids.len(), 2);
    assert!(
        report.pids.iter().all(|p| alive(*p)),
        "cluster processes not running: {report:?}"
    );
    release(&mut child)?;
    let status = child.wait()?;
    assert_eq!(status.success(), expect_success, "helper ({mode}) exit status {status}");
    assert_cleaned_up(mode, &report);
    Ok(())
}

#[test]
fn a_process_that_returns_leaves_nothing_behind() -> anyhow::Result<()> {
    run_mode("return", true)
}

#[test]
fn a_process_that_panics_leaves_nothing_behind() -> anyhow::Result<()> {
    run_mode("panic", false)
}

#[test]
fn a_cluster_kept_in_a_static_dies_with_its_process() -> anyhow::Result<()> {
    run_mode("static", true)
}

#[test]
fn a_process_that_calls_exit_leaves_nothing_behind() -> anyhow::Result<()> {
    run_mode("exit", false)
}

#[test]
fn two_processes_at_once_do_not_collide_and_sigkill_leaves_nothing_behind() -> anyhow::Result<()> {
    let first = std::thread::spawn(|| spawn_helper("hang").map_err(|e| e.to_string()));
    let second = spawn_helper("hang")?;
    let first = first
        .join()
        .map_err(|_| anyhow::anyhow!("helper thread panicked"))?
        .map_err(anyhow::Error::msg)?;
    let (a, b) = (&first.1, &second.1);
    assert!(
        a.ports.iter().all(|p| !b.ports.contains(p)),
        "ports collide: {a:?} {b:?}"
    );
    assert_ne!(a.run_dir, b.run_dir);
    for (mut child, report) in [first, second] {
        assert!(
            report.pids.iter().all(|p| alive(*p)),
            "cluster processes not running: {report:?}"
        );
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(i32::try_from(child.id())?),
            nix::sys::signal::Signal::SIGKILL,
        )?;
        child.wait()?;
        assert_cleaned_up("sigkill", &report);
    }
    Ok(())
}

#[tokio::test]
async fn two_clusters_in_one_process_do_not_collide() -> anyhow::Result<()> {
    let (a, b) = tokio::join!(ControlPlane::builder().start(), ControlPlane::builder().start());
    let (a, b) = (a?, b?);
    let (ra, rb) = (report(&a), report(&b));
    assert!(ra.ports.iter().all(|p| !rb.ports.contains(p)), "{ra:?} {rb:?}");
    assert_ne!(ra.run_dir, rb.run_dir);
    for cluster in [&a, &b] {
        let version = cluster.client().await?.apiserver_version().await?;
        assert_eq!(version.git_version, format!("v{}", cluster.info().version));
    }
    // Stopping one leaves the other serving.
    a.stop();
    assert_cleaned_up("stop", &ra);
    b.client().await?.apiserver_version().await?;
    b.stop();
    assert_cleaned_up("stop", &rb);
    Ok(())
}
