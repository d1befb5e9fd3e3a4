//! A running cluster, whatever provider made it: where it is ([`ClusterInfo`]), what it can do
//! ([`Capability`]), who may talk to it (identities: `identity.rs`), and the handle another
//! process attaches with (`handle.rs`).
//!
//! ```no_run
//! # async fn wrapper() -> Result<(), Box<dyn std::error::Error>> {
//! let cluster = kube_harness::ControlPlane::builder().start().await?;
//! let client = cluster.client().await?;
//! let alice = cluster.user("alice", &["devs"]).await?;
//! # Ok(()) }
//! ```

mod capability;
mod crds;
mod handle;
pub(crate) mod identity;
mod images;
pub(crate) mod kubeconfig;
pub(crate) mod namespace;
pub(crate) mod workloads;

pub use capability::Capability;

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use kube::config::Kubeconfig;

pub use handle::{ClusterHandle, HANDLE_FORMAT};
pub use kubeconfig::CONTEXT;
pub use namespace::{NAMESPACE_REDACTION, TestNamespace};

use crate::assets::{Assets, KubeVersion};
use crate::error::{Error, Result};
use crate::pki::ClusterPki;
use crate::process::{Child, RunDir};
use crate::provider::Provider;
use crate::wait::{Backoff, Probe};

/// Where a running cluster is: plain data, safe to share across threads, runtimes and
/// (serialised) processes.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct ClusterInfo {
    /// `https://127.0.0.1:<port>`.
    pub server: String,
    /// `http://127.0.0.1:<port>` of etcd (extension servers such as sample-apiserver store
    /// their objects there); empty when the harness does not run the cluster's etcd.
    pub etcd_url: String,
    /// The Kubernetes version.
    pub version: KubeVersion,
    /// The admin kubeconfig (client cert of a `system:masters` user).
    pub kubeconfig: PathBuf,
    /// The run directory: certificates, logs, etcd data.
    pub run_dir: PathBuf,
    /// The directory of the binaries.
    pub assets_dir: PathBuf,
}

/// How long each phase of a start took.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct StartupTimings {
    /// Resolving (or building) the binaries.
    pub assets: Duration,
    /// Generating certificates (overlaps etcd's start).
    pub pki: Duration,
    /// Finding the etcd template (making it, the first time for these binaries and flags).
    pub template: Duration,
    /// etcd from spawn to healthy, including copying the template.
    pub etcd: Duration,
    /// kube-apiserver from spawn to `/readyz` ok.
    pub apiserver: Duration,
    /// Nodes (a plane with nodes): creating them, starting kube-scheduler and kwok, until
    /// every node is Ready. kind: from `kind create` returning until every node is Ready and
    /// kube-proxy runs on each.
    pub nodes: Duration,
    /// kind and k3s: their tool's create (`kind create cluster --wait`, the k3s container to
    /// ready), and reading its kubeconfig.
    pub create: Duration,
    /// The whole start, until the `default` namespace exists.
    pub total: Duration,
}

/// A running cluster. Dropping one the harness started kills kube-apiserver, then etcd
/// (their state is thrown away, so there is nothing to wait a graceful shutdown for), or
/// deletes the kind cluster or k3s container, and removes the run directory.
///
/// A cluster attached to with [`Cluster::attach`] (one a detached `kube-harness up` runs) or
/// reached through a kubeconfig ([`Provider::Existing`]) is left running when dropped.
#[derive(Debug)]
pub struct Cluster {
    pub(crate) origin: Origin,
    pub(crate) info: ClusterInfo,
    pub(crate) admin_kubeconfig: Kubeconfig,
    /// The CA that signed the API server's certificate, PEM.
    pub(crate) server_ca_pem: String,
    pub(crate) pki: Option<Arc<ClusterPki>>,
    pub(crate) assets: Assets,
    pub(crate) timings: StartupTimings,
    /// Whether the cluster has nodes (pods run).
    pub(crate) runs_pods: bool,
}

/// Where a cluster comes from and what ending it takes. Field order is drop order: the
/// processes, kind cluster or container go before the run directory.
#[derive(Debug)]
#[allow(dead_code, reason = "the kind and k3s guards are held only for their Drop")]
pub(crate) enum Origin {
    /// etcd and kube-apiserver started by this process, stopped with the cluster.
    Local {
        /// kube-controller-manager, unless switched off.
        controller_manager: Option<Box<crate::provider::local::controllers::ControllerManager>>,
        /// kube-scheduler and kwok, on a plane with nodes.
        nodes: Option<Box<crate::provider::local::nodes::Nodes>>,
        /// kube-apiserver.
        apiserver: Child,
        /// etcd.
        etcd: Child,
        /// Removed after both are gone.
        run_dir: RunDir,
    },
    /// A local cluster another process started and keeps.
    Attached(ClusterHandle),
    /// Someone else's cluster, reached through a kubeconfig: left alone.
    Existing {
        /// Holds the copied kubeconfig.
        run_dir: RunDir,
    },
    /// A kind cluster this process created (deleted on drop).
    Kind {
        /// Deletes the cluster on drop.
        guard: crate::provider::kind::KindCluster,
        /// Holds the kubeconfig.
        run_dir: RunDir,
    },
    /// A k3s container this process started (removed on drop).
    K3s {
        /// Removes the container on drop.
        guard: crate::provider::k3s::K3sContainer,
        /// Holds the kubeconfig.
        run_dir: RunDir,
    },
}

