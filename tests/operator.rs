//! The operator target (`fixtures/targets/widgets`, our `widget-operator`): its broken copies
//! each FAIL `verify` at the step that states the promise they break, with the diff or the
//! state last seen and the backend's log tail — and none of the rules names the bug. Also the
//! same promises asserted from Rust through the library's public engine.

use std::time::Duration;

use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, Patch, PatchParams, PostParams};
use kube_harness::Target;
use kube_harness::check::{
    CheckResult, ConditionRule, EventsRule, assert_eventually, expect_absent, expect_condition, expect_events,
    verify_target,
};
use serde_json::json;

mod common;

/// Verify the copy at `dir` on a cluster of its own (copies share the CRD's name); return
/// the failed checks.
async fn failed_checks(target: Target) -> anyhow::Result<Vec<CheckResult>> {
    let cluster = kube_harness::ControlPlane::builder().start().await?;
    let results = verify_target(&cluster, &target).await;
    Ok(results.into_iter().filter(|r| !r.passed).collect())
}

fn names(failed: &[CheckResult]) -> Vec<&str> {
    failed.iter().map(|r| r.check.as_str()).collect()
}

#[tokio::test]
async fn an_operator_whose_role_cannot_patch_events_fails_the_event_series_step() -> anyhow::Result<()> {
    let without_patch = |file: &str, text: String| {
        if file == "rbac.yaml" {
            text.replace(
                "    resources: [events]\n    verbs: [create, patch]",
                "    resources: [events]\n    verbs: [create]",
            )
        } else {
            text
        }
    };
    let dir = common::copy_target("widgets", "widgets-events-create-only", without_patch)?;
    anyhow::ensure!(
        std::fs::read_to_string(dir.join("rbac.yaml"))?.contains("verbs: [create]\n"),
        "widgets/rbac.yaml changed shape"
    );
    let failed = failed_checks(Target::load(&dir)?).await?;
    assert_eq!(names(&failed), ["step 5: every reconcile is reported"], "{failed:#?}");
    let detail = &failed[0].detail;
    assert!(
        detail.contains("events Widget/w1 Normal Reconciled ×2")
            && detail.contains("1 matching occurrence(s)")
            && detail.contains("Normal Reconciled ×1 by widget-operator"),
        "{detail}"
    );
    // The backend's own words, from its log tail.
    assert!(
        detail.contains("the backend's log")
            && detail.contains("publishing the Reconciled event")
            && detail.contains("forbidden"),
        "{detail}"
    );
    Ok(())
}

#[tokio::test]
async fn an_operator_that_never_sets_its_condition_fails_the_condition_step() -> anyhow::Result<()> {
    let target = Target::load(common::target_dir("widgets"))?.with_backend_args(["--fault=no-condition"]);
    let failed = failed_checks(target).await?;
    assert_eq!(
        names(&failed),
        ["step 3: condition Widget/default/w1 Ready=True"],
        "{failed:#?}"
    );
    let detail = &failed[0].detail;
    assert!(
        detail.contains("no condition of type \"Ready\" in status.conditions (types there: [])")
            && detail.contains("widget-operator: default/w1 reconciled (size 2)"),
        "{detail}"
    );
    Ok(())
}

#[tokio::test]
async fn an_operator_that_keeps_its_finalizer_fails_the_absent_step_and_is_named_at_teardown() -> anyhow::Result<()> {
    let target = Target::load(common::target_dir("widgets"))?.with_backend_args(["--fault=keep-finalizer"]);
    let failed = failed_checks(target).await?;
    assert_eq!(
        names(&failed),
        [
            "step 10: the deleted Widget goes away",
            "steps: what they applied is deleted and gone",
            "tear down"
        ],
        "{failed:#?}"
    );
    assert!(
        failed[0]
            .detail
            .contains("w1 is being deleted but still has finalizers [\"widgets.ops.example.com/cleanup\"]"),
        "{}",
        failed[0].detail
    );
    assert!(
        failed[2]
            .detail
            .contains("Widget default/sample-widget (finalizers: [\"widgets.ops.example.com/cleanup\"])")
            && failed[2].detail.contains("must remove them"),
        "{}",
        failed[2].detail
    );
    Ok(())
}

