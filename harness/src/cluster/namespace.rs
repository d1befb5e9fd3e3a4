//! A namespace per test: a generated name, fixtures applied into it, its name redacted in
//! snapshots, deleted at the end.

use std::path::Path;
use std::time::Duration;

use k8s_openapi::api::core::v1::Namespace;
use kube::api::{DeleteParams, PostParams};
use kube::{Api, Client};
use serde_json::{Value, json};

use super::Cluster;
use crate::error::{Error, Result};
use crate::target::apply::{self, Applied};

/// What replaces a test namespace's name in [`TestNamespace::redact`] and in
/// `TestNamespace::insta_settings` (the `insta` feature).
pub const NAMESPACE_REDACTION: &str = "[namespace]";

/// How long deleting a namespace on drop may take.
const DROP_DELETE: Duration = Duration::from_secs(10);

/// A namespace of one test, named `<prefix>-<8 random hex digits>` so tests (and runs on a
/// cluster kept across runs) never collide. Where kube-controller-manager runs it is handed
/// out once its `default` ServiceAccount exists. Dropped, it is deleted (best effort); on a
/// local plane without kube-controller-manager it then stays `Terminating` with its objects —
/// harmless, as no later test can pick the same name.
pub struct TestNamespace {
    name: String,
    client: Client,
    admin: kube::config::Kubeconfig,
    deleted: bool,
}

impl Cluster {
    /// Create a namespace for one test (see [`TestNamespace`]).
    ///
    /// ```no_run
    /// # async fn wrapper() -> kube_harness::Result<()> {
    /// use k8s_openapi::api::core::v1::ConfigMap;
    /// let cluster = kube_harness::shared().await?;
    /// let ns = cluster.test_namespace("widgets").await?; // widgets-1f0c9a2e
    /// let config_maps = ns.api::<ConfigMap>();
    /// ns.apply("tests/fixtures/rbac").await?;           // Roles, bindings… into ns
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`Error::Fixture`] for a prefix that is not a DNS label of at most 54 characters,
    /// [`Error::Kube`] if the namespace cannot be created.
    pub async fn test_namespace(&self, prefix: &str) -> Result<TestNamespace> {
        let valid = !prefix.is_empty()
            && prefix.len() <= 54
            && prefix
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !prefix.starts_with('-')
            && !prefix.ends_with('-');
        if !valid {
            return Err(Error::Fixture(format!(
                "test namespace prefix {prefix:?}: use lower-case letters, digits and '-', at most 54 characters, starting and ending with a letter or digit"
            )));
        }
        let client = self.client().await?;
        let namespaces: Api<Namespace> = Api::all(client.clone());
        loop {
            let name = format!("{prefix}-{}", random_suffix()?);
            let ns: Namespace = serde_json::from_value(
                json!({"metadata": {"name": name, "labels": {"kube-harness/test-namespace": "true"}}}),
            )
            .map_err(|source| Error::Json {
                what: format!("Namespace {name}"),
                source,
            })?;
            match namespaces.create(&PostParams::default(), &ns).await {
                Ok(_) => {
                    let ns = TestNamespace {
                        name,
                        client,
                        admin: self.admin_kubeconfig().clone(),
                        deleted: false,
                    };
                    if self.has(crate::Capability::Controllers) {
                        // The ServiceAccount admission plugin refuses Pods until `default`
                        // exists. kube-controller-manager makes it 1-2 s after the namespace
                        // on a fresh plane; made here in one round trip, it finds it there.
                        create_default_service_account(&ns.client, &ns.name).await?;
                    }
                    return Ok(ns);
                }
                Err(kube::Error::Api(s)) if s.code == 409 => continue,
                Err(e) => {
                    return Err(Error::Request {
                        what: format!("creating Namespace {name}"),
                        source: e,
                    });
                }
            }
        }
    }
}

fn random_suffix() -> Result<String> {
    use ring::rand::SecureRandom;
    let mut bytes = [0u8; 4];
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| Error::Fixture("the system random generator failed".into()))?;
    Ok(hex::encode(bytes))
}

impl std::fmt::Debug for TestNamespace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestNamespace")
            .field("name", &self.name)
            .finish_non_exhaustive()
    }
}

impl TestNamespace {
    /// The generated name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// An admin client (the one the namespace was created with).
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// `Api<K>` for this namespace, as the admin.
    pub fn api<K>(&self) -> Api<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>,
        <K as kube::Resource>::DynamicType: Default,
    {
        Api::namespaced(self.client.clone(), &self.name)
    }

    /// Apply the fixture files at `path` (a file or a directory, read as a target's objects
    /// are) into this namespace with server-side apply, in dependency order (CRDs are waited
    /// for as [`Cluster::install_crds`] waits). Every namespaced object gets this namespace,
    /// whatever its file says; a ServiceAccount subject of a RoleBinding or
    /// ClusterRoleBinding that names no namespace, or a namespace of the fixture's own
    /// objects, is pointed at this one too. Cluster-scoped objects (ClusterRoles, CRDs) are
    /// applied as they are, shared by every test. Namespace objects in the fixture are
    /// refused: the test's namespace replaces them.
    ///
    /// # Errors
    /// [`Error::Load`] naming the file and document, [`Error::Fixture`] for a Namespace,
    /// [`Error::Apply`] naming the file and object.
    pub async fn apply(&self, path: impl AsRef<Path>) -> Result<Vec<Applied>> {
        let docs = crate::target::load::load(&[path.as_ref()])?;
        self.apply_docs(docs).await
    }

