//! The files `init` writes: the integration test and the `verify` target directory.

use std::fmt::Write as _;

use serde_json::{Value, json};

use super::scan::Package;
use super::{Plan, RBAC_KINDS, TARGETS, TEST_FILE, relative};

/// Kinds of the deploy manifests a target includes: what users install besides the workload
/// (the harness runs the controller itself, so the Deployment is left out by `include`).
const INCLUDED_KINDS: [&str; 7] = [
    "Namespace",
    "ServiceAccount",
    "Role",
    "ClusterRole",
    "RoleBinding",
    "ClusterRoleBinding",
    "CustomResourceDefinition",
];

/// Each file to write (path relative to the crate, text); `notes` gets what could not be done.
pub(super) fn files(plan: &Plan, notes: &mut Vec<String>) -> anyhow::Result<Vec<(String, String)>> {
    let mut files = Vec::new();
    match test_file(plan, notes) {
        Some(text) => files.push((TEST_FILE.to_owned(), text)),
        None => notes.push(format!("no {TEST_FILE} written (see above)")),
    }
    files.extend(target(plan, notes)?);
    Ok(files)
}

/// The `cargo add` line for what the test needs.
pub(super) fn cargo_add(package: &Package, process: bool) -> String {
    let major = package.kube.as_deref().map(|r| {
        r.trim_start_matches(['^', '=', '~', ' '])
            .split('.')
            .next()
            .unwrap_or_default()
            .to_owned()
    });
    let harness = match major.as_deref() {
        Some("3") => "kube-harness --no-default-features --features kube-3",
        Some("4") => "kube-harness --no-default-features --features kube-4",
        _ => "kube-harness",
    };
    let tokio = if process {
        "tokio --features macros,rt-multi-thread,process"
    } else {
        "tokio --features macros,rt-multi-thread"
    };
    let mut line = format!("cargo add --dev {harness} && cargo add --dev {tokio}");
    let missing: Vec<&str> = ["anyhow", "serde_json"]
        .into_iter()
        .filter(|d| !package.deps.contains(*d))
        .collect();
    if !missing.is_empty() {
        let _ = write!(line, " && cargo add --dev {}", missing.join(" "));
    }
    line
}

/// The name and the object (namespace removed, status dropped) the test and the target create.
fn object(plan: &Plan, notes: &mut Vec<String>) -> (String, Value) {
    let r = &plan.resource;
    let mut object = match &plan.sample {
        Some(sample) => sample.clone(),
        None => {
            notes.push(format!(
                "no sample {} among the manifests: the test and the target create one with an empty spec; fill in what your CRD requires",
                r.kind
            ));
            json!({"apiVersion": format!("{}/{}", r.group, r.version), "kind": r.kind, "metadata": {"name": "example"}, "spec": {}})
        }
    };
    if let Some(map) = object.as_object_mut() {
        map.remove("status");
    }
    if let Some(meta) = object.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.retain(|k, _| k == "name" || k == "labels" || k == "annotations");
    }
    let name = object
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("example")
        .to_owned();
    (name, object)
}

fn rust_string(s: &str) -> String {
    format!("{s:?}")
}

