//! One way to wait. Readiness of a child is data on its spec ([`Readiness`]); everything else
//! polls a probe with [`poll`] (backoff, deadline, the last state seen) or awaits a watch
//! condition with [`await_within`] (deadline, then a description of the object as it was).
//! Every wait in the crate has a deadline.

use std::future::Future;
use std::time::Duration;

use kube::Api;
use kube::runtime::wait::{Condition, await_condition};
use tokio::time::Instant;

use crate::error::{Error, Result};

/// How a child process shows it is ready: data on its [`ChildSpec`](crate::process::ChildSpec),
/// waited for by [`Child::start`](crate::process::Child::start) (which also fails at once if
/// the child exits meanwhile).
#[derive(Debug, Clone)]
pub enum Readiness {
    /// Ready as soon as it is spawned.
    Spawned,
    /// A GET of `url` with `client` answers 2xx; with `body`, the answer also contains it.
    Http {
        /// The URL to GET.
        url: String,
        /// The client (trusting the child's CA; with a client certificate if it needs one).
        client: reqwest::Client,
        /// A substring the body must contain.
        body: Option<String>,
    },
    /// A line containing this text appears in the child's log.
    Log(String),
    /// 127.0.0.1 accepts connections on this port.
    Tcp(u16),
}

/// How often to look again: `first`, doubling up to `max`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Backoff {
    first: Duration,
    max: Duration,
}

impl Backoff {
    /// Start after `first_ms`, double up to `max_ms`.
    pub(crate) const fn millis(first_ms: u64, max_ms: u64) -> Self {
        Self {
            first: Duration::from_millis(first_ms),
            max: Duration::from_millis(max_ms),
        }
    }

    /// The same interval every time.
    pub(crate) const fn every_millis(ms: u64) -> Self {
        Self::millis(ms, ms)
    }
}

/// What a probe saw.
#[derive(Debug)]
pub(crate) enum Probe<T> {
    /// Done, with its result.
    Ready(T),
    /// Not yet; what it looks like now (reported if the deadline passes).
    NotYet(String),
}

/// Run `probe` until it is [`Probe::Ready`], it fails (its error is returned at once), or
/// `timeout` has passed since the first try; then `on_timeout` turns the last state seen into
/// the error. The probe runs at least once.
///
/// # Errors
/// The probe's own error, or `on_timeout(last)`.
pub(crate) async fn poll<T, F, Fut>(
    timeout: Duration,
    backoff: Backoff,
    mut probe: F,
    on_timeout: impl FnOnce(String) -> Error,
) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Probe<T>>>,
{
    let deadline = Instant::now() + timeout;
    let mut delay = backoff.first;
    loop {
        let last = match probe().await? {
            Probe::Ready(value) => return Ok(value),
            Probe::NotYet(last) => last,
        };
        if Instant::now() >= deadline {
            return Err(on_timeout(last));
        }
        tokio::time::sleep(delay.min(deadline.saturating_duration_since(Instant::now()))).await;
        delay = (delay * 2).min(backoff.max);
    }
}

/// [`poll`] whose timeout is [`Error::WaitTimeout`] for `what` with the last state seen.
pub(crate) async fn poll_for<T, F, Fut>(what: &str, timeout: Duration, backoff: Backoff, probe: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Probe<T>>>,
{
    poll(timeout, backoff, probe, |last| Error::WaitTimeout {
        what: format!("{what} (last: {last})"),
        timeout,
    })
    .await
}

/// Await `condition` on object `name` with a watch, for at most `timeout`. On timeout the
/// object is read once more and `describe` says what it looked like, for the error.
///
/// `Ok(None)` means the object was deleted while waiting.
///
/// # Errors
/// [`Error::WaitTimeout`] for `what` with `describe`'s words; [`Error::Watch`] if the watch
/// failed.
pub(crate) async fn await_within<K>(
    api: &Api<K>,
    name: &str,
    what: &str,
    timeout: Duration,
    condition: impl Condition<K>,
    describe: impl FnOnce(Option<&K>) -> String,
) -> Result<Option<K>>
where
    K: kube::Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + 'static,
    K::DynamicType: Default + Eq + std::hash::Hash + Clone,
{
    match tokio::time::timeout(timeout, await_condition(api.clone(), name, condition)).await {
        Ok(Ok(found)) => Ok(found),
        Ok(Err(source)) => Err(Error::Watch {
            what: what.to_owned(),
            source,
        }),
        Err(_) => {
            let now = api.get_opt(name).await.ok().flatten();
            Err(Error::WaitTimeout {
                what: format!("{what} (last: {})", describe(now.as_ref())),
                timeout,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn poll_returns_the_first_ready_value() -> Result<()> {
        let mut calls = 0;
        let got = poll_for("three calls", Duration::from_secs(5), Backoff::every_millis(1), || {
            calls += 1;
            let n = calls;
            async move {
                Ok(if n >= 3 {
                    Probe::Ready(n)
                } else {
                    Probe::NotYet(format!("call {n}"))
                })
            }
        })
        .await?;
        assert_eq!(got, 3);
        Ok(())
    }

    #[tokio::test]
    async fn poll_times_out_with_the_last_state() {
        let err = poll_for::<(), _, _>("never", Duration::from_millis(30), Backoff::millis(1, 5), || async {
            Ok(Probe::NotYet("still no".into()))
        })
        .await;
        let message = err.err().map(|e| e.to_string()).unwrap_or_default();
        assert!(message.contains("never (last: still no)"), "{message}");
    }

    #[tokio::test]
    async fn a_failing_probe_stops_the_poll_at_once() {
        let started = std::time::Instant::now();
        let err = poll_for::<(), _, _>("fails", Duration::from_secs(10), Backoff::every_millis(1), || async {
            Err(Error::InvalidVersion("x".into()))
        })
        .await;
        assert!(matches!(err, Err(Error::InvalidVersion(_))));
        assert!(started.elapsed() < Duration::from_secs(1));
    }
}
