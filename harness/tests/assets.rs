//! Asset resolution: an env var directory wins, a corrupt or partial cache entry is detected
//! and rebuilt, and a missing `go` yields the documented error.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use kube_harness::Error;
use kube_harness::assets::{AssetSource, BINARIES, KubeVersion, Manifest, Resolver};

fn temp_dir(name: &str) -> anyhow::Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("kh-assets-{name}-{}", std::process::id()));
    if dir.exists() {
        std::fs::remove_dir_all(&dir)?;
    }
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

fn fake_binaries(dir: &Path, which: &[&str]) -> anyhow::Result<()> {
    for b in which {
        let p = dir.join(b);
        std::fs::write(&p, "#!/bin/sh\nexit 0\n")?;
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755))?;
    }
    Ok(())
}

/// An environment with exactly these variables.
fn env(vars: Vec<(&'static str, String)>) -> impl Fn(&str) -> Option<String> + Send + Sync + 'static {
    move |k: &str| vars.iter().find(|(n, _)| *n == k).map(|(_, v)| v.clone())
}

#[test]
fn an_assets_directory_from_the_environment_wins() -> anyhow::Result<()> {
    let dir = temp_dir("envdir")?;
    fake_binaries(&dir, &BINARIES)?;
    let cache = temp_dir("envdir-cache")?;
    let d = dir.to_string_lossy().into_owned();
    let c = cache.to_string_lossy().into_owned();
    for var in ["KUBE_HARNESS_ASSETS", "KUBEBUILDER_ASSETS"] {
        let assets = Resolver::new(KubeVersion::default())
            .with_env(env(vec![(var, d.clone()), ("KUBE_HARNESS_CACHE", c.clone())]))
            .resolve()?;
        assert_eq!(assets.source(), &AssetSource::EnvDir(var));
        assert_eq!(assets.kube_apiserver(), dir.join("kube-apiserver"));
    }
    std::fs::remove_dir_all(&dir)?;
    std::fs::remove_dir_all(&cache)?;
    Ok(())
}

#[test]
fn an_incomplete_assets_directory_names_the_missing_binary() -> anyhow::Result<()> {
    let dir = temp_dir("incomplete")?;
    fake_binaries(&dir, &["kube-apiserver", "kubectl"])?;
    let err = Resolver::new(KubeVersion::default())
        .with_env(env(vec![("KUBEBUILDER_ASSETS", dir.to_string_lossy().into_owned())]))
        .resolve()
        .err();
    let Some(err @ Error::AssetsDirIncomplete { binary: "etcd", .. }) = err else {
        panic!("expected AssetsDirIncomplete for etcd, got {err:?}");
    };
    assert!(err.to_string().contains("KUBEBUILDER_ASSETS"), "{err}");
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}

#[test]
fn without_go_and_without_binaries_the_error_says_what_to_install() -> anyhow::Result<()> {
    let cache = temp_dir("nogo")?;
    let err = Resolver::new(KubeVersion::default())
        .with_env(env(vec![
            ("KUBE_HARNESS_CACHE", cache.to_string_lossy().into_owned()),
            ("PATH", "/nonexistent-kube-harness-bin".to_owned()),
        ]))
        .resolve()
        .err();
    let Some(err @ Error::GoMissing { .. }) = err else {
        panic!("expected GoMissing, got {err:?}");
    };
    let text = err.to_string();
    for needle in ["Install Go >= 1.26", "KUBE_HARNESS_ASSETS", "1.37.2"] {
        assert!(text.contains(needle), "{needle:?} not in: {text}");
    }
    std::fs::remove_dir_all(&cache)?;
    Ok(())
}

#[test]
fn a_corrupt_or_partial_cache_entry_is_detected_and_rebuilt() -> anyhow::Result<()> {
    let version = KubeVersion::default();
    // The real entry (built on first use) is the starting point.
    let real = Resolver::new(version).resolve()?;
    if let AssetSource::EnvDir(var) = real.source() {
        println!(
            "skipped: {var} points at a directory, so there is no cache entry to corrupt; unset it to run this test"
        );
        return Ok(());
    }
    let root = temp_dir("corrupt")?;
    let entry = root.join(format!("k8s-{version}"));
    std::fs::create_dir_all(&entry)?;
    for name in BINARIES.iter().copied().chain(["manifest.json"]) {
        std::fs::copy(real.dir().join(name), entry.join(name))?;
    }
    // Corrupt etcd (same size, different bytes) and lose kubectl.
    let mut etcd = std::fs::read(entry.join("etcd"))?;
    let mid = etcd.len() / 2;
    etcd[mid] ^= 0xff;
    std::fs::write(entry.join("etcd"), etcd)?;
    std::fs::remove_file(entry.join("kubectl"))?;

    let path = std::env::var("PATH").unwrap_or_default();
    let home = std::env::var("HOME").unwrap_or_default();
    let rebuilt = Resolver::new(version)
        .with_env(env(vec![
            ("KUBE_HARNESS_CACHE", root.to_string_lossy().into_owned()),
            ("PATH", path),
            ("HOME", home),
        ]))
        .resolve()?;
    assert_eq!(rebuilt.source(), &AssetSource::Built);
    let manifest = Manifest::read(rebuilt.dir())?;
    for b in BINARIES {
        assert!(
            manifest.binaries[b].matches(&rebuilt.dir().join(b)),
            "{b} does not match its manifest"
        );
    }
    // kube-apiserver was intact and reused as is.
    assert_eq!(
        manifest.binaries["kube-apiserver"],
        Manifest::read(real.dir())?.binaries["kube-apiserver"]
    );
    let out = std::process::Command::new(rebuilt.etcd()).arg("--version").output()?;
    assert!(String::from_utf8_lossy(&out.stdout).contains("etcd Version"), "{out:?}");
    std::fs::remove_dir_all(&root)?;
    Ok(())
}
