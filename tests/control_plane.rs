//! The local control plane as a user meets it: readiness, version, the admin, client-cert
//! users and RBAC, ServiceAccount tokens used as curl would, and the aggregation layer's
//! published trust.

use std::time::Duration;

use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, PolicyRule, RoleRef, Subject};
use kube::Api;
use kube::api::{DeleteParams, ListParams, ObjectMeta, PostParams};
use kube_harness::Cluster;
use rstest::rstest;

mod common;
use common::{cluster, namespace};

/// What `/readyz` (every check) answers now.
async fn readyz(cluster: &Cluster) -> anyhow::Result<String> {
    let request = http::Request::get("/readyz").body(Vec::new())?;
    Ok(cluster.client().await?.request_text(request).await?)
}

/// A cluster copied from the etcd template is handed out before the two bootstrap hooks that
/// sleep a second report done; `/readyz` passes every check shortly after.
#[rstest]
#[tokio::test]
async fn readyz_passes_every_check_within_seconds(#[future] cluster: &'static Cluster) -> anyhow::Result<()> {
    let cluster = cluster.await;
    cluster.wait_readyz(Duration::from_secs(10)).await?;
    assert_eq!(readyz(cluster).await?, "ok");
    Ok(())
}

/// `with_strict_readyz` (what the CLI uses) waits for every check before handing out.
#[tokio::test]
async fn a_strict_cluster_answers_readyz_ok_at_once() -> anyhow::Result<()> {
    let cluster = kube_harness::ControlPlane::builder()
        .with_strict_readyz()
        .start()
        .await?;
    assert_eq!(readyz(&cluster).await?, "ok");
    Ok(())
}

#[rstest]
#[tokio::test]
async fn version_reports_the_requested_release(#[future] cluster: &'static Cluster) -> anyhow::Result<()> {
    let cluster = cluster.await;
    let info = cluster.client().await?.apiserver_version().await?;
    let wanted = cluster.info().version;
    assert_eq!(info.git_version, format!("v{wanted}"));
    assert_eq!(info.major, wanted.major.to_string());
    assert_eq!(info.minor, wanted.minor.to_string());
    Ok(())
}

#[rstest]
#[tokio::test]
async fn the_admin_lists_namespaces(#[future] cluster: &'static Cluster) -> anyhow::Result<()> {
    let client = cluster.await.client().await?;
    let names: Vec<String> = Api::<Namespace>::all(client)
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .filter_map(|n| n.metadata.name)
        .collect();
    for expected in ["default", "kube-system", "kube-public", "kube-node-lease"] {
        assert!(names.iter().any(|n| n == expected), "{expected} missing from {names:?}");
    }
    Ok(())
}

#[rstest]
#[tokio::test]
async fn an_unbound_user_is_forbidden_until_a_cluster_role_binding_grants_access(
    #[future] cluster: &'static Cluster,
) -> anyhow::Result<()> {
    let cluster = cluster.await;
    let admin = cluster.client().await?;
    let user = "alice-rbac";
    let alice = cluster.user(user, &["devs"]).await?;
    let alice_namespaces = Api::<Namespace>::all(alice);

    let err = alice_namespaces.list(&ListParams::default()).await.err();
    let Some(kube::Error::Api(status)) = err else {
        panic!("expected a Status error, got {err:?}");
    };
    insta::assert_yaml_snapshot!("forbidden_list_namespaces", status);

    // Not the built-in `view`: it is an aggregated ClusterRole whose rules are filled in by
    // kube-controller-manager's clusterrole-aggregation controller, which this plane does not
    // run, so it grants nothing here.
    let role_name = format!("{user}-namespace-reader");
    let role = ClusterRole {
        metadata: ObjectMeta {
            name: Some(role_name.clone()),
            ..Default::default()
        },
        rules: Some(vec![PolicyRule {
            api_groups: Some(vec![String::new()]),
            resources: Some(vec!["namespaces".into()]),
            verbs: vec!["get".into(), "list".into(), "watch".into()],
            ..Default::default()
        }]),
        ..Default::default()
    };
    let roles = Api::<ClusterRole>::all(admin.clone());
    roles.create(&PostParams::default(), &role).await?;
    let binding_name = format!("{user}-namespace-reader");
    let binding = ClusterRoleBinding {
        metadata: ObjectMeta {
            name: Some(binding_name.clone()),
            ..Default::default()
        },
        role_ref: RoleRef {
            api_group: Some("rbac.authorization.k8s.io".into()),
            kind: "ClusterRole".into(),
            name: role_name.clone(),
        },
        subjects: Some(vec![Subject {
            kind: "User".into(),
            name: user.into(),
            api_group: Some("rbac.authorization.k8s.io".into()),
            ..Default::default()
        }]),
    };
    let bindings = Api::<ClusterRoleBinding>::all(admin);
    bindings.create(&PostParams::default(), &binding).await?;

    // The RBAC authorizer reads bindings through an informer: allow it to catch up.
    let lp = ListParams::default();
    let listed =
        kube_harness::check::retry_while_forbidden(Duration::from_secs(20), || alice_namespaces.list(&lp)).await?;
    assert!(
        listed
            .items
            .iter()
            .any(|n| n.metadata.name.as_deref() == Some("default"))
    );
    bindings.delete(&binding_name, &DeleteParams::default()).await?;
    roles.delete(&role_name, &DeleteParams::default()).await?;
    Ok(())
}

