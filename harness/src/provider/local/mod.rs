//! The local provider: real `etcd` and `kube-apiserver` processes on loopback, with client
//! certificate auth, RBAC, ServiceAccount tokens and the aggregation layer configured.
//!
//! ```no_run
//! # async fn wrapper() -> Result<(), Box<dyn std::error::Error>> {
//! use kube_harness::ControlPlane;
//! let cluster = ControlPlane::builder().start().await?;
//! let client = cluster.client().await?;
//! let alice = cluster.user("alice", ["devs"]).await?;
//! # Ok(()) }
//! ```

mod kubeconfig;
pub(crate) mod processes;
mod template;

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kube::config::Kubeconfig;
use tracing::Instrument;

pub use kubeconfig::CONTEXT;

use crate::assets::{Assets, KubeVersion, Resolver};
use crate::error::{Error, Result};
use crate::pki::{CertSpec, ClusterPki, KeyedCert};
use crate::process::{Child, RunDir};
use crate::provider::{Capability, Provider};

/// Builder for a local control plane.
#[derive(Debug, Clone)]
#[must_use = "call .start().await to start the control plane"]
pub struct ControlPlane {
    version: KubeVersion,
    assets_dir: Option<PathBuf>,
    start_timeout: Duration,
    apiserver_args: Vec<(String, String)>,
    strict_readyz: bool,
    etcd_template: bool,
}

/// `KUBE_HARNESS_K8S_VERSION` if set and valid (an invalid value is reported and ignored),
/// else [`crate::assets::DEFAULT_KUBERNETES_VERSION`].
pub(crate) fn version_from_env() -> KubeVersion {
    KubeVersion::from_env()
}

impl Default for ControlPlane {
    fn default() -> Self {
        Self {
            version: version_from_env(),
            assets_dir: None,
            start_timeout: Duration::from_secs(90),
            apiserver_args: Vec::new(),
            strict_readyz: false,
            etcd_template: true,
        }
    }
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
    /// The whole start, until the `default` namespace exists.
    pub total: Duration,
}

impl ControlPlane {
    /// Default settings: Kubernetes `KUBE_HARNESS_K8S_VERSION` if set, else
    /// [`crate::assets::DEFAULT_KUBERNETES_VERSION`]; binaries resolved as [`crate::assets`]
    /// describes; 90 s start timeout.
    pub fn builder() -> Self {
        Self::default()
    }

    /// The Kubernetes version to run.
    pub fn with_version(mut self, version: KubeVersion) -> Self {
        self.version = version;
        self
    }

    /// The Kubernetes version to run, parsed from `1.36.3`.
    ///
    /// # Errors
    /// [`Error::InvalidVersion`].
    pub fn with_version_str(self, version: &str) -> Result<Self> {
        Ok(self.with_version(KubeVersion::parse(version)?))
    }

