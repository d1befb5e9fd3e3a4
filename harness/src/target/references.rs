//! Everything a target declares must answer: a CRD's conversion webhook and every admission
//! webhook point at a Service or URL that kube-apiserver will call. A reference that does not
//! answer fails bring-up, naming the object, the reference and the error — instead of a
//! green `verify` while every read of the converted kind or every matching create fails.
//!
//! The check resolves a Service as kube-apiserver does on the local plane (an `ExternalName`
//! to its host, otherwise its cluster IP) and opens a TCP connection to it from this host —
//! the network kube-apiserver's own calls leave from. It only ever dials loopback: a cluster
//! IP (nothing routes those on the local plane) or a host elsewhere is reported, not dialled.
//! Where kube-apiserver runs elsewhere (kind, k3s, an existing cluster on another host), only
//! the Service's existence is checked.

use std::time::Duration;

use k8s_openapi::api::core::v1::Service;
use kube::{Api, Client};

use super::Plan;
use super::plan::Prerequisite;
use crate::Capability;
use crate::Cluster;
use crate::error::{Error, Result};

/// How long a connection attempt to a webhook may take.
const DIAL_TIMEOUT: Duration = Duration::from_secs(2);

/// Where kube-apiserver sends a webhook call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Endpoint {
    /// `service: {namespace, name, port}` (port default 443).
    Service {
        /// Its namespace.
        namespace: String,
        /// Its name.
        name: String,
        /// The port (443 when not given).
        port: u16,
    },
    /// `url: https://host:port/path`.
    Url(String),
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Service { namespace, name, port } => write!(f, "service {namespace}/{name}:{port}"),
            Self::Url(url) => write!(f, "url {url}"),
        }
    }
}

/// One reference: which object, what in it, where it points.
#[derive(Debug, Clone)]
pub(crate) struct Reference {
    /// `Kind/name` of the object holding it.
    pub object: String,
    /// "conversion webhook", "webhook validate.example.com".
    pub what: String,
    /// Where it points.
    pub endpoint: Endpoint,
    /// Its `caBundle` (PEM), when it has one: the call is then also made over TLS, as
    /// kube-apiserver makes it.
    pub ca_pem: Option<String>,
    /// Its `path` (services) — where the TLS probe posts.
    pub path: Option<String>,
    /// What kube-apiserver sends there, so what the probe sends.
    pub review: Review,
}

/// The kind of request a webhook gets: the reachability probe sends a well-formed one of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Review {
    /// A CRD's conversion webhook: `apiextensions.k8s.io/v1` `ConversionReview`.
    Conversion,
    /// An admission webhook: `admission.k8s.io/v1` `AdmissionReview`.
    Admission,
}

/// The uid of every probe's review, so a backend's log shows which request was the probe.
pub(crate) const PROBE_UID: &str = "kube-harness-reachability-probe";

impl Review {
    /// The body the reachability probe posts: a review with no object to convert, or a dry-run
    /// CREATE of a ConfigMap by user `kube-harness` — a request every webhook must be able to
    /// answer, if only with an error status.
    fn probe_body(self) -> serde_json::Value {
        match self {
            Self::Conversion => serde_json::json!({
                "apiVersion": "apiextensions.k8s.io/v1",
                "kind": "ConversionReview",
                "request": {"uid": PROBE_UID, "desiredAPIVersion": "v1", "objects": []},
            }),
            Self::Admission => serde_json::json!({
                "apiVersion": "admission.k8s.io/v1",
                "kind": "AdmissionReview",
                "request": {
                    "uid": PROBE_UID,
                    "kind": {"group": "", "version": "v1", "kind": "ConfigMap"},
                    "resource": {"group": "", "version": "v1", "resource": "configmaps"},
                    "requestKind": {"group": "", "version": "v1", "kind": "ConfigMap"},
                    "requestResource": {"group": "", "version": "v1", "resource": "configmaps"},
                    "name": PROBE_UID,
                    "namespace": "default",
                    "operation": "CREATE",
                    "userInfo": {"username": "kube-harness"},
                    "object": {
                        "apiVersion": "v1",
                        "kind": "ConfigMap",
                        "metadata": {"name": PROBE_UID, "namespace": "default"},
                    },
                    "oldObject": null,
                    "dryRun": true,
                    "options": {"apiVersion": "meta.k8s.io/v1", "kind": "CreateOptions"},
                },
            }),
        }
    }

