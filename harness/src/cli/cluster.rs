//! The options every command that starts a cluster shares (`--nodes`, `--apiserver-arg`,
//! `--feature-gates`, `--load-image`, `--publish`), and that start.

use anyhow::Context as _;
use clap::Args;

use crate::Cluster;
use crate::assets::KubeVersion;
use crate::provider::{Provider, StartOptions};

/// The cluster options, global to every command.
#[derive(Debug, Args)]
pub(super) struct ClusterArgs {
    /// Local plane: this many fake nodes (kube-scheduler binds Pods, kwok makes them Running;
    /// no container runs). kind and k3s have real nodes.
    #[arg(long, global = true, env = "KUBE_HARNESS_NODES", value_name = "N")]
    pub(super) nodes: Option<u32>,
    /// Local and kind: a kube-apiserver flag, NAME=VALUE (repeatable; also
    /// KUBE_HARNESS_APISERVER_ARGS, whitespace-separated items).
    #[arg(long = "apiserver-arg", global = true, value_name = "NAME=VALUE")]
    pub(super) apiserver_args: Vec<String>,
    /// Local and kind: feature gates for every component, A=false,B=true (repeatable; also
    /// KUBE_HARNESS_FEATURE_GATES). One the version does not know is refused before start.
    #[arg(long = "feature-gates", global = true, value_name = "A=false,B=true")]
    pub(super) feature_gates: Vec<String>,
    /// kind: load this local Docker image into the nodes after start (repeatable; never
    /// pulled: an absent image is an error before start).
    #[arg(long = "load-image", global = true, value_name = "IMAGE")]
    pub(super) load_images: Vec<String>,
    /// kind: publish a node port on 127.0.0.1, [HOST:]NODE (0:NODE for any free host port;
    /// repeatable); exec's command gets KUBE_HARNESS_PORT_<NODE>=127.0.0.1:<HOST>.
    #[arg(long = "publish", global = true, value_name = "[HOST:]NODE")]
    pub(super) publish: Vec<String>,
}

impl ClusterArgs {
    /// The same options as command-line arguments, for `up --detach`'s background process
    /// (their variables reach it through the environment).
    pub(super) fn as_args(&self) -> Vec<String> {
        let mut args = Vec::new();
        if let Some(n) = self.nodes {
            args.extend(["--nodes".to_owned(), n.to_string()]);
        }
        let repeated = [
            ("--apiserver-arg", &self.apiserver_args),
            ("--feature-gates", &self.feature_gates),
            ("--load-image", &self.load_images),
            ("--publish", &self.publish),
        ];
        for (flag, values) in repeated {
            for value in values {
                args.extend([flag.to_owned(), value.clone()]);
            }
        }
        args
    }
}

/// Checks the options against `provider` and keeps them for [`start`] (one command per
/// process).
pub(super) fn configure(args: &ClusterArgs, provider: Provider) -> anyhow::Result<()> {
    if args.nodes.is_some_and(|n| n > 0) && provider != Provider::Local {
        anyhow::bail!("--nodes (KUBE_HARNESS_NODES) is for the local plane; {provider} clusters have real nodes");
    }
    let _ = NODES.set(args.nodes);
    let mut flags = StartOptions::default();
    for item in &args.apiserver_args {
        let (name, value) = crate::provider::flags::parse_arg(item).context("--apiserver-arg")?;
        flags = flags.with_apiserver_arg(name, value);
    }
    for list in &args.feature_gates {
        for (gate, on) in crate::provider::flags::parse_gates(list).context("--feature-gates")? {
            flags = flags.with_feature_gate(gate, on);
        }
    }
    for item in &args.publish {
        let (host, node) = crate::provider::kind::parse_port_mapping(item).context("--publish")?;
        flags = flags.with_published_port_at(host, node);
    }
    if (!args.publish.is_empty() || !args.load_images.is_empty()) && provider != Provider::Kind {
        anyhow::bail!(
            "--publish and --load-image are for kind (--provider kind): the {provider} provider has no node container to publish from or load into"
        );
    }
    for image in &args.load_images {
        if !crate::provider::docker_image_present(image) {
            anyhow::bail!(
                "--load-image {image}: no such image in the local Docker engine (kube-harness never pulls; `docker build` or `docker load` it first)"
            );
        }
    }
    let _ = FLAGS.set(flags);
    let _ = IMAGES.set(args.load_images.clone());
    Ok(())
}

