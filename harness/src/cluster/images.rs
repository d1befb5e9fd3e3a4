//! What a cluster with real nodes offers a test beyond the API: local images loaded into its
//! nodes, node ports published on 127.0.0.1, and the tools (kind and, on hosts that need it,
//! the harness's `docker` shim) a command run against it needs on `PATH`.

use std::net::SocketAddr;

use super::{Cluster, Origin};
use crate::error::{Error, Result};

impl Cluster {
    /// Something that loads a local image into this cluster's nodes (kind only).
    ///
    /// # Errors
    /// [`Error::Unsupported`] on other providers.
    pub(crate) fn image_loader(&self) -> Result<impl Fn(&str) -> Result<()> + Send + 'static> {
        match &self.origin {
            Origin::Kind { guard, .. } => {
                let cli = guard.cli();
                Ok(move |image: &str| cli.load_image(image))
            }
            _ => Err(Error::Unsupported {
                what: "loading an image into the nodes",
                provider: self.provider().to_string(),
                hint: "only kind clusters run containers from local images (the local plane runs none; its kwok Pods are simulated)",
            }),
        }
    }

    /// Load `image` from the local Docker engine into every node (kind), as
    /// `kind load docker-image` does, through the harness's `docker` shim where this host needs
    /// one. Never pulls: an image that is not present locally is an error naming it. A Pod
    /// then runs it with `imagePullPolicy: IfNotPresent` (or `Never`); `:latest` images
    /// default to `Always`, which would pull.
    ///
    /// ```no_run
    /// # async fn wrapper() -> kube_harness::Result<()> {
    /// let cluster = kube_harness::shared().await?;
    /// cluster.load_image("busybox:stable").await?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`Error::Unsupported`] on other providers; [`Error::Provider`] for an image that is not
    /// present locally or a failing `kind load`.
    pub async fn load_image(&self, image: &str) -> Result<()> {
        let load = self.image_loader()?;
        let image = image.to_owned();
        crate::process::blocking("image load", move || load(&image)).await
    }

    /// Where a node port published with
    /// [`StartOptions::with_published_port`](crate::provider::StartOptions::with_published_port)
    /// (`--publish`) is reached from this host: always on 127.0.0.1. `None` for a port not
    /// published.
    pub fn published_port(&self, node_port: u16) -> Option<SocketAddr> {
        match &self.origin {
            Origin::Kind { guard, .. } => guard.published().iter().find(|(n, _)| *n == node_port).map(|(_, a)| *a),
            _ => None,
        }
    }

    /// Every published node port and its address on this host.
    pub fn published_ports(&self) -> Vec<(u16, SocketAddr)> {
        match &self.origin {
            Origin::Kind { guard, .. } => guard.published().to_vec(),
            _ => Vec::new(),
        }
    }

    /// Directories a command run against this cluster (`exec`) gets first on `PATH`: the
    /// `docker` shim kind needs on this host (if any), the `kind` CLI's directory (kind), and
    /// the Kubernetes binaries' (kubectl).
    #[cfg(feature = "cli")]
    pub(crate) fn tool_dirs(&self) -> Vec<std::path::PathBuf> {
        let mut dirs = match &self.origin {
            Origin::Kind { guard, .. } => guard.cli().path_dirs(),
            _ => Vec::new(),
        };
        dirs.push(self.assets.dir().to_owned());
        dirs
    }
}
