//! The `kube-harness` command line (`up`, `down`, `exec`, `verify`, `assets`), behind the
//! `cli` feature: the binary calls [`main`]. Every command takes `--provider` and starts its
//! cluster through [`provider::start`](crate::provider::start).

mod cluster;
mod detach;
mod init;
mod verify;

use cluster::{path_prefix, port_variables, start};

use std::path::PathBuf;
use std::process::ExitCode;

use crate::Cluster;
use crate::assets::{KubeVersion, Resolver};
use crate::provider::Provider;
use crate::target::{RunningTarget, Target};
use anyhow::Context as _;
use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "kube-harness",
    version,
    about = "Real Kubernetes control planes (etcd + kube-apiserver with the aggregation layer) for tests",
    after_help = "Examples:\n  \
kube-harness verify                                  check every target under fixtures/targets\n  \
kube-harness verify --target wardle --junit j.xml    one target, with a JUnit report\n  \
kube-harness exec --fixtures DIR -- kubectl get -A   a cluster with a target, for one command\n  \
kube-harness up --detach --env-file c.env            one cluster for many test processes\n\n\
Environment: KUBE_HARNESS_PROVIDER, KUBE_HARNESS_ASSETS, KUBE_HARNESS_CACHE, KUBE_HARNESS_KEEP=1,\n\
KUBE_HARNESS_LOG, KUBE_HARNESS_PROGRESS=plain (see the README)."
)]
struct Cli {
    /// Kubernetes version to run (`verify` takes several, comma-separated: one cluster each).
    #[arg(long = "k8s-version", global = true, env = "KUBE_HARNESS_K8S_VERSION", default_value = crate::assets::DEFAULT_KUBERNETES_VERSION)]
    k8s_version: String,
    /// Where the cluster comes from: local (started here), existing (KUBECONFIG), kind or
    /// k3s (need Docker, the CLI and a local image).
    #[arg(long, global = true, env = "KUBE_HARNESS_PROVIDER", default_value = "local")]
    provider: String,
    #[command(flatten)]
    cluster: cluster::ClusterArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Start a control plane and keep it running until Ctrl-C (or SIGTERM).
    Up {
        /// Also write the admin kubeconfig here.
        #[arg(long)]
        kubeconfig: Option<PathBuf>,
        /// A target directory to bring up (backend started, objects applied, APIServices
        /// Available) before the cluster is handed over. Repeatable.
        #[arg(long = "fixtures", value_name = "DIR")]
        fixtures: Vec<PathBuf>,
        /// Run in the background and return once the cluster is ready; stop it with
        /// `kube-harness down`. Test processes attach to it through `KUBE_HARNESS_CLUSTER`.
        #[arg(long)]
        detach: bool,
        /// Append `KUBE_HARNESS_CLUSTER=…` and `KUBECONFIG=…` lines to this file (a
        /// cargo-nextest setup script passes `$NEXTEST_ENV`).
        #[arg(long, value_name = "FILE")]
        env_file: Option<PathBuf>,
        /// Stop when the process with this pid exits (for runners with no teardown step).
        #[arg(long, value_name = "PID")]
        stop_with: Option<u32>,
        /// Internal: the background half of --detach.
        #[arg(long, hide = true)]
        serve_detached: bool,
    },
    /// Stop a cluster started with `up --detach` and wait until its processes are gone.
    Down {
        /// The env file `up --detach --env-file` wrote.
        #[arg(long, value_name = "FILE")]
        env_file: Option<PathBuf>,
        /// The handle file (the `KUBE_HARNESS_CLUSTER` value); default: that variable.
        #[arg(long, value_name = "FILE")]
        cluster: Option<PathBuf>,
    },
    /// Start a control plane, run a command with KUBECONFIG set and the binaries on PATH,
    /// stop, and exit with the command's status.
    Exec {
        /// A target directory to bring up before the command runs. Repeatable.
        #[arg(long = "fixtures", value_name = "DIR")]
        fixtures: Vec<PathBuf>,
        /// The command and its arguments.
        #[arg(trailing_var_arg = true, required = true, allow_hyphen_values = true)]
        command: Vec<String>,
    },
    /// Release check: start a cluster, bring up each target directory, check it (APIServices
    /// Available, groups in /apis and aggregated discovery, resource lists, CRDs Established,
    /// the target's expectations.yaml: access, CRUD snapshots, FailedDiscoveryCheck; backend
    /// alive, clean teardown), print a table per target. Exit 0 only if all pass.
    Verify {
        /// Target directories, or directories of target directories.
        #[arg(default_value = "fixtures/targets")]
        dirs: Vec<PathBuf>,
        /// Also write a JUnit XML report here (one testcase per check).
        #[arg(long, value_name = "FILE")]
        junit: Option<PathBuf>,
        /// Where failure bundles go (logs, APIServices, CRDs, events): one subdirectory per
        /// failed target.
        #[arg(long, value_name = "DIR", default_value = crate::target::sources::FAILURE_BUNDLES)]
        bundle: PathBuf,
        /// Verify only the target with this name (its `metadata.name`, else its directory
        /// name). Repeatable.
        #[arg(long = "target", value_name = "NAME")]
        only: Vec<String>,
        /// When a check fails, keep the control plane running (KUBECONFIG printed) until
        /// Ctrl-C, to look around beside the failure bundle; it is still removed afterwards.
        #[arg(long)]
        keep_on_failure: bool,
        /// Fail the run if the control plane takes longer than this many seconds to start
        /// (reported as a check, so JUnit shows it).
        #[arg(long, value_name = "SECONDS")]
        budget: Option<f64>,
        /// Show one line per failed check instead of everything it saw.
        #[arg(long)]
        quiet: bool,
        /// Write CRUD answers that differ from (or lack) their snapshot in the target's
        /// `snapshots/` directory, for review (like `cargo insta accept`); those checks pass.
        #[arg(long)]
        update: bool,
    },
    /// In an operator crate: write a first integration test (`tests/kube_harness.rs`: the CRD
    /// from its Rust type, the controller as admin and as its ServiceAccount with the RBAC its
    /// deploy manifests ship, a status assertion) and a verify target
    /// (`fixtures/targets/<package>/`), from its `#[derive(CustomResource)]` types and deploy
    /// manifests. Never overwrites a file.
    Init {
        /// The operator crate's directory.
        #[arg(default_value = ".")]
        dir: PathBuf,
        /// The package, when the directory is a workspace of several.
        #[arg(long, short = 'p')]
        package: Option<String>,
        /// The controller's binary, when the package has several.
        #[arg(long)]
        bin: Option<String>,
        /// Where the deploy manifests are (default: the crate's config/, deploy/, manifests/,
        /// k8s/, yaml/… that exist). Repeatable.
        #[arg(long, value_name = "DIR")]
        manifests: Vec<PathBuf>,
    },
    /// Print the directory holding kube-apiserver, etcd and kubectl, building them if needed;
    /// also build kube-controller-manager unless KUBE_HARNESS_CONTROLLERS=0 (its path goes to
    /// stderr), and with `--nodes N` kube-scheduler and kwok (`NAME=PATH` to stdout).
    Assets {
        /// Also build (or find) this Kubernetes component from the same module, such as
        /// kubelet, kubeadm, kube-scheduler or kube-proxy, and print `NAME=PATH` to stdout.
        /// Repeatable.
        #[arg(long = "component", value_name = "NAME")]
        components: Vec<String>,
    },
}

