//! The operator's own tests on a kube-harness cluster: the CRD from its Rust type, the
//! controller in-process (as admin, then as its own ServiceAccount with only the RBAC it
//! ships), and a read-only identity. Every test has its own namespace, so they pass in any
//! order, in one process (`cargo test`) or one process each (`cargo nextest run`).

use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, PostParams};
use kube::{Client, CustomResourceExt};
use kube_harness::Cluster;
use kube_harness::cluster::TestNamespace;
use widget_operator::{Widget, WidgetSpec};

/// The shared cluster with the operator's CRD installed (each test asks; only the first
/// install in a process does anything).
async fn cluster() -> anyhow::Result<&'static Cluster> {
    let cluster = kube_harness::shared().await?;
    cluster.install_crds([Widget::crd()]).await?;
    Ok(cluster)
}

fn widget(name: &str, replicas: i32) -> Widget {
    Widget::new(
        name,
        WidgetSpec {
            replicas,
            color: Some("blue".into()),
        },
    )
}

/// The controller's ConfigMap for `name`, once it exists (bounded wait).
async fn config_map_of(ns: &TestNamespace, name: &str) -> anyhow::Result<ConfigMap> {
    let config_maps = ns.api::<ConfigMap>();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(cm) = config_maps.get_opt(&format!("{name}-widget")).await? {
            return Ok(cm);
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "no ConfigMap for {name} after 30 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The ConfigMap and the Widget's status as a snapshot sees them.
async fn outcome(ns: &TestNamespace, name: &str) -> anyhow::Result<serde_json::Value> {
    let cm = config_map_of(ns, name).await?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = ns.api::<Widget>().get(name).await?.status {
            break status;
        }
        anyhow::ensure!(tokio::time::Instant::now() < deadline, "no status on {name} after 30 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let owners: Vec<String> = cm
        .metadata
        .owner_references
        .unwrap_or_default()
        .into_iter()
        .map(|o| format!("{}/{} controller={:?}", o.kind, o.name, o.controller))
        .collect();
    Ok(serde_json::json!({"config_map": {"data": cm.data, "owners": owners}, "status": status}))
}

#[tokio::test]
async fn the_crd_from_the_rust_type_validates_what_it_says() -> anyhow::Result<()> {
    let ns = cluster().await?.test_namespace("crd").await?;
    let refused = ns
        .api::<Widget>()
        .create(&PostParams::default(), &widget("none", 0))
        .await;
    let (code, message) = kube_harness::check::outcome(refused);
    insta::assert_snapshot!(format!("{code} {message}"));
    Ok(())
}

#[tokio::test]
async fn the_controller_writes_a_config_map_and_the_status() -> anyhow::Result<()> {
    let cluster = cluster().await?;
    let ns = cluster.test_namespace("controller").await?;
    let _controller = kube_harness::spawn_guarded(widget_operator::run(cluster.client().await?, ns.name().to_owned()));
    ns.api::<Widget>()
        .create(&PostParams::default(), &widget("small", 2))
        .await?;
    let _scope = ns.insta_settings().bind_to_scope();
    insta::assert_yaml_snapshot!(outcome(&ns, "small").await?);
    Ok(())
}

/// The controller as the ServiceAccount it is deployed with, holding only the Role in
/// `config/rbac`: a Role missing a verb fails here, not in production.
#[tokio::test]
async fn the_controller_works_with_only_the_rbac_it_ships() -> anyhow::Result<()> {
    let cluster = cluster().await?;
    let ns = cluster.test_namespace("shipped-rbac").await?;
    ns.apply(concat!(env!("CARGO_MANIFEST_DIR"), "/config/rbac")).await?;
    let token = cluster.service_account_token(ns.name(), "widget-operator", 600).await?;
    let operator = cluster.token_client(&token).await?;
    let _controller = kube_harness::spawn_guarded(widget_operator::run(operator, ns.name().to_owned()));
    ns.api::<Widget>()
        .create(&PostParams::default(), &widget("mine", 3))
        .await?;
    let _scope = ns.insta_settings().bind_to_scope();
    insta::assert_yaml_snapshot!(outcome(&ns, "mine").await?);
    Ok(())
}

/// Without its RoleBinding both of the controller's watches (Widgets, owned ConfigMaps) are
/// refused: the errors it reports, in order of the resource (which comes first varies).
#[tokio::test]
async fn without_its_role_the_controller_reports_forbidden() -> anyhow::Result<()> {
    let cluster = cluster().await?;
    let ns = cluster.test_namespace("no-rbac").await?;
    let token = cluster.service_account_token(ns.name(), "widget-operator", 600).await?;
    let operator: Client = cluster.token_client(&token).await?;
    let mut reconciles = Box::pin(widget_operator::reconciles(operator, ns.name()));
    let mut errors = std::collections::BTreeSet::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while errors.len() < 2 {
        let next = tokio::time::timeout_at(deadline, reconciles.next()).await?;
        match next {
            Some(Err(e)) => drop(errors.insert(e)),
            Some(Ok(name)) => anyhow::bail!("reconciled {name} without any RBAC"),
            None => anyhow::bail!("the controller stopped"),
        }
    }
    let _scope = ns.insta_settings().bind_to_scope();
    insta::assert_yaml_snapshot!(errors);
    Ok(())
}

/// A read-only identity: lists widgets, may not create one.
#[tokio::test]
async fn the_viewer_reads_widgets_and_may_not_create_them() -> anyhow::Result<()> {
    let cluster = cluster().await?;
    let ns = cluster.test_namespace("viewer").await?;
    ns.apply(concat!(env!("CARGO_MANIFEST_DIR"), "/config/viewer")).await?;
    ns.api::<Widget>()
        .create(&PostParams::default(), &widget("shown", 1))
        .await?;
    let token = cluster.service_account_token(ns.name(), "widget-viewer", 600).await?;
    let viewer: Api<Widget> = Api::namespaced(cluster.token_client(&token).await?, ns.name());
    let listed = kube_harness::check::retry_while_forbidden(Duration::from_secs(20), async || {
        viewer.list(&Default::default()).await
    })
    .await?;
    let names: Vec<String> = listed.items.iter().filter_map(|w| w.metadata.name.clone()).collect();
    let create = kube_harness::check::outcome(viewer.create(&PostParams::default(), &widget("new", 1)).await);
    let _scope = ns.insta_settings().bind_to_scope();
    insta::assert_yaml_snapshot!(serde_json::json!({"listed": names, "create": format!("{} {}", create.0, create.1)}));
    Ok(())
}
