//! Running a target's `steps:` (see [`crate::target::steps`]) with the engine of
//! [`super::eventually`]: one check per step, the first failure ends the list with the diff and
//! the backend's log tail; afterwards everything the steps applied is deleted and waited for
//! while the backend still runs (a controller's finalizers must complete).

use std::time::{Duration, Instant};

use kube::api::{Api, DeleteParams, DynamicObject, Patch, PatchParams};
use kube::discovery::Scope;
use serde_json::Value;

use super::result::Recorder;
use crate::Cluster;
use crate::target::apply::{self, Applied};
use crate::target::steps::{Action, ObjectRef, Step};
use crate::target::{Document, RunningTarget, Target};

/// How long a step waits for its kind to be served (a CRD applied by the target just before).
const DISCOVERY_PATIENCE: Duration = Duration::from_secs(10);

/// How long the clean-up after the steps waits for what it deleted to be gone.
const CLEANUP_TIMEOUT: Duration = Duration::from_secs(30);

/// Lines of the backend's log shown with a failed step.
const LOG_TAIL: usize = 20;

type Outcome = std::result::Result<String, String>;

/// The `Api` of the object `r` names, as `client`.
async fn api_for(client: &kube::Client, r: &ObjectRef) -> std::result::Result<Api<DynamicObject>, String> {
    let (resource, scope) = apply::resolve_kind(client, &r.api_version, &r.kind, DISCOVERY_PATIENCE, || {
        format!("{} ({})", r.display(), r.api_version)
    })
    .await
    .map_err(|e| e.to_string())?;
    Ok(match scope {
        Scope::Namespaced => {
            Api::namespaced_with(client.clone(), r.namespace.as_deref().unwrap_or("default"), &resource)
        }
        Scope::Cluster => Api::all_with(client.clone(), &resource),
    })
}

/// Volatile values anywhere in a controller's object: the metadata redactions, every `uid`
/// (owner references) and every RFC 3339 timestamp (conditions' `lastTransitionTime`).
fn redact_volatile(value: &mut Value) {
    crate::snapshot::redact(value);
    fn walk(value: &mut Value) {
        match value {
            Value::Object(map) => {
                for (key, v) in map.iter_mut() {
                    if key == "uid" && v.is_string() {
                        *v = "[uid]".into();
                    } else {
                        walk(v);
                    }
                }
            }
            Value::Array(items) => items.iter_mut().for_each(walk),
            Value::String(s) if looks_like_timestamp(s) => *value = "[timestamp]".into(),
            _ => {}
        }
    }
    walk(value);
}

fn looks_like_timestamp(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() >= 20
        && b[4] == b'-'
        && b[7] == b'-'
        && b[10] == b'T'
        && b[13] == b':'
        && s.ends_with('Z')
        && b[..4].iter().all(u8::is_ascii_digit)
}

async fn run_step(
    cluster: &Cluster,
    target: &Target,
    step: &Step,
    created: &mut Vec<Applied>,
    update: bool,
) -> Outcome {
    let id = &step.identity;
    let client =
        super::queries::client_as(cluster, id.user.as_deref(), &id.groups, id.service_account.as_deref()).await?;
    match &step.action {
        Action::Apply(objects) => {
            let source = target
                .expectations
                .as_ref()
                .and_then(|e| e.source.clone())
                .unwrap_or_else(|| crate::target::Source {
                    file: target.dir.join("expectations.yaml"),
                    index: 0,
                });
            let mut names = Vec::new();
            for object in objects {
                let doc = Document::from_value(source.clone(), object.clone()).map_err(|e| e.to_string())?;
                let applied = apply::apply_one(&client, &doc, DISCOVERY_PATIENCE)
                    .await
                    .map_err(|e| e.to_string())?;
                names.push(applied.display.clone());
                if !created.iter().any(|c| c.display == applied.display) {
                    created.push(applied);
                }
            }
            Ok(format!("applied {}", names.join(", ")))
        }
        Action::Patch(r, patch) => {
            let api = api_for(&client, r).await?;
            api.patch(&r.name, &PatchParams::default(), &Patch::Merge(patch))
                .await
                .map_err(|e| format!("patching {}: {e}", r.display()))?;
            Ok(format!("patched {}", r.display()))
        }
        Action::Delete(r) => {
            let api = api_for(&client, r).await?;
            api.delete(&r.name, &DeleteParams::default())
                .await
                .map_err(|e| format!("deleting {}: {e}", r.display()))?;
            Ok(format!("deleted {}", r.display()))
        }
        Action::Assert(r, expected) => {
            let api = api_for(&client, r).await?;
            let found = super::eventually::assert_eventually(&api, &r.name, expected, step.timeout)
                .await
                .map_err(|e| e.to_string())?;
            if step.snapshot {
                let mut value = serde_json::to_value(&found).map_err(|e| e.to_string())?;
                redact_volatile(&mut value);
                let path = target
                    .dir
                    .join("snapshots")
                    .join(format!("{}.snap", step.snapshot_stem()));
                super::compare::compare_snapshot(&path, &value, update)
            } else {
                Ok(format!("{} matches", r.display()))
            }
        }
        Action::Absent(r) => {
            let api = api_for(&client, r).await?;
            super::eventually::expect_absent(&api, &r.name, step.timeout)
                .await
                .map_err(|e| e.to_string())?;
            Ok(format!("{} is gone", r.display()))
        }
        Action::Condition(r, rule) => {
            let api = api_for(&client, r).await?;
            super::eventually::expect_condition(&api, &r.name, rule, step.timeout)
                .await
                .map_err(|e| e.to_string())?;
            Ok(format!("{} has {}={}", r.display(), rule.type_, rule.status))
        }
        Action::Events(rule) => {
            let events = super::eventually::expect_events(&client, rule, step.timeout)
                .await
                .map_err(|e| e.to_string())?;
            Ok(format!(
                "{} event object(s) about {}",
                events.len(),
                rule.regarding.name
            ))
        }
    }
}

