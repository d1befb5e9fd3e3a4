//! A target's backend: built (Go module or cargo package) or found, its placeholders
//! expanded, spawned, and waited for.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::identity::{BackendIdentity, backend_identity, diagnose};
use super::{Target, spec};
use crate::Cluster;
use crate::error::{Error, Result};
use crate::pki::KeyedCert;
use crate::process::{Child, ChildSpec, free_port, probe_client};
use crate::wait::Readiness;

/// A backend that is up.
#[derive(Debug)]
pub(super) struct StartedBackend {
    pub child: Child,
    pub port: u16,
    /// From spawn to ready.
    pub ready_after: Duration,
    /// How it was started (a restart reuses it).
    pub launch: ChildSpec,
    /// Its own identity, when the target names a ServiceAccount.
    pub identity: Option<BackendIdentity>,
}

impl Cluster {
    /// The backend's binary: built (Go module, cargo package) or found (`program`).
    pub(super) async fn backend_program(&self, target: &Target, backend: &spec::Backend) -> Result<PathBuf> {
        let program = if let Some(module) = &backend.go_module {
            let version = backend
                .go_version
                .clone()
                .unwrap_or_else(|| self.info().version.staging_tag());
            let resolver = crate::assets::Resolver::new(self.info().version);
            let (module, package) = (module.clone(), backend.go_package.clone());
            crate::process::blocking("backend build", move || {
                resolver.go_binary_of(&module, package.as_deref(), &version)
            })
            .await?
        } else if let Some(choice) = super::cargo::CargoChoice::of(&target.dir, backend) {
            crate::process::blocking("backend build", move || choice.build()).await?
        } else {
            match &backend.program {
                // Relative to the target directory — made absolute, since the backend runs in
                // its run directory, not where the harness was started.
                Some(p) if p.contains('/') => std::path::absolute(target.dir.join(p)).map_err(|source| Error::Io {
                    action: "resolve the backend program",
                    path: target.dir.join(p),
                    source,
                })?,
                Some(p) => PathBuf::from(p),
                None => {
                    return Err(Error::Fixture(format!(
                        "target {}: backend has no program",
                        target.name
                    )));
                }
            }
        };
        Ok(program)
    }

    pub(super) async fn start_backend(
        &self,
        target: &Target,
        backend: &spec::Backend,
        certs: &BTreeMap<String, KeyedCert>,
        work: &Path,
        etcd_url: &str,
    ) -> Result<StartedBackend> {
        let program = self.backend_program(target, backend).await?;
        let port = free_port("backend")?;
        let mut vars = BTreeMap::new();
        vars.insert("port".to_owned(), port.to_string());
        // In the cluster a backend binds every address of its pod (see `incluster`).
        vars.insert("bindAddress".to_owned(), "127.0.0.1".to_owned());
        vars.insert("etcdUrl".to_owned(), etcd_url.to_owned());
        vars.insert(
            "kubeconfig".to_owned(),
            self.kubeconfig_path().to_string_lossy().into_owned(),
        );
        vars.insert("server".to_owned(), self.server_url().to_owned());
        vars.insert(
            "kubectl".to_owned(),
            self.assets().kubectl().to_string_lossy().into_owned(),
        );
        let identity = match &backend.service_account {
            Some(sa) => {
                let identity = backend_identity(self, sa, work).await?;
                vars.insert(
                    "backendKubeconfig".to_owned(),
                    identity.kubeconfig.to_string_lossy().into_owned(),
                );
                Some(identity)
            }
            None => None,
        };
        vars.insert("runDir".to_owned(), work.to_string_lossy().into_owned());
        for name in certs.keys() {
            for ext in ["crt", "key"] {
                let path = work.join("certs").join(format!("{name}.{ext}"));
                vars.insert(format!("certs.{name}.{ext}"), path.to_string_lossy().into_owned());
            }
        }
        let args = backend
            .args
            .iter()
            .chain(&target.extra_backend_args)
            .map(|a| expand(a, &vars).map(OsString::from))
            .collect::<Result<Vec<_>>>()?;
        let mut env = backend
            .env
            .iter()
            .map(|(name, value)| Ok((OsString::from(name), OsString::from(expand(value, &vars)?))))
            .collect::<Result<Vec<_>>>()?;
        // The harness's binaries (kubectl first) come first on the backend's PATH, unless its
        // spec sets PATH itself.
        if !backend.env.contains_key("PATH") {
            let mut paths = vec![self.assets().dir().to_owned()];
            paths.extend(std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()));
            let joined =
                std::env::join_paths(paths).map_err(|e| Error::Fixture(format!("PATH for the backend: {e}")))?;
            env.push((OsString::from("PATH"), joined));
        }
        let readiness = match &backend.readiness_log {
            Some(needle) => Readiness::Log(needle.clone()),
            None if !backend.probes() => Readiness::Spawned,
            None => {
                let ca_name = backend.readiness_ca.clone().or_else(|| {
                    target
                        .spec
                        .as_ref()
                        .and_then(|s| s.certificates.iter().find(|c| !c.ca && !c.client))
                        .and_then(|c| c.issuer.clone())
                });
                let ca_pem = ca_name
                    .and_then(|n| certs.get(&n))
                    .map(|c| c.cert_pem.clone())
                    .unwrap_or_default();
                Readiness::Http {
                    url: format!(
                        "{}://127.0.0.1:{}{}",
                        backend.readiness_scheme.as_deref().unwrap_or("https"),
                        backend.readiness_port.unwrap_or(port),
                        backend.readiness_path.as_deref().unwrap_or("/readyz")
                    ),
                    client: probe_client(&ca_pem, None)?,
                    body: None,
                }
            }
        };
        let launch = ChildSpec {
            args,
            cwd: Some(work.to_owned()),
            env,
            readiness,
            ..ChildSpec::new("backend", program, work.join("backend.log"))
        };
        let spawned = Instant::now();
        let timeout = Duration::from_secs(backend.start_timeout_seconds.unwrap_or(60));
        let child = Child::start(&launch, timeout)
            .await
            .map_err(|e| diagnose(e, &launch.log))?;
        Ok(StartedBackend {
            child,
            port,
            ready_after: spawned.elapsed(),
            launch,
            identity,
        })
    }
}

pub(super) fn expand(template: &str, vars: &BTreeMap<String, String>) -> Result<String> {
    let mut out = String::new();
    for piece in super::spec::placeholders(template).map_err(Error::Fixture)? {
        match piece {
            super::spec::Piece::Text(text) => out.push_str(text),
            super::spec::Piece::Key(key) => {
                let value = vars.get(key).ok_or_else(|| {
                    Error::Fixture(format!(
                        "unknown placeholder {{{{{key}}}}} in {template:?}; known: {}",
                        vars.keys().cloned().collect::<Vec<_>>().join(", ")
                    ))
                })?;
                out.push_str(value);
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_expand_and_unknown_ones_are_named() -> Result<()> {
        let mut vars = BTreeMap::new();
        vars.insert("port".to_owned(), "8443".to_owned());
        assert_eq!(expand("--secure-port={{port}} x", &vars)?, "--secure-port=8443 x");
        let err = expand("{{ nope }}", &vars)
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            err.contains("unknown placeholder {{nope}}") && err.contains("port"),
            "{err}"
        );
        assert!(expand("{{port", &vars).is_err());
        Ok(())
    }
}
