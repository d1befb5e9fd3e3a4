//! Child supervision: no process or run directory outlives its owner.
//!
//! - Children are spawned from one dedicated thread that lives as long as the process, with
//!   `PR_SET_PDEATHSIG=SIGKILL`. The kernel ties that signal to the *thread* that forked, so a
//!   short-lived spawning thread (tokio's blocking pool) would kill children early, and spawning
//!   from a thread that never ends means they die exactly when the process does: on a normal
//!   exit with a cluster held in a `static`, on a panic that aborts, on SIGKILL.
//! - Each child leads its own process group; stopping sends SIGTERM to the group, waits a grace
//!   period, then SIGKILL.
//! - Run directories are registered with a tiny reaper (`/bin/sh` reading a pipe). When this
//!   process ends in any way, the pipe closes and the reaper deletes every directory it was
//!   told about. Directories removed normally are simply gone already.

mod reaper;
mod rundir;

use std::ffi::OsString;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::net::{Ipv4Addr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;

pub(crate) use rundir::RunDir;
#[cfg(feature = "cli")]
pub(crate) use rundir::run_root;

use crate::error::{Error, Result};

type SpawnReply = mpsc::Sender<std::io::Result<std::process::Child>>;

/// Spawn `command` from the long-lived spawner thread.
fn spawn_from_keeper(command: Command) -> std::io::Result<std::process::Child> {
    static KEEPER: OnceLock<Mutex<mpsc::Sender<(Command, SpawnReply)>>> = OnceLock::new();
    let sender = KEEPER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<(Command, SpawnReply)>();
        // The thread ends only when the process does: the sender lives in a static.
        let spawned = std::thread::Builder::new()
            .name("kube-harness-spawner".into())
            .spawn(move || {
                for (mut command, reply) in rx {
                    // A closed reply channel means the caller is gone; the child is then
                    // dropped (not waited) and still dies with this process.
                    let _ = reply.send(command.spawn());
                }
            });
        if let Err(e) = spawned {
            tracing::error!(error = &e as &dyn std::error::Error, "cannot start the spawner thread");
        }
        Mutex::new(tx)
    });
    let (reply_tx, reply_rx) = mpsc::channel();
    let sent = match sender.lock() {
        Ok(tx) => tx.send((command, reply_tx)).is_ok(),
        Err(poisoned) => poisoned.into_inner().send((command, reply_tx)).is_ok(),
    };
    if !sent {
        return Err(std::io::Error::other("the kube-harness spawner thread is not running"));
    }
    reply_rx
        .recv()
        .unwrap_or_else(|_| Err(std::io::Error::other("the kube-harness spawner thread stopped")))
}

/// Set up `command` so the child leads its own process group and is SIGKILLed when the
/// spawning thread (the keeper, alive as long as this process) ends.
#[allow(unsafe_code)]
fn die_with_parent(command: &mut Command) {
    use std::os::unix::process::CommandExt;
    let parent = nix::unistd::getpid();
    command.process_group(0);
    // SAFETY: the closure runs between fork and exec and only makes async-signal-safe
    // system calls (prctl, getppid); it allocates nothing and takes no locks.
    unsafe {
        command.pre_exec(move || {
            nix::sys::prctl::set_pdeathsig(Signal::SIGKILL).map_err(std::io::Error::from)?;
            // The parent may have died between fork and prctl: then nobody would kill us.
            if nix::unistd::getppid() != parent {
                return Err(std::io::Error::other("parent exited during spawn"));
            }
            Ok(())
        });
    }
}

/// A free TCP port on 127.0.0.1, as the kernel hands it out. Another process may take it
/// before the child binds it; callers retry with a new port when that happens.
///
/// # Errors
/// [`Error::Ports`] if binding fails.
pub(crate) fn free_port(component: &'static str) -> Result<u16> {
    TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| Error::Ports {
            component,
            attempts: 1,
            detail: e.to_string(),
        })
}

/// What to run.
#[derive(Debug, Clone)]
pub(crate) struct ChildSpec {
    /// Name used in logs and errors ("etcd", "kube-apiserver").
    pub component: &'static str,
    /// The executable.
    pub program: PathBuf,
    /// Its arguments.
    pub args: Vec<OsString>,
    /// Where stdout and stderr go.
    pub log: PathBuf,
    /// Working directory.
    pub cwd: Option<PathBuf>,
    /// Environment variables set on top of this process's environment.
    pub env: Vec<(OsString, OsString)>,
    /// How it shows it is ready ([`Child::start`] waits for it).
    pub readiness: crate::wait::Readiness,
}