    /// Use the binaries in `dir` instead of resolving them.
    pub fn with_assets_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.assets_dir = Some(dir.into());
        self
    }

    /// How long etcd and kube-apiserver may each take to become ready.
    pub fn with_start_timeout(mut self, timeout: Duration) -> Self {
        self.start_timeout = timeout;
        self
    }

    /// Add or override a kube-apiserver flag (`name` without the leading `--`).
    pub fn with_apiserver_arg(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.apiserver_args.push((name.into(), value.into()));
        self
    }

    /// Wait until every `/readyz` check passes, as tools outside the process expect (the CLI
    /// does this). By default, a cluster whose etcd was copied from the template is ready
    /// without the checks of the two post-start hooks that sleep a second before writing the
    /// bootstrap RBAC roles and PriorityClasses, which the copied store already holds; those
    /// checks then turn green about a second later.
    pub fn with_strict_readyz(mut self) -> Self {
        self.strict_readyz = true;
        self
    }

    /// Bootstrap from an empty etcd instead of a copy of the cached template (slower; for
    /// binaries that change from run to run, which would each leave a template behind).
    /// `KUBE_HARNESS_ETCD_TEMPLATE=0` does the same for every cluster.
    pub fn without_etcd_template(mut self) -> Self {
        self.etcd_template = false;
        self
    }

    /// Start etcd and kube-apiserver and wait until the API is ready.
    ///
    /// # Errors
    /// Asset errors ([`Error::GoMissing`], [`Error::Build`], …), [`Error::ExitedBeforeReady`]
    /// and [`Error::StartupTimeout`] with the tail of the failing component's log, and
    /// [`Error::Ports`] if free ports kept being taken.
    pub async fn start(self) -> Result<Cluster> {
        let total = Instant::now();
        let mut timings = StartupTimings::default();

        let assets = async {
            let t = Instant::now();
            let assets = match &self.assets_dir {
                Some(dir) => {
                    let dir = dir.clone();
                    Resolver::new(self.version)
                        .with_env(move |k: &str| {
                            (k == "KUBE_HARNESS_ASSETS").then(|| dir.to_string_lossy().into_owned())
                        })
                        .resolve_async()
                        .await?
                }
                None => Resolver::new(self.version).resolve_async().await?,
            };
            Ok::<_, Error>((assets, t.elapsed()))
        }
        .instrument(tracing::info_span!("assets", version = %self.version))
        .await?;
        timings.assets = assets.1;
        let assets = assets.0;

        let run_dir = RunDir::create("cluster")?;
        let pki_dir = run_dir.path().join("pki");
        let pki_task = tokio::task::spawn_blocking(move || {
            let t = Instant::now();
            ClusterPki::generate(&pki_dir).map(|p| (p, t.elapsed()))
        });
        let seed = if self.etcd_template && template::enabled() {
            let t = Instant::now();
            let seed = template::ensure(&assets, &self.version, &self.apiserver_args, self.start_timeout)
                .instrument(tracing::info_span!("etcd-template"))
                .await;
            timings.template = t.elapsed();
            seed
        } else {
            None
        };
        let etcd_started = Instant::now();
        let etcd = processes::start_etcd(&assets, run_dir.path(), seed.as_deref(), self.start_timeout)
            .instrument(tracing::info_span!("etcd"))
            .await?;
        timings.etcd = etcd_started.elapsed();
        let (pki, pki_time) = pki_task
            .instrument(tracing::info_span!("pki"))
            .await
            .map_err(|e| Error::Client(format!("certificate generation task failed: {e}").into()))??;
        timings.pki = pki_time;

        let apiserver_started = Instant::now();
        let apiserver = processes::start_apiserver(
            &assets,
            run_dir.path(),
            &pki,
            &etcd.url,
            &self.apiserver_args,
            seed.is_some() && !self.strict_readyz,
            self.start_timeout,
        )
        .instrument(tracing::info_span!("apiserver"))
        .await?;
        timings.apiserver = apiserver_started.elapsed();
        // Binaries from an environment directory are not checked against a manifest: trust
        // what kube-apiserver itself logs (`Version: v1.37.2`) at no extra cost.
        let log = std::fs::read_to_string(apiserver.child.log()).unwrap_or_default();
        if let Some(found) = log
            .lines()
            .find_map(|l| l.split("] Version: v").nth(1))
            .map(|v| v.trim().to_owned())
            && found != self.version.to_string()
        {
            return Err(Error::WrongVersion {
                binary: assets.kube_apiserver(),
                found,
                wanted: self.version.to_string(),
            });
        }

        let server = format!("https://127.0.0.1:{}", apiserver.port);
        let kubeconfig_path = run_dir.path().join("kubeconfig");
        let admin_kubeconfig = kubeconfig::kubeconfig(
            &server,
            pki.serving_ca.cert_pem(),
            crate::pki::ADMIN_USER,
            Some(&pki.admin),
            None,
        );
        kubeconfig::write(&admin_kubeconfig, &kubeconfig_path)?;

        let run_path = run_dir.path().to_owned();
        let mut cluster = Cluster {
            processes: Processes::Owned {
                apiserver: apiserver.child,
                etcd: etcd.child,
                _run_dir: run_dir,
            },
            info: ClusterInfo {
                server,
                etcd_url: etcd.url,
                version: self.version,
                kubeconfig: kubeconfig_path,
                run_dir: run_path,
                assets_dir: assets.dir().to_owned(),
            },
            admin_kubeconfig,
            server_ca_pem: pki.serving_ca.cert_pem().to_owned(),
            pki: Some(Arc::new(pki)),
            provider: Provider::Local,
            assets,
            timings: StartupTimings::default(),
        };
        cluster
            .wait_for_default_namespace(self.start_timeout)
            .instrument(tracing::info_span!("ready"))
            .await?;
        timings.total = total.elapsed();
        tracing::info!(?timings, server = %cluster.info.server, "control plane ready");
        cluster.timings = timings;
        Ok(cluster)
    }
}

