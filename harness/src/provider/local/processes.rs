//! Starting etcd and kube-apiserver, retrying with new ports when a port was taken between
//! choosing it and the child binding it.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::flags;
use crate::assets::Assets;
use crate::error::{Error, Result};
use crate::pki::{ClusterPki, FRONT_PROXY_CLIENT_CN, files};
use crate::process::{Child, ChildSpec, free_port, probe_client};
use crate::wait::{Backoff, Probe, Readiness};

const PORT_ATTEMPTS: u32 = 4;
/// kube-apiserver's log, in the run directory.
pub(crate) const APISERVER_LOG: &str = "kube-apiserver.log";
/// etcd's log, in the run directory.
pub(crate) const ETCD_LOG: &str = "etcd.log";

pub(crate) struct Started {
    pub child: Child,
    pub url: String,
    pub port: u16,
    /// etcd's data directory (empty for kube-apiserver).
    pub data: PathBuf,
}

fn port_clash(err: &Error) -> bool {
    match err {
        Error::ExitedBeforeReady { tail, .. } | Error::StartupTimeout { tail, .. } => {
            tail.contains("address already in use")
        }
        // The port answered, but from someone else's process.
        Error::Ports { attempts: 1, .. } => true,
        _ => false,
    }
}

/// Run `attempt` with fresh ports until it does not fail on a port clash.
async fn with_port_retries<F, Fut>(component: &'static str, mut attempt: F) -> Result<Started>
where
    F: FnMut(u32) -> Fut,
    Fut: std::future::Future<Output = Result<Started>>,
{
    let mut last = String::new();
    for n in 0..PORT_ATTEMPTS {
        match attempt(n).await {
            Err(e) if port_clash(&e) => {
                tracing::warn!(
                    component,
                    attempt = n,
                    "port taken before the child bound it; retrying with new ports"
                );
                last = e.to_string();
            }
            other => return other,
        }
    }
    Err(Error::Ports {
        component,
        attempts: PORT_ATTEMPTS,
        detail: last,
    })
}

/// Start etcd; with `seed`, its data directory starts as a copy of that template.
pub(crate) async fn start_etcd(
    assets: &Assets,
    run_dir: &Path,
    seed: Option<&Path>,
    timeout: Duration,
) -> Result<Started> {
    let probe_client = probe_client("", None)?;
    with_port_retries("etcd", |attempt| {
        let probe_client = probe_client.clone();
        async move {
            let client_port = free_port("etcd")?;
            let peer_port = free_port("etcd")?;
            let url = format!("http://127.0.0.1:{client_port}");
            let peer = format!("http://127.0.0.1:{peer_port}");
            let data = run_dir.join(format!("etcd-data-{attempt}"));
            if let Some(seed) = seed {
                let (seed, to) = (seed.to_owned(), data.clone());
                crate::process::blocking("etcd template copy", move || super::template::copy_dir(&seed, &to)).await?;
            }
            let args = flags([
                ("name".into(), "default".into()),
                ("data-dir".into(), data.to_string_lossy().into_owned()),
                ("listen-client-urls".into(), url.clone()),
                ("advertise-client-urls".into(), url.clone()),
                ("listen-peer-urls".into(), peer.clone()),
                ("initial-advertise-peer-urls".into(), peer.clone()),
                ("initial-cluster".into(), format!("default={peer}")),
                ("unsafe-no-fsync".into(), "true".into()),
                // A single member elects itself after the election timeout (randomised up to
                // twice it); with the defaults (100 ms ticks, 1 s) that cost 0.1–0.9 s per start.
                ("heartbeat-interval".into(), "10".into()),
                ("election-timeout".into(), "100".into()),
                ("log-level".into(), "warn".into()),
            ]);
            let spec = ChildSpec {
                args,
                cwd: Some(run_dir.to_owned()),
                readiness: Readiness::Http {
                    url: format!("{url}/health"),
                    client: probe_client.clone(),
                    body: Some("\"health\":\"true\"".into()),
                },
                ..ChildSpec::new("etcd", assets.etcd(), run_dir.join(ETCD_LOG))
            };
            let child = Child::start(&spec, timeout).await?;
            // etcd's health endpoint has no authentication: when another process's etcd took
            // the port first, the probe above was answered by that one while ours failed to
            // bind. Only go on once the port is ours (or report the clash, which is retried).
            crate::wait::poll(
                Duration::from_secs(5),
                Backoff::every_millis(5),
                || async {
                    if let Some(status) = child.try_exit() {
                        return Err(child.exited_error(status));
                    }
                    Ok(if crate::process::listening_ports(child.pid()).contains(&client_port) {
                        Probe::Ready(())
                    } else {
                        Probe::NotYet(String::new())
                    })
                },
                |_| Error::Ports {
                    component: "etcd",
                    attempts: 1,
                    detail: format!("127.0.0.1:{client_port} answers, but not from etcd pid {}", child.pid()),
                },
            )
            .await?;
            Ok(Started {
                child,
                url,
                port: client_port,
                data,
            })
        }
    })
    .await
}

/// The Go garbage collector's target for kube-apiserver. At the default (`GOGC=100`) it
/// collects over and over while start-up builds its API and OpenAPI tables; at 400 a start
/// takes about a quarter less CPU (0.85 → 0.63 s of CPU by ready, read from /proc, mean of 5 starts)
/// for about 80 MB more memory, and the heap target still follows the live heap, so a busy
/// cluster cannot run away. A `GOGC` or `GOMEMLIMIT` in the environment is left to decide.
const APISERVER_GOGC: &str = "400";

fn go_gc_env() -> Vec<(OsString, OsString)> {
    if std::env::var_os("GOGC").is_some() || std::env::var_os("GOMEMLIMIT").is_some() {
        return Vec::new();
    }
    vec![("GOGC".into(), APISERVER_GOGC.into())]
}

/// How a kube-apiserver is run, beyond its flags.
#[derive(Debug, Clone, Copy)]
pub(super) struct Mode {
    /// Ready without the two bootstrap hooks' checks (a store copied from the template).
    pub skip_bootstrap_hooks: bool,
    /// The ServiceAccount admission plugin on (kube-controller-manager makes the accounts).
    pub service_account_admission: bool,
}

pub(super) async fn start_apiserver(
    assets: &Assets,
    run_dir: &Path,
    pki: &ClusterPki,
    etcd_url: &str,
    extra: &[(String, String)],
    mode: Mode,
    timeout: Duration,
) -> Result<Started> {
    let Mode {
        skip_bootstrap_hooks,
        service_account_admission,
    } = mode;
    // Two post-start hooks (`rbac/bootstrap-roles`, `scheduling/bootstrap-system-priority-
    // classes`) call `wait.Poll(1s, …)`, which sleeps a full second before its first attempt
    // to write the bootstrap RBAC objects and system PriorityClasses. On a store copied from
    // the template those objects exist already (made by the same binary with the same flags),
    // so their two checks are excluded; every other readiness check still counts, and the
    // hooks still run and find nothing to change.
    let readyz = if skip_bootstrap_hooks {
        "readyz?exclude=poststarthook/rbac/bootstrap-roles\
         &exclude=poststarthook/scheduling/bootstrap-system-priority-classes"
    } else {
        "readyz"
    };
    let probe_client = probe_client(pki.serving_ca.cert_pem(), Some(&pki.admin))?;
    let p = |name: &str| pki.path(name).to_string_lossy().into_owned();
    with_port_retries("kube-apiserver", |_attempt| {
        let probe_client = probe_client.clone();
        async move {
            let port = free_port("kube-apiserver")?;
            let url = format!("https://127.0.0.1:{port}");
            let mut pairs: Vec<(String, String)> = [
                ("etcd-servers", etcd_url.to_owned()),
                ("bind-address", "127.0.0.1".into()),
                ("advertise-address", "127.0.0.1".into()),
                // The lease reconciler refuses a loopback advertise address ("may not be in the
                // loopback range"); with no kube-proxy the `kubernetes` Endpoints are unused.
                ("endpoint-reconciler-type", "none".into()),
                ("secure-port", port.to_string()),
                ("cert-dir", pki.dir().to_string_lossy().into_owned()),
                ("tls-cert-file", p(files::APISERVER_CRT)),
                ("tls-private-key-file", p(files::APISERVER_KEY)),
                ("client-ca-file", p(files::CLIENT_CA)),
                ("anonymous-auth", "false".into()),
                ("authorization-mode", "RBAC".into()),
                ("service-account-issuer", url.clone()),
                ("service-account-key-file", p(files::SA_PUB)),
                ("service-account-signing-key-file", p(files::SA_KEY)),
                ("service-cluster-ip-range", "10.0.0.0/24".into()),
                ("allow-privileged", "true".into()),
                ("requestheader-client-ca-file", p(files::FRONT_PROXY_CA)),
                ("requestheader-allowed-names", FRONT_PROXY_CLIENT_CN.into()),
                ("requestheader-username-headers", "X-Remote-User".into()),
                ("requestheader-group-headers", "X-Remote-Group".into()),
                ("requestheader-extra-headers-prefix", "X-Remote-Extra-".into()),
                ("proxy-client-cert-file", p(files::FRONT_PROXY_CLIENT_CRT)),
                ("proxy-client-key-file", p(files::FRONT_PROXY_CLIENT_KEY)),
                ("profiling", "false".into()),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect();
            if !service_account_admission {
                // Without kube-controller-manager nothing creates `default` ServiceAccounts, so
                // the ServiceAccount admission plugin would reject every Pod (envtest does the
                // same).
                pairs.push(("disable-admission-plugins".into(), "ServiceAccount".into()));
            }
            pairs.extend(extra.iter().cloned());
            let args: Vec<OsString> = flags(pairs);
            let spec = ChildSpec {
                args,
                cwd: Some(run_dir.to_owned()),
                env: go_gc_env(),
                readiness: Readiness::Http {
                    url: format!("{url}/{readyz}"),
                    client: probe_client.clone(),
                    body: None,
                },
                ..ChildSpec::new("kube-apiserver", assets.kube_apiserver(), run_dir.join(APISERVER_LOG))
            };
            let child = Child::start(&spec, timeout).await?;
            Ok(Started {
                child,
                url,
                port,
                data: PathBuf::new(),
            })
        }
    })
    .await
}
