//! A target's objects sorted once, at load, into the order and the types bring-up needs:
//! prerequisites (CRDs typed), APIServices typed, the rest. Nothing after this compares kind
//! strings or re-parses an object.

use std::collections::BTreeSet;

use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhookConfiguration, ValidatingWebhookConfiguration, WebhookClientConfig,
};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::kube_aggregator::pkg::apis::apiregistration::v1::APIService;
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::apply::rank;
use super::load::{Document, LoadError};
use crate::error::{Error, Result};

/// An object of the target with its typed form; [`Planned::document`] turns the (possibly
/// changed) object back into the document that is applied.
#[derive(Debug, Clone)]
pub struct Planned<K> {
    /// The document as loaded (file, position, raw value).
    pub doc: Document,
    /// The object, typed.
    pub object: K,
}

impl<K: Serialize + DeserializeOwned> Planned<K> {
    fn parse(doc: Document) -> Result<Self> {
        let object = serde_json::from_value(doc.value.clone()).map_err(|e| {
            Error::Load(LoadError::Invalid {
                doc: doc.source.clone(),
                problem: format!("{} is not a valid {}: {e}", doc.display_name(), doc.kind),
            })
        })?;
        Ok(Self { doc, object })
    }

    /// The document to apply: the typed object as it is now, with the loaded document's
    /// source and identity.
    ///
    /// # Errors
    /// [`Error::Json`] if the object does not serialise.
    pub fn document(&self) -> Result<Document> {
        let value = serde_json::to_value(&self.object).map_err(|source| Error::Json {
            what: self.doc.display_name(),
            source,
        })?;
        Ok(Document {
            value,
            ..self.doc.clone()
        })
    }

    /// `metadata.name`.
    pub fn name(&self) -> &str {
        &self.doc.name
    }
}

/// Applied before the backend starts.
#[derive(Debug, Clone)]
pub enum Prerequisite {
    /// A Namespace (kept on teardown on the local plane: nothing would finalize it).
    Namespace(Document),
    /// A CustomResourceDefinition (waited for until `Established`).
    Crd(Box<Planned<CustomResourceDefinition>>),
    /// RBAC, ServiceAccounts, Secrets, ConfigMaps, Services.
    Object(Document),
}

impl Prerequisite {
    /// The document as loaded.
    pub fn doc(&self) -> &Document {
        match self {
            Self::Namespace(d) | Self::Object(d) => d,
            Self::Crd(p) => &p.doc,
        }
    }
}

/// An admission webhook configuration of the target.
#[derive(Debug, Clone)]
pub enum Admission {
    /// A `ValidatingWebhookConfiguration`.
    Validating(Box<Planned<ValidatingWebhookConfiguration>>),
    /// A `MutatingWebhookConfiguration`.
    Mutating(Box<Planned<MutatingWebhookConfiguration>>),
}

