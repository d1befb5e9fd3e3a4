//! The handle of a detached cluster: what `kube-harness up --detach` writes and
//! [`Cluster::attach`] reads.

use std::path::Path;
use std::sync::Arc;

use super::{Cluster, ClusterInfo, Origin, StartupTimings, kubeconfig};
use crate::assets::Assets;
use crate::error::{Error, Result};
use crate::pki::ClusterPki;

/// What another process needs to use a running cluster: written by `kube-harness up --detach`
/// as `cluster.json` in the run directory, read by [`Cluster::attach`] (and by [`crate::shared`]
/// when `KUBE_HARNESS_CLUSTER` names the file).
///
/// The file carries [`HANDLE_FORMAT`]: a library attaches to a handle of its own format
/// whichever kube-harness version wrote it (fields it does not know are ignored), so the CLI
/// that runs `up --detach` need not be exactly the library's version.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct ClusterHandle {
    /// The handle's format ([`HANDLE_FORMAT`]; handles written before it was recorded are 1).
    #[serde(default = "first_format")]
    pub format: u32,
    /// Where the cluster is.
    pub info: ClusterInfo,
    /// kube-apiserver's pid.
    pub apiserver_pid: u32,
    /// etcd's pid.
    pub etcd_pid: u32,
    /// The process that owns the cluster (stop it to stop the cluster).
    pub owner_pid: u32,
    /// kube-controller-manager's pid, when it runs.
    #[serde(default)]
    pub controller_manager_pid: Option<u32>,
    /// kube-scheduler's and kwok's pids, when the plane has nodes (their number, then).
    #[serde(default)]
    pub nodes: Option<NodesHandle>,
}

/// The node processes of a detached plane with nodes.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct NodesHandle {
    /// How many fake nodes.
    pub count: u32,
    /// kube-scheduler's pid.
    pub scheduler_pid: u32,
    /// kwok's pid.
    pub kwok_pid: u32,
}

/// The format of the handle file this library writes and reads. It changes only when a field
/// an attaching process needs changes its meaning or goes; every kube-harness 0.1 writes 1.
pub const HANDLE_FORMAT: u32 = 1;

const fn first_format() -> u32 {
    1
}

impl Cluster {
    /// The handle another process needs to [`attach`](Cluster::attach) to this cluster, owned
    /// by this process.
    pub fn handle(&self) -> Option<ClusterHandle> {
        match &self.origin {
            Origin::Local {
                controller_manager,
                nodes,
                apiserver,
                etcd,
                ..
            } => Some(ClusterHandle {
                format: HANDLE_FORMAT,
                info: self.info.clone(),
                apiserver_pid: apiserver.pid(),
                etcd_pid: etcd.pid(),
                owner_pid: std::process::id(),
                controller_manager_pid: controller_manager.as_ref().map(|cm| cm.child.pid()),
                nodes: nodes.as_ref().map(|n| NodesHandle {
                    count: n.count,
                    scheduler_pid: n.scheduler.pid(),
                    kwok_pid: n.kwok.pid(),
                }),
            }),
            Origin::Attached(h) => Some(h.clone()),
            _ => None,
        }
    }

    /// Use a cluster another process started and keeps running (`kube-harness up --detach`
    /// writes the handle file and prints its path as `KUBE_HARNESS_CLUSTER`). Dropping the
    /// returned `Cluster` leaves it running.
    ///
    /// # Errors
    /// [`Error::Attach`] if the file cannot be read or the cluster is no longer running;
    /// [`Error::Io`]/[`Error::Pki`] if its certificates cannot be read.
    pub async fn attach(handle_file: &Path) -> Result<Self> {
        let attach_err = |problem: String| Error::Attach {
            file: handle_file.to_owned(),
            problem,
        };
        let text = std::fs::read_to_string(handle_file).map_err(|e| attach_err(format!("cannot read it: {e}")))?;
        let handle: ClusterHandle =
            serde_json::from_str(&text).map_err(|e| attach_err(format!("not a cluster handle: {e}")))?;
        if handle.format != HANDLE_FORMAT {
            return Err(attach_err(format!(
                "its handle format is {}, and this kube-harness ({}) reads format {HANDLE_FORMAT}: run `up --detach` \
                 with a kube-harness CLI that writes format {HANDLE_FORMAT}",
                handle.format,
                env!("CARGO_PKG_VERSION")
            )));
        }
        for (what, pid) in [
            ("its owner", handle.owner_pid),
            ("kube-apiserver", handle.apiserver_pid),
            ("etcd", handle.etcd_pid),
        ] {
            if !crate::process::alive(pid) {
                return Err(attach_err(format!(
                    "{what} (pid {pid}) is no longer running; start the cluster again (`kube-harness up --detach`)"
                )));
            }
        }
        let pki = ClusterPki::load(&handle.info.run_dir.join("pki"))?;
        let admin_kubeconfig = kubeconfig::kubeconfig(
            &handle.info.server,
            pki.serving_ca.cert_pem(),
            crate::pki::ADMIN_USER,
            Some(&pki.admin),
            None,
        );
        let cluster = Cluster {
            info: handle.info.clone(),
            admin_kubeconfig,
            server_ca_pem: pki.serving_ca.cert_pem().to_owned(),
            pki: Some(Arc::new(pki)),
            assets: Assets::attached(handle.info.assets_dir.clone()),
            timings: StartupTimings::default(),
            runs_pods: handle.nodes.as_ref().is_some_and(|n| n.count > 0),
            origin: Origin::Attached(handle),
        };
        cluster.check_alive()?;
        Ok(cluster)
    }
}
