//! Normalising what the API answered so snapshots keep only what a regression should catch.
//! Redact what is volatile (ports, uids, resourceVersions, timestamps) and nothing else:
//! reasons, messages and codes stay.

/// Replace every `host:port` port number on loopback names (`127.0.0.1`, `localhost`,
/// `[::1]`) with `[port]`. Aggregator messages such as
/// `failing or missing response from https://localhost:40123/apis/...` become stable.
pub fn redact_ports(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    'outer: while !rest.is_empty() {
        for host in ["127.0.0.1:", "localhost:", "[::1]:"] {
            if let Some(after) = rest.strip_prefix(host) {
                let digits = after.chars().take_while(char::is_ascii_digit).count();
                if digits > 0 {
                    out.push_str(host);
                    out.push_str("[port]");
                    rest = &after[digits..];
                    continue 'outer;
                }
            }
        }
        let mut chars = rest.chars();
        if let Some(c) = chars.next() {
            out.push(c);
        }
        rest = chars.as_str();
    }
    out
}

/// Object fields that change on every run, with what replaces them. Applied by [`redact`] to
/// any `metadata` mapping, at any depth (items of lists, objects inside records).
pub const OBJECT_REDACTIONS: [(&str, &str); 4] = [
    ("uid", "[uid]"),
    ("resourceVersion", "[resourceVersion]"),
    ("creationTimestamp", "[timestamp]"),
    ("managedFields", "[managedFields]"),
];

/// Replace the volatile fields of every `metadata` mapping inside `value` (see
/// [`OBJECT_REDACTIONS`]); everything else is kept.
pub fn redact(value: &mut serde_json::Value) {
    match value {
        serde_json::Value::Object(map) => {
            if let Some(serde_json::Value::Object(meta)) = map.get_mut("metadata") {
                for (key, replacement) in OBJECT_REDACTIONS {
                    if let Some(v) = meta.get_mut(key) {
                        *v = (*replacement).into();
                    }
                }
            }
            map.values_mut().for_each(redact);
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(redact),
        _ => {}
    }
}

/// insta settings with the harness's redactions as filters, for snapshots of text, YAML or
/// JSON: loopback ports (`127.0.0.1:[port]`), UIDs (`[uid]`), RFC 3339 timestamps
/// (`[timestamp]`), `resourceVersion` values (`[resourceVersion]`) and the random suffix of
/// the token volume the ServiceAccount admission plugin adds to Pods
/// (`kube-api-access-[suffix]`). A test namespace's
/// [`crate::cluster::TestNamespace::insta_settings`] adds its name. Needs the `insta` feature.
///
/// ```no_run
/// # fn wrapper() {
/// let _scope = kube_harness::snapshot::insta_settings().bind_to_scope();
/// insta::assert_snapshot!("dial tcp 127.0.0.1:40123: connection refused");
/// // stored as: dial tcp 127.0.0.1:[port]: connection refused
/// # }
/// ```
#[cfg(feature = "insta")]
pub fn insta_settings() -> insta::Settings {
    let mut settings = insta::Settings::clone_current();
    for (pattern, replacement) in INSTA_FILTERS {
        settings.add_filter(pattern, replacement);
    }
    settings
}

/// The regular expressions behind `insta_settings` (the `insta` feature), with what replaces
/// each match.
pub const INSTA_FILTERS: [(&str, &str); 5] = [
    (r"(127\.0\.0\.1|localhost|\[::1\]):\d+", "$1:[port]"),
    (
        r"\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b",
        "[uid]",
    ),
    (
        r"\b\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)",
        "[timestamp]",
    ),
    (r#"(resourceVersion"?:\s*)"?\d+"?"#, "$1[resourceVersion]"),
    (r"\bkube-api-access-[a-z0-9]{5}\b", "kube-api-access-[suffix]"),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_is_redacted_at_any_depth_and_nothing_else() {
        let mut v = serde_json::json!({"created": {"metadata": {"name": "a", "uid": "x", "resourceVersion": "5"}},
                                        "items": [{"metadata": {"creationTimestamp": "t"}, "uid": "kept"}]});
        redact(&mut v);
        assert_eq!(
            v,
            serde_json::json!({"created": {"metadata": {"name": "a", "uid": "[uid]", "resourceVersion": "[resourceVersion]"}},
                                          "items": [{"metadata": {"creationTimestamp": "[timestamp]"}, "uid": "kept"}]})
        );
    }

    #[test]
    fn loopback_ports_are_redacted_and_nothing_else() {
        assert_eq!(
            redact_ports(
                "from https://localhost:40123/apis/g/v: dial tcp 127.0.0.1:40123: refused; [::1]:5 x:9 localhost:"
            ),
            "from https://localhost:[port]/apis/g/v: dial tcp 127.0.0.1:[port]: refused; [::1]:[port] x:9 localhost:"
        );
    }
}