impl ChildSpec {
    /// `program` as `component`, logging to `log`: no arguments, in this directory, with this
    /// process's environment, ready as soon as it is spawned. Set the other fields as needed.
    pub(crate) fn new(component: &'static str, program: impl Into<PathBuf>, log: impl Into<PathBuf>) -> Self {
        Self {
            component,
            program: program.into(),
            args: Vec::new(),
            log: log.into(),
            cwd: None,
            env: Vec::new(),
            readiness: crate::wait::Readiness::Spawned,
        }
    }
}

fn runnable_command_line(spec: &ChildSpec) -> Vec<OsString> {
    let mut line = Vec::new();
    if !spec.env.is_empty() {
        line.push(OsString::from("env"));
        for (name, value) in &spec.env {
            let mut pair = name.clone();
            pair.push("=");
            pair.push(value);
            line.push(pair);
        }
    }
    line.push(spec.program.clone().into_os_string());
    line.extend(spec.args.iter().cloned());
    line
}

/// A supervised child process. Dropping it stops it.
#[derive(Debug)]
pub struct Child {
    component: &'static str,
    command: Vec<OsString>,
    pid: u32,
    log: PathBuf,
    inner: Mutex<std::process::Child>,
    exit: Mutex<Option<ExitStatus>>,
}

impl Child {
    /// Spawn the child with its output appended to `spec.log`.
    ///
    /// # Errors
    /// [`Error::Spawn`] if the executable cannot be started, [`Error::Io`] if the log file
    /// cannot be created.
    /// Spawn `spec` and wait until it is ready as its [`ChildSpec::readiness`] says.
    ///
    /// # Errors
    /// [`Error::Spawn`], [`Error::ExitedBeforeReady`] and [`Error::StartupTimeout`] with the
    /// log's tail (the child is stopped then).
    pub(crate) async fn start(spec: &ChildSpec, timeout: Duration) -> Result<Self> {
        let child = Self::spawn(spec)?;
        wait_for(&child, &spec.readiness, timeout).await?;
        Ok(child)
    }

    /// Spawn `spec` without waiting for it.
    ///
    /// # Errors
    /// [`Error::Spawn`].
    pub(crate) fn spawn(spec: &ChildSpec) -> Result<Self> {
        let log = File::options()
            .create(true)
            .append(true)
            .open(&spec.log)
            .map_err(Error::io("create log file", &spec.log))?;
        let log_err = log.try_clone().map_err(Error::io("duplicate log handle", &spec.log))?;
        let mut command = Command::new(&spec.program);
        command
            .args(&spec.args)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log_err);
        if let Some(cwd) = &spec.cwd {
            command.current_dir(cwd);
        }
        command.envs(spec.env.iter().map(|(k, v)| (k, v)));
        die_with_parent(&mut command);
        let child = spawn_from_keeper(command).map_err(|source| Error::Spawn {
            binary: spec.program.clone(),
            source,
        })?;
        tracing::debug!(component = spec.component, pid = child.id(), log = ?spec.log, "spawned");
        Ok(Self {
            component: spec.component,
            command: runnable_command_line(spec),
            pid: child.id(),
            log: spec.log.clone(),
            inner: Mutex::new(child),
            exit: Mutex::new(None),
        })
    }

    /// The program and its arguments, as spawned; prefixed with `env NAME=value …` when
    /// variables were set, so the line can be run again from a shell.
    pub fn command(&self) -> &[OsString] {
        &self.command
    }

    /// The process id (also its process group id).
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The component name.
    pub fn component(&self) -> &'static str {
        self.component
    }

    /// Its log file.
    pub fn log(&self) -> &Path {
        &self.log
    }

    /// The last `lines` lines of its log.
    pub fn log_tail(&self, lines: usize) -> String {
        tail(&self.log, lines)
    }

    /// The exit status if it has exited, without blocking.
    pub fn try_exit(&self) -> Option<ExitStatus> {
        let mut exit = self.exit.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if exit.is_none() {
            let mut child = self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            *exit = child.try_wait().ok().flatten();
        }
        *exit
    }

    /// The error to report when the child exited while it was expected to run.
    pub(crate) fn exited_error(&self, status: ExitStatus) -> Error {
        Error::ExitedBeforeReady {
            component: self.component,
            status: status.to_string(),
            log: self.log.clone(),
            tail: self.log_tail(30),
        }
    }

    /// The error to report when the child exited while it was in use.
    pub(crate) fn exited_in_use_error(&self, status: ExitStatus) -> Error {
        Error::Exited {
            component: self.component,
            status: status.to_string(),
            log: self.log.clone(),
            tail: self.log_tail(30),
        }
    }

    /// Stop the process group: SIGTERM, wait up to `grace`, then SIGKILL. Idempotent.
    pub fn stop(&self, grace: Duration) {
        let started = Instant::now();
        self.stop_inner(grace);
        tracing::debug!(component = self.component, pid = self.pid, elapsed = ?started.elapsed(), "stopped");
    }

    /// Kill the process group at once (SIGKILL) and collect the exit status: for children
    /// whose state is thrown away anyway. Idempotent.
    pub fn kill(&self) {
        let _ = killpg(self.pgid(), Signal::SIGKILL);
        self.collect();
    }

    fn collect(&self) {
        if self.try_exit().is_some() {
            return;
        }
        let mut child = self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Ok(status) = child.wait() {
            *self.exit.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(status);
        }
    }

    fn stop_inner(&self, grace: Duration) {
        if self.try_exit().is_some() {
            // The leader is gone; make sure nothing else of its group lingers.
            let _ = killpg(self.pgid(), Signal::SIGKILL);
            return;
        }
        let _ = killpg(self.pgid(), Signal::SIGTERM);
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if self.try_exit().is_some() {
                let _ = killpg(self.pgid(), Signal::SIGKILL);
                return;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        tracing::warn!(
            component = self.component,
            pid = self.pid,
            ?grace,
            "did not stop after SIGTERM; sending SIGKILL"
        );
        self.kill();
    }

    fn pgid(&self) -> Pid {
        Pid::from_raw(i32::try_from(self.pid).unwrap_or(i32::MAX))
    }
}

