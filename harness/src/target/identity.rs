//! A backend's own identity: the ServiceAccount its target names, a TokenRequest token in a
//! file that is renewed while the target is up, and a kubeconfig that reads it
//! (`{{backendKubeconfig}}`). And, when a backend dies or never gets ready, the permission its
//! log says it lacked, with the binding that usually grants it.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::Cluster;
use crate::cluster::kubeconfig;
use crate::error::{Error, Result};

/// Lifetime of a backend's token; it is renewed at a third of that.
const TOKEN_SECONDS: i64 = 3600;

/// The backend's kubeconfig and the task that keeps its token fresh (aborted on drop).
#[derive(Debug)]
pub(crate) struct BackendIdentity {
    /// `{{backendKubeconfig}}`.
    pub kubeconfig: PathBuf,
    renewal: tokio::task::JoinHandle<()>,
}

impl Drop for BackendIdentity {
    fn drop(&mut self) {
        self.renewal.abort();
    }
}

/// Mint a token for `service_account` (`namespace/name`, created if missing), write it and a
/// kubeconfig that reads it (`tokenFile`, which client-go and kube re-read) into `work`, and
/// renew it every 20 minutes while the returned value lives.
pub(crate) async fn backend_identity(cluster: &Cluster, service_account: &str, work: &Path) -> Result<BackendIdentity> {
    let (namespace, name) = service_account.split_once('/').unwrap_or(("default", service_account));
    let (namespace, name) = (namespace.to_owned(), name.to_owned());
    let admin = cluster.client().await?;
    let token_file = work.join("backend.token");
    let token = crate::cluster::identity::service_account_token(&admin, &namespace, &name, TOKEN_SECONDS).await?;
    crate::pki::write_private(&token_file, token.as_bytes())?;
    let mut config = kubeconfig::kubeconfig(
        cluster.server_url(),
        &cluster.server_ca_pem,
        &format!("system:serviceaccount:{namespace}:{name}"),
        None,
        None,
    );
    for named in &mut config.auth_infos {
        if let Some(auth) = named.auth_info.as_mut() {
            auth.token_file = Some(token_file.to_string_lossy().into_owned());
        }
    }
    let path = work.join("backend.kubeconfig");
    kubeconfig::write(&config, &path)?;
    let renewal = tokio::spawn(async move {
        let every = Duration::from_secs(u64::try_from(TOKEN_SECONDS / 3).unwrap_or(1200));
        loop {
            tokio::time::sleep(every).await;
            let renewed = crate::cluster::identity::service_account_token(&admin, &namespace, &name, TOKEN_SECONDS)
                .await
                .and_then(|t| crate::pki::write_private(&token_file, t.as_bytes()));
            if let Err(e) = renewed {
                tracing::warn!(service_account = %format!("{namespace}/{name}"), error = %e, "could not renew the backend's token");
            }
        }
    });
    Ok(BackendIdentity {
        kubeconfig: path,
        renewal,
    })
}

/// The first `… is forbidden: User "…" cannot …` line of a backend's log, and which binding
/// usually grants what it lacked; `None` if the log says no such thing.
pub(crate) fn forbidden_in(log: &str) -> Option<(String, String)> {
    let line = log
        .lines()
        .find(|l| l.contains(" is forbidden: User "))?
        .replace("\\\"", "\"");
    let at = line.find(" is forbidden: ")?;
    // The resource before "is forbidden", without the logger's prefix: `namespaces`,
    // `subjectaccessreviews.authorization.k8s.io`, `configmaps "extension-apiserver-authentication"`.
    let words: Vec<&str> = line[..at].split(' ').collect();
    let last = words.last().copied().unwrap_or_default();
    let resource = match words.len().checked_sub(2).map(|i| words[i]) {
        Some(kind) if last.starts_with('"') => format!("{kind} {last}"),
        _ => last.to_owned(),
    };
    let resource = resource.trim_start_matches("err=\"");
    let what = format!("{resource}{}", line[at..].trim_end().trim_end_matches('"'));
    let what = what.as_str();
    let hint = if what.contains("\"extension-apiserver-authentication\"") {
        "It usually comes from a RoleBinding in kube-system to the Role extension-apiserver-authentication-reader \
         (an aggregated API server reads its client and requestheader CAs there)."
            .to_owned()
    } else if what.contains("subjectaccessreviews") || what.contains("tokenreviews") {
        "It usually comes from a ClusterRoleBinding to the ClusterRole system:auth-delegator (an aggregated API \
         server delegates authentication and authorization to kube-apiserver)."
            .to_owned()
    } else {
        match verb_and_resource(what) {
            Some((verb, resource, group)) => format!(
                "Grant it with a Role or ClusterRole allowing {verb} on {resource}{}, bound to the backend's \
                 ServiceAccount.",
                if group.is_empty() {
                    String::new()
                } else {
                    format!(" in API group {group}")
                }
            ),
            None => "Grant it with a Role or ClusterRole bound to the backend's ServiceAccount.".to_owned(),
        }
    };
    Some((what.to_owned(), hint))
}

