//! Where a cluster comes from. [`start`] is the one place a provider is chosen: [`shared`],
//! every CLI command (`--provider`) and the tests call it.
//!
//! | provider | how | runs pods | host backends | client certs | etcd |
//! |---|---|---|---|---|---|
//! | [`Provider::Local`] (default) | etcd + kube-apiserver processes here ([`ControlPlane`](crate::ControlPlane)) | simulated, with nodes ([`ControlPlane::with_nodes`](crate::ControlPlane::with_nodes): kube-scheduler and kwok) | yes | yes | yes |
//! | [`Provider::Existing`] | `KUBECONFIG` / its current context | depends | if the API server runs on this host | no (impersonation) | no |
//! | [`Provider::Kind`] | the `kind` CLI | yes | no | no (impersonation) | no |
//! | [`Provider::K3s`] | `docker run rancher/k3s` | yes | no | no (impersonation) | no |
//!
//! Scenarios ask [`Cluster::lacks`] and skip, printing the reason, when a
//! [`Capability`](crate::Capability) is missing.

mod docker;
pub(crate) mod existing;
pub(crate) mod flags;
pub(crate) mod k3s;
pub(crate) mod kind;
pub(crate) mod local;
mod shared;

use std::path::{Path, PathBuf};

pub use flags::{APISERVER_ARGS_VAR, FEATURE_GATES_VAR};
pub use local::controllers::DEFAULT_CONTROLLERS;
pub use shared::{private, shared};

use crate::assets::KubeVersion;
use crate::cluster::{Cluster, Origin};
use crate::error::{Error, Result};
use crate::process::RunDir;

/// Where a cluster comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Provider {
    /// etcd and kube-apiserver started here (the default).
    #[default]
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
            other => Err(Error::UnknownProvider(other.to_owned())),
        }
    }
}

impl Provider {
    /// `KUBE_HARNESS_PROVIDER`, default [`Provider::Local`].
    ///
    /// # Errors
    /// [`Error::UnknownProvider`] for an unknown name.
    pub fn from_env() -> Result<Self> {
        std::env::var("KUBE_HARNESS_PROVIDER").unwrap_or_default().parse()
    }
}

/// Why `provider` cannot start a cluster of `version` on this machine, or `None` when it has
/// everything it needs: for kind a Docker daemon, the `kind` CLI and the node image present
/// locally; for k3s a daemon and the k3s image (the harness never pulls). Scenarios print the
/// reason and skip.
pub fn unavailable(provider: Provider, version: &KubeVersion) -> Option<String> {
    let ready = match provider {
        Provider::Local | Provider::Existing => Ok(()),
        Provider::Kind => docker::docker_available()
            .and_then(|()| kind::cli_unavailable().map_or(Ok(()), |why| Err(Error::Provider(why))))
            .and_then(|()| docker::image_present(&kind::node_image(version))),
        Provider::K3s => docker::docker_available().and_then(|()| {
            let image = k3s::image(version);
            docker::image_present(&image).map_err(|_| {
                Error::Provider(format!(
                    "no {image} image here and none can be pulled (kube-harness never pulls; `docker load` one where you have it)"
                ))
            })
        }),
    };
    ready.err().map(|e| e.to_string())
}

/// Whether `image` is in the local Docker engine.
pub(crate) fn docker_image_present(image: &str) -> bool {
    docker::image_present(image).is_ok()
}

/// How to start (or reach) a cluster, beside its provider and version.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct StartOptions {
    /// Local: wait until every `/readyz` check passes
    /// ([`ControlPlane::with_strict_readyz`](crate::ControlPlane::with_strict_readyz)); tools
    /// outside the process expect it.
    pub strict_readyz: bool,
    /// Local: attach to the cluster whose handle file this is (`kube-harness up --detach`)
    /// instead of starting one.
    pub attach: Option<PathBuf>,
    /// Existing: the kubeconfig (default `KUBECONFIG`, else `~/.kube/config`).
    pub kubeconfig: Option<PathBuf>,
    /// kind: the node image (default `KUBE_HARNESS_KIND_IMAGE`, else `kindest/node:v<version>`);
    /// it must be present locally.
    pub kind_image: Option<String>,
    /// Local: fake nodes (kube-scheduler and kwok;
    /// [`ControlPlane::with_nodes`](crate::ControlPlane::with_nodes)); default
    /// `KUBE_HARNESS_NODES`. kind and k3s have real nodes.
    pub nodes: Option<u32>,
    /// Local and kind: kube-apiserver flags (`name` without its `--`), after those of
    /// `KUBE_HARNESS_APISERVER_ARGS`.
    pub apiserver_args: Vec<(String, String)>,
    /// Local and kind: feature gates for every component, after those of
    /// `KUBE_HARNESS_FEATURE_GATES`. One the version does not know is refused before start.
    pub feature_gates: Vec<(String, bool)>,
    /// kind: `(host, node)` ports published on 127.0.0.1 (host 0: any free one), read back
    /// with [`Cluster::published_port`].
    pub published_ports: Vec<(u16, u16)>,
}

