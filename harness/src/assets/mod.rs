//! Control-plane binaries: `kube-apiserver`, `etcd` and `kubectl` for one Kubernetes version.
//!
//! Resolution order (the first that has all three binaries wins):
//! 1. `KUBE_HARNESS_ASSETS`, then `KUBEBUILDER_ASSETS`: a directory laid out as setup-envtest
//!    lays it out (the three binaries side by side). If set but incomplete, that is an error.
//! 2. The cache: `$KUBE_HARNESS_CACHE`, else `$XDG_CACHE_HOME/kube-harness`, else
//!    `~/.cache/kube-harness`, entry `k8s-<version>/` with a `manifest.json` that records the
//!    size and SHA-256 of each binary; an entry that does not match is rebuilt.
//! 3. The envtest release tarball for the version, from controller-tools' index (or the one
//!    `KUBE_HARNESS_ENVTEST_INDEX` names; `off` skips this), SHA-512 checked against the index
//!    and installed into the cache entry. Unlisted versions and unreachable indexes (offline
//!    machines fail in milliseconds) fall through; a checksum mismatch is an error.
//! 4. A build from Go modules (the `build` module): needs `go` on `PATH`.

mod build;
mod envtest;
mod gobin;
mod manifest;

use std::path::{Path, PathBuf};

pub(crate) use build::lock_cache;
pub use build::required_go;
pub use manifest::Manifest;

use crate::error::{Error, Result};

/// The Kubernetes version used when none is given: the newest minor that k8s-openapi 0.29
/// covers (its `v1_37` feature) and whose sources build with Go 1.26.
pub const DEFAULT_KUBERNETES_VERSION: &str = "1.37.2";

/// The binaries a local control plane needs.
pub const BINARIES: [&str; 3] = ["kube-apiserver", "etcd", "kubectl"];

/// A Kubernetes release version, `MAJOR.MINOR.PATCH`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct KubeVersion {
    /// Major (1).
    pub major: u32,
    /// Minor.
    pub minor: u32,
    /// Patch.
    pub patch: u32,
}

impl KubeVersion {
    /// Parse `1.37.2` or `v1.37.2`.
    ///
    /// # Errors
    /// [`Error::InvalidVersion`] for anything else.
    pub fn parse(s: &str) -> Result<Self> {
        let invalid = || Error::InvalidVersion(s.to_owned());
        let trimmed = s.trim().trim_start_matches('v');
        let mut parts = trimmed.split('.').map(|p| p.parse::<u32>().map_err(|_| invalid()));
        let version = Self {
            major: parts.next().ok_or_else(invalid)??,
            minor: parts.next().ok_or_else(invalid)??,
            patch: parts.next().ok_or_else(invalid)??,
        };
        if parts.next().is_some() {
            return Err(invalid());
        }
        Ok(version)
    }

    /// The default version, [`DEFAULT_KUBERNETES_VERSION`].
    pub fn default_version() -> Self {
        Self {
            major: 1,
            minor: 37,
            patch: 2,
        }
    }

    /// `v0.MINOR.PATCH`: the tag of the staging modules (k8s.io/api, k8s.io/apiserver, …).
    pub fn staging_tag(&self) -> String {
        format!("v0.{}.{}", self.minor, self.patch)
    }

    /// The `gitVersion` kube-apiserver reports in `/version`.
    pub fn git_version(&self) -> String {
        format!("v{self}")
    }
}

impl std::fmt::Display for KubeVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)
    }
}

/// The Kubernetes minor versions this release of kube-harness is verified with (its scenario
/// suite runs on them). Others are refused unless `KUBE_HARNESS_UNVERIFIED_VERSION=1`.
pub const VERIFIED_MINORS: std::ops::RangeInclusive<u32> = 35..=37;

impl KubeVersion {
    /// `KUBE_HARNESS_K8S_VERSION` if set, else the default: the version
    /// [`crate::ControlPlane::builder`] and [`crate::shared`] use.
    ///
    /// # Errors
    /// [`Error::Env`] naming the variable when its value is not `MAJOR.MINOR.PATCH`
    /// (`1.30`, say): a typo must not silently run another version.
    pub fn from_env() -> Result<Self> {
        match std::env::var("KUBE_HARNESS_K8S_VERSION") {
            Ok(v) if !v.is_empty() => Self::parse(&v).map_err(|e| Error::Env {
                var: "KUBE_HARNESS_K8S_VERSION",
                source: Box::new(e),
            }),
            _ => Ok(Self::default()),
        }
    }

    /// Whether this is one of the [`VERIFIED_MINORS`].
    pub fn is_verified(&self) -> bool {
        self.major == 1 && VERIFIED_MINORS.contains(&self.minor)
    }

