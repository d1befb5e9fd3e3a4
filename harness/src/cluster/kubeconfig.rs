//! Kubeconfigs for the admin and for users, with certificates embedded.

use std::path::Path;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use kube::config::{AuthInfo, Cluster as KcCluster, Context, Kubeconfig, NamedAuthInfo, NamedCluster, NamedContext};

use crate::error::{Error, Result};
use crate::pki::{KeyedCert, write_private};

/// Name of the cluster and context entries in generated kubeconfigs.
pub const CONTEXT: &str = "kube-harness";

/// A kubeconfig for `server` trusting `ca_pem`, authenticated by `user` (client cert) or a
/// bearer `token`.
pub(crate) fn kubeconfig(
    server: &str,
    ca_pem: &str,
    user_name: &str,
    cert: Option<&KeyedCert>,
    token: Option<&str>,
) -> Kubeconfig {
    let auth = AuthInfo {
        client_certificate_data: cert.map(|c| STANDARD.encode(&c.cert_pem)),
        client_key_data: cert.map(|c| STANDARD.encode(&c.key_pem).into()),
        token: token.map(|t| t.to_owned().into()),
        ..AuthInfo::default()
    };
    Kubeconfig {
        clusters: vec![NamedCluster {
            name: CONTEXT.to_owned(),
            cluster: Some(KcCluster {
                server: Some(server.to_owned()),
                certificate_authority_data: Some(STANDARD.encode(ca_pem)),
                ..KcCluster::default()
            }),
            other: Default::default(),
        }],
        auth_infos: vec![NamedAuthInfo {
            name: user_name.to_owned(),
            auth_info: Some(auth),
            other: Default::default(),
        }],
        contexts: vec![NamedContext {
            name: CONTEXT.to_owned(),
            context: Some(Context {
                cluster: CONTEXT.to_owned(),
                user: Some(user_name.to_owned()),
                namespace: None,
                extensions: None,
                other: Default::default(),
            }),
            other: Default::default(),
        }],
        current_context: Some(CONTEXT.to_owned()),
        api_version: Some("v1".to_owned()),
        kind: Some("Config".to_owned()),
        ..Kubeconfig::default()
    }
}

/// Write `config` to `path` (JSON, which kubectl reads as YAML) with mode 0600.
pub(crate) fn write(config: &Kubeconfig, path: &Path) -> Result<()> {
    let json = serde_json::to_vec_pretty(config).map_err(|source| Error::Json {
        what: format!("kubeconfig {path:?}"),
        source,
    })?;
    write_private(path, &json)
}

/// Build a kube client from a kubeconfig.
pub(crate) async fn client(config: Kubeconfig) -> Result<kube::Client> {
    let mut config = kube::Config::from_custom_kubeconfig(config, &kube::config::KubeConfigOptions::default())
        .await
        .map_err(|e| Error::Client(Box::new(e)))?;
    // kube-client's default policy retries 429, 503 and 504 up to 15 times with exponential
    // backoff from 5 ms: a steady 503 (an unavailable APIService, the very thing scenarios
    // check) took minutes to come back instead of milliseconds. Tests see the API's answer;
    // the harness's own waits retry what they must.
    config.default_retry = false;
    kube::Client::try_from(config).map_err(|e| Error::Client(Box::new(e)))
}

/// Run `work` with an admin client on a thread with a tokio runtime of its own, waiting at
/// most `timeout`: for cleanup in `Drop`, which may run on any thread, inside a runtime or
/// not (a kube client belongs to the runtime it was built on). `Err` says what went wrong,
/// or that it took too long (the work is then left to finish or not).
pub(crate) fn cleanup_on_own_runtime<F, Fut>(
    admin: Kubeconfig,
    timeout: std::time::Duration,
    work: F,
) -> std::result::Result<(), String>
where
    F: FnOnce(kube::Client) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = std::result::Result<(), String>>,
{
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let outcome = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| e.to_string())
            .and_then(|rt| {
                rt.block_on(async {
                    let client = client(admin).await.map_err(|e| format!("no client: {e}"))?;
                    work(client).await
                })
            });
        let _ = done_tx.send(outcome);
    });
    done_rx
        .recv_timeout(timeout)
        .unwrap_or_else(|_| Err(format!("it took over {timeout:?}; left it")))
}
