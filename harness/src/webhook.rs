//! Admission webhooks served by the test itself, the equivalent of controller-runtime envtest's
//! `WebhookInstallOptions`: a test hands any `tower` service (an axum `Router`, say) to
//! [`WebhookServer::start`], which serves it over HTTPS on 127.0.0.1 with a certificate of its
//! own CA; [`WebhookServer::install`] applies the webhook configurations of a directory (or
//! file) with every webhook pointed at that server, waits until kube-apiserver's calls reach
//! it, and returns a guard that deletes them again — before the server stops, if the guard is
//! dropped first, so a failing test leaves no configuration that refuses every request.
//!
//! ```no_run
//! # async fn wrapper(cluster: &kube_harness::Cluster) -> kube_harness::Result<()> {
//! // Any tower service: an axum Router, or a function.
//! let handler = tower::service_fn(|_request: http::Request<hyper::body::Incoming>| async {
//!     let review = r#"{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","response":{"uid":"","allowed":true}}"#;
//!     Ok::<_, std::convert::Infallible>(http::Response::new(review.to_owned()))
//! });
//! let server = kube_harness::webhook::WebhookServer::start(handler).await?;
//! let installed = server.install(cluster, "config/webhook").await?; // paths from each clientConfig
//! // … requests that the webhooks see …
//! installed.uninstall().await?;
//! # Ok(()) }
//! ```
//!
//! The configurations keep their rules, policies and names; only `clientConfig` changes: a
//! `service` reference becomes `url: https://127.0.0.1:<port><its path>`, a `url` keeps its
//! path on the new host, and `caBundle` is the server's CA.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo};
use k8s_openapi::ByteString;

use crate::Cluster;
use crate::error::{Error, Result};
use crate::pki::{Ca, CertSpec, KeyedCert};
use crate::target::apply::{self, Applied};
use crate::target::plan::{Admission, Plan};
use crate::task::TaskGuard;

/// How long removing dropped configurations may take.
const DROP_CLEANUP: Duration = Duration::from_secs(10);

/// An HTTPS server on 127.0.0.1 for a test's admission handlers; stops when dropped.
#[derive(Debug)]
pub struct WebhookServer {
    addr: SocketAddr,
    ca_pem: String,
    _task: TaskGuard<()>,
}

