//! What `init` reads from an operator crate: its package (through `cargo metadata`), the
//! `CustomResource` types and a controller entry point in its Rust sources, and its deploy
//! manifests (CRDs, RBAC, the Deployment, sample objects). A scan, not a compiler: what it
//! finds it says, with the file, so a wrong guess is easy to see and to correct.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context as _, bail};
use serde_json::Value;

use crate::target::load::{Document, parse_documents};

/// Directories, relative to the crate, where operators keep their deploy manifests.
pub(super) const MANIFEST_DIRS: [&str; 9] = [
    "config",
    "deploy",
    "deployment",
    "manifests",
    "k8s",
    "kubernetes",
    "yaml",
    "kustomize",
    "install",
];

/// The package `init` writes for.
#[derive(Debug)]
pub(super) struct Package {
    pub name: String,
    /// Its edition (for rustfmt).
    pub edition: String,
    /// The directory of its `Cargo.toml`.
    pub dir: PathBuf,
    /// Its library's crate name (`my_operator`), if it has a library.
    pub lib: Option<String>,
    /// The root file of its library (`src/lib.rs`).
    pub lib_root: Option<PathBuf>,
    /// Its binaries' names.
    pub bins: Vec<String>,
    /// The version requirement on `kube`, if it depends on it.
    pub kube: Option<String>,
    /// Names of its dependencies (normal and dev).
    pub deps: BTreeSet<String>,
}

