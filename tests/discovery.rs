//! Discovery health as users look at it: the aggregated group in legacy `/apis`, in
//! aggregated discovery v2, through `kubectl proxy` (plain HTTP on loopback) as well as
//! directly, with an APIService that trusts the backend by `insecureSkipTLSVerify: true` (as
//! upstream sample-apiserver's own example does) rather than a `caBundle` (covered by the
//! other scenarios).

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use k8s_openapi::kube_aggregator::pkg::apis::apiregistration::v1::APIService;
use kube::Api;
use kube_harness::target::Target;
use kube_harness::target::apply::available_condition;
use serde_json::Value;

mod common;

const GROUP: &str = "wardle.example.com";

/// The wardle target, switched to `insecureSkipTLSVerify: true` and no `caBundle`.
fn insecure_wardle() -> anyhow::Result<Target> {
    let dir = common::target_dir("wardle");
    let mut target = Target::load(dir)?;
    for api_service in &mut target.plan.api_services {
        if let Some(spec) = api_service.object.spec.as_mut() {
            spec.insecure_skip_tls_verify = Some(true);
        }
    }
    if let Some(spec) = target.spec.as_mut() {
        for svc in &mut spec.api_services {
            svc.ca_bundle_from = None;
        }
    }
    Ok(target)
}

#[tokio::test]
async fn an_insecure_skip_tls_verify_apiservice_is_discoverable_every_way() -> anyhow::Result<()> {
    let cluster = kube_harness::shared().await?;
    let running = cluster.up_target(&insecure_wardle()?).await?;
    let client = cluster.client().await?;

    let svc = Api::<APIService>::all(client.clone())
        .get("v1alpha1.wardle.example.com")
        .await?;
    assert_eq!(svc.spec.as_ref().and_then(|s| s.insecure_skip_tls_verify), Some(true));
    assert!(svc.spec.as_ref().and_then(|s| s.ca_bundle.as_ref()).is_none());
    let (status, reason, message) = available_condition(&svc).unwrap_or_default();
    assert_eq!(
        (status.as_str(), reason.as_str(), message.as_str()),
        ("True", "Passed", "all checks passed")
    );

    // Legacy discovery: the group with both versions; v1alpha1 is preferred because its
    // APIService has the higher versionPriority (15 against 10).
    let groups = client.list_api_groups().await?;
    let wardle = groups
        .groups
        .iter()
        .find(|g| g.name == GROUP)
        .ok_or_else(|| anyhow::anyhow!("no {GROUP} in /apis"))?;
    insta::assert_yaml_snapshot!("legacy_group", wardle);

    // Aggregated discovery v2, as kubectl asks for it.
    let entry = kube_harness::check::aggregated_discovery_group(&client, GROUP).await?;
    insta::assert_yaml_snapshot!("aggregated_discovery_group", entry);

    // The same resource list directly and through `kubectl proxy`.
    let direct = client
        .request_text(http::Request::get("/apis/wardle.example.com/v1alpha1").body(Vec::new())?)
        .await?;
    let mut proxy = Command::new(cluster.assets().kubectl())
        .args(["proxy", "--port=0", "--address=127.0.0.1"])
        .env("KUBECONFIG", cluster.kubeconfig_path())
        .stdout(Stdio::piped())
        .spawn()?;
    let result = async {
        let stdout = proxy.stdout.take().ok_or_else(|| anyhow::anyhow!("no stdout"))?;
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line)?;
        // "Starting to serve on 127.0.0.1:PORT"
        let addr = line.trim().rsplit(' ').next().unwrap_or_default().to_owned();
        let via_proxy = reqwest::Client::builder()
            .build()?
            .get(format!("http://{addr}/apis/wardle.example.com/v1alpha1"))
            .send()
            .await?
            .error_for_status()?
            .text()
            .await?;
        anyhow::Ok(via_proxy)
    }
    .await;
    let _ = proxy.kill();
    let _ = proxy.wait();
    let via_proxy: Value = serde_json::from_str(&result?)?;
    assert_eq!(via_proxy, serde_json::from_str::<Value>(&direct)?);

    running.down(cluster).await?;
    Ok(())
}
