//! The RBAC 403 matrix: three ways to be someone — a client certificate, a ServiceAccount
//! token from TokenRequest, and impersonation — against a core resource (pods), a CRD
//! (samples.example.com) and the aggregated resources (requests.k8s.wujiuye.com, authorized by
//! our server through SubjectAccessReview; flunders.wardle.example.com, by upstream
//! sample-apiserver's delegated authorization). Unbound, each gets a 403 whose `Status` is
//! snapshotted; after a namespaced Role and RoleBinding (get, list, watch) each gets 200 in
//! that namespace and still 403 in another. The cluster-scoped fischers stay 403 under a
//! RoleBinding and turn 200 with a ClusterRoleBinding.
//!
//! Own test binary, own cluster: fixed namespace names are safe. It runs on the local plane and
//! on kind (`scripts/test`'s kind part), where the certificate is signed by kubeadm's CA and
//! the answers are the same.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding, RoleRef, Subject};
use kube::api::{ObjectMeta, PostParams};
use kube::core::{ApiResource, GroupVersionKind};
use kube::{Api, Client};
use kube_harness::target::Target;
use kube_harness::{Capability, check};

const BOUND_NS: &str = "rbac-bound";
const OTHER_NS: &str = "rbac-other";
/// How long a new binding may take to reach the authorizers.
const BIND_WAIT: Duration = Duration::from_secs(20);

fn resources() -> Vec<(&'static str, ApiResource)> {
    let ar = |g: &str, v: &str, k: &str, p: &str| ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(g, v, k), p);
    vec![
        ("core/pods", ar("", "v1", "Pod", "pods")),
        ("crd/samples", ar("example.com", "v1alpha1", "Sample", "samples")),
        (
            "aggregated/requests",
            ar("k8s.wujiuye.com", "v1beta1", "Requests", "requests"),
        ),
        (
            "aggregated/flunders",
            ar("wardle.example.com", "v1alpha1", "Flunder", "flunders"),
        ),
    ]
}

fn meta(name: &str, ns: Option<&str>) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.to_owned()),
        namespace: ns.map(str::to_owned),
        ..Default::default()
    }
}

