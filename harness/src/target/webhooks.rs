//! Completing a target's webhooks as its APIServices are completed: the `caBundle` from the
//! target's CA and the Service port of the backend (its host port on the local plane, where the
//! target's `ExternalName` Service sends kube-apiserver to `localhost`; 443 in the cluster,
//! where the Service is the backend's ClusterIP).

use k8s_openapi::ByteString;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;

use super::plan::{Admission, Plan, Prerequisite};
use super::spec::TargetSpec;

/// The `caBundle` (PEM) and port to fill into the webhooks of one object.
#[derive(Debug, Clone, Default)]
pub(crate) struct Completion {
    /// `caBundle`, when the spec names a CA.
    pub ca_pem: Option<String>,
    /// The port of `service` references.
    pub port: Option<u16>,
}

/// What the spec says for the object `name`, or `None` when it does not name it.
pub(crate) fn completion_for(
    spec: Option<&TargetSpec>,
    name: &str,
    certs: &std::collections::BTreeMap<String, crate::pki::KeyedCert>,
    port: Option<u16>,
) -> Option<Completion> {
    let hook = spec?.webhooks.iter().find(|w| w.name == name)?;
    Some(Completion {
        ca_pem: hook
            .ca_bundle_from
            .as_ref()
            .and_then(|c| certs.get(c))
            .map(|c| c.cert_pem.clone()),
        port,
    })
}

/// Fill a CRD's conversion webhook.
pub(crate) fn complete_crd(crd: &mut CustomResourceDefinition, completion: &Completion) {
    let Some(config) = crd
        .spec
        .conversion
        .as_mut()
        .filter(|c| c.strategy == "Webhook")
        .and_then(|c| c.webhook.as_mut())
        .and_then(|w| w.client_config.as_mut())
    else {
        return;
    };
    if let Some(ca) = &completion.ca_pem {
        config.ca_bundle = Some(ByteString(ca.clone().into_bytes()));
    }
    if let (Some(port), Some(service)) = (completion.port, config.service.as_mut()) {
        service.port = Some(i32::from(port));
    }
}

/// Fill every webhook of an admission configuration.
pub(crate) fn complete_admission(admission: &mut Admission, completion: &Completion) {
    let configs = admission.client_configs_mut();
    for config in configs {
        if let Some(ca) = &completion.ca_pem {
            config.ca_bundle = Some(ByteString(ca.clone().into_bytes()));
        }
        if let (Some(port), Some(service)) = (completion.port, config.service.as_mut()) {
            service.port = Some(i32::from(port));
        }
    }
}

/// The plan with every webhook the spec names completed for `port`.
pub(crate) fn completed_plan(
    plan: &Plan,
    spec: Option<&TargetSpec>,
    certs: &std::collections::BTreeMap<String, crate::pki::KeyedCert>,
    port: Option<u16>,
) -> Plan {
    let mut plan = plan.clone();
    for prerequisite in &mut plan.prerequisites {
        if let Prerequisite::Crd(crd) = prerequisite
            && let Some(completion) = completion_for(spec, crd.name(), certs, port)
        {
            complete_crd(&mut crd.object, &completion);
        }
    }
    for admission in &mut plan.admission {
        let name = admission.doc().name.clone();
        if let Some(completion) = completion_for(spec, &name, certs, port) {
            complete_admission(admission, &completion);
        }
    }
    plan
}

/// One webhook, as much of it as a probe needs.
struct Hook<'a> {
    rules: Option<&'a Vec<k8s_openapi::api::admissionregistration::v1::RuleWithOperations>>,
    side_effects: &'a str,
    namespace: Option<&'a str>,
}

/// What a probe creates (dry run): the group, version (`*` for the preferred one) and resource
/// of a rule, in the namespace of the webhook's Service.
struct Probe {
    group: String,
    version: String,
    resource: String,
    namespace: Option<String>,
}

