//! One cluster for several test processes: `kube-harness up --detach --env-file F` starts it in
//! the background, each process's `kube_harness::shared()` attaches to it through
//! `KUBE_HARNESS_CLUSTER` (what a cargo-nextest setup script sets up), and `kube-harness down`
//! stops it, leaving no process or run directory.

use std::collections::BTreeMap;
use std::process::Command;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::ConfigMap;
use kube::Api;
use kube::api::{ObjectMeta, PostParams};

const BIN: &str = env!("CARGO_BIN_EXE_kube-harness");
const PROBE: &str = "KH_ATTACH_PROBE";

/// The child side: a no-op unless `KH_ATTACH_PROBE` names a ConfigMap to create.
#[tokio::test]
async fn attach_probe() -> anyhow::Result<()> {
    let Ok(name) = std::env::var(PROBE) else {
        return Ok(());
    };
    let cluster = kube_harness::shared().await?;
    assert!(cluster.is_attached(), "expected to attach, not start");
    let cms: Api<ConfigMap> = Api::namespaced(cluster.client().await?, "default");
    let cm = ConfigMap {
        metadata: ObjectMeta {
            name: Some(name),
            ..Default::default()
        },
        ..Default::default()
    };
    cms.create(&PostParams::default(), &cm).await?;
    let names: Vec<String> = cms
        .list(&Default::default())
        .await?
        .items
        .into_iter()
        .filter_map(|c| c.metadata.name)
        .collect();
    // A user certificate issued here with the client CA loaded from the run directory works.
    let alice = cluster.user("alice", &["devs"]).await?;
    let denied = Api::<ConfigMap>::namespaced(alice, "default")
        .list(&Default::default())
        .await;
    let forbidden = matches!(denied, Err(kube::Error::Api(ref s)) if s.code == 403);
    println!(
        "PROBE server={} seen={} alice-forbidden={forbidden}",
        cluster.server_url(),
        names.join(",")
    );
    Ok(())
}

fn env_file_vars(path: &std::path::Path) -> anyhow::Result<BTreeMap<String, String>> {
    Ok(std::fs::read_to_string(path)?
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect())
}

fn probe(vars: &BTreeMap<String, String>, name: &str) -> anyhow::Result<String> {
    let out = Command::new(std::env::current_exe()?)
        .args(["--exact", "attach_probe", "--nocapture"])
        .envs(vars)
        .env(PROBE, name)
        .output()?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    anyhow::ensure!(
        out.status.success(),
        "probe {name} failed: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
        .lines()
        .find_map(|l| l.split_once("PROBE ").map(|(_, rest)| rest.to_owned()))
        .ok_or_else(|| anyhow::anyhow!("probe {name} printed no report: {stdout}"))
}

#[test]
fn two_test_processes_share_one_detached_cluster_and_down_stops_it() -> anyhow::Result<()> {
    let env_file = std::env::temp_dir().join(format!("kh-attach-{}.env", std::process::id()));
    let _ = std::fs::remove_file(&env_file);
    let up = Command::new(BIN)
        .args(["up", "--detach", "--env-file"])
        .arg(&env_file)
        .output()?;
    assert!(up.status.success(), "{}", String::from_utf8_lossy(&up.stderr));
    let vars = env_file_vars(&env_file)?;
    let handle_file = vars
        .get("KUBE_HARNESS_CLUSTER")
        .ok_or_else(|| anyhow::anyhow!("no KUBE_HARNESS_CLUSTER in {vars:?}"))?;
    let handle: kube_harness::ClusterHandle = serde_json::from_str(&std::fs::read_to_string(handle_file)?)?;

    let first = probe(&vars, "from-first")?;
    let second = probe(&vars, "from-second")?;
    let server = format!("server={}", handle.info.server);
    assert!(
        first.starts_with(&server) && second.starts_with(&server),
        "{first} / {second}"
    );
    assert!(
        second.contains("from-first") && second.contains("from-second"),
        "{second}"
    );
    assert!(first.ends_with("alice-forbidden=true"), "{first}");

    // The handle's format, not the writer's version, decides: a handle without the field (as
    // written before it was recorded) attaches; one of another format is refused, saying so.
    assert_eq!(handle.format, kube_harness::cluster::HANDLE_FORMAT);
    let mut raw: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(handle_file)?)?;
    let copy = std::env::temp_dir().join(format!("kh-attach-{}-copy.json", std::process::id()));
    let rt = tokio::runtime::Runtime::new()?;
    if let Some(map) = raw.as_object_mut() {
        map.remove("format");
    }
    std::fs::write(&copy, raw.to_string())?;
    rt.block_on(kube_harness::Cluster::attach(&copy))?;
    raw["format"] = serde_json::json!(2);
    std::fs::write(&copy, raw.to_string())?;
    let err = rt
        .block_on(kube_harness::Cluster::attach(&copy))
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    let expected = format!(
        "its handle format is 2, and this kube-harness ({}) reads format 1",
        env!("CARGO_PKG_VERSION")
    );
    assert!(err.contains(&expected), "{err}");
    std::fs::remove_file(&copy)?;

    let down = Command::new(BIN).args(["down", "--env-file"]).arg(&env_file).output()?;
    assert!(down.status.success(), "{}", String::from_utf8_lossy(&down.stderr));
    let deadline = Instant::now() + Duration::from_secs(10);
    while handle.info.run_dir.exists() {
        assert!(
            Instant::now() < deadline,
            "run directory left: {:?}",
            handle.info.run_dir
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    for pid in [handle.owner_pid, handle.apiserver_pid, handle.etcd_pid] {
        assert!(
            !std::path::Path::new(&format!("/proc/{pid}/exe")).exists(),
            "pid {pid} still there"
        );
    }
    // Attaching now fails with the reason, not a hang.
    let err = rt
        .block_on(kube_harness::Cluster::attach(std::path::Path::new(handle_file)))
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(err.contains("cannot attach to the cluster in"), "{err}");
    let again = Command::new(BIN).args(["down", "--env-file"]).arg(&env_file).output()?;
    assert!(!again.status.success());
    assert!(
        String::from_utf8_lossy(&again.stderr).contains("(already stopped?)"),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
    std::fs::remove_file(&env_file)?;
    Ok(())
}