    /// Apply only the RBAC among the manifests at `paths` (files or directories, read together)
    /// — ServiceAccounts, Roles, ClusterRoles and their bindings — into this namespace as
    /// [`apply`](Self::apply) does, leaving out everything else (the Namespace, the
    /// Deployment, Services…): an operator's deploy manifests as it ships them, for running its
    /// controller with exactly the permissions it will have. Give every file at once: a
    /// binding's ServiceAccount is pointed at this namespace when its namespace is one of the
    /// objects' own.
    ///
    /// ```no_run
    /// # async fn wrapper() -> kube_harness::Result<()> {
    /// let cluster = kube_harness::shared().await?;
    /// let ns = cluster.test_namespace("rbac").await?;
    /// // The Deployment and the Namespace in operator.yaml are skipped.
    /// ns.apply_rbac(["deploy/operator.yaml", "deploy/rbac.yaml"]).await?;
    /// let token = cluster.service_account_token(ns.name(), "my-operator", 600).await?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`Error::Load`] naming the file and document, [`Error::Fixture`] when the files hold
    /// no RBAC object, [`Error::Apply`] naming the file and object.
    pub async fn apply_rbac<P: AsRef<Path>>(&self, paths: impl IntoIterator<Item = P>) -> Result<Vec<Applied>> {
        const RBAC: [&str; 5] = [
            "ServiceAccount",
            "Role",
            "ClusterRole",
            "RoleBinding",
            "ClusterRoleBinding",
        ];
        let paths: Vec<P> = paths.into_iter().collect();
        let docs: Vec<_> = crate::target::load::load(&paths)?
            .into_iter()
            .filter(|d| RBAC.contains(&d.kind.as_str()))
            .collect();
        if docs.is_empty() {
            let names: Vec<String> = paths.iter().map(|p| p.as_ref().display().to_string()).collect();
            return Err(Error::Fixture(format!(
                "{}: no ServiceAccount, Role, ClusterRole, RoleBinding or ClusterRoleBinding there",
                names.join(", ")
            )));
        }
        self.apply_docs(docs).await
    }

    async fn apply_docs(&self, mut docs: Vec<crate::target::load::Document>) -> Result<Vec<Applied>> {
        if let Some(ns) = docs.iter().find(|d| d.kind == "Namespace") {
            return Err(Error::Fixture(format!(
                "{}: {}: a fixture applied into a test namespace may not create namespaces",
                ns.source,
                ns.display_name()
            )));
        }
        let own: Vec<String> = docs.iter().filter_map(|d| d.namespace.clone()).collect();
        for doc in &mut docs {
            if doc.namespace.is_some() {
                doc.namespace = Some(self.name.clone());
            }
            if doc.kind == "RoleBinding" || doc.kind == "ClusterRoleBinding" {
                retarget_subjects(&mut doc.value, &own, &self.name);
            }
        }
        docs.sort_by_key(|d| apply::rank(&d.kind));
        let mut applied = Vec::with_capacity(docs.len());
        for doc in docs {
            // Namespaced objects whose file names no namespace go into this one too.
            let one = apply::apply_in(&self.client, &doc, &self.name, Duration::from_secs(5)).await?;
            if doc.kind == "CustomResourceDefinition" {
                let crd = serde_json::from_value(doc.value.clone()).map_err(|source| Error::Json {
                    what: format!("{}: {}", doc.source, doc.display_name()),
                    source,
                })?;
                apply::wait_crd_ready(&self.client, &crd, true, Duration::from_secs(30)).await?;
            }
            applied.push(one);
        }
        Ok(applied)
    }

    /// Wait until kube-controller-manager has made the namespace's `default` ServiceAccount
    /// (where one runs; [`Cluster::test_namespace`] does this already).
    ///
    /// # Errors
    /// [`Error::WaitTimeout`] after 30 s.
    pub async fn wait_for_default_service_account(&self) -> Result<()> {
        default_service_account(&self.client, &self.name).await
    }

    /// `text` with this namespace's name replaced by `[namespace]`.
    pub fn redact(&self, text: &str) -> String {
        text.replace(&self.name, NAMESPACE_REDACTION)
    }

    /// [`crate::snapshot::insta_settings`] plus a filter that replaces this namespace's name
    /// with `[namespace]`. Bind it for the test's snapshots:
    /// `let _scope = ns.insta_settings().bind_to_scope();`
    #[cfg(feature = "insta")]
    pub fn insta_settings(&self) -> insta::Settings {
        let mut settings = crate::snapshot::insta_settings();
        // Namespace names hold only [a-z0-9-]: the name is its own regular expression.
        settings.add_filter(&self.name, NAMESPACE_REDACTION);
        settings
    }