impl Origin {
    fn provider(&self) -> Provider {
        match self {
            Self::Local { .. } | Self::Attached(_) => Provider::Local,
            Self::Existing { .. } => Provider::Existing,
            Self::Kind { .. } => Provider::Kind,
            Self::K3s { .. } => Provider::K3s,
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if let Origin::Local {
            controller_manager,
            nodes,
            apiserver,
            etcd,
            ..
        } = &self.origin
        {
            if let Some(n) = nodes {
                n.kwok.kill();
                n.scheduler.kill();
            }
            if let Some(cm) = controller_manager {
                cm.child.kill();
            }
            apiserver.kill();
            etcd.kill();
        }
    }
}

impl Cluster {
    /// Whether the cluster is known to have exactly one kube-apiserver (ours, kind's and
    /// k3s's do; someone else's cluster may have several).
    pub(crate) fn one_apiserver(&self) -> bool {
        !matches!(self.origin, Origin::Existing { .. })
    }

    /// Where the cluster is.
    pub fn info(&self) -> &ClusterInfo {
        &self.info
    }

    /// `https://127.0.0.1:<port>`.
    pub fn server_url(&self) -> &str {
        &self.info.server
    }

    /// The admin kubeconfig file.
    pub fn kubeconfig_path(&self) -> &Path {
        &self.info.kubeconfig
    }

    /// The admin kubeconfig.
    pub fn admin_kubeconfig(&self) -> &Kubeconfig {
        &self.admin_kubeconfig
    }

    /// The certificates and keys, when the harness holds them (local clusters, also when
    /// attached); `None` on external providers.
    pub fn pki(&self) -> Option<&ClusterPki> {
        self.pki.as_deref()
    }

    /// The CA that signs the client certificates kube-apiserver accepts, where the harness
    /// holds it: its own on the local plane, kubeadm's on kind.
    pub(crate) fn client_ca(&self) -> Option<&crate::pki::Ca> {
        match (&self.pki, &self.origin) {
            (Some(pki), _) => Some(&pki.client_ca),
            (None, Origin::Kind { guard, .. }) => guard.client_ca(),
            _ => None,
        }
    }

    /// Where this cluster comes from.
    pub fn provider(&self) -> Provider {
        self.origin.provider()
    }

    /// Where tests ran, in one line: the provider, the Kubernetes version, and on the local
    /// plane whether kube-controller-manager runs and how many (kwok) nodes it has —
    /// `local plane, Kubernetes 1.37.2, kube-controller-manager, 2 kwok nodes`. `verify` prints
    /// it; [`crate::shared`] prints it once to stderr, which a failing test's output shows.
    pub fn describe(&self) -> String {
        let version = self.info.version;
        match &self.origin {
            Origin::Local { .. } | Origin::Attached(_) => {
                let nodes = match &self.origin {
                    Origin::Local { nodes, .. } => nodes.as_ref().map_or(0, |n| n.count),
                    Origin::Attached(h) => h.nodes.as_ref().map_or(0, |n| n.count),
                    _ => 0,
                };
                format!(
                    "local plane{}, Kubernetes {version}, {}, {}",
                    if self.is_attached() { " (attached)" } else { "" },
                    if self.has(Capability::Controllers) {
                        "kube-controller-manager"
                    } else {
                        "no kube-controller-manager"
                    },
                    if nodes > 0 {
                        format!("{nodes} kwok node(s): Pods run simulated")
                    } else {
                        "no nodes: Pods stay Pending (KUBE_HARNESS_NODES=n for kwok nodes)".to_owned()
                    }
                )
            }
            _ => format!("{} cluster, Kubernetes {version}", self.provider()),
        }
    }

    /// The binaries this cluster runs.
    pub fn assets(&self) -> &Assets {
        &self.assets
    }

    /// How long the start took, by phase.
    pub fn timings(&self) -> &StartupTimings {
        &self.timings
    }

