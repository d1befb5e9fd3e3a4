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

/// The cache entry of a backend's main package: `<cache>/go/<module with / replaced by
/// _>@<version>/<name>`; `<name>` is the package's path with `/` replaced by `_` (the module's
/// last path element, for the root).
fn backend_build<'a>(cache_root: &'a Path, module: &str, package: Option<&str>, version: &str) -> CachedBuild<'a> {
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
    CachedBuild {
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
    }
}

/// Before any cluster starts: can `module@version` be had, and is `package` a main package in
/// it? Nothing to check when the binary is cached. `go mod download -json` (instant for a
/// module in Go's module cache) answers the first; the second is read from the module's files.
/// `Err` says which of the three fields (`goModule`, `goVersion`, `goPackage`) is wrong and why.
pub(crate) fn check_go_source(
    go: Option<&Path>,
    cache_root: &Path,
    module: &str,
    package: Option<&str>,
    version: &str,
) -> std::result::Result<(), String> {
    if backend_build(cache_root, module, package, version).valid() {
        return Ok(());
    }
    let Some(go) = go else {
        return Err(format!(
            "goModule {module}@{version} is neither in the cache {:?} nor buildable: no `go` on PATH",
            cache_root.join("go")
        ));
    };
    let root = module_dir(go, module, version)?;
    let dir = package.map_or_else(|| root.clone(), |p| root.join(p));
    let field = if package.is_some() { "goPackage" } else { "goModule" };
    let import = package.map_or_else(|| module.to_owned(), |p| format!("{module}/{p}"));
    if is_main_package(&dir) {
        return Ok(());
    }
    let what = if dir.is_dir() {
        format!("{import} is not a main package (no `package main` there)")
    } else {
        format!("{module}@{version} has no package {import}")
    };
    let mains = main_packages(&root, 2);
    Err(if mains.is_empty() {
        format!("{field}: {what}, and {module}@{version} has no main package near its root")
    } else {
        format!(
            "{field}: {what}; main packages in {module}@{version}: {}",
            mains.join(", ")
        )
    })
}

/// Where Go's module cache holds `module@version` (downloading it if needed): `go mod
/// download -json`, instant for a module already there.
fn module_dir(go: &Path, module: &str, version: &str) -> std::result::Result<PathBuf, String> {
    let output = std::process::Command::new(go)
        .args(["mod", "download", "-json", &format!("{module}@{version}")])
        .current_dir(std::env::temp_dir())
        .env("GOFLAGS", "-mod=mod")
        .env("GOWORK", "off")
        .env("GO111MODULE", "on")
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| format!("running `{} mod download`: {e}", go.display()))?;
    let info: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap_or_default();
    if let Some(problem) = info.get("Error").and_then(|e| e.as_str()) {
        return Err(format!(
            "goModule/goVersion: {module}@{version} cannot be downloaded (is the module path right, and \
             is {version} one of its versions?): {}",
            problem.trim()
        ));
    }
    info.get("Dir")
        .and_then(|d| d.as_str())
        .map(PathBuf::from)
        .ok_or_else(|| {
            format!(
                "goModule/goVersion: `go mod download {module}@{version}` failed ({}): {}",
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            )
        })
}

/// kwok's module and the version the harness builds (its `go.mod` has no `replace`
/// directives, so it builds like any backend).
pub(crate) const KWOK_MODULE: &str = "sigs.k8s.io/kwok";
/// See [`KWOK_MODULE`].
pub(crate) const KWOK_VERSION: &str = "v0.8.0";
/// kwok's own stage definitions that `kwokctl` runs with by default (nodes Ready at once and
/// kept alive with Leases; pods Ready at once, Job pods completed, deletions finished), read
/// from the module of the kwok that is built.
const KWOK_STAGES: [&str; 5] = [
    "kustomize/stage/node/fast/node-initialize.yaml",
    "kustomize/stage/node/heartbeat-with-lease/node-heartbeat-with-lease.yaml",
    "kustomize/stage/pod/fast/pod-ready.yaml",
    "kustomize/stage/pod/fast/pod-complete.yaml",
    "kustomize/stage/pod/fast/pod-delete.yaml",
];