#[tokio::test]
async fn each_identity_is_forbidden_until_a_role_binds_it_and_only_in_that_namespace() -> anyhow::Result<()> {
    let cluster = kube_harness::shared().await?;
    // Each identity must be what its label says: a real client certificate, not the
    // impersonation `Cluster::user` falls back to.
    if let Some(reason) = cluster.lacks(Capability::ClientCertificates) {
        println!("{reason}");
        return Ok(());
    }
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fixtures/targets");
    let requests = cluster.up_target(&Target::load(root.join("requests"))?).await?;
    let samples = cluster.up_target(&Target::load(root.join("samples"))?).await?;
    let wardle = cluster.up_target(&Target::load(root.join("wardle"))?).await?;
    let admin = cluster.client().await?;
    for ns in [BOUND_NS, OTHER_NS] {
        Api::<Namespace>::all(admin.clone())
            .create(
                &PostParams::default(),
                &Namespace {
                    metadata: meta(ns, None),
                    ..Default::default()
                },
            )
            .await?;
    }
    let token = cluster.service_account_token(BOUND_NS, "robot", 600).await?;

    let identities: Vec<(&str, Client)> = vec![
        ("cert:carol", cluster.user("carol", &["qa"]).await?),
        ("token:robot", cluster.token_client(&token).await?),
        ("impersonated:dave", cluster.impersonating("dave", &["qa"]).await?),
    ];

    let mut unbound = BTreeMap::new();
    for (who, client) in &identities {
        for (what, ar) in resources() {
            let (code, text) = check::probe_list(client, Some(BOUND_NS), &ar).await;
            assert_eq!(code, 403, "{who} {what}: {text}");
            unbound.insert(format!("{who} lists {what}"), text);
        }
    }
    let fischers = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("wardle.example.com", "v1alpha1", "Fischer"),
        "fischers",
    );
    for (who, client) in &identities {
        let (code, text) = check::probe_list(client, None, &fischers).await;
        assert_eq!(code, 403, "{who} cluster-scoped fischers: {text}");
        unbound.insert(format!("{who} lists aggregated/fischers (cluster-scoped)"), text);
    }
    insta::assert_yaml_snapshot!("forbidden_matrix", unbound);

    let role = Role {
        metadata: meta("reader", Some(BOUND_NS)),
        rules: Some(vec![PolicyRule {
            api_groups: Some(vec![
                String::new(),
                "example.com".into(),
                "k8s.wujiuye.com".into(),
                "wardle.example.com".into(),
            ]),
            resources: Some(vec![
                "pods".into(),
                "samples".into(),
                "requests".into(),
                "flunders".into(),
            ]),
            verbs: vec!["get".into(), "list".into(), "watch".into()],
            ..Default::default()
        }]),
    };
    Api::<Role>::namespaced(admin.clone(), BOUND_NS)
        .create(&PostParams::default(), &role)
        .await?;
    let subject = |kind: &str, name: &str| Subject {
        kind: kind.to_owned(),
        name: name.to_owned(),
        namespace: (kind == "ServiceAccount").then(|| BOUND_NS.to_owned()),
        api_group: (kind == "User").then(|| "rbac.authorization.k8s.io".to_owned()),
    };
    let binding = RoleBinding {
        metadata: meta("reader", Some(BOUND_NS)),
        role_ref: RoleRef {
            api_group: Some("rbac.authorization.k8s.io".into()),
            kind: "Role".into(),
            name: "reader".into(),
        },
        subjects: Some(vec![
            subject("User", "carol"),
            subject("ServiceAccount", "robot"),
            subject("User", "dave"),
        ]),
    };
    Api::<RoleBinding>::namespaced(admin.clone(), BOUND_NS)
        .create(&PostParams::default(), &binding)
        .await?;

    for (who, client) in &identities {
        for (what, ar) in resources() {
            let (code, text) = check::probe_list_once_bound(client, Some(BOUND_NS), &ar, BIND_WAIT).await;
            assert_eq!(code, 200, "{who} {what} after binding: {text}");
            let (code, text) = check::probe_list(client, Some(OTHER_NS), &ar).await;
            assert_eq!(code, 403, "{who} {what} in {OTHER_NS} (not bound there): {text}");
        }
    }
    // A namespaced RoleBinding cannot grant a cluster-scoped resource; a ClusterRoleBinding can.
    for (who, client) in &identities {
        let (code, text) = check::probe_list(client, None, &fischers).await;
        assert_eq!(
            code, 403,
            "{who} cluster-scoped fischers with only a RoleBinding: {text}"
        );
    }
    let cluster_role = ClusterRole {
        metadata: meta("fischer-reader", None),
        rules: Some(vec![PolicyRule {
            api_groups: Some(vec!["wardle.example.com".into()]),
            resources: Some(vec!["fischers".into()]),
            verbs: vec!["get".into(), "list".into(), "watch".into()],
            ..Default::default()
        }]),
        ..Default::default()
    };
    Api::<ClusterRole>::all(admin.clone())
        .create(&PostParams::default(), &cluster_role)
        .await?;
    let cluster_binding = ClusterRoleBinding {
        metadata: meta("fischer-reader", None),
        role_ref: RoleRef {
            api_group: Some("rbac.authorization.k8s.io".into()),
            kind: "ClusterRole".into(),
            name: "fischer-reader".into(),
        },
        subjects: Some(vec![
            subject("User", "carol"),
            subject("ServiceAccount", "robot"),
            subject("User", "dave"),
        ]),
    };
    Api::<ClusterRoleBinding>::all(admin.clone())
        .create(&PostParams::default(), &cluster_binding)
        .await?;
    for (who, client) in &identities {
        let (code, text) = check::probe_list_once_bound(client, None, &fischers, BIND_WAIT).await;
        assert_eq!(code, 200, "{who} fischers after ClusterRoleBinding: {text}");
    }
    wardle.down(cluster).await?;
    samples.down(cluster).await?;
    requests.down(cluster).await?;
    Ok(())
}
