//! CRUD on a resource of each target — an aggregated one served by our Rust server, the CRD,
//! and upstream sample-apiserver's flunders: create, duplicate create (409), get, list,
//! update, merge patch, server-side apply, invalid object (422), delete, and 404 afterwards.
//! Every response is snapshotted with only volatile fields redacted. Plus the Table view of
//! the CRD (its `Test String` printer column), as `kubectl get` asks for it. Each case brings
//! up a different target, so they run in parallel without sharing an APIService or CRD.

use std::path::Path;

use kube::api::{DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube::core::{ApiResource, GroupVersionKind};
use kube::{Api, Client};
use kube_harness::Cluster;
use kube_harness::fixtures::Target;
use rstest::rstest;
use serde_json::{Value, json};

struct Case {
    target: &'static str,
    resource: ApiResource,
    object: Value,
    /// A merge patch that changes a field.
    change: Value,
    /// An object the server must reject with 422, if the server validates one.
    invalid: Option<Value>,
}

fn ar(g: &str, v: &str, k: &str, p: &str) -> ApiResource {
    ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(g, v, k), p)
}

fn case(name: &str) -> Case {
    match name {
        "requests" => Case {
            target: "requests",
            resource: ar("k8s.wujiuye.com", "v1beta1", "Requests", "requests"),
            object: json!({"apiVersion": "k8s.wujiuye.com/v1beta1", "kind": "Requests", "metadata": {"name": "web"},
                           "resources": {"cpu": "100m", "memory": "100Mi"}}),
            change: json!({"resources": {"cpu": "250m"}}),
            invalid: Some(
                json!({"apiVersion": "k8s.wujiuye.com/v1beta1", "kind": "Requests", "metadata": {"name": "bad"},
                                 "resources": {"cpu": 5, "gpu": "1"}}),
            ),
        },
        "samples" => Case {
            target: "samples",
            resource: ar("example.com", "v1alpha1", "Sample", "samples"),
            object: json!({"apiVersion": "example.com/v1alpha1", "kind": "Sample", "metadata": {"name": "crud"},
                           "testString": "first"}),
            change: json!({"testString": "patched"}),
            invalid: Some(
                json!({"apiVersion": "example.com/v1alpha1", "kind": "Sample", "metadata": {"name": "bad"},
                                 "testString": 42}),
            ),
        },
        _ => Case {
            target: "wardle",
            resource: ar("wardle.example.com", "v1alpha1", "Flunder", "flunders"),
            object: json!({"apiVersion": "wardle.example.com/v1alpha1", "kind": "Flunder", "metadata": {"name": "crud"},
                           "spec": {"reference": "first"}}),
            change: json!({"spec": {"reference": "patched"}}),
            invalid: None,
        },
    }
}

fn status_of(r: Result<DynamicObject, kube::Error>) -> Value {
    match r {
        Ok(o) => json!({"unexpected_success": o}),
        Err(kube::Error::Api(s)) => json!({"code": s.code, "reason": s.reason, "message": s.message}),
        Err(e) => json!({"transport_error": e.to_string()}),
    }
}

async fn namespace(client: &Client, name: &str) -> anyhow::Result<()> {
    let ns: k8s_openapi::api::core::v1::Namespace = serde_json::from_value(json!({"metadata": {"name": name}}))?;
    Api::<k8s_openapi::api::core::v1::Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await?;
    Ok(())
}