/// The requests the admission webhooks of `admission` would see: a dry-run create for the
/// first rule of each webhook that names one group, one resource and CREATE.
fn probe_targets(admission: &Admission) -> Vec<Probe> {
    // Both kinds of configuration have the same webhook fields.
    macro_rules! hooks {
        ($p:expr) => {
            $p.object
                .webhooks
                .iter()
                .flatten()
                .map(|w| Hook {
                    rules: w.rules.as_ref(),
                    side_effects: w.side_effects.as_str(),
                    namespace: w.client_config.service.as_ref().map(|s| s.namespace.as_str()),
                })
                .collect()
        };
    }
    let hooks: Vec<Hook<'_>> = match admission {
        Admission::Validating(p) => hooks!(p),
        Admission::Mutating(p) => hooks!(p),
    };
    let mut out = Vec::new();
    for hook in hooks {
        // A dry run is refused for webhooks that may have side effects.
        if !matches!(hook.side_effects, "None" | "NoneOnDryRun") {
            continue;
        }
        let one = |v: &Option<Vec<String>>| v.as_ref().and_then(|v| v.first()).is_some_and(|s| s != "*");
        let rule = hook.rules.into_iter().flatten().find(|r| {
            let creates = r
                .operations
                .as_ref()
                .is_some_and(|ops| ops.iter().any(|o| o == "CREATE" || o == "*"));
            creates && one(&r.api_groups) && one(&r.resources)
        });
        let Some(rule) = rule else {
            continue;
        };
        let first = |v: &Option<Vec<String>>| v.as_ref().and_then(|v| v.first()).cloned().unwrap_or_default();
        let resource = first(&rule.resources);
        if !resource.contains('/') {
            out.push(Probe {
                group: first(&rule.api_groups),
                version: first(&rule.api_versions),
                resource,
                namespace: hook.namespace.map(str::to_owned),
            });
        }
    }
    out
}

/// Wait until kube-apiserver's calls to the target's admission webhooks answer: a dry-run
/// create of a matching object, repeated while kube-apiserver says `failed calling webhook`
/// (its webhook informer not yet holding the configuration, a Service without endpoints
/// yet, kube-proxy not yet routing). Any other answer — admitted, denied, invalid — means the
/// webhooks were reached (or the probe did not match them). Webhooks with side effects, or
/// rules without one group and resource, are not probed.
///
/// # Errors
/// [`Error::Fixture`] with kube-apiserver's last words when they do not answer in `timeout`.
pub(crate) async fn wait_admission_answers(
    client: &kube::Client,
    admissions: &[Admission],
    timeout: std::time::Duration,
) -> crate::error::Result<()> {
    use crate::error::Error;
    let deadline = std::time::Instant::now() + timeout;
    for admission in admissions {
        for Probe {
            group,
            version,
            resource,
            namespace,
        } in probe_targets(admission)
        {
            // `apiVersions: ["*"]`: the group's preferred version.
            let version = if version == "*" || version.is_empty() {
                let groups = client.list_api_groups().await.ok();
                match groups
                    .and_then(|g| g.groups.into_iter().find(|g| g.name == group))
                    .and_then(|g| g.preferred_version.map(|v| v.version))
                {
                    Some(v) => v,
                    None => continue,
                }
            } else {
                version
            };
            let api_version = if group.is_empty() {
                version.clone()
            } else {
                format!("{group}/{version}")
            };
            let Ok(list) = client.list_api_group_resources(&api_version).await else {
                continue;
            };
            let Some(found) = list.resources.iter().find(|r| r.name == resource) else {
                continue;
            };
            let namespace = namespace.unwrap_or_else(|| "default".to_owned());
            let prefix = if group.is_empty() {
                format!("/api/{version}")
            } else {
                format!("/apis/{api_version}")
            };
            let path = if found.namespaced {
                format!("{prefix}/namespaces/{namespace}/{resource}?dryRun=All")
            } else {
                format!("{prefix}/{resource}?dryRun=All")
            };
            let mut body = serde_json::json!({
                "apiVersion": api_version,
                "kind": found.kind,
                "metadata": {"name": "kube-harness-webhook-probe"},
            });
            if found.namespaced {
                body["metadata"]["namespace"] = serde_json::Value::String(namespace);
            }
            loop {
                let request = http::Request::post(&path)
                    .header("content-type", "application/json")
                    .body(serde_json::to_vec(&body).unwrap_or_default())
                    .map_err(|e| Error::Client(Box::new(e)))?;
                match client.request_text(request).await {
                    Err(kube::Error::Api(status)) if status.message.contains("failed calling webhook") => {
                        if std::time::Instant::now() > deadline {
                            return Err(Error::Fixture(format!(
                                "{}: its webhooks do not answer kube-apiserver after {timeout:?}: {}",
                                admission.doc().display_name(),
                                status.message
                            )));
                        }
                        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    }
                    _ => break,
                }
            }
        }
    }
    Ok(())
}