impl Drop for Child {
    fn drop(&mut self) {
        self.stop(Duration::from_secs(5));
    }
}

/// Run blocking `work` (a build, a CLI call) on tokio's blocking pool.
///
/// # Errors
/// `work`'s own error, or [`Error::Task`] for `what` if it panicked.
pub(crate) async fn blocking<T: Send + 'static>(
    what: &'static str,
    work: impl FnOnce() -> Result<T> + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|source| Error::Task { what, source })?
}

/// An error and its sources, `: `-separated (reqwest's own Display hides the cause, such as
/// "Connection refused").
pub(crate) fn error_chain(err: &dyn std::error::Error) -> String {
    let mut out = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = cause.source();
    }
    out
}

/// Whether `pid` is a live process (not a zombie, which has exited and only waits to be
/// collected). Linux: reads `/proc`.
pub fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        stat.rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z")
    })
}

/// TCP ports `pid` is listening on (IPv4 and IPv6), from its socket inodes and
/// `/proc/net/tcp*`. Linux only; empty if `/proc` cannot be read.
pub(crate) fn listening_ports(pid: u32) -> Vec<u16> {
    let mut inodes = std::collections::HashSet::new();
    if let Ok(fds) = std::fs::read_dir(format!("/proc/{pid}/fd")) {
        for fd in fds.flatten() {
            if let Ok(target) = std::fs::read_link(fd.path()) {
                let target = target.to_string_lossy();
                if let Some(inode) = target.strip_prefix("socket:[").and_then(|s| s.strip_suffix(']')) {
                    inodes.insert(inode.to_owned());
                }
            }
        }
    }
    let mut ports = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let fields: Vec<&str> = line.split_whitespace().collect();
            // local_address is field 1 (ADDR:PORT in hex), st field 3 (0A = LISTEN), inode 9.
            if fields.len() > 9
                && fields[3] == "0A"
                && inodes.contains(fields[9])
                && let Some(port) = fields[1]
                    .rsplit(':')
                    .next()
                    .and_then(|p| u16::from_str_radix(p, 16).ok())
            {
                ports.push(port);
            }
        }
    }
    ports
}

/// Pids of the processes in process group `pgid` that are still running (zombies, which have
/// exited and only wait to be collected, are not counted). Linux only: reads `/proc`.
pub fn live_group_members(pgid: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
                return false;
            };
            // Fields after the command name: state, ppid, pgrp, …
            let Some((_, rest)) = stat.rsplit_once(')') else {
                return false;
            };
            let fields: Vec<&str> = rest.split_whitespace().collect();
            fields.first().is_some_and(|s| *s != "Z") && fields.get(2).and_then(|g| g.parse::<u32>().ok()) == Some(pgid)
        })
        .collect()
}

