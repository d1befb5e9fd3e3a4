//! The GitHub Actions workflow users get is checked with a real linter (actionlint, built from
//! its Go module by `scripts/actionlint`): the repository's workflows pass, and a copy with a
//! mistyped input and an undefined matrix key is refused, so the check can fail.

use std::process::Command;

fn actionlint(args: &[&std::path::Path]) -> anyhow::Result<std::process::Output> {
    Ok(Command::new("scripts/actionlint")
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()?)
}

#[test]
fn the_workflows_pass_actionlint() -> anyhow::Result<()> {
    let out = actionlint(&[])?;
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

#[test]
fn a_broken_workflow_is_refused() -> anyhow::Result<()> {
    let ci = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/.github/workflows/ci.yml"))?;
    let broken = ci.replacen("go-version: \"1.26\"", "go-versoin: \"1.26\"", 1).replacen(
        "${{ matrix.k8s }}",
        "${{ matrix.kube }}",
        1,
    );
    let path = std::env::temp_dir().join(format!("kh-broken-ci-{}.yml", std::process::id()));
    std::fs::write(&path, broken)?;
    let out = actionlint(&[&path])?;
    std::fs::remove_file(&path)?;
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{text}");
    assert!(text.contains("input \"go-versoin\" is not defined"), "{text}");
    assert!(text.contains("property \"kube\" is not defined"), "{text}");
    Ok(())
}
