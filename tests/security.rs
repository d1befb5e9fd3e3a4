//! Security promises, checked on a live cluster with a backend: every listening socket of the
//! cluster's processes and of the backend is on loopback; anonymous requests are refused;
//! private keys are 0600 inside 0700 directories.

use std::collections::HashSet;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use kube_harness::Capability;
use kube_harness::target::Target;

mod common;

/// Socket inodes held open by `pid`.
fn socket_inodes(pid: u32) -> HashSet<u64> {
    let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return HashSet::new();
    };
    fds.flatten()
        .filter_map(|fd| std::fs::read_link(fd.path()).ok())
        .filter_map(|link| {
            let link = link.to_string_lossy().into_owned();
            link.strip_prefix("socket:[")?.strip_suffix(']')?.parse().ok()
        })
        .collect()
}

/// Local addresses (hex, as /proc/net/tcp* shows them) of LISTEN sockets with these inodes.
fn listening(inodes: &HashSet<u64>) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            let (Some(local), Some(state), Some(inode)) = (f.get(1), f.get(3), f.get(9)) else {
                continue;
            };
            if *state == "0A" && inode.parse::<u64>().is_ok_and(|i| inodes.contains(&i)) {
                out.push((table.to_owned(), (*local).to_owned()));
            }
        }
    }
    out
}

fn is_loopback(table: &str, local: &str) -> bool {
    let addr = local.split(':').next().unwrap_or_default();
    if table.ends_with("tcp6") {
        // ::1, or ::ffff:127.x.x.x (IPv4-mapped loopback).
        addr == "00000000000000000000000001000000"
            || (addr.starts_with("0000000000000000FFFF0000") && addr.ends_with("7F"))
    } else {
        // Little-endian IPv4: 127.x.x.x ends with 7F.
        addr.ends_with("7F")
    }
}

#[tokio::test]
async fn every_listener_is_on_loopback() -> anyhow::Result<()> {
    let cluster = kube_harness::shared().await?;
    if let Some(reason) = cluster.lacks(Capability::OwnsProcesses) {
        println!("{reason}");
        return Ok(());
    }
    let dir = common::target_dir("requests");
    let running = cluster.up_target(&Target::load(dir)?).await?;
    let mut pids = cluster.pids();
    pids.extend(running.backend().map(|b| b.pid()));
    for pid in pids {
        let sockets = listening(&socket_inodes(pid));
        assert!(!sockets.is_empty(), "pid {pid} listens on nothing we can see");
        for (table, local) in sockets {
            assert!(
                is_loopback(&table, &local),
                "pid {pid} listens on {local} ({table}), not loopback"
            );
        }
    }
    running.down(cluster).await?;
    Ok(())
}

#[tokio::test]
async fn anonymous_requests_are_refused() -> anyhow::Result<()> {
    let cluster = kube_harness::shared().await?;
    let http = cluster.http_client(None)?;
    for path in ["/version", "/readyz", "/api/v1/namespaces"] {
        let status = http
            .get(format!("{}{path}", cluster.server_url()))
            .send()
            .await?
            .status();
        assert_eq!(status, reqwest::StatusCode::UNAUTHORIZED, "{path}");
    }
    Ok(())
}

#[tokio::test]
async fn private_keys_are_0600_in_0700_directories() -> anyhow::Result<()> {
    let cluster = kube_harness::shared().await?;
    if cluster.pki().is_none() {
        println!("skipped: the harness did not make this cluster's PKI, so it wrote no keys to look at");
        return Ok(());
    }
    let dir = common::target_dir("wardle");
    let running = cluster.up_target(&Target::load(dir)?).await?;
    let run_dir = &cluster.info().run_dir;
    let key_dirs = [run_dir.join("pki"), run_dir.join("targets/wardle/certs")];
    let mut keys = 0;
    for dir in key_dirs.iter().chain([run_dir]) {
        assert_eq!(
            std::fs::metadata(dir)?.permissions().mode() & 0o777,
            0o700,
            "{}",
            dir.display()
        );
    }
    for dir in &key_dirs {
        for entry in std::fs::read_dir(dir)?.flatten() {
            if entry.path().extension().is_some_and(|e| e == "key") {
                keys += 1;
                let mode = entry.metadata()?.permissions().mode() & 0o777;
                assert_eq!(mode, 0o600, "{}", entry.path().display());
            }
        }
    }
    assert!(keys >= 6, "only {keys} keys found");
    assert_eq!(
        std::fs::metadata(cluster.kubeconfig_path())?.permissions().mode() & 0o777,
        0o600
    );
    running.down(cluster).await?;
    Ok(())
}

/// Bearer tokens and private keys never reach logs, failure bundles or snapshots: a run that
/// issues a ServiceAccount token, uses it directly and through the aggregator, and writes a
/// failure bundle is scanned for the token, for every private key's body and for PEM private
/// key markers.
#[tokio::test]
async fn tokens_and_private_keys_never_reach_logs_bundles_or_snapshots() -> anyhow::Result<()> {
    let cluster = kube_harness::ControlPlane::builder().start().await?;
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let target = Target::load(root.join("fixtures/targets/requests"))?;
    let running = cluster.up_target(&target).await?;
    let token = cluster.service_account_token("default", "scanner", 600).await?;
    let as_sa = cluster.token_client(&token).await?;
    for path in [
        "/api/v1/namespaces",
        "/apis/k8s.wujiuye.com/v1beta1/namespaces/default/requests",
    ] {
        // 403 is expected: the point is that the token travelled.
        let _ = as_sa.request_text(http::Request::get(path).body(Vec::new())?).await;
    }
    let bundle = cluster.info().run_dir.join("scan-bundle");
    kube_harness::check::write_failure_bundle(&cluster, &target, &bundle).await?;

    let mut secrets = vec![token.clone()];
    let mut texts: Vec<(std::path::PathBuf, String)> = Vec::new();
    let mut stack = vec![cluster.info().run_dir.clone(), root.join("tests/snapshots")];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir)?.flatten() {
            let path = entry.path();
            if path.is_dir() {
                // etcd's data files are binary and hold no tokens or keys.
                if !path
                    .file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with("etcd-data"))
                {
                    stack.push(path);
                }
                continue;
            }
            let Ok(text) = std::fs::read_to_string(&path) else {
                continue;
            };
            if path.extension().is_some_and(|e| e == "key") {
                // The key's base64 body, minus the PEM armour, must appear nowhere else.
                let body: String = text.lines().filter(|l| !l.starts_with("-----")).collect();
                secrets.push(body.chars().take(64).collect());
            } else if path.file_name().is_some_and(|n| n != "kubeconfig") {
                texts.push((path, text));
            }
        }
    }
    assert!(secrets.len() >= 6, "too few keys found: {}", secrets.len());
    assert!(texts.iter().any(|(p, _)| p.ends_with("kube-apiserver.log")));
    assert!(texts.iter().any(|(p, _)| p.starts_with(&bundle)));
    for (path, text) in &texts {
        assert!(!text.contains("PRIVATE KEY"), "{} holds a private key", path.display());
        for secret in &secrets {
            assert!(!text.contains(secret.as_str()), "{} holds a secret", path.display());
        }
    }
    running.down(&cluster).await?;
    Ok(())
}
