//! Nodes on the local plane: kube-scheduler binds Pods to fake Nodes that kwok
//! (sigs.k8s.io/kwok) keeps Ready, and kwok moves the Pods bound to them through its "fast"
//! stages — Running and Ready at once, Job pods Succeeded, deletions finished. No container
//! runs: no logs, exec, port-forward or network. Both children have their own client
//! certificate, serve only on loopback and are supervised like kube-controller-manager.

use std::ffi::OsString;
use std::path::Path;
use std::time::Duration;

use k8s_openapi::api::core::v1::Node;
use kube::ResourceExt as _;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use serde_json::json;

use super::{flags, identity, secure_serving};
use crate::assets::NodeBinaries;
use crate::error::{Error, Result};
use crate::pki::ClusterPki;
use crate::process::{Child, ChildSpec, free_port, probe_client};
use crate::wait::{Backoff, Probe, Readiness};

/// kube-scheduler's log, in the run directory.
pub(crate) const SCHEDULER_LOG: &str = "kube-scheduler.log";
/// kwok's log, in the run directory.
pub(crate) const KWOK_LOG: &str = "kwok.log";
/// The annotation kwok manages nodes by (as kwokctl marks its nodes).
pub const NODE_ANNOTATION: &str = "kwok.x-k8s.io/node";
/// kube-controller-manager's controller that lifts the `not-ready` taint a new Node gets,
/// once kwok reports it Ready (run whenever the plane has nodes).
pub const NODE_LIFECYCLE_CONTROLLER: &str = "node-lifecycle-controller";
/// The user kube-scheduler authenticates as; the bootstrap RBAC policy binds it.
const SCHEDULER_USER: &str = "system:kube-scheduler";
/// Most nodes a plane takes (`KUBE_HARNESS_NODES`, `with_nodes`): kwok handles thousands,
/// but a test that wants more is likely a typo.
pub const MAX_NODES: u32 = 100;

/// How many fake nodes `KUBE_HARNESS_NODES` asks for (unset or empty: none).
pub(crate) fn from_env() -> std::result::Result<u32, String> {
    match std::env::var("KUBE_HARNESS_NODES") {
        Err(_) => Ok(0),
        Ok(v) => parse(&v),
    }
}

/// `KUBE_HARNESS_NODES`: a number of nodes, 0 to [`MAX_NODES`].
pub(crate) fn parse(value: &str) -> std::result::Result<u32, String> {
    let value = value.trim();
    if value.is_empty() {
        return Ok(0);
    }
    match value.parse::<u32>() {
        Ok(n) if n <= MAX_NODES => Ok(n),
        _ => Err(format!(
            "KUBE_HARNESS_NODES={value:?}: expected a number of nodes from 0 to {MAX_NODES}"
        )),
    }
}

/// The running kube-scheduler and kwok.
#[derive(Debug)]
pub(crate) struct Nodes {
    pub(crate) scheduler: Child,
    pub(crate) kwok: Child,
    pub(crate) count: u32,
}

/// The fake Node objects: what kubelets of a small real node would report (4 CPUs, 16 GiB,
/// 110 pods), Linux/amd64, annotated for kwok.
fn node(i: u32) -> Node {
    let name = format!("kwok-node-{i}");
    let resources = json!({"cpu": "4", "memory": "16Gi", "pods": "110", "ephemeral-storage": "100Gi"});
    serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "annotations": {NODE_ANNOTATION: "fake", "node.alpha.kubernetes.io/ttl": "0"},
            "labels": {
                "kubernetes.io/hostname": name,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64",
                "type": "kwok",
            },
        },
        "status": {"allocatable": resources, "capacity": resources},
    }))
    .unwrap_or_default()
}

/// Create `count` Nodes (before anything schedules: the scheduler sees them in its first list).
pub(crate) async fn create_nodes(client: &kube::Client, count: u32) -> Result<()> {
    let api: Api<Node> = Api::all(client.clone());
    for i in 0..count {
        match api.create(&PostParams::default(), &node(i)).await {
            Ok(_) => {}
            // A plane copied from a template that already had them.
            Err(kube::Error::Api(e)) if e.code == 409 => {}
            Err(e) => return Err(Error::Kube(e)),
        }
    }
    Ok(())
}

/// The taint the TaintNodesByCondition admission plugin puts on every new Node.
const NOT_READY_TAINT: &str = "node.kubernetes.io/not-ready";

