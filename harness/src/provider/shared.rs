//! One cluster per test process, started on first use and shared by every test.

use tokio::sync::OnceCell;

use super::local::{Cluster, ControlPlane};
use crate::error::{Error, Result};

/// The process-wide cluster, started by the first caller with the default
/// [`ControlPlane`] settings (override the version with `KUBE_HARNESS_K8S_VERSION`) — or, when
/// `KUBE_HARNESS_CLUSTER` names a handle file (`kube-harness up --detach` prints it), the
/// cluster that process runs, attached to instead of started, so several test binaries share
/// one cluster. `KUBE_HARNESS_PROVIDER=existing|kind|k3s` picks another provider
/// ([`crate::provider`]).
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
    static SHARED: OnceCell<std::result::Result<Cluster, String>> = OnceCell::const_new();
    let started = SHARED
        .get_or_init(|| async {
            let started = match crate::provider::Provider::from_env() {
                Err(e) => Err(e),
                Ok(crate::provider::Provider::Existing) => Cluster::existing(None).await,
                Ok(crate::provider::Provider::Kind) => Cluster::kind(super::local::version_from_env()).await,
                Ok(crate::provider::Provider::K3s) => Cluster::k3s(super::local::version_from_env()).await,
                Ok(crate::provider::Provider::Local) => {
                    match std::env::var_os("KUBE_HARNESS_CLUSTER").filter(|v| !v.is_empty()) {
                        Some(handle) => Cluster::attach(std::path::Path::new(&handle)).await,
                        None => ControlPlane::builder().start().await,
                    }
                }
            };
            started.map_err(|e| e.to_string())
        })
        .await;
    started.as_ref().map_err(|message| Error::SharedStart(message.clone()))
}
