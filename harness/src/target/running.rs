//! A target that is up: its certificates, applied objects and backend; taken down again.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::apply::{self, Applied, Removal};
use super::spec::TargetSpec;
use crate::Cluster;
use crate::error::{Error, Result};
use crate::pki::{Ca, CertSpec, KeyedCert, write_private};
use crate::process::{Child, ChildSpec};
use crate::wait::Readiness;

/// A target that is up. Call [`RunningTarget::down`] to remove its objects. Dropping it
/// without `down` (a test that panicked, say) stops the backend and removes its APIServices,
/// best effort, so a shared cluster's discovery stays healthy for the other tests; its other
/// objects stay.
#[derive(Debug)]
pub struct RunningTarget {
    pub(super) name: String,
    pub(super) work: PathBuf,
    pub(super) applied: Vec<Applied>,
    pub(super) certs: BTreeMap<String, KeyedCert>,
    pub(super) cas: BTreeMap<String, Ca>,
    pub(super) port: Option<u16>,
    pub(super) backend: Option<Child>,
    /// The backend's Deployment, on providers that run it in the cluster.
    pub(super) in_cluster: Option<super::incluster::InClusterBackend>,
    pub(super) launch: Option<ChildSpec>,
    pub(super) timings: TargetTimings,
    /// A private etcd for the backend, on clusters whose etcd the harness cannot reach.
    pub(super) etcd: Option<(Child, String)>,
    /// The backend's own identity (its token renewed while this lives).
    pub(super) identity: Option<super::identity::BackendIdentity>,
    /// The admin kubeconfig, for the best-effort cleanup on drop.
    pub(super) admin: kube::config::Kubeconfig,
}

/// How long teardown waits for what it deleted to be gone.
const TEARDOWN_TIMEOUT: Duration = Duration::from_secs(60);

/// How long the cleanup on drop may take.
const DROP_CLEANUP: Duration = Duration::from_secs(10);

impl Drop for RunningTarget {
    fn drop(&mut self) {
        let first: Vec<Applied> = self.applied.drain(..).filter(|a| a.removal == Removal::First).collect();
        if first.is_empty() {
            return;
        }
        let cleaned =
            crate::cluster::kubeconfig::cleanup_on_own_runtime(self.admin.clone(), DROP_CLEANUP, |client| async move {
                drop(apply::delete_all(&client, &first).await);
                Ok(())
            });
        if let Err(e) = cleaned {
            tracing::warn!(target = %self.name, error = %e, "cleaning up a dropped target");
        }
    }
}

/// How long bringing a target up took.
#[derive(Debug, Clone, Default)]
pub struct TargetTimings {
    /// From spawning the backend (after any build) to its readiness probe passing.
    pub backend_ready: Duration,
    /// From the backend being ready to every APIService `Available=True`.
    pub apiservices_available: Duration,
    /// From the backend being ready to kube-apiserver's first call of each admission webhook
    /// answered (configurations applied, a dry-run create admitted); zero without any.
    pub webhooks_answered: Duration,
    /// The whole `up`.
    pub total: Duration,
}

impl RunningTarget {
    /// The target's name.
    pub fn name(&self) -> &str {
        &self.name
    }
    /// The backend's HTTPS port on 127.0.0.1.
    pub fn port(&self) -> Option<u16> {
        self.port
    }
    /// An issued certificate by spec name.
    pub fn cert(&self, name: &str) -> Option<&KeyedCert> {
        self.certs.get(name)
    }
    /// The backend process.
    pub fn backend(&self) -> Option<&Child> {
        self.backend.as_ref()
    }
    /// Timings of `up`.
    pub fn timings(&self) -> &TargetTimings {
        &self.timings
    }

    /// Issue another certificate from one of the target's CAs and write it as
    /// `<name>.crt`/`<name>.key` beside the others; returns the two paths. For fault
    /// scenarios: a serving certificate for the wrong name, say.
    ///
    /// # Errors
    /// [`Error::Fixture`] for an unknown CA, [`Error::Pki`], [`Error::Io`].
    pub fn issue_cert(&self, issuer: &str, name: &str, spec: &CertSpec) -> Result<(PathBuf, PathBuf)> {
        let ca = self
            .cas
            .get(issuer)
            .ok_or_else(|| Error::Fixture(format!("target {}: no CA named {issuer:?}", self.name)))?;
        write_cert(&self.work.join("certs"), name, &ca.issue(spec)?)
    }

    /// The backend's Deployment, when it runs in the cluster.
    pub(crate) fn in_cluster(&self) -> Option<&super::incluster::InClusterBackend> {
        self.in_cluster.as_ref()
    }

    /// Whether the backend runs in the cluster (a Deployment) rather than on this host.
    pub fn backend_in_cluster(&self) -> bool {
        self.in_cluster.is_some()
    }

    /// For a backend in the cluster: scale its Deployment to 0 (`up == false`: the backend is
    /// down, the APIService stays and the aggregator notices) or back to 1 with `extra`
    /// arguments appended (a fault flag), and wait for it to be available again.
    ///
    /// # Errors
    /// [`Error::Fixture`] if the backend does not run in the cluster; API errors;
    /// [`Error::NotReady`] when it does not come back.
    pub async fn scale_backend(&mut self, cluster: &Cluster, up: bool, extra: &[String]) -> Result<()> {
        let deployed = self
            .in_cluster
            .clone()
            .ok_or_else(|| Error::Fixture(format!("target {}: its backend does not run in the cluster", self.name)))?;
        let mut args = deployed.args.clone();
        args.extend(extra.iter().cloned());
        cluster
            .scale_backend_in_cluster(&deployed, i32::from(up), &args)
            .await?;
        if up {
            cluster
                .wait_backend_in_cluster(&deployed, Duration::from_secs(60))
                .await?;
        }
        Ok(())
    }

