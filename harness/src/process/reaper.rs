//! A watcher that deletes run directories after this process has ended, however it ended.

use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{ChildStdin, Command, Stdio};
use std::sync::{Mutex, OnceLock};

/// Reads one path per line until its stdin closes (this process has exited, whatever the
/// cause), then removes them all. It ignores the signals a terminal sends to its group so a
/// Ctrl-C cannot stop it before it has cleaned up.
const SCRIPT: &str = r#"trap '' INT TERM HUP QUIT
while IFS= read -r d; do set -- "$@" "$d"; done
if [ "$#" -gt 0 ]; then rm -rf -- "$@"; fi"#;

fn reaper_stdin() -> Option<&'static Mutex<ChildStdin>> {
    static REAPER: OnceLock<Option<Mutex<ChildStdin>>> = OnceLock::new();
    REAPER
        .get_or_init(|| {
            let spawned = Command::new("/bin/sh")
                .args(["-c", SCRIPT])
                .stdin(Stdio::piped())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .process_group(0)
                .spawn();
            match spawned {
                Ok(mut child) => child.stdin.take().map(Mutex::new),
                Err(e) => {
                    tracing::warn!(
                        error = &e as &dyn std::error::Error,
                        "cannot start the cleanup watcher; run directories of a killed process will stay until the next run removes them"
                    );
                    None
                }
            }
        })
        .as_ref()
}

/// Ask the reaper to delete `dir` once this process has gone. Returns false if there is no
/// reaper (the next run's stale-directory sweep then removes it).
pub(crate) fn register(dir: &Path) -> bool {
    let bytes = dir.as_os_str().as_bytes();
    if bytes.contains(&b'\n') {
        return false;
    }
    let Some(stdin) = reaper_stdin() else {
        return false;
    };
    let mut stdin = stdin.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
    stdin
        .write_all(bytes)
        .and_then(|()| stdin.write_all(b"\n"))
        .and_then(|()| stdin.flush())
        .is_ok()
}
