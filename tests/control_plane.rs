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

/// The command line of each of the plane's processes.
fn cmdlines(cluster: &Cluster) -> Vec<String> {
    cluster
        .pids()
        .into_iter()
        .map(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/cmdline"))
                .unwrap_or_default()
                .replace('\0', " ")
        })
        .collect()
}

/// Feature gates reach every component, and extra flags kube-apiserver: it reports the gates
/// off in its metrics (one given as a gate, one inside a `feature-gates` flag), and
/// kube-controller-manager runs with the same `--feature-gates`.
#[tokio::test]
async fn feature_gates_reach_every_component_and_flags_reach_kube_apiserver() -> anyhow::Result<()> {
    let cluster = kube_harness::ControlPlane::builder()
        .with_feature_gate("WatchListCompression", false)
        .with_apiserver_arg("feature-gates", "APIResponseCompression=false")
        .with_apiserver_arg("--audit-log-maxage", "3")
        .start()
        .await?;
    let request = http::Request::get("/metrics").body(Vec::new())?;
    let metrics = cluster.client().await?.request_text(request).await?;
    for gate in ["WatchListCompression", "APIResponseCompression"] {
        let line = metrics
            .lines()
            .find(|l| l.starts_with(&format!("kubernetes_feature_enabled{{name=\"{gate}\"")))
            .ok_or_else(|| anyhow::anyhow!("kube-apiserver's /metrics has no kubernetes_feature_enabled for {gate}"))?;
        assert!(line.ends_with(" 0"), "{gate} is not off: {line}");
    }
    let lines = cmdlines(&cluster);
    // The flags (with the `feature-gates` one) come before the builder's gates.
    let gates = "--feature-gates=APIResponseCompression=false,WatchListCompression=false";
    for (component, flag) in [
        ("kube-apiserver", gates),
        ("kube-apiserver", "--audit-log-maxage=3"),
        ("kube-controller-manager", gates),
    ] {
        assert!(
            lines.iter().any(|l| l.contains(component) && l.contains(flag)),
            "{component} was not started with {flag}: {lines:#?}"
        );
    }
    Ok(())
}

/// A gate the version does not know, or a malformed one, is refused before anything starts:
/// the error names it, a near spelling and the version.
#[tokio::test]
async fn an_unknown_or_malformed_feature_gate_is_refused_before_anything_starts() -> anyhow::Result<()> {
    let started = std::time::Instant::now();
    let err = kube_harness::ControlPlane::builder()
        .with_feature_gate("WatchListCompresion", false)
        .start()
        .await
        .err()
        .map(|e| e.to_string())
        .ok_or_else(|| anyhow::anyhow!("a plane with an unknown gate started"))?;
    assert!(
        err.contains("feature gate \"WatchListCompresion\" is not known to Kubernetes 1.")
            && err.contains("did you mean WatchListCompression?")
            && err.contains("APIResponseCompression"),
        "{err}"
    );
    assert!(
        started.elapsed() < std::time::Duration::from_secs(10),
        "refused after {:?}",
        started.elapsed()
    );
    let err = kube_harness::ControlPlane::builder()
        .with_apiserver_arg("feature-gates", "WatchListCompression")
        .start()
        .await
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(
        err.contains("\"WatchListCompression\": expected a feature gate as NAME=true or NAME=false"),
        "{err}"
    );
    Ok(())
}

/// Images and published ports are kind's: on the local plane both are refused, saying why.
#[rstest]
#[tokio::test]
async fn images_and_published_ports_are_refused_on_the_local_plane(
    #[future] cluster: &'static Cluster,
) -> anyhow::Result<()> {
    let cluster = cluster.await;
    if cluster.provider() != kube_harness::Provider::Local {
        println!(
            "skipped: the shared cluster is a {} one, not the local plane",
            cluster.provider()
        );
        return Ok(());
    }
    let err = cluster
        .load_image("busybox:stable")
        .await
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(
        err.contains("loading an image into the nodes is not possible on the local provider"),
        "{err}"
    );
    assert!(cluster.published_port(10250).is_none());
    let options = kube_harness::provider::StartOptions::default().with_published_port(10250);
    let err = kube_harness::provider::start(kube_harness::Provider::Local, cluster.info().version, options)
        .await
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(
        err.contains("publishing node ports is not possible on the local provider"),
        "{err}"
    );
    Ok(())
}