impl Admission {
    /// Each webhook's name and where it is called.
    pub fn webhooks(&self) -> Vec<(&str, &WebhookClientConfig)> {
        fn pairs<'a, W: 'a>(
            hooks: &'a Option<Vec<W>>,
            f: impl Fn(&'a W) -> (&'a str, &'a WebhookClientConfig),
        ) -> Vec<(&'a str, &'a WebhookClientConfig)> {
            hooks.iter().flatten().map(f).collect()
        }
        match self {
            Self::Validating(p) => pairs(&p.object.webhooks, |w| (w.name.as_str(), &w.client_config)),
            Self::Mutating(p) => pairs(&p.object.webhooks, |w| (w.name.as_str(), &w.client_config)),
        }
    }

    /// The document as loaded.
    pub fn doc(&self) -> &Document {
        match self {
            Self::Validating(p) => &p.doc,
            Self::Mutating(p) => &p.doc,
        }
    }

    /// Every webhook's `clientConfig`, to complete or repoint.
    pub fn client_configs_mut(&mut self) -> Vec<&mut WebhookClientConfig> {
        match self {
            Self::Validating(p) => p
                .object
                .webhooks
                .iter_mut()
                .flatten()
                .map(|w| &mut w.client_config)
                .collect(),
            Self::Mutating(p) => p
                .object
                .webhooks
                .iter_mut()
                .flatten()
                .map(|w| &mut w.client_config)
                .collect(),
        }
    }

    /// The document of the configuration as it is now (after the harness completed it).
    ///
    /// # Errors
    /// [`Error::Json`] if it cannot be serialized.
    pub fn document(&self) -> Result<Document> {
        match self {
            Self::Validating(p) => p.document(),
            Self::Mutating(p) => p.document(),
        }
    }
}

/// What bring-up applies, in order: prerequisites, then (after the backend is ready) the
/// APIServices, the admission webhook configurations, then the rest.
#[derive(Debug, Clone, Default)]
pub struct Plan {
    /// Namespaces, CRDs, RBAC and ServiceAccounts, Secrets and ConfigMaps, Services — in
    /// that order.
    pub prerequisites: Vec<Prerequisite>,
    /// APIServices; their `caBundle` and port are filled in from the target spec.
    pub api_services: Vec<Planned<APIService>>,
    /// Validating and mutating webhook configurations: their references are checked to
    /// answer before they are applied.
    pub admission: Vec<Admission>,
    /// Everything else (custom resources, workloads), applied last.
    pub rest: Vec<Document>,
}

impl Plan {
    /// Sort and type `objects`.
    ///
    /// # Errors
    /// [`Error::Load`] for a CRD or APIService that does not parse as one.
    pub(crate) fn new(mut objects: Vec<Document>) -> Result<Self> {
        objects.sort_by_key(|d| rank(&d.kind));
        let mut plan = Self::default();
        for doc in objects {
            match doc.kind.as_str() {
                "Namespace" => plan.prerequisites.push(Prerequisite::Namespace(doc)),
                "CustomResourceDefinition" => plan
                    .prerequisites
                    .push(Prerequisite::Crd(Box::new(Planned::parse(doc)?))),
                "APIService" => plan.api_services.push(Planned::parse(doc)?),
                "ValidatingWebhookConfiguration" => plan
                    .admission
                    .push(Admission::Validating(Box::new(Planned::parse(doc)?))),
                "MutatingWebhookConfiguration" => {
                    plan.admission.push(Admission::Mutating(Box::new(Planned::parse(doc)?)))
                }
                _ if rank(&doc.kind) < rank("APIService") => plan.prerequisites.push(Prerequisite::Object(doc)),
                _ => plan.rest.push(doc),
            }
        }
        Ok(plan)
    }

    /// The target's CRDs.
    pub fn crds(&self) -> impl Iterator<Item = &Planned<CustomResourceDefinition>> {
        self.prerequisites.iter().filter_map(|p| match p {
            Prerequisite::Crd(crd) => Some(crd.as_ref()),
            _ => None,
        })
    }

    /// Every document, in apply order.
    pub fn documents(&self) -> impl Iterator<Item = &Document> {
        self.prerequisites
            .iter()
            .map(Prerequisite::doc)
            .chain(self.api_services.iter().map(|a| &a.doc))
            .chain(self.admission.iter().map(Admission::doc))
            .chain(&self.rest)
    }

    /// The API groups the target serves itself (its CRDs' and APIServices'): kinds of these
    /// groups may take a moment to appear in discovery.
    pub fn served_groups(&self) -> BTreeSet<&str> {
        self.crds()
            .map(|c| c.object.spec.group.as_str())
            .chain(
                self.api_services
                    .iter()
                    .filter_map(|a| a.object.spec.as_ref()?.group.as_deref()),
            )
            .collect()
    }

    /// The Service `namespace/name` an APIService routes to, if it routes to one.
    pub(crate) fn service_of(api_service: &APIService) -> Option<(String, String)> {
        let service = api_service.spec.as_ref()?.service.as_ref()?;
        Some((
            service.namespace.clone().unwrap_or_default(),
            service.name.clone().unwrap_or_default(),
        ))
    }
}
