//! `kube-harness init`: a first integration test and a first `verify` target for an operator
//! crate, from what its sources and deploy manifests say. It never overwrites a file; it
//! prints what it found, what it wrote, what it could not do and why, and how to run the rest.

mod render;
mod scan;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::bail;
use serde_json::Value;

use scan::{Entry, Manifests, Package, Resource};

/// Where `init` writes the integration test, relative to the crate.
const TEST_FILE: &str = "tests/kube_harness.rs";
/// Where `init` writes the target directory (verify's default directory), relative to the crate.
const TARGETS: &str = "fixtures/targets";

/// What `init` was asked.
#[derive(Debug)]
pub(super) struct InitArgs {
    pub dir: PathBuf,
    pub package: Option<String>,
    pub bin: Option<String>,
    pub manifests: Vec<PathBuf>,
}

/// Everything the files are written from.
#[derive(Debug)]
struct Plan {
    package: Package,
    /// The resource the test and the target exercise (one with a sample object, if any).
    resource: Resource,
    /// Every resource type the library exposes (all installed from their types).
    installable: Vec<Resource>,
    entry: Option<Entry>,
    /// The controller's binary.
    bin: Option<String>,
    /// A binary that prints the CRDs (`crdgen`).
    crdgen: Option<String>,
    manifests: Manifests,
    /// The ServiceAccount the operator is deployed as.
    service_account: Option<(String, String)>,
    /// The operator Deployment's HTTP probe: path, port.
    probe: Option<(String, u16)>,
    /// A sample object of `resource` from the manifests.
    sample: Option<Value>,
}

/// Kinds `init` counts as the RBAC an operator ships.
const RBAC_KINDS: [&str; 5] = [
    "ServiceAccount",
    "Role",
    "ClusterRole",
    "RoleBinding",
    "ClusterRoleBinding",
];

