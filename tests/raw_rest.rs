//! Raw REST as users do it with curl: a ServiceAccount token from TokenRequest, plain
//! reqwest, JSON and YAML bodies. List namespaces and pods, then create a Pod from YAML: it is
//! stored (and stays Pending: there is no kubelet) and its stored form is snapshotted.

use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, PolicyRule, RoleRef, Subject};
use kube::Api;
use kube::api::{ObjectMeta, PostParams};
use serde_json::Value;

const NS: &str = "raw-rest";

fn meta(name: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.to_owned()),
        ..Default::default()
    }
}

#[tokio::test]
async fn a_service_account_token_lists_and_creates_a_pod_from_yaml() -> anyhow::Result<()> {
    let cluster = kube_harness::shared().await?;
    let admin = cluster.client().await?;
    Api::<Namespace>::all(admin.clone())
        .create(
            &PostParams::default(),
            &Namespace {
                metadata: meta(NS),
                ..Default::default()
            },
        )
        .await?;
    let role = ClusterRole {
        metadata: meta("raw-rest-user"),
        rules: Some(vec![
            PolicyRule {
                api_groups: Some(vec![String::new()]),
                resources: Some(vec!["namespaces".into()]),
                verbs: vec!["list".into()],
                ..Default::default()
            },
            PolicyRule {
                api_groups: Some(vec![String::new()]),
                resources: Some(vec!["pods".into()]),
                verbs: vec!["list".into(), "create".into(), "get".into()],
                ..Default::default()
            },
        ]),
        ..Default::default()
    };
    Api::<ClusterRole>::all(admin.clone())
        .create(&PostParams::default(), &role)
        .await?;
    let binding = ClusterRoleBinding {
        metadata: meta("raw-rest-user"),
        role_ref: RoleRef {
            api_group: Some("rbac.authorization.k8s.io".into()),
            kind: "ClusterRole".into(),
            name: "raw-rest-user".into(),
        },
        subjects: Some(vec![Subject {
            kind: "ServiceAccount".into(),
            name: "curl".into(),
            namespace: Some(NS.into()),
            api_group: None,
        }]),
    };
    Api::<ClusterRoleBinding>::all(admin.clone())
        .create(&PostParams::default(), &binding)
        .await?;
    let token = cluster.service_account_token(NS, "curl", 600).await?;
    // The Pod below names no ServiceAccount: the admission plugin needs `default`.
    cluster.wait_for_default_service_account(NS).await?;

    let http = cluster.http_client(None)?;
    let server = cluster.server_url();
    // The RBAC authorizer learns of the binding through an informer: retry briefly.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let namespaces: Value = loop {
        let resp = http
            .get(format!("{server}/api/v1/namespaces"))
            .bearer_auth(&token)
            .send()
            .await?;
        if resp.status() == reqwest::StatusCode::FORBIDDEN && std::time::Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            continue;
        }
        break resp.error_for_status()?.json().await?;
    };
    let names: Vec<&str> = namespaces["items"]
        .as_array()
        .map(|items| items.iter().filter_map(|n| n["metadata"]["name"].as_str()).collect())
        .unwrap_or_default();
    assert!(names.contains(&NS) && names.contains(&"default"), "{names:?}");

    let pod_yaml = "apiVersion: v1\nkind: Pod\nmetadata:\n  name: hello\n  labels:\n    app: hello\nspec:\n  containers:\n    - name: hello\n      image: registry.example/hello:1.0\n      args: [\"--greeting\", \"hi\"]\n";
    let created = http
        .post(format!("{server}/api/v1/namespaces/{NS}/pods"))
        .bearer_auth(&token)
        .header("Content-Type", "application/yaml")
        .body(pod_yaml)
        .send()
        .await?;
    assert_eq!(created.status(), reqwest::StatusCode::CREATED);

    let pods: Value = http
        .get(format!("{server}/api/v1/namespaces/{NS}/pods"))
        .bearer_auth(&token)
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let pod = pods["items"]
        .get(0)
        .cloned()
        .ok_or_else(|| anyhow::anyhow!("pod not listed"))?;
    assert_eq!(pod["status"]["phase"], "Pending");
    let mut pod = pod;
    kube_harness::snapshot::redact(&mut pod);
    // The ServiceAccount admission plugin named the token volume with a random suffix.
    let _scope = kube_harness::snapshot::insta_settings().bind_to_scope();
    insta::assert_yaml_snapshot!("stored_pod", pod);
    Ok(())
}
