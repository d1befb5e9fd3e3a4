//! Admission and conversion webhooks, end to end: the `webhooks` target (our own
//! `samples-webhook` behind a validating, a mutating and a CRD conversion webhook, each
//! completed by the harness) with faults injected one at a time — the backend down, too slow
//! for `timeoutSeconds`, answering 500, a `caBundle` of another CA, and a conversion webhook
//! that is down under a stored object. What kube-apiserver answers each time is snapshotted
//! (ports redacted); `failurePolicy: Ignore` lets a create through while the backend is down.
//!
//! The faults share cluster-scoped webhook configurations, so they run one after another in a
//! single test; this file is its own test binary, hence its own cluster.

use base64::Engine;
use kube::Api;
use kube::api::{ApiResource, DeleteParams, DynamicObject, GroupVersionKind, Patch, PatchParams, PostParams};
use kube_harness::Capability;
use kube_harness::pki::Ca;
use kube_harness::target::Target;

mod common;

#[derive(Debug, Clone, Copy)]
enum Fault {
    BackendDown,
    Timeout,
    ServerError,
    WrongCaBundle,
    ConversionDown,
}

#[derive(serde::Serialize)]
struct Observed {
    fault: String,
    code: u16,
    reason: String,
    message: String,
}

const NAMESPACE: &str = "webhook-system";
const CONFIGS: [(&str, &str); 2] = [
    ("validatingwebhookconfigurations", "samples-validation"),
    ("mutatingwebhookconfigurations", "samples-defaults"),
];

fn sample(name: &str, text: &str) -> DynamicObject {
    let mut object = DynamicObject::new(name, &samples_resource("v1alpha1")).within(NAMESPACE);
    object.data = serde_json::json!({"spec": {"testString": text}});
    object
}

fn samples_resource(version: &str) -> ApiResource {
    ApiResource::from_gvk(&GroupVersionKind::gvk("webhook.example.com", version, "Sample"))
}

fn config_resource(plural: &str) -> ApiResource {
    let kind = if plural.starts_with("validating") {
        "ValidatingWebhookConfiguration"
    } else {
        "MutatingWebhookConfiguration"
    };
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("admissionregistration.k8s.io", "v1", kind),
        plural,
    )
}

/// The ports in a webhook error (`…svc:43121/validate`, `127.0.0.1:43121`) and the etcd
/// revision in a conversion error vary per run.
fn redact(message: &str) -> String {
    let message = kube_harness::snapshot::redact_ports(message);
    let mut out = String::new();
    let mut rest = message.as_str();
    while let Some(at) = rest.find(".svc:") {
        out.push_str(&rest[..at + 5]);
        rest = &rest[at + 5..];
        let digits = rest.chars().take_while(char::is_ascii_digit).count();
        if digits > 0 {
            out.push_str("[port]");
        }
        rest = &rest[digits..];
    }
    out.push_str(rest);
    // etcd's revision of the object that could not be converted.
    match out.find("revision=") {
        Some(at) => {
            let digits = out[at + 9..].chars().take_while(char::is_ascii_digit).count();
            out.replace_range(at + 9..at + 9 + digits, "[revision]");
            out
        }
        None => out,
    }
}

/// Merge `entry` into every webhook of the `configs`.
async fn patch_webhooks(
    client: &kube::Client,
    configs: &[(&str, &str)],
    entry: serde_json::Value,
) -> anyhow::Result<()> {
    for &(plural, name) in configs {
        let api: Api<DynamicObject> = Api::all_with(client.clone(), &config_resource(plural));
        let current = api.get(name).await?;
        let mut hooks = current.data["webhooks"].clone();
        for hook in hooks.as_array_mut().into_iter().flatten() {
            json_merge(hook, &entry);
        }
        let patch = serde_json::json!({"webhooks": hooks});
        api.patch(name, &PatchParams::default(), &Patch::Merge(&patch)).await?;
    }
    Ok(())
}

fn json_merge(target: &mut serde_json::Value, patch: &serde_json::Value) {
    match (target, patch) {
        (serde_json::Value::Object(t), serde_json::Value::Object(p)) => {
            for (k, v) in p {
                json_merge(t.entry(k.clone()).or_insert(serde_json::Value::Null), v);
            }
        }
        (t, p) => *t = p.clone(),
    }
}

