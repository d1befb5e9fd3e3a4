//! Every directory under `tests/bad-fixtures/` is a malformed target. Loading it must fail with
//! a clear error naming the file and object — never a panic, never a hang — and that error is
//! snapshotted (paths shown relative to the case directory).

use std::path::PathBuf;

use kube_harness::target::Target;
use rstest::rstest;

#[rstest]
fn a_malformed_target_gives_a_clear_error(
    #[files("tests/bad-fixtures/*")]
    #[dirs]
    dir: PathBuf,
) {
    let case = dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let loaded = std::panic::catch_unwind(|| Target::load(&dir));
    let Ok(result) = loaded else {
        panic!("{case}: loading panicked");
    };
    let Err(err) = result else {
        panic!("{case}: loaded without error");
    };
    let message = err
        .to_string()
        .replace(&format!("{}/", dir.display()), "")
        .replace(&dir.display().to_string(), ".");
    insta::with_settings!({ snapshot_suffix => case.clone(), prepend_module_to_snapshot => false }, {
        insta::assert_snapshot!("bad_fixture", message);
    });
}

#[test]
fn a_missing_target_directory_is_named() {
    let err = Target::load("tests/bad-fixtures/does-not-exist")
        .err()
        .map(|e| e.to_string());
    assert_eq!(
        err.as_deref(),
        Some("fixture path \"tests/bad-fixtures/does-not-exist\" does not exist")
    );
}