/// Run the command line with this process's arguments.
pub fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("KUBE_HARNESS_LOG")
                // kube's client logs every non-2xx answer as an ERROR; the checks expect many
                // (a webhook answering 500 until it is reachable, 403s, 404s) and report what
                // they saw themselves.
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn,kube_client::client::builder=off")),
        )
        .with_writer(std::io::stderr)
        // Colour codes only on a terminal: redirected output (CI logs, files) stays plain.
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("kube-harness: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            let message = describe(&e);
            eprintln!("kube-harness: error: {message}");
            // Errors point at logs in the run directory, which went with the cluster.
            let root = crate::process::run_root();
            if message.contains(&*root.to_string_lossy())
                && std::env::var_os("KUBE_HARNESS_KEEP").is_none_or(|v| v != "1")
            {
                eprintln!(
                    "kube-harness: the logs named above were removed with the cluster; rerun with KUBE_HARNESS_KEEP=1 to keep them (under {})",
                    root.display()
                );
            }
            ExitCode::FAILURE
        }
    }
}

/// An error and its causes, each cause shown once: the library's messages already carry
/// their causes' words, so a cause whose text the message before it holds is not repeated.
fn describe(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if !out.contains(&text) {
            if !out.is_empty() {
                out.push_str(": ");
            }
            out.push_str(&text);
        }
    }
    out
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let versions = cli
        .k8s_version
        .split(',')
        .map(|v| KubeVersion::parse(v.trim()))
        .collect::<Result<Vec<_>, _>>()?;
    let version = match (&cli.command, versions.as_slice()) {
        (_, [one]) => *one,
        (Command::Verify { .. }, [first, ..]) => *first,
        _ => anyhow::bail!("several versions ({}) are for `verify` only", cli.k8s_version),
    };
    let provider: Provider = cli.provider.parse()?;
    cluster::configure(&cli.cluster, provider)?;
    match cli.command {
        Command::Init {
            dir,
            package,
            bin,
            manifests,
        } => init::run(&init::InitArgs {
            dir,
            package,
            bin,
            manifests,
        }),
        Command::Assets { components } => {
            let assets = Resolver::new(version).resolve_async().await?;
            for name in components {
                if !name.starts_with("kube") || name.contains(['/', '.']) {
                    anyhow::bail!(
                        "--component {name:?}: expected a k8s.io/kubernetes command such as kubelet or kube-proxy"
                    );
                }
                let label = name.clone();
                let path = crate::process::blocking("component", move || Resolver::new(version).component(&name))
                    .await
                    .with_context(|| format!("building {label}"))?;
                println!("{label}={}", path.display());
            }
            if let Some(count) = cluster::nodes()
                && count > 0
            {
                let nodes = crate::process::blocking("kube-scheduler and kwok", move || {
                    Resolver::new(version).node_binaries()
                })
                .await?;
                println!("kube-scheduler={}", nodes.scheduler.display());
                println!("kwok={}", nodes.kwok.display());
            }
            if crate::provider::local::controllers::from_env()
                .map_err(anyhow::Error::msg)?
                .is_some()
            {
                let kcm = crate::process::blocking("kube-controller-manager", move || {
                    Resolver::new(version).component("kube-controller-manager")
                })
                .await?;
                eprintln!("kube-controller-manager: {}", kcm.display());
            }
            println!("{}", assets.dir().display());
            Ok(ExitCode::SUCCESS)
        }
        Command::Verify {
            dirs,
            junit,
            bundle,
            only,
            keep_on_failure,
            budget,
            update,
            quiet,
        } => {
            let options = verify::CliVerifyOptions {
                quiet,
                update,
                provider,
                junit,
                bundle,
                only,
                keep_on_failure,
                budget,
            };
            verify::verify(&versions, &dirs, &options).await
        }
        Command::Down { env_file, cluster } => detach::down(cluster.as_deref(), env_file.as_deref()),
        Command::Up {
            kubeconfig,
            fixtures,
            detach: true,
            env_file,
            stop_with,
            serve_detached: false,
        } => {
            anyhow::ensure!(
                provider == Provider::Local,
                "`up --detach` runs a local cluster for other processes to attach to; the {provider} provider's cluster is reachable through its kubeconfig instead (`up --provider {provider} --kubeconfig FILE`)"
            );
            load_targets(&fixtures, version)?;
            // The cluster options given as flags (`--nodes 2 up --detach`) go along.
            let mut args = cli.cluster.as_args();
            args.extend(detach::background_args(
                version,
                kubeconfig.as_deref(),
                &fixtures,
                env_file.as_deref(),
                stop_with,
            ));
            detach::detach(&args)
        }
        Command::Up {
            kubeconfig,
            fixtures,
            env_file,
            stop_with,
            serve_detached: true,
            ..
        } => {
            let (cluster, targets) = bring_up(provider, version, &fixtures, kubeconfig.as_deref()).await?;
            let shown = kubeconfig.as_deref().unwrap_or(cluster.kubeconfig_path());
            let handle = cluster.handle().context("a local cluster has a handle")?;
            detach::announce(&handle, env_file.as_deref(), shown)?;
            // The foreground half has exited and closed the pipe: nothing more goes to stdout.
            if let Ok(null) = std::fs::File::options().write(true).open("/dev/null") {
                let _ = nix::unistd::dup2_stdout(&null);
            }
            detach::wait_for_stop(stop_with).await?;
            tear_down(cluster, targets, kubeconfig.as_deref()).await;
            detach::remove_daemon_log();
            Ok(ExitCode::SUCCESS)
        }
        Command::Up {
            kubeconfig, fixtures, ..
        } => {
            let (cluster, targets) = bring_up(provider, version, &fixtures, kubeconfig.as_deref()).await?;
            let shown = kubeconfig.as_deref().unwrap_or(cluster.kubeconfig_path());
            println!(
                "kube-harness: Kubernetes {} ({provider}) is up at {}",
                cluster.info().version,
                cluster.server_url()
            );
            println!("  export KUBECONFIG={}", shown.display());
            println!("  export PATH={}:$PATH", path_prefix(&cluster)?.to_string_lossy());
            for (name, value) in port_variables(&cluster) {
                println!("  export {name}={value}");
            }
            println!("  logs: {}", cluster.info().run_dir.display());
            println!("Press Ctrl-C to stop.");
            wait_for_shutdown_signal().await?;
            eprintln!("kube-harness: stopping");
            tear_down(cluster, targets, kubeconfig.as_deref()).await;
            Ok(ExitCode::SUCCESS)
        }
        Command::Exec { fixtures, command } => {
            let loaded = load_targets(&fixtures, version)?;
            let cluster = start(provider, version).await?;
            let targets = up_targets(&cluster, &loaded).await?;
            let status = run_command(&cluster, &command).await;
            down_targets(&cluster, targets).await;
            cluster.stop();
            let status = status?;
            Ok(status
                .code()
                .and_then(|c| u8::try_from(c).ok())
                .map_or(ExitCode::FAILURE, ExitCode::from))
        }
    }
}

