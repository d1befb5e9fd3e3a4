//! The kind provider: a single-node kind cluster created with the `kind` CLI from a generated
//! config, its API server published on 127.0.0.1, its kubeconfig exported into the run
//! directory, deleted when the [`Cluster`](crate::Cluster) is dropped or its start fails.
//!
//! - **The CLI**: `kind` on `PATH`, else built once from `sigs.k8s.io/kind@`[`KIND_VERSION`]
//!   into the cache (needs Go).
//! - **The node image**: `KUBE_HARNESS_KIND_IMAGE`, else `kindest/node:v<version>`. It must be
//!   present in the local engine: kube-harness never pulls (`scripts/kind-node-image` builds
//!   one offline).
//! - **Reuse**: `KUBE_HARNESS_KIND_REUSE=1` keeps one cluster per version and image across
//!   runs (tests isolate themselves with namespaces); it is not deleted on drop.
//! - **Hosts without every capability**: kind runs its nodes `--privileged`, which Docker
//!   refuses where the process's bounding set lacks a capability (a VM without
//!   `CAP_SYS_RESOURCE`). There, and only there (read from `/proc/self/status`), the `kind`
//!   subprocess gets a `docker` in front of the real one that replaces `--privileged` with every
//!   capability the host has and the rest of what it implies.
//! - **Clusters of dead processes** (a runner killed before it could delete): named
//!   `kube-harness-<pid>-…`, they are deleted by the next kind start on the machine.

use std::io::{BufRead as _, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use super::docker::run;
use crate::assets::{KubeVersion, Resolver};
use crate::error::{Error, Result};
use crate::provider::flags::ApiServerFlags;

mod config;
mod shim;

/// `--publish` (the CLI).
#[cfg(any(feature = "cli", test))]
pub(crate) use config::parse_port_mapping;
pub(crate) use config::{cgroup_v1, check_host_ports_free, config, create_command};
use shim::prepare_shim;
#[cfg(test)]
use shim::{docker_shim, missing_capabilities};

/// The common name of the cluster CA kubeadm makes.
const KUBEADM_CA_CN: &str = "kubernetes";

/// The kind release built when `kind` is not on `PATH`.
pub const KIND_VERSION: &str = "v0.33.0";

/// The node image for a Kubernetes version: `KUBE_HARNESS_KIND_IMAGE`, else kind's
/// `kindest/node:v<version>`.
pub(crate) fn node_image(version: &KubeVersion) -> String {
    std::env::var("KUBE_HARNESS_KIND_IMAGE")
        .ok()
        .filter(|v| !v.trim().is_empty())
        .unwrap_or_else(|| format!("kindest/node:v{version}"))
}

/// Whether clusters are kept across runs (`KUBE_HARNESS_KIND_REUSE=1`).
fn reuse() -> bool {
    matches!(
        std::env::var("KUBE_HARNESS_KIND_REUSE").as_deref(),
        Ok("1" | "true" | "yes")
    )
}

fn on_path(name: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|d| d.join(name))
        .find(|p| std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0))
}

/// The `kind` CLI: on `PATH`, else built (once) from `sigs.k8s.io/kind@`[`KIND_VERSION`].
///
/// # Errors
/// [`Error::GoMissing`] without either, [`Error::Build`] when the build fails.
pub(crate) fn cli(version: &KubeVersion) -> Result<PathBuf> {
    match on_path("kind") {
        Some(kind) => Ok(kind),
        None => Resolver::new(*version).go_binary("sigs.k8s.io/kind", KIND_VERSION),
    }
}

/// Why the kind CLI cannot be had, or `None`: on `PATH`, cached, or Go there to build it.
pub(crate) fn cli_unavailable() -> Option<String> {
    if on_path("kind").is_some() || on_path("go").is_some() {
        return None;
    }
    Some(format!(
        "no `kind` on PATH and no Go to build sigs.k8s.io/kind@{KIND_VERSION} with"
    ))
}

/// The kind CLI for one cluster: its name, the binary, and the `docker` shim's directory when
/// this host needs one.
#[derive(Debug, Clone)]
pub(crate) struct KindCli {
    name: String,
    kind: PathBuf,
    shim: Option<PathBuf>,
}

/// What a kind cluster is created with, beside its version.
#[derive(Debug, Clone, Default)]
pub(crate) struct KindOptions {
    /// The node image (default [`node_image`]).
    pub(crate) image: Option<String>,
    /// kube-apiserver flags and feature gates.
    pub(crate) flags: ApiServerFlags,
    /// `(host, node)` ports published on 127.0.0.1 (host 0: any free one).
    pub(crate) ports: Vec<(u16, u16)>,
}

