//! The helpers an operator's tests reach for first: CRDs installed from Rust values and from
//! files (usable at once, in any test order), a namespace per test with fixtures applied into
//! it and its name redacted in snapshots.

mod common;

use std::time::Instant;

use common::cluster;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::Api;
use kube::api::{DynamicObject, PostParams};
use kube::discovery::ApiResource;
use kube_harness::Cluster;
use rstest::rstest;
use serde_json::json;

fn fixtures(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/helper-fixtures")
        .join(name)
}

fn widget_crd(group: &str) -> anyhow::Result<CustomResourceDefinition> {
    Ok(serde_json::from_value(json!({
        "metadata": {"name": format!("widgets.{group}")},
        "spec": {"group": group, "scope": "Namespaced",
                 "names": {"plural": "widgets", "singular": "widget", "kind": "Widget", "listKind": "WidgetList"},
                 "versions": [{"name": "v1", "served": true, "storage": true,
                               "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}}]}
    }))?)
}

fn widgets(group: &str) -> ApiResource {
    ApiResource {
        group: group.to_owned(),
        version: "v1".into(),
        api_version: format!("{group}/v1"),
        kind: "Widget".into(),
        plural: "widgets".into(),
    }
}

/// Without the readiness wait, the first LIST after Established answered
/// `429 storage is (re)initializing` (every time here); without the back-dated condition the
/// first create waited 2.0 s. Fifty fresh CRDs: every first LIST answers, no first create is
/// held for the 2 s.
#[rstest]
#[tokio::test]
async fn a_fresh_crd_answers_its_first_list_and_create_fifty_times(
    #[future] cluster: &'static Cluster,
) -> anyhow::Result<()> {
    let cluster = cluster.await;
    let admin = cluster.client().await?;
    let mut slowest_create = std::time::Duration::ZERO;
    for i in 0..50 {
        let group = format!("fresh{i}-{}.helpers.example.com", std::process::id());
        cluster.install_crds([widget_crd(&group)?]).await?;
        let api: Api<DynamicObject> = Api::namespaced_with(admin.clone(), "default", &widgets(&group));
        if let Err(e) = api.list(&Default::default()).await {
            anyhow::bail!("install {i}: the first LIST failed: {e}");
        }
        let widget: DynamicObject = serde_json::from_value(
            json!({"apiVersion": format!("{group}/v1"), "kind": "Widget", "metadata": {"name": "w"}}),
        )?;
        let t = Instant::now();
        api.create(&PostParams::default(), &widget).await?;
        slowest_create = slowest_create.max(t.elapsed());
    }
    // kube-apiserver's hold is exactly 2 s: anything near it means the condition was not moved.
    assert!(
        slowest_create.as_millis() < 1500,
        "a first create took {slowest_create:?}"
    );
    Ok(())
}

#[rstest]
#[tokio::test]
async fn crds_install_from_files_and_again_without_harm(#[future] cluster: &'static Cluster) -> anyhow::Result<()> {
    let cluster = cluster.await;
    let names = cluster.install_crds_from(fixtures("crds")).await?;
    assert_eq!(names, ["gadgets.helpers.example.com"]);
    // A second install (another test needing the same CRD) is a no-op that waits for nothing.
    assert_eq!(cluster.install_crds_from(fixtures("crds/gadgets.yaml")).await?, names);
    let ns = cluster.test_namespace("gadgets").await?;
    let gadgets = ApiResource {
        group: "helpers.example.com".into(),
        version: "v1".into(),
        api_version: "helpers.example.com/v1".into(),
        kind: "Gadget".into(),
        plural: "gadgets".into(),
    };
    let api: Api<DynamicObject> = Api::namespaced_with(ns.client().clone(), ns.name(), &gadgets);
    let small: DynamicObject = serde_json::from_value(
        json!({"apiVersion": "helpers.example.com/v1", "kind": "Gadget", "metadata": {"name": "g"}, "spec": {"size": 0}}),
    )?;
    // The CRD's schema is in force, in the API's own words.
    let refused = kube_harness::check::status_record(api.create(&PostParams::default(), &small).await);
    insta::assert_yaml_snapshot!(refused);
    ns.delete().await?;
    Ok(())
}

#[rstest]
#[tokio::test]
async fn a_file_that_is_not_only_crds_is_refused_naming_the_document(
    #[future] cluster: &'static Cluster,
) -> anyhow::Result<()> {
    let cluster = cluster.await;
    let err = cluster
        .install_crds_from(fixtures("mixed"))
        .await
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    let root = env!("CARGO_MANIFEST_DIR");
    insta::assert_snapshot!(err.replace(root, "[root]"));
    // Nothing was installed from the refused file.
    let crds: Api<CustomResourceDefinition> = Api::all(cluster.client().await?);
    assert!(crds.get_opt("doodads.helpers.example.com").await?.is_none());
    Ok(())
}

#[rstest]
#[tokio::test]
async fn fixtures_apply_into_a_test_namespace_and_its_name_is_redacted(
    #[future] cluster: &'static Cluster,
) -> anyhow::Result<()> {
    let cluster = cluster.await;
    let ns = cluster.test_namespace("rbac").await?;
    let name = ns.name().to_owned();
    assert!(
        name.len() == "rbac-".len() + 8 && name.starts_with("rbac-"),
        "unexpected generated name {name}"
    );
    let applied: Vec<String> = ns
        .apply(fixtures("rbac"))
        .await?
        .into_iter()
        .map(|a| a.display)
        .collect();
    insta::assert_yaml_snapshot!(applied.iter().map(|a| ns.redact(a)).collect::<Vec<_>>());

    // The binding's subject followed the namespace: the ServiceAccount reads ConfigMaps here,
    // and only here.
    let token = cluster.service_account_token(&name, "reader", 600).await?;
    let reader = cluster.token_client(&token).await?;
    let here: Api<ConfigMap> = Api::namespaced(reader.clone(), &name);
    let settings = kube_harness::check::retry_while_forbidden(std::time::Duration::from_secs(20), async || {
        here.get("settings").await
    })
    .await?;
    assert_eq!(
        settings.data.and_then(|d| d.get("mode").cloned()).as_deref(),
        Some("strict")
    );
    let elsewhere = kube_harness::check::outcome(
        Api::<ConfigMap>::namespaced(reader, "default")
            .list(&Default::default())
            .await,
    );
    let _scope = ns.insta_settings().bind_to_scope();
    insta::assert_snapshot!(format!("{} {}", elsewhere.0, elsewhere.1));

    ns.delete().await?;
    let gone_or_terminating = Api::<Namespace>::all(cluster.client().await?)
        .get_opt(&name)
        .await?
        .is_none_or(|n| n.metadata.deletion_timestamp.is_some());
    assert!(gone_or_terminating, "{name} was not deleted");
    Ok(())
}

#[rstest]
#[tokio::test]
async fn bad_prefixes_and_namespace_objects_are_refused(#[future] cluster: &'static Cluster) -> anyhow::Result<()> {
    let cluster = cluster.await;
    for prefix in ["", "Upper", "-lead", "trail-", &"x".repeat(55)] {
        let err = cluster.test_namespace(prefix).await.err().map(|e| e.to_string());
        assert!(
            err.as_deref().is_some_and(|e| e.contains("prefix")),
            "{prefix:?}: {err:?}"
        );
    }
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("ns-object-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    std::fs::write(
        dir.join("ns.yaml"),
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: mine\n",
    )?;
    let ns = cluster.test_namespace("refuse").await?;
    let err = ns.apply(&dir).await.err().map(|e| e.to_string()).unwrap_or_default();
    assert!(err.contains("ns.yaml") && err.contains("Namespace/mine"), "{err}");
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}
