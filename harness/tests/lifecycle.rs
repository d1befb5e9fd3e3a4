//! Nothing outlives its owner: a process that starts a cluster and then returns, panics,
//! keeps it in a `static`, calls `exit`, or is killed with SIGINT, SIGTERM or SIGKILL leaves
//! no etcd or kube-apiserver process, no bound port and no run directory behind — checked
//! `KH_LEAK_ROUNDS` times per mode (10 by default; `scripts/leak-loop` runs 50). Two clusters
//! in one process, and eight processes at once on a fresh cache, do not collide.
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

use kube_harness::process::alive;
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
    // Go on only once the parent has seen the processes running. End of input means the
    // parent is gone (a failed assertion, say) without saying go: end with it, or this helper
    // and its cluster would wait for ever.
    let mut go = String::new();
    if std::io::stdin().read_line(&mut go).map_or(true, |n| n == 0) {
        return;
    }
    match mode.as_str() {
        "return" => drop(cluster),
        "panic" => panic!("helper panics while holding a cluster (expected)"),
        "static" => {
            let _ = KEPT.set(cluster);
        }
        "exit" => std::process::exit(3),
        // Wait for the parent's signal; if the parent goes first (stdin closes), return.
        "hang" => {
            let mut rest = String::new();
            while std::io::stdin().read_line(&mut rest).is_ok_and(|n| n > 0) {}
        }
        other => panic!("unknown helper mode {other}"),
    }
}

fn spawn_helper(mode: &str) -> anyhow::Result<(Child, Report)> {
    spawn_helper_with(mode, &[])
}

