//! Two targets that ship the same CRD, verified back to back on one cluster, five rounds: each
//! teardown waits until the CRD it deleted is gone, so the next target's apply never meets
//! `create not allowed while custom resource definition is terminating`. And right after
//! bring-up the first LIST of the CRD's kind succeeds.

use kube_harness::Target;

mod common;

/// A copy of the samples target under another name.
fn samples_named(name: &str) -> anyhow::Result<Target> {
    let renamed = |file: &str, text: String| {
        if file == "target.yaml" {
            text.replace("metadata:\n  name: samples\n", &format!("metadata:\n  name: {name}\n"))
        } else {
            text
        }
    };
    let dir = common::copy_target("samples", name, renamed)?;
    let target = Target::load(&dir)?;
    anyhow::ensure!(target.name == name, "samples/target.yaml changed shape");
    Ok(target)
}

#[tokio::test]
async fn targets_sharing_a_crd_pass_back_to_back() -> anyhow::Result<()> {
    let cluster = kube_harness::shared().await?;
    let targets = [samples_named("samples-a")?, samples_named("samples-b")?];
    // Right after bring-up the CRD's kind is listable: no `429 storage is (re)initializing`
    // for the first LIST (harness clients do not retry).
    let running = cluster.up_target(&targets[0]).await?;
    let gvk = kube::api::GroupVersionKind::gvk("example.com", "v1alpha1", "Sample");
    let samples: kube::Api<kube::api::DynamicObject> =
        kube::Api::all_with(cluster.client().await?, &kube::api::ApiResource::from_gvk(&gvk));
    let listed = samples.list(&Default::default()).await;
    running.down(cluster).await?;
    assert!(listed.is_ok(), "the first LIST after bring-up: {listed:?}");
    for round in 1..=5 {
        for target in &targets {
            let results = kube_harness::check::verify_target(cluster, target).await;
            let failed: Vec<_> = results.iter().filter(|r| !r.passed).collect();
            assert!(failed.is_empty(), "round {round}, {}: {failed:#?}", target.name);
        }
    }
    for target in &targets {
        std::fs::remove_dir_all(&target.dir)?;
    }
    Ok(())
}
