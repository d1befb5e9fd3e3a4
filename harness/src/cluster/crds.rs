//! Installing CustomResourceDefinitions — from Rust types (kube's `CustomResource` derive) or
//! from files — and waiting until they can really be used.

use std::path::Path;
use std::time::Duration;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::Api;
use kube::api::{Patch, PatchParams};

use super::Cluster;
use crate::error::{Error, Result};
use crate::target::apply::{self, FIELD_MANAGER};

/// How long one CRD may take to become usable.
const CRD_READY: Duration = Duration::from_secs(30);

impl Cluster {
    /// Install `crds` with server-side apply (forcing conflicts: the caller's definition
    /// wins) and wait until each is usable: `Established`, a LIST of every served version
    /// answers (right after `Established` the new kind's watch cache is still filling and
    /// answers `429 storage is (re)initializing`), and the first create will not be held for
    /// 2 s (see [`apply::backdate_established`]). Idempotent and cheap when nothing changed,
    /// so every test may call it for the CRDs it needs. Returns the CRDs' names.
    ///
    /// ```no_run
    /// # async fn wrapper() -> kube_harness::Result<()> {
    /// # #[derive(kube::CustomResource, serde::Serialize, serde::Deserialize, Clone, Debug, schemars::JsonSchema)]
    /// # #[kube(group = "example.com", version = "v1", kind = "Widget", namespaced)]
    /// # struct WidgetSpec { size: u32 }
    /// use kube::CustomResourceExt;
    /// let cluster = kube_harness::shared().await?;
    /// cluster.install_crds([Widget::crd()]).await?;
    /// // Listing and creating Widgets works from here on, in any test order.
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`Error::Apply`] naming the CRD, or [`Error::WaitTimeout`] with its conditions or the
    /// last LIST answer.
    pub async fn install_crds(&self, crds: impl IntoIterator<Item = CustomResourceDefinition>) -> Result<Vec<String>> {
        let crds: Vec<CustomResourceDefinition> = crds.into_iter().collect();
        self.install_crd_list(&crds, |name| format!("CustomResourceDefinition {name}"))
            .await
    }

    /// [`Cluster::install_crds`] for the CustomResourceDefinitions in `path`: a YAML or JSON
    /// file (several documents allowed) or a directory of them, read as fixture files are.
    ///
    /// ```no_run
    /// # async fn wrapper() -> kube_harness::Result<()> {
    /// let cluster = kube_harness::shared().await?;
    /// let names = cluster.install_crds_from("config/crd/bases").await?;
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`Error::Load`] naming the file and document (also for a document that is not a
    /// CustomResourceDefinition), then as [`Cluster::install_crds`].
    pub async fn install_crds_from(&self, path: impl AsRef<Path>) -> Result<Vec<String>> {
        let docs = crate::target::load::load(&[path.as_ref()])?;
        let mut crds = Vec::with_capacity(docs.len());
        let mut sources = Vec::with_capacity(docs.len());
        for doc in docs {
            if doc.kind != "CustomResourceDefinition" || doc.group() != "apiextensions.k8s.io" {
                return Err(Error::Fixture(format!(
                    "{}: {} is not a CustomResourceDefinition (install_crds_from reads only CRDs; apply other objects with TestNamespace::apply or a target)",
                    doc.source,
                    doc.display_name()
                )));
            }
            let crd: CustomResourceDefinition =
                serde_json::from_value(doc.value.clone()).map_err(|source| Error::Json {
                    what: format!("{}: {}", doc.source, doc.display_name()),
                    source,
                })?;
            sources.push((doc.name.clone(), doc.source.to_string()));
            crds.push(crd);
        }
        self.install_crd_list(&crds, |name| {
            let file = sources.iter().find(|(n, _)| n == name).map_or("", |(_, f)| f.as_str());
            format!("{file}: CustomResourceDefinition {name}")
        })
        .await
    }

    async fn install_crd_list(
        &self,
        crds: &[CustomResourceDefinition],
        describe: impl Fn(&str) -> String,
    ) -> Result<Vec<String>> {
        let client = self.client().await?;
        let api: Api<CustomResourceDefinition> = Api::all(client.clone());
        let mut names = Vec::with_capacity(crds.len());
        for crd in crds {
            let name = crd.metadata.name.clone().unwrap_or_default();
            if name.is_empty() {
                return Err(Error::Fixture(format!(
                    "a CustomResourceDefinition for {}/{} has no metadata.name (expected {}.{})",
                    crd.spec.group, crd.spec.names.kind, crd.spec.names.plural, crd.spec.group
                )));
            }
            let mut body = serde_json::to_value(crd).map_err(|source| Error::Json {
                what: describe(&name),
                source,
            })?;
            if let Some(obj) = body.as_object_mut() {
                // Apply needs both; kube's derive sets them, a hand-built struct may not.
                obj.insert("apiVersion".into(), "apiextensions.k8s.io/v1".into());
                obj.insert("kind".into(), "CustomResourceDefinition".into());
                obj.remove("status");
            }
            api.patch(&name, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&body))
                .await
                .map_err(|source| Error::Apply {
                    file: "install_crds".into(),
                    object: describe(&name),
                    source,
                })?;
            names.push(name);
        }
        for crd in crds {
            apply::wait_crd_ready(&client, crd, self.one_apiserver(), CRD_READY).await?;
        }
        Ok(names)
    }
}
