//! The measuring program behind `scripts/bench`: start-up against Go envtest and a bare shell
//! start of the same binaries (interleaved rounds), aggregation readiness, per-test overhead,
//! the harness's own peak memory and the recorded cold build times. Writes
//! `<out>/benchmarks.json` and the generated part of `<out>/BENCHMARKS.md`.
//!
//! Usage: see `scripts/bench` (it builds the envtest program and times the suite first).

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, bail};
use clap::Parser;
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{DynamicObject, PostParams};
use kube_harness::target::Target;
use kube_harness::{Cluster, ControlPlane};
use serde_json::{Value, json};

#[derive(Parser)]
struct Args {
    /// Rounds of each measurement (median reported).
    #[arg(long, default_value_t = 10)]
    rounds: usize,
    /// The Go envtest program (scripts/bench-envtest, built).
    #[arg(long)]
    envtest: PathBuf,
    /// kube-rs's `envtest` crate (scripts/bench-envtest-rs, built), a further contender.
    #[arg(long)]
    envtest_rs: Option<PathBuf>,
    /// The bare start script (scripts/bench-bare).
    #[arg(long)]
    bare: PathBuf,
    /// Wall times of the warm scenario suite (the `tests/` package), measured by scripts/bench;
    /// repeat the flag per run (the median is reported).
    #[arg(long)]
    suite_s: Vec<f64>,
    /// Wall time of every test in the workspace (scenarios plus the harness's own tests).
    #[arg(long)]
    workspace_s: Option<f64>,
    /// Targets for the aggregation measurement.
    #[arg(long, default_values = ["fixtures/targets/requests", "fixtures/targets/wardle"])]
    target: Vec<PathBuf>,
    /// Where benchmarks.json and BENCHMARKS.md go.
    #[arg(long, default_value = "docs")]
    out: PathBuf,
}

/// Median and spread (min, max) of a sample.
fn stats(v: &[f64]) -> Value {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let median = if s.is_empty() {
        f64::NAN
    } else if s.len() % 2 == 1 {
        s[s.len() / 2]
    } else {
        (s[s.len() / 2 - 1] + s[s.len() / 2]) / 2.0
    };
    json!({
        "median": round3(median),
        "min": round3(s.first().copied().unwrap_or(f64::NAN)),
        "max": round3(s.last().copied().unwrap_or(f64::NAN)),
        "n": s.len(),
    })
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

fn median(v: &Value) -> f64 {
    v["median"].as_f64().unwrap_or(f64::NAN)
}

/// The harness: `start()` until a first request (list namespaces) is answered.
async fn harness_ready(controller_manager: bool) -> anyhow::Result<f64> {
    let t = Instant::now();
    let builder = ControlPlane::builder();
    let builder = if controller_manager {
        builder
    } else {
        builder.without_controller_manager()
    };
    let cluster = builder.start().await?;
    let client = cluster.client().await?;
    kube::Api::<Namespace>::all(client).list(&Default::default()).await?;
    let ready = t.elapsed().as_secs_f64();
    cluster.stop();
    Ok(ready)
}

/// The harness with 2 kwok nodes: `start()` (nodes Ready) until a first request is answered.
async fn harness_ready_with_nodes() -> anyhow::Result<f64> {
    let t = Instant::now();
    let cluster = ControlPlane::builder().with_nodes(2).start().await?;
    let client = cluster.client().await?;
    kube::Api::<Namespace>::all(client).list(&Default::default()).await?;
    let ready = t.elapsed().as_secs_f64();
    cluster.stop();
    Ok(ready)
}

/// On a plane with nodes: seconds from creating a Deployment of 3 replicas to its
/// `Available` condition with 3 ready replicas (kube-controller-manager, kube-scheduler and
/// kwok in turn).
async fn deployment_available(cluster: &Cluster, i: usize) -> anyhow::Result<f64> {
    use k8s_openapi::api::apps::v1::Deployment;
    let ns = cluster.test_namespace("deploy").await?;
    let api: kube::Api<Deployment> = ns.api();
    let name = format!("web-{i}");
    let deployment: Deployment = serde_json::from_value(json!({
        "metadata": {"name": name},
        "spec": {
            "replicas": 3,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "web", "image": "nginx:1"}]}},
        },
    }))?;
    let t = Instant::now();
    api.create(&Default::default(), &deployment).await?;
    let available = kube::runtime::wait::await_condition(api, &name, |d: Option<&Deployment>| {
        d.and_then(|d| d.status.as_ref()).is_some_and(|s| {
            s.ready_replicas == Some(3)
                && s.conditions
                    .iter()
                    .flatten()
                    .any(|c| c.type_.as_deref() == Some("Available") && c.status.as_deref() == Some("True"))
        })
    });
    tokio::time::timeout(std::time::Duration::from_secs(30), available)
        .await
        .context("the Deployment was not Available within 30 s")??;
    Ok(t.elapsed().as_secs_f64())
}