/// `up`'s start: the cluster, its targets, the kubeconfig copy if asked for.
async fn bring_up(
    provider: Provider,
    version: KubeVersion,
    fixtures: &[PathBuf],
    kubeconfig: Option<&std::path::Path>,
) -> anyhow::Result<(Cluster, Vec<RunningTarget>)> {
    let loaded = load_targets(fixtures, version)?;
    let cluster = start(provider, version).await?;
    let targets = up_targets(&cluster, &loaded).await?;
    if let Some(path) = kubeconfig {
        cluster.write_kubeconfig(path)?;
    }
    Ok((cluster, targets))
}

/// `up`'s end: targets down, cluster stopped, the kubeconfig copy removed.
async fn tear_down(cluster: Cluster, targets: Vec<RunningTarget>, kubeconfig: Option<&std::path::Path>) {
    down_targets(&cluster, targets).await;
    cluster.stop();
    if let Some(path) = kubeconfig {
        let _ = std::fs::remove_file(path);
    }
}

/// Load and check every target `dirs` name (a directory of targets means each of them, the
/// same for every command: [`crate::target::sources::target_dirs`]) before anything starts,
/// so a typo costs no cluster ([`Target::preflight`] included: a backend's cargo binary or Go
/// package that is not there, too).
fn load_targets(dirs: &[PathBuf], version: KubeVersion) -> anyhow::Result<Vec<Target>> {
    let dirs = crate::target::sources::target_dirs(dirs)?;
    let mut loaded = Vec::new();
    for dir in dirs {
        let target = Target::load(&dir)?;
        target.preflight(&version)?;
        loaded.push(target);
    }
    Ok(loaded)
}