/// The last `lines` lines of a text file (at most 64 KiB are read); empty if unreadable.
pub(crate) fn tail(path: &Path, lines: usize) -> String {
    const MAX: u64 = 64 * 1024;
    let Ok(mut file) = File::open(path) else {
        return String::new();
    };
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    let _ = file.seek(SeekFrom::Start(len.saturating_sub(MAX)));
    let mut buf = Vec::new();
    let _ = file.read_to_end(&mut buf);
    let text = String::from_utf8_lossy(&buf);
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// Wait until `probe` succeeds, the child exits, or `timeout` runs out. Polls with a short
/// backoff (2 ms doubling to 50 ms).
pub(crate) async fn wait_ready<F, Fut>(child: &Child, timeout: Duration, mut probe: F) -> Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = std::result::Result<(), String>>,
{
    let start = Instant::now();
    let mut delay = Duration::from_millis(2);
    let mut last: String;
    let mut forbidden_since: Option<Instant> = None;
    loop {
        if let Some(status) = child.try_exit() {
            return Err(child.exited_error(status));
        }
        match probe().await {
            Ok(()) => return Ok(()),
            Err(e) => last = e,
        }
        // A backend that logs a request its identity may not make, and is still not ready
        // FORBIDDEN_GRACE later (RBAC reaches the authorizer a moment after it is written),
        // is failed now rather than at the timeout; the caller names the line and the grant.
        if child.component == "backend" && forbidden_since.is_none() && logs_forbidden(&child.log) {
            tracing::warn!(log = %child.log.display(), "the backend logged a forbidden request while starting");
            forbidden_since = Some(Instant::now());
        }
        let forbidden_too_long = forbidden_since.is_some_and(|t| t.elapsed() >= FORBIDDEN_GRACE);
        if forbidden_too_long {
            last = format!(
                "{last}; the backend logged a forbidden request and was still not ready {} s later",
                FORBIDDEN_GRACE.as_secs()
            );
        }
        if start.elapsed() >= timeout || forbidden_too_long {
            return Err(Error::StartupTimeout {
                component: child.component,
                timeout: if forbidden_too_long {
                    Duration::from_secs(start.elapsed().as_secs())
                } else {
                    timeout
                },
                last_probe: last,
                log: child.log.clone(),
                tail: child.log_tail(30),
            });
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_millis(50));
    }
}

/// How long a starting backend may go on after logging a forbidden request before its start
/// fails (instead of waiting out its whole start timeout).
const FORBIDDEN_GRACE: Duration = Duration::from_secs(5);

/// Whether a log holds an authorization denial in kube-apiserver's words.
fn logs_forbidden(log: &Path) -> bool {
    std::fs::read_to_string(log).is_ok_and(|text| text.contains(" is forbidden: User "))
}

/// A short-timeout HTTP client for readiness probes that trusts `ca_pem` (nothing, for plain
/// HTTP) and authenticates with `cert` if given.
pub(crate) fn probe_client(ca_pem: &str, cert: Option<&crate::pki::KeyedCert>) -> Result<reqwest::Client> {
    reqwest::Client::builder()
        .tls_backend_preconfigured(crate::pki::rustls_client_config(ca_pem, cert)?)
        .timeout(Duration::from_secs(2))
        .build()
        .map_err(|e| Error::Client(Box::new(e)))
}

/// Wait until `child` is ready as `readiness` says, it exits, or `timeout` runs out.
pub(crate) async fn wait_for(child: &Child, readiness: &crate::wait::Readiness, timeout: Duration) -> Result<()> {
    use crate::wait::Readiness;
    match readiness {
        Readiness::Spawned => Ok(()),
        Readiness::Http { url, client, body } => {
            wait_ready(child, timeout, || {
                let req = client.get(url);
                async move {
                    let resp = req
                        .send()
                        .await
                        .map_err(|e| format!("GET {url}: {}", error_chain(&e)))?;
                    let status = resp.status();
                    let text = resp.text().await.unwrap_or_default();
                    if status.is_success() && body.as_deref().is_none_or(|b| text.contains(b)) {
                        Ok(())
                    } else {
                        Err(format!("GET {url}: {status}: {text}"))
                    }
                }
            })
            .await
        }
        Readiness::Log(needle) => {
            let log = child.log().to_owned();
            wait_ready(child, timeout, || {
                let found = std::fs::read_to_string(&log).is_ok_and(|text| text.contains(needle.as_str()));
                async move {
                    if found {
                        Ok(())
                    } else {
                        Err(format!("{needle:?} not yet in the log"))
                    }
                }
            })
            .await
        }
        Readiness::Tcp(port) => {
            let port = *port;
            wait_ready(child, timeout, || async move {
                tokio::net::TcpStream::connect(("127.0.0.1", port))
                    .await
                    .map(drop)
                    .map_err(|e| format!("connect 127.0.0.1:{port}: {e}"))
            })
            .await
        }
    }
}

#[cfg(test)]
mod tests;
