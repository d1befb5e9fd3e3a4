//! A short, deterministic mutation run of the fixture loader and spec parser on stable Rust:
//! every fixture in the repository, then thousands of byte-level mutations of them (flips,
//! truncations, duplications, splices, YAML-significant characters). Any error is fine; a
//! panic fails the test (a stack overflow aborts it). `scripts/fuzz` is the long libFuzzer run
//! of the same code.

use std::path::{Path, PathBuf};

use kube_harness::target::{load, spec};

/// xorshift64*: deterministic, so a failure reproduces with the printed iteration.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        usize::try_from(self.next() % (n.max(1) as u64)).unwrap_or(0)
    }
}

fn seeds() -> Vec<(PathBuf, Vec<u8>)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut out = Vec::new();
    let mut stack = vec![
        root.join("fixtures"),
        root.join("tests/bad-fixtures"),
        root.join("tests/apply-fixtures"),
    ];
    while let Some(dir) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else { continue };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if path
                .extension()
                .is_some_and(|e| e == "yaml" || e == "yml" || e == "json")
                && let Ok(bytes) = std::fs::read(&path)
            {
                out.push((path, bytes));
            }
        }
    }
    out.sort();
    out
}

const TOKENS: &[&[u8]] = &[
    b"&a ",
    b"*a",
    b"<<: *a\n",
    b"---\n",
    b"...\n",
    b"\t",
    b": ",
    b"- ",
    b"{",
    b"}",
    b"[",
    b"]",
    b"\"",
    b"'",
    b"!!binary ",
    b"!!str ",
    b"? ",
    b"|\n",
    b">-\n",
    b"#",
    b"\0",
    b"\xff",
    b"{{port}}",
    b"{{certs.",
    b"\n  ",
];

fn mutate(rng: &mut Rng, input: &[u8], other: &[u8]) -> Vec<u8> {
    let mut v = input.to_vec();
    for _ in 0..=rng.below(4) {
        let at = rng.below(v.len() + 1);
        match rng.below(6) {
            0 if !v.is_empty() => {
                let i = rng.below(v.len());
                v[i] ^= 1 << rng.below(8);
            }
            1 => v.truncate(at),
            2 => {
                let t = TOKENS[rng.below(TOKENS.len())];
                v.splice(at..at, t.iter().copied());
            }
            3 if !v.is_empty() => {
                let end = (at + rng.below(64)).min(v.len());
                let chunk: Vec<u8> = v[at.min(end)..end].to_vec();
                v.splice(at..at, chunk);
            }
            4 if !other.is_empty() => {
                let from = rng.below(other.len());
                let end = (from + rng.below(200)).min(other.len());
                v.splice(at..at, other[from..end].iter().copied());
            }
            _ if !v.is_empty() => {
                let end = (at + rng.below(16)).min(v.len());
                v.drain(at.min(end)..end);
            }
            _ => {}
        }
    }
    v
}

fn exercise(bytes: &[u8]) {
    let text = String::from_utf8_lossy(bytes);
    for file in ["fuzz.yaml", "fuzz.json"] {
        if let Ok(docs) = load::parse_documents(Path::new(file), &text) {
            for doc in &docs {
                let _ = spec::parse(doc);
            }
        }
    }
}

#[test]
fn the_loader_never_panics_on_mutated_fixtures() {
    let seeds = seeds();
    assert!(seeds.len() > 40, "too few seed fixtures: {}", seeds.len());
    let iterations: usize = std::env::var("KH_FUZZ_ITERATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3_000);
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for (_, bytes) in &seeds {
        exercise(bytes);
    }
    for i in 0..iterations {
        let (path, input) = &seeds[rng.below(seeds.len())];
        let (_, other) = &seeds[rng.below(seeds.len())];
        let mutated = mutate(&mut rng, input, other);
        let result = std::panic::catch_unwind(|| exercise(&mutated));
        assert!(
            result.is_ok(),
            "iteration {i}: the loader panicked on a mutation of {}:\n{}",
            path.display(),
            String::from_utf8_lossy(&mutated)
        );
    }
}

/// A file over the size limit is refused with its size and the limit, before parsing.
#[test]
fn a_huge_fixture_file_is_refused_by_size() -> anyhow::Result<()> {
    let dir = std::env::temp_dir().join(format!("kh-huge-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let file = dir.join("huge.yaml");
    let line = "- apiVersion: v1\n";
    let n = usize::try_from(load::MAX_FILE_BYTES)? / line.len() + 1;
    std::fs::write(&file, line.repeat(n))?;
    let err = load::load(&[&dir]).err().map(|e| e.to_string()).unwrap_or_default();
    std::fs::remove_dir_all(&dir)?;
    assert!(
        err.contains("huge.yaml") && err.contains("fixtures are limited to 33554432 bytes"),
        "{err}"
    );
    Ok(())
}