/// `--nodes`, when given.
pub(super) fn nodes() -> Option<u32> {
    NODES.get().copied().flatten()
}

/// `--nodes`, as parsed (one command per process).
static NODES: std::sync::OnceLock<Option<u32>> = std::sync::OnceLock::new();
/// `--apiserver-arg` and `--feature-gates`, as parsed, in otherwise default options.
static FLAGS: std::sync::OnceLock<StartOptions> = std::sync::OnceLock::new();
/// `--load-image`, as given.
static IMAGES: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();

/// Every command's cluster: [`crate::provider::start`], waiting for every `/readyz` check
/// (tools outside the process expect it).
pub(super) async fn start(provider: Provider, version: KubeVersion) -> anyhow::Result<Cluster> {
    let what = match provider {
        Provider::Local => format!("starting Kubernetes {version} (etcd + kube-apiserver)"),
        Provider::Existing => "connecting to the existing cluster (KUBECONFIG)".to_owned(),
        other => format!("starting a {other} cluster of Kubernetes {version}"),
    };
    let options = FLAGS.get().cloned().unwrap_or_default().with_strict_readyz();
    let options = match NODES.get().copied().flatten() {
        Some(count) => options.with_nodes(count),
        None => options,
    };
    let cluster = crate::progress::step(&what, crate::provider::start(provider, version, options)).await?;
    for image in IMAGES.get().map(Vec::as_slice).unwrap_or_default() {
        crate::progress::step(
            &format!("loading image {image} into the nodes"),
            cluster.load_image(image),
        )
        .await?;
    }
    let t = cluster.timings();
    if provider != Provider::Local {
        // kind and k3s start as one step of their tool; an existing cluster is only reached.
        eprintln!(
            "kube-harness: ready in {:.2}s ({}{})",
            t.total.as_secs_f64(),
            tool_phases(&cluster),
            cluster.describe()
        );
        return Ok(cluster);
    }
    let nodes = match NODES.get().copied().flatten() {
        Some(count) if count > 0 && provider == Provider::Local => {
            format!(", {count} kwok node(s) {:.2}s", t.nodes.as_secs_f64())
        }
        _ => String::new(),
    };
    eprintln!(
        "kube-harness: ready in {:.2}s (binaries {:.2}s, etcd {:.2}s, kube-apiserver {:.2}s{nodes})",
        t.total.as_secs_f64(),
        t.assets.as_secs_f64(),
        t.etcd.as_secs_f64(),
        t.apiserver.as_secs_f64()
    );
    Ok(cluster)
}

/// What `up` prints to put first on `PATH`: [`Cluster::tool_dirs`], joined.
pub(super) fn path_prefix(cluster: &Cluster) -> anyhow::Result<std::ffi::OsString> {
    Ok(std::env::join_paths(cluster.tool_dirs())?)
}

/// `KUBE_HARNESS_PORT_<node port>=127.0.0.1:<host port>` for each published node port.
pub(super) fn port_variables(cluster: &Cluster) -> Vec<(String, String)> {
    cluster
        .published_ports()
        .into_iter()
        .map(|(node, at)| (format!("KUBE_HARNESS_PORT_{node}"), at.to_string()))
        .collect()
}

/// kind's and k3s's phases of a start, for the `ready in` lines: `kind create 24.1s, nodes
/// Ready and kube-proxy 3.2s; `; empty for other providers.
pub(super) fn tool_phases(cluster: &Cluster) -> String {
    let t = cluster.timings();
    match cluster.provider() {
        Provider::Kind => format!(
            "kind create {:.1}s, nodes Ready and kube-proxy {:.1}s; ",
            t.create.as_secs_f64(),
            t.nodes.as_secs_f64()
        ),
        Provider::K3s => format!("k3s container {:.1}s; ", t.create.as_secs_f64()),
        _ => String::new(),
    }
}
