//! Who talks to a cluster: the admin, certificate users, ServiceAccount tokens,
//! impersonation, and the kubeconfigs and HTTP clients for each.

use std::path::Path;

use kube::config::Kubeconfig;

use super::{Cluster, kubeconfig};
use crate::error::{Error, Result};
use crate::pki::{CertSpec, KeyedCert};

impl Cluster {
    /// A client authenticated as the admin (`system:masters`). Build one per test: a kube
    /// `Client` belongs to the tokio runtime it was first used on.
    ///
    /// # Errors
    /// [`Error::Client`] if the client cannot be built.
    pub async fn client(&self) -> Result<kube::Client> {
        kubeconfig::client(self.admin_kubeconfig.clone()).await
    }

    /// Issue a client certificate for `name` in `groups` (CN = user, O = groups), signed by
    /// the cluster's client CA.
    ///
    /// # Errors
    /// [`Error::Pki`].
    pub fn issue_user_cert(&self, name: &str, groups: &[&str]) -> Result<KeyedCert> {
        self.client_ca()
            .ok_or_else(|| Error::Unsupported {
                what: "issuing client certificates",
                provider: self.provider().to_string(),
                hint: "use Cluster::user (impersonation there) or a ServiceAccount token",
            })?
            .issue(&CertSpec::client(name, groups.iter().copied()))
    }

    /// A kubeconfig for user `name` in `groups`, authenticated by a fresh client certificate.
    ///
    /// # Errors
    /// [`Error::Pki`].
    pub fn user_kubeconfig(&self, name: &str, groups: &[&str]) -> Result<Kubeconfig> {
        let cert = self.issue_user_cert(name, groups)?;
        Ok(kubeconfig::kubeconfig(
            &self.info.server,
            &self.server_ca_pem,
            name,
            Some(&cert),
            None,
        ))
    }

    /// A kubeconfig that authenticates with a bearer token (a ServiceAccount token, say).
    pub fn token_kubeconfig(&self, token: &str) -> Kubeconfig {
        kubeconfig::kubeconfig(&self.info.server, &self.server_ca_pem, "token-user", None, Some(token))
    }

