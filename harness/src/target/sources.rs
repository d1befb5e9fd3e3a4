//! Which files make a target, as real project directories lay them out: every `.yaml`,
//! `.yml` and `.json` file below it, except what `target.yaml` excludes and directories named
//! `steps` (objects that steps of `expectations.yaml` apply); a directory with a
//! `kustomization.yaml` counts as what `kubectl kustomize` renders from it (its own files are
//! not read one by one: patches are not objects). And which directories are targets at all.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::load::LoadError;

/// Largest fixture file (or rendered kustomization) read: real CRD bundles reach several MiB
/// (Prometheus operator's, 4.2 MiB); this stops a runaway file before it exhausts memory.
pub const MAX_FILE_BYTES: u64 = 32 * 1024 * 1024;

/// `verify`'s default directory for failure bundles (relative to where it runs): never fixtures,
/// even when `verify` ran inside a target directory.
pub const FAILURE_BUNDLES: &str = "kube-harness-bundles";

/// The names kustomize looks for.
const KUSTOMIZATIONS: [&str; 3] = ["kustomization.yaml", "kustomization.yml", "Kustomization"];

/// What to read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// A fixture file.
    File(PathBuf),
    /// A directory with a kustomization, read as what it renders to.
    Kustomization(PathBuf),
}

/// Glob patterns (relative to the target directory) of files and directories to leave out:
/// `spec.exclude` of the target's `target.yaml`.
#[derive(Debug, Clone, Default)]
pub struct Excludes {
    root: PathBuf,
    patterns: Vec<glob::Pattern>,
}

impl Excludes {
    /// Parse `patterns` for the target at `root`.
    ///
    /// # Errors
    /// [`LoadError::Invalid`] naming the bad pattern (`source` is where it was written).
    pub fn new(root: &Path, patterns: &[String], source: &super::Source) -> Result<Self, LoadError> {
        let patterns = patterns
            .iter()
            .map(|p| {
                glob::Pattern::new(p).map_err(|e| LoadError::Invalid {
                    doc: source.clone(),
                    problem: format!("exclude pattern {p:?} is not a glob: {e}"),
                })
            })
            .collect::<Result<_, _>>()?;
        Ok(Self {
            root: root.to_owned(),
            patterns,
        })
    }

    fn excludes(&self, path: &Path) -> bool {
        let relative = path.strip_prefix(&self.root).unwrap_or(path);
        let options = glob::MatchOptions {
            require_literal_separator: true,
            ..glob::MatchOptions::new()
        };
        self.patterns.iter().any(|p| p.matches_path_with(relative, options))
    }
}

/// The entries of `dir`, sorted by path so every order is stable.
fn sorted_entries(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)?
        .map(|e| e.map(|e| e.path()))
        .collect::<Result<_, _>>()?;
    entries.sort();
    Ok(entries)
}

fn is_fixture_file(path: &Path) -> bool {
    matches!(path.extension().and_then(|e| e.to_str()), Some("yaml" | "yml" | "json"))
}

fn kustomization_in(dir: &Path) -> bool {
    KUSTOMIZATIONS.iter().any(|k| dir.join(k).is_file())
}

/// What to read under `path` (a file, or a directory read recursively), sorted by path so the
/// order is stable.
///
/// # Errors
/// [`LoadError::Missing`], [`LoadError::Read`].
pub fn inputs(path: &Path, excludes: &Excludes) -> Result<Vec<Input>, LoadError> {
    let read_err = |source| LoadError::Read {
        path: path.to_owned(),
        source,
    };
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(LoadError::Missing(path.to_owned())),
        Err(e) => return Err(read_err(e)),
    };
    if meta.is_file() {
        return Ok(vec![Input::File(path.to_owned())]);
    }
    if kustomization_in(path) {
        return Ok(vec![Input::Kustomization(path.to_owned())]);
    }
    let mut out = Vec::new();
    let entries = sorted_entries(path).map_err(read_err)?;
    for entry in entries.into_iter().filter(|e| !excludes.excludes(e)) {
        if entry.is_dir()
            && entry
                .file_name()
                .is_some_and(|n| n == super::steps::STEP_FILES || n == FAILURE_BUNDLES)
        {
            // Objects that steps apply (`apply: {file: steps/…}`), not fixtures; failure
            // bundles `verify` wrote when run from inside the target directory.
            continue;
        }
        if entry.is_dir() {
            out.extend(inputs(&entry, excludes)?);
        } else if is_fixture_file(&entry) {
            out.push(Input::File(entry));
        }
    }
    Ok(out)
}

/// The fixture files under `path`, without excludes (kustomization directories are listed by
/// their kustomization file).
///
/// # Errors
/// [`LoadError::Missing`], [`LoadError::Read`].
pub fn fixture_files(path: &Path) -> Result<Vec<PathBuf>, LoadError> {
    Ok(inputs(path, &Excludes::default())?
        .into_iter()
        .map(|i| match i {
            Input::File(f) => f,
            Input::Kustomization(dir) => KUSTOMIZATIONS
                .iter()
                .map(|k| dir.join(k))
                .find(|k| k.is_file())
                .unwrap_or(dir),
        })
        .collect())
}