    /// Stop the backend (the APIService stays: the aggregator will notice).
    pub fn stop_backend(&mut self) {
        if let Some(backend) = self.backend.take() {
            backend.stop(Duration::from_secs(5));
        }
    }

    /// Stop the backend and start it again on the same port with `extra` arguments appended
    /// to its usual ones (a fault flag, another certificate), then wait until the port accepts
    /// connections. The readiness probe is not used: a faulty backend may never pass it.
    ///
    /// # Errors
    /// [`Error::Fixture`] if the target has no backend; spawn errors; [`Error::StartupTimeout`].
    pub async fn restart_backend(&mut self, extra: &[String]) -> Result<()> {
        self.stop_backend();
        let mut spec = self
            .launch
            .clone()
            .ok_or_else(|| Error::Fixture(format!("target {} has no backend to restart", self.name)))?;
        spec.args.extend(extra.iter().map(OsString::from));
        spec.readiness = Readiness::Tcp(self.port.unwrap_or_default());
        let child = Child::start(&spec, Duration::from_secs(30)).await?;
        self.backend = Some(child);
        Ok(())
    }

    /// Remove the target: APIServices and webhook configurations first (so discovery stays
    /// healthy), then every custom resource of the target's CRDs while the backend still runs
    /// (a controller removes its finalizers), then stop the backend, then delete the other
    /// objects in reverse order — except Namespaces, which nothing would finalize on the local
    /// plane (no kube-controller-manager); they are left empty and reused by the next
    /// bring-up. Then wait (up to a minute) until everything it deleted is gone — a CRD in
    /// particular, whose name the next target may reuse.
    ///
    /// A custom resource whose finalizers the running backend did not remove within
    /// 30 s is reported (naming the finalizers) and, once the backend has
    /// stopped, freed of them, so teardown still completes.
    ///
    /// # Errors
    /// [`Error::WaitTimeout`] naming what is still there; [`Error::NotObserved`] for custom
    /// resources whose finalizers the backend left.
    pub async fn down(mut self, cluster: &Cluster) -> Result<()> {
        let client = cluster.client().await?;
        let (first, rest): (Vec<Applied>, Vec<Applied>) =
            self.applied.drain(..).partition(|a| a.removal == Removal::First);
        let mut deleted = apply::delete_all(&client, &first).await;
        let crds: Vec<String> = rest
            .iter()
            .filter(|a| a.resource.kind == "CustomResourceDefinition")
            .map(|a| a.name.clone())
            .collect();
        let stuck = super::finalizers::delete_custom_resources(&client, &crds, FINALIZER_TIMEOUT).await;
        if let Some(backend) = self.backend.take() {
            backend.stop(Duration::from_secs(5));
        }
        if let Err(e) = &stuck {
            tracing::warn!(target = %self.name, error = %e, "custom resources kept their finalizers");
            super::finalizers::strip_finalizers(&client, &crds).await;
        }
        let rest: Vec<Applied> = rest.into_iter().filter(|a| a.removal != Removal::Keep).collect();
        deleted.extend(apply::delete_all(&client, &rest).await);
        apply::wait_gone(&client, &deleted, TEARDOWN_TIMEOUT).await?;
        stuck
    }
}

/// How long teardown waits, with the backend running, for the custom resources of the
/// target's CRDs to be gone.
pub const FINALIZER_TIMEOUT: Duration = Duration::from_secs(30);

fn write_cert(dir: &Path, name: &str, cert: &KeyedCert) -> Result<(PathBuf, PathBuf)> {
    crate::pki::create_private_dir(dir)?;
    let (crt, key) = (dir.join(format!("{name}.crt")), dir.join(format!("{name}.key")));
    write_private(&crt, cert.cert_pem.as_bytes())?;
    write_private(&key, cert.key_pem.as_bytes())?;
    Ok((crt, key))
}

pub(super) type IssuedCerts = (BTreeMap<String, KeyedCert>, BTreeMap<String, Ca>);

pub(super) fn issue_certs(spec: &TargetSpec, dir: &Path) -> Result<IssuedCerts> {
    let mut cas: BTreeMap<String, Ca> = BTreeMap::new();
    let mut out = BTreeMap::new();
    for c in spec.certificates.iter().filter(|c| c.ca) {
        let ca = Ca::new(&c.name)?;
        out.insert(c.name.clone(), ca.keyed_cert());
        cas.insert(c.name.clone(), ca);
    }
    for c in spec.certificates.iter().filter(|c| !c.ca) {
        let issuer =
            c.issuer.as_deref().and_then(|i| cas.get(i)).ok_or_else(|| {
                Error::Fixture(format!("certificate {:?}: issuer {:?} is not a CA", c.name, c.issuer))
            })?;
        let cert = issuer.issue(&CertSpec {
            common_name: c
                .common_name
                .clone()
                .or_else(|| c.dns_names.first().cloned())
                .unwrap_or_else(|| c.name.clone()),
            organizations: c.organizations.clone(),
            dns_names: c.dns_names.clone(),
            ips: c.ips.clone(),
            server: !c.client,
            client: c.client,
        })?;
        out.insert(c.name.clone(), cert);
    }
    for (name, cert) in &out {
        write_cert(dir, name, cert)?;
    }
    Ok((out, cas))
}