async fn up_targets(cluster: &Cluster, loaded: &[Target]) -> anyhow::Result<Vec<RunningTarget>> {
    let mut running = Vec::new();
    for target in loaded {
        let what = format!("bringing up target {} ({})", target.name, target.dir.display());
        match crate::progress::step(&what, cluster.up_target(target)).await {
            Ok(r) => {
                eprintln!(
                    "kube-harness: target {} is up in {:.2}s",
                    target.name,
                    r.timings().total.as_secs_f64()
                );
                running.push(r);
            }
            Err(e) => {
                down_targets(cluster, running).await;
                // The error names the target itself.
                return Err(anyhow::Error::new(e));
            }
        }
    }
    Ok(running)
}

async fn down_targets(cluster: &Cluster, targets: Vec<RunningTarget>) {
    for target in targets.into_iter().rev() {
        let name = target.name().to_owned();
        if let Err(e) = target.down(cluster).await {
            eprintln!("kube-harness: tearing down target {name}: {e}");
        }
    }
}

async fn run_command(cluster: &Cluster, command: &[String]) -> anyhow::Result<std::process::ExitStatus> {
    let (program, args) = command.split_first().context("no command given after --")?;
    let path = std::env::var_os("PATH").unwrap_or_default();
    let mut paths = cluster.tool_dirs();
    paths.extend(std::env::split_paths(&path));
    let mut child = tokio::process::Command::new(program)
        .args(args)
        .env("KUBECONFIG", cluster.kubeconfig_path())
        .env("PATH", std::env::join_paths(paths)?)
        .envs(port_variables(cluster))
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("cannot run {program:?}"))?;
    tokio::select! {
        status = child.wait() => Ok(status?),
        signal = wait_for_shutdown_signal() => {
            signal?;
            let _ = child.start_kill();
            Ok(child.wait().await?)
        }
    }
}

