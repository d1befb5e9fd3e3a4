//! `scripts/bench --quick`: one round of every benchmark, so the benchmark cannot rot. No
//! timing is asserted (speed targets live in docs/BENCHMARKS.md, not in tests); what is
//! checked is that every measurement ran and produced a positive, finite number.

use std::process::Command;

#[test]
fn the_quick_benchmark_measures_everything() -> anyhow::Result<()> {
    let out = std::env::temp_dir().join(format!("kube-harness-bench-quick-{}", std::process::id()));
    let status = Command::new("scripts/bench")
        .arg("--quick")
        .arg(&out)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .status()?;
    assert!(status.success(), "scripts/bench --quick failed: {status}");
    let report: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(out.join("benchmarks.json"))?)?;
    for key in [
        "ready_vs_envtest",
        "ready_vs_bare",
        "ready_with_nodes_vs_without",
        "available_s",
        "per_test_ms",
        "rss_mb",
    ] {
        let v = report[key].as_f64();
        assert!(v.is_some_and(|v| v.is_finite() && v > 0.0), "{key} = {:?}", report[key]);
    }
    for contender in ["kube_harness", "envtest", "bare"] {
        assert_eq!(report["ready_s"][contender]["n"], 1, "{contender}");
    }
    for target in ["requests", "wardle"] {
        assert!(
            report["aggregation"][target]["available_s"]["median"]
                .as_f64()
                .is_some(),
            "{target}"
        );
    }
    for key in ["assert_holds_ms", "operator_verify_s"] {
        let v = report["steps"][key]["median"].as_f64();
        assert!(
            v.is_some_and(|v| v.is_finite() && v > 0.0),
            "{key} = {:?}",
            report["steps"][key]
        );
    }
    let v = report["deployment_available_s"]["median"].as_f64();
    assert!(
        v.is_some_and(|v| v.is_finite() && v > 0.0),
        "deployment_available_s = {:?}",
        report["deployment_available_s"]
    );
    let v = report["test_namespace_fresh_ms"]["median"].as_f64();
    assert!(
        v.is_some_and(|v| v.is_finite() && v > 0.0),
        "test_namespace_fresh_ms = {:?}",
        report["test_namespace_fresh_ms"]
    );
    // Quick mode does not run the suite from inside the suite.
    assert!(report["suite_s"].is_null() && report["workspace_s"].is_null());
    let markdown = std::fs::read_to_string(out.join("BENCHMARKS.md"))?;
    assert!(markdown.contains("| cluster ready vs Go envtest |"), "{markdown}");
    std::fs::remove_dir_all(&out)?;
    Ok(())
}