fn test_file(plan: &Plan, notes: &mut Vec<String>) -> Option<String> {
    let r = &plan.resource;
    let Some(path) = &r.path else {
        notes.push(format!(
            "{} is not public in the library (a binary's type, or a private module): an integration test cannot name it; make it `pub` from src/lib.rs and run init again",
            r.type_name
        ));
        return None;
    };
    let dir = &plan.package.dir;
    let (name, object) = object(plan, notes);
    let api = |client: &str| {
        if r.namespaced {
            format!("Api::namespaced({client}, ns.name())")
        } else {
            format!("Api::all({client})")
        }
    };
    let mut t = String::new();
    let _ = writeln!(
        t,
        "//! Written by `kube-harness init`: {}'s controller on a real control plane (etcd,\n\
         //! kube-apiserver, kube-controller-manager), as the admin and as the ServiceAccount it is\n\
         //! deployed with, holding only the RBAC it ships. Run: `cargo test --test kube_harness`.\n\
         //! Edit freely: init never overwrites this file.\n",
        plan.package.name
    );
    // One `use` per group: rustfmt's order within a group differs between style editions.
    let _ = writeln!(
        t,
        "use std::time::Duration;\n\nuse kube::api::{{Api, PostParams}};\n\nuse {path};\n"
    );
    let crds = plan
        .installable
        .iter()
        .filter_map(|i| i.path.as_ref())
        .map(|p| {
            let ty = if p == path { r.type_name.as_str() } else { p.as_str() };
            format!("<{ty} as kube::CustomResourceExt>::crd()")
        })
        .collect::<Vec<_>>()
        .join(", ");
    let _ = writeln!(
        t,
        "/// A cluster of the test's own (about a second): a controller that watches every namespace\n\
         /// would reconcile other tests' objects on a shared one. The CRDs come from the Rust types.\n\
         async fn cluster() -> anyhow::Result<kube_harness::Cluster> {{\n    \
         let cluster = kube_harness::private().await?;\n    \
         cluster.install_crds([{crds}]).await?;\n    \
         Ok(cluster)\n}}\n"
    );
    let _ = writeln!(
        t,
        "/// The object the tests create{}.\nfn sample() -> anyhow::Result<{ty}> {{\n    \
         Ok(serde_json::from_value(serde_json::json!({json}))?)\n}}\n",
        if plan.sample.is_some() {
            " (the sample among the deploy manifests)"
        } else {
            ": fill in its spec"
        },
        ty = r.type_name,
        json = serde_json::to_string(&object).unwrap_or_default(),
    );
    let _ = writeln!(
        t,
        "/// Create the sample and wait (watching, up to a minute) until the controller has written\n\
         /// a status: replace `{{}}` with the fields it promises, e.g. `{{\"phase\": \"Ready\"}}`.\n\
         async fn the_status_is_written(api: &Api<{ty}>) -> anyhow::Result<()> {{\n    \
         api.create(&PostParams::default(), &sample()?).await?;\n    \
         let expected = serde_json::json!({{\"status\": {{}}}});\n    \
         kube_harness::check::assert_eventually(api, {name}, &expected, Duration::from_secs(60)).await?;\n    \
         Ok(())\n}}\n",
        ty = r.type_name,
        name = rust_string(&name),
    );
    let (start_admin, start_as) = match (&plan.entry, &plan.bin) {
        (Some(entry), _) => (
            format!("kube_harness::spawn_guarded({}(cluster.client().await?))", entry.path),
            format!(
                "kube_harness::spawn_guarded({}(cluster.token_client(&token).await?))",
                entry.path
            ),
        ),
        (None, Some(bin)) => {
            notes.push(format!(
                "no `pub async fn` taking only a kube::Client in the library: the test runs the binary `{bin}` with KUBECONFIG (as `Client::try_default` reads it); expose one to run the controller in-process"
            ));
            let command = format!(
                "tokio::process::Command::new(env!(\"CARGO_BIN_EXE_{bin}\"))\n        .kill_on_drop(true)\n        .env(\"KUBECONFIG\", "
            );
            (
                format!("{command}cluster.kubeconfig_path())\n        .spawn()?"),
                format!("{command}&kubeconfig)\n        .spawn()?"),
            )
        }
        (None, None) => {
            notes.push(format!(
                "{} has no library `pub async fn(Client)` and no binary: nothing to run as the controller",
                plan.package.name
            ));
            return None;
        }
    };
    let _ = writeln!(
        t,
        "#[tokio::test]\nasync fn as_admin_the_controller_writes_a_status() -> anyhow::Result<()> {{\n    \
         let cluster = cluster().await?;\n    \
         let ns = cluster.test_namespace(\"admin\").await?;\n    \
         let _controller = {start_admin};\n    \
         the_status_is_written(&{}).await\n}}",
        api("cluster.client().await?")
    );
    let rbac = plan.manifests.files_with(&RBAC_KINDS);
    match &plan.service_account {
        Some((_, sa)) if !rbac.is_empty() => {
            let files: Vec<String> = rbac
                .iter()
                .map(|f| {
                    format!(
                        "concat!(env!(\"CARGO_MANIFEST_DIR\"), {})",
                        rust_string(&format!("/{}", relative(dir, f)))
                    )
                })
                .collect();
            let applies = format!("    ns.apply_rbac([{}]).await?;\n", files.join(", "));
            let identity = if plan.entry.is_some() {
                format!(
                    "    let token = cluster.service_account_token(ns.name(), {}, 600).await?;\n",
                    rust_string(sa)
                )
            } else {
                format!(
                    "    let kubeconfig = cluster.service_account_kubeconfig(ns.name(), {}).await?;\n",
                    rust_string(sa)
                )
            };
            let _ = writeln!(
                t,
                "\n/// The controller as ServiceAccount {sa}, with only the RBAC of the deploy\n\
                 /// manifests (their Namespace and Deployment left out, the bindings pointed at the\n\
                 /// test's namespace): a missing verb fails here rather than in production.\n\
                 #[tokio::test]\nasync fn with_only_its_shipped_rbac_the_controller_writes_a_status() -> anyhow::Result<()> {{\n    \
                 let cluster = cluster().await?;\n    \
                 let ns = cluster.test_namespace(\"rbac\").await?;\n\
                 {applies}{identity}    \
                 let _controller = {start_as};\n    \
                 the_status_is_written(&{}).await\n}}",
                api("cluster.client().await?")
            );
        }
        _ => notes.push(
            "no ServiceAccount or RBAC among the manifests: the test runs the controller as the admin only".to_owned(),
        ),
    }
    Some(t)
}

