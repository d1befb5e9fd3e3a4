//! `requests:` rules: any request, as any identity, with the answer it must get — the status
//! code exactly, the `Status` reason and a substring of its message if given, and the
//! redacted answer against a snapshot if asked. A watch takes its first events as the answer.

use std::path::Path;
use std::time::{Duration, Instant};

use futures::StreamExt as _;
use kube::Client;
use kube::client::Body;
use serde_json::Value;

use crate::Cluster;
use crate::target::expect::RequestRule;

/// What a request got back.
#[derive(Debug)]
struct Answer {
    /// HTTP status code.
    code: u16,
    /// The body, parsed when it is JSON (for a watch: the events).
    body: Value,
}

impl Answer {
    /// `(reason, message)` when the body is a `Status`; else the text as the message.
    fn status(&self) -> (String, String) {
        if self.body.get("kind").and_then(Value::as_str) == Some("Status") {
            let text = |k: &str| self.body.get(k).and_then(Value::as_str).unwrap_or_default().to_owned();
            (text("reason"), text("message"))
        } else {
            let text = match &self.body {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            (String::new(), text)
        }
    }

    /// One line for a failure message.
    fn describe(&self) -> String {
        let (reason, message) = self.status();
        let message: String = message.chars().take(400).collect();
        match reason.as_str() {
            "" => format!("{} {message}", self.code),
            reason => format!("{} {reason}: {message}", self.code),
        }
    }
}

/// The client the rule's identity sends with.
async fn client_for(cluster: &Cluster, rule: &RequestRule) -> Result<Client, String> {
    super::queries::client_as(
        cluster,
        rule.user.as_deref(),
        &rule.groups,
        rule.service_account.as_deref(),
    )
    .await
}

/// Send the rule's request once.
async fn send(client: &Client, rule: &RequestRule) -> Result<Answer, String> {
    let path = rule.path();
    let method = http::Method::from_bytes(rule.method().as_bytes()).map_err(|e| e.to_string())?;
    let content_type = rule.content_type.clone().unwrap_or_else(|| {
        if method == http::Method::PATCH {
            "application/merge-patch+json".into()
        } else {
            "application/json".into()
        }
    });
    let body = match &rule.body {
        Some(b) => serde_json::to_vec(b).map_err(|e| e.to_string())?,
        None => Vec::new(),
    };
    let mut request = http::Request::builder()
        .method(method)
        .uri(&path)
        .header("Accept", "application/json");
    if !body.is_empty() {
        request = request.header("Content-Type", content_type);
    }
    let request = request.body(body).map_err(|e| e.to_string())?;
    if let Some(watch) = &rule.watch {
        return watch_events(client, request, watch.events, watch.timeout_seconds.unwrap_or(10)).await;
    }
    let response = client.send(request.map(Body::from)).await.map_err(|e| {
        format!(
            "{} {path}: no answer: {}",
            rule.method(),
            crate::process::error_chain(&e)
        )
    })?;
    let code = response.status().as_u16();
    let bytes = response
        .into_body()
        .collect_bytes()
        .await
        .map_err(|e| format!("{} {path}: reading the answer: {e}", rule.method()))?;
    let text = String::from_utf8_lossy(&bytes).into_owned();
    let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
    Ok(Answer { code, body })
}

/// The first `events` events of a watch, as the answer (code 200), or the error Status.
async fn watch_events(
    client: &Client,
    request: http::Request<Vec<u8>>,
    events: usize,
    timeout_seconds: u64,
) -> Result<Answer, String> {
    let stream = match client.request_events::<Value>(request).await {
        Ok(s) => s,
        Err(kube::Error::Api(status)) => {
            let mut body = serde_json::to_value(&*status).unwrap_or_default();
            if let Some(map) = body.as_object_mut() {
                // kube parsed the Status and dropped its type fields; put them back.
                map.insert("kind".into(), "Status".into());
                map.insert("apiVersion".into(), "v1".into());
            }
            return Ok(Answer {
                code: status.code,
                body,
            });
        }
        Err(e) => return Err(format!("watch: no answer: {}", crate::process::error_chain(&e))),
    };
    let taken = tokio::time::timeout(
        Duration::from_secs(timeout_seconds),
        stream.take(events).collect::<Vec<_>>(),
    )
    .await
    .map_err(|_| format!("watch: fewer than {events} events within {timeout_seconds}s"))?;
    let mut out = Vec::new();
    for event in taken {
        let event = event.map_err(|e| format!("watch: {e}"))?;
        out.push(serde_json::to_value(event).map_err(|e| e.to_string())?);
    }
    if out.len() < events {
        return Err(format!(
            "watch: the stream ended after {} of {events} events",
            out.len()
        ));
    }
    Ok(Answer {
        code: 200,
        body: Value::Array(out),
    })
}

/// Run one rule; `patience` is how long a 403 may still be RBAC catching up, when the rule
/// expects anything else.
pub(super) async fn check_request(
    cluster: &Cluster,
    target_dir: &Path,
    rule: &RequestRule,
    patience: Duration,
    update: bool,
) -> Result<String, String> {
    let client = client_for(cluster, rule).await?;
    let deadline = Instant::now() + patience;
    let answer = loop {
        let answer = send(&client, rule).await?;
        if answer.code == 403 && rule.expect.code != 403 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        }
        break answer;
    };
    let seen = format!("{} {}", rule.method(), rule.path());
    if answer.code != rule.expect.code {
        return Err(format!(
            "expected {}, but {seen} answered {}",
            rule.expect.code,
            answer.describe()
        ));
    }
    let (reason, message) = answer.status();
    if let Some(want) = &rule.expect.reason
        && *want != reason
    {
        return Err(format!(
            "expected reason {want}, but {seen} answered {}",
            answer.describe()
        ));
    }
    if let Some(want) = &rule.expect.message
        && !message.contains(want.as_str())
    {
        return Err(format!(
            "expected a message containing {want:?}, but {seen} answered {}",
            answer.describe()
        ));
    }
    let mut summary = match reason.as_str() {
        "" => format!("{seen}: {}", answer.code),
        reason => format!("{seen}: {} {reason}", answer.code),
    };
    if rule.snapshot {
        let mut body = answer.body;
        crate::snapshot::redact(&mut body);
        let path = target_dir
            .join("snapshots")
            .join(format!("{}.snap", rule.snapshot_stem()));
        summary.push_str("; ");
        summary.push_str(&super::compare::compare_snapshot(&path, &body, update)?);
    }
    Ok(summary)
}
