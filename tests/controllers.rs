//! kube-controller-manager on the local plane, proved with real processes: namespaces delete,
//! owner references are collected (background and foreground), new namespaces get `default`
//! ServiceAccounts that the ServiceAccount admission plugin puts into Pods, the aggregated
//! `view` ClusterRole picks up a CRD's rules, a Deployment makes a ReplicaSet and Pods, and a
//! killed kube-controller-manager is reported.

mod common;

use std::time::{Duration, Instant};

use common::cluster;
use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Pod, Secret};
use kube::Api;
use kube::api::{DeleteParams, ListParams, PostParams, PropagationPolicy};
use kube_harness::{Capability, Cluster, ControlPlane, Error};
use rstest::rstest;
use serde_json::json;

/// Poll `done` every 20 ms for up to 30 s; how long it took.
async fn within<F, Fut>(what: &str, mut done: F) -> anyhow::Result<Duration>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<bool>>,
{
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(30) {
        if done().await? {
            return Ok(started.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    anyhow::bail!("{what}: not after 30 s")
}

async fn with_controllers(cluster: &'static Cluster) -> anyhow::Result<&'static Cluster> {
    anyhow::ensure!(
        cluster.has(Capability::Controllers),
        "the local plane must run kube-controller-manager here (KUBE_HARNESS_CONTROLLERS is {:?})",
        std::env::var("KUBE_HARNESS_CONTROLLERS").ok()
    );
    cluster.wait_for_controllers(Duration::from_secs(30)).await?;
    Ok(cluster)
}

#[rstest]
#[tokio::test]
async fn a_deleted_namespace_is_gone_within_seconds(#[future] cluster: &'static Cluster) -> anyhow::Result<()> {
    let cluster = with_controllers(cluster.await).await?;
    let ns = cluster.test_namespace("gone").await?;
    let name = ns.name().to_owned();
    ns.api::<ConfigMap>()
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "inside"}}))?,
        )
        .await?;
    ns.delete().await?;
    let namespaces: Api<Namespace> = Api::all(cluster.client().await?);
    let took = within("the namespace to be gone", || async {
        Ok(namespaces.get_opt(&name).await?.is_none())
    })
    .await?;
    eprintln!("namespace deletion completed in {took:?}");
    Ok(())
}

fn owned_secret(owner: &ConfigMap, name: &str) -> anyhow::Result<Secret> {
    Ok(serde_json::from_value(json!({
        "metadata": {"name": name, "ownerReferences": [{
            "apiVersion": "v1", "kind": "ConfigMap",
            "name": owner.metadata.name, "uid": owner.metadata.uid,
        }]},
        "stringData": {"k": "v"},
    }))?)
}

#[rstest]
#[case::background(PropagationPolicy::Background)]
#[case::foreground(PropagationPolicy::Foreground)]
#[tokio::test]
async fn deleting_an_owner_collects_its_dependents(
    #[future] cluster: &'static Cluster,
    #[case] policy: PropagationPolicy,
) -> anyhow::Result<()> {
    let cluster = with_controllers(cluster.await).await?;
    let ns = cluster.test_namespace("gc").await?;
    let owners = ns.api::<ConfigMap>();
    let owner = owners
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({"metadata": {"name": "owner"}}))?,
        )
        .await?;
    let secrets = ns.api::<Secret>();
    secrets
        .create(&PostParams::default(), &owned_secret(&owner, "dependent")?)
        .await?;
    let params = DeleteParams {
        propagation_policy: Some(policy.clone()),
        ..Default::default()
    };
    owners.delete("owner", &params).await?;
    if matches!(policy, PropagationPolicy::Foreground) {
        // Foreground: the owner waits (finalizer foregroundDeletion) until its dependents are
        // gone, so the owner's absence proves the order.
        within("the owner to be gone", || async {
            Ok(owners.get_opt("owner").await?.is_none())
        })
        .await?;
        assert!(
            secrets.get_opt("dependent").await?.is_none(),
            "the owner went before its dependent"
        );
    } else {
        within("the dependent to be collected", || async {
            Ok(secrets.get_opt("dependent").await?.is_none())
        })
        .await?;
    }
    Ok(())
}