#[tokio::test]
async fn each_webhook_fault_fails_requests_in_kube_apiservers_words() -> anyhow::Result<()> {
    let cluster = kube_harness::shared().await?;
    if let Some(reason) = cluster.lacks(Capability::HostBackends) {
        println!("skipped: {reason}");
        return Ok(());
    }
    let mut running = cluster
        .up_target(&Target::load(common::target_dir("webhooks"))?)
        .await?;
    let client = cluster.client().await?;
    let samples: Api<DynamicObject> = Api::namespaced_with(client.clone(), NAMESPACE, &samples_resource("v1alpha1"));
    let good_bundle = {
        let api: Api<DynamicObject> = Api::all_with(client.clone(), &config_resource(CONFIGS[0].0));
        api.get(CONFIGS[0].1).await?.data["webhooks"][0]["clientConfig"]["caBundle"].clone()
    };

    // Healthy: admitted (and mutated).
    let created = samples
        .create(&PostParams::default(), &sample("healthy", "fine"))
        .await?;
    assert_eq!(created.data["spec"]["color"], "blue", "mutated");
    // Stored (as v1beta1) for the conversion fault below.
    samples
        .create(&PostParams::default(), &sample("stored", "kept"))
        .await?;

    let mut observed = Vec::new();
    for fault in [
        Fault::BackendDown,
        Fault::Timeout,
        Fault::ServerError,
        Fault::WrongCaBundle,
        Fault::ConversionDown,
    ] {
        match fault {
            Fault::BackendDown | Fault::ConversionDown => running.stop_backend(),
            Fault::Timeout => running.restart_backend(&["--delay-ms=3000".into()]).await?,
            Fault::ServerError => running.restart_backend(&["--fail-with-500".into()]).await?,
            Fault::WrongCaBundle => {
                // The validating webhook only: the mutating one, called first, stays healthy.
                let other = Ca::new("some-other-ca")?;
                let bundle = base64::engine::general_purpose::STANDARD.encode(other.cert_pem());
                patch_webhooks(
                    &client,
                    &CONFIGS[..1],
                    serde_json::json!({"clientConfig": {"caBundle": bundle}}),
                )
                .await?;
            }
        }
        // kube-apiserver keeps connections to webhooks alive: the first call after the backend
        // stopped or restarted may go down one to the process that is gone ("broken pipe",
        // "connection reset by peer", "EOF"). Ask again until the fault itself answers.
        let transient = ["broken pipe", "connection reset by peer", ": EOF"];
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let status = loop {
            let outcome = match fault {
                // A read of the stored object in the other version needs the conversion webhook.
                Fault::ConversionDown => samples.get("stored").await.map(drop),
                _ => samples
                    .create(
                        &PostParams::default(),
                        &sample(&format!("{fault:?}").to_lowercase(), "fine"),
                    )
                    .await
                    .map(drop),
            };
            let status = match outcome {
                Err(kube::Error::Api(status)) => Some(status),
                // A changed configuration reaches kube-apiserver's webhook informer a moment
                // later: until then the create is admitted.
                Ok(()) if matches!(fault, Fault::WrongCaBundle) && std::time::Instant::now() < deadline => {
                    samples.delete("wrongcabundle", &DeleteParams::default()).await?;
                    None
                }
                other => anyhow::bail!("{fault:?}: expected kube-apiserver to refuse, got {other:?}"),
            };
            if let Some(status) = status
                && (!transient.iter().any(|t| status.message.contains(t)) || std::time::Instant::now() > deadline)
            {
                break status;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        };
        println!("{fault:?}: {} {}", status.code, status.message);
        observed.push(Observed {
            fault: format!("{fault:?}"),
            code: status.code,
            reason: status.reason.clone(),
            message: redact(&status.message),
        });
        // Recover.
        match fault {
            Fault::WrongCaBundle => {
                let good = serde_json::json!({"clientConfig": {"caBundle": good_bundle}});
                patch_webhooks(&client, &CONFIGS[..1], good).await?;
            }
            _ => running.restart_backend(&[]).await?,
        }
        samples.get("stored").await?;
    }
    insta::assert_yaml_snapshot!("webhook_faults", observed);

    // failurePolicy: Ignore lets a create through while the backend is down, unmutated. In
    // the storage version: a v1alpha1 create needs the conversion webhook, which has no
    // failure policy.
    let stored: Api<DynamicObject> = Api::namespaced_with(client.clone(), NAMESPACE, &samples_resource("v1beta1"));
    let mut ignored = DynamicObject::new("ignored", &samples_resource("v1beta1")).within(NAMESPACE);
    ignored.data = serde_json::json!({"spec": {"text": "fine"}});
    running.stop_backend();
    patch_webhooks(&client, &CONFIGS, serde_json::json!({"failurePolicy": "Ignore"})).await?;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let created = loop {
        match stored.create(&PostParams::default(), &ignored).await {
            // Until the informer has the new policy, the down backend still fails it.
            Err(kube::Error::Api(s)) if s.code == 500 && std::time::Instant::now() < deadline => {
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
            other => break other?,
        }
    };
    assert!(
        created.data["spec"].get("color").is_none(),
        "not mutated: {:?}",
        created.data
    );
    running.restart_backend(&[]).await?;
    for name in ["healthy", "stored", "ignored"] {
        samples.delete(name, &DeleteParams::default()).await?;
    }
    running.down(cluster).await?;
    for (plural, name) in CONFIGS {
        let api: Api<DynamicObject> = Api::all_with(client.clone(), &config_resource(plural));
        assert!(api.get_opt(name).await?.is_none(), "{name} left behind");
    }
    Ok(())
}