/// A kind cluster this process created or reuses; deleted on drop unless reused.
#[derive(Debug)]
pub(crate) struct KindCluster {
    cli: KindCli,
    keep: bool,
    /// kubeadm's cluster CA, read from the node: it signs the client certificates
    /// kube-apiserver accepts (`--client-ca-file`), so the harness issues users' certificates
    /// as on the local plane. `None` (with the reason printed) where it cannot be used.
    client_ca: Option<Box<crate::pki::Ca>>,
    /// Published node ports and where they are reached on this host.
    published: Vec<(u16, std::net::SocketAddr)>,
}

impl KindCluster {
    /// Create the cluster (or find the reused one); its kubeconfig is written to `kubeconfig`.
    ///
    /// # Errors
    /// [`Error::Provider`] if Docker, the kind CLI or the node image is missing, or
    /// `kind create` fails (with the tail of its output; a partly created cluster is deleted).
    pub(crate) fn create(
        version: &KubeVersion,
        options: &KindOptions,
        run_dir: &Path,
        kubeconfig: &Path,
    ) -> Result<Self> {
        super::docker::docker_available()?;
        let (flags, ports) = (&options.flags, options.ports.as_slice());
        let image = options.image.clone().unwrap_or_else(|| node_image(version));
        super::docker::image_present(&image).map_err(|e| {
            Error::Provider(format!(
                "{e}. For kind: KUBE_HARNESS_KIND_IMAGE names a node image; without a registry, \
                 scripts/kind-node-image {version} builds one offline"
            ))
        })?;
        let kind = cli(version)?;
        let shim = prepare_shim(run_dir)?;
        let keep = reuse();
        let name = if keep {
            reused_name(version, &image, flags, ports)
        } else {
            format!("kube-harness-{}-{}", std::process::id(), run_dir_suffix(run_dir))
        };
        let mut cluster = Self {
            cli: KindCli { name, kind, shim },
            keep,
            client_ca: None,
            published: Vec::new(),
        };
        cluster.cli.sweep_dead();
        if keep && cluster.cli.exists()? {
            eprintln!(
                "kube-harness: reusing kind cluster {} (KUBE_HARNESS_KIND_REUSE=1)",
                cluster.cli.name
            );
            cluster.cli.kind_run(&[
                "export".into(),
                "kubeconfig".into(),
                "--name".into(),
                cluster.cli.name.clone(),
                "--kubeconfig".into(),
                kubeconfig.display().to_string(),
            ])?;
            cluster.client_ca = cluster.cli.client_ca();
            cluster.published = cluster.cli.published(ports)?;
            return Ok(cluster);
        }
        check_host_ports_free(ports)?;
        if !keep {
            cluster.cli.spawn_reaper();
        }
        let config_path: PathBuf = run_dir.join("kind.yaml");
        std::fs::write(&config_path, config(&image, cgroup_v1(), version, flags, ports))
            .map_err(Error::io("write", &config_path))?;
        eprintln!("kube-harness: creating kind cluster {} ({image}) …", cluster.cli.name);
        let started = Instant::now();
        // From here on a failure drops `cluster`, which deletes whatever kind created (also
        // when the cluster was to be kept: a half-made cluster is no use to the next run).
        let outcome = cluster
            .cli
            .kind_streamed(&create_command(&cluster.cli.name, &config_path, kubeconfig));
        if let Err(e) = outcome {
            cluster.keep = false;
            return Err(e);
        }
        eprintln!(
            "kube-harness: kind cluster {} created in {:.1}s",
            cluster.cli.name,
            started.elapsed().as_secs_f64()
        );
        cluster.client_ca = cluster.cli.client_ca();
        cluster.published = cluster.cli.published(ports)?;
        for (node, at) in &cluster.published {
            eprintln!("kube-harness: node port {node} published at {at}");
        }
        Ok(cluster)
    }

    /// Published node ports and where they are reached on this host.
    pub(crate) fn published(&self) -> &[(u16, std::net::SocketAddr)] {
        &self.published
    }

    /// kubeadm's cluster CA, when the harness can issue client certificates with it.
    pub(crate) fn client_ca(&self) -> Option<&crate::pki::Ca> {
        self.client_ca.as_deref()
    }

    /// The CLI for this cluster (to load images into it).
    pub(crate) fn cli(&self) -> KindCli {
        self.cli.clone()
    }
}

