//! The kind provider: a kind cluster created with the `kind` CLI from a generated config,
//! pinned to the node image of the requested Kubernetes version, its kubeconfig exported into
//! the run directory, deleted when the [`Cluster`](crate::Cluster) is dropped (or when the
//! start fails).
//!
//! Needs `kind` on `PATH` (`go install sigs.k8s.io/kind@v0.33.0`) and a Docker daemon.

use std::path::{Path, PathBuf};

use super::docker::run;
use crate::assets::KubeVersion;
use crate::error::{Error, Result};

/// The node image for a Kubernetes version (kind publishes `kindest/node:v<version>`).
pub(crate) fn node_image(version: &KubeVersion) -> String {
    format!("kindest/node:v{version}")
}

/// The kind cluster config: one control-plane node, its API server on 127.0.0.1 with a port
/// Docker picks, and the aggregation layer's flags as kubeadm sets them by default.
pub(crate) fn config(version: &KubeVersion) -> String {
    format!(
        "kind: Cluster\n\
         apiVersion: kind.x-k8s.io/v1alpha4\n\
         networking:\n  apiServerAddress: \"127.0.0.1\"\n  apiServerPort: 0\n\
         nodes:\n  - role: control-plane\n    image: {}\n",
        node_image(version)
    )
}

/// `kind create cluster` for `name` with the config file and kubeconfig path given.
pub(crate) fn create_command(name: &str, config: &Path, kubeconfig: &Path) -> Vec<String> {
    vec![
        "kind".into(),
        "create".into(),
        "cluster".into(),
        "--name".into(),
        name.into(),
        "--config".into(),
        config.display().to_string(),
        "--kubeconfig".into(),
        kubeconfig.display().to_string(),
        "--wait".into(),
        "180s".into(),
    ]
}

/// `kind delete cluster` for `name`.
pub(crate) fn delete_command(name: &str) -> Vec<String> {
    vec![
        "kind".into(),
        "delete".into(),
        "cluster".into(),
        "--name".into(),
        name.into(),
    ]
}

/// A kind cluster this process created; deleted on drop.
#[derive(Debug)]
pub(crate) struct KindCluster {
    name: String,
}

impl KindCluster {
    /// Create the cluster; its kubeconfig is written to `kubeconfig`.
    ///
    /// # Errors
    /// [`Error::Provider`] if Docker or kind is missing or `kind create` fails (a partly
    /// created cluster is deleted).
    pub(crate) fn create(version: &KubeVersion, run_dir: &Path, kubeconfig: &Path) -> Result<Self> {
        if let Some(reason) = super::unavailable(super::Provider::Kind, version) {
            return Err(Error::Provider(reason));
        }
        let name = format!("kube-harness-{}-{}", std::process::id(), run_dir_suffix(run_dir));
        let config_path: PathBuf = run_dir.join("kind.yaml");
        std::fs::write(&config_path, config(version)).map_err(Error::io("write", &config_path))?;
        let cluster = Self { name };
        eprintln!(
            "kube-harness: creating kind cluster {} ({})",
            cluster.name,
            node_image(version)
        );
        run(&create_command(&cluster.name, &config_path, kubeconfig))?;
        Ok(cluster)
    }
}

fn run_dir_suffix(run_dir: &Path) -> String {
    run_dir
        .file_name()
        .map(|n| n.to_string_lossy().rsplit('-').next().unwrap_or_default().to_owned())
        .unwrap_or_default()
}

impl Drop for KindCluster {
    fn drop(&mut self) {
        if let Err(e) = run(&delete_command(&self.name)) {
            eprintln!("kube-harness: could not delete kind cluster {}: {e}", self.name);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_config_pins_the_node_image_and_binds_loopback() {
        let v = KubeVersion::parse("1.36.3").unwrap_or_default();
        let c = config(&v);
        assert!(c.contains("image: kindest/node:v1.36.3"), "{c}");
        assert!(c.contains("apiServerAddress: \"127.0.0.1\""), "{c}");
        assert!(
            c.starts_with("kind: Cluster\napiVersion: kind.x-k8s.io/v1alpha4\n"),
            "{c}"
        );
    }

    #[test]
    fn command_lines_name_the_cluster_config_and_kubeconfig() {
        let create = create_command("kh-1", Path::new("/r/kind.yaml"), Path::new("/r/kubeconfig"));
        assert_eq!(
            create.join(" "),
            "kind create cluster --name kh-1 --config /r/kind.yaml --kubeconfig /r/kubeconfig --wait 180s"
        );
        assert_eq!(delete_command("kh-1").join(" "), "kind delete cluster --name kh-1");
    }
}
