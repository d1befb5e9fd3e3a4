//! CRUD on a resource of each target — an aggregated one served by our Rust server, the CRD,
//! and upstream sample-apiserver's flunders: create, duplicate create (409), get, list,
//! update, merge patch, server-side apply, invalid object (422), delete, and 404 afterwards.
//! Every response is snapshotted with only volatile fields redacted. Plus the Table view of
//! the CRD (its `Test String` printer column), as `kubectl get` asks for it. Each case brings
//! up a different target, so they run in parallel without sharing an APIService or CRD.

use std::path::Path;

use kube::api::{DynamicObject, PostParams};
use kube::core::{ApiResource, GroupVersionKind};
use kube::{Api, Client};
use kube_harness::Cluster;
use kube_harness::check::{self, CrudCase};
use kube_harness::snapshot::redact;
use kube_harness::target::Target;
use rstest::rstest;
use serde_json::{Value, json};

struct Case {
    /// Snapshot suffix.
    label: &'static str,
    resource: ApiResource,
    namespaced: bool,
    crud: CrudCase,
}

fn ar(g: &str, v: &str, k: &str, p: &str) -> ApiResource {
    ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk(g, v, k), p)
}

fn crud(object: Value, change: Value, invalid: Option<Value>) -> CrudCase {
    CrudCase {
        object,
        change,
        invalid,
    }
}

fn cases(target: &str) -> Vec<Case> {
    match target {
        "requests" => vec![Case {
            label: "requests",
            resource: ar("k8s.wujiuye.com", "v1beta1", "Requests", "requests"),
            namespaced: true,
            crud: crud(
                json!({"apiVersion": "k8s.wujiuye.com/v1beta1", "kind": "Requests", "metadata": {"name": "web"},
                       "resources": {"cpu": "100m", "memory": "100Mi"}}),
                json!({"resources": {"cpu": "250m"}}),
                Some(
                    json!({"apiVersion": "k8s.wujiuye.com/v1beta1", "kind": "Requests", "metadata": {"name": "bad"},
                            "resources": {"cpu": 5, "gpu": "1"}}),
                ),
            ),
        }],
        "samples" => vec![Case {
            label: "samples",
            resource: ar("example.com", "v1alpha1", "Sample", "samples"),
            namespaced: true,
            crud: crud(
                json!({"apiVersion": "example.com/v1alpha1", "kind": "Sample", "metadata": {"name": "crud"},
                       "testString": "first"}),
                json!({"testString": "patched"}),
                Some(
                    json!({"apiVersion": "example.com/v1alpha1", "kind": "Sample", "metadata": {"name": "bad"},
                            "testString": 42}),
                ),
            ),
        }],
        _ => vec![
            Case {
                label: "wardle-flunders-v1alpha1",
                resource: ar("wardle.example.com", "v1alpha1", "Flunder", "flunders"),
                namespaced: true,
                crud: crud(
                    json!({"apiVersion": "wardle.example.com/v1alpha1", "kind": "Flunder", "metadata": {"name": "crud"},
                           "spec": {"reference": "first"}}),
                    json!({"spec": {"reference": "patched"}}),
                    None,
                ),
            },
            Case {
                label: "wardle-flunders-v1beta1",
                resource: ar("wardle.example.com", "v1beta1", "Flunder", "flunders"),
                namespaced: true,
                crud: crud(
                    json!({"apiVersion": "wardle.example.com/v1beta1", "kind": "Flunder", "metadata": {"name": "crud-beta"},
                           "spec": {"referenceType": "Fischer", "fischerReference": "first"}}),
                    json!({"spec": {"fischerReference": "patched"}}),
                    // sample-apiserver's own validation: a fischerReference needs referenceType Fischer.
                    Some(
                        json!({"apiVersion": "wardle.example.com/v1beta1", "kind": "Flunder", "metadata": {"name": "bad"},
                                "spec": {"fischerReference": "first"}}),
                    ),
                ),
            },
            Case {
                label: "wardle-fischers",
                resource: ar("wardle.example.com", "v1alpha1", "Fischer", "fischers"),
                namespaced: false,
                crud: crud(
                    json!({"apiVersion": "wardle.example.com/v1alpha1", "kind": "Fischer", "metadata": {"name": "crud"},
                           "disallowedFlunders": ["banned"]}),
                    json!({"disallowedFlunders": ["banned", "also-banned"]}),
                    None,
                ),
            },
        ],
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
    let mut record = check::crud_round_trip(&api, &c.crud).await?;
    if c.label == "samples" {
        // With additionalPrinterColumns set, the CRD's table has exactly those (no Age column).
        let table = check::table(client, &format!("/apis/example.com/v1alpha1/namespaces/{ns}/samples")).await?;
        insta::assert_yaml_snapshot!("samples_table", table);
    }
    let name = c.crud.object["metadata"]["name"].as_str().unwrap_or_default();
    check::delete_and_get(&api, name, &mut record).await?;
    redact(&mut record);
    insta::with_settings!({ snapshot_suffix => c.label }, {
        insta::assert_yaml_snapshot!("crud", record);
    });
    Ok(())
}