    /// Process ids of kube-apiserver and etcd (each also leads its own process group).
    pub fn pids(&self) -> Vec<u32> {
        match &self.origin {
            Origin::Local {
                controller_manager,
                nodes,
                apiserver,
                etcd,
                ..
            } => [apiserver.pid(), etcd.pid()]
                .into_iter()
                .chain(controller_manager.as_ref().map(|cm| cm.child.pid()))
                .chain(nodes.iter().flat_map(|n| [n.scheduler.pid(), n.kwok.pid()]))
                .collect(),
            Origin::Attached(h) => [h.apiserver_pid, h.etcd_pid]
                .into_iter()
                .chain(h.controller_manager_pid)
                .chain(h.nodes.iter().flat_map(|n| [n.scheduler_pid, n.kwok_pid]))
                .collect(),
            _ => Vec::new(),
        }
    }

    /// The log file of kube-apiserver.
    pub fn apiserver_log(&self) -> PathBuf {
        self.info.run_dir.join(crate::provider::local::APISERVER_LOG)
    }

    /// The log file of etcd.
    pub fn etcd_log(&self) -> PathBuf {
        self.info.run_dir.join(crate::provider::local::ETCD_LOG)
    }

    /// The log file of kube-controller-manager (on the local plane, when it runs).
    pub fn controller_manager_log(&self) -> PathBuf {
        self.info
            .run_dir
            .join(crate::provider::local::controllers::CONTROLLER_MANAGER_LOG)
    }

    /// The log files of kube-scheduler and kwok (on a local plane with nodes).
    pub fn node_logs(&self) -> [PathBuf; 2] {
        [
            self.info.run_dir.join(crate::provider::local::nodes::SCHEDULER_LOG),
            self.info.run_dir.join(crate::provider::local::nodes::KWOK_LOG),
        ]
    }

    /// Wait until kube-controller-manager reports healthy (its controllers started). Returns
    /// at once on providers that run their own (kind, k3s, an existing cluster).
    ///
    /// ```no_run
    /// # async fn wrapper() -> kube_harness::Result<()> {
    /// let cluster = kube_harness::shared().await?;
    /// cluster.wait_for_controllers(std::time::Duration::from_secs(30)).await?;
    /// // Deleting a namespace now completes; owned objects are collected.
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`Error::Unsupported`] where no kube-controller-manager runs, [`Error::Exited`] if it
    /// died, [`Error::WaitTimeout`].
    pub async fn wait_for_controllers(&self, timeout: Duration) -> Result<()> {
        match &self.origin {
            Origin::Local {
                controller_manager: Some(cm),
                ..
            } => cm.wait_healthy(timeout).await,
            Origin::Local { .. } => Err(Error::Unsupported {
                what: "waiting for controllers",
                provider: self.provider().to_string(),
                hint: "this cluster runs no kube-controller-manager (KUBE_HARNESS_CONTROLLERS=0, ControlPlane::without_controller_manager, or no binary and no Go to build one)",
            }),
            Origin::Attached(h) if h.controller_manager_pid.is_none() => Err(Error::Unsupported {
                what: "waiting for controllers",
                provider: self.provider().to_string(),
                hint: "the cluster this process attached to runs no kube-controller-manager",
            }),
            _ => Ok(()),
        }
    }

    /// Whether this process started the cluster (and stops it on drop), or attached to one
    /// another process runs.
    pub fn is_attached(&self) -> bool {
        matches!(self.origin, Origin::Attached(_))
    }

