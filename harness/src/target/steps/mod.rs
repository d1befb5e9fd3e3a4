//! `steps:` of a target's `expectations.yaml`: what a controller does, over time. Each step
//! is one action — `apply`, `patch`, `delete` — or one assertion with a deadline — `assert`
//! (a partial object), `absent`, `condition`, `events` — run in order after the target is up;
//! the first failing step ends the list. Everything the steps applied is deleted afterwards,
//! while the backend still runs, so a controller's finalizers complete.
//!
//! ```yaml
//! steps:
//!   - name: a Widget is created          # optional; default: the action and the object
//!     apply:                             # one object or a list; server-side apply
//!       - {apiVersion: ops.example.com/v1, kind: Widget, metadata: {name: w1, namespace: default}, spec: {size: 2}}
//!   - apply: {file: steps/w2.yaml}       # or the documents of a file inside `steps/` (never a fixture)
//!   - assert:                            # every field given must match (lists: same length, by position)
//!       apiVersion: ops.example.com/v1
//!       kind: Widget
//!       metadata: {name: w1, namespace: default, finalizers: [widgets.ops.example.com/cleanup]}
//!       status: {phase: Ready, size: 2}
//!     timeoutSeconds: 30                 # default 30, at most 300
//!     snapshot: true                     # the redacted final object vs snapshots/step-<name>.snap
//!   - condition: {apiVersion: ops.example.com/v1, kind: Widget, name: w1, namespace: default, type: Ready, status: "True", reason: Reconciled}
//!   - patch: {apiVersion: ops.example.com/v1, kind: Widget, metadata: {name: w1, namespace: default}, spec: {size: 3}}
//!   - events: {regarding: {kind: Widget, name: w1, namespace: default}, reason: Reconciled, type: Normal, countAtLeast: 2}
//!   - delete: {apiVersion: ops.example.com/v1, kind: Widget, name: w1, namespace: default}
//!   - absent: {apiVersion: v1, kind: ConfigMap, name: w1-config, namespace: default}
//! ```
//!
//! `apply`, `patch` and `delete` are sent as the admin, or as `user` (with `groups`) or
//! `serviceAccount: namespace/name` given on the step.

use std::path::Path;
use std::time::Duration;

use serde_json::{Map, Value};

use super::load::{Document, LoadError};

/// The default deadline of an assertion.
pub const DEFAULT_STEP_TIMEOUT: Duration = Duration::from_secs(30);

/// The longest deadline a step may ask for: a verify run's budget for one wait.
pub const MAX_STEP_TIMEOUT: Duration = Duration::from_secs(300);

/// The directory name of step files (`apply: {file: steps/w2.yaml}`): never read as fixtures.
pub const STEP_FILES: &str = "steps";

/// The actions and assertions a step may be.
pub const STEP_KINDS: [&str; 7] = ["apply", "patch", "delete", "assert", "absent", "condition", "events"];

/// Fields any step may have beside its kind.
const COMMON: [&str; 6] = ["name", "timeoutSeconds", "user", "groups", "serviceAccount", "snapshot"];

/// An object named by `apiVersion`, `kind`, `name` and `namespace`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectRef {
    /// `apiVersion`.
    pub api_version: String,
    /// `kind`.
    pub kind: String,
    /// `metadata.name`.
    pub name: String,
    /// `metadata.namespace`, for namespaced objects.
    pub namespace: Option<String>,
}

impl ObjectRef {
    /// `Kind/namespace/name` or `Kind/name`.
    pub fn display(&self) -> String {
        match &self.namespace {
            Some(ns) => format!("{}/{ns}/{}", self.kind, self.name),
            None => format!("{}/{}", self.kind, self.name),
        }
    }
}

/// What a step does.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Action {
    /// Server-side apply these objects.
    Apply(Vec<Value>),
    /// Merge-patch the object (the rest of the document is the patch).
    Patch(ObjectRef, Value),
    /// Delete the object (without waiting).
    Delete(ObjectRef),
    /// Wait until the object matches the partial object.
    Assert(ObjectRef, Value),
    /// Wait until the object is gone.
    Absent(ObjectRef),
    /// Wait until the object has the condition.
    Condition(ObjectRef, ConditionRule),
    /// Wait until events about the object add up.
    Events(EventsRule),
}

/// Who sends a step's request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Identity {
    /// A user (client certificate, or impersonated).
    pub user: Option<String>,
    /// Its groups.
    pub groups: Vec<String>,
    /// Or a ServiceAccount `namespace/name`.
    pub service_account: Option<String>,
}

/// One step.
#[derive(Debug, Clone)]
pub struct Step {
    /// 1-based position in `steps:`.
    pub index: usize,
    /// Its name, given or made from the action.
    pub name: String,
    /// The action or assertion.
    pub action: Action,
    /// The assertion's deadline.
    pub timeout: Duration,
    /// Who sends `apply`, `patch` and `delete`.
    pub identity: Identity,
    /// Snapshot the final object of an `assert`.
    pub snapshot: bool,
}

