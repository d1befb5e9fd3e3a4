//! `kube-harness verify`: load every target (a broken one is a failed target of its own), then
//! per Kubernetes version start a cluster, verify each target on it, and report.

use std::path::PathBuf;
use std::process::ExitCode;

use super::{start, wait_for_shutdown_signal};
use crate::Cluster;
use crate::assets::KubeVersion;
use crate::check::{VerifyOptions, verify_target_with};
use crate::provider::Provider;
use crate::target::Target;
use anyhow::Context as _;

pub(super) struct CliVerifyOptions {
    pub(super) update: bool,
    pub(super) provider: Provider,
    pub(super) junit: Option<PathBuf>,
    pub(super) bundle: PathBuf,
    pub(super) only: Vec<String>,
    pub(super) keep_on_failure: bool,
    pub(super) budget: Option<f64>,
    pub(super) quiet: bool,
}

/// The targets named by `--target` (all when none is named); an unknown name is an error
/// listing the known ones.
fn select_targets(targets: Vec<Target>, only: &[String]) -> anyhow::Result<Vec<Target>> {
    if only.is_empty() {
        return Ok(targets);
    }
    let known: Vec<String> = targets.iter().map(|t| t.name.clone()).collect();
    for name in only {
        anyhow::ensure!(
            known.contains(name),
            "no target named {name:?}; the directories given hold: {}",
            known.join(", ")
        );
    }
    Ok(targets.into_iter().filter(|t| only.contains(&t.name)).collect())
}

/// The table of a target's checks. A failed check shows every line of what it saw (log
/// tails included), indented under it; with `quiet`, only the first.
fn print_results(target: &str, results: &[crate::check::CheckResult], quiet: bool) {
    let passed = results.iter().filter(|r| r.passed).count();
    println!("\n{target} — {passed}/{} checks passed", results.len());
    for r in results {
        let mut lines = r.detail.lines();
        println!(
            "  {} {:<58} {:>7.3}s  {}",
            if r.passed { "PASS" } else { "FAIL" },
            r.check,
            r.duration.as_secs_f64(),
            lines.next().unwrap_or_default()
        );
        if !r.passed && !quiet {
            for line in lines {
                println!("         {line}");
            }
        }
    }
}

/// The startup budget as a check of its own, so it shows in the table and in JUnit.
fn budget_check(cluster: &Cluster, budget: f64) -> crate::check::CheckResult {
    let took = cluster.timings().total;
    crate::check::CheckResult {
        target: "control-plane".into(),
        check: format!("startup within the {budget}s budget"),
        passed: took.as_secs_f64() <= budget,
        detail: format!("started in {:.2}s", took.as_secs_f64()),
        duration: took,
        data: None,
    }
}

