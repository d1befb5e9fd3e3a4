//! Targets: directories of plain Kubernetes YAML plus an optional harness spec
//! ([`spec::TargetSpec`]) that says how to run an extension server behind the aggregator.
//! A directory is loaded and checked ([`Target::load`]) before anything starts, brought up on
//! a cluster ([`Cluster::up_target`](crate::Cluster::up_target): certificates, objects in
//! order, the backend, APIServices completed and `Available`) and taken down again
//! ([`RunningTarget::down`]).
//!
//! ```no_run
//! # async fn wrapper() -> Result<(), Box<dyn std::error::Error>> {
//! use kube_harness::Target;
//! let cluster = kube_harness::shared().await?;
//! // A directory of your repository: the server's manifests plus target.yaml.
//! let wardle = Target::load("tests/targets/wardle")?;
//! let running = cluster.up_target(&wardle).await?;   // APIService Available, group served
//! running.down(cluster).await?;
//! # Ok(()) }
//! ```
//!
//! # The directory
//!
//! Every `.yaml`, `.yml` and `.json` file below it is a fixture (documents with `apiVersion`,
//! `kind`, `metadata.name`), except `spec.exclude` globs and directories named `steps` or
//! `kube-harness-bundles`; a directory with a `kustomization.yaml` is what it renders to;
//! `spec.include` adds files or directories from outside (an operator's shipped deploy
//! manifests), without their workloads — the harness runs the backend itself. One
//! document of kind `Target` (conventionally `target.yaml`) says how to run the backend; an
//! `Expectations` document (`expectations.yaml`) what `verify` checks beyond health
//! ([`expect`], [`steps`]). Errors name the file, the document and the field, before anything
//! starts.
//!
//! ```yaml
//! apiVersion: kube-harness.dev/v1alpha1
//! kind: Target
//! metadata:
//!   name: wardle
//! spec:
//!   backend:                       # omit for objects-only targets
//!     goModule: k8s.io/sample-apiserver   # or cargoPackage (+ bin), cargoManifest, or program
//!     goPackage: cmd/server        # the main package inside the module (default: its root)
//!     goVersion: v0.37.2           # exact
//!     serviceAccount: wardle/apiserver   # its own identity: {{backendKubeconfig}}
//!     args: ["--secure-port={{port}}", "--kubeconfig={{backendKubeconfig}}"]
//!     readinessPath: /readyz       # GET until 2xx (https; readinessScheme: http for a plain port)
//!     readinessPort: 8081          # when health has a port of its own (default {{port}})
//!     readinessLog: "watching"     # instead: a line of the backend's log
//!     # readinessScheme: none      # or: ready once started (a controller; steps wait)
//!     startTimeoutSeconds: 60
//!   certificates:
//!     - {name: wardle-ca, ca: true}
//!     - {name: serving, issuer: wardle-ca, dnsNames: [api.wardle.svc], ips: [127.0.0.1]}
//!   apiServices:
//!     - {name: v1alpha1.wardle.example.com, caBundleFrom: wardle-ca}
//!   webhooks:                      # admission configurations and CRDs with a conversion webhook
//!     - {name: samples-validation, caBundleFrom: wardle-ca}
//!   exclude: [docs, "hack/*.yaml"]
//!   include: [../../../config/rbac]  # shipped manifests from outside the directory
//! ```
//!
//! # The backend contract
//!
//! - **Program**: `goModule` is `go build` at that exact version (checked before any cluster
//!   starts, cached under `~/.cache/kube-harness/go/`); `cargoPackage` is `cargo build` in the
//!   workspace around the target, `cargoManifest` in a crate elsewhere; the binary is `bin`, else
//!   the only one, else `default-run` (several and neither: refused, naming them); `program` is
//!   a path relative to the target, or a name on `PATH`.
//! - **Identity**: with `serviceAccount: ns/name` it runs as that ServiceAccount (a TokenRequest
//!   token renewed while up, in `{{backendKubeconfig}}`); without, only the admin's
//!   `{{kubeconfig}}` exists, which hides missing RBAC.
//! - **Placeholders** in `args`/`env`: `{{port}}`, `{{bindAddress}}`, `{{etcdUrl}}`,
//!   `{{backendKubeconfig}}`, `{{kubeconfig}}`, `{{kubectl}}`, `{{server}}`, `{{runDir}}`,
//!   `{{certs.<name>.crt}}`, `{{certs.<name>.key}}` (keys 0600 in a 0700 directory).
//! - **Output** goes to `backend.log` in its run directory; a failed start quotes its last lines,
//!   and a `… is forbidden: User …` line fails the start early with the binding that grants it.
//! - **Stop**: SIGTERM to its process group, SIGKILL after 5 s, also when the harness dies.
//! - **On kind** the same spec becomes a Deployment running as the ServiceAccount, the readiness
//!   probe the container's.
//!
//! The repository's `fixtures/README.md` has every field and the shipped examples.

