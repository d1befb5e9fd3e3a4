//! The health of one target, as a list of named checks: the engine behind
//! `kube-harness verify` and the `every_target` scenario.

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

/// Bring `target` up on `cluster`, check it, and tear it down. Never fails: every problem is a
/// failed check (a failed bring-up ends the list early). A target with an `Expectations`
/// document also gets its access, CRUD-snapshot and FailedDiscoveryCheck checks; missing or
/// different snapshots fail (see [`verify_target_with`] to write them).
pub async fn verify_target(cluster: &Cluster, target: &Target) -> Vec<CheckResult> {
    verify_target_with(cluster, target, false).await
}

/// [`verify_target`]; with `update`, CRUD answers that differ from (or lack) a snapshot are
/// written to the target's `snapshots/` directory for review, and the check passes.
pub async fn verify_target_with(cluster: &Cluster, target: &Target, update: bool) -> Vec<CheckResult> {
    let mut rec = Recorder {
        target: target.name.clone(),
        results: Vec::new(),
    };
    let t = Instant::now();
    let mut running = match cluster.up_target(target).await {
        Ok(r) => {
            let timings = r.timings();
            rec.record(
                "bring up",
                t,
                Ok(format!(
                    "backend ready {:.2}s, APIServices Available {:.2}s",
                    timings.backend_ready.as_secs_f64(),
                    timings.apiservices_available.as_secs_f64()
                )),
            );
            r
        }
        Err(e) => {
            rec.record("bring up", t, Err(e.to_string()));
            return rec.results;
        }
    };
    let client = match cluster.client().await {
        Ok(c) => c,
        Err(e) => {
            rec.record("admin client", Instant::now(), Err(e.to_string()));
            return rec.results;
        }
    };
    for api_service in &target.plan.api_services {
        apiservice_checks(&mut rec, &client, api_service.name()).await;
    }
    for crd in target.plan.crds() {
        crd_checks(&mut rec, &client, crd.name()).await;
    }
    if let Some(expectations) = &target.expectations {
        super::expect::run(&mut rec, cluster, target, &mut running, expectations, update).await;
    }
    let backend = running.backend().map(|b| (b.pid(), b.try_exit()));
    if let Some((_, exited)) = backend {
        let outcome = match exited {
            None => Ok("running".to_owned()),
            Some(status) => Err(format!("backend exited: {status}")),
        };
        rec.record("backend still running", Instant::now(), outcome);
    }
    let t = Instant::now();
    let down = running
        .down(cluster)
        .await
        .map_err(|e| e.to_string())
        .and_then(|()| match backend {
            Some((pid, _)) if !crate::process::live_group_members(pid).is_empty() => {
                Err(format!("backend pid {pid} still running after teardown"))
            }
            _ => Ok("removed".to_owned()),
        });
    rec.record("tear down", t, down);
    rec.results
}

