//! Two targets that ship the same CRD, verified back to back on one cluster, five rounds: each
//! teardown waits until the CRD it deleted is gone, so the next target's apply never meets
//! `create not allowed while custom resource definition is terminating`.

use kube_harness::Target;

mod common;

/// A copy of the samples target under another name, inside the workspace (its controller is
/// a cargo package of this workspace).
fn samples_named(name: &str) -> anyhow::Result<Target> {
    let dir =
        std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("shared-crds-{}/{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    for entry in std::fs::read_dir(common::target_dir("samples"))? {
        let path = entry?.path();
        if path.is_file()
            && let Some(file) = path.file_name()
        {
            std::fs::copy(&path, dir.join(file))?;
        }
    }
    let spec = std::fs::read_to_string(dir.join("target.yaml"))?;
    let renamed = spec.replace("metadata:\n  name: samples\n", &format!("metadata:\n  name: {name}\n"));
    anyhow::ensure!(renamed != spec, "samples/target.yaml changed shape");
    std::fs::write(dir.join("target.yaml"), renamed)?;
    Ok(Target::load(&dir)?)
}

#[tokio::test]
async fn targets_sharing_a_crd_pass_back_to_back() -> anyhow::Result<()> {
    let cluster = kube_harness::shared().await?;
    let targets = [samples_named("samples-a")?, samples_named("samples-b")?];
    for round in 1..=5 {
        for target in &targets {
            let results = kube_harness::check::verify_target(cluster, target).await;
            let failed: Vec<_> = results.iter().filter(|r| !r.passed).collect();
            assert!(failed.is_empty(), "round {round}, {}: {failed:#?}", target.name);
        }
    }
    if let Some(dir) = targets[0].dir.parent() {
        std::fs::remove_dir_all(dir)?;
    }
    Ok(())
}
