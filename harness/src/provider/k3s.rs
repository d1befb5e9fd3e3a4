//! The k3s provider: a `rancher/k3s` container started with the Docker CLI, its API server
//! published on a Docker-chosen port of 127.0.0.1, its kubeconfig read from the container and
//! rewritten to that port; the container is removed when the
//! [`Cluster`](crate::Cluster) is dropped.
//!
//! (The Docker CLI rather than testcontainers: the same container, no daemon-API client in the
//! dependency tree, and a command line a user can rerun by hand.)

use std::path::Path;

use super::docker::run;
use crate::assets::KubeVersion;
use crate::error::{Error, Result};

/// The k3s image for a Kubernetes version.
pub(crate) fn image(version: &KubeVersion) -> String {
    format!("rancher/k3s:v{version}-k3s1")
}

/// `docker run` for a k3s server named `name`: privileged (k3s runs containerd), the API
/// server's 6443 published on loopback only, the bundled ingress and load balancer off.
pub(crate) fn run_command(name: &str, version: &KubeVersion) -> Vec<String> {
    [
        "docker",
        "run",
        "--pull=never",
        "--detach",
        "--privileged",
        "--name",
        name,
        "--publish",
        "127.0.0.1::6443",
        &image(version),
        "server",
        "--disable=traefik",
        "--disable=servicelb",
        "--tls-san=127.0.0.1",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect()
}

/// The host port Docker published 6443 on, from `docker port NAME 6443/tcp` output
/// (`127.0.0.1:49153`).
///
/// # Errors
/// [`Error::Provider`] if the output names no port.
pub(crate) fn published_port(docker_port_output: &str) -> Result<u16> {
    docker_port_output
        .lines()
        .filter_map(|l| l.trim().rsplit_once(':'))
        .find_map(|(_, port)| port.parse().ok())
        .ok_or_else(|| Error::Provider(format!("no published port in {docker_port_output:?}")))
}

/// k3s writes a kubeconfig for `https://127.0.0.1:6443`; point it at the published port.
pub(crate) fn rewrite_kubeconfig(kubeconfig: &str, port: u16) -> String {
    kubeconfig.replace("https://127.0.0.1:6443", &format!("https://127.0.0.1:{port}"))
}

/// A k3s container this process started; removed on drop.
#[derive(Debug)]
pub(crate) struct K3sContainer {
    name: String,
}

impl K3sContainer {
    /// Start the container and write its kubeconfig (rewritten to the published port) to
    /// `kubeconfig`.
    ///
    /// # Errors
    /// [`Error::Provider`] if Docker is missing or the container does not come up.
    pub(crate) fn start(version: &KubeVersion, kubeconfig: &Path) -> Result<Self> {
        if let Some(reason) = super::unavailable(super::Provider::K3s, version) {
            return Err(Error::Provider(reason));
        }
        let name = format!("kube-harness-k3s-{}", std::process::id());
        eprintln!("kube-harness: starting {} as container {name}", image(version));
        run(&run_command(&name, version))?;
        let container = Self { name };
        let port = published_port(&run(&docker(&["port", &container.name, "6443/tcp"]))?)?;
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
        let raw = loop {
            match run(&docker(&["exec", &container.name, "cat", "/etc/rancher/k3s/k3s.yaml"])) {
                Ok(text) if text.contains("server:") => break text,
                _ if std::time::Instant::now() > deadline => {
                    return Err(Error::Provider(format!(
                        "k3s in container {} wrote no kubeconfig within 120 s",
                        container.name
                    )));
                }
                _ => std::thread::sleep(std::time::Duration::from_millis(500)),
            }
        };
        crate::pki::write_private(kubeconfig, rewrite_kubeconfig(&raw, port).as_bytes())?;
        Ok(container)
    }
}

fn docker(args: &[&str]) -> Vec<String> {
    std::iter::once("docker")
        .chain(args.iter().copied())
        .map(str::to_owned)
        .collect()
}

impl Drop for K3sContainer {
    fn drop(&mut self) {
        if let Err(e) = run(&docker(&["rm", "--force", &self.name])) {
            eprintln!("kube-harness: could not remove container {}: {e}", self.name);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_kubeconfig_is_pointed_at_the_published_port() {
        let raw = "clusters:\n- cluster:\n    server: https://127.0.0.1:6443\n  name: default\n";
        assert_eq!(
            rewrite_kubeconfig(raw, 49153),
            "clusters:\n- cluster:\n    server: https://127.0.0.1:49153\n  name: default\n"
        );
    }

    #[test]
    fn the_published_port_is_read_from_docker_port() {
        assert_eq!(published_port("127.0.0.1:49153\n").ok(), Some(49153));
        assert!(published_port("").is_err());
    }

    #[test]
    fn the_container_publishes_on_loopback_only() {
        let v = KubeVersion::parse("1.37.2").unwrap_or_default();
        let cmd = run_command("kh", &v).join(" ");
        assert_eq!(
            cmd,
            "docker run --pull=never --detach --privileged --name kh --publish 127.0.0.1::6443 rancher/k3s:v1.37.2-k3s1 \
             server --disable=traefik --disable=servicelb --tls-san=127.0.0.1"
        );
    }
}
