//! One cluster per test process, started on first use and shared by every test.

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
    started.as_ref().map_err(|e| Error::SharedStart(Arc::clone(e)))
}