/// The package at `dir` (its own `Cargo.toml`, or `package` of the workspace there).
pub(super) fn package(dir: &Path, package: Option<&str>) -> anyhow::Result<Package> {
    let manifest = dir.join("Cargo.toml");
    if !manifest.is_file() {
        bail!(
            "no Cargo.toml in {}: run `kube-harness init` in the operator crate's directory (or pass it)",
            dir.display()
        );
    }
    let out = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
        .args(["metadata", "--no-deps", "--format-version", "1", "--manifest-path"])
        .arg(&manifest)
        .output()
        .context("running `cargo metadata` (is cargo on PATH?)")?;
    if !out.status.success() {
        bail!(
            "cargo metadata --manifest-path {} failed: {}",
            manifest.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let metadata: Value = serde_json::from_slice(&out.stdout).context("reading cargo metadata's answer")?;
    let packages = metadata["packages"].as_array().cloned().unwrap_or_default();
    let canonical = manifest.canonicalize().unwrap_or(manifest.clone());
    let chosen = match package {
        Some(name) => packages.iter().find(|p| p["name"] == name).with_context(|| {
            format!(
                "no package {name:?} in {}: it has {}",
                manifest.display(),
                names(&packages)
            )
        })?,
        None => match packages
            .iter()
            .find(|p| p["manifest_path"].as_str().map(PathBuf::from).as_ref() == Some(&canonical))
        {
            Some(p) => p,
            None if packages.len() == 1 => &packages[0],
            None => bail!(
                "{} is a workspace of {}: name one with --package",
                manifest.display(),
                names(&packages)
            ),
        },
    };
    let name = chosen["name"].as_str().unwrap_or_default().to_owned();
    let dir = chosen["manifest_path"]
        .as_str()
        .map(PathBuf::from)
        .and_then(|p| p.parent().map(Path::to_path_buf))
        .unwrap_or_else(|| dir.to_owned());
    let targets = chosen["targets"].as_array().cloned().unwrap_or_default();
    let has_kind = |t: &Value, kind: &str| t["kind"].as_array().is_some_and(|k| k.iter().any(|x| x == kind));
    let lib_target = targets.iter().find(|t| has_kind(t, "lib") || has_kind(t, "rlib"));
    let bins = targets
        .iter()
        .filter(|t| has_kind(t, "bin"))
        .filter_map(|t| t["name"].as_str().map(str::to_owned))
        .collect();
    let mut deps = BTreeSet::new();
    let mut kube = None;
    for dep in chosen["dependencies"].as_array().cloned().unwrap_or_default() {
        let dep_name = dep["rename"]
            .as_str()
            .or(dep["name"].as_str())
            .unwrap_or_default()
            .to_owned();
        if dep["name"] == "kube" && dep["kind"].is_null() {
            kube = dep["req"].as_str().map(str::to_owned);
        }
        deps.insert(dep_name);
    }
    Ok(Package {
        name,
        edition: chosen["edition"].as_str().unwrap_or("2021").to_owned(),
        dir,
        lib: lib_target.and_then(|t| t["name"].as_str()).map(|n| n.replace('-', "_")),
        lib_root: lib_target.and_then(|t| t["src_path"].as_str()).map(PathBuf::from),
        bins,
        kube,
        deps,
    })
}

fn names(packages: &[Value]) -> String {
    packages
        .iter()
        .filter_map(|p| p["name"].as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// A type from `#[derive(CustomResource)]`.
#[derive(Debug, Clone)]
pub(super) struct Resource {
    /// The generated type's name (`kind`, or `root`).
    pub type_name: String,
    pub group: String,
    pub version: String,
    pub kind: String,
    pub namespaced: bool,
    /// The file it is in.
    pub file: PathBuf,
    /// Its path from the library's root (`crate::controller::Document` as
    /// `my_operator::controller::Document`), when the library exposes it.
    pub path: Option<String>,
}

/// A public `async fn` of the library whose one argument is a `kube::Client`: a controller
/// the test can run in-process with any identity's client.
#[derive(Debug, Clone)]
pub(super) struct Entry {
    /// `my_operator::controller::run`.
    pub path: String,
    pub file: PathBuf,
}

/// The crate's `.rs` files under `src/`.
pub(super) fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut stack = vec![dir.join("src")];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else { continue };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

/// The text of a Rust file without its `//` comments (doc comments included), so that an
/// example in a comment is not taken for code.
fn code_of(text: &str) -> String {
    text.lines()
        .map(|line| match line.find("//") {
            Some(at) if !line[..at].contains('"') => &line[..at],
            _ => line,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The module path of `file` inside a crate whose root file is `root` (`src/a/b.rs` →
/// `a::b`), and whether every module on the way is declared `pub` by its parent.
fn module_path(root: &Path, file: &Path) -> Option<(Vec<String>, bool)> {
    let src = root.parent()?;
    let relative = file.strip_prefix(src).ok()?;
    if file == root {
        return Some((Vec::new(), true));
    }
    let mut segments: Vec<String> = relative
        .with_extension("")
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if segments.last().is_some_and(|s| s == "mod") {
        segments.pop();
    }
    if segments.first().is_some_and(|s| s == "bin" || s == "main") {
        return None;
    }
    // Each module must be declared by its parent file, publicly to be reachable.
    let mut parent = root.to_path_buf();
    let mut public = true;
    for (i, segment) in segments.iter().enumerate() {
        let text = code_of(&std::fs::read_to_string(&parent).ok()?);
        let declared = |prefix: &str| {
            text.lines()
                .any(|l| l.trim_start().starts_with(&format!("{prefix}mod {segment}")))
        };
        if declared("pub ") {
        } else if declared("") || declared("pub(crate) ") {
            public = false;
        } else {
            return None;
        }
        let dir = src.join(segments[..=i].join("/"));
        parent = if dir.join("mod.rs").is_file() {
            dir.join("mod.rs")
        } else {
            dir.with_extension("rs")
        };
    }
    Some((segments, public))
}

/// `name = "value"` inside a `#[kube(...)]` attribute's text.
fn attr_value(attr: &str, name: &str) -> Option<String> {
    let mut rest = attr;
    while let Some(at) = rest.find(name) {
        let before = rest[..at].chars().last();
        let after = rest[at + name.len()..].trim_start();
        if before.is_none_or(|c| !c.is_alphanumeric() && c != '_')
            && let Some(value) = after.strip_prefix('=')
        {
            let value = value.trim_start().strip_prefix('"')?;
            return value.find('"').map(|end| value[..end].to_owned());
        }
        rest = &rest[at + name.len()..];
    }
    None
}

/// Whether the attribute's text holds the bare word `word` (`namespaced`).
fn has_word(attr: &str, word: &str) -> bool {
    attr.split(|c: char| !c.is_alphanumeric() && c != '_')
        .any(|w| w == word)
}

/// The `CustomResource` types of the crate, and how the library exposes each.
pub(super) fn resources(package: &Package) -> Vec<Resource> {
    let mut found = Vec::new();
    for file in rust_files(&package.dir) {
        let Ok(text) = std::fs::read_to_string(&file) else {
            continue;
        };
        let code = code_of(&text);
        let mut rest = code.as_str();
        while let Some(at) = rest.find("#[derive(") {
            rest = &rest[at..];
            let derive_end = rest.find(")]").unwrap_or(rest.len());
            let is_crd = has_word(&rest[..derive_end], "CustomResource");
            // Every attribute up to the item itself.
            let item = rest.find("struct ").unwrap_or(rest.len());
            let attrs = &rest[..item];
            rest = &rest[derive_end.min(rest.len())..];
            if !is_crd {
                continue;
            }
            let kube: String = attrs
                .match_indices("#[kube(")
                .map(|(i, _)| {
                    let a = &attrs[i..];
                    a[..a.find(")]").unwrap_or(a.len())].to_owned()
                })
                .collect::<Vec<_>>()
                .join(",");
            let (Some(group), Some(version), Some(kind)) = (
                attr_value(&kube, "group"),
                attr_value(&kube, "version"),
                attr_value(&kube, "kind"),
            ) else {
                continue;
            };
            let type_name = attr_value(&kube, "root").unwrap_or_else(|| kind.clone());
            let path = match (&package.lib, &package.lib_root) {
                (Some(lib), Some(root)) => {
                    module_path(root, &file)
                        .filter(|(_, public)| *public)
                        .map(|(segments, _)| {
                            std::iter::once(lib.clone())
                                .chain(segments)
                                .chain(std::iter::once(type_name.clone()))
                                .collect::<Vec<_>>()
                                .join("::")
                        })
                }
                _ => None,
            };
            found.push(Resource {
                type_name,
                group,
                version,
                kind,
                namespaced: has_word(&kube, "namespaced"),
                file: file.clone(),
                path,
            });
        }
    }
    found
}

/// Public `async fn`s of the library whose only argument is a `Client`.
pub(super) fn entries(package: &Package) -> Vec<Entry> {
    let (Some(lib), Some(root)) = (&package.lib, &package.lib_root) else {
        return Vec::new();
    };
    let mut found = Vec::new();
    for file in rust_files(&package.dir) {
        let Some((segments, true)) = module_path(root, &file) else {
            continue;
        };
        let Ok(text) = std::fs::read_to_string(&file) else {
            continue;
        };
        let code = code_of(&text);
        for (at, _) in code.match_indices("pub async fn ") {
            let rest = &code[at + "pub async fn ".len()..];
            let Some(open) = rest.find('(') else { continue };
            let name = rest[..open].trim();
            if name.contains('<') || name.is_empty() {
                continue;
            }
            let Some(close) = rest[open..].find(')') else { continue };
            let params = rest[open + 1..open + close].trim().trim_end_matches(',');
            let one = !params.is_empty() && !params.contains(',');
            let client = params
                .split(':')
                .nth(1)
                .is_some_and(|ty| ty.trim().trim_start_matches("kube::").trim_start_matches("client::") == "Client");
            if one && client {
                let path = std::iter::once(lib.clone())
                    .chain(segments.iter().cloned())
                    .chain(std::iter::once(name.to_owned()))
                    .collect::<Vec<_>>()
                    .join("::");
                found.push(Entry {
                    path,
                    file: file.clone(),
                });
            }
        }
    }
    found
}

/// What the deploy manifests hold.
#[derive(Debug, Default)]
pub(super) struct Manifests {
    /// The directories searched (that exist).
    pub searched: Vec<PathBuf>,
    /// Every object read.
    pub docs: Vec<Document>,
    /// Files that did not parse as Kubernetes objects (templates, patches), with why.
    pub skipped: Vec<(PathBuf, String)>,
}

impl Manifests {
    /// The files holding objects of these kinds, in order.
    pub(super) fn files_with(&self, kinds: &[&str]) -> Vec<PathBuf> {
        let mut files: Vec<PathBuf> = Vec::new();
        for doc in self.docs.iter().filter(|d| kinds.contains(&d.kind.as_str())) {
            if !files.contains(&doc.source.file) {
                files.push(doc.source.file.clone());
            }
        }
        files
    }

    /// The objects of `kind`.
    pub(super) fn of_kind<'a>(&'a self, kind: &'a str) -> impl Iterator<Item = &'a Document> + 'a {
        self.docs.iter().filter(move |d| d.kind == kind)
    }
}

/// Read every YAML file under `dirs` (default: the crate's [`MANIFEST_DIRS`] that exist).
pub(super) fn manifests(crate_dir: &Path, dirs: &[PathBuf]) -> Manifests {
    let mut manifests = Manifests {
        searched: if dirs.is_empty() {
            MANIFEST_DIRS
                .iter()
                .map(|d| crate_dir.join(d))
                .filter(|d| d.is_dir())
                .collect()
        } else {
            dirs.to_vec()
        },
        ..Manifests::default()
    };
    let mut stack: Vec<PathBuf> = manifests.searched.clone();
    let mut files = Vec::new();
    while let Some(path) = stack.pop() {
        if path.is_dir() {
            if let Ok(entries) = std::fs::read_dir(&path) {
                stack.extend(entries.flatten().map(|e| e.path()));
            }
        } else if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
            files.push(path);
        }
    }
    files.sort();
    for file in files {
        let name = file
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if name.starts_with("kustomization.") || name == "Chart.yaml" || name.starts_with("values") {
            continue;
        }
        match std::fs::read_to_string(&file)
            .map_err(|e| e.to_string())
            .and_then(|text| parse_documents(&file, &text).map_err(|e| e.to_string()))
        {
            Ok(docs) => manifests.docs.extend(docs),
            Err(why) => manifests.skipped.push((file, why)),
        }
    }
    manifests
}