#[rstest]
#[tokio::test]
async fn a_new_namespace_has_a_default_service_account_that_pods_get(
    #[future] cluster: &'static Cluster,
) -> anyhow::Result<()> {
    let cluster = with_controllers(cluster.await).await?;
    let ns = cluster.test_namespace("sa").await?;
    // test_namespace made `default` (before kube-controller-manager would have); a Pod naming
    // no ServiceAccount gets it.
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": "p"},
        "spec": {"containers": [{"name": "c", "image": "registry.invalid/none:1"}]},
    }))?;
    let created = ns.api::<Pod>().create(&PostParams::default(), &pod).await?;
    let spec = created.spec.unwrap_or_default();
    let projected = spec
        .volumes
        .unwrap_or_default()
        .iter()
        .any(|v| v.projected.is_some() && v.name.starts_with("kube-api-access-"));
    insta::assert_yaml_snapshot!(json!({
        "serviceAccountName": spec.service_account_name,
        "token volume projected": projected,
        "phase": created.status.and_then(|s| s.phase),
    }));
    Ok(())
}

#[rstest]
#[tokio::test]
async fn binding_view_grants_a_crd_whose_role_aggregates_to_view(
    #[future] cluster: &'static Cluster,
) -> anyhow::Result<()> {
    let cluster = with_controllers(cluster.await).await?;
    let group = format!("view{}.controllers.example.com", std::process::id());
    cluster
        .install_crds([serde_json::from_value(json!({
            "metadata": {"name": format!("gizmos.{group}")},
            "spec": {"group": group, "scope": "Namespaced",
                     "names": {"plural": "gizmos", "singular": "gizmo", "kind": "Gizmo", "listKind": "GizmoList"},
                     "versions": [{"name": "v1", "served": true, "storage": true,
                                   "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}}]}
        }))?])
        .await?;
    let admin = cluster.client().await?;
    let roles: Api<k8s_openapi::api::rbac::v1::ClusterRole> = Api::all(admin.clone());
    let role_name = format!("gizmo-view-{}", std::process::id());
    roles
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({
                "metadata": {"name": role_name, "labels": {"rbac.authorization.k8s.io/aggregate-to-view": "true"}},
                "rules": [{"apiGroups": [group], "resources": ["gizmos"], "verbs": ["get", "list", "watch"]}],
            }))?,
        )
        .await?;
    let ns = cluster.test_namespace("view").await?;
    let bindings: Api<k8s_openapi::api::rbac::v1::RoleBinding> = ns.api();
    bindings
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({
                "metadata": {"name": "carol-views"},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "view"},
                "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "carol"}],
            }))?,
        )
        .await?;
    let resource = kube::discovery::ApiResource {
        group: group.clone(),
        version: "v1".into(),
        api_version: format!("{group}/v1"),
        kind: "Gizmo".into(),
        plural: "gizmos".into(),
    };
    let carol: Api<kube::api::DynamicObject> =
        Api::namespaced_with(cluster.user("carol", &[]).await?, ns.name(), &resource);
    let listed = kube_harness::check::retry_while_forbidden(Duration::from_secs(30), async || {
        carol.list(&ListParams::default()).await
    })
    .await;
    let (code, _) = kube_harness::check::outcome(listed);
    let create = kube_harness::check::outcome(
        carol
            .create(
                &PostParams::default(),
                &serde_json::from_value(
                    json!({"apiVersion": format!("{group}/v1"), "kind": "Gizmo", "metadata": {"name": "g"}}),
                )?,
            )
            .await,
    );
    roles.delete(&role_name, &DeleteParams::default()).await?;
    let _scope = ns.insta_settings().bind_to_scope();
    insta::assert_yaml_snapshot!(json!({
        "list as view": code,
        "create as view": ns.redact(&format!("{} {}", create.0, create.1)).replace(&group, "[group]"),
    }));
    Ok(())
}

