//! `verify`'s pipeline for one target: bring it up, probe what it serves, run its
//! expectations and steps, record every verdict, take the failure bundle, tear it down. The
//! top of `check/`: it calls the stages, none of them calls it.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Instant;

use super::result::{CheckResult, Recorder};
use crate::Cluster;
use crate::target::Target;

/// How [`verify_target_with`] runs.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct VerifyOptions {
    /// Write CRUD answers that differ from (or lack) a snapshot to the target's `snapshots/`
    /// directory for review; those checks pass.
    pub update: bool,
    /// Where this target's failure bundle goes. It is written at the failure, before
    /// teardown, while the APIServices, CRDs and backend are as the failure left them; a
    /// passing run removes a stale bundle there.
    pub bundle: Option<PathBuf>,
}

impl VerifyOptions {
    /// Write differing CRUD snapshots instead of failing on them.
    #[must_use]
    pub fn with_update(mut self, update: bool) -> Self {
        self.update = update;
        self
    }

    /// Write a failure bundle into `dir` when a check fails.
    #[must_use]
    pub fn with_bundle(mut self, dir: impl Into<PathBuf>) -> Self {
        self.bundle = Some(dir.into());
        self
    }
}

/// Bring `target` up on `cluster`, check it, and tear it down. Never fails: every problem is a
/// failed check (a failed bring-up ends the list early). A target with an `Expectations`
/// document also gets its access, CRUD-snapshot and FailedDiscoveryCheck checks; missing or
/// different snapshots fail (see [`verify_target_with`] to write them).
pub async fn verify_target(cluster: &Cluster, target: &Target) -> Vec<CheckResult> {
    verify_target_with(cluster, target, &VerifyOptions::default()).await
}

/// [`verify_target`] with [`VerifyOptions`]: snapshots updated, a failure bundle written
/// before teardown.
pub async fn verify_target_with(cluster: &Cluster, target: &Target, options: &VerifyOptions) -> Vec<CheckResult> {
    let mut rec = Recorder::new(&target.name);
    let t = Instant::now();
    let mut running = match cluster.up_target_or_keep(target).await {
        Ok(r) => {
            let timings = r.timings();
            let mut parts = Vec::new();
            if target.spec.as_ref().is_some_and(|s| s.backend.is_some()) {
                parts.push(format!("backend ready {:.2}s", timings.backend_ready.as_secs_f64()));
            }
            if !target.plan.api_services.is_empty() {
                parts.push(format!(
                    "APIServices Available {:.2}s",
                    timings.apiservices_available.as_secs_f64()
                ));
            }
            if !target.plan.admission.is_empty() {
                parts.push(format!(
                    "webhooks answered {:.2}s",
                    timings.webhooks_answered.as_secs_f64()
                ));
            }
            parts.push(format!("up in {:.2}s", timings.total.as_secs_f64()));
            let detail = parts.join(", ");
            rec.record("bring up", t, Ok(detail));
            r
        }
        Err((e, running)) => {
            rec.record("bring up", t, Err(e.to_string()));
            bundle(cluster, target, options, &mut rec).await;
            if let Err(cleanup) = running.down(cluster).await {
                tracing::warn!(error = %cleanup, "cleaning up after a failed bring-up");
            }
            return rec.results;
        }
    };
    checks(&mut rec, cluster, target, &mut running, options).await;
    bundle(cluster, target, options, &mut rec).await;
    let backend = running.backend().map(|b| b.pid());
    let t = Instant::now();
    let down = running
        .down(cluster)
        .await
        .map_err(|e| e.to_string())
        .and_then(|()| match backend {
            Some(pid) if !crate::process::live_group_members(pid).is_empty() => {
                Err(format!("backend pid {pid} still running after teardown"))
            }
            _ => Ok("removed".to_owned()),
        });
    if !rec.record("tear down", t, down)
        && let Some(dir) = &options.bundle
    {
        // The teardown's own failure belongs in the bundle too (taken now if nothing failed
        // before it).
        if dir.join("failed-checks.txt").is_file() {
            if let Err(e) = super::report::write_failed_checks(dir, &rec.results) {
                tracing::warn!(error = %e, "could not update failed-checks.txt");
            }
        } else {
            bundle(cluster, target, options, &mut rec).await;
        }
    }
    rec.results
}

/// Every check between bring-up and teardown.
async fn checks(
    rec: &mut Recorder,
    cluster: &Cluster,
    target: &Target,
    running: &mut crate::target::RunningTarget,
    options: &VerifyOptions,
) {
    let client = match cluster.client().await {
        Ok(c) => c,
        Err(e) => {
            rec.record("admin client", Instant::now(), Err(e.to_string()));
            return;
        }
    };
    for api_service in &target.plan.api_services {
        super::probes::apiservice_checks(rec, &client, api_service.name()).await;
    }
    let mut listed = BTreeSet::new();
    for crd in target.plan.crds() {
        super::probes::crd_checks(rec, &client, crd.name(), &mut listed).await;
    }
    if let Some(expectations) = target.expectations.as_ref().filter(|e| !e.steps.is_empty()) {
        super::steps::run(rec, cluster, target, running, &expectations.steps, options.update).await;
    }
    if let Some(expectations) = &target.expectations {
        super::expect::run(rec, cluster, target, running, expectations, options.update).await;
    }
    if let Some(backend) = running.backend() {
        let outcome = match backend.try_exit() {
            None => Ok("running".to_owned()),
            Some(status) => Err(format!("backend exited: {status}")),
        };
        rec.record("backend still running", Instant::now(), outcome);
    } else if let Some(deployed) = running.in_cluster() {
        let t = Instant::now();
        let outcome = match crate::cluster::workloads::wait_deployment(
            &client,
            &deployed.namespace,
            &deployed.deployment,
            std::time::Duration::ZERO,
        )
        .await
        {
            Ok(()) => Ok(format!(
                "Deployment {}/{} available",
                deployed.namespace, deployed.deployment
            )),
            Err(e) => Err(e.to_string()),
        };
        rec.record("backend still running", t, outcome);
    }
}

/// The failure bundle, taken now (before teardown) if a check failed; a stale one removed if
/// none did. A bundle that cannot be written is a failed check of its own.
async fn bundle(cluster: &Cluster, target: &Target, options: &VerifyOptions, rec: &mut Recorder) {
    let Some(dir) = &options.bundle else {
        return;
    };
    if rec.results.iter().all(|r| r.passed) {
        super::report::remove_stale_bundle(dir);
        return;
    }
    let t = Instant::now();
    let written: crate::Result<()> = async {
        super::report::write_failure_bundle(cluster, target, dir).await?;
        super::report::write_failed_checks(dir, &rec.results)?;
        Ok(())
    }
    .await;
    if let Err(e) = written {
        rec.record("failure bundle", t, Err(format!("{}: {e}", dir.display())));
    }
}
