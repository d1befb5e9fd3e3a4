//! A certificate the aggregator cannot verify fails bring-up at once, with the aggregator's
//! words and what to check, and what was applied is rolled back. Kubernetes ≥ 1.36 reports it
//! in the APIService's condition; before 1.36 the condition says `Available=True` and only the
//! proxy's 503 shows it (docs/aggregation.md) — the message is the same on both.
//!
//! Own test binary, own cluster: the fixture registers the requests target's group.

use k8s_openapi::api::core::v1::ConfigMap;
use kube::Api;
use kube_harness::Error;
use kube_harness::target::Target;

#[tokio::test]
async fn a_ca_bundle_of_another_ca_fails_bring_up_at_once() -> anyhow::Result<()> {
    let cluster = kube_harness::shared().await?;
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/apply-fixtures/wrong-ca-bundle");
    let target = Target::load(&dir)?;
    let err = cluster
        .up_target(&target)
        .await
        .err()
        .ok_or_else(|| anyhow::anyhow!("a target with another CA's caBundle came up"))?;
    assert!(
        matches!(err, Error::BackendCertificate { .. }),
        "not the typed certificate error: {err:?}"
    );
    insta::assert_snapshot!("wrong_ca_bundle", err.to_string());
    let configmaps: Api<ConfigMap> = Api::namespaced(cluster.client().await?, "default");
    assert!(
        configmaps.get_opt("wrong-ca-bundle-config").await?.is_none(),
        "wrong-ca-bundle-config was left behind"
    );
    Ok(())
}