    /// [`Error::UnverifiedVersion`] unless [`KubeVersion::is_verified`].
    ///
    /// # Errors
    /// As above.
    pub fn check_verified(&self) -> Result<()> {
        if self.is_verified() {
            return Ok(());
        }
        Err(Error::UnverifiedVersion {
            version: self.to_string(),
            range: format!("1.{}.x–1.{}.x", VERIFIED_MINORS.start(), VERIFIED_MINORS.end()),
        })
    }
}

impl serde::Serialize for KubeVersion {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> serde::Deserialize<'de> for KubeVersion {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        KubeVersion::parse(&s).map_err(serde::de::Error::custom)
    }
}

impl Default for KubeVersion {
    fn default() -> Self {
        Self::default_version()
    }
}

/// A directory holding the three binaries.
#[derive(Debug, Clone)]
pub struct Assets {
    dir: PathBuf,
    source: AssetSource,
}

/// Where the binaries came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AssetSource {
    /// A directory named by this environment variable.
    EnvDir(&'static str),
    /// A verified cache entry.
    Cache,
    /// Built just now from Go modules.
    Built,
    /// Downloaded just now as the envtest release tarball (checksum verified).
    Downloaded,
    /// Recorded by a cluster another process started, which this process attached to.
    Attached,
}

impl Assets {
    /// The binaries a cluster started elsewhere runs (see [`crate::Cluster::attach`]).
    pub(crate) fn attached(dir: PathBuf) -> Self {
        Self {
            dir,
            source: AssetSource::Attached,
        }
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
    /// Where they came from.
    pub fn source(&self) -> &AssetSource {
        &self.source
    }
    /// Path of `kube-apiserver`.
    pub fn kube_apiserver(&self) -> PathBuf {
        self.dir.join("kube-apiserver")
    }
    /// Path of `etcd`.
    pub fn etcd(&self) -> PathBuf {
        self.dir.join("etcd")
    }
    /// Path of `kubectl`.
    pub fn kubectl(&self) -> PathBuf {
        self.dir.join("kubectl")
    }
}

/// Reads environment variables; a trait so tests can supply their own.
pub trait Env: Send + Sync {
    /// The value of `key`, if set and not empty.
    fn var(&self, key: &str) -> Option<String>;
}

/// The process environment.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemEnv;

impl Env for SystemEnv {
    fn var(&self, key: &str) -> Option<String> {
        std::env::var(key).ok().filter(|v| !v.is_empty())
    }
}

impl<F: Fn(&str) -> Option<String> + Send + Sync> Env for F {
    fn var(&self, key: &str) -> Option<String> {
        self(key).filter(|v| !v.is_empty())
    }
}

/// The binaries of a plane with nodes: kube-scheduler (from the Kubernetes module), kwok and
/// its stage file.
#[derive(Debug, Clone)]
pub(crate) struct NodeBinaries {
    pub(crate) scheduler: PathBuf,
    pub(crate) kwok: PathBuf,
    pub(crate) stages: PathBuf,
}

/// Finds (or builds) the binaries for a version.
pub struct Resolver {
    version: KubeVersion,
    env: Box<dyn Env>,
}

impl std::fmt::Debug for Resolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Resolver")
            .field("version", &self.version)
            .finish_non_exhaustive()
    }
}

impl Resolver {
    /// A resolver reading the process environment.
    pub fn new(version: KubeVersion) -> Self {
        Self {
            version,
            env: Box::new(SystemEnv),
        }
    }

    /// Read environment variables (`KUBE_HARNESS_ASSETS`, `KUBEBUILDER_ASSETS`,
    /// `KUBE_HARNESS_CACHE`, `XDG_CACHE_HOME`, `HOME`, `PATH`) from `env` instead.
    pub fn with_env(mut self, env: impl Env + 'static) -> Self {
        self.env = Box::new(env);
        self
    }

    /// The cache root directory.
    pub fn cache_root(&self) -> PathBuf {
        if let Some(dir) = self.env.var("KUBE_HARNESS_CACHE") {
            return PathBuf::from(dir);
        }
        if let Some(dir) = self.env.var("XDG_CACHE_HOME") {
            return PathBuf::from(dir).join("kube-harness");
        }
        let home = self.env.var("HOME").map_or_else(std::env::temp_dir, PathBuf::from);
        home.join(".cache").join("kube-harness")
    }

    /// The cache entry for this version.
    pub fn cache_entry(&self) -> PathBuf {
        self.cache_root().join(format!("k8s-{}", self.version))
    }

