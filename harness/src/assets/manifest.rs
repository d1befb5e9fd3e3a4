//! `manifest.json` in a cache entry: what was built, and the size and SHA-256 of each binary,
//! so a partial or corrupt entry is detected instead of executed.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::{BINARIES, KubeVersion};
use crate::error::{Error, Result};

/// File name of the manifest inside a cache entry.
pub const MANIFEST: &str = "manifest.json";

/// What a cache entry holds.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Manifest {
    /// Kubernetes version (`1.37.2`).
    pub kubernetes: String,
    /// etcd version the entry's etcd was built at (`3.7.0`).
    pub etcd: String,
    /// `go version` used.
    pub go: String,
    /// Per binary: size and SHA-256.
    pub binaries: BTreeMap<String, BinaryRecord>,
}

/// One binary's fingerprint.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct BinaryRecord {
    /// Size in bytes.
    pub size: u64,
    /// Lower-case hex SHA-256.
    pub sha256: String,
}

impl BinaryRecord {
    /// Fingerprint the file at `path`.
    ///
    /// # Errors
    /// [`Error::Io`] if it cannot be read.
    pub fn of(path: &Path) -> Result<Self> {
        let mut file = std::fs::File::open(path).map_err(Error::io("open", path))?;
        // ring's SHA-256 is assembly, as fast in a dependent's debug build as in release
        // (sha2's Rust code hashed the ~200 MB of binaries in 32 s unoptimised).
        let mut hasher = ring::digest::Context::new(&ring::digest::SHA256);
        let mut buf = vec![0u8; 1 << 20];
        let mut size = 0u64;
        loop {
            let n = file.read(&mut buf).map_err(Error::io("read", path))?;
            if n == 0 {
                break;
            }
            size += n as u64;
            hasher.update(&buf[..n]);
        }
        Ok(Self {
            size,
            sha256: hex::encode(hasher.finish()),
        })
    }

    /// Whether `path` matches this record (size first, then hash).
    pub fn matches(&self, path: &Path) -> bool {
        std::fs::metadata(path).is_ok_and(|m| m.len() == self.size)
            && Self::of(path).is_ok_and(|actual| actual == *self)
    }
}

impl Manifest {
    /// Read `<entry>/manifest.json`.
    ///
    /// # Errors
    /// [`Error::Io`] or [`Error::Json`].
    pub fn read(entry: &Path) -> Result<Self> {
        let path = entry.join(MANIFEST);
        let text = std::fs::read_to_string(&path).map_err(Error::io("read", &path))?;
        serde_json::from_str(&text).map_err(|source| Error::Json {
            what: format!("{path:?}"),
            source,
        })
    }

    /// Write `<dir>/manifest.json`.
    ///
    /// # Errors
    /// [`Error::Io`] or [`Error::Json`].
    pub fn write(&self, dir: &Path) -> Result<()> {
        let path = dir.join(MANIFEST);
        let text = serde_json::to_string_pretty(self).map_err(|source| Error::Json {
            what: format!("{path:?}"),
            source,
        })?;
        std::fs::write(&path, text).map_err(Error::io("write", &path))
    }
}

/// File in a cache entry recording the size, modification time and inode of each file as
/// they were when the entry was last fully verified. Hashing ~200 MB of binaries takes a
/// noticeable fraction of a second, so later runs compare this stamp instead and hash again
/// only when a file has changed since (a write changes the modification time).
const VERIFIED_STAMP: &str = ".verified";

fn stamp(entry: &Path) -> String {
    std::iter::once(MANIFEST)
        .chain(BINARIES)
        .map(|name| file_stamp(&entry.join(name), name))
        .collect()
}

/// `name size mtime mtime_nsec inode`, or `name missing`.
fn file_stamp(path: &Path, name: &str) -> String {
    use std::os::unix::fs::MetadataExt;
    match std::fs::metadata(path) {
        Ok(m) => format!("{name} {} {} {} {}\n", m.len(), m.mtime(), m.mtime_nsec(), m.ino()),
        Err(_) => format!("{name} missing\n"),
    }
}

/// Whether `binary` matches the [`BinaryRecord`] stored as JSON at `record`: hashed the first
/// time, then trusted while the file's size, modification time and inode (and the record's)
/// stay as they were (`<record>.verified`).
pub(crate) fn record_matches(binary: &Path, record: &Path) -> bool {
    let stamp_path = record.with_extension("verified");
    let current = file_stamp(binary, "binary") + &file_stamp(record, "record");
    if std::fs::read_to_string(&stamp_path).is_ok_and(|s| s == current) {
        return true;
    }
    let matches = std::fs::read_to_string(record)
        .ok()
        .and_then(|t| serde_json::from_str::<BinaryRecord>(&t).ok())
        .is_some_and(|r| r.matches(binary));
    if matches {
        // Best effort: without the stamp the next use hashes again.
        let _ = std::fs::write(&stamp_path, current);
    }
    matches
}

