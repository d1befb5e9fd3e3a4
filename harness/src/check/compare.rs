//! Answers compared with the snapshots stored in a target directory (`--update` writes them
//! for review). A leaf of `check/`.

use std::path::{Path, PathBuf};

use serde_json::Value;

/// The snapshot file for one object's round trip.
pub fn snapshot_path(target_dir: &Path, object: &Value) -> PathBuf {
    let kind = object["kind"].as_str().unwrap_or("object");
    let name = object
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or("unnamed");
    target_dir.join("snapshots").join(format!("{kind}-{name}.snap"))
}

/// Compare `answer` (pretty JSON) with the snapshot at `path`: the same passes; missing or
/// different fails saying how to accept it, or, with `update`, is written for review.
pub(super) fn compare_snapshot(path: &Path, answer: &Value, update: bool) -> std::result::Result<String, String> {
    let text = serde_json::to_string_pretty(answer).map_err(|e| e.to_string())? + "\n";
    let stored = std::fs::read_to_string(path).ok();
    match stored {
        Some(old) if old == text => Ok(format!("same as {}", path.display())),
        _ if update => {
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent).map_err(|e| format!("{}: {e}", parent.display()))?;
            }
            std::fs::write(path, &text).map_err(|e| format!("{}: {e}", path.display()))?;
            Ok(format!("wrote {} (review it, then commit)", path.display()))
        }
        None => Err(format!(
            "no snapshot {}: run `kube-harness verify --update` to write it, then review it",
            path.display()
        )),
        Some(old) => Err(format!(
            "differs from {} at {}; run `kube-harness verify --update` to accept the new answers",
            path.display(),
            first_difference(&old, &text)
        )),
    }
}

/// `line N: expected … got …` for the first differing line.
fn first_difference(old: &str, new: &str) -> String {
    let mut old_lines = old.lines();
    let mut new_lines = new.lines();
    for n in 1.. {
        match (old_lines.next(), new_lines.next()) {
            (Some(a), Some(b)) if a == b => {}
            (a, b) => {
                return format!(
                    "line {n}: expected {:?}, got {:?}",
                    a.unwrap_or("<end>").trim(),
                    b.unwrap_or("<end>").trim()
                );
            }
        }
    }
    String::new()
}