    /// Resolve the binaries, building them if needed. Blocking: call it from
    /// `spawn_blocking` in async code (or use [`Resolver::resolve_async`]).
    ///
    /// # Errors
    /// [`Error::UnverifiedVersion`] for a version outside [`VERIFIED_MINORS`] (unless
    /// `KUBE_HARNESS_UNVERIFIED_VERSION=1`),
    /// [`Error::AssetsDirIncomplete`] when an env var points to an incomplete directory,
    /// [`Error::GoMissing`] when a build is needed and `go` is not on `PATH`,
    /// [`Error::Build`] when the build fails.
    pub fn resolve(&self) -> Result<Assets> {
        if let Err(e) = self.version.check_verified() {
            if self.env.var("KUBE_HARNESS_UNVERIFIED_VERSION").as_deref() != Some("1") {
                return Err(e);
            }
            eprintln!("kube-harness: warning: {e}");
        }
        if let Some(found) = self.present()? {
            return Ok(found);
        }
        let entry = self.cache_entry();
        let index = self
            .env
            .var("KUBE_HARNESS_ENVTEST_INDEX")
            .unwrap_or_else(|| envtest::DEFAULT_INDEX.to_owned());
        if index != "off" {
            match self.download(&index, &entry) {
                Ok(()) => {
                    return Ok(Assets {
                        dir: entry,
                        source: AssetSource::Downloaded,
                    });
                }
                Err(envtest::Miss::Unavailable(reason)) => {
                    eprintln!("kube-harness: no envtest tarball ({reason}); building from Go modules instead");
                }
                Err(envtest::Miss::Fatal(e)) => return Err(e),
            }
        }
        let go = self.find_go().ok_or_else(|| Error::GoMissing {
            version: self.version.to_string(),
            searched: format!("KUBE_HARNESS_ASSETS, KUBEBUILDER_ASSETS and the cache {entry:?}"),
            min_go: required_go(&self.version),
        })?;
        build::build_into_cache(&go, &self.version, &self.cache_root(), &entry)?;
        Ok(Assets {
            dir: entry,
            source: AssetSource::Built,
        })
    }

    /// The binaries when they are here already (an environment directory, or the cache), without
    /// downloading or building anything.
    ///
    /// # Errors
    /// [`Error::AssetsDirIncomplete`] when an env var points to an incomplete directory.
    pub(crate) fn present(&self) -> Result<Option<Assets>> {
        for var in ["KUBE_HARNESS_ASSETS", "KUBEBUILDER_ASSETS"] {
            if let Some(dir) = self.env.var(var) {
                let dir = PathBuf::from(dir);
                for binary in BINARIES {
                    if !is_executable(&dir.join(binary)) {
                        return Err(Error::AssetsDirIncomplete { var, dir, binary });
                    }
                }
                tracing::debug!(var, ?dir, "using binaries from environment");
                return Ok(Some(Assets {
                    dir,
                    source: AssetSource::EnvDir(var),
                }));
            }
        }
        let entry = self.cache_entry();
        Ok(manifest::verify_cached(&entry, &self.version)
            .is_ok()
            .then_some(Assets {
                dir: entry,
                source: AssetSource::Cache,
            }))
    }

    /// [`Resolver::resolve`] on tokio's blocking pool.
    ///
    /// # Errors
    /// As [`Resolver::resolve`].
    pub async fn resolve_async(self) -> Result<Assets> {
        crate::process::blocking("asset resolution", move || self.resolve()).await
    }

    /// The Kubernetes component `name` (`kube-controller-manager`) of this version: from the
    /// `KUBE_HARNESS_ASSETS` or `KUBEBUILDER_ASSETS` directory if it holds one, else built
    /// once from the same generated module as kube-apiserver and cached in
    /// `<cache>/k8s-<version>-components/`.
    ///
    /// # Errors
    /// [`Error::GoMissing`] without the binary or `go`, [`Error::Build`] when the build fails.
    pub fn component(&self, name: &str) -> Result<PathBuf> {
        for var in ["KUBE_HARNESS_ASSETS", "KUBEBUILDER_ASSETS"] {
            if let Some(dir) = self.env.var(var) {
                let path = PathBuf::from(dir).join(name);
                if is_executable(&path) {
                    return Ok(path);
                }
            }
        }
        gobin::component(self.find_go().as_deref(), &self.cache_root(), &self.version, name)
    }

    /// Build (once, then cached under `<cache root>/go/`) the Go main package `module` at
    /// `version` and return the binary's path. Used for extension servers such as
    /// `k8s.io/sample-apiserver`.
    ///
    /// # Errors
    /// [`Error::GoMissing`] without `go`, [`Error::Build`] when the build fails.
    pub fn go_binary(&self, module: &str, version: &str) -> Result<PathBuf> {
        self.go_binary_of(module, None, version)
    }