impl Step {
    /// `step 3 (a Widget is created)`.
    pub fn describe(&self) -> String {
        format!("step {}: {}", self.index, self.name)
    }

    /// The snapshot file's stem: `step-<name>` with runs of other characters as `-`.
    pub fn snapshot_stem(&self) -> String {
        let mut stem = String::new();
        for c in self.name.chars() {
            if c.is_ascii_alphanumeric() {
                stem.push(c.to_ascii_lowercase());
            } else if !stem.ends_with('-') {
                stem.push('-');
            }
        }
        format!("step-{}", stem.trim_matches('-'))
    }
}

fn text(map: &Map<String, Value>, key: &str) -> Option<String> {
    map.get(key)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
}

/// An object's reference from `apiVersion`, `kind` and `metadata.name`/`.namespace` (a full
/// or partial object), or, with `flat`, from `name`/`namespace` at the top.
fn object_ref(value: &Value, flat: bool) -> Result<ObjectRef, String> {
    let map = value
        .as_object()
        .ok_or_else(|| format!("expected a mapping, got {value}"))?;
    let api_version = text(map, "apiVersion").ok_or("needs `apiVersion`")?;
    let kind = text(map, "kind").ok_or("needs `kind`")?;
    let meta = if flat {
        map
    } else {
        map.get("metadata")
            .and_then(Value::as_object)
            .ok_or("needs `metadata` with a `name`")?
    };
    let name = text(meta, "name").ok_or(if flat { "needs `name`" } else { "needs `metadata.name`" })?;
    Ok(ObjectRef {
        api_version,
        kind,
        name,
        namespace: text(meta, "namespace"),
    })
}

/// The objects of `apply: {file: steps/<name>.yaml}`: a path relative to the directory of the
/// expectations file, inside a directory named `steps` (which the loader never reads as
/// fixtures), with one or more documents.
fn objects_of_file(base: &Path, file: &Value) -> Result<Vec<Value>, String> {
    let relative = file
        .as_str()
        .ok_or_else(|| format!("`file` must be a path, got {file}"))?;
    let relative_path = Path::new(relative);
    let inside_steps = relative_path.is_relative()
        && !relative_path.components().any(|c| c == std::path::Component::ParentDir)
        && relative_path
            .parent()
            .is_some_and(|p| p.components().any(|c| c.as_os_str() == STEP_FILES));
    if !inside_steps {
        return Err(format!(
            "file {relative:?} must be inside a directory named `{STEP_FILES}/` next to the expectations file \
             (files there are step objects, never fixtures applied at bring-up)"
        ));
    }
    let path = base.join(relative_path);
    let read = |e: std::io::Error| format!("file {relative:?}: cannot read {}: {e}", path.display());
    let size = std::fs::metadata(&path).map_err(read)?.len();
    if size > super::sources::MAX_FILE_BYTES {
        return Err(format!(
            "file {relative:?} is {size} bytes, more than a step's objects need"
        ));
    }
    let text = std::fs::read_to_string(&path).map_err(read)?;
    let docs = super::load::parse_documents(&path, &text).map_err(|e| e.to_string())?;
    if docs.is_empty() {
        return Err(format!("file {relative:?} holds no object"));
    }
    Ok(docs.into_iter().map(|d| d.value).collect())
}