impl WebhookServer {
    /// Serve `service` on a free port of 127.0.0.1 over TLS (HTTP/1.1), with a serving
    /// certificate for `127.0.0.1` and `localhost` issued by a CA of this server's own.
    ///
    /// # Errors
    /// [`Error::Pki`] if the certificates cannot be made, [`Error::Io`] if no port can be bound.
    pub async fn start<S, B>(service: S) -> Result<Self>
    where
        S: tower::Service<http::Request<hyper::body::Incoming>, Response = http::Response<B>, Error = Infallible>
            + Clone
            + Send
            + 'static,
        S::Future: Send + 'static,
        B: http_body::Body + Send + 'static,
        B::Data: Send,
        B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let ca = Ca::new("kube-harness-webhook-ca")?;
        let serving = ca.issue(&CertSpec::serving(
            ["localhost"],
            ["127.0.0.1".parse().map_err(|_| Error::Fixture("127.0.0.1".into()))?],
        ))?;
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server_config(&serving)?));
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
            .await
            .map_err(Error::io("bind", Path::new("127.0.0.1:0")))?;
        let addr = listener
            .local_addr()
            .map_err(Error::io("read the address of", Path::new("127.0.0.1:0")))?;
        let task = crate::task::spawn_guarded(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let (acceptor, service) = (acceptor.clone(), service.clone());
                tokio::spawn(async move {
                    let Ok(tls) = acceptor.accept(stream).await else {
                        return;
                    };
                    let hyper_service = hyper_util::service::TowerToHyperService::new(service);
                    let served = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(tls), hyper_service)
                        .await;
                    if let Err(e) = served {
                        tracing::debug!(error = %e, "webhook connection ended with an error");
                    }
                });
            }
        });
        Ok(Self {
            addr,
            ca_pem: ca.cert_pem().to_owned(),
            _task: task,
        })
    }

    /// `https://127.0.0.1:<port><path>`.
    pub fn url(&self, path: &str) -> String {
        format!("https://{}{path}", self.addr)
    }

    /// The CA that issued the server's certificate (what `caBundle` becomes).
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// Apply the Validating/MutatingWebhookConfigurations found in `path` (a file or a
    /// directory, read as target fixtures are) with every webhook pointed at this server, then
    /// wait until kube-apiserver's calls reach it.
    ///
    /// # Errors
    /// [`Error::Load`] for unreadable files, [`Error::Fixture`] when `path` holds no webhook
    /// configuration or the webhooks do not answer, API errors.
    pub async fn install(&self, cluster: &Cluster, path: impl AsRef<Path>) -> Result<InstalledWebhooks> {
        let path = path.as_ref();
        let docs = crate::target::load::load(&[path])?;
        let mut plan = Plan::new(docs)?;
        if plan.admission.is_empty() {
            return Err(Error::Fixture(format!(
                "{}: no ValidatingWebhookConfiguration or MutatingWebhookConfiguration to install",
                path.display()
            )));
        }
        for admission in &mut plan.admission {
            self.point_at_self(admission);
        }
        let client = cluster.client().await?;
        let mut applied = Vec::new();
        let mut installed = InstalledWebhooks {
            client: client.clone(),
            admin: cluster.admin_kubeconfig().clone(),
            applied: Vec::new(),
        };
        for admission in &plan.admission {
            match apply::apply_one(&client, &admission.document()?, Duration::from_secs(5)).await {
                Ok(a) => applied.push(a),
                Err(e) => {
                    installed.applied = applied;
                    return Err(e);
                }
            }
        }
        installed.applied = applied;
        crate::target::webhooks::wait_admission_answers(&client, &plan.admission, Duration::from_secs(30)).await?;
        Ok(installed)
    }

    fn point_at_self(&self, admission: &mut Admission) {
        let configs = admission.client_configs_mut();
        for config in configs {
            let path = match (&config.service, &config.url) {
                (Some(service), _) => service.path.clone().unwrap_or_default(),
                (None, Some(url)) => url
                    .parse::<http::Uri>()
                    .ok()
                    .and_then(|u| u.path_and_query().map(|p| p.as_str().to_owned()))
                    .unwrap_or_default(),
                (None, None) => String::new(),
            };
            config.service = None;
            config.url = Some(self.url(&path));
            config.ca_bundle = Some(ByteString(self.ca_pem.clone().into_bytes()));
        }
    }
}

fn server_config(serving: &KeyedCert) -> Result<rustls::ServerConfig> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let boxed = |e: &dyn std::fmt::Display| Error::Client(e.to_string().into());
    let chain = CertificateDer::pem_slice_iter(serving.cert_pem.as_bytes())
        .collect::<std::result::Result<Vec<_>, _>>()
        .map_err(|e| boxed(&e))?;
    let key = PrivateKeyDer::from_pem_slice(serving.key_pem.as_bytes()).map_err(|e| boxed(&e))?;
    rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| boxed(&e))?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| boxed(&e))
}

/// Webhook configurations [`WebhookServer::install`] applied; deleted by
/// [`InstalledWebhooks::uninstall`], or on drop.
pub struct InstalledWebhooks {
    client: kube::Client,
    admin: kube::config::Kubeconfig,
    applied: Vec<Applied>,
}

impl std::fmt::Debug for InstalledWebhooks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InstalledWebhooks")
            .field("applied", &self.names())
            .finish_non_exhaustive()
    }
}

impl InstalledWebhooks {
    /// The names of the configurations, as `Kind/name`.
    pub fn names(&self) -> Vec<String> {
        self.applied.iter().map(|a| a.display.clone()).collect()
    }

    /// Delete the configurations and wait until they are gone.
    ///
    /// # Errors
    /// [`Error::WaitTimeout`] naming what is still there.
    pub async fn uninstall(mut self) -> Result<()> {
        let applied = std::mem::take(&mut self.applied);
        let deleted = apply::delete_all(&self.client, &applied).await;
        apply::wait_gone(&self.client, &deleted, Duration::from_secs(30)).await
    }
}

impl Drop for InstalledWebhooks {
    fn drop(&mut self) {
        let applied = std::mem::take(&mut self.applied);
        if applied.is_empty() {
            return;
        }
        let cleaned =
            crate::cluster::kubeconfig::cleanup_on_own_runtime(self.admin.clone(), DROP_CLEANUP, |client| async move {
                drop(apply::delete_all(&client, &applied).await);
                Ok(())
            });
        if let Err(e) = cleaned {
            tracing::warn!(error = %e, "removing dropped webhook configurations");
        }
    }
}
