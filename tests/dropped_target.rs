//! A `RunningTarget` dropped without `down` (a test that panicked) still removes its
//! APIServices, so the cluster's discovery stays healthy for everything else.

use k8s_openapi::kube_aggregator::pkg::apis::apiregistration::v1::APIService;
use kube::Api;
use kube_harness::{ControlPlane, Target};

mod common;

#[tokio::test]
async fn a_dropped_target_takes_its_apiservices_with_it() -> anyhow::Result<()> {
    let cluster = ControlPlane::builder().start().await?;
    let dir = common::target_dir("requests");
    let running = cluster.up_target(&Target::load(dir)?).await?;
    let apiservices: Api<APIService> = Api::all(cluster.client().await?);
    assert!(apiservices.get_opt("v1beta1.k8s.wujiuye.com").await?.is_some());
    let backend = running.backend().map(|b| b.pid());

    // As when a test panics while holding it.
    drop(running);

    assert!(
        apiservices.get_opt("v1beta1.k8s.wujiuye.com").await?.is_none(),
        "the APIService outlived its target"
    );
    if let Some(pid) = backend {
        assert!(
            kube_harness::process::live_group_members(pid).is_empty(),
            "backend pid {pid} outlived its target"
        );
    }
    // Discovery answers without the stale group.
    let groups = cluster.client().await?.list_api_groups().await?;
    assert!(groups.groups.iter().all(|g| g.name != "k8s.wujiuye.com"));
    Ok(())
}