#[rstest]
#[tokio::test]
async fn a_deployment_makes_a_replicaset_and_pending_pods(#[future] cluster: &'static Cluster) -> anyhow::Result<()> {
    let cluster = with_controllers(cluster.await).await?;
    let ns = cluster.test_namespace("deploy").await?;
    let deployment: Deployment = serde_json::from_value(json!({
        "metadata": {"name": "web"},
        "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "web"}},
                 "template": {"metadata": {"labels": {"app": "web"}},
                              "spec": {"containers": [{"name": "c", "image": "registry.invalid/none:1"}]}}},
    }))?;
    ns.api::<Deployment>()
        .create(&PostParams::default(), &deployment)
        .await?;
    let pods = ns.api::<Pod>();
    within("two Pods", || async {
        Ok(pods.list(&ListParams::default()).await?.items.len() == 2)
    })
    .await?;
    let sets = ns.api::<ReplicaSet>().list(&ListParams::default()).await?;
    let pods = pods.list(&ListParams::default()).await?;
    let owners: Vec<String> = pods
        .items
        .iter()
        .flat_map(|p| p.metadata.owner_references.clone().unwrap_or_default())
        .map(|o| o.kind)
        .collect();
    let phases: Vec<Option<String>> = pods
        .items
        .iter()
        .map(|p| p.status.as_ref().and_then(|s| s.phase.clone()))
        .collect();
    insta::assert_yaml_snapshot!(json!({
        "replicasets": sets.items.len(),
        "replicaset replicas": sets.items.first().and_then(|s| s.spec.replicas),
        "pod owners": owners,
        "pod phases": phases,
    }));
    Ok(())
}

/// A private cluster (the shared one must keep its kube-controller-manager): killed
/// mid-test, `Cluster::watch` reports it within seconds, naming it.
#[tokio::test]
async fn a_killed_controller_manager_is_reported_within_seconds() -> anyhow::Result<()> {
    let cluster = ControlPlane::builder().start().await?;
    cluster.wait_for_controllers(Duration::from_secs(30)).await?;
    let pids = cluster.pids();
    let kcm = *pids
        .get(2)
        .ok_or_else(|| anyhow::anyhow!("no kube-controller-manager pid in {pids:?}"))?;
    let cmdline = std::fs::read_to_string(format!("/proc/{kcm}/cmdline"))?;
    anyhow::ensure!(cmdline.contains("kube-controller-manager"), "pid {kcm} is {cmdline:?}");
    let killed = Instant::now();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(i32::try_from(kcm)?),
        nix::sys::signal::Signal::SIGKILL,
    )?;
    let err = cluster.watch(tokio::time::sleep(Duration::from_secs(60))).await.err();
    let took = killed.elapsed();
    assert!(
        matches!(&err, Some(Error::Exited { component, .. }) if *component == "kube-controller-manager"),
        "{err:?}"
    );
    assert!(took < Duration::from_secs(5), "reported after {took:?}");
    assert!(cluster.wait_for_controllers(Duration::from_secs(1)).await.is_err());
    Ok(())
}

/// Without kube-controller-manager the plane behaves as envtest: no `default` ServiceAccount,
/// and the ServiceAccount admission plugin is off (a Pod is admitted without one).
#[tokio::test]
async fn without_it_the_plane_is_envtest_like() -> anyhow::Result<()> {
    let cluster = ControlPlane::builder().without_controller_manager().start().await?;
    assert!(!cluster.has(Capability::Controllers));
    let ns = cluster.test_namespace("bare").await?;
    assert!(
        ns.api::<k8s_openapi::api::core::v1::ServiceAccount>()
            .get_opt("default")
            .await?
            .is_none()
    );
    let pod: Pod = serde_json::from_value(json!({
        "metadata": {"name": "p"},
        "spec": {"containers": [{"name": "c", "image": "registry.invalid/none:1"}]},
    }))?;
    let created = ns.api::<Pod>().create(&PostParams::default(), &pod).await?;
    assert_eq!(created.spec.and_then(|s| s.service_account_name), None);
    let err = cluster.wait_for_controllers(Duration::from_secs(1)).await.err();
    assert!(matches!(err, Some(Error::Unsupported { .. })), "{err:?}");
    Ok(())
}