    /// Fail fast if etcd, kube-apiserver or kube-controller-manager has died.
    ///
    /// # Errors
    /// [`Error::Exited`] naming the dead component, with its log tail.
    pub fn check_alive(&self) -> Result<()> {
        match &self.origin {
            Origin::Local {
                controller_manager,
                nodes,
                apiserver,
                etcd,
                ..
            } => {
                for child in [
                    Some(etcd),
                    Some(apiserver),
                    controller_manager.as_ref().map(|cm| &cm.child),
                    nodes.as_ref().map(|n| &n.scheduler),
                    nodes.as_ref().map(|n| &n.kwok),
                ]
                .into_iter()
                .flatten()
                {
                    if let Some(status) = child.try_exit() {
                        return Err(child.exited_in_use_error(status));
                    }
                }
            }
            Origin::Attached(h) => {
                let controller_manager = h
                    .controller_manager_pid
                    .map(|pid| ("kube-controller-manager", pid, self.controller_manager_log()));
                let [scheduler_log, kwok_log] = self.node_logs();
                let nodes = h.nodes.iter().flat_map(|n| {
                    [
                        ("kube-scheduler", n.scheduler_pid, scheduler_log.clone()),
                        ("kwok", n.kwok_pid, kwok_log.clone()),
                    ]
                });
                for (component, pid, log) in [
                    Some(("etcd", h.etcd_pid, self.etcd_log())),
                    Some(("kube-apiserver", h.apiserver_pid, self.apiserver_log())),
                    controller_manager,
                ]
                .into_iter()
                .flatten()
                .chain(nodes)
                {
                    if !crate::process::alive(pid) {
                        return Err(Error::Exited {
                            component,
                            status: format!("pid {pid}, owned by another process, is gone"),
                            tail: crate::process::tail(&log, 30),
                            log,
                        });
                    }
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// Run `work`, but fail within 50 ms if etcd or kube-apiserver exits meanwhile: without
    /// etcd, kube-apiserver holds requests for up to a minute before it answers.
    ///
    /// # Errors
    /// [`Error::Exited`] naming the component, with its exit status and log tail.
    ///
    /// ```no_run
    /// # async fn wrapper(cluster: &kube_harness::Cluster) -> Result<(), Box<dyn std::error::Error>> {
    /// use k8s_openapi::api::core::v1::Namespace;
    /// let api: kube::Api<Namespace> = kube::Api::all(cluster.client().await?);
    /// let namespaces = cluster.watch(api.list(&Default::default())).await??;
    /// # Ok(()) }
    /// ```
    pub async fn watch<F: std::future::Future>(&self, work: F) -> Result<F::Output> {
        tokio::pin!(work);
        let mut tick = tokio::time::interval(Duration::from_millis(50));
        loop {
            tokio::select! {
                out = &mut work => return Ok(out),
                _ = tick.tick() => self.check_alive()?,
            }
        }
    }

    /// The command lines of etcd and kube-apiserver, program first, exactly as spawned (for
    /// reproducing a start by hand, as the project's bench script does for its bare baseline).
    pub fn command_lines(&self) -> Vec<(&'static str, Vec<OsString>)> {
        match &self.origin {
            Origin::Local { apiserver, etcd, .. } => [etcd, apiserver]
                .iter()
                .map(|c| (c.component(), c.command().to_vec()))
                .collect(),
            Origin::Attached(h) => [("etcd", h.etcd_pid), ("kube-apiserver", h.apiserver_pid)]
                .iter()
                .map(|(component, pid)| {
                    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
                    let args = raw
                        .split(|b| *b == 0)
                        .filter(|a| !a.is_empty())
                        .map(|a| OsString::from(String::from_utf8_lossy(a).into_owned()))
                        .collect();
                    (*component, args)
                })
                .collect(),
            _ => Vec::new(),
        }
    }

    /// Stop the cluster now (kube-apiserver, then etcd) and remove its run directory.
    /// Equivalent to dropping it.
    pub fn stop(self) {
        drop(self);
    }

    /// Wait until every `/readyz` check passes (see
    /// [`ControlPlane::with_strict_readyz`](crate::ControlPlane::with_strict_readyz): by
    /// default a cluster is handed out about a second before the two bootstrap hooks report
    /// done).
    ///
    /// # Errors
    /// [`Error::WaitTimeout`], or the exit of a control-plane process.
    pub async fn wait_readyz(&self, timeout: Duration) -> Result<()> {
        let client = self.client().await?;
        crate::wait::poll_for(
            "kube-apiserver's /readyz to pass every check",
            timeout,
            Backoff::every_millis(20),
            || async {
                self.check_alive()?;
                let request = http::Request::get("/readyz")
                    .body(Vec::new())
                    .map_err(|e| Error::Client(Box::new(e)))?;
                Ok(match client.request_text(request).await {
                    Ok(body) if body == "ok" => Probe::Ready(()),
                    Ok(body) => Probe::NotYet(body),
                    Err(e) => Probe::NotYet(e.to_string()),
                })
            },
        )
        .await
    }

    /// Ready for tests: the `default` namespace exists, and so does the
    /// `kube-system/extension-apiserver-authentication` ConfigMap that extension servers read
    /// their client and requestheader CAs from at start (its controller writes it just after
    /// its readiness check passes).
    pub(crate) async fn wait_for_default_namespace(&self, timeout: Duration) -> Result<()> {
        use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
        let client = self.client().await?;
        let namespaces: kube::Api<Namespace> = kube::Api::all(client.clone());
        let configmaps: kube::Api<ConfigMap> = kube::Api::namespaced(client, "kube-system");
        crate::wait::poll_for(
            "namespace \"default\" and ConfigMap kube-system/extension-apiserver-authentication",
            timeout,
            Backoff::millis(5, 50),
            || async {
                self.check_alive()?;
                let ready = matches!(namespaces.get_opt("default").await, Ok(Some(_)))
                    && matches!(
                        configmaps.get_opt("extension-apiserver-authentication").await,
                        Ok(Some(_))
                    );
                Ok(if ready {
                    Probe::Ready(())
                } else {
                    Probe::NotYet("not both there yet".into())
                })
            },
        )
        .await
    }
}