/// Where a running cluster is: plain data, safe to share across threads, runtimes and
/// (serialised) processes.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct ClusterInfo {
    /// `https://127.0.0.1:<port>`.
    pub server: String,
    /// `http://127.0.0.1:<port>` of etcd (extension servers such as sample-apiserver store
    /// their objects there).
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

impl serde::Serialize for KubeVersion {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> serde::Deserialize<'de> for KubeVersion {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        KubeVersion::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// A running local control plane. Dropping it kills kube-apiserver, then etcd (their state is
/// thrown away, so there is nothing to wait a graceful shutdown for), and removes the run
/// directory.
///
/// A cluster attached to with [`Cluster::attach`] (one a detached `kube-harness up` runs) is
/// left running when dropped.
#[derive(Debug)]
pub struct Cluster {
    processes: Processes,
    provider: Provider,
    info: ClusterInfo,
    admin_kubeconfig: Kubeconfig,
    /// The CA that signed the API server's certificate, PEM.
    server_ca_pem: String,
    pki: Option<Arc<ClusterPki>>,
    assets: Assets,
    timings: StartupTimings,
}

#[derive(Debug)]
enum Processes {
    /// Started by this process, stopped with the cluster. Field order is drop order: the run
    /// directory goes after the processes are gone.
    Owned {
        apiserver: Child,
        etcd: Child,
        _run_dir: RunDir,
    },
    /// Started by another process, which keeps them.
    Attached(ClusterHandle),
    /// Someone else's cluster (existing, kind, k3s), reached through a kubeconfig. Field
    /// order is drop order: a kind cluster or k3s container is deleted, then the run
    /// directory.
    External {
        _guard: ExternalGuard,
        runs_pods: bool,
        _run_dir: RunDir,
    },
}

/// What deleting an external cluster takes (held for its `Drop`).
#[derive(Debug)]
#[allow(dead_code, reason = "the variants are held only for their Drop")]
enum ExternalGuard {
    /// Not ours: left alone.
    None,
    /// A kind cluster this process created.
    Kind(crate::provider::kind::KindCluster),
    /// A k3s container this process started.
    K3s(crate::provider::k3s::K3sContainer),
}

/// What another process needs to use a running cluster: written by `kube-harness up --detach`
/// as `cluster.json` in the run directory, read by [`Cluster::attach`] (and by [`crate::shared`]
/// when `KUBE_HARNESS_CLUSTER` names the file).
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct ClusterHandle {
    /// Where the cluster is.
    pub info: ClusterInfo,
    /// kube-apiserver's pid.
    pub apiserver_pid: u32,
    /// etcd's pid.
    pub etcd_pid: u32,
    /// The process that owns the cluster (stop it to stop the cluster).
    pub owner_pid: u32,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if let Processes::Owned { apiserver, etcd, .. } = &self.processes {
            apiserver.kill();
            etcd.kill();
        }
    }
}

