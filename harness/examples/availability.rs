//! Measures, for a target directory, the time from its backend being ready (listening and
//! answering its readiness probe) to its APIServices being `Available=True` with the group
//! served, over N bring-ups on one cluster. `scripts/bench` runs it in release mode.
//!
//! Usage: `cargo run --release -p kube-harness --example availability -- [TARGET_DIR] [N]`

use std::time::Duration;

use kube_harness::ControlPlane;
use kube_harness::target::Target;

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v.get(v.len() / 2).copied().unwrap_or_default()
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let dir = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "fixtures/targets/wardle".to_owned());
    let n: usize = std::env::args().nth(2).map(|s| s.parse()).transpose()?.unwrap_or(10);
    let target = Target::load(&dir)?;
    let cluster = ControlPlane::builder().start().await?;
    // The first bring-up may build the backend; it is not measured.
    cluster.up_target(&target).await?.down(&cluster).await?;
    let (mut ready, mut available, mut total) = (vec![], vec![], vec![]);
    for i in 0..n {
        let running = cluster.up_target(&target).await?;
        let t = running.timings().clone();
        println!(
            "run {i}: backend ready {:.3}s, then Available {:.3}s, up total {:.3}s",
            t.backend_ready.as_secs_f64(),
            t.apiservices_available.as_secs_f64(),
            t.total.as_secs_f64()
        );
        ready.push(t.backend_ready);
        available.push(t.apiservices_available);
        total.push(t.total);
        running.down(&cluster).await?;
    }
    println!(
        "median of {n} ({}): backend ready {:.3}s, ready→Available {:.3}s, up total {:.3}s",
        target.name,
        median(ready).as_secs_f64(),
        median(available).as_secs_f64(),
        median(total).as_secs_f64()
    );
    cluster.stop();
    Ok(())
}
