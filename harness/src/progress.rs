//! Progress on long steps (building binaries, starting the plane, waiting for a target): a
//! spinner with the elapsed time when stderr is a terminal, plain lines otherwise — a start
//! line, the elapsed time every 15 s, and a done line — so CI logs and tests read cleanly.
//! `KUBE_HARNESS_PROGRESS=plain` forces plain lines; without the `cli` feature (no indicatif)
//! lines are always plain.

use std::future::Future;
use std::sync::mpsc;
use std::time::{Duration, Instant};

#[cfg(feature = "cli")]
use indicatif::{ProgressBar, ProgressStyle};

/// Without the `cli` feature there is no spinner: plain lines only.
#[cfg(not(feature = "cli"))]
#[derive(Debug)]
enum ProgressBar {}

/// How often plain mode says it is still working.
const PLAIN_EVERY: Duration = Duration::from_secs(15);

#[cfg(not(feature = "cli"))]
fn spinner(_what: &str) -> Option<ProgressBar> {
    None
}

#[cfg(feature = "cli")]
fn spinner(what: &str) -> Option<ProgressBar> {
    use std::io::IsTerminal as _;
    let plain = std::env::var("KUBE_HARNESS_PROGRESS").is_ok_and(|v| v == "plain");
    if plain || !std::io::stderr().is_terminal() {
        return None;
    }
    let bar = ProgressBar::new_spinner();
    if let Ok(style) = ProgressStyle::with_template("{spinner} kube-harness: {msg} ({elapsed})") {
        bar.set_style(style);
    }
    bar.set_message(what.to_owned());
    bar.enable_steady_tick(Duration::from_millis(120));
    Some(bar)
}

fn done(bar: Option<ProgressBar>, what: &str, started: Instant) {
    let line = format!("{what}: done in {:.1}s", started.elapsed().as_secs_f64());
    match bar {
        #[cfg(feature = "cli")]
        Some(bar) => {
            if let Ok(style) = ProgressStyle::with_template("✓ kube-harness: {msg}") {
                bar.set_style(style);
            }
            bar.finish_with_message(line);
        }
        #[cfg(not(feature = "cli"))]
        Some(never) => match never {},
        None => eprintln!("kube-harness: {line}"),
    }
}

/// Run blocking `f` while showing progress for `what`.
pub(crate) fn blocking<T>(what: &str, f: impl FnOnce() -> T) -> T {
    let started = Instant::now();
    if let Some(bar) = spinner(what) {
        let out = f();
        done(Some(bar), what, started);
        return out;
    }
    eprintln!("kube-harness: {what} …");
    let (done_tx, done_rx) = mpsc::channel::<()>();
    std::thread::scope(|scope| {
        scope.spawn(move || {
            while let Err(mpsc::RecvTimeoutError::Timeout) = done_rx.recv_timeout(PLAIN_EVERY) {
                eprintln!("kube-harness: {what}: {}s elapsed", started.elapsed().as_secs());
            }
        });
        let out = f();
        let _ = done_tx.send(());
        done(None, what, started);
        out
    })
}

/// Await `work` while showing progress for `what`.
#[cfg_attr(
    not(feature = "cli"),
    allow(dead_code, reason = "only the command line awaits steps")
)]
pub(crate) async fn step<T>(what: &str, work: impl Future<Output = T>) -> T {
    let started = Instant::now();
    let bar = spinner(what);
    if bar.is_none() {
        eprintln!("kube-harness: {what} …");
    }
    tokio::pin!(work);
    let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + PLAIN_EVERY, PLAIN_EVERY);
    let out = loop {
        tokio::select! {
            out = &mut work => break out,
            _ = ticks.tick(), if bar.is_none() => {
                eprintln!("kube-harness: {what}: {}s elapsed", started.elapsed().as_secs());
            }
        }
    };
    done(bar, what, started);
    out
}
