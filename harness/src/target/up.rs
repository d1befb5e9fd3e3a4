//! Bringing a target up on a cluster: certificates issued, objects applied in dependency
//! order, the backend started and ready, APIServices completed and `Available`.

use std::cell::Cell;
use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use k8s_openapi::ByteString;
use k8s_openapi::kube_aggregator::pkg::apis::apiregistration::v1::APIService;

use super::Target;
use super::apply::{self, Removal};
use super::load::Document;
use super::plan::Prerequisite;
use super::running::{RunningTarget, TargetTimings, issue_certs};
use crate::Cluster;
use crate::error::{Error, Result};
use crate::wait::{Backoff, Probe};

impl Cluster {
    /// Bring a target directory up: issue its certificates, apply its objects in dependency
    /// order (waiting for CRDs to be Established), start its backend and wait for it, then
    /// apply its APIServices with `caBundle` and port filled in and wait until each is
    /// `Available=True` and its group/version answers through the aggregator.
    ///
    /// ```no_run
    /// # async fn wrapper() -> kube_harness::Result<()> {
    /// let cluster = kube_harness::shared().await?;
    /// let target = kube_harness::Target::load("tests/targets/my-apiserver")?;
    /// let running = cluster.up_target(&target).await?;
    /// // … requests through the aggregator (cluster.client()) …
    /// running.down(cluster).await?; // APIServices first, then the backend, then the rest
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`Error::Load`] / [`Error::Fixture`] naming the file and object, [`Error::WaitTimeout`]
    /// with the last condition, backend start errors with its log tail.
    pub async fn up_target(&self, target: &Target) -> Result<RunningTarget> {
        match self.up_target_or_keep(target).await {
            Ok(running) => Ok(running),
            Err((e, running)) => {
                // Leave nothing half-applied in a shared cluster: a stale APIService would
                // break discovery for every other test.
                if let Err(cleanup) = running.down(self).await {
                    tracing::warn!(error = %cleanup, "cleaning up after a failed bring-up");
                }
                Err(e)
            }
        }
    }

    /// [`Cluster::up_target`], but a failed bring-up hands back what it applied instead of
    /// removing it, so the evidence can be collected first (`verify`'s failure bundle); the
    /// caller takes it down.
    pub(crate) async fn up_target_or_keep(
        &self,
        target: &Target,
    ) -> std::result::Result<RunningTarget, (Error, RunningTarget)> {
        let started = Instant::now();
        let work = self.info().run_dir.join("targets").join(&target.name);
        let mut running = RunningTarget {
            name: target.name.clone(),
            work: work.clone(),
            applied: Vec::new(),
            certs: BTreeMap::new(),
            cas: BTreeMap::new(),
            port: None,
            backend: None,
            in_cluster: None,
            launch: None,
            timings: TargetTimings::default(),
            etcd: None,
            identity: None,
            admin: self.admin_kubeconfig().clone(),
        };
        let brought_up = async {
            crate::pki::create_private_dir(&work)?;
            if let Some(spec) = &target.spec {
                (running.certs, running.cas) = issue_certs(spec, &work.join("certs"))?;
            }
            let client = self.client().await?;
            self.bring_up(target, &client, &work, &mut running).await
        }
        .await;
        match brought_up {
            Ok(()) => {
                running.timings.total = started.elapsed();
                Ok(running)
            }
            Err(e) => {
                let e = match e {
                    // Typed, and it names its APIService: callers can tell it apart.
                    e @ Error::BackendCertificate { .. } => e,
                    e => Error::BringUp {
                        target: target.name.clone(),
                        source: Box::new(e),
                    },
                };
                Err((e, running))
            }
        }
    }

    async fn bring_up(
        &self,
        target: &Target,
        client: &kube::Client,
        work: &Path,
        running: &mut RunningTarget,
    ) -> Result<()> {
        let plan = &target.plan;
        // Kinds served by this target's own CRDs and APIServices may take a moment to appear in
        // discovery: retry those. Any other unknown kind is a mistake: report it at once.
        let served = plan.served_groups();
        let patience_for = |doc: &Document| {
            if served.contains(doc.group()) {
                Duration::from_secs(30)
            } else {
                Duration::from_millis(500)
            }
        };
        let patience = Duration::from_secs(30);
        // A cluster that runs pods but cannot reach this host runs the backend as a
        // Deployment, behind a ClusterIP Service (see `incluster`).
        let in_cluster = !self.has(crate::Capability::HostBackends) && self.has(crate::Capability::RunsPods);

        let spec = target.spec.as_ref();
        // CRDs with a conversion webhook get their caBundle now (and in the cluster their
        // Service port); on the local plane the port follows once the backend has one.
        let early = super::webhooks::completed_plan(plan, spec, &running.certs, in_cluster.then_some(443));
        for prerequisite in &early.prerequisites {
            let completed = match prerequisite {
                Prerequisite::Crd(crd) if spec.is_some_and(|s| s.webhooks.iter().any(|w| w.name == crd.name())) => {
                    Some(crd.document()?)
                }
                _ => None,
            };
            let doc = completed.as_ref().unwrap_or_else(|| prerequisite.doc());
            let rewritten = in_cluster
                .then(|| super::incluster::in_cluster_service(doc, &target.name))
                .flatten();
            let doc = rewritten.as_ref().unwrap_or(doc);
            let mut applied = apply::apply_one(client, doc, patience_for(doc)).await?;
            match prerequisite {
                Prerequisite::Crd(crd) => {
                    apply::wait_crd_ready(client, &crd.object, self.one_apiserver(), patience).await?;
                }
                // Nothing finalizes a deleted namespace without kube-controller-manager: it
                // would stay Terminating and refuse the next bring-up's objects.
                Prerequisite::Namespace(_) => applied.removal = Removal::Keep,
                Prerequisite::Object(_) => {}
            }
            running.applied.push(applied);
        }

        let backend = target.spec.as_ref().and_then(|s| s.backend.as_ref());
        if let Some(backend) = backend.filter(|_| in_cluster) {
            let (deployed, docs) = self
                .start_backend_in_cluster(target, backend, &running.certs, work)
                .await?;
            let started = Instant::now();
            for doc in &docs {
                running.applied.push(apply::apply_one(client, doc, patience).await?);
            }
            running.in_cluster = Some(deployed.clone());
            let timeout = Duration::from_secs(backend.start_timeout_seconds.unwrap_or(60));
            self.wait_backend_in_cluster(&deployed, timeout).await?;
            running.timings.backend_ready = started.elapsed();
        } else if let Some(backend) = backend {
            let uses_etcd = backend.uses_placeholder("etcdUrl");
            if uses_etcd && self.info().etcd_url.is_empty() && running.etcd.is_none() {
                // Someone else's cluster: its etcd is out of reach, so the backend gets its own.
                let etcd = crate::provider::local::processes::start_etcd(
                    self.assets(),
                    work,
                    None,
                    Duration::from_secs(backend.start_timeout_seconds.unwrap_or(60)),
                )
                .await?;
                running.etcd = Some((etcd.child, etcd.url));
            }
            let etcd_url = running
                .etcd
                .as_ref()
                .map_or_else(|| self.info().etcd_url.clone(), |(_, url)| url.clone());
            let started = self
                .start_backend(target, backend, &running.certs, work, &etcd_url)
                .await?;
            running.launch = Some(started.launch);
            running.backend = Some(started.child);
            running.port = Some(started.port);
            running.identity = started.identity;
            running.timings.backend_ready = started.ready_after;
        }

        let backend_ready_at = Instant::now();
        let available_started = Instant::now();
        for planned in &plan.api_services {
            let mut planned = planned.clone();
            let name = planned.name().to_owned();
            if let Some(spec) = target
                .spec
                .as_ref()
                .and_then(|s| s.api_services.iter().find(|a| a.name == name))
                && let Some(api) = planned.object.spec.as_mut()
            {
                if let Some(ca) = spec.ca_bundle_from.as_ref().and_then(|c| running.certs.get(c)) {
                    api.ca_bundle = Some(ByteString(ca.cert_pem.clone().into_bytes()));
                }
                if let (Some(port), Some(service)) = (running.port, api.service.as_mut()) {
                    service.port = Some(i32::from(port));
                } else if let (Some(_), Some(service)) = (&running.in_cluster, api.service.as_mut()) {
                    service.port = Some(443);
                }
            }
            let mut applied = apply::apply_one(client, &planned.document()?, patience).await?;
            // First on teardown, so discovery stays healthy while the backend stops.
            applied.removal = Removal::First;
            running.applied.push(applied);
            match apply::wait_apiservice_available_or_certificate_error(client, &name, Duration::from_secs(60)).await {
                Ok(()) => {}
                Err(e @ Error::BackendCertificate { .. }) => return Err(e),
                Err(e) => {
                    let tail = running.backend.as_ref().map(|b| b.log_tail(20)).unwrap_or_default();
                    return Err(Error::WithBackendLog {
                        source: Box::new(e),
                        tail,
                    });
                }
            }
            wait_group_version_served(client, &name, &planned.object).await?;
        }
        running.timings.apiservices_available = available_started.elapsed();

        // Now every webhook has its port: the CRDs' conversion webhooks are applied again with
        // it (on the local plane), the admission configurations for the first time.
        let port = running.port.or(in_cluster.then_some(443));
        let done = super::webhooks::completed_plan(plan, spec, &running.certs, port);
        if !in_cluster && running.port.is_some() {
            for crd in done.crds() {
                if spec.is_some_and(|s| s.webhooks.iter().any(|w| w.name == crd.name())) {
                    apply::apply_one(client, &crd.document()?, patience).await?;
                }
            }
        }
        // What the target declares must answer before anything relies on it.
        if let Err(e) = super::references::check(self, client, &done).await {
            return Err(match running.backend.as_ref() {
                Some(backend) => Error::WithBackendLog {
                    source: Box::new(e),
                    tail: backend.log_tail(20),
                },
                None => e,
            });
        }
        for admission in &done.admission {
            let doc = admission.document()?;
            let mut applied = apply::apply_one(client, &doc, patience_for(&doc)).await?;
            // First on teardown: a webhook whose backend is gone fails every matching request.
            applied.removal = Removal::First;
            running.applied.push(applied);
        }
        super::webhooks::wait_admission_answers(client, &done.admission, Duration::from_secs(30)).await?;
        if !done.admission.is_empty() {
            running.timings.webhooks_answered = backend_ready_at.elapsed();
        }
        for doc in &plan.rest {
            running
                .applied
                .push(apply::apply_one(client, doc, patience_for(doc)).await?);
        }
        Ok(())
    }
}

