//! Single Go binaries built once and cached: main packages of other modules (extension
//! servers such as `k8s.io/sample-apiserver`), and Kubernetes components beyond the three a
//! cluster always needs (`kube-controller-manager`), built from the same generated module as
//! kube-apiserver.

use std::path::{Path, PathBuf};

use super::KubeVersion;
use super::build::{GoRunner, lock_cache};
use super::manifest::BinaryRecord;
use crate::error::{Error, Result};

/// One binary to build into `dir/name`, with a `<name>.json` record (size, SHA-256) checked
/// on use and a `<name>.verified` stamp so a warm check does not hash.
struct CachedBuild<'a> {
    cache_root: &'a Path,
    dir: PathBuf,
    name: String,
    /// Name of the cache lock.
    lock: String,
    log: PathBuf,
    /// Progress line while `go build` runs.
    label: String,
    /// The package to build.
    import: String,
    ldflags: String,
}

impl CachedBuild<'_> {
    fn binary(&self) -> PathBuf {
        self.dir.join(&self.name)
    }

    fn record_path(&self) -> PathBuf {
        self.dir.join(format!("{}.json", self.name))
    }

    fn valid(&self) -> bool {
        super::manifest::record_matches(&self.binary(), &self.record_path())
    }

    /// The cached binary, or build it: `write_module` fills the temporary source directory
    /// (a go.mod, maybe a main.go) with the runner at hand.
    fn get(
        self,
        go: Option<&Path>,
        missing_go: impl FnOnce() -> Error,
        write_module: impl FnOnce(&GoRunner, &Path) -> Result<()>,
    ) -> Result<PathBuf> {
        if self.valid() {
            return Ok(self.binary());
        }
        let go = go.ok_or_else(missing_go)?;
        let _lock = lock_cache(self.cache_root, &self.lock)?;
        if self.valid() {
            return Ok(self.binary());
        }
        let src = self
            .cache_root
            .join(format!(".tmp-{}-{}", self.lock, std::process::id()));
        let _ = std::fs::remove_dir_all(&src);
        std::fs::create_dir_all(&src).map_err(Error::io("create directory", &src))?;
        std::fs::create_dir_all(&self.dir).map_err(Error::io("create directory", &self.dir))?;
        let runner = GoRunner {
            go,
            log: self.log.clone(),
        };
        let _ = std::fs::remove_file(&runner.log);
        let tmp_out = self.dir.join(format!(".{}.tmp", self.name));
        let out = tmp_out.to_string_lossy().into_owned();
        let ldflags = format!("-ldflags={}", self.ldflags);
        let built = write_module(&runner, &src).and_then(|()| {
            runner.run(
                &src,
                &self.label,
                &["build", "-trimpath", &ldflags, "-o", &out, &self.import],
            )
        });
        let _ = std::fs::remove_dir_all(&src);
        if let Err(e) = built {
            // Leave no empty cache entry behind (only removed when empty).
            let _ = std::fs::remove_dir(&self.dir);
            return Err(e);
        }
        let binary = self.binary();
        std::fs::rename(&tmp_out, &binary).map_err(Error::io("rename into cache", &binary))?;
        let record = BinaryRecord::of(&binary)?;
        let json = serde_json::to_string(&record).map_err(|source| Error::Json {
            what: "binary record".into(),
            source,
        })?;
        let record_path = self.record_path();
        std::fs::write(&record_path, json).map_err(Error::io("write", &record_path))?;
        Ok(binary)
    }
}

/// `<cache>/go/<module with / replaced by _>@<version>/<name>`; `<name>` is the package's
/// last path element (the module's, for the root), prefixed with the rest of the package path
/// when it has one.
pub(crate) fn go_binary(
    go: Option<&Path>,
    cache_root: &Path,
    module: &str,
    package: Option<&str>,
    version: &str,
    k8s: &KubeVersion,
) -> Result<PathBuf> {
    let safe = module.replace(['/', '\\'], "_");
    let dir = cache_root.join("go").join(format!("{safe}@{version}"));
    let name = match package {
        Some(p) => p.replace('/', "_"),
        None => module.rsplit('/').next().unwrap_or(module).to_owned(),
    };
    let import = match package {
        Some(p) => format!("{module}/{p}"),
        None => module.to_owned(),
    };
    let searched = format!("the cache {dir:?}");
    let build = CachedBuild {
        cache_root,
        lock: format!("go-{safe}@{version}-{name}"),
        // One log per package: a failed build of another package of the module must not
        // overwrite the log of one that built.
        log: cache_root.join(format!("build-go-{safe}@{version}-{name}.log")),
        label: format!("building {import}@{version} (first use only)"),
        dir,
        name,
        import,
        ldflags: "-s -w".into(),
    };
    build.get(
        go,
        || Error::GoMissing {
            version: format!("{module}@{version} (for Kubernetes {k8s})"),
            searched,
            min_go: super::required_go(k8s),
        },
        |_, src| {
            let go_mod = format!(
                "// Generated by kube-harness to build {module}.\nmodule kube-harness.local/backend\n\ngo 1.24\n\nrequire {module} {version}\n"
            );
            std::fs::write(src.join("go.mod"), go_mod).map_err(Error::io("write", src.join("go.mod")))
        },
    )
}

/// A Kubernetes component (`kube-controller-manager`) of `version`:
/// `<cache>/k8s-<version>-components/<name>`, built from `k8s.io/kubernetes/cmd/<name>` in
/// the module kube-apiserver is built from (its packages mostly built already).
pub(crate) fn component(go: Option<&Path>, cache_root: &Path, version: &KubeVersion, name: &str) -> Result<PathBuf> {
    let dir = cache_root.join(format!("k8s-{version}-components"));
    let searched = format!("the cache {dir:?}");
    let build = CachedBuild {
        cache_root,
        lock: format!("k8s-{version}-{name}"),
        log: cache_root.join(format!("build-k8s-{version}-{name}.log")),
        label: format!(
            "building {name} {} (first use only; a few minutes)",
            version.git_version()
        ),
        dir,
        name: name.to_owned(),
        import: format!("k8s.io/kubernetes/cmd/{name}"),
        ldflags: super::build::version_ldflags(version),
    };
    build.get(
        go,
        || Error::GoMissing {
            version: format!("{name} {version}"),
            searched,
            min_go: super::required_go(version),
        },
        |runner, src| super::build::write_kubernetes_module(runner, version, src),
    )
}
