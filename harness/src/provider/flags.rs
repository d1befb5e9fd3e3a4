//! kube-apiserver flags and feature gates, one way for every provider that starts a cluster:
//! [`StartOptions::with_apiserver_arg`](super::StartOptions::with_apiserver_arg) and
//! [`with_feature_gate`](super::StartOptions::with_feature_gate), the CLI's `--apiserver-arg` and
//! `--feature-gates`, and the variables `KUBE_HARNESS_APISERVER_ARGS` and
//! `KUBE_HARNESS_FEATURE_GATES`. The local plane passes them to its processes (gates to
//! kube-apiserver, kube-controller-manager and kube-scheduler alike); kind gets them through
//! its cluster config (`featureGates`, which kind hands to every component and the kubelet, and a
//! kubeadm patch of the API server's `extraArgs`). A gate the version does not know is refused
//! before anything starts, with the version's list.

use std::path::Path;

use crate::error::{Error, Result};

/// The variable holding extra kube-apiserver flags: `NAME=VALUE` items separated by whitespace
/// (a leading `--` is allowed).
pub const APISERVER_ARGS_VAR: &str = "KUBE_HARNESS_APISERVER_ARGS";
/// The variable holding feature gates: `A=false,B=true`.
pub const FEATURE_GATES_VAR: &str = "KUBE_HARNESS_FEATURE_GATES";

/// kube-apiserver flags and feature gates to start a cluster with.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct ApiServerFlags {
    /// Flags, `name` without its leading `--`, in the order given.
    pub(crate) args: Vec<(String, String)>,
    /// Feature gates, the last setting of a gate winning.
    pub(crate) gates: Vec<(String, bool)>,
}

impl ApiServerFlags {
    /// What the environment asks for ([`APISERVER_ARGS_VAR`], [`FEATURE_GATES_VAR`]).
    pub(crate) fn from_env() -> Result<Self> {
        let mut flags = Self::default();
        if let Ok(value) = std::env::var(APISERVER_ARGS_VAR) {
            for item in value.split_whitespace() {
                let (name, value) = parse_arg(item).map_err(|e| Error::Env {
                    var: APISERVER_ARGS_VAR,
                    source: Box::new(e),
                })?;
                flags.push_arg(name, value)?;
            }
        }
        if let Ok(value) = std::env::var(FEATURE_GATES_VAR) {
            for (gate, on) in parse_gates(&value).map_err(|e| Error::Env {
                var: FEATURE_GATES_VAR,
                source: Box::new(e),
            })? {
                flags.gates.push((gate, on));
            }
        }
        Ok(flags)
    }

    /// These flags, then `args` and `gates` (a builder's, after the environment's).
    ///
    /// # Errors
    /// [`Error::BadFlag`] for an arg [`push_arg`](Self::push_arg) refuses.
    pub(crate) fn then(mut self, args: &[(String, String)], gates: &[(String, bool)]) -> Result<Self> {
        for (name, value) in args {
            self.push_arg(name.clone(), value.clone())?;
        }
        self.gates.extend(gates.iter().cloned());
        Ok(self)
    }

    /// Adds a flag; `feature-gates` is read as gates, so that every component gets them.
    pub(crate) fn push_arg(&mut self, name: String, value: String) -> Result<()> {
        let name = name.trim().trim_start_matches("--").to_owned();
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
            return Err(Error::BadFlag {
                value: name,
                problem: "not a kube-apiserver flag's name (letters, digits and -; the leading -- may be left out)"
                    .to_owned(),
            });
        }
        if name == "feature-gates" {
            self.gates.extend(parse_gates(&value)?);
        } else {
            self.args.push((name, value));
        }
        Ok(())
    }

    /// The gates, each once (its last setting), in the order first named.
    pub(crate) fn gates(&self) -> Vec<(String, bool)> {
        let mut out: Vec<(String, bool)> = Vec::new();
        for (gate, on) in &self.gates {
            match out.iter_mut().find(|(g, _)| g == gate) {
                Some(entry) => entry.1 = *on,
                None => out.push((gate.clone(), *on)),
            }
        }
        out
    }

    /// Whether nothing is asked for.
    pub(crate) fn is_empty(&self) -> bool {
        self.args.is_empty() && self.gates.is_empty()
    }
}

/// `NAME=VALUE` (or `--NAME=VALUE`): a kube-apiserver flag.
///
/// # Errors
/// [`Error::BadFlag`] without `=` or a name.
pub(crate) fn parse_arg(item: &str) -> Result<(String, String)> {
    let bad = |problem: &str| Error::BadFlag {
        value: item.to_owned(),
        problem: problem.to_owned(),
    };
    let (name, value) = item.split_once('=').ok_or_else(|| {
        bad("expected NAME=VALUE, such as audit-log-maxage=1 (a flag that takes no value: NAME=true)")
    })?;
    let name = name.trim().trim_start_matches("--");
    if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
        return Err(bad(
            "the flag's name (before =) is empty or not a kube-apiserver flag's name",
        ));
    }
    Ok((name.to_owned(), value.to_owned()))
}

