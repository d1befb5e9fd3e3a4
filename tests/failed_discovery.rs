//! FailedDiscoveryCheck, end to end: the real aggregator in front of our own aggregated API
//! server, with faults injected one at a time — no discovery endpoint, plain HTTP on the TLS
//! port, a serving certificate for the wrong name, a wrong `caBundle`, the backend down — and
//! an APIService whose Service does not exist. For each: the `Available` condition (reason and
//! message, port redacted), what a client gets for the group meanwhile, that the rest of the
//! API stays healthy, and recovery once the fault is fixed.
//!
//! The faults share one APIService, so they run one after another in a single test; this file
//! is its own test binary, hence its own cluster.

use std::time::{Duration, Instant};

use base64::Engine;
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::kube_aggregator::pkg::apis::apiregistration::v1::APIService;
use kube::Api;
use kube::api::{Patch, PatchParams, PostParams};
use kube_harness::Capability;
use kube_harness::pki::{Ca, CertSpec};
use kube_harness::snapshot::redact_ports;
use kube_harness::target::Target;
use kube_harness::target::apply::{nudge_apiservice, wait_apiservice_status};

mod common;

const APISERVICE: &str = "v1beta1.k8s.wujiuye.com";
const GROUP_PATH: &str = "/apis/k8s.wujiuye.com/v1beta1/namespaces/default/requests";

#[derive(Debug, Clone, Copy)]
enum Fault {
    NoDiscovery,
    PlainHttp,
    WrongCertName,
    WrongCaBundle,
    BackendDown,
}

#[derive(serde::Serialize)]
struct Observed {
    available: String,
    reason: String,
    message: String,
    client_status: u16,
    client_body: String,
}