    /// Delete the namespace now and report the outcome (dropping it deletes it too, best
    /// effort).
    ///
    /// # Errors
    /// [`Error::Request`] if the API refused.
    pub async fn delete(mut self) -> Result<()> {
        self.deleted = true;
        delete_namespace(&self.client, &self.name).await
    }
}

impl Cluster {
    /// Wait until `namespace`'s `default` ServiceAccount exists: kube-controller-manager makes
    /// it a moment after the namespace, and until then the ServiceAccount admission plugin
    /// refuses Pods that name no ServiceAccount. [`Cluster::test_namespace`] does this itself.
    ///
    /// # Errors
    /// [`Error::WaitTimeout`] after 30 s.
    pub async fn wait_for_default_service_account(&self, namespace: &str) -> Result<()> {
        default_service_account(&self.client().await?, namespace).await
    }
}

/// Create ServiceAccount `default` in `namespace` (already there is fine: kube-controller-manager
/// was first).
async fn create_default_service_account(client: &Client, namespace: &str) -> Result<()> {
    let api: Api<k8s_openapi::api::core::v1::ServiceAccount> = Api::namespaced(client.clone(), namespace);
    let account = k8s_openapi::api::core::v1::ServiceAccount {
        metadata: kube::api::ObjectMeta {
            name: Some("default".into()),
            ..Default::default()
        },
        ..Default::default()
    };
    match api.create(&PostParams::default(), &account).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(()),
        Err(source) => Err(Error::Request {
            what: format!("creating ServiceAccount {namespace}/default"),
            source,
        }),
    }
}

pub(crate) async fn default_service_account(client: &Client, namespace: &str) -> Result<()> {
    let api: Api<k8s_openapi::api::core::v1::ServiceAccount> = Api::namespaced(client.clone(), namespace);
    crate::wait::poll_for(
        &format!("ServiceAccount {namespace}/default (made by kube-controller-manager)"),
        Duration::from_secs(30),
        crate::wait::Backoff::millis(5, 100),
        || async {
            Ok(match api.get_opt("default").await {
                Ok(Some(_)) => crate::wait::Probe::Ready(()),
                Ok(None) => crate::wait::Probe::NotYet("not yet made".into()),
                Err(e) => crate::wait::Probe::NotYet(e.to_string()),
            })
        },
    )
    .await
}

async fn delete_namespace(client: &Client, name: &str) -> Result<()> {
    match Api::<Namespace>::all(client.clone())
        .delete(name, &DeleteParams::background())
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(e) => Err(Error::Request {
            what: format!("deleting Namespace {name}"),
            source: e,
        }),
    }
}

/// Point ServiceAccount subjects without a namespace, or in one of the fixture's own
/// namespaces, at `namespace`.
fn retarget_subjects(binding: &mut Value, own: &[String], namespace: &str) {
    let Some(subjects) = binding.get_mut("subjects").and_then(Value::as_array_mut) else {
        return;
    };
    for subject in subjects {
        if subject.get("kind").and_then(Value::as_str) != Some("ServiceAccount") {
            continue;
        }
        let ns = subject.get("namespace").and_then(Value::as_str);
        if ns.is_none_or(|ns| own.iter().any(|o| o == ns))
            && let Some(obj) = subject.as_object_mut()
        {
            obj.insert("namespace".into(), namespace.into());
        }
    }
}

impl Drop for TestNamespace {
    fn drop(&mut self) {
        if self.deleted {
            return;
        }
        let name = self.name.clone();
        let deleted = super::kubeconfig::cleanup_on_own_runtime(self.admin.clone(), DROP_DELETE, |client| async move {
            delete_namespace(&client, &name).await.map_err(|e| e.to_string())
        });
        if let Err(e) = deleted {
            tracing::debug!(namespace = %self.name, error = %e, "deleting a dropped test namespace");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_account_subjects_follow_the_namespace_and_others_do_not() {
        let mut binding = json!({"subjects": [
            {"kind": "ServiceAccount", "name": "a"},
            {"kind": "ServiceAccount", "name": "b", "namespace": "fixture-ns"},
            {"kind": "ServiceAccount", "name": "c", "namespace": "kube-system"},
            {"kind": "User", "name": "alice"},
        ]});
        retarget_subjects(&mut binding, &["fixture-ns".to_owned()], "t-1234");
        assert_eq!(
            binding,
            json!({"subjects": [
                {"kind": "ServiceAccount", "name": "a", "namespace": "t-1234"},
                {"kind": "ServiceAccount", "name": "b", "namespace": "t-1234"},
                {"kind": "ServiceAccount", "name": "c", "namespace": "kube-system"},
                {"kind": "User", "name": "alice"},
            ]})
        );
    }

    #[test]
    fn suffixes_are_eight_hex_digits_and_differ() -> Result<()> {
        let (a, b) = (random_suffix()?, random_suffix()?);
        assert_eq!(a.len(), 8);
        assert!(a.bytes().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
        Ok(())
    }
}
