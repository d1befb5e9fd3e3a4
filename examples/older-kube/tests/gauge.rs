//! kube-harness on an older kube major: the CRD from the derive, the controller run in-process,
//! the status asserted with the steps engine — the same test as on kube 5, no glue.

use std::time::Duration;

use kube::CustomResourceExt as _;
use kube::api::PostParams;
use older_kube_operator::{Gauge, GaugeSpec};

#[tokio::test]
async fn the_controller_reports_the_target_it_reached() -> anyhow::Result<()> {
    let cluster = kube_harness::private().await?;
    cluster.install_crds([Gauge::crd()]).await?;
    let ns = cluster.test_namespace("gauges").await?;
    let _controller = kube_harness::spawn_guarded(older_kube_operator::run(cluster.client().await?));
    let gauges = ns.api::<Gauge>();
    gauges
        .create(&PostParams::default(), &Gauge::new("g", GaugeSpec { target: 3 }))
        .await?;
    kube_harness::check::assert_eventually(
        &gauges,
        "g",
        &serde_json::json!({"status": {"observed": 3}}),
        Duration::from_secs(30),
    )
    .await?;
    Ok(())
}
