//! Assertions over time: "eventually this object looks like that", "eventually it is gone",
//! "eventually it has this condition", "eventually these events were recorded about it". The
//! engine behind the `steps:` of a target's `expectations.yaml`, and public for Rust tests, so
//! both say the same thing the same way.
//!
//! Each wait is a watch (list, then watch from that list's resourceVersion) with a deadline:
//! what already holds answers after the first list, one round trip; nothing sleeps. On timeout
//! the error shows the last object seen and a diff against what was expected.
//!
//! A partial object matches when every field it gives matches: mappings by key (other keys of
//! the object are ignored), lists element by element with the same length (as kuttl and
//! chainsaw match them), scalars by equality.
//!
//! (The example is in the [`check`](super) module's documentation.)

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::time::Duration;

use futures::StreamExt as _;
use k8s_openapi::api::events::v1::Event;
use kube::runtime::watcher;
use kube::{Api, Client, Resource, ResourceExt as _};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::error::{Error, Result};
pub use crate::target::steps::{ConditionRule, EventsRule, Regarding};

/// Whether `actual` holds every field `expected` gives: mappings by key (extra keys in
/// `actual` are fine), lists element by element with the same length, scalars equal.
///
/// # Errors
/// The first difference: its path (`.status.conditions[0].status`) and both values.
///
/// ```
/// use serde_json::json;
/// let actual = json!({"metadata": {"name": "w1", "labels": {"a": "1"}}, "status": {"phase": "Ready"}});
/// assert!(kube_harness::check::partial_match(&json!({"status": {"phase": "Ready"}}), &actual).is_ok());
/// let err = kube_harness::check::partial_match(&json!({"status": {"phase": "Failed"}}), &actual).unwrap_err();
/// assert_eq!(err, r#".status.phase: expected "Failed", got "Ready""#);
/// ```
pub fn partial_match(expected: &Value, actual: &Value) -> std::result::Result<(), String> {
    matches_at(expected, actual, &mut String::new())
}

fn matches_at(expected: &Value, actual: &Value, path: &mut String) -> std::result::Result<(), String> {
    let at = |path: &str| {
        if path.is_empty() {
            ".".to_owned()
        } else {
            path.to_owned()
        }
    };
    match (expected, actual) {
        (Value::Object(want), Value::Object(got)) => {
            for (key, value) in want {
                let len = path.len();
                path.push('.');
                path.push_str(key);
                match got.get(key) {
                    Some(found) => matches_at(value, found, path)?,
                    None if value.is_null() => {}
                    None => return Err(format!("{}: expected {}, got nothing", at(path), short(value))),
                }
                path.truncate(len);
            }
            Ok(())
        }
        (Value::Array(want), Value::Array(got)) => {
            if want.len() != got.len() {
                return Err(format!(
                    "{}: expected a list of {} items, got {}: {}",
                    at(path),
                    want.len(),
                    got.len(),
                    short(actual)
                ));
            }
            for (i, (w, g)) in want.iter().zip(got).enumerate() {
                let len = path.len();
                path.push_str(&format!("[{i}]"));
                matches_at(w, g, path)?;
                path.truncate(len);
            }
            Ok(())
        }
        (want, got) if want == got => Ok(()),
        // 1 and 1.0 are the same number in a manifest.
        (Value::Number(a), Value::Number(b)) if a.as_f64() == b.as_f64() => Ok(()),
        (want, got) => Err(format!("{}: expected {}, got {}", at(path), short(want), short(got))),
    }
}

fn short(value: &Value) -> String {
    let text = value.to_string();
    if text.chars().count() > 200 {
        format!("{}…", text.chars().take(200).collect::<String>())
    } else {
        text
    }
}

/// `actual` cut down to the shape of `expected` (only the keys it gives, recursively; lists of
/// a different length kept whole), so a diff shows what matters.
fn prune(expected: &Value, actual: &Value) -> Value {
    match (expected, actual) {
        (Value::Object(want), Value::Object(got)) => Value::Object(
            want.iter()
                .filter_map(|(k, w)| got.get(k).map(|g| (k.clone(), prune(w, g))))
                .collect(),
        ),
        (Value::Array(want), Value::Array(got)) if want.len() == got.len() => {
            Value::Array(want.iter().zip(got).map(|(w, g)| prune(w, g)).collect())
        }
        (_, got) => got.clone(),
    }
}

