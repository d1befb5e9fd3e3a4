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
    /// Snapshot suffix.
    label: &'static str,
    resource: ApiResource,
    namespaced: bool,
    object: Value,
    /// A merge patch that changes a field.
    change: Value,
    /// An object the server must reject with 422, if the server validates one.
    invalid: Option<Value>,
}

fn ar(g: &str, v: &str, k: &str, p: &str) -> ApiResource {
    ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(g, v, k), p)
}

fn cases(target: &str) -> Vec<Case> {
    match target {
        "requests" => vec![Case {
            label: "requests",
            resource: ar("k8s.wujiuye.com", "v1beta1", "Requests", "requests"),
            namespaced: true,
            object: json!({"apiVersion": "k8s.wujiuye.com/v1beta1", "kind": "Requests", "metadata": {"name": "web"},
                           "resources": {"cpu": "100m", "memory": "100Mi"}}),
            change: json!({"resources": {"cpu": "250m"}}),
            invalid: Some(
                json!({"apiVersion": "k8s.wujiuye.com/v1beta1", "kind": "Requests", "metadata": {"name": "bad"},
                                 "resources": {"cpu": 5, "gpu": "1"}}),
            ),
        }],
        "samples" => vec![Case {
            label: "samples",
            resource: ar("example.com", "v1alpha1", "Sample", "samples"),
            namespaced: true,
            object: json!({"apiVersion": "example.com/v1alpha1", "kind": "Sample", "metadata": {"name": "crud"},
                           "testString": "first"}),
            change: json!({"testString": "patched"}),
            invalid: Some(
                json!({"apiVersion": "example.com/v1alpha1", "kind": "Sample", "metadata": {"name": "bad"},
                                 "testString": 42}),
            ),
        }],
        _ => vec![
            Case {
                label: "wardle-flunders-v1alpha1",
                resource: ar("wardle.example.com", "v1alpha1", "Flunder", "flunders"),
                namespaced: true,
                object: json!({"apiVersion": "wardle.example.com/v1alpha1", "kind": "Flunder", "metadata": {"name": "crud"},
                               "spec": {"reference": "first"}}),
                change: json!({"spec": {"reference": "patched"}}),
                invalid: None,
            },
            Case {
                label: "wardle-flunders-v1beta1",
                resource: ar("wardle.example.com", "v1beta1", "Flunder", "flunders"),
                namespaced: true,
                object: json!({"apiVersion": "wardle.example.com/v1beta1", "kind": "Flunder", "metadata": {"name": "crud-beta"},
                               "spec": {"referenceType": "Fischer", "fischerReference": "first"}}),
                change: json!({"spec": {"fischerReference": "patched"}}),
                // sample-apiserver's own validation: a fischerReference needs referenceType Fischer.
                invalid: Some(
                    json!({"apiVersion": "wardle.example.com/v1beta1", "kind": "Flunder", "metadata": {"name": "bad"},
                                     "spec": {"fischerReference": "first"}}),
                ),
            },
            Case {
                label: "wardle-fischers",
                resource: ar("wardle.example.com", "v1alpha1", "Fischer", "fischers"),
                namespaced: false,
                object: json!({"apiVersion": "wardle.example.com/v1alpha1", "kind": "Fischer", "metadata": {"name": "crud"},
                               "disallowedFlunders": ["banned"]}),
                change: json!({"disallowedFlunders": ["banned", "also-banned"]}),
                invalid: None,
            },
        ],
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
async fn crud_round_trip(#[case] target_name: &str) -> anyhow::Result<()> {
    let cluster: &Cluster = kube_harness::shared().await?;
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/targets")
        .join(target_name);
    let mut target = Target::load(dir)?;
    if target_name == "samples"
        && let Some(spec) = target.spec.as_mut()
    {
        // The CRD alone: its controller would annotate (and race) the objects under test.
        spec.backend = None;
    }
    let running = cluster.up_target(&target).await?;
    let client = cluster.client().await?;
    let ns = format!("crud-{target_name}");
    namespace(&client, &ns).await?;
    for c in cases(target_name) {
        round_trip(&client, &ns, &c).await?;
    }
    running.down(cluster).await?;
    Ok(())
}

async fn round_trip(client: &Client, ns: &str, c: &Case) -> anyhow::Result<()> {
    let api: Api<DynamicObject> = if c.namespaced {
        Api::namespaced_with(client.clone(), ns, &c.resource)
    } else {
        Api::all_with(client.clone(), &c.resource)
    };
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
    assert!(
        listed
            .items
            .iter()
            .any(|o| o.metadata.name.as_deref() == Some(obj_name.as_str()))
    );

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
    if c.label == "samples" {
        sample_table(client, ns).await?;
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
    insta::with_settings!({ snapshot_suffix => c.label }, {
        insta::assert_yaml_snapshot!("crud", record, {
            ".**.uid" => "[uid]",
            ".**.resourceVersion" => "[resourceVersion]",
            ".**.creationTimestamp" => "[timestamp]",
            ".**.managedFields" => "[managedFields]",
        });
    });
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
