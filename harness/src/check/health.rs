//! The health of one target, as a list of named checks: the engine behind
//! `kube-harness verify` and the `every_target` scenario.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::kube_aggregator::pkg::apis::apiregistration::v1::APIService;
use kube::{Api, Client};

use crate::Cluster;
use crate::target::Target;
use crate::target::apply::available_condition;

/// One check's verdict.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CheckResult {
    /// The target's name.
    pub target: String,
    /// What was checked ("APIService v1.g Available", …).
    pub check: String,
    /// Whether it passed.
    pub passed: bool,
    /// What was seen (the failure's message, or a short summary).
    pub detail: String,
    /// How long it took.
    pub duration: Duration,
    /// What the API answered, for snapshots (a resource list, say).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data: Option<serde_json::Value>,
}

pub(crate) struct Recorder {
    target: String,
    results: Vec<CheckResult>,
}

impl Recorder {
    pub(crate) fn record(
        &mut self,
        check: impl Into<String>,
        started: Instant,
        outcome: Result<String, String>,
    ) -> bool {
        let passed = outcome.is_ok();
        self.results.push(CheckResult {
            target: self.target.clone(),
            check: check.into(),
            passed,
            detail: outcome.unwrap_or_else(|e| e),
            duration: started.elapsed(),
            data: None,
        });
        passed
    }
}

async fn apiservice_checks(rec: &mut Recorder, client: &Client, name: &str) {
    let t = Instant::now();
    let svc = match Api::<APIService>::all(client.clone()).get(name).await {
        Ok(s) => s,
        Err(e) => {
            rec.record(format!("APIService {name} Available"), t, Err(e.to_string()));
            return;
        }
    };
    let condition = available_condition(&svc).unwrap_or_default();
    let available = match &condition {
        (s, r, m) if s == "True" => Ok(format!("{r}: {m}")),
        (s, r, m) => Err(format!("Available={s} {r}: {m}")),
    };
    rec.record(format!("APIService {name} Available"), t, available);
    let spec = svc.spec.unwrap_or_default();
    let (group, version) = (spec.group.unwrap_or_default(), spec.version.unwrap_or_default());
    let gv = format!("{group}/{version}");

    let t = Instant::now();
    let legacy = match client.list_api_groups().await {
        Ok(groups)
            if groups
                .groups
                .iter()
                .any(|g| g.name == group && g.versions.iter().any(|v| v.version == version)) =>
        {
            Ok("listed".to_owned())
        }
        Ok(_) => Err(format!("{gv} is not listed in /apis")),
        Err(e) => Err(e.to_string()),
    };
    rec.record(format!("{gv} in /apis"), t, legacy);

    let t = Instant::now();
    let v2 = match super::aggregated_discovery_group(client, &group).await {
        Ok(entry)
            if entry["versions"]
                .as_array()
                .is_some_and(|vs| vs.iter().any(|v| v["version"] == version.as_str())) =>
        {
            Ok("listed".to_owned())
        }
        Ok(_) => Err(format!("{gv} is not listed in aggregated discovery")),
        Err(e) => Err(e.to_string()),
    };
    rec.record(format!("{gv} in aggregated discovery"), t, v2);
    resource_list_check(rec, client, &group, &version).await;
}

async fn resource_list_check(rec: &mut Recorder, client: &Client, group: &str, version: &str) {
    let t = Instant::now();
    let (outcome, data) = match super::resource_list(client, group, version).await {
        Ok(list) => {
            let names: Vec<&str> = list["resources"]
                .as_array()
                .map(|r| r.iter().filter_map(|x| x["name"].as_str()).collect())
                .unwrap_or_default();
            (Ok(format!("resources: {}", names.join(", "))), Some(list))
        }
        Err(e) => (Err(e.to_string()), None),
    };
    rec.record(format!("{group}/{version} resource list"), t, outcome);
    if let Some(last) = rec.results.last_mut() {
        last.data = data;
    }
}

async fn crd_checks(rec: &mut Recorder, client: &Client, name: &str) {
    let t = Instant::now();
    let crd = match Api::<CustomResourceDefinition>::all(client.clone()).get(name).await {
        Ok(c) => c,
        Err(e) => {
            rec.record(format!("CRD {name} Established"), t, Err(e.to_string()));
            return;
        }
    };
    let established = crd
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Established" && c.status == "True"));
    let outcome = if established {
        Ok("Established".to_owned())
    } else {
        Err("not Established".to_owned())
    };
    rec.record(format!("CRD {name} Established"), t, outcome);
    for version in crd.spec.versions.iter().filter(|v| v.served) {
        resource_list_check(rec, client, &crd.spec.group, &version.name).await;
    }
}

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
    let mut rec = Recorder {
        target: target.name.clone(),
        results: Vec::new(),
    };
    let t = Instant::now();
    let mut running = match cluster.up_target_or_keep(target).await {
        Ok(r) => {
            let timings = r.timings();
            let mut detail = format!(
                "backend ready {:.2}s, APIServices Available {:.2}s",
                timings.backend_ready.as_secs_f64(),
                timings.apiservices_available.as_secs_f64()
            );
            if !target.plan.admission.is_empty() {
                detail.push_str(&format!(
                    ", webhooks answered {:.2}s",
                    timings.webhooks_answered.as_secs_f64()
                ));
            }
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
            if let Err(e) = super::write_failed_checks(dir, &rec.results) {
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
        apiservice_checks(rec, &client, api_service.name()).await;
    }
    for crd in target.plan.crds() {
        crd_checks(rec, &client, crd.name()).await;
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
        super::remove_stale_bundle(dir);
        return;
    }
    let t = Instant::now();
    let written: crate::Result<()> = async {
        super::write_failure_bundle(cluster, target, dir).await?;
        super::write_failed_checks(dir, &rec.results)?;
        Ok(())
    }
    .await;
    if let Err(e) = written {
        rec.record("failure bundle", t, Err(format!("{}: {e}", dir.display())));
    }
}