/// Wait until kwok has made every node Ready, and lift the `not-ready` taint the Node got at
/// creation (kube-controller-manager's node-lifecycle-controller would, once it has started:
/// a second or more later, and a Pod created meanwhile gets a FailedScheduling event first).
/// Then a Pod created at once is scheduled at once, as on a cluster whose nodes are up.
pub(crate) async fn wait_ready(client: &kube::Client, kwok: &Child, count: u32, timeout: Duration) -> Result<()> {
    let api: Api<Node> = Api::all(client.clone());
    let selector = ListParams::default().labels("type=kwok");
    crate::wait::poll_for(
        &format!("kwok to report {count} node(s) Ready"),
        timeout,
        Backoff::millis(10, 100),
        || async {
            if let Some(status) = kwok.try_exit() {
                return Err(kwok.exited_in_use_error(status));
            }
            let nodes = api.list(&selector).await?;
            let mut ready = 0;
            for node in &nodes.items {
                let is_ready = node
                    .status
                    .as_ref()
                    .and_then(|s| s.conditions.as_ref())
                    .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
                if !is_ready {
                    continue;
                }
                let taints = node.spec.as_ref().and_then(|s| s.taints.clone()).unwrap_or_default();
                if taints.iter().any(|t| t.key == NOT_READY_TAINT) {
                    let kept: Vec<_> = taints.into_iter().filter(|t| t.key != NOT_READY_TAINT).collect();
                    let patch = json!({"spec": {"taints": kept}});
                    api.patch(&node.name_any(), &PatchParams::default(), &Patch::Merge(&patch))
                        .await?;
                }
                ready += 1;
            }
            Ok(if ready >= count {
                Probe::Ready(())
            } else {
                Probe::NotYet(format!("{ready} of {count} Ready"))
            })
        },
    )
    .await
}

/// Spawn kube-scheduler and kwok against `server` (not waited for beyond their start: a test
/// that needs a Pod running waits for the Pod).
pub(crate) async fn spawn(
    binaries: &NodeBinaries,
    run_dir: &Path,
    pki: &ClusterPki,
    server: &str,
    count: u32,
    feature_gates: Option<&str>,
) -> Result<Nodes> {
    let s = |p: &Path| p.to_string_lossy().into_owned();
    let dir = run_dir.join("kube-scheduler");
    let kubeconfig = identity(&dir, pki, server, SCHEDULER_USER, Vec::new())?;
    let (pairs, _port) = secure_serving(&dir, pki, &kubeconfig, "kube-scheduler", feature_gates)?;
    let args: Vec<OsString> = flags(pairs.into_iter().map(|(k, v)| (k.to_owned(), v)));
    let spec = ChildSpec {
        args,
        cwd: Some(run_dir.to_owned()),
        readiness: Readiness::Spawned,
        ..ChildSpec::new(
            "kube-scheduler",
            binaries.scheduler.clone(),
            run_dir.join(SCHEDULER_LOG),
        )
    };
    let scheduler = Child::start(&spec, Duration::from_secs(10)).await?;

    // kwok writes Node and Pod status, Leases and deletions: a system:masters identity of its own.
    let kc = s(&identity(
        &run_dir.join("kwok"),
        pki,
        server,
        "kube-harness:kwok",
        vec!["system:masters".to_owned()],
    )?);
    let port = free_port("kwok")?;
    let args: Vec<OsString> = flags(
        [
            ("kubeconfig", kc),
            ("config", s(&binaries.stages)),
            ("manage-all-nodes", "false".to_owned()),
            (
                "manage-nodes-with-annotation-selector",
                format!("{NODE_ANNOTATION}=fake"),
            ),
            ("node-lease-duration-seconds", "40".to_owned()),
            ("node-ip", "127.0.0.1".to_owned()),
            ("server-address", format!("127.0.0.1:{port}")),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v)),
    );
    let spec = ChildSpec {
        args,
        cwd: Some(run_dir.to_owned()),
        readiness: Readiness::Http {
            url: format!("http://127.0.0.1:{port}/healthz"),
            client: probe_client("", None)?,
            body: None,
        },
        ..ChildSpec::new("kwok", binaries.kwok.clone(), run_dir.join(KWOK_LOG))
    };
    let kwok = Child::start(&spec, Duration::from_secs(30)).await?;
    Ok(Nodes { scheduler, kwok, count })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_variable_is_a_bounded_number() {
        assert_eq!(parse(""), Ok(0));
        assert_eq!(parse("3"), Ok(3));
        assert_eq!(parse(" 0 "), Ok(0));
        assert!(parse("101").is_err_and(|e| e.contains("0 to 100")));
        assert!(parse("two").is_err_and(|e| e.contains("KUBE_HARNESS_NODES")));
    }

    #[test]
    fn a_node_is_annotated_for_kwok_with_a_small_nodes_resources() {
        let n = node(2);
        assert_eq!(n.metadata.name.as_deref(), Some("kwok-node-2"));
        assert_eq!(
            n.metadata
                .annotations
                .unwrap_or_default()
                .get(NODE_ANNOTATION)
                .map(String::as_str),
            Some("fake")
        );
        let allocatable = n.status.and_then(|s| s.allocatable).unwrap_or_default();
        assert_eq!(allocatable.get("cpu").map(|q| q.0.as_str()), Some("4"));
    }
}
