//! The local provider: real `etcd` and `kube-apiserver` processes on loopback, with client
//! certificate auth, RBAC, ServiceAccount tokens and the aggregation layer configured.
//!
//! ```no_run
//! # async fn wrapper() -> Result<(), Box<dyn std::error::Error>> {
//! use kube_harness::ControlPlane;
//! let cluster = ControlPlane::builder().start().await?;
//! let client = cluster.client().await?;
//! let alice = cluster.user("alice", &["devs"]).await?;
//! # Ok(()) }
//! ```

pub mod controllers;
pub mod nodes;
pub(crate) mod processes;
mod template;

use std::ffi::OsString;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tracing::Instrument;

pub(crate) use processes::{APISERVER_LOG, ETCD_LOG};

use super::flags::ApiServerFlags;
use crate::assets::{KubeVersion, Resolver};
use crate::cluster::{Cluster, ClusterInfo, Origin, StartupTimings, kubeconfig};
use crate::error::{Error, Result};
use crate::pki::{CertSpec, ClusterPki, write_private};
use crate::process::RunDir;

/// Builder for a local control plane.
#[derive(Debug, Clone)]
#[must_use = "call .start().await to start the control plane"]
pub struct ControlPlane {
    /// The version to run, or why `KUBE_HARNESS_K8S_VERSION` names none (reported by
    /// `start` unless a version is set explicitly).
    version: std::result::Result<KubeVersion, String>,
    assets_dir: Option<PathBuf>,
    start_timeout: Duration,
    /// Flags and feature gates given to the builder, after the environment's.
    apiserver_args: Vec<(String, String)>,
    feature_gates: Vec<(String, bool)>,
    /// `KUBE_HARNESS_APISERVER_ARGS` and `KUBE_HARNESS_FEATURE_GATES`, or why they are unusable.
    env_flags: std::result::Result<ApiServerFlags, String>,
    strict_readyz: bool,
    etcd_template: bool,
    /// kube-controller-manager's controllers (`None`: it does not run), or why
    /// `KUBE_HARNESS_CONTROLLERS` names none.
    controllers: std::result::Result<Option<Vec<String>>, String>,
    /// How many fake nodes (kube-scheduler and kwok run when there are any), or why
    /// `KUBE_HARNESS_NODES` names no number.
    nodes: std::result::Result<u32, String>,
}

impl Default for ControlPlane {
    fn default() -> Self {
        Self {
            version: KubeVersion::from_env().map_err(|e| e.to_string()),
            assets_dir: None,
            start_timeout: Duration::from_secs(90),
            apiserver_args: Vec::new(),
            feature_gates: Vec::new(),
            env_flags: ApiServerFlags::from_env().map_err(|e| e.to_string()),
            strict_readyz: false,
            etcd_template: true,
            controllers: controllers::from_env(),
            nodes: nodes::from_env(),
        }
    }
}

impl ControlPlane {
    /// Default settings: Kubernetes `KUBE_HARNESS_K8S_VERSION` if set, else
    /// [`crate::assets::DEFAULT_KUBERNETES_VERSION`]; binaries resolved as [`crate::assets`]
    /// describes; 90 s start timeout.
    ///
    /// ```no_run
    /// # async fn wrapper() -> kube_harness::Result<()> {
    /// let cluster = kube_harness::ControlPlane::builder()
    ///     .with_version_str("1.36.3")?
    ///     .with_apiserver_arg("feature-gates", "MutatingAdmissionPolicy=true")
    ///     .start()
    ///     .await?;
    /// println!("{} at {}", cluster.info().version, cluster.server_url());
    /// cluster.stop(); // or drop it
    /// # Ok(()) }
    /// ```
    pub fn builder() -> Self {
        Self::default()
    }