/// After `Available=True` there is a short window of 503s; wait until the group/version
/// answers 200 through the aggregator.
async fn wait_group_version_served(client: &kube::Client, name: &str, apiservice: &APIService) -> Result<()> {
    let spec = apiservice.spec.as_ref();
    let group = spec.and_then(|s| s.group.as_deref()).unwrap_or_default();
    let version = spec.and_then(|s| s.version.as_deref()).unwrap_or_default();
    let path = format!("/apis/{group}/{version}");
    // Before Kubernetes 1.36 the availability check skips TLS verification, so a wrong
    // caBundle shows only here, as a 503 from the proxy; it does not heal by waiting.
    let tls_failing_since: Cell<Option<Instant>> = Cell::new(None);
    crate::wait::poll(
        Duration::from_secs(30),
        Backoff::millis(10, 200),
        || async {
            let request = http::Request::get(&path)
                .body(Vec::new())
                .map_err(|e| Error::Client(Box::new(e)))?;
            match client.request_text(request).await {
                Ok(_) => Ok(Probe::Ready(())),
                Err(kube::Error::Api(status)) if apply::tls_verification_failure(&status.message).is_some() => {
                    let since = tls_failing_since.get().unwrap_or_else(Instant::now);
                    tls_failing_since.set(Some(since));
                    match apply::certificate_error(name, apiservice, &status.message) {
                        Some(e) if since.elapsed() >= apply::TLS_FAILURE_CONFIRM => Err(e),
                        _ => Ok(Probe::NotYet(status.message)),
                    }
                }
                Err(e) => Ok(Probe::NotYet(e.to_string())),
            }
        },
        |last| Error::Fixture(format!("APIService {name} is Available but {path} still fails: {last}")),
    )
    .await
}