fn parse_step(index: usize, value: &Value, known: &[ObjectRef], base: &Path) -> Result<Step, String> {
    let map = value
        .as_object()
        .ok_or_else(|| format!("expected a mapping with one of {}", STEP_KINDS.join(", ")))?;
    let kinds: Vec<&str> = map
        .keys()
        .map(String::as_str)
        .filter(|k| STEP_KINDS.contains(k))
        .collect();
    if let Some(unknown) = map
        .keys()
        .find(|k| !STEP_KINDS.contains(&k.as_str()) && !COMMON.contains(&k.as_str()))
    {
        return Err(format!(
            "unknown field `{unknown}`: a step is one of {} (with {})",
            STEP_KINDS.join(", "),
            COMMON.join(", ")
        ));
    }
    let kind = match kinds.as_slice() {
        [one] => *one,
        [] => return Err(format!("no action: a step is one of {}", STEP_KINDS.join(", "))),
        several => return Err(format!("{} in one step: give each its own step", several.join(" and "))),
    };
    let body = &map[kind];
    let field = |e: String| format!("`{kind}`: {e}");
    let action = match kind {
        "apply" => {
            let objects = match body {
                Value::Array(items) => items.clone(),
                Value::Object(m) if m.len() == 1 && m.contains_key("file") => {
                    objects_of_file(base, &m["file"]).map_err(field)?
                }
                one => vec![one.clone()],
            };
            if objects.is_empty() {
                return Err(field("lists no object".into()));
            }
            for (i, o) in objects.iter().enumerate() {
                object_ref(o, false).map_err(|e| field(format!("object {}: {e}", i + 1)))?;
            }
            Action::Apply(objects)
        }
        "patch" => {
            let target = object_ref(body, false).map_err(field)?;
            let mut patch = body.clone();
            if let Some(m) = patch.as_object_mut() {
                m.remove("apiVersion");
                m.remove("kind");
            }
            Action::Patch(target, patch)
        }
        "delete" => Action::Delete(object_ref(body, true).map_err(field)?),
        "absent" => Action::Absent(object_ref(body, true).map_err(field)?),
        "assert" => Action::Assert(object_ref(body, false).map_err(field)?, body.clone()),
        "condition" => {
            let target = object_ref(body, true).map_err(field)?;
            let mut rule = body.clone();
            if let Some(m) = rule.as_object_mut() {
                for k in ["apiVersion", "kind", "name", "namespace"] {
                    m.remove(k);
                }
            }
            let rule: ConditionRule = serde_json::from_value(rule).map_err(|e| field(e.to_string()))?;
            Action::Condition(target, rule)
        }
        "events" => {
            let rule: EventsRule = serde_json::from_value(body.clone()).map_err(|e| field(e.to_string()))?;
            let r = &rule.regarding;
            let ns = rule.namespace();
            if !known
                .iter()
                .any(|k| k.kind == r.kind && k.name == r.name && k.namespace.as_deref().unwrap_or("default") == ns)
            {
                return Err(field(format!(
                    "regarding {}/{ns}/{}: no fixture and no earlier `apply` step creates it",
                    r.kind, r.name
                )));
            }
            Action::Events(rule)
        }
        _ => return Err(format!("unknown step kind {kind}")),
    };
    let timeout = match map.get("timeoutSeconds") {
        None => DEFAULT_STEP_TIMEOUT,
        Some(v) => {
            let secs = v
                .as_u64()
                .filter(|s| *s > 0)
                .ok_or_else(|| format!("`timeoutSeconds`: {v} is not a positive whole number of seconds"))?;
            let timeout = Duration::from_secs(secs);
            if timeout > MAX_STEP_TIMEOUT {
                return Err(format!(
                    "`timeoutSeconds`: {secs} is over the run's budget of {} s per step",
                    MAX_STEP_TIMEOUT.as_secs()
                ));
            }
            timeout
        }
    };
    let identity = Identity {
        user: text(map, "user"),
        groups: match map.get("groups") {
            None => Vec::new(),
            Some(g) => serde_json::from_value(g.clone()).map_err(|e| format!("`groups`: {e}"))?,
        },
        service_account: text(map, "serviceAccount"),
    };
    if identity.user.is_some() && identity.service_account.is_some() {
        return Err("names both a `user` and a `serviceAccount`; pick one".into());
    }
    if identity
        .service_account
        .as_deref()
        .is_some_and(|sa| sa.split_once('/').is_none_or(|(ns, n)| ns.is_empty() || n.is_empty()))
    {
        return Err("`serviceAccount` must be `namespace/name`".into());
    }
    let snapshot = match map.get("snapshot") {
        None => false,
        Some(Value::Bool(b)) => *b,
        Some(other) => return Err(format!("`snapshot`: {other} is not true or false")),
    };
    if snapshot && kind != "assert" {
        return Err("`snapshot` is for `assert` steps (the object they waited for)".into());
    }
    let name = text(map, "name").unwrap_or_else(|| match &action {
        Action::Apply(objects) => format!(
            "apply {}",
            objects
                .iter()
                .filter_map(|o| object_ref(o, false).ok())
                .map(|r| r.display())
                .collect::<Vec<_>>()
                .join(", ")
        ),
        Action::Patch(r, _) | Action::Delete(r) | Action::Assert(r, _) | Action::Absent(r) => {
            format!("{kind} {}", r.display())
        }
        Action::Condition(r, c) => format!("condition {} {}={}", r.display(), c.type_, c.status),
        Action::Events(rule) => format!("events {}", rule.describe()),
    });
    Ok(Step {
        index,
        name,
        action,
        timeout,
        identity,
        snapshot,
    })
}

/// A condition `status.conditions` must hold: its `type`, `status` and, if given, `reason`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct ConditionRule {
    /// The condition's type (`Ready`).
    #[serde(rename = "type")]
    pub type_: String,
    /// `True`, `False` or `Unknown`.
    pub status: String,
    /// The reason, when it matters.
    #[serde(default)]
    pub reason: Option<String>,
}