/// Go envtest with its default settings, on the same binaries.
fn envtest_ready(program: &Path, assets: &Path) -> anyhow::Result<f64> {
    let out = Command::new(program)
        .env("KUBEBUILDER_ASSETS", assets)
        .output()
        .with_context(|| format!("run {}", program.display()))?;
    if !out.status.success() {
        bail!("envtest failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    let line: Value = serde_json::from_slice(&out.stdout).context("envtest output")?;
    line["ready_s"].as_f64().context("envtest output has no ready_s")
}

/// The command lines of a harness cluster, rewritten to a directory of our own, for the bare
/// script: same binaries, same flags, fresh ports and an empty data directory per round.
struct BareSetup {
    dir: PathBuf,
    etcd: Vec<String>,
    apiserver: Vec<String>,
    ports: Vec<String>,
}

impl BareSetup {
    fn from(cluster: &Cluster, dir: &Path) -> anyhow::Result<Self> {
        let run_dir = cluster.info().run_dir.to_string_lossy().into_owned();
        let pki = dir.join("pki");
        std::fs::create_dir_all(&pki)?;
        for entry in std::fs::read_dir(cluster.pki().context("a local cluster has its PKI")?.dir())? {
            let entry = entry?;
            std::fs::copy(entry.path(), pki.join(entry.file_name()))?;
        }
        let rewrite = |args: &[OsString]| -> Vec<String> {
            args.iter()
                .map(|a| a.to_string_lossy().replace(&run_dir, &dir.to_string_lossy()))
                .collect()
        };
        let lines = cluster.command_lines();
        let command = |component: &str| -> anyhow::Result<Vec<String>> {
            let (_, args) = lines
                .iter()
                .find(|(c, _)| *c == component)
                .with_context(|| format!("no {component} command line"))?;
            Ok(rewrite(args))
        };
        let (etcd, apiserver) = (command("etcd")?, command("kube-apiserver")?);
        let port_of = |args: &[String], flag: &str| -> anyhow::Result<String> {
            let value = args
                .iter()
                .find_map(|a| a.strip_prefix(flag))
                .with_context(|| format!("no {flag}"))?;
            Ok(value.rsplit(':').next().unwrap_or_default().to_owned())
        };
        let ports = vec![
            port_of(&etcd, "--listen-client-urls=")?,
            port_of(&etcd, "--listen-peer-urls=")?,
            port_of(&apiserver, "--secure-port=")?,
        ];
        Ok(Self {
            dir: dir.to_owned(),
            etcd,
            apiserver,
            ports,
        })
    }

    fn round(&self, script: &Path) -> anyhow::Result<f64> {
        let fresh: Vec<String> = (0..3)
            .map(|_| {
                std::net::TcpListener::bind(("127.0.0.1", 0))
                    .and_then(|l| l.local_addr())
                    .map(|a| a.port().to_string())
            })
            .collect::<Result<_, _>>()?;
        let data = self.dir.join("etcd-data");
        let _ = std::fs::remove_dir_all(&data);
        let rewrite = |args: &[String]| -> String {
            args.iter()
                .map(|a| {
                    let mut a = a.clone();
                    for (old, new) in self.ports.iter().zip(&fresh) {
                        a = a.replace(&format!(":{old}"), &format!(":{new}"));
                        if a == format!("--secure-port={old}") {
                            a = format!("--secure-port={new}");
                        }
                    }
                    if a.starts_with("--data-dir=") {
                        a = format!("--data-dir={}", data.display());
                    }
                    a + "\n"
                })
                .collect()
        };
        std::fs::write(self.dir.join("etcd.args"), rewrite(&self.etcd))?;
        std::fs::write(self.dir.join("kube-apiserver.args"), rewrite(&self.apiserver))?;
        let url = format!("https://127.0.0.1:{}/readyz", fresh[2]);
        let out = Command::new(script).arg(&self.dir).arg(&url).output()?;
        if !out.status.success() {
            bail!("bare start failed: {}", String::from_utf8_lossy(&out.stderr));
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().parse()?)
    }
}

/// Backend ready → APIService Available, plus the first List served through the aggregator.
async fn availability(cluster: &Cluster, dir: &Path, rounds: usize) -> anyhow::Result<(String, Value, Value)> {
    let target = Target::load(dir)?;
    let client = cluster.client().await?;
    // The first bring-up may build the backend; it is not measured.
    cluster.up_target(&target).await?.down(cluster).await?;
    let path = list_path(&target).context("target serves no APIService to list")?;
    let (mut available, mut with_list) = (vec![], vec![]);
    for _ in 0..rounds {
        let running = cluster.up_target(&target).await?;
        let t = Instant::now();
        let request = http::Request::get(&path).body(Vec::new())?;
        client
            .request_text(request)
            .await
            .with_context(|| format!("GET {path}"))?;
        let a = running.timings().apiservices_available.as_secs_f64();
        available.push(a);
        with_list.push(a + t.elapsed().as_secs_f64());
        running.down(cluster).await?;
    }
    Ok((target.name.clone(), stats(&available), stats(&with_list)))
}

/// Backend ready → kube-apiserver's first admitted request through the target's admission
/// webhooks (`webhooks_answered`: configurations applied, a dry-run create admitted), and a
/// real create right after.
async fn webhook_ready(cluster: &Cluster, dir: &Path, rounds: usize) -> anyhow::Result<(Value, Value)> {
    let target = Target::load(dir)?;
    let client = cluster.client().await?;
    cluster.up_target(&target).await?.down(cluster).await?;
    let (mut answered, mut with_create) = (vec![], vec![]);
    for i in 0..rounds {
        let running = cluster.up_target(&target).await?;
        let t = Instant::now();
        let body = serde_json::json!({
            "apiVersion": "webhook.example.com/v1beta1", "kind": "Sample",
            "metadata": {"name": format!("bench-{i}"), "namespace": "webhook-system"},
            "spec": {"text": "bench"},
        });
        let path = "/apis/webhook.example.com/v1beta1/namespaces/webhook-system/samples";
        let request = http::Request::post(path)
            .header("content-type", "application/json")
            .body(serde_json::to_vec(&body)?)?;
        client
            .request_text(request)
            .await
            .with_context(|| format!("POST {path}"))?;
        let a = running.timings().webhooks_answered.as_secs_f64();
        answered.push(a);
        with_create.push(a + t.elapsed().as_secs_f64());
        running.down(cluster).await?;
    }
    Ok((stats(&answered), stats(&with_create)))
}

/// An `assert_eventually` that already holds: ms from the call to its answer (one list, no
/// sleep), over `rounds` calls on one ConfigMap.
async fn assert_that_holds(cluster: &Cluster, rounds: usize) -> anyhow::Result<Vec<f64>> {
    let resource = kube::discovery::ApiResource::from_gvk(&kube::api::GroupVersionKind::gvk("", "v1", "ConfigMap"));
    let api: kube::Api<DynamicObject> = kube::Api::namespaced_with(cluster.client().await?, "default", &resource);
    let config_map: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "bench-assert"}, "data": {"ready": "yes"}
    }))?;
    api.create(&PostParams::default(), &config_map).await?;
    let expected = json!({"data": {"ready": "yes"}});
    let mut ms = Vec::new();
    for _ in 0..rounds {
        let t = Instant::now();
        kube_harness::check::assert_eventually(&api, "bench-assert", &expected, std::time::Duration::from_secs(5))
            .await?;
        ms.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    api.delete("bench-assert", &Default::default()).await?;
    Ok(ms)
}

