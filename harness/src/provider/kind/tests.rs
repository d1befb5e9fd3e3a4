//! Unit tests of the parent module.

use super::*;

#[test]
fn the_config_pins_the_image_binds_loopback_and_skips_coredns() {
    let none = ApiServerFlags::default();
    let v136 = KubeVersion::parse("1.36.3").unwrap_or_default();
    let c = config("kindest/node:v1.36.3", false, &v136, &none, &[]);
    assert!(c.contains("image: kindest/node:v1.36.3"), "{c}");
    assert!(c.contains("apiServerAddress: \"127.0.0.1\""), "{c}");
    assert!(c.contains("skipPhases: [preflight, addon/coredns]"), "{c}");
    assert!(!c.contains("failCgroupV1"), "{c}");
    assert!(
        c.starts_with("kind: Cluster\napiVersion: kind.x-k8s.io/v1alpha4\n"),
        "{c}"
    );
    assert!(!c.contains("featureGates") && !c.contains("JSON6902"), "{c}");
    let v1 = config("img", true, &v136, &none, &[]);
    assert!(
        v1.contains("    kind: KubeletConfiguration\n    failCgroupV1: false\n"),
        "{v1}"
    );
}

#[test]
fn flags_and_gates_reach_kind_as_its_fields_and_a_kubeadm_patch_of_the_versions_api() {
    let flags = ApiServerFlags {
        args: vec![
            ("audit-log-maxage".into(), "1".into()),
            ("runtime-config".into(), "api/alpha=true,x/v1".into()),
        ],
        gates: vec![("WatchListCompression".into(), false), ("A".into(), true)],
    };
    // kubeadm v1beta4 (Kubernetes ≥ 1.36): extraArgs is a list, added to by JSON 6902.
    let v137 = KubeVersion::parse("1.37.2").unwrap_or_default();
    let c = config("img", false, &v137, &flags, &[]);
    assert!(
        c.contains("featureGates:\n  \"WatchListCompression\": false\n  \"A\": true\n"),
        "{c}"
    );
    assert!(
        c.contains("runtimeConfig:\n  \"api/alpha\": \"true\"\n  \"x/v1\": \"true\"\n"),
        "{c}"
    );
    assert!(
        c.contains(
            "kubeadmConfigPatchesJSON6902:\n  - group: kubeadm.k8s.io\n    version: v1beta4\n    kind: ClusterConfiguration\n    patch: |\n      - op: add\n        path: /apiServer/extraArgs/-\n        value: {name: \"audit-log-maxage\", value: \"1\"}\n"
        ),
        "{c}"
    );
    // kubeadm v1beta3 (before 1.36): a map, merged.
    let v135 = KubeVersion::parse("1.35.4").unwrap_or_default();
    let c = config("img", false, &v135, &flags, &[]);
    assert!(
        c.contains("  - |\n    kind: ClusterConfiguration\n    apiServer:\n      extraArgs:\n        \"audit-log-maxage\": \"1\"\n"),
        "{c}"
    );
    assert!(!c.contains("JSON6902"), "{c}");
    // The config is YAML kind can read: every document parses.
    assert!(serde_saphyr::from_str::<serde_json::Value>(&c).is_ok(), "{c}");
    let c = config("img", false, &v137, &flags, &[(0, 10250), (8443, 443)]);
    let parsed: serde_json::Value = serde_saphyr::from_str(&c).unwrap_or_default();
    let patch = parsed["kubeadmConfigPatchesJSON6902"][0]["patch"]
        .as_str()
        .unwrap_or_default();
    let ops: serde_json::Value = serde_saphyr::from_str(patch).unwrap_or_default();
    assert_eq!(ops[0]["value"]["name"].as_str(), Some("audit-log-maxage"), "{patch}");
    let mappings = &parsed["nodes"][0]["extraPortMappings"];
    assert_eq!(mappings[0]["containerPort"], 10250, "{c}");
    assert_eq!(mappings[0]["hostPort"], 0, "{c}");
    assert_eq!(mappings[1]["hostPort"], 8443, "{c}");
    assert_eq!(mappings[1]["listenAddress"], "127.0.0.1", "{c}");
}