async fn wait_for_shutdown_signal() -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut hup = signal(SignalKind::hangup())?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r?,
        _ = term.recv() => {},
        _ = hup.recv() => {},
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `up --detach` re-runs `up` in the background: the cluster flags given to the foreground
    /// reach it unchanged.
    #[test]
    fn the_cluster_flags_go_along_to_the_background_up() -> anyhow::Result<()> {
        let given = [
            "kube-harness",
            "--nodes",
            "2",
            "--feature-gates",
            "WatchListCompression=false",
            "--apiserver-arg",
            "audit-log-maxage=3",
            "up",
            "--detach",
        ];
        let cli = Cli::try_parse_from(given)?;
        let forwarded = cli.cluster.as_args();
        assert_eq!(
            forwarded,
            [
                "--nodes",
                "2",
                "--apiserver-arg",
                "audit-log-maxage=3",
                "--feature-gates",
                "WatchListCompression=false"
            ]
        );
        let mut again = vec!["kube-harness".to_owned()];
        again.extend(forwarded);
        again.extend(detach::background_args(KubeVersion::default(), None, &[], None, None));
        let background = Cli::try_parse_from(again)?;
        assert_eq!(background.cluster.nodes, Some(2));
        assert_eq!(background.cluster.feature_gates, ["WatchListCompression=false"]);
        assert_eq!(background.cluster.apiserver_args, ["audit-log-maxage=3"]);
        Ok(())
    }
}
