//! # kube-harness
//!
//! Real Kubernetes control planes for Rust tests: etcd, kube-apiserver and
//! kube-controller-manager as child processes on loopback, with client-certificate users,
//! RBAC, ServiceAccount tokens and the aggregation layer switched on, so operators and
//! extension API servers can be tested against the real thing.
//!
//! ```no_run
//! # async fn wrapper() -> Result<(), Box<dyn std::error::Error>> {
//! use k8s_openapi::api::core::v1::Namespace;
//! let cluster = kube_harness::shared().await?;          // one per test process
//! let admin = cluster.client().await?;                  // one client per test
//! let namespaces = kube::Api::<Namespace>::all(admin).list(&Default::default()).await?;
//! let alice = cluster.user("alice", &["devs"]).await?;   // 403 until RBAC binds her
//! # Ok(()) }
//! ```
//!
//! ## Environment
//! | variable | effect |
//! |---|---|
//! | `KUBE_HARNESS_ASSETS`, `KUBEBUILDER_ASSETS` | directory with `kube-apiserver`, `etcd`, `kubectl`; skips the cache and the build |
//! | `KUBE_HARNESS_CACHE` | cache root (default `$XDG_CACHE_HOME/kube-harness` or `~/.cache/kube-harness`) |
//! | `KUBE_HARNESS_K8S_VERSION` | version of the [`shared`] cluster (default [`assets::DEFAULT_KUBERNETES_VERSION`]) |
//! | `KUBE_HARNESS_PROVIDER` | provider of the [`shared`] cluster: `local` (default), `existing`, `kind`, `k3s` ([`provider`]) |
//! | `KUBE_HARNESS_CLUSTER` | handle file of a cluster `kube-harness up --detach` runs: [`shared`] attaches to it |
//! | `KUBE_HARNESS_RUN_ROOT` | where run directories go (default `<tmp>/kube-harness-<uid>`) |
//! | `KUBE_HARNESS_KEEP=1` | keep run directories (certificates, logs, etcd data) after a cluster stops |
//! | `KUBE_HARNESS_CONTROLLERS` | kube-controller-manager's controllers on the local plane: unset or `default` ([`provider::DEFAULT_CONTROLLERS`]), `0` for none (as envtest), or a `--controllers` list |
//! | `KUBE_HARNESS_UNVERIFIED_VERSION=1` | allow a Kubernetes version outside [`assets::VERIFIED_MINORS`] |
//!
//! ## Cleanup
//! Dropping a [`Cluster`] stops kube-apiserver, then etcd (SIGTERM, then SIGKILL after 5 s)
//! and removes its run directory. Children are also spawned with a parent-death signal from a
//! thread that lives as long as the process, and run directories are registered with a small
//! watcher process, so nothing outlives a test binary that panics, exits with a cluster in a
//! `static`, or is killed with SIGKILL.

//! ## Depending on it
//! The library enables no k8s-openapi version feature: the crate that depends on it picks one
//! (`k8s-openapi = { version = "0.29", features = ["v1_35"] }`), as k8s-openapi asks of
//! libraries. The command line is behind the `cli` feature (`cargo install kube-harness
//! --features cli`), so the library pulls in none of its dependencies.

#![deny(missing_debug_implementations)]

//! ## Map
//! | module | what |
//! |---|---|
//! | [`cluster`] | [`Cluster`], [`ClusterInfo`], [`Capability`]; CRDs ([`Cluster::install_crds`]) and test namespaces ([`cluster::TestNamespace`]); identities (users, tokens, impersonation, kubeconfigs); the handle of a detached cluster |
//! | [`provider`] | [`Provider`] and the one [`provider::start`]; the local control plane ([`ControlPlane`]), existing clusters, kind, k3s |
//! | [`target`] | a target directory: load ([`Target`]) → up ([`RunningTarget`]) → down |
//! | [`check`] | probes and `verify` (expectations, reports, failure bundles) |
//! | [`snapshot`] | redactions for insta snapshots (an insta settings preset with the `insta` feature) |
//! | [`task`] | [`TaskGuard`]: a controller or other background task aborted on drop |
//! | [`assets`] | binaries: environment directory → cache → envtest tarball → Go build |
//! | [`pki`] | CAs, serving and client certificates |
//! | [`process`] | supervised child processes (parent-death signal, reaper, run directories) |
//! | [`error`] | [`Error`] and [`Result`] |

// The kube major the typed API speaks (feature kube-5, kube-4 or kube-3): the code names it
// `kube` and `k8s_openapi` whichever it is. kube 5 is the dependency of that name itself.
#[cfg(all(feature = "kube-3", not(any(feature = "kube-4", feature = "kube-5"))))]
extern crate k8s_openapi_027 as k8s_openapi;
#[cfg(all(feature = "kube-4", not(feature = "kube-5")))]
extern crate k8s_openapi_028 as k8s_openapi;
#[cfg(all(feature = "kube-3", not(any(feature = "kube-4", feature = "kube-5"))))]
extern crate kube3 as kube;
#[cfg(all(feature = "kube-4", not(feature = "kube-5")))]
extern crate kube4 as kube;

#[cfg(not(any(feature = "kube-3", feature = "kube-4", feature = "kube-5")))]
compile_error!(
    "kube-harness speaks kube 5 (feature `kube-5`, the default), kube 4 (`kube-4`) or kube 3 (`kube-3`): \
     enable the one your crate uses, e.g. `kube-harness = { version = \"0.1\", default-features = false, \
     features = [\"kube-4\"] }`"
);
#[cfg(any(
    all(feature = "kube-5", feature = "kube-4"),
    all(feature = "kube-5", feature = "kube-3"),
    all(feature = "kube-4", feature = "kube-3")
))]
compile_error!(
    "kube-harness: features `kube-3`, `kube-4` and `kube-5` are exclusive (one kube major per build). \
     `kube-5` is a default feature: for kube 4 or 3 write `default-features = false, features = [\"kube-4\"]`; \
     the `cli` feature needs `kube-5`"
);

pub mod assets;
pub mod check;
#[cfg(feature = "cli")]
pub mod cli;
pub mod cluster;
pub mod error;
pub mod pki;
pub mod process;
pub(crate) mod progress;
pub mod provider;
pub mod snapshot;
pub mod target;
pub mod task;
pub(crate) mod wait;
pub mod webhook;

#[doc(inline)]
pub use cluster::{Capability, Cluster, ClusterHandle, ClusterInfo, StartupTimings};
#[doc(inline)]
pub use error::{Error, Result};
#[doc(inline)]
pub use provider::local::ControlPlane;
#[doc(inline)]
pub use provider::{Provider, StartOptions, private, shared};
#[doc(inline)]
pub use target::{RunningTarget, Target};
#[doc(inline)]
pub use task::{TaskGuard, spawn_guarded};
