//! A backend that is a binary of a Cargo package: in the workspace around the target
//! (`cargoPackage`) or in a crate of its own (`cargoManifest`), with the binary chosen the way
//! `cargo run` chooses it (`bin:`, else the only one, else `default-run`) and refused, naming
//! the binaries, when there is no choice.

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

use super::spec;
use crate::error::{Error, Result};

/// Which package and binary to build, and from where.
#[derive(Debug, Clone)]
pub(crate) struct CargoChoice {
    /// The directory cargo runs in (the target directory).
    dir: PathBuf,
    /// `--manifest-path`, for a crate outside the target's workspace.
    manifest: Option<PathBuf>,
    /// `-p`; with only a manifest, that manifest's own package.
    package: Option<String>,
    /// `--bin`, when the spec names one.
    bin: Option<String>,
}

impl CargoChoice {
    /// The choice a backend spec makes, if it is a cargo backend.
    pub(crate) fn of(dir: &Path, backend: &spec::Backend) -> Option<Self> {
        if backend.cargo_package.is_none() && backend.cargo_manifest.is_none() {
            return None;
        }
        Some(Self {
            dir: dir.to_owned(),
            // Absolute: cargo runs in `dir`, where a path relative to this process's directory
            // (`verify fixtures/targets/x` with `cargoManifest: ../../../Cargo.toml`) is wrong.
            manifest: backend
                .cargo_manifest
                .as_ref()
                .map(|m| std::path::absolute(dir.join(m)).unwrap_or_else(|_| dir.join(m))),
            package: backend.cargo_package.clone(),
            bin: backend.bin.clone(),
        })
    }

    fn command(&self, args: &[&str]) -> Command {
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let mut command = Command::new(cargo);
        command.args(args).current_dir(&self.dir);
        if let Some(manifest) = &self.manifest {
            command.arg("--manifest-path").arg(manifest);
        }
        // A test binary runs with the variables cargo sets for the crate under test
        // (CARGO_MANIFEST_DIR, CARGO_PKG_NAME, …). Build scripts such as ring's and the cc
        // crate's rerun when those change, so passing them on rebuilt TLS and everything above
        // it on every bring-up (10 s for requests-apiserver) and again on the next plain
        // `cargo build`.
        for (name, _) in std::env::vars_os() {
            if name.to_str().is_some_and(is_crate_build_variable) {
                command.env_remove(&name);
            }
        }
        command
    }

    /// Run cargo with `args`, its stdout captured, its stderr to `stderr`.
    fn run(&self, args: &[&str], stderr: std::process::Stdio) -> Result<std::process::Output> {
        self.command(args)
            .stderr(stderr)
            .output()
            .map_err(|source| Error::Spawn {
                binary: PathBuf::from("cargo"),
                source,
            })
    }

    fn what(&self) -> String {
        match (&self.package, &self.manifest) {
            (Some(p), _) => format!("cargo package {p}"),
            (None, Some(m)) => format!("the cargo package of {}", m.display()),
            (None, None) => "a cargo package".into(),
        }
    }

    /// The package's name and the binary to run, from `cargo metadata --no-deps` (about
    /// 0.1 s, no build): for a check before any cluster starts.
    ///
    /// # Errors
    /// [`Error::Fixture`] when the package is not there, has no binary, lacks the `bin` named,
    /// or has several binaries and neither `bin` nor `default-run`.
    pub(crate) fn resolve(&self) -> Result<(String, String)> {
        let output = self.run(
            &["metadata", "--format-version", "1", "--no-deps", "--quiet"],
            std::process::Stdio::piped(),
        )?;
        if !output.status.success() {
            return Err(Error::Fixture(format!(
                "{}: `cargo metadata` failed: {}",
                self.what(),
                String::from_utf8_lossy(&output.stderr).trim()
            )));
        }
        let metadata: Value = serde_json::from_slice(&output.stdout).map_err(|source| Error::Json {
            what: "cargo metadata".into(),
            source,
        })?;
        choose(
            &metadata,
            self.package.as_deref(),
            self.manifest.as_deref(),
            self.bin.as_deref(),
        )
        .map_err(|e| Error::Fixture(format!("{}: {e}", self.what())))
    }

    /// Build the chosen binary (a no-op when up to date) and return its path.
    ///
    /// # Errors
    /// What [`resolve`](Self::resolve) refuses; [`Error::Build`] when cargo fails.
    pub(crate) fn build(&self) -> Result<PathBuf> {
        let (package, bin) = self.resolve()?;
        let output = self.run(
            &[
                "build",
                "--quiet",
                "--message-format=json",
                "-p",
                &package,
                "--bin",
                &bin,
            ],
            std::process::Stdio::inherit(),
        )?;
        if !output.status.success() {
            return Err(Error::Build {
                what: format!("building binary {bin} of cargo package {package}"),
                status: output.status.to_string(),
                tail: String::from_utf8_lossy(&output.stdout)
                    .lines()
                    .rev()
                    .take(5)
                    .collect::<Vec<_>>()
                    .join("\n"),
                log: self.dir.clone(),
            });
        }
        String::from_utf8_lossy(&output.stdout)
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|m| m["reason"] == "compiler-artifact" && m["target"]["name"] == bin.as_str())
            .find_map(|m| m["executable"].as_str().map(PathBuf::from))
            .ok_or_else(|| Error::Fixture(format!("cargo built {package} but reported no executable {bin}")))
    }
}

