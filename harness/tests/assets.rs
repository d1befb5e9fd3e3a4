//! Asset resolution: an env var directory wins, a corrupt or partial cache entry is detected
//! and rebuilt, a missing `go` yields the documented error, and the envtest release tarball
//! (served here by a local HTTP server) is downloaded, checksum-verified and cached before any
//! Go build is tried.

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
            ("KUBE_HARNESS_ENVTEST_INDEX", "off".to_owned()),
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
            ("KUBE_HARNESS_ENVTEST_INDEX", "off".to_owned()),
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

type Files = std::sync::Arc<std::sync::Mutex<Vec<(String, Vec<u8>)>>>;

/// A tiny HTTP/1.1 server on 127.0.0.1 answering GET with the bytes `files` holds for the path
/// (404 otherwise), until the test process ends.
fn serve(files: Files) -> anyhow::Result<u16> {
    use std::io::{BufRead as _, Write as _};
    let listener = std::net::TcpListener::bind(("127.0.0.1", 0))?;
    let port = listener.local_addr()?.port();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let mut reader = std::io::BufReader::new(&stream);
            let mut request = String::new();
            if reader.read_line(&mut request).is_err() {
                continue;
            }
            let mut line = String::new();
            while reader.read_line(&mut line).is_ok_and(|n| n > 2) {
                line.clear();
            }
            let path = request.split_whitespace().nth(1).unwrap_or_default().to_owned();
            let body = files
                .lock()
                .ok()
                .and_then(|f| f.iter().find(|(p, _)| *p == path).map(|(_, b)| b.clone()));
            let mut stream = &stream;
            let _ = match body {
                Some(body) => stream
                    .write_all(
                        format!(
                            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                            body.len()
                        )
                        .as_bytes(),
                    )
                    .and_then(|()| stream.write_all(&body)),
                None => stream.write_all(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"),
            };
        }
    });
    Ok(port)
}

/// A gzipped tarball laid out as controller-tools publishes envtest, with shell scripts
/// standing in for the binaries.
fn envtest_tarball() -> anyhow::Result<Vec<u8>> {
    let mut builder = tar::Builder::new(flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast()));
    for name in ["etcd", "kube-apiserver", "kubectl", "README.md"] {
        let body = format!("#!/bin/sh\necho {name}\n");
        let mut header = tar::Header::new_gnu();
        header.set_size(body.len() as u64);
        header.set_mode(0o755);
        header.set_cksum();
        builder.append_data(&mut header, format!("controller-tools/envtest/{name}"), body.as_bytes())?;
    }
    Ok(builder.into_inner()?.finish()?)
}

/// Serve an envtest index (listing `listed_version`, with `hash`) and the tarball; returns the
/// port and a fresh cache directory.
fn serve_envtest(name: &str, listed_version: &str, hash: &str) -> anyhow::Result<(u16, PathBuf)> {
    let files = Files::default();
    let port = serve(files.clone())?;
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    };
    let file = format!("envtest-v{listed_version}-linux-{arch}.tar.gz");
    let index = format!(
        "releases:\n  v{listed_version}:\n    {file}:\n      hash: {hash}\n      selfLink: http://127.0.0.1:{port}/{file}\n"
    );
    *files.lock().map_err(|_| anyhow::anyhow!("poisoned"))? = vec![
        ("/envtest-releases.yaml".to_owned(), index.into_bytes()),
        (format!("/{file}"), envtest_tarball()?),
    ];
    Ok((port, temp_dir(name)?))
}

fn resolver_for(cache: &Path, port: u16) -> Resolver {
    Resolver::new(KubeVersion::default()).with_env(env(vec![
        ("KUBE_HARNESS_CACHE", cache.to_string_lossy().into_owned()),
        // No Go: a build would fail, so success means the download was used.
        ("PATH", "/nonexistent-kube-harness-bin".to_owned()),
        (
            "KUBE_HARNESS_ENVTEST_INDEX",
            format!("http://127.0.0.1:{port}/envtest-releases.yaml"),
        ),
    ]))
}

fn sha512(bytes: &[u8]) -> String {
    use sha2::Digest as _;
    hex::encode(sha2::Sha512::digest(bytes))
}