pub mod apply;
mod backend;
pub(crate) mod cargo;
pub mod expect;
mod finalizers;
pub(crate) mod identity;
pub(crate) mod incluster;
pub mod load;
pub mod plan;
mod references;
mod running;
pub mod sources;
pub mod spec;
pub mod steps;
mod up;
pub(crate) mod webhooks;

use std::path::{Path, PathBuf};

pub use load::{Document, LoadError, Source};
pub use plan::{Admission, Plan, Planned, Prerequisite};
pub use running::{RunningTarget, TargetTimings};

use crate::assets::KubeVersion;
use crate::error::{Error, Result};
use spec::{SPEC_API_VERSION, TargetSpec};

/// A target directory, loaded and checked but not yet applied.
#[derive(Debug, Clone)]
pub struct Target {
    /// Its name (the spec's `metadata.name`, else the directory name).
    pub name: String,
    /// The directory.
    pub dir: PathBuf,
    /// The Kubernetes objects, sorted and typed for bring-up.
    pub plan: Plan,
    /// The harness spec, if the directory has one.
    pub spec: Option<TargetSpec>,
    /// Arguments appended to the backend's (placeholders allowed), e.g. a fault flag.
    pub extra_backend_args: Vec<String>,
    /// The target's `Expectations` document, if it has one (checked by `verify`).
    pub expectations: Option<expect::Expectations>,
}