/// `text` without terminal escape sequences (colours: many operators log through
/// tracing-subscriber's ANSI formatter even into a file).
fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' && chars.peek() == Some(&'[') {
            chars.next();
            // Parameters and intermediates, up to the final byte (`@`..=`~`).
            for c in chars.by_ref() {
                if ('@'..='~').contains(&c) {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// What the backend logged last, to show beside a failed step.
fn backend_log(running: &RunningTarget) -> String {
    match running.backend() {
        Some(backend) => format!(
            "\nthe backend's log ({}), last lines:\n{}",
            backend.log().display(),
            strip_ansi(&backend.log_tail(LOG_TAIL))
        ),
        None if running.backend_in_cluster() => {
            "\n(the backend runs in the cluster: see its pod's log in the failure bundle)".into()
        }
        None => String::new(),
    }
}

/// Run `steps` in order; stop at the first failure. Then delete what they applied, while the
/// backend runs, and wait for it to be gone.
pub(super) async fn run(
    rec: &mut Recorder,
    cluster: &Cluster,
    target: &Target,
    running: &RunningTarget,
    steps: &[Step],
    update: bool,
) {
    let mut created = Vec::new();
    for step in steps {
        let t = Instant::now();
        let outcome = run_step(cluster, target, step, &mut created, update)
            .await
            .map_err(|e| format!("{e}{}", backend_log(running)));
        if !rec.record(step.describe(), t, outcome) {
            if step.index < steps.len() {
                tracing::info!(target = %target.name, "steps after step {} not run", step.index);
            }
            break;
        }
    }
    if created.is_empty() {
        return;
    }
    let t = Instant::now();
    let outcome = match cluster.client().await {
        Err(e) => Err(e.to_string()),
        Ok(admin) => {
            let deleted = apply::delete_all(&admin, &created).await;
            match apply::wait_gone(&admin, &deleted, CLEANUP_TIMEOUT).await {
                Ok(()) => Ok(format!("{} object(s) deleted and gone", created.len())),
                Err(e) => Err(format!(
                    "{e}: the backend is still running, so a finalizer left is one it does not remove{}",
                    backend_log(running)
                )),
            }
        }
    };
    rec.record("steps: what they applied is deleted and gone", t, outcome);
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn colours_are_taken_out_of_a_log_tail() {
        let line = "\u{1b}[2m2026-12-04T15:06:00Z\u{1b}[0m \u{1b}[33m WARN\u{1b}[0m reconcile failed";
        assert_eq!(strip_ansi(line), "2026-12-04T15:06:00Z  WARN reconcile failed");
    }

    #[test]
    fn volatile_values_of_a_controllers_object_are_redacted() {
        let mut object = json!({
            "metadata": {"name": "w1", "uid": "1-2", "ownerReferences": [{"kind": "Widget", "uid": "3-4"}]},
            "status": {"conditions": [{"type": "Ready", "lastTransitionTime": "2026-12-04T14:00:00Z"}], "phase": "Ready"}
        });
        redact_volatile(&mut object);
        assert_eq!(
            object,
            json!({
                "metadata": {"name": "w1", "uid": "[uid]", "ownerReferences": [{"kind": "Widget", "uid": "[uid]"}]},
                "status": {"conditions": [{"type": "Ready", "lastTransitionTime": "[timestamp]"}], "phase": "Ready"}
            })
        );
    }
}
