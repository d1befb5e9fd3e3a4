//! A template etcd data directory per (binaries, apiserver flags): made once by booting a
//! throwaway control plane, then copied into each new cluster's run directory.
//!
//! On an empty etcd, kube-apiserver's post-start hooks write the bootstrap objects (RBAC roles
//! and bindings, priority classes, flow-control configuration, system namespaces) before
//! `/readyz` passes; on a copy of a bootstrapped store they only read them. Nothing in the
//! template depends on certificates or ports: the authentication ConfigMap, the `kubernetes`
//! Service and the apiserver identity lease are reconciled by each new apiserver.
//!
//! With kube-controller-manager, the template is made with it running until what it makes
//! at a cluster's birth exists: the `default` ServiceAccount of each system namespace and the
//! aggregated ClusterRoles' rules. A new cluster then has them from its first moment, as a
//! kind cluster does, without waiting for its own kube-controller-manager. The
//! `kube-root-ca.crt` ConfigMaps, which hold the template's CA, are removed; each cluster's
//! kube-controller-manager publishes its own.
//!
//! `KUBE_HARNESS_ETCD_TEMPLATE=0` turns templates off (each cluster bootstraps from empty).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::processes::{start_apiserver, start_etcd};
use crate::assets::{Assets, KubeVersion, Resolver};
use crate::error::{Error, Result};
use crate::pki::ClusterPki;
use crate::process::RunDir;

/// Bump when the way templates are made changes, so old ones are not reused.
const FORMAT: &str = "4";

/// The namespaces kube-apiserver makes at bootstrap.
const SYSTEM_NAMESPACES: [&str; 4] = ["default", "kube-system", "kube-public", "kube-node-lease"];

/// kube-controller-manager for the template: its binary and controllers.
pub(super) type Controllers<'a> = Option<(&'a Path, &'a [String], Option<&'a str>)>;

/// Whether templates are enabled (`KUBE_HARNESS_ETCD_TEMPLATE` is not `0`).
pub(super) fn enabled() -> bool {
    std::env::var_os("KUBE_HARNESS_ETCD_TEMPLATE").is_none_or(|v| v != "0")
}

/// The template's cache directory: keyed by the kube-apiserver and etcd binaries (size and
/// modification time of the files they resolve to, so a directory of symlinks shares the
/// template of the binaries it points at) and the extra apiserver flags, which may change what
/// bootstrap stores.
pub(super) fn location(
    assets: &Assets,
    version: &KubeVersion,
    extra: &[(String, String)],
    controllers: Controllers<'_>,
) -> PathBuf {
    let mut hash = ring::digest::Context::new(&ring::digest::SHA256);
    hash.update(FORMAT.as_ref());
    for binary in [assets.kube_apiserver(), assets.etcd()] {
        if let Ok(meta) = std::fs::metadata(&binary) {
            hash.update(&meta.len().to_le_bytes());
            if let Ok(Ok(mtime)) = meta.modified().map(|m| m.duration_since(std::time::UNIX_EPOCH)) {
                hash.update(&mtime.as_nanos().to_le_bytes());
            }
        }
    }
    for (k, v) in extra {
        hash.update(format!("--{k}={v}\n").as_bytes());
    }
    if let Some((_, list, gates)) = controllers {
        let gates = gates.unwrap_or_default();
        hash.update(format!("controllers={}\ngates={gates}\n", list.join(",")).as_bytes());
    }
    let key = hex::encode(&hash.finish().as_ref()[..8]);
    Resolver::new(*version)
        .cache_root()
        .join("etcd-templates")
        .join(format!("{version}-{key}"))
}

/// The template for these binaries and flags, made now if missing. `None` (with a warning)
/// when it cannot be made: the caller then bootstraps from an empty store, as without
/// templates.
pub(super) async fn ensure(
    assets: &Assets,
    version: &KubeVersion,
    extra: &[(String, String)],
    controllers: Controllers<'_>,
    timeout: Duration,
) -> Option<PathBuf> {
    let dir = location(assets, version, extra, controllers);
    if dir.join("member").is_dir() {
        touch(&dir);
        return Some(dir);
    }
    match make(assets, version, extra, controllers, timeout, &dir).await {
        Ok(()) => Some(dir),
        Err(e) => {
            tracing::warn!(error = %e, "could not make an etcd template; bootstrapping from an empty store");
            None
        }
    }
}