impl Target {
    /// Load a target directory (or a single file). Everything is checked here, before a
    /// cluster is touched: each file parses, objects are unique, the spec's references resolve.
    ///
    /// ```no_run
    /// # fn wrapper() -> kube_harness::Result<()> {
    /// let target = kube_harness::Target::load("tests/targets/my-apiserver")?;
    /// let has_backend = target.spec.as_ref().is_some_and(|s| s.backend.is_some());
    /// println!("{}: backend {has_backend}", target.name);
    /// # Ok(()) }
    /// ```
    ///
    /// # Errors
    /// [`Error::Load`] for unreadable or malformed files, duplicate objects, bad specs.
    pub fn load(dir: impl AsRef<Path>) -> Result<Self> {
        let dir = dir.as_ref().to_owned();
        let (excludes, includes) = sources_of(&dir)?;
        let mut docs = load::load_with(&dir, &excludes)?;
        for include in includes {
            // The harness runs the backend itself: a workload of the shipped manifests would
            // be a second copy (that no cluster here could pull an image for).
            docs.extend(
                load::load(&[include])?
                    .into_iter()
                    .filter(|d| !WORKLOAD_KINDS.contains(&d.kind.as_str())),
            );
        }
        let (harness_docs, objects): (Vec<Document>, Vec<Document>) =
            docs.into_iter().partition(|d| d.api_version == SPEC_API_VERSION);
        let (expectation_docs, specs): (Vec<Document>, Vec<Document>) =
            harness_docs.into_iter().partition(|d| d.kind == "Expectations");
        if expectation_docs.len() > 1 {
            return Err(Error::Load(load::LoadError::Invalid {
                doc: expectation_docs[1].source.clone(),
                problem: format!(
                    "a second Expectations document; the first is in {}",
                    expectation_docs[0].source
                ),
            }));
        }
        let fixture_refs: Vec<steps::ObjectRef> = objects
            .iter()
            .map(|d| steps::ObjectRef {
                api_version: d.api_version.clone(),
                kind: d.kind.clone(),
                name: d.name.clone(),
                namespace: d.namespace.clone(),
            })
            .collect();
        let expectations = expectation_docs
            .first()
            .map(|d| expect::parse(d, &fixture_refs))
            .transpose()?;
        if specs.len() > 1 {
            return Err(Error::Load(load::LoadError::Invalid {
                doc: specs[1].source.clone(),
                problem: format!("a second harness spec; the first is in {}", specs[0].source),
            }));
        }
        let spec_doc = specs.into_iter().next();
        let spec = spec_doc.as_ref().map(spec::parse).transpose()?;
        let plan = Plan::new(objects)?;
        if let (Some(spec), Some(doc)) = (&spec, &spec_doc) {
            for svc in &spec.api_services {
                let Some(defined) = plan.api_services.iter().find(|a| a.name() == svc.name) else {
                    return Err(Error::Fixture(format!(
                        "{}: Target/{}: `apiServices` names APIService {:?}, but no fixture file defines it",
                        doc.source, doc.name, svc.name
                    )));
                };
                // Upstream manifests often ship `insecureSkipTLSVerify: true`; beside the
                // caBundle the harness injects, kube-apiserver refuses the APIService (422).
                let skips = defined
                    .object
                    .spec
                    .as_ref()
                    .and_then(|s| s.insecure_skip_tls_verify)
                    .unwrap_or(false);
                if skips && svc.ca_bundle_from.is_some() {
                    return Err(Error::Fixture(format!(
                        "{}: APIService {:?} sets `insecureSkipTLSVerify: true`, and Target/{} gives it `caBundleFrom: {}`: \
                         kube-apiserver refuses both together. Remove `insecureSkipTLSVerify` from the APIService \
                         (the harness injects the caBundle, so the aggregator verifies the backend), or drop \
                         `caBundleFrom` to keep skipping verification",
                        defined.doc.source,
                        svc.name,
                        doc.name,
                        svc.ca_bundle_from.as_deref().unwrap_or_default()
                    )));
                }
            }
            for hook in &spec.webhooks {
                let admission = plan.admission.iter().any(|a| a.doc().name == hook.name);
                let conversion = plan.crds().any(|c| {
                    c.name() == hook.name
                        && c.object
                            .spec
                            .conversion
                            .as_ref()
                            .is_some_and(|conv| conv.strategy == "Webhook")
                });
                if !admission && !conversion {
                    return Err(Error::Fixture(format!(
                        "{}: Target/{}: `webhooks` names {:?}, but no fixture file defines a \
                         ValidatingWebhookConfiguration, MutatingWebhookConfiguration or CRD with a conversion \
                         webhook of that name",
                        doc.source, doc.name, hook.name
                    )));
                }
            }
        }
        let name = spec_doc.map(|d| d.name).unwrap_or_else(|| {
            dir.file_name()
                .map_or_else(|| "target".to_owned(), |n| n.to_string_lossy().into_owned())
        });
        check_apiservice_services(&dir, &plan)?;
        Ok(Self {
            name,
            dir,
            plan,
            spec,
            extra_backend_args: Vec::new(),
            expectations,
        })
    }
}

impl Target {
    /// What can be checked of the backend before any cluster starts, beyond [`Target::load`]:
    /// a cargo backend's package and binary exist and the choice is not ambiguous (`cargo
    /// metadata`, about 0.1 s, no build); a Go backend's `goModule@goVersion` downloads (for
    /// `kubernetes`, when `goVersion` is not given) and `goPackage` is a main package in it
    /// (nothing to do when the binary is cached; else `go mod download`, instant for a module
    /// in Go's module cache).
    ///
    /// # Errors
    /// [`Error::Fixture`] naming `target.yaml`, the field and what is wrong with it.
    pub fn preflight(&self, kubernetes: &KubeVersion) -> Result<()> {
        let Some(backend) = self.spec.as_ref().and_then(|s| s.backend.as_ref()) else {
            return Ok(());
        };
        let problem = if let Some(choice) = cargo::CargoChoice::of(&self.dir, backend) {
            choice.resolve().err().map(|e| e.to_string())
        } else if let Some(module) = &backend.go_module {
            let version = backend.go_version.clone().unwrap_or_else(|| kubernetes.staging_tag());
            crate::assets::Resolver::new(*kubernetes)
                .check_go_source(module, backend.go_package.as_deref(), &version)
                .err()
                .map(|e| format!("spec.backend.{e}"))
        } else {
            None
        };
        match problem {
            Some(problem) => Err(Error::Fixture(format!(
                "target {} ({}): {problem}",
                self.name,
                self.dir.join("target.yaml").display()
            ))),
            None => Ok(()),
        }
    }