#[rstest]
#[case::requests("requests")]
#[case::samples("samples")]
#[case::wardle("wardle")]
#[tokio::test]
async fn crud_round_trip(#[case] name: &str) -> anyhow::Result<()> {
    let cluster: &Cluster = kube_harness::shared().await?;
    let c = case(name);
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/targets")
        .join(c.target);
    let mut target = Target::load(dir)?;
    if c.target == "samples"
        && let Some(spec) = target.spec.as_mut()
    {
        // The CRD alone: its controller would annotate (and race) the objects under test.
        spec.backend = None;
    }
    let running = cluster.up_target(&target).await?;
    let client = cluster.client().await?;
    let ns = format!("crud-{name}");
    namespace(&client, &ns).await?;
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), &ns, &c.resource);
    let obj: DynamicObject = serde_json::from_value(c.object.clone())?;
    let obj_name = obj.metadata.name.clone().unwrap_or_default();
    let pp = PostParams::default();

    // The wardle server refuses flunders until its admission plugin's informer has synced.
    let created = {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        loop {
            match api.create(&pp, &obj).await {
                Err(kube::Error::Api(s)) if s.code == 403 && std::time::Instant::now() < deadline => {
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
                other => break other?,
            }
        }
    };
    let duplicate = status_of(api.create(&pp, &obj).await);
    let got = api.get(&obj_name).await?;
    assert_eq!(got.data, created.data);
    let listed = api.list(&ListParams::default()).await?;
    assert_eq!(listed.items.len(), 1);

    let mut replacement = got.clone();
    replacement.metadata.labels = Some([("updated".to_owned(), "yes".to_owned())].into());
    let updated = api.replace(&obj_name, &pp, &replacement).await?;
    let patched = api
        .patch(&obj_name, &PatchParams::default(), &Patch::Merge(&c.change))
        .await?;
    let mut applied_body = c.object.clone();
    merge(
        &mut applied_body,
        &json!({"metadata": {"annotations": {"applied": "yes"}}}),
    );
    let applied = api
        .patch(
            &obj_name,
            &PatchParams::apply("crud-test").force(),
            &Patch::Apply(&applied_body),
        )
        .await?;
    let invalid = match &c.invalid {
        Some(bad) => status_of(api.create(&pp, &serde_json::from_value(bad.clone())?).await),
        None => Value::Null,
    };
    if c.target == "samples" {
        sample_table(&client, &ns).await?;
    }
    api.delete(&obj_name, &DeleteParams::default()).await?;
    let after_delete = status_of(api.get(&obj_name).await);

    let record = json!({
        "created": created,
        "duplicate_create": duplicate,
        "updated": updated,
        "merge_patched": patched,
        "server_side_applied": applied,
        "invalid_create": invalid,
        "get_after_delete": after_delete,
    });
    insta::with_settings!({ snapshot_suffix => name }, {
        insta::assert_yaml_snapshot!("crud", record, {
            ".**.uid" => "[uid]",
            ".**.resourceVersion" => "[resourceVersion]",
            ".**.creationTimestamp" => "[timestamp]",
            ".**.managedFields" => "[managedFields]",
        });
    });
    running.down(cluster).await?;
    Ok(())
}

fn merge(target: &mut Value, patch: &Value) {
    match (target, patch) {
        (Value::Object(t), Value::Object(p)) => {
            for (k, v) in p {
                merge(t.entry(k.clone()).or_insert(Value::Null), v);
            }
        }
        (t, p) => *t = p.clone(),
    }
}

/// The Table view `kubectl get samples` asks for: the CRD's printer column `Test String`.
/// (A separate test would bring the same CRD up and down concurrently with this one.)
async fn sample_table(client: &Client, ns: &str) -> anyhow::Result<()> {
    let request = http::Request::get(format!("/apis/example.com/v1alpha1/namespaces/{ns}/samples"))
        .header("Accept", "application/json;as=Table;g=meta.k8s.io;v=v1")
        .body(Vec::new())?;
    let table: Value = serde_json::from_str(&client.request_text(request).await?)?;
    let columns: Vec<&str> = table["columnDefinitions"]
        .as_array()
        .map(|cols| cols.iter().filter_map(|c| c["name"].as_str()).collect())
        .unwrap_or_default();
    let rows: Vec<Value> = table["rows"]
        .as_array()
        .map(|rows| rows.iter().map(|r| r["cells"].clone()).collect())
        .unwrap_or_default();
    // With additionalPrinterColumns set, the CRD's table has exactly those (no Age column).
    insta::assert_yaml_snapshot!("samples_table", json!({"columns": columns, "rows": rows}));
    Ok(())
}