#[tokio::test]
async fn an_operator_whose_child_has_no_owner_fails_the_garbage_collection_step() -> anyhow::Result<()> {
    let target = Target::load(common::target_dir("widgets"))?.with_backend_args(["--fault=no-owner-reference"]);
    let failed = failed_checks(target).await?;
    assert_eq!(names(&failed), ["step 11: its ConfigMap goes with it"], "{failed:#?}");
    assert!(
        failed[0]
            .detail
            .contains("w1-config still exists and is not being deleted (ownerReferences: [])"),
        "{}",
        failed[0].detail
    );
    Ok(())
}

/// The same promises from a Rust test, through the library's engine.
#[tokio::test]
async fn the_operator_keeps_its_promises_asserted_through_the_library() -> anyhow::Result<()> {
    let cluster = kube_harness::ControlPlane::builder().start().await?;
    let running = cluster.up_target(&Target::load(common::target_dir("widgets"))?).await?;
    let client = cluster.client().await?;
    let resource = ApiResource::from_gvk(&GroupVersionKind::gvk("ops.example.com", "v1", "Widget"));
    let widgets: Api<DynamicObject> = Api::namespaced_with(client.clone(), "default", &resource);
    let widget: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "ops.example.com/v1", "kind": "Widget",
        "metadata": {"name": "from-rust"}, "spec": {"size": 4}
    }))?;
    widgets.create(&PostParams::default(), &widget).await?;
    let timeout = Duration::from_secs(30);

    let ready = json!({"metadata": {"finalizers": ["widgets.ops.example.com/cleanup"]}, "status": {"phase": "Ready", "size": 4}});
    assert_eventually(&widgets, "from-rust", &ready, timeout).await?;
    expect_condition(
        &widgets,
        "from-rust",
        &ConditionRule::new("Ready", "True").with_reason("Reconciled"),
        timeout,
    )
    .await?;
    let rule = EventsRule::regarding("Widget", "from-rust")
        .in_namespace("default")
        .with_reason("Reconciled")
        .at_least(2);
    let events = expect_events(&client, &rule, timeout).await?;
    assert!(!events.is_empty());

    // What already holds answers at once (one list); what does not, names the difference.
    let started = std::time::Instant::now();
    assert_eventually(&widgets, "from-rust", &ready, timeout).await?;
    assert!(started.elapsed() < Duration::from_secs(2), "{:?}", started.elapsed());
    let wrong = json!({"status": {"size": 5}});
    let err = assert_eventually(&widgets, "from-rust", &wrong, Duration::from_millis(300))
        .await
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(
        err.contains(".status.size: expected 5, got 4") && err.contains("-  size: 5") && err.contains("+  size: 4"),
        "{err}"
    );

    widgets
        .patch(
            "from-rust",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"size": 6}})),
        )
        .await?;
    let config_maps: Api<DynamicObject> = Api::namespaced_with(
        client.clone(),
        "default",
        &ApiResource::from_gvk(&GroupVersionKind::gvk("", "v1", "ConfigMap")),
    );
    assert_eventually(
        &config_maps,
        "from-rust-config",
        &json!({"data": {"size": "6"}}),
        timeout,
    )
    .await?;
    widgets.delete("from-rust", &DeleteParams::default()).await?;
    expect_absent(&widgets, "from-rust", timeout).await?;
    expect_absent(&config_maps, "from-rust-config", Duration::from_secs(60)).await?;
    running.down(&cluster).await?;
    Ok(())
}

