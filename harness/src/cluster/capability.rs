//! What a cluster offers a test beyond the API ([`Capability`]), and the question a scenario
//! asks before it needs one ([`Cluster::lacks`], [`skip_unless!`](crate::skip_unless)).

use super::{Cluster, Origin};

/// Something a scenario may need that not every provider offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Capability {
    /// Pods are scheduled and reach Running: kind, k3s and real clusters (a kubelet), and the
    /// local plane with kwok nodes ([`ControlPlane::with_nodes`](crate::ControlPlane::with_nodes):
    /// simulated, no container runs).
    RunsPods,
    /// Containers really run: logs, exec, attach, port-forward and Pod networking work (kind,
    /// k3s, real clusters; not the local plane, whose kwok Pods are simulated).
    RunsContainers,
    /// The API server reaches backends listening on this host's loopback (targets with a
    /// host-process backend behind an `ExternalName: localhost` Service).
    HostBackends,
    /// The harness holds the cluster's client CA, so it can issue user certificates (its own
    /// CA on the local plane, kubeadm's on kind). [`Cluster::pki`] is the whole PKI, where the
    /// harness made it.
    ClientCertificates,
    /// The harness started etcd and kube-apiserver and can watch or stop them.
    OwnsProcesses,
    /// kube-controller-manager runs: deleted namespaces go away, owner references are
    /// collected, namespaces get their `default` ServiceAccount, aggregated ClusterRoles get
    /// their rules, Deployments make ReplicaSets and Pods.
    Controllers,
}

impl Capability {
    fn describe(self) -> &'static str {
        match self {
            Self::RunsPods => "run pods",
            Self::RunsContainers => "run containers (logs, exec, port-forward, Pod networking)",
            Self::HostBackends => "reach backends on this host",
            Self::ClientCertificates => "hold the cluster's client CA",
            Self::OwnsProcesses => "own the control-plane processes",
            Self::Controllers => {
                "run kube-controller-manager (KUBE_HARNESS_CONTROLLERS=0, or its binary could not be had)"
            }
        }
    }
}

impl Cluster {
    /// Whether this cluster offers `capability` (see [`Cluster::lacks`]).
    pub fn has(&self, capability: Capability) -> bool {
        match capability {
            Capability::ClientCertificates => self.client_ca().is_some(),
            Capability::OwnsProcesses => matches!(self.origin, Origin::Local { .. }),
            Capability::Controllers => match &self.origin {
                Origin::Local { controller_manager, .. } => controller_manager.is_some(),
                Origin::Attached(h) => h.controller_manager_pid.is_some(),
                // kind, k3s and real clusters run their own.
                Origin::Existing { .. } | Origin::Kind { .. } | Origin::K3s { .. } => true,
            },
            Capability::RunsPods => self.runs_pods,
            Capability::RunsContainers => matches!(
                self.origin,
                Origin::Existing { .. } | Origin::Kind { .. } | Origin::K3s { .. }
            ),
            Capability::HostBackends => match self.origin {
                Origin::Local { .. } | Origin::Attached(_) => true,
                Origin::Existing { .. } => {
                    let host = self
                        .info
                        .server
                        .trim_start_matches("https://")
                        .rsplit_once(':')
                        .map_or("", |(h, _)| h);
                    matches!(host, "127.0.0.1" | "localhost" | "[::1]")
                }
                Origin::Kind { .. } | Origin::K3s { .. } => false,
            },
        }
    }

    /// `Some(reason)` if this cluster lacks `capability` (print it and skip), `None` if it
    /// has it.
    pub fn lacks(&self, capability: Capability) -> Option<String> {
        if self.has(capability) {
            return None;
        }
        let local = matches!(self.origin, Origin::Local { .. } | Origin::Attached(_));
        Some(match capability {
            Capability::RunsPods if local => "skipped: this local plane has no nodes, so Pods stay Pending (RunsPods): \
                 KUBE_HARNESS_NODES=1 gives it kwok nodes (Pods Running, simulated), KUBE_HARNESS_PROVIDER=kind real ones"
                .to_owned(),
            Capability::RunsContainers if local => "skipped: the local plane runs no containers (RunsContainers): no logs, exec, \
                 port-forward or Pod networking; run this test on kind (KUBE_HARNESS_PROVIDER=kind)"
                .to_owned(),
            _ => format!(
                "skipped: on the {} provider the harness cannot {} ({capability:?})",
                self.provider(),
                capability.describe()
            ),
        })
    }
}

/// Return `Ok(())` from the enclosing test, printing why, unless `cluster` has every capability
/// named: the way a scenario says what it needs ([`Cluster::lacks`] gives the reason, which
/// names what to set to run it).
///
/// ```no_run
/// use kube_harness::{Capability, skip_unless};
/// # async fn wrapper() -> anyhow::Result<()> {
/// let cluster = kube_harness::shared().await?;
/// skip_unless!(cluster, Capability::RunsPods, Capability::RunsContainers);
/// // … a test that reads a Pod's logs …
/// # Ok(()) }
/// ```
#[macro_export]
macro_rules! skip_unless {
    ($cluster:expr, $($capability:expr),+ $(,)?) => {
        $(
            if let Some(reason) = $cluster.lacks($capability) {
                println!("{reason}");
                return Ok(());
            }
        )+
    };
}