/// `fixtures/targets/<package>/`: target.yaml, expectations.yaml, the step's object, and
/// crd.yaml when the manifests hold no CRD but a `crdgen` binary prints them.
fn target(plan: &Plan, notes: &mut Vec<String>) -> anyhow::Result<Vec<(String, String)>> {
    let pkg = &plan.package;
    let dir = format!("{TARGETS}/{}", pkg.name);
    let up = "../".repeat(dir.split('/').count());
    let Some(bin) = &plan.bin else {
        notes.push(format!("{} has no binary to run: no verify target written", pkg.name));
        return Ok(Vec::new());
    };
    let mut files = Vec::new();
    let included = plan.manifests.files_with(&INCLUDED_KINDS);
    let has_crd = plan.manifests.of_kind("CustomResourceDefinition").next().is_some();
    if !has_crd {
        match &plan.crdgen {
            Some(crdgen) => files.push((format!("{dir}/crd.yaml"), crdgen_output(pkg, crdgen)?)),
            None => notes.push(format!(
                "no CustomResourceDefinition among the manifests and no crdgen binary: add the CRD's YAML to {dir}/"
            )),
        }
    }
    let mut y = format!(
        "# Written by `kube-harness init`: {name} as it is deployed — its controller binary,\n\
         # `{bin}`, run by the harness as its ServiceAccount with the RBAC and CRDs of the deploy\n\
         # manifests (`include`; their Deployment is left out) — and expectations.yaml's steps\n\
         # checking what it does. Run: `kube-harness verify {dir}`.\n\
         apiVersion: kube-harness.dev/v1alpha1\nkind: Target\nmetadata:\n  name: {name}\nspec:\n",
        name = pkg.name
    );
    if !included.is_empty() {
        y.push_str("  include:\n");
        for f in &included {
            let _ = writeln!(y, "    - {up}{}", relative(&pkg.dir, f));
        }
    }
    let _ = write!(y, "  backend:\n    cargoManifest: {up}Cargo.toml\n    bin: {bin}\n");
    let kubeconfig = match &plan.service_account {
        Some((ns, sa)) => {
            let _ = writeln!(y, "    serviceAccount: {ns}/{sa}");
            "backendKubeconfig"
        }
        None => "kubeconfig",
    };
    let _ = writeln!(
        y,
        "    env: {{KUBECONFIG: \"{{{{{kubeconfig}}}}}\"}}   # kube's Client::try_default reads it"
    );
    match &plan.probe {
        Some((path, port)) => {
            let _ = writeln!(
                y,
                "    readinessScheme: http             # the Deployment's probe\n    readinessPath: {path}\n    readinessPort: {port}"
            );
        }
        None => y.push_str("    readinessScheme: none             # no HTTP probe in the Deployment: the steps wait\n"),
    }
    files.push((format!("{dir}/target.yaml"), y));
    let (name, mut object) = object(plan, notes);
    let r = &plan.resource;
    let mut reference =
        json!({"apiVersion": format!("{}/{}", r.group, r.version), "kind": r.kind, "metadata": {"name": name}});
    if r.namespaced {
        object["metadata"]["namespace"] = json!("default");
        reference["metadata"]["namespace"] = json!("default");
    }
    let mut assert = reference.clone();
    assert["status"] = json!({});
    let step_file = format!("steps/{name}.yaml");
    files.push((
        format!("{dir}/{step_file}"),
        format!(
            "# The object expectations.yaml's first step creates (files in steps/ are applied only by steps).\n{}",
            serde_saphyr::to_string(&object)?
        ),
    ));
    files.push((
        format!("{dir}/expectations.yaml"),
        format!(
            "# What {name_pkg} promises, checked over time (each step waits up to 30 s unless it says\n\
             # `timeoutSeconds`). Make the assertion say what the controller writes, e.g.\n\
             # `status: {{phase: Ready}}`, and add steps: `condition`, `events`, `patch`, `delete`,\n\
             # `absent` (see the kube-harness docs: target::steps).\n\
             apiVersion: kube-harness.dev/v1alpha1\nkind: Expectations\nmetadata:\n  name: {name_pkg}\nspec:\n  steps:\n    \
             - name: the sample {kind} is created\n      apply: {{file: {step_file}}}\n    \
             - name: the controller writes its status\n      assert: {}\n      timeoutSeconds: 60\n",
            serde_json::to_string(&assert)?,
            name_pkg = pkg.name,
            kind = r.kind,
        ),
    ));
    Ok(files)
}