/// A cluster-wide "controller", as a test would run the one under test: every 50 ms it lists
/// the ConfigMaps labelled `isolation-demo` in every namespace and marks each it has not yet
/// marked with the annotation `reconciled-by/<id>`.
async fn marking_controller(client: kube::Client, id: &'static str) -> anyhow::Result<()> {
    use k8s_openapi::api::core::v1::ConfigMap;
    use kube::ResourceExt as _;
    let key = format!("reconciled-by/{id}");
    let all: Api<ConfigMap> = Api::all(client.clone());
    loop {
        let list = all
            .list(&kube::api::ListParams::default().labels("isolation-demo"))
            .await?;
        for cm in list {
            if cm.annotations().contains_key(&key) {
                continue;
            }
            let namespace = cm.namespace().unwrap_or_default();
            Api::<ConfigMap>::namespaced(client.clone(), &namespace)
                .patch(
                    &cm.name_any(),
                    &PatchParams::default(),
                    &Patch::Merge(json!({"metadata": {"annotations": {key.as_str(): "true"}}})),
                )
                .await?;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn labelled_config_map(name: &str) -> anyhow::Result<k8s_openapi::api::core::v1::ConfigMap> {
    Ok(serde_json::from_value(
        json!({"metadata": {"name": name, "labels": {"isolation-demo": "true"}}}),
    )?)
}

/// Why a cluster-wide controller needs a cluster of its own (docs/sharing.md): on one shared
/// cluster, another test's controller reconciles this test's objects — had this test's own
/// controller been broken, the other would have hidden it. On `private()` clusters it cannot.
#[tokio::test]
async fn cluster_wide_controllers_cross_reconcile_on_a_shared_cluster_and_not_on_private_ones() -> anyhow::Result<()> {
    use k8s_openapi::api::core::v1::ConfigMap;
    let deadline = Duration::from_secs(30);

    // The failure mode: test A's and test B's controllers on the process's shared cluster.
    let shared = kube_harness::shared().await?;
    let ns_a = shared.test_namespace("team-a").await?;
    let _a = kube_harness::spawn_guarded(marking_controller(shared.client().await?, "a"));
    let _b = kube_harness::spawn_guarded(marking_controller(shared.client().await?, "b"));
    ns_a.api::<ConfigMap>()
        .create(&PostParams::default(), &labelled_config_map("mine")?)
        .await?;
    let marked_by_other_test = json!({"metadata": {"annotations": {"reconciled-by/b": "true"}}});
    assert_eventually(&ns_a.api::<ConfigMap>(), "mine", &marked_by_other_test, deadline).await?;
    drop((_a, _b));

    // The remedy: each test's controller on a cluster of the test's own.
    let (mine, theirs) = (kube_harness::private().await?, kube_harness::private().await?);
    let _a = kube_harness::spawn_guarded(marking_controller(mine.client().await?, "a"));
    let _b = kube_harness::spawn_guarded(marking_controller(theirs.client().await?, "b"));
    let mine_api: Api<ConfigMap> = Api::namespaced(mine.client().await?, "default");
    let theirs_api: Api<ConfigMap> = Api::namespaced(theirs.client().await?, "default");
    mine_api
        .create(&PostParams::default(), &labelled_config_map("mine")?)
        .await?;
    theirs_api
        .create(&PostParams::default(), &labelled_config_map("theirs")?)
        .await?;
    let by = |id: &str| json!({"metadata": {"annotations": {format!("reconciled-by/{id}"): "true"}}});
    assert_eventually(&mine_api, "mine", &by("a"), deadline).await?;
    // B runs (it marked its own object) and yet never saw A's.
    assert_eventually(&theirs_api, "theirs", &by("b"), deadline).await?;
    let annotations = mine_api.get("mine").await?.metadata.annotations.unwrap_or_default();
    assert_eq!(
        annotations.keys().collect::<Vec<_>>(),
        ["reconciled-by/a"],
        "{annotations:?}"
    );
    Ok(())
}