#[tokio::test]
async fn each_fault_turns_the_apiservice_unavailable_and_fixing_it_recovers() -> anyhow::Result<()> {
    let cluster = kube_harness::shared().await?;
    if let Some(reason) = cluster.lacks(Capability::HostBackends) {
        println!("{reason}");
        return Ok(());
    }
    if cluster.pki().is_none() {
        println!("skipped: the harness did not make this cluster's PKI (the probes use its admin certificate)");
        return Ok(());
    }
    let dir = common::target_dir("requests");
    let mut running = cluster.up_target(&Target::load(dir)?).await?;
    let client = cluster.client().await?;
    let apiservices: Api<APIService> = Api::all(client.clone());
    let admin = &cluster.pki().ok_or_else(|| anyhow::anyhow!("no PKI"))?.admin;
    let admin_http = cluster.http_client(Some(admin))?;
    let good_bundle = apiservices
        .get(APISERVICE)
        .await?
        .spec
        .and_then(|s| s.ca_bundle)
        .ok_or_else(|| anyhow::anyhow!("no caBundle"))?;

    let availability_checks_tls = cluster.info().version.minor >= 36;
    for fault in [
        Fault::NoDiscovery,
        Fault::PlainHttp,
        Fault::WrongCertName,
        Fault::WrongCaBundle,
        Fault::BackendDown,
    ] {
        let name = format!("{fault:?}");
        // Inject.
        match fault {
            Fault::NoDiscovery => running.restart_backend(&["--no-discovery".into()]).await?,
            Fault::PlainHttp => running.restart_backend(&["--plain-http".into()]).await?,
            Fault::WrongCertName => {
                let spec = CertSpec::serving(["wrong-name.example.com"], ["127.0.0.1".parse()?]);
                let (crt, key) = running.issue_cert("requests-ca", "wrong-name", &spec)?;
                running
                    .restart_backend(&[
                        format!("--tls-cert-file={}", crt.display()),
                        format!("--tls-private-key-file={}", key.display()),
                    ])
                    .await?;
            }
            Fault::WrongCaBundle => {
                let other = Ca::new("some-other-ca")?;
                let bundle = base64::engine::general_purpose::STANDARD.encode(other.cert_pem());
                let patch = serde_json::json!({"spec": {"caBundle": bundle}});
                apiservices
                    .patch(APISERVICE, &PatchParams::default(), &Patch::Merge(&patch))
                    .await?;
            }
            Fault::BackendDown => running.stop_backend(),
        }
        nudge_apiservice(&client, APISERVICE).await?;
        let (suffix, (available, reason, message), client_status, client_body) =
            if matches!(fault, Fault::WrongCertName | Fault::WrongCaBundle) && !availability_checks_tls {
                // kube-aggregator before 1.36 probes availability with TLS verification off
                // (remote_available_controller.go: `Insecure: true`), so a bad certificate or
                // caBundle leaves Available=True while the proxy itself refuses the backend.
                tokio::time::sleep(Duration::from_secs(1)).await;
                let (available, reason, message) =
                    wait_apiservice_status(&client, APISERVICE, "True", Duration::from_secs(5)).await?;
                let resp = admin_http
                    .get(format!("{}{GROUP_PATH}", cluster.server_url()))
                    .send()
                    .await?;
                let client_status = resp.status().as_u16();
                let client_body = redact_ports(resp.text().await?.trim());
                (
                    format!("{name}-before-1.36"),
                    (available, reason, message),
                    client_status,
                    client_body,
                )
            } else {
                let detect = Instant::now();
                let (mut available, mut reason, mut message) =
                    wait_apiservice_status(&client, APISERVICE, "False", Duration::from_secs(60)).await?;
                // A check that ran in the instant between stopping the healthy backend and starting
                // the faulty one saw "connection refused"; one that raced the kill of the backend
                // saw "connection reset by peer" (seen once in a few hundred runs). Ask again
                // until the fault itself shows.
                let settle = Instant::now() + Duration::from_secs(10);
                let transient = |message: &str| match fault {
                    Fault::BackendDown => !message.contains("connection refused"),
                    _ => message.contains("connection refused") || message.contains("connection reset by peer"),
                };
                while transient(&message) && Instant::now() < settle {
                    nudge_apiservice(&client, APISERVICE).await?;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    (available, reason, message) =
                        wait_apiservice_status(&client, APISERVICE, "False", Duration::from_secs(60)).await?;
                }
                println!("{name}: Available=False after {:?}", detect.elapsed());

                // A client meanwhile. Right after the condition turns False the proxy may not have
                // seen it yet and still tries the backend: 503 "error trying to reach service: <err>".
                // Once it has, every request gets the steady 503 "service unavailable".
                let steady = Instant::now() + Duration::from_secs(10);
                let (client_status, client_body) = loop {
                    let resp = admin_http
                        .get(format!("{}{GROUP_PATH}", cluster.server_url()))
                        .send()
                        .await?;
                    let status = resp.status().as_u16();
                    let body = resp.text().await?.trim().to_owned();
                    if body == "service unavailable" || Instant::now() > steady {
                        break (status, body);
                    }
                    assert_eq!(status, 503, "{name}: {body}");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                };
                (name.clone(), (available, reason, message), client_status, client_body)
            };
        let observed = Observed {
            available,
            reason,
            message: redact_ports(&message),
            client_status,
            client_body,
        };
        insta::with_settings!({ snapshot_suffix => suffix }, {
            insta::assert_yaml_snapshot!("failed_discovery", observed);
        });

        // The rest of the API is unaffected.
        Api::<Namespace>::all(client.clone()).get("default").await?;
        let groups = client.list_api_groups().await?;
        assert!(
            groups.groups.iter().any(|g| g.name == "apps"),
            "core groups missing from /apis"
        );

        // Fix and recover.
        match fault {
            Fault::WrongCaBundle => {
                let patch = serde_json::json!({"spec": {"caBundle": good_bundle}});
                apiservices
                    .patch(APISERVICE, &PatchParams::default(), &Patch::Merge(&patch))
                    .await?;
            }
            _ => running.restart_backend(&[]).await?,
        }
        nudge_apiservice(&client, APISERVICE).await?;
        let recover = Instant::now();
        let (status, reason, _) = wait_apiservice_status(&client, APISERVICE, "True", Duration::from_secs(60)).await?;
        println!("{name}: Available=True again after {:?}", recover.elapsed());
        assert_eq!((status.as_str(), reason.as_str()), ("True", "Passed"));
    }
    running.down(cluster).await?;
    Ok(())
}

#[tokio::test]
async fn an_apiservice_whose_service_is_missing_reports_service_not_found() -> anyhow::Result<()> {
    let cluster = kube_harness::shared().await?;
    let client = cluster.client().await?;
    let apiservices: Api<APIService> = Api::all(client.clone());
    let svc: APIService = serde_json::from_value(serde_json::json!({
        "apiVersion": "apiregistration.k8s.io/v1",
        "kind": "APIService",
        "metadata": {"name": "v1.missing.example.com"},
        "spec": {
            "group": "missing.example.com",
            "version": "v1",
            "groupPriorityMinimum": 1000,
            "versionPriority": 15,
            "insecureSkipTLSVerify": true,
            "service": {"namespace": "default", "name": "no-such-service", "port": 443},
        },
    }))?;
    apiservices.create(&PostParams::default(), &svc).await?;
    let (available, reason, message) =
        wait_apiservice_status(&client, "v1.missing.example.com", "False", Duration::from_secs(30)).await?;
    insta::assert_yaml_snapshot!("service_not_found", (available, reason, message));
    apiservices
        .delete("v1.missing.example.com", &Default::default())
        .await?;
    Ok(())
}
