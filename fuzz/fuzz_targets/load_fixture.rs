//! The fixture loader on arbitrary bytes, as YAML and as JSON, and every document it accepts
//! through the `Target` spec parser: errors are fine, panics, aborts and hangs are not.
#![no_main]

use std::path::Path;

use kube_harness::target::{load, spec};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    for file in ["fuzz.yaml", "fuzz.json"] {
        if let Ok(docs) = load::parse_documents(Path::new(file), &text) {
            for doc in &docs {
                let _ = spec::parse(doc);
            }
        }
    }
});
