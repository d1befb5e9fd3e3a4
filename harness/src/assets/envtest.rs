//! Downloading the envtest release tarball (kube-apiserver, etcd, kubectl as
//! controller-tools publishes them) before falling back to a Go build.
//!
//! The index is controller-tools' `envtest-releases.yaml`: `releases.v<version>.<file>` with
//! the tarball's SHA-512 (`hash`) and URL (`selfLink`). `KUBE_HARNESS_ENVTEST_INDEX` names
//! another index (a mirror, or a local server in tests); `off` skips downloading. A version
//! the index does not list, or an index or tarball that cannot be fetched, falls back to the
//! Go build; a tarball whose checksum differs is an error (never installed).

use std::collections::BTreeMap;
use std::io::Read as _;
use std::path::Path;
use std::time::Duration;

use super::manifest::{BinaryRecord, Manifest};
use super::{BINARIES, KubeVersion};
use crate::error::{Error, Result};

/// controller-tools' index of envtest releases.
pub const DEFAULT_INDEX: &str =
    "https://raw.githubusercontent.com/kubernetes-sigs/controller-tools/HEAD/envtest-releases.yaml";

/// Largest tarball accepted (the real ones are about 80 MB).
const MAX_TARBALL: usize = 512 * 1024 * 1024;

#[derive(serde::Deserialize)]
struct Index {
    releases: BTreeMap<String, BTreeMap<String, Release>>,
}

#[derive(serde::Deserialize)]
struct Release {
    hash: String,
    #[serde(rename = "selfLink")]
    self_link: String,
}

/// Why no tarball was installed.
#[derive(Debug)]
pub(crate) enum Miss {
    /// Not available (offline, not listed, …): build from Go modules instead.
    Unavailable(String),
    /// The download is corrupt or tampered with: stop.
    Fatal(Error),
}

fn arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

fn fetch(client: &reqwest::Client, url: &str, limit: usize) -> std::result::Result<Vec<u8>, String> {
    let client = client.clone();
    let url = url.to_owned();
    // A thread of its own with its own runtime: callers may be inside an async runtime.
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(|e| e.to_string())?;
                runtime.block_on(async {
                    let response = client
                        .get(&url)
                        .send()
                        .await
                        .and_then(reqwest::Response::error_for_status)
                        .map_err(|e| format!("GET {url}: {}", crate::process::error_chain(&e)))?;
                    if response.content_length().is_some_and(|n| n > limit as u64) {
                        return Err(format!("GET {url}: larger than {limit} bytes"));
                    }
                    let bytes = response.bytes().await.map_err(|e| format!("GET {url}: {e}"))?;
                    if bytes.len() > limit {
                        return Err(format!("GET {url}: larger than {limit} bytes"));
                    }
                    Ok(bytes.to_vec())
                })
            })
            .join()
            .map_err(|_| "download thread panicked".to_owned())?
    })
}

fn client() -> std::result::Result<reqwest::Client, String> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_native_certs::load_native_certs().certs {
        let _ = roots.add(cert);
    }
    let config =
        rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(|e| e.to_string())?
            .with_root_certificates(roots)
            .with_no_client_auth();
    reqwest::Client::builder()
        .tls_backend_preconfigured(config)
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(600))
        .build()
        .map_err(|e| e.to_string())
}

/// Download the envtest tarball for `version` listed in `index_url`, check its SHA-512 and
/// install its three binaries (with a manifest) into `out`, a fresh directory.
pub(crate) fn install(index_url: &str, version: &KubeVersion, out: &Path) -> std::result::Result<(), Miss> {
    let client = client().map_err(Miss::Unavailable)?;
    let index = fetch(&client, index_url, 16 * 1024 * 1024).map_err(Miss::Unavailable)?;
    let index: Index = serde_saphyr::from_slice(&index)
        .map_err(|e| Miss::Unavailable(format!("{index_url} is not an envtest release index: {e}")))?;
    let file = format!("envtest-v{version}-{}-{}.tar.gz", std::env::consts::OS, arch());
    let release = index
        .releases
        .get(&format!("v{version}"))
        .and_then(|r| r.get(&file))
        .ok_or_else(|| Miss::Unavailable(format!("{index_url} lists no {file}")))?;
    eprintln!("kube-harness: downloading {}", release.self_link);
    let tarball = fetch(&client, &release.self_link, MAX_TARBALL).map_err(Miss::Unavailable)?;
    let actual = hex::encode(ring::digest::digest(&ring::digest::SHA512, &tarball));
    if !actual.eq_ignore_ascii_case(release.hash.trim()) {
        return Err(Miss::Fatal(Error::Checksum {
            url: release.self_link.clone(),
            expected: release.hash.clone(),
            actual,
        }));
    }
    extract(&tarball, out).map_err(Miss::Fatal)?;
    let mut binaries = BTreeMap::new();
    for binary in BINARIES {
        binaries.insert(
            (*binary).to_owned(),
            BinaryRecord::of(&out.join(binary)).map_err(Miss::Fatal)?,
        );
    }
    Manifest {
        kubernetes: version.to_string(),
        etcd: "from the envtest tarball".to_owned(),
        go: "none (downloaded)".to_owned(),
        binaries,
    }
    .write(out)
    .map_err(Miss::Fatal)
}

/// Unpack the three binaries (wherever they sit in the archive: releases put them under
/// `controller-tools/envtest/`) into `out`, mode 0755. Nothing else is written.
fn extract(tarball: &[u8], out: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt as _;
    let bad = |problem: String| Error::Archive { problem };
    std::fs::create_dir_all(out).map_err(Error::io("create directory", out))?;
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(tarball));
    let mut found = Vec::new();
    for entry in archive.entries().map_err(|e| bad(e.to_string()))? {
        let mut entry = entry.map_err(|e| bad(e.to_string()))?;
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let path = entry.path().map_err(|e| bad(e.to_string()))?.into_owned();
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        let Some(binary) = BINARIES.iter().find(|b| **b == name) else {
            continue;
        };
        let target = out.join(binary);
        let mut bytes = Vec::new();
        entry.read_to_end(&mut bytes).map_err(|e| bad(e.to_string()))?;
        std::fs::write(&target, &bytes).map_err(Error::io("write", &target))?;
        std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o755))
            .map_err(Error::io("chmod", &target))?;
        found.push(*binary);
    }
    for binary in BINARIES {
        if !found.contains(&binary) {
            return Err(bad(format!("the tarball holds no {binary}")));
        }
    }
    Ok(())
}