/// Pick the package and binary from `cargo metadata` output.
fn choose(
    metadata: &Value,
    package: Option<&str>,
    manifest: Option<&Path>,
    bin: Option<&str>,
) -> std::result::Result<(String, String), String> {
    let packages = metadata["packages"].as_array().cloned().unwrap_or_default();
    let found = match package {
        Some(name) => packages.iter().find(|p| p["name"] == name).ok_or_else(|| {
            let names: Vec<&str> = packages.iter().filter_map(|p| p["name"].as_str()).collect();
            format!("no package {name:?} in the workspace (it has: {})", names.join(", "))
        })?,
        None => {
            let wanted = manifest.and_then(|m| std::path::absolute(m).ok());
            packages
                .iter()
                .find(|p| {
                    p["manifest_path"]
                        .as_str()
                        .is_some_and(|mp| wanted.as_deref() == Some(Path::new(mp)))
                })
                .or_else(|| packages.first().filter(|_| packages.len() == 1))
                .ok_or("the manifest is a workspace without a package of its own: set `cargoPackage`")?
        }
    };
    let name = found["name"].as_str().unwrap_or_default().to_owned();
    let bins: Vec<String> = found["targets"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|t| t["kind"].as_array().is_some_and(|k| k.iter().any(|k| k == "bin")))
        .filter_map(|t| t["name"].as_str().map(str::to_owned))
        .collect();
    let chosen = match (bin, found["default_run"].as_str()) {
        (Some(b), _) if bins.iter().any(|x| x == b) => b.to_owned(),
        (Some(b), _) => {
            return Err(format!(
                "`bin: {b}` is not a binary of package {name} (its binaries: {})",
                bins.join(", ")
            ));
        }
        (None, _) if bins.len() == 1 => bins[0].clone(),
        (None, Some(default)) if bins.iter().any(|x| x == default) => default.to_owned(),
        (None, _) if bins.is_empty() => return Err(format!("package {name} has no binary")),
        (None, _) => {
            return Err(format!(
                "package {name} has several binaries ({}) and no `default-run`: name the backend's with `bin:`",
                bins.join(", ")
            ));
        }
    };
    Ok((name, chosen))
}

/// The variables cargo sets for one crate's build or test run — not configuration of cargo.
pub(crate) fn is_crate_build_variable(name: &str) -> bool {
    name.starts_with("CARGO_PKG_")
        || name.starts_with("CARGO_BIN_EXE_")
        || matches!(
            name,
            "CARGO_MANIFEST_DIR"
                | "CARGO_MANIFEST_PATH"
                | "CARGO_MANIFEST_LINKS"
                | "CARGO_CRATE_NAME"
                | "CARGO_BIN_NAME"
                | "CARGO_PRIMARY_PACKAGE"
                | "CARGO_TARGET_TMPDIR"
                | "CARGO_RUSTC_CURRENT_DIR"
                | "OUT_DIR"
        )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn metadata(default_run: Option<&str>) -> Value {
        json!({"packages": [{
            "name": "widget-operator",
            "manifest_path": "/w/Cargo.toml",
            "default_run": default_run,
            "targets": [
                {"name": "widget_operator", "kind": ["lib"]},
                {"name": "crdgen", "kind": ["bin"]},
                {"name": "controller", "kind": ["bin"]}
            ]
        }]})
    }

    #[test]
    fn a_binary_is_chosen_as_cargo_run_chooses_it_or_refused_by_name() {
        let m = metadata(None);
        assert_eq!(
            choose(&m, Some("widget-operator"), None, Some("controller")),
            Ok(("widget-operator".into(), "controller".into()))
        );
        assert_eq!(
            choose(&metadata(Some("controller")), Some("widget-operator"), None, None),
            Ok(("widget-operator".into(), "controller".into()))
        );
        assert_eq!(
            choose(&m, Some("widget-operator"), None, None),
            Err(
                "package widget-operator has several binaries (crdgen, controller) and no `default-run`: \
                 name the backend's with `bin:`"
                    .into()
            )
        );
        assert_eq!(
            choose(&m, Some("widget-operator"), None, Some("manager")),
            Err("`bin: manager` is not a binary of package widget-operator (its binaries: crdgen, controller)".into())
        );
        assert_eq!(
            choose(&m, Some("nope"), None, None),
            Err("no package \"nope\" in the workspace (it has: widget-operator)".into())
        );
        // A manifest of its own: its one package.
        assert_eq!(
            choose(&m, None, Some(Path::new("/w/Cargo.toml")), Some("crdgen")),
            Ok(("widget-operator".into(), "crdgen".into()))
        );
    }

    #[test]
    fn only_the_crate_under_test_variables_are_dropped_from_nested_cargo() {
        for name in [
            "CARGO_PKG_NAME",
            "CARGO_MANIFEST_DIR",
            "CARGO_CRATE_NAME",
            "OUT_DIR",
            "CARGO_BIN_EXE_x",
        ] {
            assert!(is_crate_build_variable(name), "{name}");
        }
        for name in [
            "CARGO_HOME",
            "CARGO_TARGET_DIR",
            "CARGO_BUILD_JOBS",
            "CARGO",
            "CARGO_PROFILE_DEV_OPT_LEVEL",
        ] {
            assert!(!is_crate_build_variable(name), "{name}");
        }
    }
}
