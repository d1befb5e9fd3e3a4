//! Clusters reached through a kubeconfig: someone else's ([`Provider::Existing`]), and the
//! ones kind and k3s write. kube's own loader reads the file (`KUBECONFIG` with several paths
//! merged, else `~/.kube/config`) and resolves the current context, cluster and CA.

use std::path::{Path, PathBuf};

use kube::config::{KubeConfigOptions, Kubeconfig};

use super::Provider;
use crate::assets::{Assets, KubeVersion, Resolver};
use crate::cluster::{Cluster, ClusterInfo, Origin, StartupTimings, kubeconfig};
use crate::error::{Error, Result};
use crate::process::RunDir;

/// A cluster someone else runs, reached through `kubeconfig` (default: `KUBECONFIG`, else
/// `~/.kube/config`, as kubectl reads them), current context. The harness creates only what
/// a test asks for and deletes only that; dropping the `Cluster` leaves the cluster alone.
/// Without the cluster's client CA, [`Cluster::user`] impersonates; targets whose backend
/// needs `{{etcdUrl}}` get a private etcd.
pub(crate) async fn connect(kubeconfig: Option<&Path>) -> Result<Cluster> {
    let config = match kubeconfig {
        Some(path) => Kubeconfig::read_from(path).map_err(|source| Error::Kubeconfig {
            path: path.display().to_string(),
            source,
        })?,
        None => Kubeconfig::read().map_err(|source| Error::Kubeconfig {
            path: "KUBECONFIG or ~/.kube/config".into(),
            source,
        })?,
    };
    let run_dir = RunDir::create("existing")?;
    from_kubeconfig(config, run_dir, |run_dir| Origin::Existing { run_dir }).await
}

/// Read the kubeconfig a provider wrote at `path`.
pub(crate) fn read(path: &Path, provider: Provider) -> Result<Kubeconfig> {
    Kubeconfig::read_from(path).map_err(|source| Error::Kubeconfig {
        path: format!("{} (written by {provider})", path.display()),
        source,
    })
}

/// A [`Cluster`] for the current context of `config`; `origin` takes the run directory (it
/// holds a copy of the kubeconfig for kubectl).
pub(crate) async fn from_kubeconfig(
    config: Kubeconfig,
    run_dir: RunDir,
    origin: impl FnOnce(RunDir) -> Origin,
) -> Result<Cluster> {
    let resolved = kube::Config::from_custom_kubeconfig(config.clone(), &KubeConfigOptions::default())
        .await
        .map_err(|source| Error::Kubeconfig {
            path: "the kubeconfig's current context".into(),
            source,
        })?;
    let server = resolved.cluster_url.to_string().trim_end_matches('/').to_owned();
    let server_ca_pem = match resolved.root_cert.as_deref() {
        Some([first, ..]) => der_to_pem(first),
        _ => {
            return Err(Error::NoServerCa { server });
        }
    };
    let kubeconfig_path = run_dir.path().join("kubeconfig");
    kubeconfig::write(&config, &kubeconfig_path)?;
    let client = kubeconfig::client(config.clone()).await?;
    let reported = client.apiserver_version().await?.git_version;
    let plain = reported
        .trim_start_matches('v')
        .split(['+', '-'])
        .next()
        .unwrap_or_default()
        .to_owned();
    let version = KubeVersion::parse(&plain)?;
    let runs_pods = kube::Api::<k8s_openapi::api::core::v1::Node>::all(client)
        .list(&kube::api::ListParams::default().limit(1))
        .await
        .map(|l| !l.items.is_empty())
        .unwrap_or(false);
    let assets = match Resolver::new(version).resolve_async().await {
        Ok(a) => a,
        Err(e) => {
            tracing::warn!(error = %e, "no kubectl for {version}; commands that need it will fail");
            Assets::attached(PathBuf::new())
        }
    };
    Ok(Cluster {
        info: ClusterInfo {
            server,
            etcd_url: String::new(),
            version,
            kubeconfig: kubeconfig_path,
            run_dir: run_dir.path().to_owned(),
            assets_dir: assets.dir().to_owned(),
        },
        origin: origin(run_dir),
        admin_kubeconfig: config,
        server_ca_pem,
        pki: None,
        assets,
        timings: StartupTimings::default(),
        runs_pods,
    })
}

/// A DER certificate as PEM.
fn der_to_pem(der: &[u8]) -> String {
    use base64::Engine as _;
    let body = base64::engine::general_purpose::STANDARD.encode(der);
    let mut pem = String::from("-----BEGIN CERTIFICATE-----\n");
    for line in body.as_bytes().chunks(64) {
        pem.push_str(&String::from_utf8_lossy(line));
        pem.push('\n');
    }
    pem.push_str("-----END CERTIFICATE-----\n");
    pem
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn der_round_trips_through_pem() -> Result<()> {
        let ca = crate::pki::Ca::new("round-trip")?;
        let pem = ca.cert_pem();
        let der = rustls_pki_der(pem);
        assert_eq!(der_to_pem(&der).trim(), pem.trim());
        Ok(())
    }

    fn rustls_pki_der(pem: &str) -> Vec<u8> {
        use base64::Engine as _;
        let body: String = pem.lines().filter(|l| !l.starts_with("-----")).collect();
        base64::engine::general_purpose::STANDARD
            .decode(body)
            .unwrap_or_default()
    }
}