#[test]
fn the_envtest_tarball_is_downloaded_checksum_verified_and_cached() -> anyhow::Result<()> {
    let version = KubeVersion::default().to_string();
    let (port, cache) = serve_envtest("envtest-ok", &version, &sha512(&envtest_tarball()?))?;
    let assets = resolver_for(&cache, port).resolve()?;
    assert_eq!(assets.source(), &AssetSource::Downloaded);
    for b in BINARIES {
        let body = std::fs::read_to_string(assets.dir().join(b))?;
        assert_eq!(body, format!("#!/bin/sh\necho {b}\n"));
    }
    assert!(
        !assets.dir().join("README.md").exists(),
        "only the binaries are installed"
    );
    // The next lookup finds the verified cache entry.
    let again = resolver_for(&cache, port).resolve()?;
    assert_eq!(again.source(), &AssetSource::Cache);
    std::fs::remove_dir_all(&cache)?;
    Ok(())
}

#[test]
fn a_tarball_with_the_wrong_checksum_is_refused_and_not_installed() -> anyhow::Result<()> {
    let version = KubeVersion::default().to_string();
    let (port, cache) = serve_envtest("envtest-bad", &version, &"0".repeat(128))?;
    let err = resolver_for(&cache, port).resolve().err();
    let Some(err @ Error::Checksum { .. }) = err else {
        panic!("expected a checksum error, got {err:?}");
    };
    assert!(err.to_string().contains("does not match the index's 000"), "{err}");
    assert!(
        !cache.join(format!("k8s-{version}")).exists(),
        "a corrupt download was installed"
    );
    std::fs::remove_dir_all(&cache)?;
    Ok(())
}

#[test]
fn a_version_the_index_does_not_list_falls_back_to_the_go_build() -> anyhow::Result<()> {
    let (port, cache) = serve_envtest("envtest-unlisted", "1.2.3", &sha512(&envtest_tarball()?))?;
    let err = resolver_for(&cache, port).resolve().err();
    // With no Go on PATH the fallback build reports what to install.
    assert!(matches!(err, Some(Error::GoMissing { .. })), "{err:?}");
    std::fs::remove_dir_all(&cache)?;
    Ok(())
}

/// A Go build that fails leaves no (empty) cache entry and no lock file in the cache root, and
/// a build directory a killed build left behind is swept by the next build.
#[test]
fn a_failed_or_killed_build_leaves_nothing_in_the_cache_root() -> anyhow::Result<()> {
    let cache = temp_dir("failed-build")?;
    // A build directory of a process that is gone (a build killed halfway).
    let mut gone = std::process::Command::new("true").spawn()?;
    let dead = gone.id();
    gone.wait()?;
    let stale = cache.join(format!(".tmp-k8s-1.37.2-{dead}"));
    std::fs::create_dir_all(stale.join("src"))?;

    let go_dir = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).find(|d| d.join("go").is_file()))
        .unwrap_or_default();
    let Some(go_dir) = go_dir else {
        println!("skipped: no `go` on PATH to fail a build with");
        return Ok(());
    };
    let resolver = Resolver::new(KubeVersion::default()).with_env(env(vec![
        ("KUBE_HARNESS_CACHE", cache.to_string_lossy().into_owned()),
        ("PATH", go_dir.to_string_lossy().into_owned()),
    ]));
    // A module that does not exist: `go build` fails at once (the proxy answers 404/410).
    let err = resolver.go_binary_of("kube-harness.invalid/no-such-module", Some("cmd/none"), "v1.0.0");
    assert!(matches!(err, Err(Error::Build { .. })), "{err:?}");
    let left: Vec<String> = std::fs::read_dir(&cache)?
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with("build-") && n != ".locks")
        .collect();
    assert!(left.is_empty() || left == ["go"], "left in the cache root: {left:?}");
    if cache.join("go").exists() {
        assert_eq!(
            std::fs::read_dir(cache.join("go"))?.count(),
            0,
            "an empty cache entry was left"
        );
    }
    assert!(!stale.exists(), "the killed build's directory was not swept");
    std::fs::remove_dir_all(&cache)?;
    Ok(())
}
