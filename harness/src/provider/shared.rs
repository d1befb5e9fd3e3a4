//! One cluster per test process, started on first use and shared by every test; or one of a
//! test's own ([`private`]).

use std::sync::Arc;

use tokio::sync::OnceCell;

use super::{Provider, StartOptions};
use crate::assets::KubeVersion;
use crate::cluster::Cluster;
use crate::error::{Error, Result};

/// The process-wide cluster, started by the first caller through [`start`](super::start)
/// with what the environment asks for: `KUBE_HARNESS_PROVIDER` (default local),
/// `KUBE_HARNESS_K8S_VERSION`, and `KUBE_HARNESS_CLUSTER` — a handle file (`kube-harness up
/// --detach` prints it) of a cluster another process runs, attached to instead of started, so
/// several test binaries share one cluster.
///
/// Tests run on separate tokio runtimes, so share the cluster's *data* and build a client per
/// test with [`Cluster::client`]. The cluster lives in a `static` and is never dropped: its
/// processes die with the test process (they are spawned with a parent-death signal) and its
/// run directory is removed by the cleanup watcher.
///
/// A failed start is remembered: every later caller gets the same error at once instead of
/// waiting for another failing start.
///
/// # Errors
/// [`Error::SharedStart`] with the first start's error.
///
/// # Example
/// ```no_run
/// # async fn wrapper() -> Result<(), Box<dyn std::error::Error>> {
/// let cluster = kube_harness::shared().await?;
/// let client = cluster.client().await?;
/// # Ok(()) }
/// ```
pub async fn shared() -> Result<&'static Cluster> {
    static SHARED: OnceCell<std::result::Result<Cluster, Arc<Error>>> = OnceCell::const_new();
    let started = SHARED
        .get_or_init(|| async {
            let provider = Provider::from_env().map_err(Arc::new)?;
            let version = KubeVersion::from_env().map_err(Arc::new)?;
            super::start(provider, version, StartOptions::from_env())
                .await
                .map_err(Arc::new)
        })
        .await;
    let cluster = started.as_ref().map_err(|e| Error::SharedStart(Arc::clone(e)))?;
    say_where(cluster);
    Ok(cluster)
}

/// Once per test (libtest runs each on a thread of its own, and shows what it printed when it
/// fails): which cluster it ran on.
fn say_where(cluster: &Cluster) {
    thread_local! {
        static SAID: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    }
    if !SAID.with(|s| s.replace(true)) {
        eprintln!("kube-harness: on {}", cluster.describe());
    }
}

/// A cluster of the calling test's own, started now and stopped when dropped: what a test
/// needs when sharing would mislead it — a controller that watches cluster-wide (on a shared
/// cluster it reconciles, and so hides, what another test's controller should have done),
/// cluster-scoped objects (CRDs, ClusterRoles, webhooks, APIServices) that another test
/// changes or relies on. The same [`Cluster`] as [`shared`] gives, so the same helpers; it
/// starts what the environment asks for (`KUBE_HARNESS_PROVIDER`, `KUBE_HARNESS_K8S_VERSION`),
/// but never attaches to `KUBE_HARNESS_CLUSTER`: that cluster is shared by definition. On the
/// local plane it costs about a second (see docs/sharing.md).
///
/// # Errors
/// [`Error::Provider`] for `KUBE_HARNESS_PROVIDER=existing` (a cluster someone else runs
/// cannot be made private); a start's own errors otherwise.
///
/// # Example
/// ```no_run
/// # async fn wrapper() -> Result<(), Box<dyn std::error::Error>> {
/// let cluster = kube_harness::private().await?;   // this test's alone
/// let client = cluster.client().await?;
/// // … run the cluster-wide controller under test against `client` …
/// # Ok(()) }
/// ```
pub async fn private() -> Result<Cluster> {
    let provider = Provider::from_env()?;
    if provider == Provider::Existing {
        return Err(Error::Provider(
            "private() starts a cluster of the test's own, which KUBE_HARNESS_PROVIDER=existing (a cluster \
             someone else runs) cannot; use shared() there, or the local, kind or k3s provider"
                .into(),
        ));
    }
    let version = KubeVersion::from_env()?;
    let cluster = super::start(provider, version, StartOptions::default()).await?;
    eprintln!("kube-harness: on a private {}", cluster.describe());
    Ok(cluster)
}
