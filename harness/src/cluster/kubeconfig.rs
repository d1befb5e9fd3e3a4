//! Kubeconfigs for the admin and for users, with certificates embedded.

use std::path::Path;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use kube::config::Kubeconfig;

use crate::error::{Error, Result};
use crate::pki::{KeyedCert, write_private};

/// Name of the cluster and context entries in generated kubeconfigs.
pub const CONTEXT: &str = "kube-harness";

/// A kubeconfig for `server` trusting `ca_pem`, authenticated by `user` (client cert) or a
/// bearer `token`. Built from its JSON form, which is the same for every kube major (the
/// structs gained fields between kube 3 and 5).
pub(crate) fn kubeconfig(
    server: &str,
    ca_pem: &str,
    user_name: &str,
    cert: Option<&KeyedCert>,
    token: Option<&str>,
) -> Kubeconfig {
    let mut user = serde_json::Map::new();
    if let Some(c) = cert {
        user.insert("client-certificate-data".into(), STANDARD.encode(&c.cert_pem).into());
        user.insert("client-key-data".into(), STANDARD.encode(&c.key_pem).into());
    }
    if let Some(t) = token {
        user.insert("token".into(), t.into());
    }
    let json = serde_json::json!({
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": CONTEXT, "cluster": {
            "server": server,
            "certificate-authority-data": STANDARD.encode(ca_pem),
        }}],
        "users": [{"name": user_name, "user": user}],
        "contexts": [{"name": CONTEXT, "context": {"cluster": CONTEXT, "user": user_name}}],
        "current-context": CONTEXT,
    });
    // Every field above is one Kubeconfig has had since kube 1: this cannot fail; if a kube
    // major ever refused it, the client built from the empty config would say so.
    serde_json::from_value(json).unwrap_or_default()
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
    #[cfg_attr(
        feature = "kube-3",
        allow(unused_mut, reason = "kube 3 has no retry policy to turn off")
    )]
    let mut config = kube::Config::from_custom_kubeconfig(config, &kube::config::KubeConfigOptions::default())
        .await
        .map_err(|e| Error::Client(Box::new(e)))?;
    // kube-client's default policy (kube 4 on) retries 429, 503 and 504 up to 15 times with
    // exponential backoff from 5 ms: a steady 503 (an unavailable APIService, the very thing
    // scenarios check) took minutes to come back instead of milliseconds. Tests see the API's
    // answer; the harness's own waits retry what they must.
    #[cfg(not(feature = "kube-3"))]
    {
        config.default_retry = false;
    }
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
