//! A small operator as users write them with kube-rs: a `Widget` custom resource and a
//! controller that keeps a ConfigMap per Widget and reports it in the Widget's status. It
//! watches one namespace (as operators deployed per namespace do), so it needs only a Role.

use std::sync::Arc;
use std::time::Duration;

use futures::{Stream, StreamExt};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;
use kube::{Api, Client, CustomResource, Resource, ResourceExt};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::json;

/// What a widget should be.
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, JsonSchema)]
#[kube(group = "example.com", version = "v1", kind = "Widget", namespaced)]
#[kube(status = "WidgetStatus", shortname = "wd")]
pub struct WidgetSpec {
    /// How many (at least one).
    #[schemars(range(min = 1))]
    pub replicas: i32,
    /// Its colour, if it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub color: Option<String>,
}

/// What the controller last did for a widget.
#[derive(Deserialize, Serialize, Clone, Debug, Default, JsonSchema)]
pub struct WidgetStatus {
    /// The ConfigMap that holds the widget's settings.
    pub config_map: String,
    /// The replicas written there.
    pub observed_replicas: i32,
}

/// Field manager of the controller's writes.
pub const MANAGER: &str = "widget-operator";

/// Why a reconcile failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The API refused a request (403 when the operator's RBAC is missing).
    #[error("{what}: {source}")]
    Api {
        /// What was asked.
        what: String,
        /// The answer.
        #[source]
        source: kube::Error,
    },
    /// A Widget without a namespace (it is a namespaced kind).
    #[error("widget {0} has no namespace")]
    NoNamespace(String),
}

/// The ConfigMap a widget owns.
pub fn config_map_name(widget: &Widget) -> String {
    format!("{}-widget", widget.name_any())
}

async fn reconcile(widget: Arc<Widget>, client: Arc<Client>) -> Result<Action, Error> {
    let namespace = widget
        .namespace()
        .ok_or_else(|| Error::NoNamespace(widget.name_any()))?;
    let name = config_map_name(&widget);
    let owner = widget.controller_owner_ref(&()).into_iter().collect::<Vec<_>>();
    let mut data = serde_json::Map::new();
    data.insert("replicas".into(), widget.spec.replicas.to_string().into());
    if let Some(color) = &widget.spec.color {
        data.insert("color".into(), color.clone().into());
    }
    let config_map = json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": name, "ownerReferences": owner},
        "data": data,
    });
    let params = PatchParams::apply(MANAGER).force();
    Api::<ConfigMap>::namespaced((*client).clone(), &namespace)
        .patch(&name, &params, &Patch::Apply(&config_map))
        .await
        .map_err(|source| Error::Api {
            what: format!("applying ConfigMap {namespace}/{name}"),
            source,
        })?;
    let status = json!({
        "apiVersion": "example.com/v1", "kind": "Widget",
        "status": {"config_map": name, "observed_replicas": widget.spec.replicas},
    });
    Api::<Widget>::namespaced((*client).clone(), &namespace)
        .patch_status(&widget.name_any(), &params, &Patch::Apply(&status))
        .await
        .map_err(|source| Error::Api {
            what: format!("updating the status of Widget {namespace}/{}", widget.name_any()),
            source,
        })?;
    Ok(Action::await_change())
}

fn error_policy(_: Arc<Widget>, _: &Error, _: Arc<Client>) -> Action {
    Action::requeue(Duration::from_secs(1))
}

/// The controller for the Widgets in `namespace`, as a stream of what each reconcile did:
/// `Ok(widget name)`, or the error (a refused watch or write) as text.
pub fn reconciles(client: Client, namespace: &str) -> impl Stream<Item = Result<String, String>> + Send {
    let widgets = Api::<Widget>::namespaced(client.clone(), namespace);
    let config_maps = Api::<ConfigMap>::namespaced(client.clone(), namespace);
    Controller::new(widgets, watcher::Config::default())
        .owns(config_maps, watcher::Config::default())
        .run(reconcile, error_policy, Arc::new(client))
        .map(|result| match result {
            Ok((object, _)) => Ok(object.name),
            Err(e) => Err(describe(&e)),
        })
}

/// An error as a line: the API's code, reason and message where the API answered.
fn describe(error: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = Some(error);
    while let Some(e) = cause {
        if let Some(kube::Error::Api(status)) = e.downcast_ref::<kube::Error>() {
            let what = error.to_string();
            let what = what.split(": ApiError").next().unwrap_or_default();
            return format!("{what}: {} {}: {}", status.code, status.reason, status.message);
        }
        cause = e.source();
    }
    error.to_string()
}

/// Run the controller for `namespace` until the future is dropped.
pub async fn run(client: Client, namespace: String) {
    reconciles(client, &namespace).for_each(|_| async {}).await;
}