/// kwok's binary and its stage file (`stages.yaml` beside it, from its module's
/// `kustomize/stage/`), from the cache or built into it.
pub(crate) fn kwok(go: Option<&Path>, cache_root: &Path, k8s: &KubeVersion) -> Result<(PathBuf, PathBuf)> {
    let binary = go_binary(go, cache_root, KWOK_MODULE, Some("cmd/kwok"), KWOK_VERSION, k8s)?;
    let stages = binary.with_file_name("stages.yaml");
    if stages.is_file() {
        return Ok((binary, stages));
    }
    let fail = |problem: String| Error::GoModule {
        module: format!("{KWOK_MODULE}@{KWOK_VERSION}"),
        problem,
    };
    let go = go.ok_or_else(|| fail("no `go` on PATH to find its module with".into()))?;
    let root = module_dir(go, KWOK_MODULE, KWOK_VERSION).map_err(fail)?;
    let mut text = String::new();
    for file in KWOK_STAGES {
        let path = root.join(file);
        text.push_str("---\n");
        text.push_str(&std::fs::read_to_string(&path).map_err(Error::io("read", &path))?);
    }
    let tmp = stages.with_extension(format!("tmp{}", std::process::id()));
    std::fs::write(&tmp, text).map_err(Error::io("write", &tmp))?;
    std::fs::rename(&tmp, &stages).map_err(Error::io("rename", &stages))?;
    Ok((binary, stages))
}

/// Whether `dir` holds a non-test Go file of `package main`.
fn is_main_package(dir: &Path) -> bool {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return false;
    };
    entries.flatten().any(|entry| {
        let name = entry.file_name();
        let name = name.to_string_lossy();
        name.ends_with(".go")
            && !name.ends_with("_test.go")
            && std::fs::read_to_string(entry.path()).is_ok_and(|text| text.lines().any(|l| l.trim() == "package main"))
    })
}

/// Main packages under `root`, `depth` directories deep at most, as `goPackage` values (at most
/// eight, shallowest first; the root said in words).
fn main_packages(root: &Path, depth: usize) -> Vec<String> {
    let mut found = Vec::new();
    let mut level = vec![root.to_path_buf()];
    for _ in 0..=depth {
        let mut next = Vec::new();
        for dir in level {
            if is_main_package(&dir) {
                let relative = dir
                    .strip_prefix(root)
                    .map(|p| p.display().to_string())
                    .unwrap_or_default();
                found.push(if relative.is_empty() {
                    "its root (leave goPackage out)".to_owned()
                } else {
                    relative
                });
            }
            if let Ok(entries) = std::fs::read_dir(&dir) {
                let mut subdirs: Vec<PathBuf> = entries
                    .flatten()
                    .map(|e| e.path())
                    .filter(|p| {
                        p.is_dir()
                            && !p.file_name().is_some_and(|n| {
                                n.to_string_lossy().starts_with(['.', '_']) || n == "testdata" || n == "vendor"
                            })
                    })
                    .collect();
                subdirs.sort();
                next.extend(subdirs);
            }
        }
        level = next;
    }
    // Breadth first: the root, then the shallowest (`cmd/<name>`), each level in name order.
    found.truncate(8);
    found
}

/// A backend's main package `package` (`None`: the root) of `module@version`, from the cache
/// ([`backend_build`]) or built into it.
pub(crate) fn go_binary(
    go: Option<&Path>,
    cache_root: &Path,
    module: &str,
    package: Option<&str>,
    version: &str,
    k8s: &KubeVersion,
) -> Result<PathBuf> {
    let build = backend_build(cache_root, module, package, version);
    let searched = format!("the cache {:?}", build.dir);
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