    /// Append arguments to the backend's command line (placeholders allowed).
    #[must_use]
    pub fn with_backend_args(mut self, args: impl IntoIterator<Item = impl Into<String>>) -> Self {
        self.extra_backend_args.extend(args.into_iter().map(Into::into));
        self
    }
}

/// Kinds `spec.include` leaves out of the files it names.
const WORKLOAD_KINDS: [&str; 7] = [
    "Deployment",
    "StatefulSet",
    "DaemonSet",
    "ReplicaSet",
    "Pod",
    "Job",
    "CronJob",
];

/// The `spec.exclude` globs and the `spec.include` paths of `dir/target.yaml`, read before
/// anything else is.
fn sources_of(dir: &Path) -> Result<(sources::Excludes, Vec<PathBuf>)> {
    let spec_file = dir.join("target.yaml");
    if !spec_file.is_file() {
        return Ok((sources::Excludes::default(), Vec::new()));
    }
    let text = std::fs::read_to_string(&spec_file).map_err(|source| {
        Error::Load(LoadError::Read {
            path: spec_file.clone(),
            source,
        })
    })?;
    let docs = load::parse_documents(&spec_file, &text)?;
    let Some(doc) = docs
        .iter()
        .find(|d| d.api_version == SPEC_API_VERSION && d.kind == "Target")
    else {
        return Ok((sources::Excludes::default(), Vec::new()));
    };
    let strings = |field: &str, what: &str| -> Result<Vec<String>> {
        match doc.value.pointer(&format!("/spec/{field}")) {
            None => Ok(Vec::new()),
            Some(serde_json::Value::Array(items)) => items
                .iter()
                .map(|i| {
                    i.as_str().map(str::to_owned).ok_or_else(|| {
                        Error::Load(LoadError::Invalid {
                            doc: doc.source.clone(),
                            problem: format!("spec.{field} holds {i}, not a {what}"),
                        })
                    })
                })
                .collect(),
            Some(other) => Err(Error::Load(LoadError::Invalid {
                doc: doc.source.clone(),
                problem: format!("spec.{field} must be a list of {what}s, not {other}"),
            })),
        }
    };
    let mut patterns = strings("exclude", "glob string")?;
    let mut includes = Vec::new();
    for include in strings("include", "path")? {
        let path = dir.join(&include);
        if !path.exists() {
            return Err(Error::Load(LoadError::Invalid {
                doc: doc.source.clone(),
                problem: format!(
                    "spec.include names {include:?}, and {} does not exist (paths are relative to the target directory)",
                    path.display()
                ),
            }));
        }
        includes.push(path);
    }
    // A backend's own Deployment manifest is for clusters with pods, never a fixture.
    if let Some(serde_json::Value::String(file)) = doc.value.pointer("/spec/backend/deployment") {
        patterns.push(file.clone());
    }
    Ok((sources::Excludes::new(dir, &patterns, &doc.source)?, includes))
}

/// Every APIService with `spec.service` must point at a Service among the objects (else the
/// aggregator reports ServiceNotFound forever).
fn check_apiservice_services(dir: &Path, plan: &Plan) -> Result<()> {
    for svc in &plan.api_services {
        let Some((ns, name)) = Plan::service_of(&svc.object) else {
            continue;
        };
        let found = plan
            .prerequisites
            .iter()
            .map(plan::Prerequisite::doc)
            .any(|d| d.kind == "Service" && d.name == name && d.namespace.as_deref().unwrap_or("default") == ns);
        if !found {
            return Err(Error::Fixture(format!(
                "{}: APIService {} routes to Service {ns}/{name}, which no fixture file in {} defines",
                svc.doc.source,
                svc.name(),
                dir.display()
            )));
        }
    }
    Ok(())
}