impl Cluster {
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

    /// Where this cluster comes from.
    pub fn provider(&self) -> Provider {
        self.provider
    }

    /// Whether this cluster offers `capability` (see [`Cluster::lacks`]).
    pub fn has(&self, capability: Capability) -> bool {
        match capability {
            Capability::ClientCertificates => self.pki.is_some(),
            Capability::OwnsProcesses => matches!(self.processes, Processes::Owned { .. }),
            Capability::RunsPods => matches!(self.processes, Processes::External { runs_pods: true, .. }),
            Capability::HostBackends => match self.provider {
                Provider::Local => true,
                Provider::Existing => {
                    let host = self
                        .info
                        .server
                        .trim_start_matches("https://")
                        .rsplit_once(':')
                        .map_or("", |(h, _)| h);
                    matches!(host, "127.0.0.1" | "localhost" | "[::1]")
                }
                Provider::Kind | Provider::K3s => false,
            },
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
        match &self.processes {
            Processes::Owned { apiserver, etcd, .. } => vec![apiserver.pid(), etcd.pid()],
            Processes::Attached(h) => vec![h.apiserver_pid, h.etcd_pid],
            Processes::External { .. } => Vec::new(),
        }
    }

    /// The log file of kube-apiserver.
    pub fn apiserver_log(&self) -> PathBuf {
        self.info.run_dir.join(processes::APISERVER_LOG)
    }

    /// The log file of etcd.
    pub fn etcd_log(&self) -> PathBuf {
        self.info.run_dir.join(processes::ETCD_LOG)
    }

    /// Whether this process started the cluster (and stops it on drop), or attached to one
    /// another process runs.
    pub fn is_attached(&self) -> bool {
        matches!(self.processes, Processes::Attached(_))
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
            provider: Provider::Local,
            assets: Assets::attached(handle.info.assets_dir.clone()),
            timings: StartupTimings::default(),
            processes: Processes::Attached(handle),
        };
        cluster.check_alive()?;
        Ok(cluster)
    }

    /// A cluster someone else runs, reached through `kubeconfig` (default: the first file in
    /// `KUBECONFIG`, else `~/.kube/config`), current context. The harness creates only what a
    /// test asks for and deletes only that; dropping the `Cluster` leaves the cluster alone.
    /// Without the cluster's client CA, [`Cluster::user`] impersonates; targets whose backend
    /// needs `{{etcdUrl}}` get a private etcd.
    ///
    /// # Errors
    /// [`Error::Provider`] for an unreadable kubeconfig or one without a CA for its server;
    /// [`Error::Client`]/[`Error::Kube`] if the API server does not answer.
    pub async fn existing(kubeconfig: Option<&Path>) -> Result<Self> {
        let path = match kubeconfig {
            Some(p) => p.to_owned(),
            None => match std::env::var_os("KUBECONFIG").filter(|v| !v.is_empty()) {
                Some(v) => std::env::split_paths(&v)
                    .next()
                    .ok_or_else(|| Error::Provider("KUBECONFIG is empty".into()))?,
                None => {
                    let home =
                        std::env::var_os("HOME").ok_or_else(|| Error::Provider("no KUBECONFIG and no HOME".into()))?;
                    PathBuf::from(home).join(".kube").join("config")
                }
            },
        };
        let config = Kubeconfig::read_from(&path)
            .map_err(|e| Error::Provider(format!("cannot read kubeconfig {}: {e}", path.display())))?;
        let run_dir = RunDir::create("existing")?;
        Self::external(config, Provider::Existing, ExternalGuard::None, run_dir).await
    }