impl StartOptions {
    /// What the environment asks for: `KUBE_HARNESS_CLUSTER` (a handle file to attach to).
    pub fn from_env() -> Self {
        Self {
            attach: std::env::var_os("KUBE_HARNESS_CLUSTER")
                .filter(|v| !v.is_empty())
                .map(PathBuf::from),
            ..Self::default()
        }
    }

    /// Wait for every `/readyz` check (local provider).
    #[must_use]
    pub fn with_strict_readyz(mut self) -> Self {
        self.strict_readyz = true;
        self
    }

    /// Create kind clusters from this node image.
    #[must_use]
    pub fn with_kind_image(mut self, image: impl Into<String>) -> Self {
        self.kind_image = Some(image.into());
        self
    }

    /// Local: give the plane `count` fake nodes.
    #[must_use]
    pub fn with_nodes(mut self, count: u32) -> Self {
        self.nodes = Some(count);
        self
    }

    /// Local and kind: add a kube-apiserver flag (`name` without its `--`; `feature-gates` is
    /// read as gates).
    #[must_use]
    pub fn with_apiserver_arg(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.apiserver_args.push((name.into(), value.into()));
        self
    }

    /// Local and kind: switch a feature gate on or off for every component.
    #[must_use]
    pub fn with_feature_gate(mut self, name: impl Into<String>, enabled: bool) -> Self {
        self.feature_gates.push((name.into(), enabled));
        self
    }

    /// kind: publish the node's `node_port` on 127.0.0.1 at a free host port
    /// ([`Cluster::published_port`] says which).
    #[must_use]
    pub fn with_published_port(self, node_port: u16) -> Self {
        self.with_published_port_at(0, node_port)
    }

    /// kind: publish the node's `node_port` at `127.0.0.1:host_port` (refused before start if
    /// that port is taken).
    #[must_use]
    pub fn with_published_port_at(mut self, host_port: u16, node_port: u16) -> Self {
        self.published_ports.push((host_port, node_port));
        self
    }

    /// The flags and gates for providers that read them here (kind): the environment's, then
    /// these.
    fn apiserver_flags(&self) -> Result<flags::ApiServerFlags> {
        flags::ApiServerFlags::from_env()?.then(&self.apiserver_args, &self.feature_gates)
    }

    /// Reach the existing cluster of this kubeconfig.
    #[must_use]
    pub fn with_kubeconfig(mut self, path: impl Into<PathBuf>) -> Self {
        self.kubeconfig = Some(path.into());
        self
    }
}