impl ConditionRule {
    /// A condition of `type_` with `status`, any reason.
    pub fn new(type_: impl Into<String>, status: impl Into<String>) -> Self {
        Self {
            type_: type_.into(),
            status: status.into(),
            reason: None,
        }
    }

    /// And this reason.
    #[must_use]
    pub fn with_reason(mut self, reason: impl Into<String>) -> Self {
        self.reason = Some(reason.into());
        self
    }
}

/// Events (`events.k8s.io/v1`, as kube-apiserver stores them) about one object.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[non_exhaustive]
pub struct EventsRule {
    /// The object the events are about (`regarding`): its kind, name and namespace.
    pub regarding: Regarding,
    /// The events' reason (`Reconciled`), any if unset.
    #[serde(default)]
    pub reason: Option<String>,
    /// `Normal` or `Warning`, any if unset.
    #[serde(default, rename = "type")]
    pub type_: Option<String>,
    /// How many occurrences at least, counting a series (`series.count`, or the deprecated
    /// count) as that many; default 1.
    #[serde(default = "one")]
    pub count_at_least: u32,
}

fn one() -> u32 {
    1
}

/// The object events are about.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[non_exhaustive]
pub struct Regarding {
    /// Its `apiVersion`, checked when given.
    #[serde(default)]
    pub api_version: Option<String>,
    /// Its kind.
    pub kind: String,
    /// Its name.
    pub name: String,
    /// Its namespace (where the events are); `default` if unset.
    #[serde(default)]
    pub namespace: Option<String>,
}

impl EventsRule {
    /// Events about the object `kind`/`name` (in namespace `default` unless
    /// [`in_namespace`](Self::in_namespace)), any reason and type, at least one.
    pub fn regarding(kind: impl Into<String>, name: impl Into<String>) -> Self {
        Self {
            regarding: Regarding {
                api_version: None,
                kind: kind.into(),
                name: name.into(),
                namespace: None,
            },
            reason: None,
            type_: None,
            count_at_least: 1,
        }
    }

    /// In this namespace.
    #[must_use]
    pub fn in_namespace(mut self, namespace: impl Into<String>) -> Self {
        self.regarding.namespace = Some(namespace.into());
        self
    }

    /// With this reason.
    #[must_use]
    pub fn with_reason(mut self, reason: impl Into<String>) -> Self {
        self.reason = Some(reason.into());
        self
    }

    /// Of this type (`Normal`, `Warning`).
    #[must_use]
    pub fn with_type(mut self, type_: impl Into<String>) -> Self {
        self.type_ = Some(type_.into());
        self
    }

    /// At least `count` occurrences.
    #[must_use]
    pub fn at_least(mut self, count: u32) -> Self {
        self.count_at_least = count;
        self
    }

    /// The namespace the events are in.
    pub fn namespace(&self) -> &str {
        self.regarding.namespace.as_deref().unwrap_or("default")
    }

    /// `Widget/w1 Normal Reconciled ×2`.
    pub fn describe(&self) -> String {
        format!(
            "{}/{}{}{} ×{}",
            self.regarding.kind,
            self.regarding.name,
            self.type_.as_ref().map(|t| format!(" {t}")).unwrap_or_default(),
            self.reason.as_ref().map(|r| format!(" {r}")).unwrap_or_default(),
            self.count_at_least
        )
    }
}

/// Read `steps:` of an Expectations document. `fixtures` are the target's objects (what an
/// `events` step may be about beside what earlier steps apply).
///
/// # Errors
/// [`LoadError::Invalid`] naming the document, the step's position and the field.
pub fn parse(doc: &Document, steps: &[Value], fixtures: &[ObjectRef]) -> Result<Vec<Step>, LoadError> {
    let base = doc.source.file.parent().unwrap_or_else(|| Path::new("."));
    let mut known = fixtures.to_vec();
    let mut out = Vec::new();
    for (i, value) in steps.iter().enumerate() {
        let step = parse_step(i + 1, value, &known, base).map_err(|problem| LoadError::Invalid {
            doc: doc.source.clone(),
            problem: format!("Expectations/{}: steps[{}] (step {}): {problem}", doc.name, i, i + 1),
        })?;
        if let Action::Apply(objects) = &step.action {
            known.extend(objects.iter().filter_map(|o| object_ref(o, false).ok()));
        }
        out.push(step);
    }
    let mut stems = std::collections::BTreeSet::new();
    for step in out.iter().filter(|s| s.snapshot) {
        if !stems.insert(step.snapshot_stem()) {
            return Err(LoadError::Invalid {
                doc: doc.source.clone(),
                problem: format!(
                    "Expectations/{}: step {}: another snapshotted step has the snapshot {}; give them different names",
                    doc.name,
                    step.index,
                    step.snapshot_stem()
                ),
            });
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests;
