//! Finalizer-safe teardown: the custom resources of a target's CRDs are deleted while its
//! backend (the controller) still runs, so it can complete its finalizers; what it leaves is
//! named, and freed only after it has stopped.

use std::time::Duration;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, ListParams, Patch, PatchParams};
use kube::{Client, ResourceExt as _};

use crate::error::{Error, Result};
use crate::wait::{Backoff, Probe};

/// The resource of a CRD's storage version (every instance is listed through it).
async fn resource_of(client: &Client, crd: &str) -> Option<ApiResource> {
    let crd = Api::<CustomResourceDefinition>::all(client.clone())
        .get_opt(crd)
        .await
        .ok()??;
    let version = crd
        .spec
        .versions
        .iter()
        .find(|v| v.storage && v.served)
        .or_else(|| crd.spec.versions.iter().find(|v| v.served))?;
    Some(ApiResource {
        group: crd.spec.group.clone(),
        version: version.name.clone(),
        api_version: format!("{}/{}", crd.spec.group, version.name),
        kind: crd.spec.names.kind.clone(),
        plural: crd.spec.names.plural.clone(),
    })
}

/// `Kind namespace/name`, with its finalizers.
fn describe(kind: &str, o: &DynamicObject) -> String {
    let ns = o.namespace().map(|n| format!("{n}/")).unwrap_or_default();
    format!("{kind} {ns}{} (finalizers: {:?})", o.name_any(), o.finalizers())
}

async fn remaining(client: &Client, crds: &[String]) -> Vec<(ApiResource, DynamicObject)> {
    let mut left = Vec::new();
    for crd in crds {
        let Some(resource) = resource_of(client, crd).await else {
            continue;
        };
        let api: Api<DynamicObject> = Api::all_with(client.clone(), &resource);
        if let Ok(list) = api.list(&ListParams::default()).await {
            left.extend(list.items.into_iter().map(|o| (resource.clone(), o)));
        }
    }
    left
}

fn api_of(client: &Client, resource: &ApiResource, o: &DynamicObject) -> Api<DynamicObject> {
    match o.namespace() {
        Some(ns) => Api::namespaced_with(client.clone(), &ns, resource),
        None => Api::all_with(client.clone(), resource),
    }
}

/// Delete every instance of `crds` and wait up to `timeout` for them to be gone.
///
/// # Errors
/// [`Error::NotObserved`] naming each instance still there and its finalizers.
pub(crate) async fn delete_custom_resources(client: &Client, crds: &[String], timeout: Duration) -> Result<()> {
    let objects = remaining(client, crds).await;
    if objects.is_empty() {
        return Ok(());
    }
    for (resource, o) in &objects {
        if let Err(e) = api_of(client, resource, o)
            .delete(&o.name_any(), &DeleteParams::default())
            .await
        {
            tracing::debug!(object = %o.name_any(), error = %e, "teardown could not delete a custom resource");
        }
    }
    crate::wait::poll(
        timeout,
        Backoff::millis(10, 500),
        || async {
            let left = remaining(client, crds).await;
            Ok(if left.is_empty() {
                Probe::Ready(())
            } else {
                let names: Vec<String> = left.iter().map(|(r, o)| describe(&r.kind, o)).collect();
                Probe::NotYet(names.join(", "))
            })
        },
        |last| Error::NotObserved {
            what: "the target's custom resources to be gone, deleted while its backend still ran".into(),
            timeout,
            last: format!(
                "still there: {last}; the controller that added these finalizers (the target's backend) must \
                 remove them when it handles the deletion"
            ),
        },
    )
    .await
}

/// Remove the finalizers of every instance of `crds` (after the backend stopped: nothing else
/// will), so teardown completes; each is logged.
pub(crate) async fn strip_finalizers(client: &Client, crds: &[String]) {
    for (resource, o) in remaining(client, crds).await {
        let patch = serde_json::json!({"metadata": {"finalizers": null}});
        match api_of(client, &resource, &o)
            .patch(&o.name_any(), &PatchParams::default(), &Patch::Merge(&patch))
            .await
        {
            Ok(_) => {
                tracing::warn!(object = %describe(&resource.kind, &o), "teardown removed finalizers the backend left")
            }
            Err(e) => tracing::warn!(object = %o.name_any(), error = %e, "teardown could not remove finalizers"),
        }
    }
}