    fn kind(self) -> &'static str {
        match self {
            Self::Conversion => "ConversionReview",
            Self::Admission => "AdmissionReview",
        }
    }
}

fn service_endpoint(namespace: &str, name: &str, port: Option<i32>) -> Endpoint {
    Endpoint::Service {
        namespace: namespace.to_owned(),
        name: name.to_owned(),
        port: port.and_then(|p| u16::try_from(p).ok()).unwrap_or(443),
    }
}

impl Plan {
    /// Every conversion and admission webhook reference of the target.
    pub(crate) fn webhook_references(&self) -> Vec<Reference> {
        let mut out = Vec::new();
        for crd in self.prerequisites.iter().filter_map(|p| match p {
            Prerequisite::Crd(crd) => Some(crd),
            _ => None,
        }) {
            let Some(conversion) = crd.object.spec.conversion.as_ref().filter(|c| c.strategy == "Webhook") else {
                continue;
            };
            let config = conversion.webhook.as_ref().and_then(|w| w.client_config.as_ref());
            let endpoint = match config {
                Some(c) => match (&c.service, &c.url) {
                    (Some(s), _) => service_endpoint(&s.namespace, &s.name, s.port),
                    (None, Some(url)) => Endpoint::Url(url.clone()),
                    (None, None) => continue,
                },
                None => continue,
            };
            out.push(Reference {
                object: crd.doc.display_name(),
                what: "conversion webhook".into(),
                endpoint,
                ca_pem: config
                    .and_then(|c| c.ca_bundle.as_ref())
                    .map(|b| String::from_utf8_lossy(&b.0).into_owned()),
                path: config.and_then(|c| c.service.as_ref()?.path.clone()),
                review: Review::Conversion,
            });
        }
        for admission in &self.admission {
            for (name, config) in admission.webhooks() {
                let endpoint = match (&config.service, &config.url) {
                    (Some(s), _) => service_endpoint(&s.namespace, &s.name, s.port),
                    (None, Some(url)) => Endpoint::Url(url.clone()),
                    (None, None) => continue,
                };
                out.push(Reference {
                    object: admission.doc().display_name(),
                    what: format!("webhook {name}"),
                    endpoint,
                    ca_pem: config
                        .ca_bundle
                        .as_ref()
                        .map(|b| String::from_utf8_lossy(&b.0).into_owned()),
                    path: config.service.as_ref().and_then(|s| s.path.clone()),
                    review: Review::Admission,
                });
            }
        }
        out
    }
}

/// Check that every webhook reference of `plan` answers.
///
/// # Errors
/// [`Error::DeadReference`] for the first that does not.
pub(crate) async fn check(cluster: &Cluster, client: &Client, plan: &Plan) -> Result<()> {
    let dial = cluster.has(Capability::HostBackends);
    for reference in plan.webhook_references() {
        let answered = match answers(client, &reference.endpoint, dial).await {
            Ok(Some(addr)) => match (&reference.ca_pem, &reference.endpoint) {
                (Some(ca), Endpoint::Service { namespace, name, port }) => {
                    answers_tls(
                        ca,
                        &format!("{name}.{namespace}.svc"),
                        *port,
                        addr,
                        reference.path.as_deref(),
                        reference.review,
                    )
                    .await
                }
                _ => Ok(()),
            },
            Ok(None) => Ok(()),
            Err(problem) => Err(problem),
        };
        if let Err(problem) = answered {
            return Err(Error::DeadReference {
                object: reference.object,
                what: reference.what,
                endpoint: reference.endpoint.to_string(),
                problem,
            });
        }
    }
    Ok(())
}