#[test]
fn published_ports_parse_and_bad_ones_are_named() {
    assert_eq!(parse_port_mapping("10250").ok(), Some((10250, 10250)));
    assert_eq!(parse_port_mapping("0:10250").ok(), Some((0, 10250)));
    assert_eq!(parse_port_mapping("18080:80").ok(), Some((18080, 80)));
    for bad in ["", "x", "80:", "1:0", "70000", "0"] {
        let e = parse_port_mapping(bad).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(e.contains("expected NODE_PORT or HOST_PORT:NODE_PORT"), "{bad:?}: {e}");
    }
    let taken = std::net::TcpListener::bind("127.0.0.1:0").ok();
    let port = taken.as_ref().and_then(|l| l.local_addr().ok()).map_or(0, |a| a.port());
    let e = check_host_ports_free(&[(port, 10250)])
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
    assert!(e.contains(&format!("127.0.0.1:{port}: that port is taken")), "{e}");
    assert!(check_host_ports_free(&[(0, 10250)]).is_ok());
}

#[test]
fn the_create_command_names_the_cluster_config_and_kubeconfig() {
    let create = create_command("kh-1", Path::new("/r/kind.yaml"), Path::new("/r/kubeconfig"));
    assert_eq!(
        create.join(" "),
        "create cluster --name kh-1 --config /r/kind.yaml --kubeconfig /r/kubeconfig --wait 120s"
    );
}

#[test]
fn missing_capabilities_are_read_from_the_bounding_set() {
    // This machine's VM: everything but CAP_SYS_RESOURCE (bit 24).
    let vm = "Name:\tx\nCapBnd:\t000001fffeffffff\nCapAmb:\t0\n";
    assert_eq!(missing_capabilities(vm, 40), vec!["SYS_RESOURCE"]);
    assert!(missing_capabilities("CapBnd:\t000001ffffffffff\n", 40).is_empty());
    // Bits beyond what the kernel knows are not missing.
    assert!(missing_capabilities("CapBnd:\t000000ffffffffff\n", 39).is_empty());
    assert_eq!(
        missing_capabilities("CapBnd:\t000000ffffffffff\n", 40),
        vec!["CHECKPOINT_RESTORE"]
    );
    assert!(missing_capabilities("no such line", 40).is_empty());
}

#[test]
fn the_shim_replaces_privileged_on_run_and_drops_it_on_exec() -> std::result::Result<(), Box<dyn std::error::Error>> {
    let dir = std::env::temp_dir().join(format!("kh-shim-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    // A fake docker that prints its arguments one per line.
    let real = dir.join("real-docker");
    std::fs::write(&real, "#!/bin/sh\nfor a in \"$@\"; do echo \"$a\"; done\n")?;
    let shim = dir.join("docker");
    std::fs::write(&shim, docker_shim(&real, &["SYS_RESOURCE"], false))?;
    for p in [&real, &shim] {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o700))?;
    }
    let args = |argv: &[&str]| -> std::result::Result<Vec<String>, std::io::Error> {
        let out = Command::new(&shim).args(argv).output()?;
        Ok(String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_owned)
            .collect())
    };
    let run = args(&["run", "--privileged", "--name", "a b", "img"])?;
    assert_eq!(run[..2], ["run", "--cap-add=ALL"]);
    assert!(run.contains(&"--cap-drop=SYS_RESOURCE".to_owned()), "{run:?}");
    assert!(run.contains(&"seccomp=unconfined".to_owned()), "{run:?}");
    assert!(!run.contains(&"--privileged".to_owned()), "{run:?}");
    assert_eq!(
        run[run.len() - 3..],
        ["--name", "a b", "img"],
        "arguments with spaces survive"
    );
    assert_eq!(
        args(&["exec", "--privileged", "-i", "node", "cat", "x"])?,
        ["exec", "-i", "node", "cat", "x"]
    );
    assert_eq!(
        args(&["ps", "--privileged"])?,
        ["ps", "--privileged"],
        "other commands untouched"
    );
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}

#[test]
fn cluster_names_carry_their_owner() {
    assert_eq!(owner_pid("kube-harness-4242-abc"), Some(4242));
    assert_eq!(owner_pid("kind"), None);
    assert_eq!(owner_pid("kube-harness-x-1"), None);
    let v = KubeVersion::default();
    let none = ApiServerFlags::default();
    let a = reused_name(&v, "img:a", &none, &[]);
    assert!(a.starts_with("kh-reuse-") && owner_pid(&a).is_none(), "{a}");
    assert_ne!(a, reused_name(&v, "img:b", &none, &[]));
    assert_ne!(
        a,
        reused_name(&v, "img:a", &none, &[(0, 80)]),
        "other ports, another kept cluster"
    );
    let gated = ApiServerFlags {
        args: Vec::new(),
        gates: vec![("A".into(), false)],
    };
    assert_ne!(
        a,
        reused_name(&v, "img:a", &gated, &[]),
        "other gates, another kept cluster"
    );
    assert!(a.len() < 40, "{a}");
}
