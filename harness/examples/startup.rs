//! Measures warm cluster start-up: starts and stops N control planes one after another and
//! prints each phase's median. `scripts/bench` runs it in release mode.
//!
//! Usage: `cargo run --release -p kube-harness --example startup -- [N]`

use std::time::{Duration, Instant};

use kube_harness::ControlPlane;

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v.get(v.len() / 2).copied().unwrap_or_default()
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let n: usize = std::env::args().nth(1).map(|s| s.parse()).transpose()?.unwrap_or(10);
    // Warm the asset cache (and build on a fresh machine) outside the measurement.
    ControlPlane::builder().start().await?.stop();
    let (mut total, mut etcd, mut apiserver, mut stop) = (vec![], vec![], vec![], vec![]);
    for i in 0..n {
        let cluster = ControlPlane::builder().start().await?;
        let t = cluster.timings().clone();
        let s = Instant::now();
        cluster.stop();
        let stopped = s.elapsed();
        println!(
            "run {i}: ready {:.3}s (etcd {:.3}s, kube-apiserver {:.3}s), stop {:.3}s",
            t.total.as_secs_f64(),
            t.etcd.as_secs_f64(),
            t.apiserver.as_secs_f64(),
            stopped.as_secs_f64()
        );
        total.push(t.total);
        etcd.push(t.etcd);
        apiserver.push(t.apiserver);
        stop.push(stopped);
    }
    println!(
        "median of {n}: ready {:.3}s, etcd {:.3}s, kube-apiserver {:.3}s, stop {:.3}s",
        median(total).as_secs_f64(),
        median(etcd).as_secs_f64(),
        median(apiserver).as_secs_f64(),
        median(stop).as_secs_f64()
    );
    Ok(())
}