/// Check that `entry` is complete and uncorrupted for `version`. The reason is returned on
/// failure (it is logged when a rebuild follows).
pub(crate) fn verify_cached(entry: &Path, version: &KubeVersion) -> Result<Manifest, String> {
    if !entry.join(MANIFEST).exists() {
        return Err(format!("{entry:?} has no {MANIFEST}"));
    }
    let manifest = Manifest::read(entry).map_err(|e| e.to_string())?;
    if manifest.kubernetes != version.to_string() {
        return Err(format!(
            "{entry:?} holds Kubernetes {} but {version} was asked for",
            manifest.kubernetes
        ));
    }
    let current = stamp(entry);
    if std::fs::read_to_string(entry.join(VERIFIED_STAMP)).is_ok_and(|recorded| recorded == current) {
        return Ok(manifest);
    }
    for binary in BINARIES {
        let record = manifest
            .binaries
            .get(binary)
            .ok_or_else(|| format!("{MANIFEST} in {entry:?} does not list {binary}"))?;
        if !record.matches(&entry.join(binary)) {
            return Err(format!(
                "{binary} in {entry:?} is missing or does not match its recorded SHA-256"
            ));
        }
    }
    // Best effort: without the stamp the next run hashes again.
    let _ = std::fs::write(entry.join(VERIFIED_STAMP), current);
    Ok(manifest)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::process::RunDir;

    fn fake_entry(dir: &Path) -> Result<Manifest, Box<dyn std::error::Error>> {
        let mut binaries = BTreeMap::new();
        for b in BINARIES {
            std::fs::write(dir.join(b), format!("#!/bin/sh\necho {b}\n"))?;
            binaries.insert(b.to_owned(), BinaryRecord::of(&dir.join(b))?);
        }
        let m = Manifest {
            kubernetes: "1.37.2".into(),
            etcd: "3.7.0".into(),
            go: "go1.26.8".into(),
            binaries,
        };
        m.write(dir)?;
        Ok(m)
    }

    #[test]
    fn a_complete_entry_verifies_and_a_changed_binary_does_not() -> Result<(), Box<dyn std::error::Error>> {
        let run = RunDir::create("manifest-test")?;
        let m = fake_entry(run.path())?;
        let v = KubeVersion::default();
        assert_eq!(verify_cached(run.path(), &v)?, m);
        // Same size, different content: only the hash can tell.
        std::fs::write(run.path().join("etcd"), "#!/bin/sh\necho xxxx\n")?;
        let err = verify_cached(run.path(), &v).err().unwrap_or_default();
        assert!(err.contains("etcd"), "{err}");
        Ok(())
    }

    #[test]
    fn a_single_binary_record_is_hashed_once_then_stamped() -> Result<(), Box<dyn std::error::Error>> {
        let run = RunDir::create("manifest-test")?;
        let (binary, record) = (run.path().join("tool"), run.path().join("tool.json"));
        std::fs::write(&binary, "#!/bin/sh\necho one\n")?;
        std::fs::write(&record, serde_json::to_string(&BinaryRecord::of(&binary)?)?)?;
        assert!(record_matches(&binary, &record));
        assert!(run.path().join("tool.verified").exists());
        // A rewrite with the same size changes the mtime: the stamp no longer holds, the hash
        // says no.
        std::fs::write(&binary, "#!/bin/sh\necho two\n")?;
        assert!(!record_matches(&binary, &record));
        Ok(())
    }

    #[test]
    fn a_partial_entry_or_another_version_is_rejected() -> Result<(), Box<dyn std::error::Error>> {
        let run = RunDir::create("manifest-test")?;
        fake_entry(run.path())?;
        let other = KubeVersion::parse("1.36.3")?;
        assert!(verify_cached(run.path(), &other).is_err_and(|e| e.contains("1.36.3")));
        std::fs::remove_file(run.path().join("kubectl"))?;
        assert!(verify_cached(run.path(), &KubeVersion::default()).is_err_and(|e| e.contains("kubectl")));
        std::fs::remove_file(run.path().join(MANIFEST))?;
        assert!(verify_cached(run.path(), &KubeVersion::default()).is_err_and(|e| e.contains(MANIFEST)));
        Ok(())
    }
}