fn spawn_helper_with(mode: &str, env: &[(&str, &std::ffi::OsStr)]) -> anyhow::Result<(Child, Report)> {
    let exe = std::env::current_exe()?;
    // A test runner started as a background job of a non-interactive shell ignores SIGINT,
    // and a child inherits SIG_IGN: the SIGINT case would then wait for ever. `env
    // --default-signal` (coreutils) puts SIGINT and SIGTERM back to their defaults, then execs
    // the helper under the same pid.
    let mut child = Command::new("env")
        .arg("--default-signal=INT,TERM")
        .arg(exe)
        .args(["--exact", "helper_process", "--nocapture", "--test-threads=1"])
        .env(MODE, mode)
        .envs(env.iter().copied())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()?;
    let stdout = child.stdout.take().ok_or_else(|| anyhow::anyhow!("no stdout"))?;
    let mut lines = BufReader::new(stdout).lines();
    let report = loop {
        let Some(line) = lines.next() else {
            let status = wait_within(&mut child, mode)?;
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

/// How the helper ends: by itself after `release`, or by a signal from us.
fn end(child: &mut Child, mode: &str) -> anyhow::Result<std::process::ExitStatus> {
    let signal = match mode {
        "sigint" => nix::sys::signal::Signal::SIGINT,
        "sigterm" => nix::sys::signal::Signal::SIGTERM,
        "sigkill" => nix::sys::signal::Signal::SIGKILL,
        _ => {
            release(child)?;
            return wait_within(child, mode);
        }
    };
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(i32::try_from(child.id())?), signal)?;
    wait_within(child, mode)
}

/// The helper's exit status, within a minute; a helper that does not end is killed and the
/// test fails (never a wait without a deadline).
fn wait_within(child: &mut Child, mode: &str) -> anyhow::Result<std::process::ExitStatus> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok(status);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            anyhow::bail!("helper ({mode}) did not end within 60 s; killed");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn rounds() -> usize {
    std::env::var("KH_LEAK_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10)
}

/// Run `mode` `KH_LEAK_ROUNDS` times, checking after each round.
fn run_mode(mode: &str, expect_success: bool) -> anyhow::Result<()> {
    let helper_mode = if mode.starts_with("sig") { "hang" } else { mode };
    for round in 0..rounds() {
        // Every other round with a node: kube-scheduler and kwok too.
        let nodes = if round % 2 == 1 { "1" } else { "0" };
        let (mut child, report) = spawn_helper_with(helper_mode, &[("KUBE_HARNESS_NODES", nodes.as_ref())])?;
        // etcd, kube-apiserver and kube-controller-manager (and kube-scheduler and kwok): none
        // may outlive the helper.
        let expected = if nodes == "1" { 5 } else { 3 };
        assert_eq!(report.pids.len(), expected, "round {round}, nodes {nodes}: {report:?}");
        assert!(
            report.pids.iter().all(|p| alive(*p)),
            "round {round}: cluster processes not running: {report:?}"
        );
        let status = end(&mut child, mode)?;
        assert_eq!(
            status.success(),
            expect_success,
            "round {round}: helper ({mode}) exit status {status}"
        );
        assert_cleaned_up(&format!("{mode} (round {round})"), &report);
    }
    Ok(())
}

/// However the process holding a cluster ends — returning, panicking, with the cluster in a
/// `static`, calling `exit`, or killed by SIGINT, SIGTERM or SIGKILL — nothing it started
/// outlives it (every other round the plane has a node: kube-scheduler and kwok as well).
#[rstest::rstest]
#[case::returns("return", true)]
#[case::panics("panic", false)]
#[case::keeps_it_in_a_static("static", true)]
#[case::calls_exit("exit", false)]
#[case::is_killed_by_sigint("sigint", false)]
#[case::is_killed_by_sigterm("sigterm", false)]
#[case::is_killed_by_sigkill("sigkill", false)]
fn a_process_that_ends_leaves_nothing_behind(
    #[case] mode: &str,
    #[case] exits_successfully: bool,
) -> anyhow::Result<()> {
    run_mode(mode, exits_successfully)
}

/// Eight test processes start clusters at once on an empty cache directory: each gets its own
/// ports and run directory, and the etcd template they all need is made exactly once (the
/// cache is locked and written by rename).
#[test]
fn eight_processes_at_once_share_a_fresh_cache() -> anyhow::Result<()> {
    let assets = kube_harness::assets::Resolver::new(kube_harness::assets::KubeVersion::from_env()?).resolve()?;
    let cache = std::env::temp_dir().join(format!("kh-parallel-cache-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&cache);
    std::fs::create_dir_all(&cache)?;
    let helpers: Vec<_> = (0..8)
        .map(|_| {
            let (cache, assets) = (cache.clone(), assets.dir().to_owned());
            std::thread::spawn(move || {
                spawn_helper_with(
                    "return",
                    &[
                        ("KUBE_HARNESS_CACHE", cache.as_os_str()),
                        ("KUBE_HARNESS_ASSETS", assets.as_os_str()),
                    ],
                )
                .map_err(|e| e.to_string())
            })
        })
        .collect();
    let mut started = Vec::new();
    for h in helpers {
        started.push(
            h.join()
                .map_err(|_| anyhow::anyhow!("helper thread panicked"))?
                .map_err(anyhow::Error::msg)?,
        );
    }
    let mut ports: Vec<u16> = started.iter().flat_map(|(_, r)| r.ports.clone()).collect();
    let mut dirs: Vec<PathBuf> = started.iter().map(|(_, r)| r.run_dir.clone()).collect();
    ports.sort_unstable();
    ports.dedup();
    dirs.sort();
    dirs.dedup();
    assert_eq!((ports.len(), dirs.len()), (16, 8), "ports or run directories shared");
    for (mut child, report) in started {
        release(&mut child)?;
        assert!(wait_within(&mut child, "parallel")?.success());
        assert_cleaned_up("parallel", &report);
    }
    let templates: Vec<_> = std::fs::read_dir(cache.join("etcd-templates"))?
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with('.'))
        .collect();
    assert_eq!(templates.len(), 1, "expected one template, found {templates:?}");
    std::fs::remove_dir_all(&cache)?;
    Ok(())
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
        wait_within(&mut child, "sigkill")?;
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