/// `cannot list resource "namespaces" in API group ""` → `("list", "namespaces", "")`.
fn verb_and_resource(line: &str) -> Option<(&str, &str, &str)> {
    let after = line.split_once(" cannot ")?.1;
    let (verb, rest) = after.split_once(" resource \"")?;
    let (resource, rest) = rest.split_once('"')?;
    let group = rest
        .split_once("in API group \"")
        .and_then(|(_, g)| g.split_once('"'))
        .map_or("", |(g, _)| g);
    Some((verb, resource, group))
}

/// A backend start error, with the permission its log says it lacked (if it says so).
pub(crate) fn diagnose(error: Error, log: &Path) -> Error {
    if !matches!(error, Error::ExitedBeforeReady { .. } | Error::StartupTimeout { .. }) {
        return error;
    }
    let text = std::fs::read_to_string(log).unwrap_or_default();
    if let Some((line, hint)) = forbidden_in(&text) {
        return Error::BackendForbidden {
            source: Box::new(error),
            line,
            hint,
        };
    }
    match &error {
        // A /readyz that answers but never 2xx: usually a check the local plane cannot satisfy.
        Error::StartupTimeout { last_probe, .. } if last_probe.contains("/readyz: 5") => Error::BackendReadiness {
            source: Box::new(error),
            hint: "Its /readyz answers but never passes: if a check needs what the local plane lacks (a kubelet, \
                   pods, a controller), set `readinessPath: /livez`, or `readinessLog: <a line it prints when \
                   serving>`."
                .to_owned(),
        },
        _ => error,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_missing_binding_is_named() {
        let reader = r#"W1201 10:00:00.000000 1 authentication.go:1] unable to get configmap/extension-apiserver-authentication in kube-system: configmaps "extension-apiserver-authentication" is forbidden: User "system:serviceaccount:wardle:apiserver" cannot get resource "configmaps" in API group "" in the namespace "kube-system""#;
        let (line, hint) = forbidden_in(reader).unwrap_or_default();
        assert!(
            line.starts_with("configmaps \"extension-apiserver-authentication\" is forbidden"),
            "{line}"
        );
        assert!(hint.contains("extension-apiserver-authentication-reader"), "{hint}");

        let delegator = r#"E1201 x.go:1] subjectaccessreviews.authorization.k8s.io is forbidden: User "system:serviceaccount:wardle:apiserver" cannot create resource "subjectaccessreviews" in API group "authorization.k8s.io" at the cluster scope"#;
        let (_, hint) = forbidden_in(delegator).unwrap_or_default();
        assert!(hint.contains("system:auth-delegator"), "{hint}");

        let reflector = r#"E1201 reflector.go:1] "Failed to watch" err="failed to list *v1.Namespace: namespaces is forbidden: User \"system:serviceaccount:wardle:apiserver\" cannot list resource \"namespaces\" in API group \"\" at the cluster scope""#;
        let (line, hint) = forbidden_in(reflector).unwrap_or_default();
        assert!(line.starts_with("namespaces is forbidden"), "{line}");
        assert!(hint.contains("list on namespaces"), "{hint}");

        assert!(forbidden_in("all is well\n").is_none());
    }
}
