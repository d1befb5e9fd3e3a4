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