/// `A=false,B=true`: feature gates.
///
/// # Errors
/// [`Error::BadFlag`] for an item that is not `NAME=true` or `NAME=false`.
pub(crate) fn parse_gates(list: &str) -> Result<Vec<(String, bool)>> {
    list.split(',')
        .map(str::trim)
        .filter(|item| !item.is_empty())
        .map(|item| {
            let bad = || Error::BadFlag {
                value: item.to_owned(),
                problem: "expected a feature gate as NAME=true or NAME=false, such as WatchListCompression=false"
                    .to_owned(),
            };
            let (name, value) = item.split_once('=').ok_or_else(bad)?;
            let name = name.trim();
            let name = name.strip_prefix("kube:").unwrap_or(name);
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric()) {
                return Err(bad());
            }
            let on = match value.trim().to_ascii_lowercase().as_str() {
                "true" => true,
                "false" => false,
                _ => return Err(bad()),
            };
            Ok((name.to_owned(), on))
        })
        .collect()
}

/// The feature gates `--help` of this kube-apiserver lists (`Name=true|false (STAGE - default=…)`
/// lines under `--feature-gates`), with their stage and default as written there.
///
/// # Errors
/// [`Error::Provider`] when the binary cannot be run or lists none.
pub(crate) fn known_gates(kube_apiserver: &Path) -> Result<Vec<(String, String)>> {
    let out = std::process::Command::new(kube_apiserver)
        .arg("--help")
        .output()
        .map_err(|e| {
            Error::Provider(format!(
                "{} --help (to list its feature gates): {e}",
                kube_apiserver.display()
            ))
        })?;
    let gates = gates_in_help(&String::from_utf8_lossy(&out.stdout));
    if gates.is_empty() {
        return Err(Error::Provider(format!(
            "{} --help lists no feature gates (exit {}); kube-harness reads them there to check the ones asked for",
            kube_apiserver.display(),
            out.status
        )));
    }
    Ok(gates)
}

/// The `--feature-gates` value for each of the components `binaries` (their paths): the gates
/// its `--help` lists (a component-specific gate, such as kube-controller-manager's
/// `ControllerManagerReleaseLeaderElectionLockOnExit`, would stop the others), `None` where it
/// gets none. A gate none of them lists is refused.
///
/// # Errors
/// [`Error::UnknownFeatureGate`], or [`Error::Provider`] when a binary cannot list its gates.
pub(crate) fn gates_by_component(
    flags: &ApiServerFlags,
    binaries: &[std::path::PathBuf],
    version: &str,
) -> Result<Vec<Option<String>>> {
    if flags.gates.is_empty() {
        return Ok(vec![None; binaries.len()]);
    }
    let known: Vec<Vec<(String, String)>> = binaries
        .iter()
        .map(|binary| known_gates(binary))
        .collect::<Result<_>>()?;
    let mut union: Vec<(String, String)> = Vec::new();
    for gate in known.iter().flatten() {
        if !union.iter().any(|(k, _)| *k == gate.0) {
            union.push(gate.clone());
        }
    }
    check_gates(flags, &union, version)?;
    Ok(known
        .iter()
        .map(|list| {
            let mine: Vec<String> = flags
                .gates()
                .into_iter()
                .filter(|(g, _)| list.iter().any(|(k, _)| k == g))
                .map(|(g, on)| format!("{g}={on}"))
                .collect();
            (!mine.is_empty()).then(|| mine.join(","))
        })
        .collect())
}

/// The gates of a component's `--help` text: the `Name=true|false (STAGE - default=…)` lines
/// of the `--feature-gates` flag's description (other flags', such as `--runtime-config`'s
/// `v1=true|false`, are no gates).
pub(crate) fn gates_in_help(help: &str) -> Vec<(String, String)> {
    let mut in_gates = false;
    let mut gates = Vec::new();
    for line in help.lines().map(str::trim) {
        if line.starts_with("--") {
            in_gates = line.starts_with("--feature-gates");
        }
        if !in_gates {
            continue;
        }
        let Some((name, rest)) = line.split_once("=true|false") else {
            continue;
        };
        // From 1.37 the list names each gate's component: `kube:WatchListCompression`.
        let name = name.rsplit(char::is_whitespace).next().unwrap_or(name);
        let name = name.strip_prefix("kube:").unwrap_or(name);
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric()) {
            continue;
        }
        let about = rest.trim().trim_start_matches('(').trim_end_matches(')').to_owned();
        gates.push((name.to_owned(), about));
    }
    gates
}