fn yaml(value: &Value) -> String {
    serde_saphyr::to_string(value).unwrap_or_else(|_| format!("{value:#}\n"))
}

/// A unified diff of `expected` against `actual` cut down to `expected`'s fields (`-` lines
/// are expected, `+` lines what the object had), in YAML.
pub fn partial_diff(expected: &Value, actual: &Value) -> String {
    let (want, got) = (yaml(expected), yaml(&prune(expected, actual)));
    similar::TextDiff::from_lines(&want, &got)
        .unified_diff()
        .context_radius(3)
        .header("expected", "actual")
        .to_string()
}

/// Every field an object must have, in JSON; see [`partial_match`].
enum Verdict<T> {
    Holds(T),
    /// Not yet, and why (shown when the wait times out).
    NotYet(String),
}

/// Watch `api` (narrowed by `config`) until `judge` holds over the objects it has, or
/// `timeout`. The first judgement follows the first list.
async fn watch_until<K, T>(
    api: Api<K>,
    config: watcher::Config,
    what: &str,
    timeout: Duration,
    mut judge: impl FnMut(&BTreeMap<(String, String), K>) -> Verdict<T>,
) -> Result<T>
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + 'static,
{
    let mut last = "nothing was listed yet".to_owned();
    let mut store: BTreeMap<(String, String), K> = BTreeMap::new();
    let mut init: BTreeMap<(String, String), K> = BTreeMap::new();
    let mut initializing = true;
    let key = |o: &K| (o.namespace().unwrap_or_default(), o.name_any());
    let waited = tokio::time::timeout(timeout, async {
        let mut stream = std::pin::pin!(watcher(api, config));
        while let Some(event) = stream.next().await {
            match event {
                Ok(watcher::Event::Init) => {
                    init.clear();
                    initializing = true;
                }
                Ok(watcher::Event::InitApply(o)) => {
                    init.insert(key(&o), o);
                }
                Ok(watcher::Event::InitDone) => {
                    store = std::mem::take(&mut init);
                    initializing = false;
                }
                Ok(watcher::Event::Apply(o)) => {
                    store.insert(key(&o), o);
                }
                Ok(watcher::Event::Delete(o)) => {
                    store.remove(&key(&o));
                }
                Err(e) => {
                    last = format!("the watch failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            }
            if initializing {
                continue;
            }
            match judge(&store) {
                Verdict::Holds(t) => return Some(t),
                Verdict::NotYet(why) => last = why,
            }
        }
        None
    })
    .await;
    match waited {
        Ok(Some(t)) => Ok(t),
        Ok(None) | Err(_) => Err(Error::NotObserved {
            what: what.to_owned(),
            timeout,
            last,
        }),
    }
}

fn by_name(name: &str) -> watcher::Config {
    watcher::Config::default().fields(&format!("metadata.name={name}"))
}

fn to_json<K: Serialize>(object: &K) -> Value {
    serde_json::to_value(object).unwrap_or(Value::Null)
}

/// Wait until object `name` of `api` matches the partial object `expected` (see
/// [`partial_match`]); return it. Answers after one list when it already matches. A top-level
/// `apiVersion` and `kind` in `expected` are not compared: they name the object, which `api`
/// already selects (and lists omit them from built-in objects).
///
/// # Errors
/// [`Error::NotObserved`] at `timeout`, with the last object seen and a diff against
/// `expected` (or "never existed").
pub async fn assert_eventually<K>(api: &Api<K>, name: &str, expected: &Value, timeout: Duration) -> Result<K>
where
    K: Resource + Clone + DeserializeOwned + Serialize + Debug + Send + 'static,
{
    let what = format!("{name} to match the expected fields");
    let mut expected = expected.clone();
    if let Some(map) = expected.as_object_mut() {
        map.remove("apiVersion");
        map.remove("kind");
    }
    let expected = &expected;
    watch_until(api.clone(), by_name(name), &what, timeout, |objects| {
        match objects.values().find(|o| o.name_any() == name) {
            None => Verdict::NotYet(format!("{name} does not exist")),
            Some(o) => {
                let actual = to_json(o);
                match partial_match(expected, &actual) {
                    Ok(()) => Verdict::Holds(o.clone()),
                    Err(first) => Verdict::NotYet(format!(
                        "{first}\ndiff (- expected, + last seen):\n{}",
                        partial_diff(expected, &actual)
                    )),
                }
            }
        }
    })
    .await
}

/// Wait until object `name` of `api` is gone (or never was); deleting it is the caller's.
///
/// # Errors
/// [`Error::NotObserved`] at `timeout`, naming the finalizers still on the object and its
/// deletion timestamp.
pub async fn expect_absent<K>(api: &Api<K>, name: &str, timeout: Duration) -> Result<()>
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + 'static,
{
    let what = format!("{name} to be gone");
    watch_until(api.clone(), by_name(name), &what, timeout, |objects| {
        match objects.values().find(|o| o.name_any() == name) {
            None => Verdict::Holds(()),
            Some(o) => Verdict::NotYet(describe_presence(o)),
        }
    })
    .await
}

/// One line on why an object is still there.
pub(crate) fn describe_presence<K: Resource>(o: &K) -> String {
    let meta = o.meta();
    let finalizers = meta.finalizers.clone().unwrap_or_default();
    match (&meta.deletion_timestamp, finalizers.is_empty()) {
        (Some(_), false) => format!(
            "{} is being deleted but still has finalizers {finalizers:?}: whatever added them (its controller) \
             must remove them",
            o.name_any()
        ),
        (Some(_), true) => format!("{} is being deleted", o.name_any()),
        (None, _) => format!(
            "{} still exists and is not being deleted (ownerReferences: {:?})",
            o.name_any(),
            meta.owner_references
                .iter()
                .flatten()
                .map(|r| format!("{}/{}", r.kind, r.name))
                .collect::<Vec<_>>()
        ),
    }
}

/// Whether `object` has the condition `rule`; why not if it does not.
fn judge_condition(rule: &ConditionRule, object: &Value) -> std::result::Result<(), String> {
    let conditions = object
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let Some(found) = conditions.iter().find(|c| c["type"] == rule.type_.as_str()) else {
        let types: Vec<&str> = conditions.iter().filter_map(|c| c["type"].as_str()).collect();
        return Err(format!(
            "no condition of type {:?} in status.conditions (types there: {types:?})",
            rule.type_
        ));
    };
    let status_ok = found["status"] == rule.status.as_str();
    let reason_ok = rule.reason.as_ref().is_none_or(|r| found["reason"] == r.as_str());
    if status_ok && reason_ok {
        Ok(())
    } else {
        Err(format!(
            "condition {:?} is status={} reason={} message={} (expected status={:?}{})",
            rule.type_,
            found["status"],
            found["reason"],
            found["message"],
            rule.status,
            rule.reason
                .as_ref()
                .map(|r| format!(" reason={r:?}"))
                .unwrap_or_default()
        ))
    }
}
/// Wait until object `name` of `api` has the condition `rule` in `status.conditions`.
///
/// # Errors
/// [`Error::NotObserved`] at `timeout`, with the condition last seen (or the types there).
pub async fn expect_condition<K>(api: &Api<K>, name: &str, rule: &ConditionRule, timeout: Duration) -> Result<K>
where
    K: Resource + Clone + DeserializeOwned + Serialize + Debug + Send + 'static,
{
    let what = format!("{name} to have condition {}={}", rule.type_, rule.status);
    watch_until(api.clone(), by_name(name), &what, timeout, |objects| {
        match objects.values().find(|o| o.name_any() == name) {
            None => Verdict::NotYet(format!("{name} does not exist")),
            Some(o) => match judge_condition(rule, &to_json(o)) {
                Ok(()) => Verdict::Holds(o.clone()),
                Err(why) => Verdict::NotYet(why),
            },
        }
    })
    .await
}

fn about(rule: &EventsRule, event: &Event) -> bool {
    let Some(r) = &event.regarding else { return false };
    r.kind.as_deref() == Some(rule.regarding.kind.as_str())
        && r.name.as_deref() == Some(rule.regarding.name.as_str())
        && rule
            .regarding
            .api_version
            .as_ref()
            .is_none_or(|v| r.api_version.as_deref() == Some(v.as_str()))
}

fn selects(rule: &EventsRule, event: &Event) -> bool {
    about(rule, event)
        && rule
            .reason
            .as_ref()
            .is_none_or(|r| event.reason.as_deref() == Some(r.as_str()))
        && rule
            .type_
            .as_ref()
            .is_none_or(|t| event.type_.as_deref() == Some(t.as_str()))
}

/// How many times an event happened: its series count, else the deprecated count, else 1.
fn occurrences(event: &Event) -> u32 {
    event
        .series
        .as_ref()
        .map(|s| s.count)
        .or(event.deprecated_count)
        .map_or(1, |c| u32::try_from(c).unwrap_or(0))
}

/// Wait until the events about `rule.regarding` (with its reason and type) add up to at least
/// `rule.count_at_least` occurrences; return them.
///
/// # Errors
/// [`Error::NotObserved`] at `timeout`, listing the events about the object that were there.
pub async fn expect_events(client: &Client, rule: &EventsRule, timeout: Duration) -> Result<Vec<Event>> {
    let api: Api<Event> = Api::namespaced(client.clone(), rule.namespace());
    let what = format!("events {}", rule.describe());
    watch_until(api, watcher::Config::default(), &what, timeout, |events| {
        let selected: Vec<Event> = events.values().filter(|e| selects(rule, e)).cloned().collect();
        let count: u32 = selected.iter().map(occurrences).sum();
        if count >= rule.count_at_least {
            return Verdict::Holds(selected);
        }
        let about: Vec<String> = events
            .values()
            .filter(|e| about(rule, e))
            .map(|e| {
                format!(
                    "{} {} ×{} by {}: {}",
                    e.type_.as_deref().unwrap_or("?"),
                    e.reason.as_deref().unwrap_or("?"),
                    occurrences(e),
                    e.reporting_controller.as_deref().unwrap_or("?"),
                    e.note.as_deref().unwrap_or_default()
                )
            })
            .collect();
        Verdict::NotYet(if about.is_empty() {
            format!(
                "no events about {}/{} in {}",
                rule.regarding.kind,
                rule.regarding.name,
                rule.namespace()
            )
        } else {
            format!(
                "{count} matching occurrence(s); the events about {}/{}:\n  {}",
                rule.regarding.kind,
                rule.regarding.name,
                about.join("\n  ")
            )
        })
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_partial_object_matches_by_key_and_lists_by_position() {
        let actual = json!({
            "metadata": {"name": "w1", "finalizers": ["a/b"]},
            "status": {"conditions": [{"type": "Ready", "status": "True", "reason": "Done"}], "size": 3}
        });
        assert_eq!(partial_match(&json!({"status": {"size": 3.0}}), &actual), Ok(()));
        assert_eq!(
            partial_match(
                &json!({"status": {"conditions": [{"type": "Ready", "status": "True"}]}}),
                &actual
            ),
            Ok(())
        );
        assert_eq!(
            partial_match(&json!({"metadata": {"finalizers": []}}), &actual),
            Err(r#".metadata.finalizers: expected a list of 0 items, got 1: ["a/b"]"#.to_owned())
        );
        assert_eq!(
            partial_match(&json!({"status": {"conditions": [{"status": "False"}]}}), &actual),
            Err(r#".status.conditions[0].status: expected "False", got "True""#.to_owned())
        );
        assert_eq!(
            partial_match(&json!({"spec": {"x": 1}}), &actual),
            Err(r#".spec: expected {"x":1}, got nothing"#.to_owned())
        );
        // null: the field must be absent (or null).
        assert_eq!(partial_match(&json!({"spec": null}), &actual), Ok(()));
    }

    #[test]
    fn the_diff_shows_only_the_expected_fields() {
        let actual = json!({"metadata": {"name": "w1", "uid": "x"}, "status": {"phase": "Pending", "other": 1}});
        let diff = partial_diff(&json!({"status": {"phase": "Ready"}}), &actual);
        assert!(diff.contains("-  phase: Ready"), "{diff}");
        assert!(diff.contains("+  phase: Pending"), "{diff}");
        assert!(!diff.contains("uid") && !diff.contains("other"), "{diff}");
    }

    #[test]
    fn a_condition_rule_names_what_it_found() {
        let object = json!({"status": {"conditions": [{"type": "Ready", "status": "False", "reason": "Waiting"}]}});
        assert!(judge_condition(&ConditionRule::new("Ready", "False"), &object).is_ok());
        let err = judge_condition(&ConditionRule::new("Ready", "True"), &object)
            .err()
            .unwrap_or_default();
        assert!(err.contains("status=\"False\" reason=\"Waiting\""), "{err}");
        let err = judge_condition(&ConditionRule::new("Synced", "True"), &object)
            .err()
            .unwrap_or_default();
        assert!(err.contains("types there: [\"Ready\"]"), "{err}");
    }
}