pub(super) fn run(args: &InitArgs) -> anyhow::Result<ExitCode> {
    let package = scan::package(&args.dir, args.package.as_deref())?;
    println!(
        "kube-harness init: package {} in {}",
        package.name,
        package.dir.display()
    );
    let resources = scan::resources(&package);
    if resources.is_empty() {
        bail!(
            "no #[derive(CustomResource)] with #[kube(group, version, kind)] in {} (every .rs file below it): init writes tests for operators of custom resources",
            package.dir.join("src").display()
        );
    }
    for r in &resources {
        println!(
            "  found {} ({}/{}, {}) in {}{}",
            r.type_name,
            r.group,
            r.version,
            if r.namespaced { "namespaced" } else { "cluster-scoped" },
            relative(&package.dir, &r.file),
            match &r.path {
                Some(path) => format!(", reachable as {path}"),
                None => ", not reachable from the library (tests cannot name it)".to_owned(),
            }
        );
    }
    let mut dirs = Vec::new();
    for dir in &args.manifests {
        dirs.push(
            dir.canonicalize()
                .map_err(|e| anyhow::anyhow!("--manifests {}: {e}", dir.display()))?,
        );
    }
    let manifests = scan::manifests(&package.dir, &dirs);
    if manifests.searched.is_empty() {
        bail!(
            "no deploy manifests: none of {} exists in {}; name the directory with --manifests DIR",
            scan::MANIFEST_DIRS.join(", "),
            package.dir.display()
        );
    }
    for (file, why) in &manifests.skipped {
        println!(
            "  skipped {} (not plain Kubernetes objects: {why})",
            relative(&package.dir, file)
        );
    }
    if manifests.docs.is_empty() {
        bail!(
            "no Kubernetes objects in {} (helm templates are not read; render them into a directory and pass --manifests DIR)",
            manifests
                .searched
                .iter()
                .map(|d| d.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        );
    }
    let plan = plan(package, resources, manifests, args.bin.as_deref())?;
    if let Some(entry) = &plan.entry {
        println!(
            "  found the controller entry {}(Client) in {}",
            entry.path,
            relative(&plan.package.dir, &entry.file)
        );
    }
    if let Some(bin) = &plan.bin {
        println!("  the controller's binary: {bin}");
    }
    if let Some((ns, sa)) = &plan.service_account {
        println!("  deployed as ServiceAccount {ns}/{sa}");
    }
    let mut written = Vec::new();
    let mut kept = Vec::new();
    let mut notes = Vec::new();
    for (path, text) in render::files(&plan, &mut notes)? {
        let full = plan.package.dir.join(&path);
        if full.exists() {
            kept.push(path);
            continue;
        }
        if let Some(parent) = full.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(&full, text)?;
        if path.ends_with(".rs") {
            format(&full, &plan.package.edition, &mut notes);
        }
        written.push(path);
    }
    for path in &written {
        println!("wrote {path}");
    }
    for path in &kept {
        println!("kept  {path} (it exists; init never overwrites: move it away to get a new one)");
    }
    for note in &notes {
        println!("note: {note}");
    }
    println!("\nnext:");
    println!("  {}", render::cargo_add(&plan.package, plan.entry.is_none()));
    println!("  cargo test --test kube_harness");
    println!(
        "  kube-harness verify {TARGETS}/{}        (the target: the operator as its ServiceAccount)",
        plan.package.name
    );
    Ok(ExitCode::SUCCESS)
}

fn plan(package: Package, resources: Vec<Resource>, manifests: Manifests, bin: Option<&str>) -> anyhow::Result<Plan> {
    // Samples meant to be refused (controller-rs ships `instance-illegal.yaml`) come last.
    let looks_bad = |d: &crate::target::load::Document| {
        let file = d.source.file.to_string_lossy().to_lowercase();
        ["illegal", "invalid", "bad", "broken", "fail", "wrong"]
            .iter()
            .any(|w| d.name.to_lowercase().contains(w) || file.contains(w))
    };
    let sample_of = |r: &Resource| {
        let api_version = format!("{}/{}", r.group, r.version);
        let mut samples: Vec<_> = manifests
            .docs
            .iter()
            .filter(|d| d.kind == r.kind && d.api_version == api_version)
            .collect();
        samples.sort_by_key(|d| looks_bad(d));
        samples.first().map(|d| d.value.clone())
    };
    let resource = resources
        .iter()
        .find(|r| r.path.is_some() && sample_of(r).is_some())
        .or_else(|| resources.iter().find(|r| r.path.is_some()))
        .unwrap_or(&resources[0])
        .clone();
    let sample = sample_of(&resource);
    let installable = resources.iter().filter(|r| r.path.is_some()).cloned().collect();
    let crdgen = package.bins.iter().find(|b| b.contains("crd")).cloned();
    let runnable: Vec<&String> = package.bins.iter().filter(|b| !b.contains("crd")).collect();
    let bin = match bin {
        Some(b) if package.bins.iter().any(|x| x == b) => Some(b.to_owned()),
        Some(b) => bail!(
            "--bin {b}: {} has no such binary (it has: {})",
            package.name,
            package.bins.join(", ")
        ),
        None => match runnable.as_slice() {
            [] => None,
            [one] => Some((*one).clone()),
            many => match many.iter().find(|b| **b == &package.name) {
                Some(b) => Some((*b).clone()),
                None => bail!(
                    "{} has several binaries ({}): name the controller's with --bin",
                    package.name,
                    package.bins.join(", ")
                ),
            },
        },
    };
    let deployment = manifests
        .of_kind("Deployment")
        .find(|d| d.value.pointer("/spec/template/spec/serviceAccountName").is_some())
        .or_else(|| manifests.of_kind("Deployment").next());
    let service_account = deployment
        .and_then(|d| {
            let name = d.value.pointer("/spec/template/spec/serviceAccountName")?.as_str()?;
            Some((d.namespace.clone().unwrap_or_else(|| "default".into()), name.to_owned()))
        })
        .or_else(|| {
            manifests.of_kind("ServiceAccount").next().map(|sa| {
                (
                    sa.namespace.clone().unwrap_or_else(|| "default".into()),
                    sa.name.clone(),
                )
            })
        });
    let probe = deployment.and_then(|d| {
        let container = d.value.pointer("/spec/template/spec/containers/0")?;
        let get = container
            .pointer("/readinessProbe/httpGet")
            .or_else(|| container.pointer("/livenessProbe/httpGet"))?;
        let port = match &get["port"] {
            Value::Number(n) => u16::try_from(n.as_u64()?).ok()?,
            Value::String(name) => container["ports"]
                .as_array()?
                .iter()
                .find(|p| p["name"] == name.as_str())
                .and_then(|p| u16::try_from(p["containerPort"].as_u64()?).ok())?,
            _ => return None,
        };
        Some((get["path"].as_str().unwrap_or("/").to_owned(), port))
    });
    let entries = scan::entries(&package);
    Ok(Plan {
        entry: entries.first().cloned(),
        package,
        resource,
        installable,
        bin,
        crdgen,
        manifests,
        service_account,
        probe,
        sample,
    })
}

/// Format a written Rust file as `cargo fmt` would (rustfmt picks up the crate's
/// rustfmt.toml), when rustfmt is there.
fn format(file: &Path, edition: &str, notes: &mut Vec<String>) {
    match std::process::Command::new("rustfmt")
        .args(["--edition", edition])
        .arg(file)
        .output()
    {
        Ok(out) if out.status.success() => {}
        Ok(out) => notes.push(format!(
            "rustfmt {}: {}",
            file.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        )),
        Err(e) => notes.push(format!("{} is not formatted (rustfmt: {e})", file.display())),
    }
}

/// `path` relative to `base`, with `/` separators, for messages and generated files.
fn relative(base: &Path, path: &Path) -> String {
    path.strip_prefix(base).unwrap_or(path).to_string_lossy().into_owned()
}
