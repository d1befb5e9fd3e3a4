//! One check's verdict, and the list a target's checks are recorded in. A leaf of `check/`:
//! every stage of the pipeline (plan → probes and steps → results → report) writes here.

use std::time::{Duration, Instant};

/// One check's verdict.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CheckResult {
    /// The target's name.
    pub target: String,
    /// What was checked ("APIService v1.g Available", …).
    pub check: String,
    /// Whether it passed.
    pub passed: bool,
    /// What was seen (the failure's message, or a short summary).
    pub detail: String,
    /// How long it took.
    pub duration: Duration,
    /// What the API answered, for snapshots (a resource list, say).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data: Option<serde_json::Value>,
}

pub(crate) struct Recorder {
    pub(crate) target: String,
    pub(crate) results: Vec<CheckResult>,
}

impl Recorder {
    pub(crate) fn new(target: impl Into<String>) -> Self {
        Self {
            target: target.into(),
            results: Vec::new(),
        }
    }

    /// Attach what the API answered to the last check recorded.
    pub(crate) fn attach(&mut self, data: Option<serde_json::Value>) {
        if let Some(last) = self.results.last_mut() {
            last.data = data;
        }
    }

    pub(crate) fn record(
        &mut self,
        check: impl Into<String>,
        started: Instant,
        outcome: Result<String, String>,
    ) -> bool {
        let passed = outcome.is_ok();
        self.results.push(CheckResult {
            target: self.target.clone(),
            check: check.into(),
            passed,
            detail: outcome.unwrap_or_else(|e| e),
            duration: started.elapsed(),
            data: None,
        });
        passed
    }
}