    /// A new kind cluster for `version` (deleted when the `Cluster` is dropped).
    ///
    /// # Errors
    /// [`Error::Provider`] without Docker or `kind`, or when `kind create cluster` fails.
    pub async fn kind(version: KubeVersion) -> Result<Self> {
        let run_dir = RunDir::create("kind")?;
        let (dir, kubeconfig) = (run_dir.path().to_owned(), run_dir.path().join("kind-kubeconfig"));
        let created = {
            let kubeconfig = kubeconfig.clone();
            tokio::task::spawn_blocking(move || crate::provider::kind::KindCluster::create(&version, &dir, &kubeconfig))
                .await
                .map_err(|e| Error::Provider(format!("kind task failed: {e}")))??
        };
        let config = Kubeconfig::read_from(&kubeconfig)
            .map_err(|e| Error::Provider(format!("kind wrote no usable kubeconfig: {e}")))?;
        Self::external(config, Provider::Kind, ExternalGuard::Kind(created), run_dir).await
    }

    /// A new k3s container for `version` (removed when the `Cluster` is dropped).
    ///
    /// # Errors
    /// [`Error::Provider`] without Docker, or when the container does not come up.
    pub async fn k3s(version: KubeVersion) -> Result<Self> {
        let run_dir = RunDir::create("k3s")?;
        let kubeconfig = run_dir.path().join("k3s-kubeconfig");
        let started = {
            let kubeconfig = kubeconfig.clone();
            tokio::task::spawn_blocking(move || crate::provider::k3s::K3sContainer::start(&version, &kubeconfig))
                .await
                .map_err(|e| Error::Provider(format!("k3s task failed: {e}")))??
        };
        let config = Kubeconfig::read_from(&kubeconfig)
            .map_err(|e| Error::Provider(format!("k3s wrote no usable kubeconfig: {e}")))?;
        Self::external(config, Provider::K3s, ExternalGuard::K3s(started), run_dir).await
    }

