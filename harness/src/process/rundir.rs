//! Run directories: one per cluster, private, removed on drop, on exit and after a kill.

use std::path::{Path, PathBuf};
use std::sync::Once;
use std::sync::atomic::{AtomicU32, Ordering};

use crate::error::{Error, Result};
use crate::pki::create_private_dir;

/// Where run directories live: `$KUBE_HARNESS_RUN_ROOT`, else `<tmp>/kube-harness-<uid>`.
pub(crate) fn run_root() -> PathBuf {
    if let Some(dir) = std::env::var_os("KUBE_HARNESS_RUN_ROOT") {
        return PathBuf::from(dir);
    }
    std::env::temp_dir().join(format!("kube-harness-{}", nix::unistd::getuid()))
}

/// A private (0700) directory for one cluster's data, certificates and logs. Dropping it
/// removes it; if the process dies first, the reaper removes it; if even that fails, the
/// next run in any process sweeps it (its owner pid is in the name).
#[derive(Debug)]
pub(crate) struct RunDir {
    path: PathBuf,
}

impl RunDir {
    /// Create `<run root>/<prefix>-<pid>-<n>`.
    ///
    /// # Errors
    /// [`Error::Io`] if the directory cannot be created.
    pub(crate) fn create(prefix: &str) -> Result<Self> {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        static SWEEP: Once = Once::new();
        let root = run_root();
        create_private_dir(&root)?;
        SWEEP.call_once(|| sweep_stale(&root));
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let path = root.join(format!("{prefix}-{}-{n}", std::process::id()));
        if path.exists() {
            std::fs::remove_dir_all(&path).map_err(Error::io("remove stale directory", &path))?;
        }
        create_private_dir(&path)?;
        if keep_requested() {
            // Kept for debugging: the next run's sweep must leave it too.
            let marker = path.join(KEPT_MARKER);
            std::fs::write(&marker, "KUBE_HARNESS_KEEP=1: kept on purpose; remove it by hand\n")
                .map_err(Error::io("write", &marker))?;
        } else {
            super::reaper::register(&path);
        }
        Ok(Self { path })
    }

    /// The directory.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for RunDir {
    fn drop(&mut self) {
        if keep_requested() {
            return;
        }
        if let Err(e) = std::fs::remove_dir_all(&self.path)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(path = ?self.path, error = &e as &dyn std::error::Error, "could not remove run directory");
        }
    }
}

/// `KUBE_HARNESS_KEEP=1`: keep run directories for debugging (also after the process ends).
fn keep_requested() -> bool {
    std::env::var_os("KUBE_HARNESS_KEEP").is_some_and(|v| v == "1")
}

/// The file that marks a run directory kept with `KUBE_HARNESS_KEEP=1`.
const KEPT_MARKER: &str = ".kept";

/// Remove directories whose owner process (the pid in the name) is gone, except those kept
/// on purpose (`KUBE_HARNESS_KEEP=1` when they were made).
fn sweep_stale(root: &Path) {
    let Ok(entries) = std::fs::read_dir(root) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = owner_pid(&name.to_string_lossy()) else {
            continue;
        };
        let alive = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_ok();
        if !alive && !entry.path().join(KEPT_MARKER).exists() {
            tracing::info!(path = ?entry.path(), "removing run directory left by a dead process");
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

/// `<prefix>-<pid>-<n>` → pid.
fn owner_pid(name: &str) -> Option<i32> {
    let mut parts = name.rsplitn(3, '-');
    let _n: u32 = parts.next()?.parse().ok()?;
    let pid: i32 = parts.next()?.parse().ok()?;
    parts.next()?;
    (pid > 0).then_some(pid)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owner_pid_parses_names() {
        assert_eq!(owner_pid("cluster-123-4"), Some(123));
        assert_eq!(owner_pid("my-cluster-77-0"), Some(77));
        assert_eq!(owner_pid("cluster-x-4"), None);
        assert_eq!(owner_pid("lock"), None);
    }

    #[test]
    fn drop_removes_the_directory() -> Result<(), Box<dyn std::error::Error>> {
        let dir = RunDir::create("drop-test")?;
        let path = dir.path().to_owned();
        std::fs::write(path.join("f"), "x")?;
        drop(dir);
        assert!(!path.exists());
        Ok(())
    }
}