/// What `kubectl kustomize dir` renders (the kubectl of the default Kubernetes version,
/// resolved as the cluster's is; `KUBE_HARNESS_KUSTOMIZE` names another command, such as a
/// standalone `kustomize build`).
///
/// # Errors
/// [`LoadError::Kustomize`] with kustomize's own message.
pub fn render_kustomization(dir: &Path) -> Result<String, LoadError> {
    let fail = |message: String| LoadError::Kustomize {
        dir: dir.to_owned(),
        message,
    };
    let mut command = match std::env::var("KUBE_HARNESS_KUSTOMIZE").ok().filter(|v| !v.is_empty()) {
        Some(custom) => {
            let mut words = custom.split_whitespace();
            let program = words.next().unwrap_or("kustomize");
            let mut c = Command::new(program);
            c.args(words);
            c
        }
        None => {
            let version = crate::assets::KubeVersion::from_env().map_err(|e| fail(e.to_string()))?;
            let assets = crate::assets::Resolver::new(version)
                .resolve()
                .map_err(|e| fail(format!("no kubectl to render it with: {e}")))?;
            let mut c = Command::new(assets.kubectl());
            c.arg("kustomize");
            c
        }
    };
    let out = command
        .arg(dir)
        .output()
        .map_err(|e| fail(format!("cannot run kustomize: {e}")))?;
    if !out.status.success() {
        return Err(fail(String::from_utf8_lossy(&out.stderr).trim().to_owned()));
    }
    let len = u64::try_from(out.stdout.len()).unwrap_or(u64::MAX);
    if len > MAX_FILE_BYTES {
        return Err(fail(format!(
            "it renders {len} bytes; fixtures are limited to {MAX_FILE_BYTES} bytes"
        )));
    }
    String::from_utf8(out.stdout).map_err(|e| fail(format!("it rendered no UTF-8: {e}")))
}

/// The target directories `dirs` name, for every command alike: a directory is a collection
/// of targets when it holds no fixture file and no kustomization of its own and at least one
/// of its subdirectories holds a `target.yaml`; then each subdirectory is a target. Any other
/// directory (or file) is one target, its subdirectories included.
///
/// # Errors
/// [`LoadError::Missing`], [`LoadError::Read`].
pub fn target_dirs(dirs: &[PathBuf]) -> Result<Vec<PathBuf>, LoadError> {
    let mut out = Vec::new();
    for dir in dirs {
        let read_err = |source| LoadError::Read {
            path: dir.clone(),
            source,
        };
        if !dir.exists() {
            return Err(LoadError::Missing(dir.clone()));
        }
        if !dir.is_dir() || kustomization_in(dir) {
            out.push(dir.clone());
            continue;
        }
        let entries = sorted_entries(dir).map_err(read_err)?;
        let own_files = entries.iter().any(|e| e.is_file() && is_fixture_file(e));
        let subdirs: Vec<PathBuf> = entries.into_iter().filter(|e| e.is_dir()).collect();
        let targets_below = subdirs.iter().any(|d| d.join("target.yaml").is_file());
        if !own_files && targets_below {
            out.extend(subdirs);
        } else {
            out.push(dir.clone());
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn excludes_match_relative_paths() -> Result<(), LoadError> {
        let source = super::super::Source {
            file: PathBuf::from("/t/target.yaml"),
            index: 0,
        };
        let ex = Excludes::new(
            Path::new("/t"),
            &["patches/*".into(), "*.generated.yaml".into(), "docs".into()],
            &source,
        )?;
        assert!(ex.excludes(Path::new("/t/patches/a.yaml")));
        assert!(ex.excludes(Path::new("/t/x.generated.yaml")));
        assert!(ex.excludes(Path::new("/t/docs")));
        assert!(!ex.excludes(Path::new("/t/crds/a.yaml")));
        assert!(
            !ex.excludes(Path::new("/t/patches")),
            "the directory itself is not patches/*"
        );
        assert!(
            !ex.excludes(Path::new("/t/sub/x.generated.yaml")),
            "`*` does not cross `/`"
        );
        let bad = Excludes::new(Path::new("/t"), &["[".into()], &source);
        assert!(matches!(bad, Err(LoadError::Invalid { .. })), "{bad:?}");
        Ok(())
    }

    #[test]
    fn step_files_are_not_fixtures() -> Result<(), Box<dyn std::error::Error>> {
        let dir = std::env::temp_dir().join(format!("kh-sources-steps-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("steps"))?;
        std::fs::create_dir_all(dir.join("more"))?;
        std::fs::create_dir_all(dir.join(FAILURE_BUNDLES).join("t"))?;
        for file in [
            "a.yaml",
            "steps/w2.yaml",
            "more/b.yaml",
            "kube-harness-bundles/t/events.json",
        ] {
            std::fs::write(dir.join(file), "{}")?;
        }
        let found = fixture_files(&dir)?;
        assert_eq!(found, [dir.join("a.yaml"), dir.join("more/b.yaml")]);
        std::fs::remove_dir_all(&dir)?;
        Ok(())
    }
}
