//! The kind cluster config the harness writes, and the `kind create cluster` command line.

use std::fmt::Write as _;
use std::path::Path;

use crate::assets::KubeVersion;
use crate::error::{Error, Result};
use crate::provider::flags::ApiServerFlags;

/// Whether this host mounts cgroup v1 only (kubelet ≥ 1.35 refuses it unless told).
pub(crate) fn cgroup_v1() -> bool {
    !Path::new("/sys/fs/cgroup/cgroup.controllers").exists()
}

/// A YAML scalar for `value` (a JSON string is one).
fn quoted(value: &str) -> String {
    serde_json::Value::String(value.to_owned()).to_string()
}

/// The kind cluster config: one control-plane node of `image`, its API server on 127.0.0.1
/// with a port Docker picks; kubeadm's CoreDNS addon skipped (an absent image would be pulled,
/// and the aggregation layer needs no cluster DNS); on a cgroup v1 host, kubelet told to run
/// anyway. `flags`: feature gates as kind's `featureGates` (kind hands them to every
/// component and the kubelet), `runtime-config` as its `runtimeConfig`, other kube-apiserver
/// flags as a kubeadm patch of `apiServer.extraArgs` — a merge patch of kubeadm's v1beta3 map
/// before Kubernetes 1.36, a JSON 6902 `add` to v1beta4's list from 1.36 on (a merge patch
/// would replace the list kind writes). `ports`: `(host, node)` ports published on 127.0.0.1
/// only (host 0: one kind picks).
pub(crate) fn config(
    image: &str,
    cgroup_v1: bool,
    version: &KubeVersion,
    flags: &ApiServerFlags,
    ports: &[(u16, u16)],
) -> String {
    let mut patches = String::from("  - |\n    kind: InitConfiguration\n    skipPhases: [preflight, addon/coredns]\n");
    if cgroup_v1 {
        patches.push_str("  - |\n    kind: KubeletConfiguration\n    failCgroupV1: false\n");
    }
    let mut top = String::new();
    let gates = flags.gates();
    if !gates.is_empty() {
        top.push_str("featureGates:\n");
        for (gate, on) in &gates {
            let _ = writeln!(top, "  {}: {on}", quoted(gate));
        }
    }
    let (runtime_config, args): (Vec<_>, Vec<_>) = flags.args.iter().partition(|(name, _)| name == "runtime-config");
    if !runtime_config.is_empty() {
        top.push_str("runtimeConfig:\n");
        for (_, value) in runtime_config {
            for item in value.split(',').filter(|i| !i.trim().is_empty()) {
                let (key, val) = item.split_once('=').unwrap_or((item, "true"));
                let _ = writeln!(top, "  {}: {}", quoted(key.trim()), quoted(val.trim()));
            }
        }
    }
    if !args.is_empty() {
        if version.minor < 36 {
            patches.push_str("  - |\n    kind: ClusterConfiguration\n    apiServer:\n      extraArgs:\n");
            for (name, value) in &args {
                let _ = writeln!(patches, "        {}: {}", quoted(name), quoted(value));
            }
        } else {
            top.push_str(
                "kubeadmConfigPatchesJSON6902:\n  - group: kubeadm.k8s.io\n    version: v1beta4\n    kind: ClusterConfiguration\n    patch: |\n",
            );
            for (name, value) in &args {
                let _ = writeln!(
                    top,
                    "      - op: add\n        path: /apiServer/extraArgs/-\n        value: {{name: {}, value: {}}}",
                    quoted(name),
                    quoted(value)
                );
            }
        }
    }
    let mut node = format!("  - role: control-plane\n    image: {image}\n");
    if !ports.is_empty() {
        node.push_str("    extraPortMappings:\n");
        for (host, container) in ports {
            let _ = writeln!(
                node,
                "      - {{containerPort: {container}, hostPort: {host}, listenAddress: \"127.0.0.1\", protocol: TCP}}"
            );
        }
    }
    format!(
        "kind: Cluster\n\
         apiVersion: kind.x-k8s.io/v1alpha4\n\
         networking:\n  apiServerAddress: \"127.0.0.1\"\n  apiServerPort: 0\n\
         {top}\
         kubeadmConfigPatches:\n{patches}\
         nodes:\n{node}"
    )
}

/// `kind create cluster` for `name` with the config file and kubeconfig path given.
pub(crate) fn create_command(name: &str, config: &Path, kubeconfig: &Path) -> Vec<String> {
    vec![
        "create".into(),
        "cluster".into(),
        "--name".into(),
        name.into(),
        "--config".into(),
        config.display().to_string(),
        "--kubeconfig".into(),
        kubeconfig.display().to_string(),
        "--wait".into(),
        "120s".into(),
    ]
}

/// `--publish [HOST:]NODE`: a node port published on 127.0.0.1 — at the same port, at `HOST`,
/// or (`0:NODE`) at one kind picks. `(host, node)`.
///
/// # Errors
/// [`Error::BadFlag`] for anything but one or two port numbers (the node's not 0).
#[cfg(any(feature = "cli", test))]
pub(crate) fn parse_port_mapping(value: &str) -> Result<(u16, u16)> {
    let bad = || {
        Error::BadFlag {
        value: value.to_owned(),
        problem: "expected NODE_PORT or HOST_PORT:NODE_PORT (0:NODE_PORT for any free host port), such as 10250 or 0:10250; it is published on 127.0.0.1 only".to_owned(),
    }
    };
    let (host, node) = match value.trim().split_once(':') {
        Some((host, node)) => (
            host.parse::<u16>().map_err(|_| bad())?,
            node.parse::<u16>().map_err(|_| bad())?,
        ),
        None => {
            let port = value.trim().parse::<u16>().map_err(|_| bad())?;
            (port, port)
        }
    };
    if node == 0 {
        return Err(bad());
    }
    Ok((host, node))
}

/// Refuses a host port something on 127.0.0.1 listens on already, before kind starts.
///
/// # Errors
/// [`Error::Provider`] naming the port.
pub(crate) fn check_host_ports_free(ports: &[(u16, u16)]) -> Result<()> {
    for (host, node) in ports.iter().filter(|(host, _)| *host != 0) {
        if let Err(e) = std::net::TcpListener::bind(("127.0.0.1", *host)) {
            return Err(Error::Provider(format!(
                "cannot publish node port {node} at 127.0.0.1:{host}: that port is taken ({e}); pick another host port, or 0:{node} for any free one"
            )));
        }
    }
    Ok(())
}
