//! Providers other than the local one. `existing` is exercised for real: a local cluster is
//! started, and only its kubeconfig is handed to the existing provider. kind and k3s need a
//! Docker daemon, their CLI and their image present locally: without any of them their tests
//! print `skipped: …` with the reason and return.

use k8s_openapi::api::core::v1::{ConfigMap, Namespace};
use kube::Api;
use kube::api::{ObjectMeta, PostParams};
use kube_harness::provider::{StartOptions, start};
use kube_harness::{Capability, ControlPlane, Provider, Target};

async fn existing(kubeconfig: &std::path::Path) -> kube_harness::Result<kube_harness::Cluster> {
    let options = StartOptions::default().with_kubeconfig(kubeconfig);
    start(Provider::Existing, Default::default(), options).await
}

#[tokio::test]
async fn the_existing_provider_runs_targets_and_deletes_only_what_it_created() -> anyhow::Result<()> {
    let owner = ControlPlane::builder().start().await?;
    let admin = owner.client().await?;
    // Something that was there before and must be there after.
    let ns = Namespace {
        metadata: ObjectMeta {
            name: Some("pre-existing".into()),
            ..Default::default()
        },
        ..Default::default()
    };
    Api::<Namespace>::all(admin.clone())
        .create(&PostParams::default(), &ns)
        .await?;
    let cm = ConfigMap {
        metadata: ObjectMeta {
            name: Some("keep-me".into()),
            ..Default::default()
        },
        ..Default::default()
    };
    let keep: Api<ConfigMap> = Api::namespaced(admin.clone(), "pre-existing");
    keep.create(&PostParams::default(), &cm).await?;

    // Only the kubeconfig crosses over.
    let connect = std::time::Instant::now();
    let existing = existing(owner.kubeconfig_path()).await?;
    println!("the existing provider took {:?}", connect.elapsed());
    assert_eq!(existing.provider(), Provider::Existing);
    assert_eq!(existing.info().version, owner.info().version);
    assert!(existing.pki().is_none() && existing.pids().is_empty());
    assert!(existing.lacks(Capability::ClientCertificates).is_some());
    assert!(
        existing.lacks(Capability::HostBackends).is_none(),
        "loopback API server reaches host backends"
    );
    assert!(existing.lacks(Capability::RunsPods).is_some(), "no kubelet, no nodes");
    // Users are impersonated: RBAC answers as for a certificate user.
    let alice = existing.user("alice", &["devs"]).await?;
    let denied = Api::<ConfigMap>::namespaced(alice, "default")
        .list(&Default::default())
        .await;
    assert!(
        matches!(denied, Err(kube::Error::Api(ref s)) if s.code == 403),
        "{denied:?}"
    );

    // Both kinds of target: our server (host backend), and sample-apiserver, whose
    // {{etcdUrl}} gets a private etcd because the cluster's etcd is out of reach.
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    for dir in ["fixtures/targets/requests", "fixtures/targets/wardle"] {
        let target = Target::load(root.join(dir))?;
        let results = kube_harness::check::verify_target(&existing, &target).await;
        let failed: Vec<_> = results.iter().filter(|r| !r.passed).collect();
        assert!(failed.is_empty(), "{dir}: {failed:#?}");
    }
    drop(existing);

    // The owner's cluster is untouched: running, the pre-existing object there, the targets'
    // objects gone.
    owner.check_alive()?;
    assert!(keep.get_opt("keep-me").await?.is_some());
    let gvk = kube::api::GroupVersionKind::gvk("apiregistration.k8s.io", "v1", "APIService");
    let apiservices: Api<kube::api::DynamicObject> = Api::all_with(admin, &kube::api::ApiResource::from_gvk(&gvk));
    for name in ["v1beta1.k8s.wujiuye.com", "v1alpha1.wardle.example.com"] {
        assert!(apiservices.get_opt(name).await?.is_none(), "{name} left behind");
    }
    Ok(())
}