#[rstest]
#[tokio::test]
async fn a_token_request_token_authenticates_as_a_bearer_token(
    #[future] cluster: &'static Cluster,
) -> anyhow::Result<()> {
    let cluster = cluster.await;
    let admin = cluster.client().await?;
    let ns = namespace(&admin, "token").await?;
    let token = cluster.service_account_token(&ns, "robot", 600).await?;

    // As curl would: plain HTTPS with `Authorization: Bearer`.
    let http = cluster.http_client(None)?;
    let review: serde_json::Value = http
        .post(format!(
            "{}/apis/authentication.k8s.io/v1/selfsubjectreviews",
            cluster.server_url()
        ))
        .bearer_auth(&token)
        .json(&serde_json::json!({"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"}))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    assert_eq!(
        review["status"]["userInfo"]["username"],
        format!("system:serviceaccount:{ns}:robot")
    );
    let groups = review["status"]["userInfo"]["groups"].to_string();
    assert!(groups.contains("system:serviceaccounts"), "{groups}");

    // Authenticated but not authorized: 403, not 401.
    let status = http
        .get(format!("{}/api/v1/namespaces", cluster.server_url()))
        .bearer_auth(&token)
        .send()
        .await?
        .status();
    assert_eq!(status, reqwest::StatusCode::FORBIDDEN);

    // A token the cluster did not sign: 401.
    let status = http
        .get(format!("{}/api/v1/namespaces", cluster.server_url()))
        .bearer_auth("not-a-real-token")
        .send()
        .await?
        .status();
    assert_eq!(status, reqwest::StatusCode::UNAUTHORIZED);

    Api::<Namespace>::all(admin)
        .delete(&ns, &DeleteParams::default())
        .await?;
    Ok(())
}

#[rstest]
#[tokio::test]
async fn extension_apiserver_authentication_publishes_the_requestheader_trust(
    #[future] cluster: &'static Cluster,
) -> anyhow::Result<()> {
    let cluster = cluster.await;
    let Some(pki) = cluster.pki() else {
        println!("skipped: the harness did not make this cluster's PKI, so it knows no CA to compare");
        return Ok(());
    };
    let client = cluster.client().await?;
    let cms = Api::<ConfigMap>::namespaced(client, "kube-system");
    // kube-apiserver writes it from a post-start hook; it exists once /readyz is ok.
    let cm = cms.get("extension-apiserver-authentication").await?;
    let data = cm.data.unwrap_or_default();
    assert_eq!(
        data.get("requestheader-client-ca-file")
            .map(String::as_str)
            .map(str::trim),
        Some(pki.front_proxy_ca.cert_pem().trim())
    );
    assert_eq!(
        data.get("client-ca-file").map(String::as_str).map(str::trim),
        Some(pki.client_ca.cert_pem().trim())
    );
    let mut shown: Vec<(&String, &String)> = data.iter().filter(|(k, _)| !k.ends_with("-ca-file")).collect();
    shown.sort();
    insta::assert_yaml_snapshot!("extension_apiserver_authentication_headers", shown);
    Ok(())
}
