//! Re-run rstest's `#[files]` expansion when fixture directories are added or removed.
fn main() {
    println!("cargo::rerun-if-changed=tests/bad-fixtures");
    println!("cargo::rerun-if-changed=fixtures/targets");
}
