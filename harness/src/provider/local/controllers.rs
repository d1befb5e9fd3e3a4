//! kube-controller-manager on the local plane: the controllers that matter without a kubelet
//! (namespace deletion, garbage collection, ServiceAccounts, aggregated ClusterRoles, the
//! root CA ConfigMap, Deployments → ReplicaSets → Pods, Jobs…), with its own client
//! certificate, leader election off, on loopback. It starts after kube-apiserver is ready and
//! is not waited for: a test that needs a controller waits for it
//! ([`crate::Cluster::wait_for_controllers`]).

use std::ffi::OsString;
use std::path::Path;
use std::time::Duration;

use super::{flags, identity, secure_serving};
use crate::error::Result;
use crate::pki::ClusterPki;
use crate::process::{Child, ChildSpec, probe_client};
use crate::wait::{Backoff, Probe, Readiness};

/// kube-controller-manager's log, in the run directory.
pub(crate) const CONTROLLER_MANAGER_LOG: &str = "kube-controller-manager.log";

/// The controllers run by default: the ones whose effect a test can see without a kubelet,
/// and cheap to run (see `docs/control-plane.md` for what each costs and why others are off:
/// node, volume, certificate-signing and autoscaling controllers need nodes, storage, a
/// signing CA or metrics).
pub const DEFAULT_CONTROLLERS: [&str; 19] = [
    "namespace-controller",
    "garbage-collector-controller",
    "serviceaccount-controller",
    "serviceaccount-token-controller",
    "clusterrole-aggregation-controller",
    "root-ca-certificate-publisher-controller",
    "deployment-controller",
    "replicaset-controller",
    "replicationcontroller-controller",
    "statefulset-controller",
    "daemonset-controller",
    "job-controller",
    "cronjob-controller",
    "ttl-after-finished-controller",
    "disruption-controller",
    "endpointslice-controller",
    "resourcequota-controller",
    "pod-garbage-collector-controller",
    "validatingadmissionpolicy-status-controller",
];

/// The user kube-controller-manager authenticates as; the bootstrap RBAC policy binds it
/// (`system:kube-controller-manager`), and with `--use-service-account-credentials` each
/// controller acts as its own ServiceAccount in kube-system, as on kubeadm clusters.
pub(crate) const CONTROLLER_MANAGER_USER: &str = "system:kube-controller-manager";

/// Which controllers a local plane runs: `None` for no kube-controller-manager.
pub(crate) fn from_env() -> std::result::Result<Option<Vec<String>>, String> {
    match std::env::var("KUBE_HARNESS_CONTROLLERS") {
        Err(_) => Ok(Some(default_list())),
        Ok(v) => parse(&v),
    }
}

fn default_list() -> Vec<String> {
    DEFAULT_CONTROLLERS.iter().map(|c| (*c).to_owned()).collect()
}

/// `KUBE_HARNESS_CONTROLLERS`: `0`/`off`/`none` (no kube-controller-manager), `default` or
/// empty, or a comma-separated list of controller names as kube-controller-manager's
/// `--controllers` takes them (`default` inside the list stands for the default set).
pub(crate) fn parse(value: &str) -> std::result::Result<Option<Vec<String>>, String> {
    let value = value.trim();
    match value {
        "0" | "off" | "none" | "false" => return Ok(None),
        "" | "1" | "on" | "default" | "true" => return Ok(Some(default_list())),
        _ => {}
    }
    let mut out = Vec::new();
    for name in value.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        if name == "default" {
            out.extend(default_list());
        } else if name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'*')
            || name.starts_with('-')
        {
            out.push(name.to_owned());
        } else {
            return Err(format!(
                "KUBE_HARNESS_CONTROLLERS: {name:?} is not a controller name (use 0, default, or names such as namespace-controller,garbage-collector-controller)"
            ));
        }
    }
    out.dedup();
    Ok(Some(out))
}

/// A running kube-controller-manager and how to ask it whether it is healthy.
#[derive(Debug)]
pub(crate) struct ControllerManager {
    pub(crate) child: Child,
    pub(crate) healthz: String,
    pub(crate) probe: reqwest::Client,
}

/// Spawn kube-controller-manager against the API at `server` (not waiting for it).
pub(crate) async fn spawn(
    binary: &Path,
    run_dir: &Path,
    pki: &ClusterPki,
    server: &str,
    controllers: &[String],
    feature_gates: Option<&str>,
) -> Result<ControllerManager> {
    let dir = run_dir.join("kube-controller-manager");
    let kubeconfig_path = identity(&dir, pki, server, CONTROLLER_MANAGER_USER, Vec::new())?;
    let (mut pairs, port) = secure_serving(&dir, pki, &kubeconfig_path, "kube-controller-manager", feature_gates)?;
    let s = |p: &Path| p.to_string_lossy().into_owned();
    pairs.extend([
        ("use-service-account-credentials", "true".to_owned()),
        (
            "service-account-private-key-file",
            s(&pki.path(crate::pki::files::SA_KEY)),
        ),
        ("root-ca-file", s(&pki.path(crate::pki::files::SERVING_CA))),
        ("controllers", controllers.join(",")),
    ]);
    let args: Vec<OsString> = flags(pairs.into_iter().map(|(k, v)| (k.to_owned(), v)));
    let spec = ChildSpec {
        args,
        cwd: Some(run_dir.to_owned()),
        readiness: Readiness::Spawned,
        ..ChildSpec::new(
            "kube-controller-manager",
            binary.to_owned(),
            run_dir.join(CONTROLLER_MANAGER_LOG),
        )
    };
    let child = Child::start(&spec, Duration::from_secs(10)).await?;
    Ok(ControllerManager {
        child,
        healthz: format!("https://127.0.0.1:{port}/healthz"),
        probe: probe_client(pki.serving_ca.cert_pem(), Some(&pki.admin))?,
    })
}

impl ControllerManager {
    /// Wait until `/healthz` answers `ok` (its controllers are started), failing at once if
    /// the process exits.
    pub(crate) async fn wait_healthy(&self, timeout: Duration) -> Result<()> {
        crate::wait::poll_for(
            "kube-controller-manager's /healthz to answer ok",
            timeout,
            Backoff::millis(20, 200),
            || async {
                if let Some(status) = self.child.try_exit() {
                    return Err(self.child.exited_in_use_error(status));
                }
                Ok(match self.probe.get(&self.healthz).send().await {
                    Ok(r) if r.status().is_success() => Probe::Ready(()),
                    Ok(r) => Probe::NotYet(format!("{}: {}", r.status(), r.text().await.unwrap_or_default())),
                    Err(e) => Probe::NotYet(e.to_string()),
                })
            },
        )
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_variable_turns_it_off_picks_the_default_or_a_list() {
        assert_eq!(parse("0"), Ok(None));
        assert_eq!(parse("off"), Ok(None));
        assert_eq!(parse("default"), Ok(Some(default_list())));
        assert_eq!(
            parse("namespace-controller, garbage-collector-controller"),
            Ok(Some(vec![
                "namespace-controller".into(),
                "garbage-collector-controller".into()
            ]))
        );
        let with_default = parse("default,-job-controller").ok().flatten().unwrap_or_default();
        assert_eq!(with_default.len(), DEFAULT_CONTROLLERS.len() + 1);
        assert!(parse("Namespace Controller").is_err_and(|e| e.contains("KUBE_HARNESS_CONTROLLERS")));
    }
}