impl KindCli {
    /// kubeadm's CA from the control-plane node (`/etc/kubernetes/pki/ca.{crt,key}`, CN
    /// `kubernetes`); the key stays in memory. `None`, with the reason printed, when it cannot
    /// be read or used: the cluster then offers no client certificates (users are impersonated).
    fn client_ca(&self) -> Option<Box<crate::pki::Ca>> {
        let node = format!("{}-control-plane", self.name);
        let read = |file: &str| {
            run(&[
                "docker".into(),
                "exec".into(),
                node.clone(),
                "cat".into(),
                format!("/etc/kubernetes/pki/{file}"),
            ])
        };
        let ca = read("ca.crt").and_then(|crt| Ok((crt, read("ca.key")?)));
        match ca.and_then(|(crt, key)| crate::pki::Ca::from_go_pem(KUBEADM_CA_CN, &crt, &key)) {
            Ok(ca) => Some(Box::new(ca)),
            Err(e) => {
                eprintln!(
                    "kube-harness: kind cluster {}: no client certificates (users are impersonated): {e}",
                    self.name
                );
                None
            }
        }
    }

    /// Where Docker published each of `ports`' node ports (`docker port`), on 127.0.0.1.
    fn published(&self, ports: &[(u16, u16)]) -> Result<Vec<(u16, std::net::SocketAddr)>> {
        let node = format!("{}-control-plane", self.name);
        ports
            .iter()
            .map(|(_, port)| {
                let out = run(&["docker".into(), "port".into(), node.clone(), format!("{port}/tcp")])?;
                out.lines()
                    .filter_map(|l| l.trim().parse::<std::net::SocketAddr>().ok())
                    .find(|a| a.ip().is_loopback())
                    .map(|a| (*port, a))
                    .ok_or_else(|| {
                        Error::Provider(format!(
                            "kind node {node} has no port {port} published on 127.0.0.1 (docker port: {out:?})"
                        ))
                    })
            })
            .collect()
    }

    /// The directories a command needs first on `PATH` to run kind against this cluster: the
    /// `docker` shim (where this host needs one), then the `kind` CLI's.
    #[cfg(feature = "cli")]
    pub(crate) fn path_dirs(&self) -> Vec<PathBuf> {
        self.shim
            .iter()
            .cloned()
            .chain(self.kind.parent().map(Path::to_owned))
            .collect()
    }

    /// `kind load docker-image IMAGE` into this cluster's nodes.
    ///
    /// # Errors
    /// [`Error::Provider`] when the image is absent or kind fails.
    pub(crate) fn load_image(&self, image: &str) -> Result<()> {
        super::docker::image_present(image)?;
        self.kind_run(&[
            "load".into(),
            "docker-image".into(),
            "--name".into(),
            self.name.clone(),
            image.into(),
        ])
        .map(drop)
    }

    fn command(&self) -> Command {
        let mut cmd = Command::new(&self.kind);
        cmd.env("KIND_EXPERIMENTAL_PROVIDER", "docker");
        if let Some(dir) = &self.shim {
            let path = std::env::var_os("PATH").unwrap_or_default();
            let mut dirs = vec![dir.clone()];
            dirs.extend(std::env::split_paths(&path));
            if let Ok(joined) = std::env::join_paths(dirs) {
                cmd.env("PATH", joined);
            }
        }
        cmd
    }