    /// The Kubernetes version to run.
    pub fn with_version(mut self, version: KubeVersion) -> Self {
        self.version = Ok(version);
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

    /// Add or override a kube-apiserver flag (`name` without the leading `--`), after those of
    /// `KUBE_HARNESS_APISERVER_ARGS` (whitespace-separated `NAME=VALUE` items). `feature-gates`
    /// is read as [`with_feature_gate`](Self::with_feature_gate)s.
    pub fn with_apiserver_arg(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.apiserver_args.push((name.into(), value.into()));
        self
    }

    /// Switch a feature gate on or off for kube-apiserver, kube-controller-manager and
    /// kube-scheduler alike, after those of `KUBE_HARNESS_FEATURE_GATES` (`A=false,B=true`).
    /// A gate the version's kube-apiserver does not list is refused by
    /// [`start`](Self::start) before anything runs ([`Error::UnknownFeatureGate`]).
    ///
    /// ```no_run
    /// # async fn wrapper() -> kube_harness::Result<()> {
    /// let cluster = kube_harness::ControlPlane::builder()
    ///     .with_feature_gate("WatchListCompression", false)
    ///     .start()
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub fn with_feature_gate(mut self, name: impl Into<String>, enabled: bool) -> Self {
        self.feature_gates.push((name.into(), enabled));
        self
    }

    /// The flags and gates asked for: the environment's, then the builder's.
    fn apiserver_flags(&self) -> Result<ApiServerFlags> {
        (self.env_flags.clone().map_err(Error::Provider)?).then(&self.apiserver_args, &self.feature_gates)
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

    /// The resolver for `version`: `with_assets_dir`'s directory in place of the
    /// environment's asset directories, the rest of the environment as it is.
    fn resolver(&self, version: KubeVersion) -> Resolver {
        match &self.assets_dir {
            Some(dir) => {
                let dir = dir.clone();
                Resolver::new(version).with_env(move |k: &str| match k {
                    "KUBE_HARNESS_ASSETS" => Some(dir.to_string_lossy().into_owned()),
                    "KUBEBUILDER_ASSETS" => None,
                    _ => std::env::var(k).ok(),
                })
            }
            None => Resolver::new(version),
        }
    }

    /// Run no kube-controller-manager (as envtest): deleted namespaces stay `Terminating`,
    /// nothing is garbage-collected, namespaces get no `default` ServiceAccount (and the
    /// ServiceAccount admission plugin is off). `KUBE_HARNESS_CONTROLLERS=0` does the same.
    pub fn without_controller_manager(mut self) -> Self {
        self.controllers = Ok(None);
        self
    }

    /// Run kube-controller-manager with exactly these controllers (its `--controllers`
    /// names, such as `namespace-controller`; `default` stands for
    /// [`crate::provider::DEFAULT_CONTROLLERS`], `-name` removes one from it).
    pub fn with_controllers(mut self, names: impl IntoIterator<Item = impl Into<String>>) -> Self {
        let mut list = Vec::new();
        for name in names.into_iter().map(Into::into) {
            if name == "default" {
                list.extend(controllers::DEFAULT_CONTROLLERS.iter().map(|c| (*c).to_owned()));
            } else {
                list.push(name);
            }
        }
        self.controllers = Ok(Some(list));
        self
    }

    /// Give the plane `count` fake nodes (up to 100; 0: none, the default
    /// unless `KUBE_HARNESS_NODES` says otherwise): kube-scheduler binds Pods to them and
    /// kwok (sigs.k8s.io/kwok) marks the bound Pods Running and Ready at once, completes Job
    /// Pods and finishes deletions, so Deployments become Available, StatefulSets ready and
    /// Jobs complete. [`Capability::RunsPods`](crate::Capability::RunsPods) then holds. No
    /// container runs: no logs, exec, port-forward or network. Both are built with Go once
    /// and cached, as kube-controller-manager is.
    ///
    /// ```no_run
    /// # async fn wrapper() -> kube_harness::Result<()> {
    /// let cluster = kube_harness::ControlPlane::builder().with_nodes(2).start().await?;
    /// assert!(cluster.has(kube_harness::Capability::RunsPods));
    /// # Ok(()) }
    /// ```
    pub fn with_nodes(mut self, count: u32) -> Self {
        self.nodes = if count <= nodes::MAX_NODES {
            Ok(count)
        } else {
            Err(format!("with_nodes({count}): at most {} nodes", nodes::MAX_NODES))
        };
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
        let version = self
            .version
            .clone()
            .map_err(|e| Error::Provider(format!("{e} (or set a version with ControlPlane::with_version)")))?;

        let assets = async {
            let t = Instant::now();
            let assets = self.resolver(version).resolve_async().await?;
            Ok::<_, Error>((assets, t.elapsed()))
        }
        .instrument(tracing::info_span!("assets", version = %version))
        .await?;
        timings.assets = assets.1;
        let assets = assets.0;
        let flags = self.apiserver_flags()?;
        let mut controllers = self.controllers.clone().map_err(Error::Provider)?;
        let node_count = self.nodes.clone().map_err(Error::Provider)?;
        if node_count > 0 {
            // A new Node is tainted not-ready (TaintNodesByCondition) until this controller sees
            // it Ready; it also evicts Pods from nodes whose kwok stops renewing their Leases.
            match controllers.as_mut() {
                Some(list) if !list.iter().any(|c| c == nodes::NODE_LIFECYCLE_CONTROLLER) => {
                    list.push(nodes::NODE_LIFECYCLE_CONTROLLER.to_owned());
                }
                Some(_) => {}
                None => {
                    return Err(Error::Provider(format!(
                        "{node_count} node(s) asked for without kube-controller-manager: its {} lifts the not-ready taint of a Node kwok reports Ready, so nothing could schedule (drop KUBE_HARNESS_CONTROLLERS=0 or without_controller_manager)",
                        nodes::NODE_LIFECYCLE_CONTROLLER
                    )));
                }
            }
        }
        let controller_manager = match controllers {
            Some(list) => {
                let resolver = self.resolver(version);
                let found = crate::process::blocking("kube-controller-manager", move || {
                    resolver.component("kube-controller-manager")
                })
                .await;
                match found {
                    Ok(binary) => Some((binary, list)),
                    // Binaries from an envtest directory and no Go: run as envtest does.
                    Err(e @ Error::GoMissing { .. }) => {
                        eprintln!("kube-harness: running without kube-controller-manager: {e}");
                        None
                    }
                    Err(e) => return Err(e),
                }
            }
            None => None,
        };
        let with_controllers = controller_manager.as_ref().map(|(b, l)| (b.as_path(), l.as_slice()));
        let node_binaries = if node_count > 0 {
            let resolver = self.resolver(version);
            Some(crate::process::blocking("kube-scheduler and kwok", move || resolver.node_binaries()).await?)
        } else {
            None
        };

        // Each component gets the gates it knows; one none of them knows is refused here,
        // before anything runs.
        let (controller_gates, scheduler_gates, apiserver_args) = {
            let mut binaries = vec![assets.kube_apiserver()];
            binaries.extend(with_controllers.map(|(binary, _)| binary.to_owned()));
            binaries.extend(node_binaries.as_ref().map(|b| b.scheduler.clone()));
            let asked = flags.clone();
            let mut gates = crate::process::blocking("feature gate check", move || {
                super::flags::gates_by_component(&asked, &binaries, &version.to_string())
            })
            .await?
            .into_iter();
            let apiserver_gates = gates.next().flatten();
            let controller_gates = with_controllers.and_then(|_| gates.next().flatten());
            let scheduler_gates = node_binaries.as_ref().and_then(|_| gates.next().flatten());
            let mut args = flags.args.clone();
            args.extend(apiserver_gates.map(|g| ("feature-gates".to_owned(), g)));
            (controller_gates, scheduler_gates, args)
        };
        let run_dir = RunDir::create("cluster")?;
        let pki_dir = run_dir.path().join("pki");
        let pki_task = tokio::task::spawn_blocking(move || {
            let t = Instant::now();
            ClusterPki::generate(&pki_dir).map(|p| (p, t.elapsed()))
        });
        let seed = if self.etcd_template && template::enabled() {
            let t = Instant::now();
            let controllers = with_controllers.map(|(binary, list)| (binary, list, controller_gates.as_deref()));
            let seed = template::ensure(&assets, &version, &apiserver_args, controllers, self.start_timeout)
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
            .map_err(|source| Error::Task {
                what: "certificate generation",
                source,
            })??;
        timings.pki = pki_time;

        let apiserver_started = Instant::now();
        let apiserver = processes::start_apiserver(
            &assets,
            run_dir.path(),
            &pki,
            &etcd.url,
            &apiserver_args,
            processes::Mode {
                skip_bootstrap_hooks: seed.is_some() && !self.strict_readyz,
                service_account_admission: with_controllers.is_some(),
            },
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
            && found != version.to_string()
        {
            return Err(Error::WrongVersion {
                binary: assets.kube_apiserver(),
                found,
                wanted: version.to_string(),
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

        // Not waited for: a test that needs a controller waits for it.
        let controller_manager = match with_controllers {
            Some((binary, list)) => Some(Box::new(
                controllers::spawn(binary, run_dir.path(), &pki, &server, list, controller_gates.as_deref())
                    .instrument(tracing::info_span!("kube-controller-manager"))
                    .await?,
            )),
            None => None,
        };
        let nodes = match &node_binaries {
            Some(binaries) => {
                let client = kubeconfig::client(admin_kubeconfig.clone()).await?;
                let started = Instant::now();
                nodes::create_nodes(&client, node_count).await?;
                let running = nodes::spawn(
                    binaries,
                    run_dir.path(),
                    &pki,
                    &server,
                    node_count,
                    scheduler_gates.as_deref(),
                )
                .instrument(tracing::info_span!("nodes"))
                .await?;
                nodes::wait_ready(&client, &running.kwok, node_count, self.start_timeout).await?;
                timings.nodes = started.elapsed();
                Some(Box::new(running))
            }
            None => None,
        };
        let run_path = run_dir.path().to_owned();
        let mut cluster = Cluster {
            origin: Origin::Local {
                controller_manager,
                nodes,
                apiserver: apiserver.child,
                etcd: etcd.child,
                run_dir,
            },
            info: ClusterInfo {
                server,
                etcd_url: etcd.url,
                version,
                kubeconfig: kubeconfig_path,
                run_dir: run_path,
                assets_dir: assets.dir().to_owned(),
            },
            admin_kubeconfig,
            server_ca_pem: pki.serving_ca.cert_pem().to_owned(),
            pki: Some(Arc::new(pki)),
            assets,
            timings: StartupTimings::default(),
            runs_pods: node_count > 0,
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

/// A client certificate and kubeconfig for `user` in `groups`, in `dir` (0700).
pub(super) fn identity(dir: &Path, pki: &ClusterPki, server: &str, user: &str, groups: Vec<String>) -> Result<PathBuf> {
    std::fs::create_dir_all(dir).map_err(Error::io("create directory", dir))?;
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(Error::io("chmod 0700", dir))?;
    }
    let cert = pki.client_ca.issue(&CertSpec::client(user, groups))?;
    let path = dir.join("kubeconfig");
    let config = kubeconfig::kubeconfig(server, pki.serving_ca.cert_pem(), user, Some(&cert), None);
    kubeconfig::write(&config, &path)?;
    Ok(path)
}

/// The flags every control-plane component with its own identity and a secure port shares:
/// its kubeconfig (also for delegated authentication and authorization), `127.0.0.1` and a
/// free port with a serving certificate from the cluster's serving CA (written to `dir`),
/// leader election and profiling off, a client rate for a test's pace, the cluster's feature
/// gates. The port, for probing it.
pub(super) fn secure_serving(
    dir: &Path,
    pki: &ClusterPki,
    kubeconfig: &Path,
    component: &'static str,
    feature_gates: Option<&str>,
) -> Result<(Vec<(&'static str, String)>, u16)> {
    let serving = pki
        .serving_ca
        .issue(&CertSpec::serving(["localhost"], [IpAddr::from([127, 0, 0, 1])]))?;
    let (tls_crt, tls_key) = (dir.join("serving.crt"), dir.join("serving.key"));
    write_private(&tls_crt, serving.cert_pem.as_bytes())?;
    write_private(&tls_key, serving.key_pem.as_bytes())?;
    let port = crate::process::free_port(component)?;
    let s = |p: &Path| p.to_string_lossy().into_owned();
    let kc = s(kubeconfig);
    let mut pairs = vec![
        ("kubeconfig", kc.clone()),
        ("authentication-kubeconfig", kc.clone()),
        ("authorization-kubeconfig", kc),
        ("bind-address", "127.0.0.1".to_owned()),
        ("secure-port", port.to_string()),
        ("tls-cert-file", s(&tls_crt)),
        ("tls-private-key-file", s(&tls_key)),
        ("leader-elect", "false".to_owned()),
        // The defaults suit a cluster of thousands of objects; a test's few are handled at once.
        ("kube-api-qps", "200".to_owned()),
        ("kube-api-burst", "400".to_owned()),
        ("profiling", "false".to_owned()),
    ];
    if let Some(gates) = feature_gates {
        pairs.push(("feature-gates", gates.to_owned()));
    }
    Ok((pairs, port))
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
