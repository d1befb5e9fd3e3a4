//! Reusable checks that return data fit for snapshots rather than booleans: a group/version's
//! resource list, its aggregated-discovery (v2) entry, a Table view, an authorization probe and
//! a CRUD round trip. kube-harness's own scenario tests are built from these, and so can yours.
//!
//! Assertions over time — the engine of a target's `steps:` (see [`crate::target::steps`]) —
//! are here too, so a Rust test and a verify target say the same thing the same way:
//! [`assert_eventually`] (a partial object, see [`partial_match`]), [`expect_absent`],
//! [`expect_condition`] and [`expect_events`]. Each is a watch with a deadline: what already
//! holds answers after one list; on timeout the error ([`crate::Error::NotObserved`]) shows
//! the last object seen and a diff.
//!
//! ```no_run
//! # async fn wrapper() -> kube_harness::Result<()> {
//! use std::time::Duration;
//! use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind};
//! use kube_harness::check::{ConditionRule, EventsRule, assert_eventually, expect_absent, expect_condition, expect_events};
//! let cluster = kube_harness::shared().await?;
//! let client = cluster.client().await?;
//! let widgets: Api<DynamicObject> = Api::namespaced_with(
//!     client.clone(),
//!     "default",
//!     &ApiResource::from_gvk(&GroupVersionKind::gvk("ops.example.com", "v1", "Widget")),
//! );
//! let timeout = Duration::from_secs(30);
//! let ready = serde_json::json!({
//!     "metadata": {"finalizers": ["widgets.ops.example.com/cleanup"]},
//!     "status": {"phase": "Ready"},
//! });
//! assert_eventually(&widgets, "w1", &ready, timeout).await?;
//! expect_condition(&widgets, "w1", &ConditionRule::new("Ready", "True").with_reason("Reconciled"), timeout).await?;
//! let series = EventsRule::regarding("Widget", "w1").in_namespace("default").with_reason("Reconciled").at_least(2);
//! expect_events(&client, &series, timeout).await?;
//! widgets.delete("w1", &Default::default()).await?;
//! expect_absent(&widgets, "w1", timeout).await?;   // the operator removed its finalizer
//! # Ok(()) }
//! ```
//!
//! Inside, `verify`'s pipeline runs one way: [`verify_target`] brings the target up, the
//! probes (discovery, CRDs), the steps and the expectations (access, requests, CRUD,
//! FailedDiscoveryCheck) record their verdicts as [`CheckResult`]s, and the report (JUnit,
//! failure bundles) reads them; no stage imports one after it (`scripts/module-cycles`).
mod access;
mod compare;
mod eventually;
mod expect;
mod probes;
mod queries;
mod report;
mod requests;
mod result;
mod steps;
mod verify;

pub use compare::snapshot_path;
pub use eventually::{
    ConditionRule, EventsRule, Regarding, assert_eventually, expect_absent, expect_condition, expect_events,
    partial_diff, partial_match,
};
pub use queries::{
    CrudCase, aggregated_discovery_group, crud_round_trip, delete_and_get, outcome, probe_list, probe_list_once_bound,
    resource_list, retry_while_forbidden, status_record, table,
};
pub use report::{junit, remove_stale_bundle, write_failed_checks, write_failure_bundle};
pub use result::CheckResult;
pub use verify::{VerifyOptions, verify_target, verify_target_with};