    fn kind_run(&self, args: &[String]) -> Result<String> {
        let out = self
            .command()
            .args(args)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| Error::Provider(format!("cannot run {:?}: {e}", self.kind)))?;
        if !out.status.success() {
            return Err(Error::Provider(format!(
                "`kind {}` failed ({}): {}",
                args.join(" "),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Run kind with its progress lines shown as they come; on failure the error holds the
    /// last of them.
    fn kind_streamed(&self, args: &[String]) -> Result<()> {
        let mut child = self
            .command()
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| Error::Provider(format!("cannot run {:?}: {e}", self.kind)))?;
        let mut tail: std::collections::VecDeque<String> = std::collections::VecDeque::new();
        if let Some(stderr) = child.stderr.take() {
            for line in BufReader::new(stderr).lines().map_while(std::result::Result::ok) {
                let shown = line.trim();
                if !shown.is_empty() {
                    eprintln!("kube-harness: kind: {shown}");
                }
                tail.push_back(line);
                if tail.len() > 40 {
                    tail.pop_front();
                }
            }
        }
        let status = child
            .wait()
            .map_err(|e| Error::Provider(format!("waiting for kind: {e}")))?;
        if status.success() {
            return Ok(());
        }
        Err(Error::Provider(format!(
            "`kind {}` failed ({status}); the last lines of its output:\n{}",
            args.join(" "),
            Vec::from(tail).join("\n")
        )))
    }

    /// A process (its own process group, so a signal to the test runner's does not reach it)
    /// that deletes the cluster once this process is gone: the shared cluster of a test
    /// process lives in a static, which is never dropped, and a killed runner drops nothing.
    /// After a normal drop it finds the cluster deleted already.
    fn spawn_reaper(&self) {
        use std::os::unix::process::CommandExt as _;
        let cmd = self.command();
        let spawned = Command::new("sh")
            .args([
                "-c",
                "while kill -0 \"$0\" 2>/dev/null; do sleep 1; done; exec \"$1\" delete cluster --name \"$2\" >/dev/null 2>&1",
            ])
            .arg(std::process::id().to_string())
            .arg(&self.kind)
            .arg(&self.name)
            .envs(cmd.get_envs().filter_map(|(k, v)| Some((k.to_owned(), v?.to_owned()))))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn();
        if let Err(e) = spawned {
            tracing::warn!(error = %e, "no reaper for the kind cluster; the next kind start deletes it if this process dies");
        }
    }

    fn clusters(&self) -> Result<Vec<String>> {
        let out = self.kind_run(&["get".into(), "clusters".into()])?;
        Ok(out
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(str::to_owned)
            .collect())
    }

    fn exists(&self) -> Result<bool> {
        Ok(self.clusters()?.contains(&self.name))
    }

    /// Delete the clusters of processes that died before they could (`kube-harness-<pid>-…`).
    fn sweep_dead(&self) {
        let Ok(clusters) = self.clusters() else {
            return;
        };
        for name in clusters {
            let Some(pid) = owner_pid(&name) else {
                continue;
            };
            if pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists() {
                eprintln!("kube-harness: deleting kind cluster {name}: its process {pid} is gone");
                if let Err(e) = self.kind_run(&delete_args(&name)) {
                    eprintln!("kube-harness: {e}");
                }
            }
        }
    }
}

fn delete_args(name: &str) -> Vec<String> {
    vec!["delete".into(), "cluster".into(), "--name".into(), name.into()]
}

/// The pid in a per-process cluster's name (`kube-harness-<pid>-<suffix>`).
pub(crate) fn owner_pid(name: &str) -> Option<u32> {
    name.strip_prefix("kube-harness-")?.split('-').next()?.parse().ok()
}

/// The kept cluster's name: per version, image, flags, gates and published ports, so that
/// another image or other flags get another cluster.
fn reused_name(version: &KubeVersion, image: &str, flags: &ApiServerFlags, ports: &[(u16, u16)]) -> String {
    let mut key = image.to_owned();
    if !flags.is_empty() {
        key.push_str(&format!("\n{:?}\n{:?}", flags.args, flags.gates()));
    }
    if !ports.is_empty() {
        key.push_str(&format!("\nports {ports:?}"));
    }
    let digest = ring::digest::digest(&ring::digest::SHA256, key.as_bytes());
    let short: String = digest.as_ref()[..4].iter().map(|b| format!("{b:02x}")).collect();
    format!("kh-reuse-{}-{short}", version.to_string().replace('.', "-"))
}

fn run_dir_suffix(run_dir: &Path) -> String {
    run_dir
        .file_name()
        .map(|n| {
            n.to_string_lossy()
                .rsplit('-')
                .next()
                .unwrap_or_default()
                .to_lowercase()
        })
        .unwrap_or_default()
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .take(8)
        .collect()
}

impl Drop for KindCluster {
    fn drop(&mut self) {
        if self.keep {
            return;
        }
        let started = Instant::now();
        let name = &self.cli.name;
        match self.cli.kind_run(&delete_args(name)) {
            Ok(_) => tracing::info!(cluster = %name, elapsed = ?started.elapsed(), "kind cluster deleted"),
            Err(e) => {
                // kind may not be runnable any more; remove the node containers directly.
                eprintln!("kube-harness: could not delete kind cluster {name}: {e}");
                let _ = run(&[
                    "docker".into(),
                    "rm".into(),
                    "-f".into(),
                    "-v".into(),
                    format!("{name}-control-plane"),
                ]);
            }
        }
    }
}

#[cfg(test)]
mod tests;
