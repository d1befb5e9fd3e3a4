//! Providers of a cluster, chosen with `KUBE_HARNESS_PROVIDER` (for [`shared`]) or in code:
//!
//! | provider | how | runs pods | host backends | client certs | etcd |
//! |---|---|---|---|---|---|
//! | [`Provider::Local`] (default) | etcd + kube-apiserver processes here ([`local`]) | no | yes | yes | yes |
//! | [`Provider::Existing`] | `KUBECONFIG` / its current context ([`Cluster::existing`]) | depends | if the API server runs on this host | no (impersonation) | no |
//! | [`Provider::Kind`] | the `kind` CLI ([`kind`]) | yes | no | no (impersonation) | no |
//! | [`Provider::K3s`] | `docker run rancher/k3s` ([`k3s`]) | yes | no | no (impersonation) | no |
//!
//! Scenarios ask [`Cluster::lacks`] and skip, printing the reason, when a capability is
//! missing.

pub mod k3s;
pub mod kind;
pub mod local;
mod shared;

pub use shared::shared;

use crate::Cluster;
use crate::error::{Error, Result};

/// Where a cluster comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Provider {
    /// etcd and kube-apiserver started here (the default).
    Local,
    /// A cluster someone else runs, reached through a kubeconfig.
    Existing,
    /// A kind cluster created (and deleted) by the harness.
    Kind,
    /// A k3s container created (and removed) by the harness.
    K3s,
}

impl std::fmt::Display for Provider {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Local => "local",
            Self::Existing => "existing",
            Self::Kind => "kind",
            Self::K3s => "k3s",
        })
    }
}

impl std::str::FromStr for Provider {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "" | "local" => Ok(Self::Local),
            "existing" => Ok(Self::Existing),
            "kind" => Ok(Self::Kind),
            "k3s" => Ok(Self::K3s),
            other => Err(Error::Provider(format!(
                "unknown provider {other:?} in KUBE_HARNESS_PROVIDER: use local, existing, kind or k3s"
            ))),
        }
    }
}

impl Provider {
    /// `KUBE_HARNESS_PROVIDER`, default [`Provider::Local`].
    ///
    /// # Errors
    /// [`Error::Provider`] for an unknown name.
    pub fn from_env() -> Result<Self> {
        std::env::var("KUBE_HARNESS_PROVIDER").unwrap_or_default().parse()
    }
}

/// Something a scenario may need that not every provider offers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Capability {
    /// Pods are scheduled and run (a kubelet exists).
    RunsPods,
    /// The API server reaches backends listening on this host's loopback (targets with a
    /// host-process backend behind an `ExternalName: localhost` Service).
    HostBackends,
    /// The harness holds the cluster's client CA, so it can issue user certificates and knows
    /// the published front-proxy CA.
    ClientCertificates,
    /// The harness started etcd and kube-apiserver and can watch or stop them.
    OwnsProcesses,
}

impl Capability {
    fn describe(self) -> &'static str {
        match self {
            Self::RunsPods => "run pods",
            Self::HostBackends => "reach backends on this host",
            Self::ClientCertificates => "hold the cluster's client CA",
            Self::OwnsProcesses => "own the control-plane processes",
        }
    }
}

impl Cluster {
    /// `Some(reason)` if this cluster lacks `capability` (print it and skip), `None` if it
    /// has it.
    pub fn lacks(&self, capability: Capability) -> Option<String> {
        (!self.has(capability)).then(|| {
            format!(
                "skipped: on the {} provider the harness cannot {} ({capability:?})",
                self.provider(),
                capability.describe()
            )
        })
    }
}
