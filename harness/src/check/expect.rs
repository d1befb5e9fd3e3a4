//! Running a target's [`Expectations`]: access as each identity, CRUD round trips compared
//! with the snapshots stored in the target directory, FailedDiscoveryCheck and recovery.

use std::path::Path;
use std::time::{Duration, Instant};

use kube::Client;
use kube::api::{Api, DynamicObject, GroupVersionKind};
use serde_json::{Value, json};

use super::compare::{compare_snapshot, snapshot_path};
use super::result::Recorder;
use crate::target::apply::{nudge_apiservice, wait_apiservice_condition, wait_apiservice_status};
use crate::target::expect::Expectations;
use crate::target::{RunningTarget, Target};
use crate::{Cluster, Error, Result};

/// How long after the access checks begin an expected-allowed request may still be denied
/// while new RBAC objects reach the authorizers' informers. One window for all the checks, so
/// a missing binding costs it once, not once per check.
const RBAC_PATIENCE: Duration = Duration::from_secs(5);

pub(crate) async fn run(
    rec: &mut Recorder,
    cluster: &Cluster,
    target: &Target,
    running: &mut RunningTarget,
    expectations: &Expectations,
    update: bool,
) {
    let rbac_deadline = Instant::now() + RBAC_PATIENCE;
    for access in &expectations.access {
        let t = Instant::now();
        let outcome = super::access::check_access(cluster, access, rbac_deadline.saturating_duration_since(t)).await;
        rec.record(format!("access: {}", access.describe()), t, outcome);
    }
    for rule in &expectations.requests {
        let t = Instant::now();
        let patience = rbac_deadline.saturating_duration_since(t);
        let outcome = super::requests::check_request(cluster, &target.dir, rule, patience, update).await;
        rec.record(rule.describe(), t, outcome);
    }
    let client = match cluster.client().await {
        Ok(c) => c,
        Err(e) => {
            rec.record("admin client", Instant::now(), Err(e.to_string()));
            return;
        }
    };
    for object in &expectations.objects {
        let t = Instant::now();
        let outcome = crud(&client, &target.dir, object, update).await;
        let name = object
            .pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or_default();
        let kind = object["kind"].as_str().unwrap_or_default();
        rec.record(format!("CRUD {kind}/{name} matches its snapshot"), t, outcome);
    }
    if expectations.failed_discovery {
        for api_service in &target.plan.api_services {
            let t = Instant::now();
            let outcome = failed_discovery(cluster, &client, running, api_service.name()).await;
            rec.record(
                format!("APIService {} FailedDiscoveryCheck and recovery", api_service.name()),
                t,
                outcome,
            );
        }
    }
}

async fn crud(client: &Client, dir: &Path, object: &Value, update: bool) -> std::result::Result<String, String> {
    let record = round_trip(client, object).await.map_err(|e| e.to_string())?;
    compare_snapshot(&snapshot_path(dir, object), &record, update)
}

async fn round_trip(client: &Client, object: &Value) -> Result<Value> {
    let api_version = object["apiVersion"].as_str().unwrap_or_default();
    let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
    let gvk = GroupVersionKind::gvk(group, version, object["kind"].as_str().unwrap_or_default());
    let (resource, caps) = kube::discovery::pinned_kind(client, &gvk).await?;
    let namespace = object.pointer("/metadata/namespace").and_then(Value::as_str);
    let api: Api<DynamicObject> = match (caps.scope, namespace) {
        (kube::discovery::Scope::Namespaced, Some(ns)) => Api::namespaced_with(client.clone(), ns, &resource),
        (kube::discovery::Scope::Namespaced, None) => Api::default_namespaced_with(client.clone(), &resource),
        (kube::discovery::Scope::Cluster, _) => Api::all_with(client.clone(), &resource),
    };
    let name = object
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .ok_or_else(|| Error::Fixture("object without metadata.name".into()))?;
    let case = super::queries::CrudCase {
        object: object.clone(),
        change: json!({"metadata": {"labels": {"kube-harness.dev/patched": "yes"}}}),
        invalid: None,
    };
    let mut record = super::queries::crud_round_trip(&api, &case).await?;
    super::queries::delete_and_get(&api, name, &mut record).await?;
    crate::snapshot::redact(&mut record);
    Ok(record)
}

async fn failed_discovery(
    cluster: &Cluster,
    client: &Client,
    running: &mut RunningTarget,
    apiservice: &str,
) -> std::result::Result<String, String> {
    let patience = Duration::from_secs(30);
    // In the cluster the backend's Deployment is scaled to 0 and back; on this host its
    // process is stopped and started again.
    let in_cluster = running.backend_in_cluster();
    if in_cluster {
        running
            .scale_backend(cluster, false, &[])
            .await
            .map_err(|e| e.to_string())?;
    } else {
        running.stop_backend();
    }
    nudge_apiservice(client, apiservice).await.map_err(|e| e.to_string())?;
    if in_cluster {
        // Behind a ClusterIP Service with no ready pod the aggregator does not dial at all:
        // it says MissingEndpoints. While the last pod terminates its endpoint may still be
        // listed and the dial fail (FailedDiscoveryCheck for a moment, seen on kind with
        // metrics-server): wait for MissingEndpoints itself.
        wait_apiservice_condition(client, apiservice, "False", Some("MissingEndpoints"), patience)
            .await
            .map_err(|e| format!("backend scaled to 0, but: {e}"))?;
    } else {
        // A host backend's ExternalName Service always resolves, so the dial fails.
        let (_, reason, _) = wait_apiservice_status(client, apiservice, "False", patience)
            .await
            .map_err(|e| format!("backend stopped, but: {e}"))?;
        if reason != "FailedDiscoveryCheck" {
            return Err(format!(
                "Available=False with reason {reason}, expected FailedDiscoveryCheck"
            ));
        }
    }
    if in_cluster {
        running.scale_backend(cluster, true, &[]).await
    } else {
        running.restart_backend(&[]).await
    }
    .map_err(|e| e.to_string())?;
    nudge_apiservice(client, apiservice).await.map_err(|e| e.to_string())?;
    wait_apiservice_status(client, apiservice, "True", patience)
        .await
        .map_err(|e| format!("backend restarted, but: {e}"))?;
    Ok(if in_cluster {
        "Available=False (MissingEndpoints) while scaled to 0, True after scaling back".into()
    } else {
        "Available=False (FailedDiscoveryCheck) while stopped, True after restart".into()
    })
}