#[tokio::test]
async fn an_unusable_kubeconfig_is_a_clear_error() -> anyhow::Result<()> {
    let dir = std::env::temp_dir().join(format!("kh-bad-kubeconfig-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let path = dir.join("config");
    std::fs::write(
        &path,
        "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: https://127.0.0.1:1\n\
         contexts:\n- name: x\n  context:\n    cluster: c\n    user: u\ncurrent-context: x\nusers:\n- name: u\n  user: {}\n",
    )?;
    let err = existing(&path).await.err().map(|e| e.to_string()).unwrap_or_default();
    assert!(err.contains("has no certificate-authority"), "{err}");
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}

/// kind and k3s clusters, when a Docker daemon answers.
#[rstest::rstest]
#[case::kind(Provider::Kind)]
#[case::k3s(Provider::K3s)]
#[tokio::test]
async fn a_docker_provider_starts_a_cluster_and_removes_it(#[case] provider: Provider) -> anyhow::Result<()> {
    let version = kube_harness::assets::KubeVersion::default();
    if let Some(reason) = kube_harness::provider::unavailable(provider, &version) {
        // CI builds a node image and sets this: a broken kind setup must not pass as a skip.
        let required = std::env::var("KUBE_HARNESS_REQUIRE_KIND").is_ok_and(|v| v == "1");
        assert!(
            !(required && provider == Provider::Kind),
            "KUBE_HARNESS_REQUIRE_KIND=1, but kind cannot run: {reason}"
        );
        println!("skipped: {reason}");
        return Ok(());
    }
    // kind: a feature gate and an extra flag, which kind gets through its config.
    let options = match provider {
        Provider::Kind => StartOptions::default()
            .with_feature_gate("WatchListCompression", false)
            .with_apiserver_arg("audit-log-maxage", "3")
            .with_published_port(10250),
        _ => StartOptions::default(),
    };
    let cluster = start(provider, version, options).await?;
    let node_containers = |name: &str| -> anyhow::Result<Vec<String>> {
        let out = std::process::Command::new("docker")
            .args([
                "ps",
                "-a",
                "--filter",
                &format!("label=io.x-k8s.kind.cluster={name}"),
                "--format",
                "{{.Names}}",
            ])
            .output()?;
        Ok(String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_owned)
            .collect())
    };
    let kind_name = cluster.info().run_dir.join("kind.yaml").exists().then(|| {
        let server = cluster
            .admin_kubeconfig()
            .contexts
            .first()
            .map(|c| c.name.clone())
            .unwrap_or_default();
        server.trim_start_matches("kind-").to_owned()
    });
    if let Some(name) = &kind_name {
        assert_eq!(node_containers(name)?.len(), 1, "one node container for {name}");
        // kind's own phases, which the CLI's `ready in` line shows.
        let t = cluster.timings();
        assert!(
            !t.create.is_zero() && t.create + t.nodes <= t.total,
            "kind phases: {t:?}"
        );
        let request = http::Request::get("/metrics").body(Vec::new())?;
        let metrics = cluster.client().await?.request_text(request).await?;
        assert!(
            metrics.lines().any(
                |l| l.starts_with("kubernetes_feature_enabled{name=\"WatchListCompression\"") && l.ends_with(" 0")
            ),
            "WatchListCompression is not off in kind's kube-apiserver"
        );
        let manifest = std::process::Command::new("docker")
            .args([
                "exec",
                &format!("{name}-control-plane"),
                "cat",
                "/etc/kubernetes/manifests/kube-apiserver.yaml",
            ])
            .output()?;
        let manifest = String::from_utf8_lossy(&manifest.stdout);
        assert!(manifest.contains("--audit-log-maxage=3"), "{manifest}");
        assert!(
            manifest.contains("--feature-gates=WatchListCompression=false"),
            "{manifest}"
        );
        // The kubelet's port, published on loopback only: it accepts a connection there.
        let kubelet = cluster
            .published_port(10250)
            .ok_or_else(|| anyhow::anyhow!("node port 10250 not published"))?;
        assert!(kubelet.ip().is_loopback(), "{kubelet}");
        std::net::TcpStream::connect_timeout(&kubelet, std::time::Duration::from_secs(5))?;
        // An image made here (one file, `docker import`) loads into the node; an absent one is
        // an error naming it, and nothing is pulled.
        let image = format!("kube-harness/load-probe:{}", std::process::id());
        let imported = std::process::Command::new("sh")
            .args([
                "-c",
                &format!("d=$(mktemp -d) && echo probe > \"$d/probe\" && tar -C \"$d\" -c probe | docker import - '{image}' >/dev/null; rc=$?; rm -rf \"$d\"; exit $rc"),
            ])
            .status()?;
        assert!(imported.success(), "docker import of {image} failed");
        let loaded = cluster.load_image(&image).await;
        let _ = std::process::Command::new("docker").args(["rmi", &image]).output();
        loaded?;
        let listed = std::process::Command::new("docker")
            .args([
                "exec",
                &format!("{name}-control-plane"),
                "ctr",
                "-n",
                "k8s.io",
                "images",
                "ls",
                "-q",
            ])
            .output()?;
        let listed = String::from_utf8_lossy(&listed.stdout);
        assert!(
            listed.contains(&image),
            "{image} not in the node's containerd: {listed}"
        );
        let absent = cluster
            .load_image("kube-harness/no-such-image:v0")
            .await
            .err()
            .map(|e| e.to_string());
        assert!(
            absent
                .as_deref()
                .is_some_and(|e| e.contains("kube-harness/no-such-image:v0")),
            "{absent:?}"
        );
    }
    let namespaces = Api::<Namespace>::all(cluster.client().await?)
        .list(&Default::default())
        .await?;
    assert!(
        namespaces
            .items
            .iter()
            .any(|n| n.metadata.name.as_deref() == Some("kube-system"))
    );
    assert!(cluster.lacks(Capability::RunsPods).is_none(), "{provider} has nodes");
    assert!(
        cluster.lacks(Capability::RunsContainers).is_none(),
        "{provider} runs containers"
    );
    assert!(cluster.lacks(Capability::HostBackends).is_some());
    let run_dir = cluster.info().run_dir.clone();
    drop(cluster);
    assert!(!run_dir.exists());
    if let Some(name) = &kind_name {
        assert!(
            node_containers(name)?.is_empty(),
            "kind node containers of {name} left behind"
        );
    }
    Ok(())
}

/// kind with a bad node image: one that is not there is refused before anything starts, with
/// what to do; one that is there but is no node image fails `kind create` half-way, and
/// nothing of the cluster is left.
#[tokio::test]
async fn a_bad_kind_node_image_is_a_clear_error_and_leaves_nothing() -> anyhow::Result<()> {
    let version = kube_harness::assets::KubeVersion::default();
    if let Some(reason) = kube_harness::provider::unavailable(Provider::Kind, &version) {
        let required = std::env::var("KUBE_HARNESS_REQUIRE_KIND").is_ok_and(|v| v == "1");
        assert!(!required, "KUBE_HARNESS_REQUIRE_KIND=1, but kind cannot run: {reason}");
        println!("skipped: {reason}");
        return Ok(());
    }
    let absent = StartOptions::default().with_kind_image("kube-harness/no-such-node-image:v0");
    let err = start(Provider::Kind, version, absent)
        .await
        .err()
        .map(|e| e.to_string());
    let err = err.unwrap_or_default();
    assert!(
        err.contains("kube-harness/no-such-node-image:v0 is not present") && err.contains("scripts/kind-node-image"),
        "{err}"
    );

    // An image that exists but is an empty filesystem: the node container cannot even start.
    let image = "kube-harness/not-a-node-image:test";
    let status = std::process::Command::new("sh")
        .args([
            "-c",
            &format!("tar -cf - --files-from /dev/null | docker import - {image} >/dev/null"),
        ])
        .status()?;
    assert!(status.success(), "docker import of an empty image");
    let before = kind_containers()?;
    let started = std::time::Instant::now();
    let err = start(Provider::Kind, version, StartOptions::default().with_kind_image(image))
        .await
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    println!("{err}");
    assert!(err.contains("`kind create cluster") && err.contains("failed"), "{err}");
    assert!(err.contains("the last lines of its output"), "{err}");
    assert!(started.elapsed() < std::time::Duration::from_secs(120));
    assert_eq!(kind_containers()?, before, "a half-made cluster was left");
    let _ = std::process::Command::new("docker").args(["rmi", image]).output();
    Ok(())
}

fn kind_containers() -> anyhow::Result<Vec<String>> {
    let out = std::process::Command::new("docker")
        .args([
            "ps",
            "-a",
            "--filter",
            "label=io.x-k8s.kind.cluster",
            "--format",
            "{{.Names}}",
        ])
        .output()?;
    let mut names: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_owned)
        .collect();
    names.sort();
    Ok(names)
}