/// `verify` of the shipped operator target (`widgets`: bring-up, 11 steps, teardown), on its
/// own cluster each round; every check must pass.
async fn operator_verify(rounds: usize) -> anyhow::Result<Vec<f64>> {
    let target = Target::load("fixtures/targets/widgets")?;
    let mut seconds = Vec::new();
    for _ in 0..rounds {
        let cluster = ControlPlane::builder().start().await?;
        let t = Instant::now();
        let results = kube_harness::check::verify_target(&cluster, &target).await;
        seconds.push(t.elapsed().as_secs_f64());
        cluster.stop();
        if let Some(failed) = results.iter().find(|r| !r.passed) {
            bail!("widgets: {} failed: {}", failed.check, failed.detail);
        }
    }
    Ok(seconds)
}

/// The collection path of the first resource the target's first APIService serves.
fn list_path(target: &Target) -> Option<String> {
    let spec = target.plan.api_services.first()?.object.spec.as_ref()?;
    let group = spec.group.as_deref()?;
    let version = spec.version.as_deref()?;
    let resource = match group {
        "k8s.wujiuye.com" => "requests",
        "wardle.example.com" => "flunders",
        _ => return None,
    };
    Some(format!("/apis/{group}/{version}/namespaces/default/{resource}"))
}

/// A test's namespace (`Cluster::test_namespace`), an admin and a user client, then
/// teardown (namespace deleted).
async fn per_test(cluster: &Cluster) -> anyhow::Result<f64> {
    let t = Instant::now();
    let ns = cluster.test_namespace("bench").await?;
    let _admin = cluster.client().await?;
    let _alice = cluster.user("alice", &["devs"]).await?;
    ns.delete().await?;
    Ok(t.elapsed().as_secs_f64() * 1000.0)
}

