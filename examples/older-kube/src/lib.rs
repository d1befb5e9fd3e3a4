//! An operator as crates on an older kube major write one — the same source built against
//! kube 4 (`kube4/Cargo.toml`) and kube 3 (`kube3/Cargo.toml`): a `Gauge` custom resource from
//! kube's derive and a kube-runtime controller that copies `spec.target` into
//! `status.observed`.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt as _;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;
use kube::{Client, CustomResource, ResourceExt as _};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// What a Gauge asks for.
#[derive(CustomResource, Clone, Debug, Deserialize, Serialize, JsonSchema)]
#[kube(
    group = "gauges.example.com",
    version = "v1",
    kind = "Gauge",
    namespaced,
    status = "GaugeStatus"
)]
pub struct GaugeSpec {
    /// The value to reach.
    pub target: i32,
}

/// What the controller did.
#[derive(Clone, Debug, Default, Deserialize, Serialize, JsonSchema)]
pub struct GaugeStatus {
    /// The `spec.target` last reconciled.
    pub observed: i32,
}

/// Why a reconcile failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The API refused the status patch.
    #[error("patching the status of {0}: {1}")]
    Patch(String, #[source] kube::Error),
}

async fn reconcile(gauge: Arc<Gauge>, client: Arc<Client>) -> Result<Action, Error> {
    let name = gauge.name_any();
    let api: Api<Gauge> = Api::namespaced((*client).clone(), &gauge.namespace().unwrap_or_default());
    let status = serde_json::json!({"status": {"observed": gauge.spec.target}});
    api.patch_status(&name, &PatchParams::default(), &Patch::Merge(&status))
        .await
        .map_err(|e| Error::Patch(name, e))?;
    Ok(Action::await_change())
}

fn error_policy(_gauge: Arc<Gauge>, _error: &Error, _client: Arc<Client>) -> Action {
    Action::requeue(Duration::from_secs(1))
}

/// Run the controller on every Gauge of the cluster until the future is dropped.
pub async fn run(client: Client) {
    Controller::new(Api::<Gauge>::all(client.clone()), watcher::Config::default())
        .run(reconcile, error_policy, Arc::new(client))
        .for_each(|_| async {})
        .await;
}