    async fn external(config: Kubeconfig, provider: Provider, guard: ExternalGuard, run_dir: RunDir) -> Result<Self> {
        use base64::Engine as _;
        let context_name = config
            .current_context
            .clone()
            .ok_or_else(|| Error::Provider("the kubeconfig has no current-context".into()))?;
        let context = config
            .contexts
            .iter()
            .find(|c| c.name == context_name)
            .and_then(|c| c.context.clone())
            .ok_or_else(|| Error::Provider(format!("the kubeconfig has no context {context_name:?}")))?;
        let named = config
            .clusters
            .iter()
            .find(|c| c.name == context.cluster)
            .and_then(|c| c.cluster.clone())
            .ok_or_else(|| Error::Provider(format!("the kubeconfig has no cluster {:?}", context.cluster)))?;
        let server = named
            .server
            .clone()
            .ok_or_else(|| Error::Provider(format!("cluster {:?} has no server", context.cluster)))?;
        let server_ca_pem = match (&named.certificate_authority_data, &named.certificate_authority) {
            (Some(data), _) => String::from_utf8(
                base64::engine::general_purpose::STANDARD
                    .decode(data.trim())
                    .map_err(|e| Error::Provider(format!("certificate-authority-data is not base64: {e}")))?,
            )
            .map_err(|e| Error::Provider(format!("certificate-authority-data is not PEM: {e}")))?,
            (None, Some(file)) => std::fs::read_to_string(file).map_err(Error::io("read", file))?,
            (None, None) => {
                return Err(Error::Provider(format!(
                    "cluster {:?} in the kubeconfig has no certificate-authority: kube-harness verifies the API server",
                    context.cluster
                )));
            }
        };
        let kubeconfig_path = run_dir.path().join("kubeconfig");
        kubeconfig::write(&config, &kubeconfig_path)?;
        let client = kubeconfig::client(config.clone()).await?;
        let reported = client.apiserver_version().await?.git_version;
        let plain = reported
            .trim_start_matches('v')
            .split(['+', '-'])
            .next()
            .unwrap_or_default()
            .to_owned();
        let version = KubeVersion::parse(&plain)?;
        let nodes = kube::Api::<k8s_openapi::api::core::v1::Node>::all(client)
            .list(&kube::api::ListParams::default().limit(1))
            .await
            .map(|l| !l.items.is_empty())
            .unwrap_or(false);
        let assets = match Resolver::new(version).resolve_async().await {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(error = %e, "no kubectl for {version}; commands that need it will fail");
                Assets::attached(PathBuf::new())
            }
        };
        Ok(Cluster {
            info: ClusterInfo {
                server,
                etcd_url: String::new(),
                version,
                kubeconfig: kubeconfig_path,
                run_dir: run_dir.path().to_owned(),
                assets_dir: assets.dir().to_owned(),
            },
            processes: Processes::External {
                _guard: guard,
                runs_pods: nodes,
                _run_dir: run_dir,
            },
            provider,
            admin_kubeconfig: config,
            server_ca_pem,
            pki: None,
            assets,
            timings: StartupTimings::default(),
        })
    }

    /// The handle another process needs to [`attach`](Cluster::attach) to this cluster, owned
    /// by this process.
    pub fn handle(&self) -> Option<ClusterHandle> {
        match &self.processes {
            Processes::Owned { apiserver, etcd, .. } => Some(ClusterHandle {
                info: self.info.clone(),
                apiserver_pid: apiserver.pid(),
                etcd_pid: etcd.pid(),
                owner_pid: std::process::id(),
            }),
            Processes::Attached(h) => Some(h.clone()),
            Processes::External { .. } => None,
        }
    }

    /// A client authenticated as the admin (`system:masters`). Build one per test: a kube
    /// `Client` belongs to the tokio runtime it was first used on.
    ///
    /// # Errors
    /// [`Error::Client`] if the client cannot be built.
    pub async fn client(&self) -> Result<kube::Client> {
        kubeconfig::client(self.admin_kubeconfig.clone()).await
    }

    /// Issue a client certificate for `name` in `groups` (CN = user, O = groups), signed by
    /// the cluster's client CA.
    ///
    /// # Errors
    /// [`Error::Pki`].
    pub fn issue_user_cert(
        &self,
        name: &str,
        groups: impl IntoIterator<Item = impl Into<String>>,
    ) -> Result<KeyedCert> {
        self.pki
            .as_ref()
            .ok_or_else(|| Error::Unsupported {
                what: "issuing client certificates",
                provider: self.provider.to_string(),
                hint: "use Cluster::user (impersonation there) or a ServiceAccount token",
            })?
            .client_ca
            .issue(&CertSpec::client(name, groups))
    }

    /// A kubeconfig for user `name` in `groups`, authenticated by a fresh client certificate.
    ///
    /// # Errors
    /// [`Error::Pki`].
    pub fn user_kubeconfig(
        &self,
        name: &str,
        groups: impl IntoIterator<Item = impl Into<String>>,
    ) -> Result<Kubeconfig> {
        let cert = self.issue_user_cert(name, groups)?;
        Ok(kubeconfig::kubeconfig(
            &self.info.server,
            &self.server_ca_pem,
            name,
            Some(&cert),
            None,
        ))
    }

    /// A kubeconfig that authenticates with a bearer token (a ServiceAccount token, say).
    pub fn token_kubeconfig(&self, token: &str) -> Kubeconfig {
        kubeconfig::kubeconfig(&self.info.server, &self.server_ca_pem, "token-user", None, Some(token))
    }

    /// A client for user `name` in `groups`, authenticated by a fresh client certificate
    /// (on providers whose client CA the harness does not hold: the admin impersonating
    /// them, which RBAC treats the same). With no RBAC bound, it gets 403 Forbidden for
    /// almost everything.
    ///
    /// # Errors
    /// [`Error::Pki`], [`Error::Client`].
    pub async fn user(&self, name: &str, groups: impl IntoIterator<Item = impl Into<String>>) -> Result<kube::Client> {
        if self.pki.is_none() {
            return self.impersonating(name, groups).await;
        }
        kubeconfig::client(self.user_kubeconfig(name, groups)?).await
    }

    /// A token for ServiceAccount `namespace/name` from the TokenRequest API (creating the
    /// ServiceAccount if it does not exist), valid for `expiration_seconds`.
    ///
    /// # Errors
    /// [`Error::Kube`], or [`Error::Fixture`] if the API returned no token.
    pub async fn service_account_token(&self, namespace: &str, name: &str, expiration_seconds: i64) -> Result<String> {
        use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
        use k8s_openapi::api::core::v1::ServiceAccount;
        let sas = kube::Api::<ServiceAccount>::namespaced(self.client().await?, namespace);
        if sas.get_opt(name).await?.is_none() {
            let sa = ServiceAccount {
                metadata: kube::api::ObjectMeta {
                    name: Some(name.to_owned()),
                    ..Default::default()
                },
                ..Default::default()
            };
            sas.create(&kube::api::PostParams::default(), &sa).await?;
        }
        let request = TokenRequest {
            spec: Some(TokenRequestSpec {
                expiration_seconds: Some(expiration_seconds),
                ..Default::default()
            }),
            ..Default::default()
        };
        sas.create_token_request(name, &kube::api::PostParams::default(), &request)
            .await?
            .status
            .and_then(|s| s.token)
            .ok_or_else(|| Error::Fixture(format!("TokenRequest for {namespace}/{name} returned no token")))
    }

    /// A client that authenticates with a bearer token (a ServiceAccount token from
    /// TokenRequest, say).
    ///
    /// # Errors
    /// [`Error::Client`].
    pub async fn token_client(&self, token: &str) -> Result<kube::Client> {
        kubeconfig::client(self.token_kubeconfig(token)).await
    }

    /// A client that authenticates as the admin and impersonates `user` in `groups`
    /// (`Impersonate-User` / `Impersonate-Group`), as `kubectl --as` does.
    ///
    /// # Errors
    /// [`Error::Client`].
    pub async fn impersonating(
        &self,
        user: &str,
        groups: impl IntoIterator<Item = impl Into<String>>,
    ) -> Result<kube::Client> {
        let groups: Vec<String> = groups.into_iter().map(Into::into).collect();
        let mut config = self.admin_kubeconfig.clone();
        for named in &mut config.auth_infos {
            if let Some(auth) = named.auth_info.as_mut() {
                auth.impersonate = Some(user.to_owned());
                auth.impersonate_groups = Some(groups.clone());
            }
        }
        kubeconfig::client(config).await
    }

    /// Write the admin kubeconfig to `path` as well (mode 0600).
    ///
    /// # Errors
    /// [`Error::Io`], [`Error::Json`].
    pub fn write_kubeconfig(&self, path: &Path) -> Result<()> {
        kubeconfig::write(&self.admin_kubeconfig, path)
    }

    /// A reqwest client that trusts the API server and authenticates with `cert` (or with
    /// nothing, for bearer tokens), as curl would.
    ///
    /// # Errors
    /// [`Error::Client`].
    pub fn http_client(&self, cert: Option<&KeyedCert>) -> Result<reqwest::Client> {
        let tls = crate::pki::rustls_client_config(&self.server_ca_pem, cert)?;
        reqwest::Client::builder()
            .tls_backend_preconfigured(tls)
            .build()
            .map_err(|e| Error::Client(Box::new(e)))
    }

    /// Fail fast if etcd or kube-apiserver has died.
    ///
    /// # Errors
    /// [`Error::Exited`] naming the dead component, with its log tail.
    pub fn check_alive(&self) -> Result<()> {
        match &self.processes {
            Processes::Owned { apiserver, etcd, .. } => {
                for child in [etcd, apiserver] {
                    if let Some(status) = child.try_exit() {
                        return Err(child.exited_in_use_error(status));
                    }
                }
            }
            Processes::External { .. } => {}
            Processes::Attached(h) => {
                for (component, pid, log) in [
                    ("etcd", h.etcd_pid, self.etcd_log()),
                    ("kube-apiserver", h.apiserver_pid, self.apiserver_log()),
                ] {
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
    /// reproducing a start by hand, as `scripts/bench` does for its bare baseline).
    pub fn command_lines(&self) -> Vec<(&'static str, Vec<OsString>)> {
        match &self.processes {
            Processes::Owned { apiserver, etcd, .. } => [etcd, apiserver]
                .iter()
                .map(|c| (c.component(), c.command().to_vec()))
                .collect(),
            Processes::Attached(h) => [("etcd", h.etcd_pid), ("kube-apiserver", h.apiserver_pid)]
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
            Processes::External { .. } => Vec::new(),
        }
    }

    /// Stop the cluster now (kube-apiserver, then etcd) and remove its run directory.
    /// Equivalent to dropping it.
    pub fn stop(self) {
        drop(self);
    }

    /// Wait until every `/readyz` check passes (see [`ControlPlane::with_strict_readyz`]:
    /// by default a cluster is handed out about a second before the two bootstrap hooks
    /// report done).
    ///
    /// # Errors
    /// [`Error::WaitTimeout`], or the exit of a control-plane process.
    pub async fn wait_readyz(&self, timeout: Duration) -> Result<()> {
        let client = self.client().await?;
        let start = Instant::now();
        loop {
            self.check_alive()?;
            let request = http::Request::get("/readyz")
                .body(Vec::new())
                .map_err(|e| Error::Client(e.to_string().into()))?;
            if client.request_text(request).await.is_ok_and(|body| body == "ok") {
                return Ok(());
            }
            if start.elapsed() > timeout {
                return Err(Error::WaitTimeout {
                    what: "kube-apiserver's /readyz to pass every check".into(),
                    timeout,
                });
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Ready for tests: the `default` namespace exists, and so does the
    /// `kube-system/extension-apiserver-authentication` ConfigMap that extension servers read
    /// their client and requestheader CAs from at start (its controller writes it just after
    /// its readiness check passes).
    async fn wait_for_default_namespace(&self, timeout: Duration) -> Result<()> {
        use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
        let client = self.client().await?;
        let namespaces: kube::Api<Namespace> = kube::Api::all(client.clone());
        let configmaps: kube::Api<ConfigMap> = kube::Api::namespaced(client, "kube-system");
        let start = Instant::now();
        let mut delay = Duration::from_millis(5);
        loop {
            self.check_alive()?;
            if matches!(namespaces.get_opt("default").await, Ok(Some(_)))
                && matches!(
                    configmaps.get_opt("extension-apiserver-authentication").await,
                    Ok(Some(_))
                )
            {
                return Ok(());
            }
            if start.elapsed() > timeout {
                return Err(Error::WaitTimeout {
                    what: "namespace \"default\" and ConfigMap kube-system/extension-apiserver-authentication".into(),
                    timeout,
                });
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_millis(50));
        }
    }
}

/// Collect `--name=value` pairs, later ones overriding earlier ones.
fn flags(pairs: impl IntoIterator<Item = (String, String)>) -> Vec<OsString> {
    let mut map: Vec<(String, String)> = Vec::new();
    for (k, v) in pairs {
        match map.iter_mut().find(|(name, _)| *name == k) {
            Some(entry) => entry.1 = v,
            None => map.push((k, v)),
        }
    }
    map.into_iter()
        .map(|(k, v)| OsString::from(format!("--{k}={v}")))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn later_flags_override_earlier_ones() {
        let out = flags([
            ("a".into(), "1".into()),
            ("b".into(), "2".into()),
            ("a".into(), "3".into()),
        ]);
        assert_eq!(out, vec![OsString::from("--a=3"), OsString::from("--b=2")]);
    }
}