/// Start (or reach) a cluster of `provider` running Kubernetes `version`. The version is what
/// local, kind and k3s start; an existing cluster runs whatever it runs.
///
/// # Errors
/// The provider's start errors: for the local one asset, spawn and readiness errors with log
/// tails; [`Error::Kubeconfig`] for an unusable kubeconfig; [`Error::Provider`] without
/// Docker, the `kind` CLI or a local image.
///
/// # Example
/// ```no_run
/// # async fn wrapper() -> Result<(), Box<dyn std::error::Error>> {
/// use kube_harness::provider::{Provider, StartOptions, start};
/// let cluster = start(Provider::Local, Default::default(), StartOptions::default()).await?;
/// # Ok(()) }
/// ```
pub async fn start(provider: Provider, version: KubeVersion, options: StartOptions) -> Result<Cluster> {
    match provider {
        Provider::Local | Provider::Existing | Provider::K3s if !options.published_ports.is_empty() => {
            Err(Error::Unsupported {
                what: "publishing node ports",
                provider: provider.to_string(),
                hint: "only kind clusters have a node container to publish from (the local plane's kwok nodes run no containers)",
            })
        }
        Provider::Local => match options.attach {
            Some(handle) => Cluster::attach(&handle).await,
            None => {
                let plane = crate::ControlPlane::builder().with_version(version);
                let plane = if options.strict_readyz {
                    plane.with_strict_readyz()
                } else {
                    plane
                };
                let plane = match options.nodes {
                    Some(count) => plane.with_nodes(count),
                    None => plane,
                };
                let plane = options
                    .apiserver_args
                    .iter()
                    .fold(plane, |p, (name, value)| p.with_apiserver_arg(name, value));
                let plane = options
                    .feature_gates
                    .iter()
                    .fold(plane, |p, (name, on)| p.with_feature_gate(name, *on));
                plane.start().await
            }
        },
        Provider::Existing | Provider::K3s if !options.apiserver_flags()?.is_empty() => Err(Error::Unsupported {
            what: "setting kube-apiserver flags or feature gates",
            provider: provider.to_string(),
            hint: "they are set where a cluster is started: use the local plane or kind",
        }),
        Provider::Existing => {
            let started = std::time::Instant::now();
            let mut cluster = existing::connect(options.kubeconfig.as_deref()).await?;
            cluster.timings.total = started.elapsed();
            Ok(cluster)
        }
        Provider::Kind => {
            let kind_options = kind::KindOptions {
                image: options.kind_image.clone(),
                flags: options.apiserver_flags()?,
                ports: options.published_ports.clone(),
            };
            check_gates_if_present(&kind_options.flags, version).await?;
            let create = move |dir: &Path, kubeconfig: &Path| {
                kind::KindCluster::create(&version, &kind_options, dir, kubeconfig)
            };
            let started = std::time::Instant::now();
            let mut cluster =
                start_from_tool(provider, create, |guard, run_dir| Origin::Kind { guard, run_dir }).await?;
            let created = started.elapsed();
            // Dropped (so deleted) when a wait fails.
            crate::cluster::workloads::wait_for_nodes_and_networking(&cluster, version).await?;
            cluster.timings.create = created;
            cluster.timings.nodes = started.elapsed().saturating_sub(created);
            cluster.timings.total = started.elapsed();
            Ok(cluster)
        }
        Provider::K3s => {
            let create = move |_: &Path, kubeconfig: &Path| k3s::K3sContainer::start(&version, kubeconfig);
            let started = std::time::Instant::now();
            let mut cluster =
                start_from_tool(provider, create, |guard, run_dir| Origin::K3s { guard, run_dir }).await?;
            cluster.timings.create = started.elapsed();
            cluster.timings.total = started.elapsed();
            Ok(cluster)
        }
    }
}

/// The gates checked against the version's kube-apiserver when one is here (cached or in an
/// assets directory); kind's own kube-apiserver refuses an unknown gate too, later.
async fn check_gates_if_present(flags: &flags::ApiServerFlags, version: KubeVersion) -> Result<()> {
    if flags.gates.is_empty() {
        return Ok(());
    }
    let gates = flags.clone();
    crate::process::blocking("feature gate check", move || {
        match crate::assets::Resolver::new(version).present()? {
            Some(assets) => {
                let known = flags::known_gates(&assets.kube_apiserver())?;
                flags::check_gates(&gates, &known, &version.to_string())
            }
            None => {
                eprintln!(
                    "kube-harness: feature gates not checked before the start: no kube-apiserver {version} in the cache (`kube-harness assets` makes one); kind's kube-apiserver refuses an unknown one"
                );
                Ok(())
            }
        }
    })
    .await
}

/// A cluster another tool creates (kind, k3s): a run directory, `create` on a blocking thread
/// (it writes the kubeconfig to the path it is given and returns the guard that deletes the
/// cluster on drop), then the cluster read from that kubeconfig.
async fn start_from_tool<G: Send + 'static>(
    provider: Provider,
    create: impl FnOnce(&Path, &Path) -> Result<G> + Send + 'static,
    origin: impl FnOnce(G, RunDir) -> Origin,
) -> Result<Cluster> {
    let run_dir = RunDir::create(&provider.to_string())?;
    let dir = run_dir.path().to_owned();
    let kubeconfig = dir.join(format!("{provider}-kubeconfig"));
    let guard = {
        let kubeconfig = kubeconfig.clone();
        crate::process::blocking("cluster creation", move || create(&dir, &kubeconfig)).await?
    };
    let config = existing::read(&kubeconfig, provider)?;
    existing::from_kubeconfig(config, run_dir, |run_dir| origin(guard, run_dir)).await
}
