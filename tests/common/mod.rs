//! Helpers every scenario file shares: the shared cluster as an rstest fixture, a fresh
//! namespace per test, the path of a shipped target. Each test binary uses some of them.
#![allow(dead_code, reason = "each scenario binary uses a part of the helpers")]

use k8s_openapi::api::core::v1::Namespace;
use kube::api::{ObjectMeta, PostParams};
use kube::{Api, Client};
use kube_harness::Cluster;
use rstest::fixture;

/// The process's shared cluster (started on first use).
#[fixture]
pub async fn cluster() -> &'static Cluster {
    match kube_harness::shared().await {
        Ok(c) => c,
        Err(e) => panic!("the shared control plane did not start: {e}"),
    }
}

/// A namespace of its own for a test: `<prefix>-<random suffix>`, created now.
pub async fn namespace(client: &Client, prefix: &str) -> anyhow::Result<String> {
    let ns = Namespace {
        metadata: ObjectMeta {
            generate_name: Some(format!("{prefix}-")),
            ..Default::default()
        },
        ..Default::default()
    };
    let created = Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await?;
    created
        .metadata
        .name
        .ok_or_else(|| anyhow::anyhow!("namespace without a name"))
}

/// A shipped target's directory, `fixtures/targets/<name>`.
pub fn target_dir(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fixtures/targets")
        .join(name)
}

/// A copy of a shipped target's files in a fresh directory inside the workspace (cargo
/// backends build from the workspace around their target), for broken copies and renames.
/// `edit` gets each file's name and text and returns the text to write.
pub fn copy_target(
    name: &str,
    copy: &str,
    edit: impl Fn(&str, String) -> String,
) -> anyhow::Result<std::path::PathBuf> {
    // The workspace's own target/ (never CARGO_TARGET_TMPDIR, which is outside the workspace
    // when CARGO_TARGET_DIR points elsewhere, as in CI): the copy's cargo backend is found by
    // `cargo metadata` from the copy's directory upwards.
    let dir = std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/target/kh-copies"))
        .join(format!("targets-{}", std::process::id()))
        .join(copy);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("snapshots"))?;
    std::fs::create_dir_all(dir.join("steps"))?;
    for sub in ["", "snapshots", "steps"] {
        let from = target_dir(name).join(sub);
        let Ok(entries) = std::fs::read_dir(&from) else {
            continue;
        };
        for entry in entries {
            let path = entry?.path();
            if let (true, Some(file)) = (path.is_file(), path.file_name().and_then(|f| f.to_str())) {
                let text = std::fs::read_to_string(&path)?;
                std::fs::write(dir.join(sub).join(file), edit(file, text))?;
            }
        }
    }
    Ok(dir)
}