/// Write a failure bundle for `target` into `dir`: kube-apiserver's and etcd's logs, the
/// target's backend log, every APIService and the target's CRDs with their conditions, and
/// the cluster's events. Returns the files written. Best effort: what cannot be fetched is
/// noted in `errors.txt`.
///
/// # Errors
/// [`crate::Error::Io`] if the directory cannot be created.
pub async fn write_failure_bundle(
    cluster: &Cluster,
    target: &Target,
    dir: &std::path::Path,
) -> crate::Result<Vec<std::path::PathBuf>> {
    use k8s_openapi::api::core::v1::Event;
    crate::pki::create_private_dir(dir)?;
    let mut written = Vec::new();
    let mut errors = Vec::new();
    let backend_log = cluster
        .info()
        .run_dir
        .join("targets")
        .join(&target.name)
        .join("backend.log");
    for (src, name) in [
        (cluster.apiserver_log().to_owned(), "kube-apiserver.log"),
        (cluster.etcd_log().to_owned(), "etcd.log"),
        (backend_log, "backend.log"),
    ] {
        let dest = dir.join(name);
        match std::fs::copy(&src, &dest) {
            Ok(_) => written.push(dest),
            Err(e) => errors.push(format!("{}: {e}", src.display())),
        }
    }
    match cluster.client().await {
        Ok(client) => {
            let lp = kube::api::ListParams::default();
            let dumps: [(&str, Result<serde_json::Value, String>); 3] = [
                (
                    "apiservices.json",
                    Api::<APIService>::all(client.clone())
                        .list(&lp)
                        .await
                        .map_err(|e| e.to_string())
                        .and_then(|l| serde_json::to_value(l.items).map_err(|e| e.to_string())),
                ),
                (
                    "crds.json",
                    Api::<CustomResourceDefinition>::all(client.clone())
                        .list(&lp)
                        .await
                        .map_err(|e| e.to_string())
                        .and_then(|l| {
                            let names: Vec<&str> = target.plan.crds().map(|c| c.name()).collect();
                            let mine: Vec<_> = l
                                .items
                                .into_iter()
                                .filter(|c| c.metadata.name.as_deref().is_some_and(|n| names.contains(&n)))
                                .collect();
                            serde_json::to_value(mine).map_err(|e| e.to_string())
                        }),
                ),
                (
                    "events.json",
                    Api::<Event>::all(client.clone())
                        .list(&lp)
                        .await
                        .map_err(|e| e.to_string())
                        .and_then(|l| serde_json::to_value(l.items).map_err(|e| e.to_string())),
                ),
            ];
            for (name, dump) in dumps {
                match dump {
                    Ok(value) => {
                        let dest = dir.join(name);
                        let text = serde_json::to_string_pretty(&value).unwrap_or_default();
                        match std::fs::write(&dest, text) {
                            Ok(()) => written.push(dest),
                            Err(e) => errors.push(format!("{name}: {e}")),
                        }
                    }
                    Err(e) => errors.push(format!("{name}: {e}")),
                }
            }
        }
        Err(e) => errors.push(format!("no client: {e}")),
    }
    if !errors.is_empty() {
        let dest = dir.join("errors.txt");
        if std::fs::write(&dest, errors.join("\n")).is_ok() {
            written.push(dest);
        }
    }
    Ok(written)
}

/// JUnit XML for `results`: one testsuite per target, one testcase per check.
pub fn junit(results: &[CheckResult]) -> String {
    fn esc(s: &str) -> String {
        s.replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
            .replace('"', "&quot;")
    }
    let mut targets: Vec<&str> = results.iter().map(|r| r.target.as_str()).collect();
    targets.dedup();
    let mut out =
        String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<testsuites name=\"kube-harness verify\">\n");
    for target in targets {
        let cases: Vec<&CheckResult> = results.iter().filter(|r| r.target == target).collect();
        let failures = cases.iter().filter(|c| !c.passed).count();
        let time: f64 = cases.iter().map(|c| c.duration.as_secs_f64()).sum();
        out.push_str(&format!(
            "  <testsuite name=\"{}\" tests=\"{}\" failures=\"{failures}\" time=\"{time:.3}\">\n",
            esc(target),
            cases.len()
        ));
        for c in cases {
            out.push_str(&format!(
                "    <testcase classname=\"{}\" name=\"{}\" time=\"{:.3}\"",
                esc(target),
                esc(&c.check),
                c.duration.as_secs_f64()
            ));
            if c.passed {
                out.push_str("/>\n");
            } else {
                out.push_str(&format!(
                    ">\n      <failure message=\"{}\"/>\n    </testcase>\n",
                    esc(&c.detail)
                ));
            }
        }
        out.push_str("  </testsuite>\n");
    }
    out.push_str("</testsuites>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn junit_has_one_case_per_check_and_escapes() {
        let r = |check: &str, passed: bool, detail: &str| CheckResult {
            target: "t<1>".into(),
            check: check.into(),
            passed,
            detail: detail.into(),
            duration: Duration::from_millis(5),
            data: None,
        };
        let xml = junit(&[r("a", true, ""), r("b \"x\"", false, "bad & worse")]);
        assert!(
            xml.contains("<testsuite name=\"t&lt;1&gt;\" tests=\"2\" failures=\"1\""),
            "{xml}"
        );
        assert!(xml.contains("name=\"b &quot;x&quot;\""), "{xml}");
        assert!(xml.contains("<failure message=\"bad &amp; worse\"/>"), "{xml}");
    }
}