    /// A client for user `name` in `groups`, authenticated by a fresh client certificate
    /// (on providers whose client CA the harness does not hold: the admin impersonating
    /// them, which RBAC treats the same). With no RBAC bound, it gets 403 Forbidden for
    /// almost everything.
    ///
    /// ```no_run
    /// # async fn wrapper() -> kube_harness::Result<()> {
    /// let cluster = kube_harness::shared().await?;
    /// let alice = cluster.user("alice", &["devs"]).await?; // CN=alice, O=devs
    /// let nobody = cluster.user("nobody", &[]).await?;     // in no group
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`Error::Pki`], [`Error::Client`].
    pub async fn user(&self, name: &str, groups: &[&str]) -> Result<kube::Client> {
        if self.client_ca().is_none() {
            return self.impersonating(name, groups).await;
        }
        kubeconfig::client(self.user_kubeconfig(name, groups)?).await
    }

    /// A token for ServiceAccount `namespace/name` from the TokenRequest API (creating the
    /// ServiceAccount if it does not exist), valid for `expiration_seconds`.
    ///
    /// ```no_run
    /// # async fn wrapper() -> kube_harness::Result<()> {
    /// let cluster = kube_harness::shared().await?;
    /// let token = cluster.service_account_token("default", "my-operator", 600).await?;
    /// let operator = cluster.token_client(&token).await?; // system:serviceaccount:default:my-operator
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`Error::Kube`], or [`Error::Fixture`] if the API returned no token.
    pub async fn service_account_token(&self, namespace: &str, name: &str, expiration_seconds: i64) -> Result<String> {
        service_account_token(&self.client().await?, namespace, name, expiration_seconds).await
    }

    /// A kubeconfig file for ServiceAccount `namespace/name` (created if it does not exist;
    /// its token from TokenRequest, valid for an hour), mode 0600 in the cluster's run
    /// directory: for running an operator's own binary as the identity it is deployed with
    /// (`KUBECONFIG=<path>`, which kube's `Client::try_default` reads).
    ///
    /// ```no_run
    /// # async fn wrapper() -> kube_harness::Result<()> {
    /// let cluster = kube_harness::shared().await?;
    /// let kubeconfig = cluster.service_account_kubeconfig("default", "my-operator").await?;
    /// let _operator = std::process::Command::new("target/debug/my-operator")
    ///     .env("KUBECONFIG", &kubeconfig)
    ///     .spawn();
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`Error::Kube`] from TokenRequest, [`Error::Io`] writing the file.
    pub async fn service_account_kubeconfig(&self, namespace: &str, name: &str) -> Result<std::path::PathBuf> {
        let token = self.service_account_token(namespace, name, 3600).await?;
        let dir = self.info.run_dir.join("service-accounts");
        std::fs::create_dir_all(&dir).map_err(Error::io("create directory", &dir))?;
        let path = dir.join(format!("{namespace}.{name}.kubeconfig"));
        kubeconfig::write(&self.token_kubeconfig(&token), &path)?;
        Ok(path)
    }

    /// A client that authenticates with a bearer token (a ServiceAccount token from
    /// TokenRequest, say).
    ///
    /// # Errors
    /// [`Error::Client`].
    pub async fn token_client(&self, token: &str) -> Result<kube::Client> {
        kubeconfig::client(self.token_kubeconfig(token)).await
    }

    /// A client that authenticates as the admin and impersonates `user` in `groups`
    /// (`Impersonate-User` / `Impersonate-Group`), as `kubectl --as` does.
    ///
    /// # Errors
    /// [`Error::Client`].
    pub async fn impersonating(&self, user: &str, groups: &[&str]) -> Result<kube::Client> {
        let groups: Vec<String> = groups.iter().map(|g| (*g).to_owned()).collect();
        let mut config = self.admin_kubeconfig.clone();
        for named in &mut config.auth_infos {
            if let Some(auth) = named.auth_info.as_mut() {
                auth.impersonate = Some(user.to_owned());
                auth.impersonate_groups = Some(groups.clone());
            }
        }
        kubeconfig::client(config).await
    }

    /// Write the admin kubeconfig to `path` as well (mode 0600).
    ///
    /// # Errors
    /// [`Error::Io`], [`Error::Json`].
    pub fn write_kubeconfig(&self, path: &Path) -> Result<()> {
        kubeconfig::write(&self.admin_kubeconfig, path)
    }

    /// A reqwest client that trusts the API server and authenticates with `cert` (or with
    /// nothing, for bearer tokens), as curl would.
    ///
    /// # Errors
    /// [`Error::Client`].
    pub fn http_client(&self, cert: Option<&KeyedCert>) -> Result<reqwest::Client> {
        let tls = crate::pki::rustls_client_config(&self.server_ca_pem, cert)?;
        reqwest::Client::builder()
            .tls_backend_preconfigured(tls)
            .build()
            .map_err(|e| Error::Client(Box::new(e)))
    }
}

/// [`Cluster::service_account_token`] with a client of one's own (a task that outlives the
/// borrow of the cluster renews tokens with it).
pub(crate) async fn service_account_token(
    admin: &kube::Client,
    namespace: &str,
    name: &str,
    expiration_seconds: i64,
) -> Result<String> {
    use k8s_openapi::api::authentication::v1::TokenRequest;
    use k8s_openapi::api::core::v1::ServiceAccount;
    let sas = kube::Api::<ServiceAccount>::namespaced(admin.clone(), namespace);
    if sas.get_opt(name).await?.is_none() {
        let sa = ServiceAccount {
            metadata: kube::api::ObjectMeta {
                name: Some(name.to_owned()),
                ..Default::default()
            },
            ..Default::default()
        };
        sas.create(&kube::api::PostParams::default(), &sa).await?;
    }
    // Built from JSON, and read back as JSON: the generated types differ between the
    // Kubernetes versions a dependent crate may pick (`spec` is optional in some).
    let request: TokenRequest = serde_json::from_value(serde_json::json!({
        "apiVersion": "authentication.k8s.io/v1",
        "kind": "TokenRequest",
        "spec": {"expirationSeconds": expiration_seconds},
    }))
    .map_err(|source| Error::Json {
        what: "a TokenRequest".into(),
        source,
    })?;
    let answer = sas
        .create_token_request(name, &kube::api::PostParams::default(), &request)
        .await?;
    serde_json::to_value(&answer)
        .ok()
        .and_then(|v| v.pointer("/status/token").and_then(|t| t.as_str()).map(str::to_owned))
        .filter(|t| !t.is_empty())
        .ok_or_else(|| Error::NoToken {
            service_account: format!("{namespace}/{name}"),
        })
}
