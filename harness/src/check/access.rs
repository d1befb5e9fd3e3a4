//! Access rules, judged exactly: allowed means a 2xx answer; denied means 403 with a `Status`
//! whose reason is `Forbidden`; anything else — a 5xx, another 4xx, a transport error — fails
//! the rule and shows the Status. A 403 names the layer that answered: kube-apiserver
//! authorizes every request before it proxies it to an extension server, so the harness asks
//! kube-apiserver's authorizer the same question (a SubjectAccessReview): if it denies, its
//! RBAC answered and the request never reached the backend; if it allows, the backend itself
//! denied.

use std::time::Duration;

use k8s_openapi::api::authorization::v1::{ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec};
use kube::Api;
use kube::api::PostParams;

use crate::Cluster;
use crate::target::expect::Access;

/// What one request as the rule's identity got back.
#[derive(Debug)]
enum Answer {
    /// 2xx.
    Success,
    /// 403 with reason `Forbidden`.
    Forbidden(String),
    /// Any other Status (5xx, 404, a 403 without reason Forbidden, …).
    Other { code: u16, reason: String, message: String },
    /// No HTTP answer at all.
    Transport(String),
}

impl Answer {
    fn of<T>(result: &Result<T, kube::Error>) -> Self {
        match result {
            Ok(_) => Self::Success,
            Err(kube::Error::Api(s)) if s.code == 403 && s.reason == "Forbidden" => Self::Forbidden(s.message.clone()),
            Err(kube::Error::Api(s)) => Self::Other {
                code: s.code,
                reason: s.reason.clone(),
                message: s.message.clone(),
            },
            Err(e) => Self::Transport(crate::process::error_chain(e)),
        }
    }
}

/// Check one access rule; `patience` is how long an expected-allowed request may still be
/// denied while new RBAC reaches the authorizers.
pub(super) async fn check_access(
    cluster: &Cluster,
    access: &Access,
    patience: Duration,
) -> std::result::Result<String, String> {
    let client = cluster
        .user(
            &access.user,
            &access.groups.iter().map(String::as_str).collect::<Vec<_>>(),
        )
        .await
        .map_err(|e| e.to_string())?;
    let path = access.path();
    let request = || {
        let client = client.clone();
        let path = path.clone();
        async move {
            let request = http::Request::get(&path)
                .body(Vec::new())
                .map_err(|e| kube::Error::Service(e.to_string().into()))?;
            client.request_text(request).await
        }
    };
    let result = if access.allowed {
        super::queries::retry_while_forbidden(patience, request).await
    } else {
        request().await
    };
    let seen = format!("GET {path}");
    match (Answer::of(&result), access.allowed) {
        (Answer::Success, true) => Ok(format!("allowed ({seen}: 2xx)")),
        (Answer::Forbidden(message), false) => {
            let layer = layer(cluster, access).await;
            Ok(format!("denied by {layer} ({seen}: 403 Forbidden: {message})"))
        }
        (Answer::Success, false) => Err(format!("expected 403 Forbidden, but {seen} succeeded (2xx)")),
        (Answer::Forbidden(message), true) => {
            let layer = layer(cluster, access).await;
            Err(format!(
                "expected allowed, but {layer} denied it: {seen}: 403 Forbidden: {message}"
            ))
        }
        (Answer::Other { code, reason, message }, expected) => {
            // A server whose own identity lacks a permission answers 500 with kube-apiserver's
            // "… is forbidden" in its message: say which binding usually grants it.
            let hint = crate::target::identity::forbidden_in(&message)
                .map(|(_, hint)| format!("\nThe server's own identity lacks a permission. {hint}"))
                .unwrap_or_default();
            Err(format!(
                "expected {}, but {seen} answered {code} {reason}: {message}{}{hint}",
                if expected { "allowed (2xx)" } else { "403 Forbidden" },
                if code >= 500 {
                    " (a server error is neither allowed nor denied)"
                } else {
                    ""
                }
            ))
        }
        (Answer::Transport(e), expected) => Err(format!(
            "expected {}, but {seen} got no answer: {e}",
            if expected { "allowed (2xx)" } else { "403 Forbidden" }
        )),
    }
}

/// Which layer a 403 came from: kube-apiserver's authorizer, asked the same question through
/// a SubjectAccessReview, or (when it allows the request) the server behind it.
async fn layer(cluster: &Cluster, access: &Access) -> String {
    let review = SubjectAccessReview {
        spec: SubjectAccessReviewSpec {
            user: Some(access.user.clone()),
            groups: Some(access.groups.clone()),
            resource_attributes: Some(ResourceAttributes {
                verb: Some(access.verb.clone()),
                group: Some(access.group.clone()),
                version: Some(access.version.clone()),
                resource: Some(access.resource.clone()),
                namespace: access.namespace.clone(),
                name: access.name.clone(),
                ..Default::default()
            }),
            ..Default::default()
        },
        ..Default::default()
    };
    let admin = match cluster.client().await {
        Ok(admin) => admin,
        Err(e) => return format!("an unknown layer (no admin client to ask: {e})"),
    };
    let answer = Api::<SubjectAccessReview>::all(admin.clone())
        .create(&PostParams::default(), &review)
        .await
        .map(|r| r.status.map(|s| s.allowed));
    match answer {
        Ok(Some(false)) => "kube-apiserver's RBAC (the request never reached a backend)".to_owned(),
        Ok(Some(true)) if aggregated(admin, access).await => format!(
            "the extension server of {}/{} itself (kube-apiserver's RBAC allows the request)",
            access.group, access.version
        ),
        Ok(Some(true)) => "kube-apiserver past its RBAC (which allows the request)".to_owned(),
        Ok(None) => "an unknown layer (the SubjectAccessReview had no status)".to_owned(),
        Err(e) => format!("an unknown layer (the SubjectAccessReview failed: {e})"),
    }
}

/// Whether the rule's group/version is served by an extension server (an APIService with a
/// Service), not by kube-apiserver itself.
async fn aggregated(admin: kube::Client, access: &Access) -> bool {
    use k8s_openapi::kube_aggregator::pkg::apis::apiregistration::v1::APIService;
    let name = format!("{}.{}", access.version, access.group);
    Api::<APIService>::all(admin)
        .get_opt(&name)
        .await
        .ok()
        .flatten()
        .and_then(|a| a.spec)
        .is_some_and(|spec| spec.service.is_some())
}
