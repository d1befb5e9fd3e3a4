//! Real project directories load as shipped: a CRD directory rendered by its
//! kustomization (patches are not read as objects), a CRD bundle over 4 MiB, excluded files,
//! and the same notion of "which directories are targets" for every command.

use std::path::{Path, PathBuf};

use kube_harness::Target;
use kube_harness::target::sources::target_dirs;

fn scratch(name: &str) -> anyhow::Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("kh-loading-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// A CRD of about `bytes` bytes: `fields` properties with long descriptions, as generated
/// bundles have.
fn big_crd(group: &str, plural: &str, kind: &str, bytes: usize) -> String {
    let description = "A property described at length, as controller-gen writes them. ".repeat(8);
    let mut properties = String::new();
    let mut i = 0;
    while properties.len() < bytes {
        properties.push_str(&format!(
            "                field{i}:\n                  type: string\n                  description: \"{description}\"\n"
        ));
        i += 1;
    }
    format!(
        "apiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\nmetadata:\n  name: {plural}.{group}\n\
         spec:\n  group: {group}\n  names: {{kind: {kind}, plural: {plural}}}\n  scope: Namespaced\n  versions:\n\
         \x20   - name: v1\n      served: true\n      storage: true\n      schema:\n        openAPIV3Schema:\n\
         \x20         type: object\n          properties:\n            spec:\n              type: object\n\
         \x20             properties:\n{properties}"
    )
}

fn write(dir: &Path, file: &str, text: &str) -> anyhow::Result<()> {
    let path = dir.join(file);
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(path, text)?;
    Ok(())
}

#[test]
fn a_kustomized_crd_directory_with_a_large_bundle_loads() -> anyhow::Result<()> {
    let dir = scratch("kustomize")?;
    // crds/: a bundle of two CRDs over 4 MiB in all, a kustomization that labels them, and a
    // patch file that is no object (the loader must not read it one by one).
    let bundle = [
        big_crd("big.example.com", "alphas", "Alpha", 2_300_000),
        big_crd("big.example.com", "betas", "Beta", 2_300_000),
    ]
    .join("---\n");
    assert!(bundle.len() > 4 * 1024 * 1024, "the bundle is {} bytes", bundle.len());
    write(&dir, "crds/bundle.yaml", &bundle)?;
    write(
        &dir,
        "crds/kustomization.yaml",
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources: [bundle.yaml]\n\
         labels:\n  - pairs: {app.kubernetes.io/part-of: big}\n\
         patches:\n  - path: patch.yaml\n",
    )?;
    write(
        &dir,
        "crds/patch.yaml",
        "apiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\nmetadata:\n  name: betas.big.example.com\n  \
         annotations: {patched: \"yes\"}\n",
    )?;
    // docs/ is excluded by target.yaml; its file would not load (no apiVersion).
    write(&dir, "docs/notes.yaml", "title: not an object\n")?;
    write(
        &dir,
        "target.yaml",
        "apiVersion: kube-harness.dev/v1alpha1\nkind: Target\nmetadata:\n  name: big\nspec:\n  exclude: [docs]\n",
    )?;

    let target = Target::load(&dir)?;
    let crds: Vec<_> = target.plan.crds().collect();
    assert_eq!(crds.len(), 2);
    for crd in &crds {
        let labels = crd.object.metadata.labels.clone().unwrap_or_default();
        assert_eq!(
            labels.get("app.kubernetes.io/part-of").map(String::as_str),
            Some("big"),
            "{}",
            crd.name()
        );
    }
    let beta = crds.iter().find(|c| c.name() == "betas.big.example.com");
    let annotations = beta
        .and_then(|c| c.object.metadata.annotations.clone())
        .unwrap_or_default();
    assert_eq!(annotations.get("patched").map(String::as_str), Some("yes"));

    // Without the exclude, docs/notes.yaml is read and refused, naming the file.
    write(
        &dir,
        "target.yaml",
        "apiVersion: kube-harness.dev/v1alpha1\nkind: Target\nmetadata:\n  name: big\n",
    )?;
    let err = Target::load(&dir).err().map(|e| e.to_string()).unwrap_or_default();
    assert!(err.contains("notes.yaml"), "{err}");
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}

#[test]
fn a_broken_kustomization_is_reported_with_kustomizes_words() -> anyhow::Result<()> {
    let dir = scratch("bad-kustomize")?;
    write(
        &dir,
        "kustomization.yaml",
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources: [missing.yaml]\n",
    )?;
    let err = Target::load(&dir).err().map(|e| e.to_string()).unwrap_or_default();
    assert!(
        err.contains("rendering the kustomization in") && err.contains("missing.yaml"),
        "{err}"
    );
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}

#[test]
fn every_command_agrees_on_which_directories_are_targets() -> anyhow::Result<()> {
    // A directory of targets (each subdirectory has a target.yaml): one target per subdirectory.
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/targets");
    let names: Vec<String> = target_dirs(std::slice::from_ref(&shipped))?
        .iter()
        .filter_map(|d| d.file_name().map(|n| n.to_string_lossy().into_owned()))
        .collect();
    assert_eq!(
        names,
        ["metrics", "requests", "samples", "wardle", "webhooks", "widgets"]
    );

    // A target whose files all sit in subdirectories (no target.yaml below): one target.
    let dir = scratch("subdirs")?;
    write(
        &dir,
        "crds/a.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a, namespace: default}\n",
    )?;
    write(
        &dir,
        "rbac/b.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: b, namespace: default}\n",
    )?;
    assert_eq!(target_dirs(std::slice::from_ref(&dir))?, std::slice::from_ref(&dir));
    let target = Target::load(&dir)?;
    assert_eq!(target.plan.documents().count(), 2);
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}