/// What `cargo run --bin <crdgen>` prints, checked to be CRDs.
fn crdgen_output(pkg: &Package, crdgen: &str) -> anyhow::Result<String> {
    println!("  running `cargo run --quiet --bin {crdgen}` for the target's CRDs");
    let mut command = std::process::Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    command.args(["run", "--quiet", "--bin", crdgen]).current_dir(&pkg.dir);
    // Run from a test, the crate-under-test variables cargo set would make build scripts such
    // as ring's rerun (the cargo backends drop them for the same reason).
    for (name, _) in std::env::vars_os() {
        if name.to_str().is_some_and(crate::target::cargo::is_crate_build_variable) {
            command.env_remove(&name);
        }
    }
    let out = command.output()?;
    anyhow::ensure!(
        out.status.success(),
        "`cargo run --bin {crdgen}` failed: {}",
        String::from_utf8_lossy(&out.stderr).trim()
    );
    let text = String::from_utf8(out.stdout)?;
    let docs = crate::target::load::parse_documents(std::path::Path::new("crd.yaml"), &text)?;
    anyhow::ensure!(
        !docs.is_empty() && docs.iter().all(|d| d.kind == "CustomResourceDefinition"),
        "`cargo run --bin {crdgen}` printed no CustomResourceDefinitions"
    );
    Ok(format!(
        "# Printed by `cargo run --bin {crdgen}` (kube-harness init): print it again when the types change.\n{text}"
    ))
}