/// A fresh CRD through `Cluster::install_crds`, then the first LIST and the first create of
/// its kind (ms each; a LIST that does not answer 2xx is an error, as it would fail a test).
async fn crd_first_use(cluster: &Cluster, i: usize) -> anyhow::Result<(f64, f64, f64)> {
    let group = format!("bench{i}-{}.example.com", std::process::id());
    let crd = serde_json::from_value(json!({
        "metadata": {"name": format!("widgets.{group}")},
        "spec": {"group": group, "scope": "Namespaced",
                 "names": {"plural": "widgets", "singular": "widget", "kind": "Widget", "listKind": "WidgetList"},
                 "versions": [{"name": "v1", "served": true, "storage": true,
                               "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}}]}
    }))?;
    let ms = |t: Instant| t.elapsed().as_secs_f64() * 1000.0;
    let t = Instant::now();
    cluster.install_crds([crd]).await?;
    let install = ms(t);
    let resource = kube::discovery::ApiResource {
        group: group.clone(),
        version: "v1".into(),
        api_version: format!("{group}/v1"),
        kind: "Widget".into(),
        plural: "widgets".into(),
    };
    let api: kube::Api<DynamicObject> = kube::Api::namespaced_with(cluster.client().await?, "default", &resource);
    let t = Instant::now();
    api.list(&Default::default())
        .await
        .context("the first LIST after install_crds")?;
    let list = ms(t);
    let widget: DynamicObject = serde_json::from_value(
        json!({"apiVersion": format!("{group}/v1"), "kind": "Widget", "metadata": {"name": "w"}}),
    )?;
    let t = Instant::now();
    api.create(&PostParams::default(), &widget).await?;
    Ok((install, list, ms(t)))
}

/// Resolving the cached binaries with their verification stamp removed: every binary hashed
/// (what the first run after a cache restore does; later runs compare the stamp only).
fn verify_without_stamp(version: kube_harness::assets::KubeVersion) -> anyhow::Result<f64> {
    let resolver = kube_harness::assets::Resolver::new(version);
    let _ = std::fs::remove_file(resolver.cache_entry().join(".verified"));
    let t = Instant::now();
    resolver.resolve()?;
    Ok(t.elapsed().as_secs_f64())
}

/// kube-controller-manager's cost per start: seconds from the cluster being handed out to
/// its `/healthz` answering, and the CPU seconds it used in its first 3 s (from
/// `/proc/<pid>/stat`, user + system).
async fn controller_manager_cost() -> anyhow::Result<(f64, f64)> {
    let cluster = ControlPlane::builder().start().await?;
    let t = Instant::now();
    cluster.wait_for_controllers(std::time::Duration::from_secs(30)).await?;
    let healthy = t.elapsed().as_secs_f64();
    let pid = *cluster.pids().get(2).context("no kube-controller-manager pid")?;
    tokio::time::sleep(std::time::Duration::from_secs(3).saturating_sub(t.elapsed())).await;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the parenthesised command: state is field 3, utime 14, stime 15.
    let rest = stat
        .rsplit_once(") ")
        .map(|(_, r)| r)
        .context("unexpected /proc stat")?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 =
        fields.get(11).context("utime")?.parse::<f64>()? + fields.get(12).context("stime")?.parse::<f64>()?;
    // Linux reports in clock ticks of 1/100 s (USER_HZ).
    Ok((healthy, ticks / 100.0))
}

/// Peak resident memory of this process (children not included), in MB.
fn peak_rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        })
        .map_or(f64::NAN, |kb| round3(kb / 1024.0))
}

