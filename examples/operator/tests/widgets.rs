//! The operator's own test: its CRD on a kube-harness cluster (compiled by kube-harness's lint
//! to prove the crates build together; run it here with `cargo test`).

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;
use kube::api::{Api, Patch, PatchParams};
use widget_operator::Widget;

#[tokio::test]
async fn the_widget_crd_is_served() -> anyhow::Result<()> {
    let cluster = kube_harness::shared().await?;
    let crds: Api<CustomResourceDefinition> = Api::all(cluster.client().await?);
    crds.patch(
        "widgets.example.com",
        &PatchParams::apply("widget-test"),
        &Patch::Apply(Widget::crd()),
    )
    .await?;
    Ok(())
}