    /// [`Resolver::go_binary`] for the main package at `package` inside `module` (relative to
    /// its root, such as `cmd/metrics-server`; `None`: the root).
    ///
    /// # Errors
    /// As [`Resolver::go_binary`].
    pub fn go_binary_of(&self, module: &str, package: Option<&str>, version: &str) -> Result<PathBuf> {
        let go = self.find_go();
        gobin::go_binary(
            go.as_deref(),
            &self.cache_root(),
            module,
            package,
            version,
            &self.version,
        )
    }

    /// kube-scheduler, kwok and kwok's stage file, for a plane with nodes (built once into
    /// the cache).
    ///
    /// # Errors
    /// [`Error::GoMissing`] without `go` and nothing cached, [`Error::Build`],
    /// [`Error::GoModule`].
    pub(crate) fn node_binaries(&self) -> Result<NodeBinaries> {
        let scheduler = self.component("kube-scheduler")?;
        let go = self.find_go();
        let (kwok, stages) = gobin::kwok(go.as_deref(), &self.cache_root(), &self.version)?;
        Ok(NodeBinaries {
            scheduler,
            kwok,
            stages,
        })
    }

    /// Before any cluster starts: whether [`Resolver::go_binary_of`] can build `package` of
    /// `module@version` (cached already, or the module downloads and has that main package).
    /// `Err` names the wrong field (`goModule`, `goVersion`, `goPackage`) and why.
    pub(crate) fn check_go_source(
        &self,
        module: &str,
        package: Option<&str>,
        version: &str,
    ) -> std::result::Result<(), String> {
        gobin::check_go_source(self.find_go().as_deref(), &self.cache_root(), module, package, version)
    }

    /// Install the envtest tarball into the cache entry, under the cache lock.
    fn download(&self, index: &str, entry: &Path) -> std::result::Result<(), envtest::Miss> {
        let fatal = envtest::Miss::Fatal;
        let root = self.cache_root();
        let _lock = lock_cache(&root, &format!("k8s-{}", self.version)).map_err(fatal)?;
        if manifest::verify_cached(entry, &self.version).is_ok() {
            return Ok(());
        }
        let tmp = root.join(format!(".tmp-envtest-{}-{}", self.version, std::process::id()));
        let _ = std::fs::remove_dir_all(&tmp);
        let installed = envtest::install(index, &self.version, &tmp);
        if installed.is_err() {
            let _ = std::fs::remove_dir_all(&tmp);
            return installed;
        }
        if entry.exists() {
            std::fs::remove_dir_all(entry).map_err(|e| fatal(Error::io("remove", entry)(e)))?;
        }
        std::fs::rename(&tmp, entry).map_err(|e| fatal(Error::io("rename into the cache", entry)(e)))?;
        manifest::verify_cached(entry, &self.version)
            .map(drop)
            .map_err(|reason| fatal(Error::Archive { problem: reason }))
    }

    fn find_go(&self) -> Option<PathBuf> {
        let path = self.env.var("PATH")?;
        std::env::split_paths(&path)
            .map(|d| d.join("go"))
            .find(|p| is_executable(p))
    }
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_parse_and_print() -> Result<(), Box<dyn std::error::Error>> {
        let v = KubeVersion::parse("v1.36.3")?;
        assert_eq!(v.to_string(), "1.36.3");
        assert_eq!(v.staging_tag(), "v0.36.3");
        assert_eq!(KubeVersion::parse(DEFAULT_KUBERNETES_VERSION)?, KubeVersion::default());
        for bad in ["", "1.37", "1.x.2", "1.37.2.1", "latest"] {
            assert!(
                matches!(KubeVersion::parse(bad), Err(Error::InvalidVersion(_))),
                "{bad}"
            );
        }
        Ok(())
    }

    #[test]
    fn cache_root_follows_the_environment() {
        let r = Resolver::new(KubeVersion::default()).with_env(|k: &str| match k {
            "XDG_CACHE_HOME" => Some("/x".to_owned()),
            "HOME" => Some("/h".to_owned()),
            _ => None,
        });
        assert_eq!(r.cache_entry(), PathBuf::from("/x/kube-harness/k8s-1.37.2"));
        let r = Resolver::new(KubeVersion::default()).with_env(|k: &str| (k == "HOME").then(|| "/h".to_owned()));
        assert_eq!(r.cache_root(), PathBuf::from("/h/.cache/kube-harness"));
    }
}