/// Build times recorded in the cache's build logs (`# building …: N s` lines).
fn recorded_builds(cache_root: &Path) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    let Ok(entries) = std::fs::read_dir(cache_root) else {
        return out;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !(name.starts_with("build-") && name.ends_with(".log")) {
            continue;
        }
        let Ok(text) = std::fs::read_to_string(entry.path()) else {
            continue;
        };
        for line in text.lines() {
            let Some(rest) = line.strip_prefix("# building ") else {
                continue;
            };
            let Some((what, secs)) = rest.rsplit_once(": ") else {
                continue;
            };
            let what = what.split(" (").next().unwrap_or(what).to_owned();
            if let Ok(s) = secs.trim_end_matches('s').parse::<f64>() {
                out.insert(what, s);
            }
        }
    }
    out
}

fn ratio(a: f64, b: f64) -> f64 {
    round3(a / b)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let rounds = args.rounds.max(1);
    eprintln!("bench: warming up (binaries, etcd template)");
    let warm = ControlPlane::builder().start().await?;
    let assets = warm.info().assets_dir.clone();
    let version = warm.info().version;
    let scratch = tempdir()?;
    let bare = BareSetup::from(&warm, &scratch)?;
    warm.stop();

    let (mut harness, mut envtest, mut bare_s, mut envtest_rs) = (vec![], vec![], vec![], vec![]);
    let (mut without_kcm, mut with_nodes) = (vec![], vec![]);
    let contenders = if args.envtest_rs.is_some() { 6 } else { 5 };
    for round in 0..rounds {
        // Rotate the order so no contender always runs first (or right after another).
        for k in 0..contenders {
            match (round + k) % contenders {
                0 => harness.push(harness_ready(true).await?),
                1 => envtest.push(envtest_ready(&args.envtest, &assets)?),
                2 => bare_s.push(bare.round(&args.bare)?),
                3 => without_kcm.push(harness_ready(false).await?),
                4 => with_nodes.push(harness_ready_with_nodes().await?),
                _ => {
                    if let Some(program) = &args.envtest_rs {
                        envtest_rs.push(envtest_ready(program, &assets)?);
                    }
                }
            }
        }
        eprintln!(
            "bench: ready round {round}: harness {:.3}s, envtest {:.3}s, bare {:.3}s, envtest crate {}",
            harness[round],
            envtest[round],
            bare_s[round],
            envtest_rs.get(round).map_or("–".to_owned(), |s| format!("{s:.3}s"))
        );
    }
    let _ = std::fs::remove_dir_all(&scratch);
    let (h, e, b) = (stats(&harness), stats(&envtest), stats(&bare_s));
    let er = (!envtest_rs.is_empty()).then(|| stats(&envtest_rs));
    let (mut kcm_healthy, mut kcm_cpu) = (vec![], vec![]);
    for _ in 0..rounds.min(3) {
        let (healthy, cpu) = controller_manager_cost().await?;
        kcm_healthy.push(healthy);
        kcm_cpu.push(cpu);
    }
    eprintln!("bench: kube-controller-manager healthy after {kcm_healthy:?} s, CPU in its first 3 s {kcm_cpu:?} s");
    let verify = verify_without_stamp(version)?;
    let mut fresh_namespace = vec![];
    for _ in 0..rounds.min(3) {
        // What a test waits for first on a plane that just started: its namespace (once 1-2 s,
        // waiting for kube-controller-manager's `default` ServiceAccount).
        let cluster = ControlPlane::builder().start().await?;
        let t = Instant::now();
        let ns = cluster.test_namespace("fresh").await?;
        fresh_namespace.push(t.elapsed().as_secs_f64() * 1000.0);
        drop(ns);
        cluster.stop();
    }
    eprintln!("bench: test_namespace on a fresh plane: {fresh_namespace:?} ms");
    let nodes_plane = ControlPlane::builder().with_nodes(2).start().await?;
    let mut deployment_s = vec![];
    for i in 0..rounds.max(3) {
        deployment_s.push(deployment_available(&nodes_plane, i).await?);
    }
    nodes_plane.stop();
    eprintln!("bench: with nodes: ready {with_nodes:?} s, a 3-replica Deployment Available after {deployment_s:?} s");

    let cluster = ControlPlane::builder().start().await?;
    let mut aggregation = serde_json::Map::new();
    for dir in &args.target {
        let (name, available, with_list) = availability(&cluster, dir, rounds).await?;
        eprintln!("bench: {name}: ready→Available {available}, +first List {with_list}");
        aggregation.insert(
            name,
            json!({"available_s": available, "available_and_list_s": with_list}),
        );
    }
    let (webhook_answered, webhook_create) =
        webhook_ready(&cluster, Path::new("fixtures/targets/webhooks"), rounds).await?;
    eprintln!("bench: webhooks: backend ready→first admitted request {webhook_answered}, +a create {webhook_create}");
    let mut overhead = vec![];
    for _ in 0..rounds.max(10) {
        overhead.push(per_test(&cluster).await?);
    }
    let (mut crd_install, mut crd_list, mut crd_create) = (vec![], vec![], vec![]);
    for i in 0..rounds.max(5) {
        let (install, list, create) = crd_first_use(&cluster, i).await?;
        crd_install.push(install);
        crd_list.push(list);
        crd_create.push(create);
    }
    eprintln!("bench: CRD install {crd_install:?} ms, first LIST {crd_list:?} ms, first create {crd_create:?} ms");
    let assert_ms = assert_that_holds(&cluster, rounds.max(10)).await?;
    eprintln!("bench: an assert that already holds: {assert_ms:?} ms");
    cluster.stop();
    let operator_s = operator_verify(rounds.min(3)).await?;
    eprintln!("bench: verify of the operator target: {operator_s:?} s");
    let overhead = stats(&overhead);
    let rss = peak_rss_mb();
    let builds = recorded_builds(&kube_harness::assets::Resolver::new(version).cache_root());

    let available = aggregation
        .values()
        .map(|v| median(&v["available_and_list_s"]))
        .fold(f64::NAN, f64::max);
    let report = json!({
        "kubernetes": version.to_string(),
        "rounds": rounds,
        "ready_vs_envtest": ratio(median(&h), median(&e)),
        "ready_vs_bare": ratio(median(&h), median(&b)),
        "ready_with_nodes_vs_without": ratio(median(&stats(&with_nodes)), median(&h)),
        "deployment_available_s": stats(&deployment_s),
        "ready_vs_envtest_crate": er.as_ref().map(|er| ratio(median(&h), median(er))),
        "available_s": round3(available),
        "suite_s": (!args.suite_s.is_empty()).then(|| median(&stats(&args.suite_s))),
        "suite_runs_s": args.suite_s,
        "workspace_s": args.workspace_s,
        "per_test_ms": median(&overhead),
        "verify_binaries_s": round3(verify),
        "rss_mb": rss,
        "ready_s": {"kube_harness": h, "envtest": e, "bare": b, "envtest_crate": er, "kube_harness_without_controller_manager": stats(&without_kcm), "kube_harness_with_2_nodes": stats(&with_nodes)},
        "controller_manager": {"healthy_after_ready_s": stats(&kcm_healthy), "cpu_first_3s": stats(&kcm_cpu)},
        "aggregation": aggregation,
        "webhooks": {"answered_s": webhook_answered, "answered_and_create_s": webhook_create},
        "steps": {"assert_holds_ms": stats(&assert_ms), "operator_verify_s": stats(&operator_s)},
        "per_test_ms_detail": overhead,
        "test_namespace_fresh_ms": stats(&fresh_namespace),
        "crd_first_use_ms": {"install": stats(&crd_install), "first_list": stats(&crd_list), "first_create": stats(&crd_create)},
        "cold_build_s": builds,
    });
    std::fs::create_dir_all(&args.out)?;
    let json_path = args.out.join("benchmarks.json");
    std::fs::write(&json_path, serde_json::to_string_pretty(&report)? + "\n")?;
    write_markdown(&args.out.join("BENCHMARKS.md"), &report)?;
    println!("{}", table(&report));
    eprintln!("bench: wrote {} and BENCHMARKS.md", json_path.display());
    Ok(())
}

