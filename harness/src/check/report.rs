//! What `verify` leaves behind: JUnit XML, and a failure bundle per failed target taken at
//! the failure, before teardown (logs, the APIServices and CRDs as they were, events, what each
//! failed check saw).

use std::path::{Path, PathBuf};

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::kube_aggregator::pkg::apis::apiregistration::v1::APIService;
use kube::Api;

use super::result::CheckResult;
use crate::Cluster;
use crate::target::Target;

/// Write a failure bundle for `target` into `dir`: kube-apiserver's and etcd's logs, the
/// target's backend log, every APIService and the target's CRDs with their conditions, and
/// the cluster's events. Returns the files written. Best effort: what cannot be fetched is
/// noted in `errors.txt`.
///
/// # Errors
/// [`crate::Error::Io`] if the directory cannot be created.
pub async fn write_failure_bundle(cluster: &Cluster, target: &Target, dir: &Path) -> crate::Result<Vec<PathBuf>> {
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
    let controller_manager_log = cluster.controller_manager_log();
    let controller_manager = controller_manager_log
        .exists()
        .then_some((controller_manager_log, "kube-controller-manager.log"));
    let [scheduler_log, kwok_log] = cluster.node_logs();
    let nodes = [(scheduler_log, "kube-scheduler.log"), (kwok_log, "kwok.log")]
        .into_iter()
        .filter(|(log, _)| log.exists());
    for (src, name) in [
        (cluster.apiserver_log().to_owned(), "kube-apiserver.log"),
        (cluster.etcd_log().to_owned(), "etcd.log"),
        (backend_log, "backend.log"),
    ]
    .into_iter()
    .chain(controller_manager)
    .chain(nodes)
    {
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

/// Write `failed-checks.txt` into a bundle: every failed check with everything it saw.
///
/// # Errors
/// [`crate::Error::Io`].
pub fn write_failed_checks(dir: &Path, results: &[CheckResult]) -> crate::Result<PathBuf> {
    let text: String = results
        .iter()
        .filter(|r| !r.passed)
        .map(|r| format!("FAIL {}\n  {}\n", r.check, r.detail.replace('\n', "\n  ")))
        .collect();
    let path = dir.join("failed-checks.txt");
    std::fs::write(&path, text).map_err(crate::Error::io("write", &path))?;
    Ok(path)
}

/// Remove a failure bundle left by an earlier run of a target that now passes: only a
/// directory that holds what a bundle holds (`failed-checks.txt`) is removed.
pub fn remove_stale_bundle(dir: &Path) {
    if dir.join("failed-checks.txt").is_file()
        && let Err(e) = std::fs::remove_dir_all(dir)
    {
        tracing::warn!(dir = %dir.display(), error = %e, "could not remove a stale failure bundle");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

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