/// The reachability probe: a POST over TLS to the webhook at `addr` of a well-formed `review`
/// (see [`Review::probe_body`]), verifying its certificate against `ca_pem` for `dns_name`
/// (`<service>.<namespace>.svc`, the name kube-apiserver verifies). Any HTTP answer, an error
/// status too, is an answer; a certificate the CA did not issue, one without that name, or a
/// connection closed without an answer is named.
async fn answers_tls(
    ca_pem: &str,
    dns_name: &str,
    port: u16,
    addr: std::net::SocketAddr,
    path: Option<&str>,
    review: Review,
) -> std::result::Result<(), String> {
    let tls = crate::pki::rustls_client_config(ca_pem, None).map_err(|e| format!("its caBundle: {e}"))?;
    let client = reqwest::Client::builder()
        .tls_backend_preconfigured(tls)
        .resolve(dns_name, addr)
        .timeout(DIAL_TIMEOUT)
        .build()
        .map_err(|e| e.to_string())?;
    let url = format!("https://{dns_name}:{port}{}", path.unwrap_or("/"));
    match client
        .post(&url)
        .header("content-type", "application/json")
        .body(review.probe_body().to_string())
        .send()
        .await
    {
        Ok(_) => Ok(()),
        Err(e) => Err(format!(
            "kube-harness's reachability probe got no HTTP answer (any answer passes, an error status \
             too): POST {url} (the name kube-apiserver verifies), body: {kind} uid {PROBE_UID}: {}",
            crate::process::error_chain(&e),
            kind = review.kind(),
        )),
    }
}

/// `Ok(Some(address))` if `endpoint` accepts a connection there, `Ok(None)` without `dial`
/// when its Service exists.
async fn answers(
    client: &Client,
    endpoint: &Endpoint,
    dial: bool,
) -> std::result::Result<Option<std::net::SocketAddr>, String> {
    let (host, port) = match endpoint {
        Endpoint::Service { namespace, name, port } => {
            let service = Api::<Service>::namespaced(client.clone(), namespace)
                .get_opt(name)
                .await
                .map_err(|e| format!("reading service {namespace}/{name}: {e}"))?
                .ok_or_else(|| format!("service \"{name}\" not found in namespace \"{namespace}\""))?;
            let spec = service.spec.unwrap_or_default();
            let host = match (spec.type_.as_deref(), spec.external_name, spec.cluster_ip) {
                (Some("ExternalName"), Some(external), _) => external,
                (_, _, Some(ip)) if ip != "None" && !ip.is_empty() => ip,
                _ => {
                    return Err(format!(
                        "service {namespace}/{name} has neither an externalName nor a cluster IP"
                    ));
                }
            };
            (host, *port)
        }
        Endpoint::Url(url) => {
            let uri: http::Uri = url.parse().map_err(|e| format!("not a URL: {e}"))?;
            let host = uri
                .host()
                .ok_or("the URL has no host")?
                .trim_matches(['[', ']'])
                .to_owned();
            (host, uri.port_u16().unwrap_or(443))
        }
    };
    if !dial {
        return Ok(None);
    }
    if !is_loopback(&host) {
        return Err(match endpoint {
            Endpoint::Service { .. } if host.parse::<std::net::IpAddr>().is_ok() => format!(
                "it resolves to cluster IP {host}, which nothing routes on the local plane; point the Service at \
                 this host's backend with `type: ExternalName, externalName: localhost`"
            ),
            _ => format!(
                "{host} is not this machine: on the local plane webhooks run on loopback (kube-harness never dials elsewhere)"
            ),
        });
    }
    match tokio::time::timeout(DIAL_TIMEOUT, tokio::net::TcpStream::connect((host.as_str(), port))).await {
        Ok(Ok(stream)) => Ok(stream.peer_addr().ok()),
        Ok(Err(e)) => Err(format!("dial tcp {host}:{port}: {e}")),
        Err(_) => Err(format!("dial tcp {host}:{port}: no answer within {DIAL_TIMEOUT:?}")),
    }
}

/// `localhost`, `127.x.x.x` or `::1`.
fn is_loopback(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost") || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_loopback_is_dialled() {
        for host in ["localhost", "127.0.0.1", "127.1.2.3", "::1", "LOCALHOST"] {
            assert!(is_loopback(host), "{host}");
        }
        for host in ["10.0.0.5", "example.com", "192.168.1.1", "localhost.example.com", ""] {
            assert!(!is_loopback(host), "{host}");
        }
    }
}