/// Refuses a gate `known` does not list, naming it and the version's gates.
///
/// # Errors
/// [`Error::UnknownFeatureGate`].
pub(crate) fn check_gates(flags: &ApiServerFlags, known: &[(String, String)], version: &str) -> Result<()> {
    for (gate, _) in flags.gates() {
        if !known.iter().any(|(k, _)| *k == gate) {
            let near: Vec<&str> = known
                .iter()
                .map(|(k, _)| k.as_str())
                .filter(|k| k.contains(gate.as_str()) || distance(k, &gate) <= 2)
                .collect();
            return Err(Error::UnknownFeatureGate {
                gate,
                version: version.to_owned(),
                near: near.join(", "),
                known: known.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>().join(", "),
            });
        }
    }
    Ok(())
}

/// Edits (insert, delete, replace; case ignored) between two names, to name a near spelling.
fn distance(a: &str, b: &str) -> usize {
    let (a, b): (Vec<char>, Vec<char>) = (
        a.to_ascii_lowercase().chars().collect(),
        b.to_ascii_lowercase().chars().collect(),
    );
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.iter().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let above = row[j + 1];
            row[j + 1] = (diagonal + usize::from(ca != cb)).min(above + 1).min(row[j] + 1);
            diagonal = above;
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn args_and_gates_parse_and_bad_ones_are_named() {
        assert_eq!(
            parse_arg("--audit-log-maxage=1").ok(),
            Some(("audit-log-maxage".into(), "1".into()))
        );
        assert_eq!(
            parse_arg("admission-control-config-file=/a=b").ok(),
            Some(("admission-control-config-file".into(), "/a=b".into()))
        );
        let e = parse_arg("v").err().map(|e| e.to_string()).unwrap_or_default();
        assert!(e.contains("\"v\"") && e.contains("NAME=VALUE"), "{e}");
        assert!(parse_arg("=1").is_err());
        assert!(parse_arg("a b=1").is_err());
        assert_eq!(
            parse_gates(" A=false, kube:B=TRUE ,").ok(),
            Some(vec![("A".into(), false), ("B".into(), true)])
        );
        for bad in ["A", "A=yes", "=true", "A-b=true"] {
            let e = parse_gates(bad).err().map(|e| e.to_string()).unwrap_or_default();
            assert!(e.contains("NAME=true or NAME=false"), "{bad}: {e}");
        }
    }

    #[test]
    fn feature_gates_given_as_a_flag_become_gates_and_the_last_setting_wins() -> Result<()> {
        let mut flags = ApiServerFlags::default();
        flags.push_arg("feature-gates".into(), "A=true,B=false".into())?;
        flags.push_arg("--v".into(), "2".into())?;
        assert!(flags.push_arg("a b".into(), "1".into()).is_err());
        flags.gates.push(("A".into(), false));
        assert_eq!(flags.args, vec![("v".to_owned(), "2".to_owned())]);
        assert_eq!(flags.gates(), vec![("A".to_owned(), false), ("B".to_owned(), false)]);
        Ok(())
    }

    #[test]
    fn gates_are_read_from_help_and_unknown_ones_refused_with_the_list() {
        let help = "      --feature-gates colonSeparatedMultimapStringString\n                A set of key=value pairs that describe feature gates for alpha/experimental features. Options are:\n                APIResponseCompression=true|false (BETA - default=true)\n                AllAlpha=true|false (ALPHA - default=false)\n                api/all=true|false\n                kube:WatchListCompression=true|false (BETA - default=true)\n      --help   help for kube-apiserver\n      --runtime-config mapStringString\n                v1=true|false for the core API group\n";
        let known = gates_in_help(help);
        assert_eq!(
            known.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>(),
            ["APIResponseCompression", "AllAlpha", "WatchListCompression"]
        );
        assert_eq!(known[2].1, "BETA - default=true");
        let ok = ApiServerFlags {
            args: Vec::new(),
            gates: vec![("WatchListCompression".into(), false)],
        };
        assert!(check_gates(&ok, &known, "1.37.2").is_ok());
        assert_eq!(distance("WatchListCompresion", "watchlistcompression"), 1);
        let typo = ApiServerFlags {
            args: Vec::new(),
            gates: vec![("WatchListCompresion".into(), false)],
        };
        let e = check_gates(&typo, &known, "1.37.2")
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            e.contains("\"WatchListCompresion\"")
                && e.contains("1.37.2")
                && e.contains("did you mean WatchListCompression")
                && e.contains("AllAlpha"),
            "{e}"
        );
    }
}
