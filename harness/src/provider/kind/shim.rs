//! Hosts whose bounding set lacks a capability (a VM without `CAP_SYS_RESOURCE`): Docker
//! refuses `--privileged` there, so the `kind` subprocess gets a `docker` in front of the real
//! one that replaces it with every capability the host has and the rest of what it implies.

use std::path::{Path, PathBuf};

use super::on_path;
use crate::error::{Error, Result};

/// The capability names by bit, as `capabilities(7)` numbers them.
const CAPABILITIES: [&str; 41] = [
    "CHOWN",
    "DAC_OVERRIDE",
    "DAC_READ_SEARCH",
    "FOWNER",
    "FSETID",
    "KILL",
    "SETGID",
    "SETUID",
    "SETPCAP",
    "LINUX_IMMUTABLE",
    "NET_BIND_SERVICE",
    "NET_BROADCAST",
    "NET_ADMIN",
    "NET_RAW",
    "IPC_LOCK",
    "IPC_OWNER",
    "SYS_MODULE",
    "SYS_RAWIO",
    "SYS_CHROOT",
    "SYS_PTRACE",
    "SYS_PACCT",
    "SYS_ADMIN",
    "SYS_BOOT",
    "SYS_NICE",
    "SYS_RESOURCE",
    "SYS_TIME",
    "SYS_TTY_CONFIG",
    "MKNOD",
    "LEASE",
    "AUDIT_WRITE",
    "AUDIT_CONTROL",
    "SETFCAP",
    "MAC_OVERRIDE",
    "MAC_ADMIN",
    "SYSLOG",
    "WAKE_ALARM",
    "BLOCK_SUSPEND",
    "AUDIT_READ",
    "PERFMON",
    "BPF",
    "CHECKPOINT_RESTORE",
];

/// The capabilities the kernel knows (`cap_last_cap`) that are missing from `status`'s
/// `CapBnd` (the text of `/proc/self/status`).
pub(crate) fn missing_capabilities(status: &str, cap_last_cap: u32) -> Vec<&'static str> {
    let Some(bounding) = status
        .lines()
        .find_map(|l| l.strip_prefix("CapBnd:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
    else {
        return Vec::new();
    };
    (0..=cap_last_cap.min(63))
        .filter(|bit| bounding & (1u64 << bit) == 0)
        .filter_map(|bit| CAPABILITIES.get(bit as usize).copied())
        .collect()
}

pub(crate) fn host_missing_capabilities() -> Vec<&'static str> {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let last = std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(40);
    missing_capabilities(&status, last)
}

/// The `docker` that stands in front of `real` for the kind subprocess on a host missing the
/// capabilities `missing`: on `run` and `create`, `--privileged` becomes every capability but
/// those, no seccomp or AppArmor confinement, unmasked system paths and every device; on
/// `exec` it is dropped (an exec has the container's capabilities).
pub(crate) fn docker_shim(real: &Path, missing: &[&str], fuse: bool) -> String {
    let mut privileged = String::from("--cap-add=ALL");
    for cap in missing {
        privileged.push_str(&format!(" --cap-drop={cap}"));
    }
    privileged.push_str(
        " --security-opt seccomp=unconfined --security-opt apparmor=unconfined \
         --security-opt systempaths=unconfined --device-cgroup-rule='a *:* rwm'",
    );
    if fuse {
        privileged.push_str(" --device /dev/fuse");
    }
    format!(
        "#!/bin/sh\n\
         # kube-harness: kind runs nodes --privileged, which this host refuses (its bounding set\n\
         # lacks {missing}); the same without those capabilities.\n\
         real='{real}'\n\
         case \"$1\" in run|create|exec) ;; *) exec \"$real\" \"$@\" ;; esac\n\
         sub=$1; first=1\n\
         for arg in \"$@\"; do\n\
         \x20 if [ $first = 1 ]; then set --; first=0; fi\n\
         \x20 if [ \"$arg\" = --privileged ]; then\n\
         \x20   [ \"$sub\" = exec ] && continue\n\
         \x20   set -- \"$@\" {privileged}\n\
         \x20   continue\n\
         \x20 fi\n\
         \x20 set -- \"$@\" \"$arg\"\n\
         done\n\
         exec \"$real\" \"$@\"\n",
        missing = missing.join(", "),
        real = real.display(),
    )
}

/// Write the `docker` shim into `<run_dir>/kind-docker/` when this host needs it.
pub(crate) fn prepare_shim(run_dir: &Path) -> Result<Option<PathBuf>> {
    let missing = host_missing_capabilities();
    if missing.is_empty() {
        return Ok(None);
    }
    let real = on_path("docker").ok_or_else(|| Error::Provider("no `docker` on PATH".into()))?;
    let dir = run_dir.join("kind-docker");
    std::fs::create_dir_all(&dir).map_err(Error::io("create directory", &dir))?;
    let path = dir.join("docker");
    let script = docker_shim(&real, &missing, Path::new("/dev/fuse").exists());
    std::fs::write(&path, script).map_err(Error::io("write", &path))?;
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o700)).map_err(Error::io("chmod", &path))?;
    }
    tracing::info!(missing = ?missing, "kind nodes run without --privileged on this host");
    Ok(Some(dir))
}
