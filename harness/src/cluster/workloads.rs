//! Waiting for what runs in pods (nodes, DaemonSets, Deployments) on providers that run them,
//! and saying why not when it does not: each pod's state, its last events and the tail of its
//! container's log. A pod that cannot start (CrashLoopBackOff, an image that is not there)
//! fails the wait at once instead of at its deadline.

use std::fmt::Write as _;
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use k8s_openapi::api::core::v1::{Event, Node, Pod};
use kube::api::{ListParams, LogParams};
use kube::{Api, Client};

use crate::assets::KubeVersion;
use crate::cluster::Cluster;
use crate::error::{Error, Result};

/// How long nodes and the cluster's own DaemonSets get after `kind create` returned.
const NETWORKING_TIMEOUT: Duration = Duration::from_secs(120);

/// Container states that waiting does not heal.
const HOPELESS: [&str; 6] = [
    "CrashLoopBackOff",
    "ErrImagePull",
    "ImagePullBackOff",
    "ErrImageNeverPull",
    "InvalidImageName",
    "CreateContainerConfigError",
];

/// After a kind (or other pod-running) cluster is created: the server runs `version`, every
/// node is Ready, and kube-proxy (and kube-harness's CNI DaemonSet, where the node image has
/// it) runs on every node — before then a Service IP is not rewritten, and no pod may send to
/// one.
///
/// # Errors
/// [`Error::Provider`] for another version than asked for; [`Error::NotReady`] naming the
/// node or DaemonSet, with its pods' states, events and log tails.
pub(crate) async fn wait_for_nodes_and_networking(cluster: &Cluster, version: KubeVersion) -> Result<()> {
    if cluster.info().version != version {
        return Err(Error::Provider(format!(
            "the kind node image runs Kubernetes {}, but {version} was asked for \
             (KUBE_HARNESS_KIND_IMAGE or KUBE_HARNESS_K8S_VERSION is wrong)",
            cluster.info().version
        )));
    }
    let client = cluster.client().await?;
    let started = Instant::now();
    let deadline = started + NETWORKING_TIMEOUT;
    let nodes: Api<Node> = Api::all(client.clone());
    loop {
        let list = nodes.list(&ListParams::default()).await?;
        let not_ready: Vec<String> = list
            .items
            .iter()
            .filter(|n| !node_ready(n))
            .map(|n| n.metadata.name.clone().unwrap_or_default())
            .collect();
        if !list.items.is_empty() && not_ready.is_empty() {
            break;
        }
        if Instant::now() > deadline {
            let mut details = String::new();
            for node in list.items.iter().filter(|n| !node_ready(n)) {
                let _ = writeln!(details, "  {}", node_conditions(node));
            }
            return Err(Error::NotReady {
                object: format!("node {}", not_ready.join(", ")),
                waited: started.elapsed(),
                details,
            });
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let daemonsets: Api<DaemonSet> = Api::namespaced(client.clone(), "kube-system");
    for name in ["kube-proxy", "kube-harness-cni"] {
        if daemonsets.get_opt(name).await?.is_some() {
            wait_daemonset(
                &client,
                "kube-system",
                name,
                deadline.saturating_duration_since(Instant::now()),
            )
            .await?;
        }
    }
    tracing::info!(elapsed = ?started.elapsed(), "nodes Ready, kube-proxy running");
    Ok(())
}

fn node_ready(node: &Node) -> bool {
    node.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

fn node_conditions(node: &Node) -> String {
    let name = node.metadata.name.clone().unwrap_or_default();
    let ready = node
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|c| c.iter().find(|c| c.type_ == "Ready"))
        .map(|c| {
            format!(
                "Ready={} ({}: {})",
                c.status,
                c.reason.clone().unwrap_or_default(),
                c.message.clone().unwrap_or_default()
            )
        })
        .unwrap_or_else(|| "no Ready condition yet".into());
    format!("{name}: {ready}")
}

/// Wait until every scheduled pod of DaemonSet `namespace/name` is ready (at least one).
///
/// # Errors
/// [`Error::NotReady`] with its pods' states, events and log tails.
pub(crate) async fn wait_daemonset(client: &Client, namespace: &str, name: &str, timeout: Duration) -> Result<()> {
    let api: Api<DaemonSet> = Api::namespaced(client.clone(), namespace);
    let object = format!("DaemonSet {namespace}/{name}");
    wait_pods(client, namespace, &object, timeout, || async {
        let ds = api.get(name).await?;
        let selector = selector_of(&ds);
        let status = ds.status.unwrap_or_default();
        let done = status.desired_number_scheduled >= 1
            && status.number_ready == status.desired_number_scheduled
            && status.updated_number_scheduled.unwrap_or(0) == status.desired_number_scheduled;
        Ok((done, selector))
    })
    .await
}

/// Wait until Deployment `namespace/name` has all its replicas updated and available.
///
/// # Errors
/// [`Error::NotReady`] with its pods' states, events and log tails.
pub(crate) async fn wait_deployment(client: &Client, namespace: &str, name: &str, timeout: Duration) -> Result<()> {
    let api: Api<Deployment> = Api::namespaced(client.clone(), namespace);
    let object = format!("Deployment {namespace}/{name}");
    wait_pods(client, namespace, &object, timeout, || async {
        let d = api.get(name).await?;
        let want = spec_replicas(&d);
        let selector = selector_of(&d);
        let generation = d.metadata.generation.unwrap_or(0);
        let status = d.status.unwrap_or_default();
        let done = status.observed_generation.unwrap_or(0) >= generation
            && status.updated_replicas.unwrap_or(0) == want
            && status.available_replicas.unwrap_or(0) == want
            && status.replicas.unwrap_or(0) == want;
        Ok((done, selector))
    })
    .await
}

/// Wait until a pod of Deployment `namespace/name` has written `text` to its log (backends
/// that serve nothing say when they are ready).
///
/// # Errors
/// [`Error::NotReady`] with its pods' states, events and log tails.
pub(crate) async fn wait_deployment_log(
    client: &Client,
    namespace: &str,
    name: &str,
    text: &str,
    timeout: Duration,
) -> Result<()> {
    let api: Api<Deployment> = Api::namespaced(client.clone(), namespace);
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    let object = format!("Deployment {namespace}/{name} (waiting for {text:?} in its log)");
    wait_pods(client, namespace, &object, timeout, || async {
        let d = api.get(name).await?;
        let selector = selector_of(&d);
        for pod in pods.list(&ListParams::default().labels(&selector)).await?.items {
            let pod_name = pod.metadata.name.clone().unwrap_or_default();
            if let Ok(log) = pods.logs(&pod_name, &LogParams::default()).await
                && log.contains(text)
            {
                return Ok((true, selector));
            }
        }
        Ok((false, selector))
    })
    .await
}

/// The `matchLabels` of an object's `spec.selector`, as a label selector. Read through JSON:
/// k8s-openapi releases differ on whether a workload's `spec` is optional.
fn selector_of(object: &impl serde::Serialize) -> String {
    let value = serde_json::to_value(object).unwrap_or_default();
    value
        .pointer("/spec/selector/matchLabels")
        .and_then(serde_json::Value::as_object)
        .map(|labels| {
            labels
                .iter()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_default()
}

/// `spec.replicas` (default 1), read as [`selector_of`] reads.
fn spec_replicas(object: &impl serde::Serialize) -> i32 {
    serde_json::to_value(object)
        .unwrap_or_default()
        .pointer("/spec/replicas")
        .and_then(serde_json::Value::as_i64)
        .and_then(|r| i32::try_from(r).ok())
        .unwrap_or(1)
}

/// Poll `done` (which also gives the pods' label selector) until it says so; fail at once
/// when a pod is in a [`HOPELESS`] state, else at `timeout`, describing the pods.
async fn wait_pods<F, Fut>(client: &Client, namespace: &str, object: &str, timeout: Duration, mut done: F) -> Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(bool, String)>>,
{
    let started = Instant::now();
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    loop {
        let (ready, selector) = done().await?;
        if ready {
            return Ok(());
        }
        let listed = pods.list(&ListParams::default().labels(&selector)).await?.items;
        let hopeless = listed.iter().find_map(hopeless_reason);
        if hopeless.is_some() || started.elapsed() > timeout {
            let mut details = match &hopeless {
                Some(reason) => format!("a pod is in {reason}, which waiting does not heal\n"),
                None => String::new(),
            };
            if listed.is_empty() {
                details.push_str("  no pods (see the events of its controller)\n");
                details.push_str(&events_of(client, namespace, object.rsplit('/').next().unwrap_or_default()).await);
            }
            for pod in &listed {
                details.push_str(&describe_pod(client, pod).await);
            }
            return Err(Error::NotReady {
                object: object.to_owned(),
                waited: started.elapsed(),
                details,
            });
        }
        tokio::time::sleep(Duration::from_millis(400)).await;
    }
}

fn hopeless_reason(pod: &Pod) -> Option<String> {
    pod.status.as_ref()?.container_statuses.as_ref()?.iter().find_map(|c| {
        let waiting = c
            .state
            .as_ref()
            .and_then(|s| s.waiting.as_ref())
            .and_then(|w| w.reason.clone());
        if let Some(reason) = waiting.filter(|r| HOPELESS.contains(&r.as_str())) {
            return Some(format!("{reason} (container {})", c.name));
        }
        // Between two back-offs the state may read `terminated` or `running`: a container that
        // failed twice is crash-looping whatever the snapshot says.
        let failed = c
            .last_state
            .as_ref()
            .and_then(|s| s.terminated.as_ref())
            .is_some_and(|t| t.exit_code != 0);
        (c.restart_count >= 2 && failed).then(|| {
            format!(
                "CrashLoopBackOff (container {}: {} restarts after failing)",
                c.name, c.restart_count
            )
        })
    })
}

/// One pod's phase, its containers' states and restarts, its last events and the tail of each
/// container's log (the previous run's, after a restart).
pub(crate) async fn describe_pod(client: &Client, pod: &Pod) -> String {
    let name = pod.metadata.name.clone().unwrap_or_default();
    let namespace = pod.metadata.namespace.clone().unwrap_or_default();
    let status = pod.status.clone().unwrap_or_default();
    let mut out = format!(
        "  pod {namespace}/{name}: phase {}\n",
        status.phase.clone().unwrap_or_else(|| "unknown".into())
    );
    let pods: Api<Pod> = Api::namespaced(client.clone(), &namespace);
    for c in status.container_statuses.unwrap_or_default() {
        let state = c.state.as_ref().map_or_else(String::new, |s| {
            if let Some(w) = &s.waiting {
                format!(
                    "waiting: {} {}",
                    w.reason.clone().unwrap_or_default(),
                    w.message.clone().unwrap_or_default()
                )
            } else if let Some(t) = &s.terminated {
                format!(
                    "terminated: exit code {} {}",
                    t.exit_code,
                    t.reason.clone().unwrap_or_default()
                )
            } else {
                "running".to_owned()
            }
        });
        let _ = writeln!(
            out,
            "    container {}: {} (ready {}, {} restarts)",
            c.name,
            state.trim(),
            c.ready,
            c.restart_count
        );
        let params = LogParams {
            container: Some(c.name.clone()),
            tail_lines: Some(15),
            // The run that failed: the previous one while this one waits or runs, else this.
            previous: c.restart_count > 0 && c.state.as_ref().is_none_or(|s| s.terminated.is_none()),
            ..LogParams::default()
        };
        if let Ok(log) = pods.logs(&name, &params).await
            && !log.trim().is_empty()
        {
            let _ = writeln!(out, "    its log ends:");
            for line in log.lines() {
                let _ = writeln!(out, "      {line}");
            }
        }
    }
    out.push_str(&events_of(client, &namespace, &name).await);
    out
}

/// The last events about the object called `name` in `namespace`.
async fn events_of(client: &Client, namespace: &str, name: &str) -> String {
    let events: Api<Event> = Api::namespaced(client.clone(), namespace);
    let params = ListParams::default().fields(&format!("involvedObject.name={name}"));
    let Ok(list) = events.list(&params).await else {
        return String::new();
    };
    let mut items = list.items;
    items.sort_by_key(|e| e.last_timestamp.clone().map(|t| t.0));
    let mut out = String::new();
    for e in items.iter().rev().take(5).rev() {
        let _ = writeln!(
            out,
            "    event {} {}: {}",
            e.type_.clone().unwrap_or_default(),
            e.reason.clone().unwrap_or_default(),
            e.message.clone().unwrap_or_default().trim()
        );
    }
    out
}