async fn make(
    assets: &Assets,
    version: &KubeVersion,
    extra: &[(String, String)],
    controllers: Controllers<'_>,
    timeout: Duration,
    dir: &Path,
) -> Result<()> {
    let parent = dir.parent().unwrap_or(dir).to_owned();
    let name = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let lock = {
        let parent = parent.clone();
        let name = name.clone();
        crate::process::blocking("template lock", move || crate::assets::lock_cache(&parent, &name)).await?
    };
    if dir.join("member").is_dir() {
        return Ok(());
    }
    let started = Instant::now();
    tracing::info!(?dir, "making the etcd template (once per binaries and flags)");
    let run_dir = RunDir::create("template")?;
    let pki_dir = run_dir.path().join("pki");
    let pki = crate::process::blocking("certificate generation", move || ClusterPki::generate(&pki_dir)).await?;
    let etcd = start_etcd(assets, run_dir.path(), None, timeout).await?;
    let apiserver = start_apiserver(
        assets,
        run_dir.path(),
        &pki,
        &etcd.url,
        extra,
        super::processes::Mode {
            skip_bootstrap_hooks: false,
            service_account_admission: controllers.is_some(),
        },
        timeout,
    )
    .await?;
    if let Some((binary, list, gates)) = controllers {
        let cm = super::controllers::spawn(binary, run_dir.path(), &pki, &apiserver.url, list, gates).await?;
        let settled = births(&apiserver.url, &pki, list, timeout).await;
        cm.child.stop(Duration::from_secs(10));
        settled?;
    }
    // Bootstrap is complete once /readyz passes (it includes every post-start hook); stop
    // gracefully so etcd's files are consistent before they are copied.
    apiserver.child.stop(Duration::from_secs(10));
    forget(
        &etcd.url,
        "/registry/configmaps/kube-system/extension-apiserver-authentication",
    )
    .await?;
    for ns in SYSTEM_NAMESPACES {
        forget(&etcd.url, &format!("/registry/configmaps/{ns}/kube-root-ca.crt")).await?;
    }
    etcd.child.stop(Duration::from_secs(10));
    let tmp = parent.join(format!(".tmp-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    copy_dir(&etcd.data, &tmp)?;
    std::fs::rename(&tmp, dir).map_err(Error::io("rename template into place", dir))?;
    drop(lock);
    tracing::info!(elapsed = ?started.elapsed(), %version, "etcd template ready");
    prune(&parent, dir);
    Ok(())
}

/// Templates unused for this long are removed when a new one is made.
const UNUSED_FOR: Duration = Duration::from_secs(14 * 24 * 3600);

/// Mark a template as used (its directory's modification time).
fn touch(dir: &Path) {
    if let Ok(handle) = std::fs::File::open(dir) {
        let _ = handle.set_modified(std::time::SystemTime::now());
    }
}

/// Remove templates unused for [`UNUSED_FOR`] (their lock files live in `.locks/`, which is kept): binaries get rebuilt
/// and flags change, and each template holds etcd's 64 MB preallocated WAL.
fn prune(templates: &Path, keep: &Path) {
    let Ok(entries) = std::fs::read_dir(templates) else {
        return;
    };
    for entry in entries
        .flatten()
        .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
    {
        let path = entry.path();
        let stale = entry
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|m| m.elapsed().ok())
            .is_some_and(|age| age > UNUSED_FOR);
        if path != keep && stale {
            if path.is_dir() {
                let _ = std::fs::remove_dir_all(&path);
            } else {
                let _ = std::fs::remove_file(&path);
            }
        }
    }
}

/// Wait until kube-controller-manager has made what it makes at a cluster's birth: the
/// `default` ServiceAccount of each system namespace, the aggregated ClusterRoles' rules.
async fn births(server: &str, pki: &ClusterPki, controllers: &[String], timeout: Duration) -> Result<()> {
    use k8s_openapi::api::rbac::v1::ClusterRole;
    let config = crate::cluster::kubeconfig::kubeconfig(
        server,
        pki.serving_ca.cert_pem(),
        crate::pki::ADMIN_USER,
        Some(&pki.admin),
        None,
    );
    let client = crate::cluster::kubeconfig::client(config).await?;
    let runs = |c: &str| controllers.iter().any(|n| n == c);
    let backoff = crate::wait::Backoff::millis(20, 200);
    if runs("serviceaccount-controller") {
        for ns in SYSTEM_NAMESPACES {
            crate::cluster::namespace::default_service_account(&client, ns).await?;
        }
    }
    if runs("clusterrole-aggregation-controller") {
        let api: kube::Api<ClusterRole> = kube::Api::all(client.clone());
        for role in ["admin", "edit", "view"] {
            crate::wait::poll_for(
                &format!("ClusterRole {role}'s aggregated rules"),
                timeout,
                backoff,
                || async {
                    Ok(match api.get_opt(role).await {
                        Ok(Some(r)) if r.rules.as_ref().is_some_and(|rules| !rules.is_empty()) => {
                            crate::wait::Probe::Ready(())
                        }
                        Ok(_) => crate::wait::Probe::NotYet("no rules yet".into()),
                        Err(e) => crate::wait::Probe::NotYet(e.to_string()),
                    })
                },
            )
            .await?;
        }
    }
    Ok(())
}

/// Delete `key` from the store. `kube-system/extension-apiserver-authentication`: its
/// controller merges CA bundles into what is stored, so a copy would make every new cluster
/// publish the template's front-proxy CA beside its own. `kube-root-ca.crt`: it holds the
/// template's serving CA. (The other bootstrap objects hold nothing specific to one
/// cluster.)
async fn forget(etcd_url: &str, key: &str) -> Result<()> {
    use base64::Engine as _;
    let key = base64::engine::general_purpose::STANDARD.encode(key);
    let url = format!("{etcd_url}/v3/kv/deleterange");
    let response = crate::process::probe_client("", None)?
        .post(&url)
        .body(format!("{{\"key\":\"{key}\"}}"))
        .send()
        .await
        .and_then(reqwest::Response::error_for_status)
        .map_err(|e| Error::Client(format!("POST {url}: {e}").into()))?;
    let body = response.text().await.unwrap_or_default();
    tracing::debug!(%body, "removed a cluster-specific object from the template");
    Ok(())
}

/// Copy a directory tree (regular files and directories only; etcd's data holds nothing
/// else).
pub(super) fn copy_dir(from: &Path, to: &Path) -> Result<()> {
    std::fs::create_dir_all(to).map_err(Error::io("create directory", to))?;
    set_private(to)?;
    let entries = std::fs::read_dir(from).map_err(Error::io("read directory", from))?;
    for entry in entries {
        let entry = entry.map_err(Error::io("read directory", from))?;
        let source = entry.path();
        let target = to.join(entry.file_name());
        let kind = entry.file_type().map_err(Error::io("stat", &source))?;
        if kind.is_dir() {
            copy_dir(&source, &target)?;
        } else if kind.is_file() {
            std::fs::copy(&source, &target).map_err(Error::io("copy", &source))?;
        }
    }
    Ok(())
}

fn set_private(dir: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(Error::io("chmod 0700", dir))
}