fn tempdir() -> anyhow::Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("kube-harness-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// The generated table: metric, target, measured median, ratio to the target.
fn table(r: &Value) -> String {
    let s = |v: &Value| v.as_f64().map_or_else(|| "not measured".to_owned(), |x| format!("{x}"));
    let unit = |v: &Value, u: &str| {
        v.as_f64()
            .map_or_else(|| "not measured".to_owned(), |x| format!("{x} {u}"))
    };
    let h = median(&r["ready_s"]["kube_harness"]);
    let mut rows = vec![
        format!(
            "| cluster ready vs Go envtest | ≤ 0.8× | {h:.3} s vs {:.3} s | {}× |",
            median(&r["ready_s"]["envtest"]),
            s(&r["ready_vs_envtest"])
        ),
        match r["ready_s"]["envtest_crate"].is_object() {
            true => format!(
                "| cluster ready vs kube-rs's `envtest` crate 0.3.0 | ≤ 0.3× | {h:.3} s vs {:.3} s | {}× |",
                median(&r["ready_s"]["envtest_crate"]),
                s(&r["ready_vs_envtest_crate"])
            ),
            false => {
                "| cluster ready vs kube-rs's `envtest` crate 0.3.0 | ≤ 0.3× | not measured (full benchmark only) | – |"
                    .to_owned()
            }
        },
        format!(
            "| cluster ready without kube-controller-manager (envtest's set) | – | {:.3} s | – |",
            median(&r["ready_s"]["kube_harness_without_controller_manager"])
        ),
        format!(
            "| kube-controller-manager: healthy after the cluster is handed out | – | {:.3} s | – |",
            median(&r["controller_manager"]["healthy_after_ready_s"])
        ),
        format!(
            "| kube-controller-manager: CPU seconds in its first 3 s (per start) | – | {:.2} s | – |",
            median(&r["controller_manager"]["cpu_first_3s"])
        ),
        format!(
            "| cluster ready vs bare etcd + kube-apiserver | ≤ 1.0× | {h:.3} s vs {:.3} s | {}× |",
            median(&r["ready_s"]["bare"]),
            s(&r["ready_vs_bare"])
        ),
        format!(
            "| aggregation ready (backend ready → Available + first List) | ≤ 0.5 s | {} | {} |",
            unit(&r["available_s"], "s"),
            r["available_s"]
                .as_f64()
                .map_or("–".into(), |x| format!("{:.2}× of target", x / 0.5))
        ),
        format!(
            "| webhook ready (backend ready → first admitted request through kube-apiserver) | ≤ 0.5 s | {} | {} |",
            unit(&r["webhooks"]["answered_s"]["median"], "s"),
            r["webhooks"]["answered_s"]["median"]
                .as_f64()
                .map_or("–".into(), |x| format!("{:.2}× of target", x / 0.5))
        ),
        format!(
            "| an `assert` step that already holds (one list, no sleep) | ≤ 10 ms | {} | {} |",
            unit(&r["steps"]["assert_holds_ms"]["median"], "ms"),
            r["steps"]["assert_holds_ms"]["median"]
                .as_f64()
                .map_or("–".into(), |x| format!("{:.2}× of target", x / 10.0))
        ),
        format!(
            "| `verify` of the operator target (widgets: bring-up, 11 steps, teardown) | – | {} | – |",
            unit(&r["steps"]["operator_verify_s"]["median"], "s"),
        ),
        format!(
            "| scenario suite (`tests/`), warm | ≤ 60 s | {} | {} |",
            unit(&r["suite_s"], "s"),
            r["suite_s"]
                .as_f64()
                .map_or("–".into(), |x| format!("{:.2}× of target", x / 60.0))
        ),
        format!(
            "| every workspace test (scenarios + the harness's own tests), warm | – | {} | – |",
            unit(&r["workspace_s"], "s"),
        ),
        format!(
            "| per-test overhead (namespace + clients + teardown) | ≤ 50 ms | {} | {:.2}× of target |",
            unit(&r["per_test_ms"], "ms"),
            r["per_test_ms"].as_f64().unwrap_or(f64::NAN) / 50.0
        ),
        format!(
            "| cluster ready with 2 kwok nodes (Ready) vs without | ≤ 1.3× | {} | {} |",
            unit(&r["ready_s"]["kube_harness_with_2_nodes"]["median"], "s"),
            r["ready_with_nodes_vs_without"]
                .as_f64()
                .map_or("–".into(), |x| format!("{x:.2}× (target 1.3×)"))
        ),
        format!(
            "| a 3-replica Deployment: create → Available (2 kwok nodes) | ≤ 2 s | {} | {} |",
            unit(&r["deployment_available_s"]["median"], "s"),
            r["deployment_available_s"]["median"]
                .as_f64()
                .map_or("–".into(), |x| format!("{:.2}× of target", x / 2.0))
        ),
        format!(
            "| `test_namespace` on a plane that just started | ≤ 50 ms | {} | {} |",
            unit(&r["test_namespace_fresh_ms"]["median"], "ms"),
            r["test_namespace_fresh_ms"]["median"]
                .as_f64()
                .map_or("–".into(), |x| format!("{:.2}× of target", x / 50.0))
        ),
        format!(
            "| fresh CRD: `install_crds` (Established, listable) | – | {:.1} ms | – |",
            median(&r["crd_first_use_ms"]["install"])
        ),
        format!(
            "| fresh CRD: first LIST after `install_crds` | – | {:.1} ms | – |",
            median(&r["crd_first_use_ms"]["first_list"])
        ),
        format!(
            "| fresh CRD: first create after `install_crds` | ≤ 200 ms | {:.1} ms | {:.2}× of target |",
            median(&r["crd_first_use_ms"]["first_create"]),
            median(&r["crd_first_use_ms"]["first_create"]) / 200.0
        ),
        format!(
            "| verifying the cached binaries (all hashed, no stamp) | ≤ 1 s | {} | – |",
            unit(&r["verify_binaries_s"], "s")
        ),
        format!(
            "| harness peak RSS (children excluded) | ≤ 30 MB | {} | {:.2}× of target |",
            unit(&r["rss_mb"], "MB"),
            r["rss_mb"].as_f64().unwrap_or(f64::NAN) / 30.0
        ),
    ];
    if let Some(builds) = r["cold_build_s"].as_object() {
        for (what, secs) in builds {
            rows.push(format!(
                "| provisioning: {what} (last recorded build) | – | {} | – |",
                unit(secs, "s")
            ));
        }
    }
    format!(
        "| metric | target | measured (median) | ratio |\n|---|---|---|---|\n{}\n",
        rows.join("\n")
    )
}

/// Replace the text between the bench markers of BENCHMARKS.md (the rest is hand-written).
fn write_markdown(path: &Path, r: &Value) -> anyhow::Result<()> {
    const BEGIN: &str = "<!-- bench:begin -->";
    const END: &str = "<!-- bench:end -->";
    let spreads = ["kube_harness", "envtest", "bare"]
        .iter()
        .map(|k| {
            let v = &r["ready_s"][*k];
            format!("{k} {}–{} s", v["min"], v["max"])
        })
        .collect::<Vec<_>>()
        .join(", ");
    let generated = format!(
        "{BEGIN}\n_Generated by `scripts/bench` ({} rounds, Kubernetes {}); raw numbers in \
         `benchmarks.json`._\n\n{}\nSpread of cluster-ready (min–max): {spreads}.\n{END}",
        r["rounds"],
        r["kubernetes"].as_str().unwrap_or("?"),
        table(r)
    );
    let old = std::fs::read_to_string(path).unwrap_or_default();
    let new = match (old.find(BEGIN), old.find(END)) {
        (Some(a), Some(b)) if a < b => format!("{}{generated}{}", &old[..a], &old[b + END.len()..]),
        _ => format!("# Benchmarks\n\n{generated}\n"),
    };
    std::fs::write(path, new)?;
    Ok(())
}