/// `verify` over every version asked for (`--k8s-version 1.36.3,1.37.2`): one cluster per
/// version, the targets on each; check names carry the version when there are several.
pub(super) async fn verify(
    versions: &[KubeVersion],
    dirs: &[PathBuf],
    options: &CliVerifyOptions,
) -> anyhow::Result<ExitCode> {
    let (loaded, broken) = load_each_target(dirs, versions)?;
    // A target that does not load is a failed target of its own (named by its directory);
    // the others still run. `--target` selects among both.
    let broken: Vec<crate::check::CheckResult> = broken
        .into_iter()
        .filter(|r| options.only.is_empty() || options.only.contains(&r.target))
        .collect();
    let targets = if options.only.iter().all(|o| broken.iter().any(|b| &b.target == o)) && !options.only.is_empty() {
        Vec::new()
    } else {
        let only: Vec<String> = options
            .only
            .iter()
            .filter(|o| !broken.iter().any(|b| &b.target == *o))
            .cloned()
            .collect();
        select_targets(loaded, &only)?
    };
    anyhow::ensure!(
        !targets.is_empty() || !broken.is_empty(),
        "no target directories under {dirs:?}"
    );
    for failed in &broken {
        print_results(&failed.target, std::slice::from_ref(failed), options.quiet);
    }
    let mut all = broken;
    if targets.is_empty() {
        return Ok(summary(&all, 0, versions.len(), options));
    }
    for version in versions {
        let label = (versions.len() > 1).then(|| version.to_string());
        let results = verify_version(*version, label.as_deref(), &targets, options).await?;
        all.extend(results);
    }
    let count = targets.len();
    if let Some(path) = &options.junit {
        std::fs::write(path, crate::check::junit(&all)).with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(summary(&all, count, versions.len(), options))
}

/// The last line of `verify`, and its exit code.
fn summary(all: &[crate::check::CheckResult], targets: usize, versions: usize, options: &CliVerifyOptions) -> ExitCode {
    let failed = all.iter().filter(|r| !r.passed).count();
    let unloaded = all.iter().filter(|r| r.check == LOAD_CHECK).count();
    if targets == 0
        && let Some(path) = &options.junit
        && let Err(e) = std::fs::write(path, crate::check::junit(all))
    {
        eprintln!("kube-harness: cannot write {}: {e}", path.display());
    }
    println!(
        "\n{} targets × {versions} version(s), {} checks: {} passed, {failed} failed{}",
        targets + unloaded,
        all.len(),
        all.len() - failed,
        if unloaded > 0 {
            format!(" ({unloaded} target(s) did not load)")
        } else {
            String::new()
        }
    );
    if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// The check a target that does not load fails.
const LOAD_CHECK: &str = "load the target directory";

/// Load every target `dirs` name; those that do not load (or fail [`Target::preflight`] for
/// one of `versions`: a cargo backend that cannot be chosen, a Go module or package that is not
/// there) come back as a failed check each, named by their directory, with the whole error —
/// before any cluster starts.
fn load_each_target(
    dirs: &[PathBuf],
    versions: &[KubeVersion],
) -> anyhow::Result<(Vec<Target>, Vec<crate::check::CheckResult>)> {
    let dirs = crate::target::sources::target_dirs(dirs)?;
    let mut loaded = Vec::new();
    let mut broken = Vec::new();
    for dir in dirs {
        let started = std::time::Instant::now();
        let checked = Target::load(&dir).and_then(|t| {
            versions.iter().try_for_each(|v| t.preflight(v))?;
            Ok(t)
        });
        match checked {
            Ok(t) => loaded.push(t),
            Err(e) => broken.push(crate::check::CheckResult {
                target: dir
                    .file_name()
                    .map_or_else(|| dir.display().to_string(), |n| n.to_string_lossy().into_owned()),
                check: LOAD_CHECK.to_owned(),
                passed: false,
                detail: e.to_string(),
                duration: started.elapsed(),
                data: None,
            }),
        }
    }
    Ok((loaded, broken))
}

async fn verify_version(
    version: KubeVersion,
    label: Option<&str>,
    targets: &[Target],
    options: &CliVerifyOptions,
) -> anyhow::Result<Vec<crate::check::CheckResult>> {
    let cluster = start(options.provider, version).await?;
    println!("cluster: {}", cluster.describe());
    let named = |name: &str| label.map_or_else(|| name.to_owned(), |v| format!("{name}@{v}"));
    let mut all = Vec::new();
    if let Some(budget) = options.budget {
        let mut check = budget_check(&cluster, budget);
        check.target = named(&check.target);
        print_results(&check.target.clone(), std::slice::from_ref(&check), options.quiet);
        all.push(check);
    }
    for target in targets {
        let what = format!("verifying target {} ({})", named(&target.name), target.dir.display());
        let dir = options.bundle.join(named(&target.name));
        let verify_options = VerifyOptions::default().with_update(options.update).with_bundle(&dir);
        let mut results = crate::progress::step(&what, verify_target_with(&cluster, target, &verify_options)).await;
        for r in &mut results {
            r.target = named(&r.target);
        }
        print_results(&named(&target.name), &results, options.quiet);
        if results.iter().any(|r| !r.passed) && dir.join("failed-checks.txt").is_file() {
            let files = std::fs::read_dir(&dir).map(Iterator::count).unwrap_or_default();
            println!(
                "  failure bundle: {} ({files} files, taken before teardown)",
                dir.display()
            );
        }
        all.extend(results);
    }
    let t = cluster.timings();
    if cluster.provider() != crate::provider::Provider::Local {
        println!(
            "startup{}: {:.2}s ({}{})",
            label.map(|v| format!(" of {v}")).unwrap_or_default(),
            t.total.as_secs_f64(),
            super::cluster::tool_phases(&cluster),
            cluster.describe()
        );
    } else {
        println!(
            "startup{}: {:.2}s (binaries {:.2}s, etcd template {:.2}s, certificates {:.2}s, etcd {:.2}s, kube-apiserver {:.2}s)",
            label.map(|v| format!(" of {v}")).unwrap_or_default(),
            t.total.as_secs_f64(),
            t.assets.as_secs_f64(),
            t.template.as_secs_f64(),
            t.pki.as_secs_f64(),
            t.etcd.as_secs_f64(),
            t.apiserver.as_secs_f64()
        );
    }
    if all.iter().any(|r| !r.passed) && options.keep_on_failure {
        println!("\nkube-harness: keeping the cluster for inspection (--keep-on-failure); Ctrl-C to stop");
        println!("  export KUBECONFIG={}", cluster.kubeconfig_path().display());
        println!(
            "  export PATH={}:$PATH",
            super::path_prefix(&cluster)?.to_string_lossy()
        );
        for (name, value) in super::port_variables(&cluster) {
            println!("  export {name}={value}");
        }
        println!("  logs: {}", cluster.info().run_dir.display());
        wait_for_shutdown_signal().await?;
    }
    cluster.stop();
    Ok(all)
}
