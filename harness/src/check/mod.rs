//! Reusable checks that return data fit for snapshots rather than booleans: a group/version's
//! resource list, its aggregated-discovery (v2) entry, a Table view, an authorization probe and
//! a CRUD round trip. kube-harness's own scenario tests are built from these, and so can yours.

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
