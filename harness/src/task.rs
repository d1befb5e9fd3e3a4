//! Background work owned by a test: aborted when the guard is dropped (a test that returns
//! early or panics does not leave a controller running against the next test's objects).

use std::future::Future;

use tokio::task::{JoinError, JoinHandle};

/// A spawned task that is aborted when this guard is dropped. [`TaskGuard::join`] waits for
/// it instead; [`TaskGuard::abort`] ends it and waits until it has stopped.
///
/// ```no_run
/// # async fn wrapper() -> Result<(), Box<dyn std::error::Error>> {
/// # async fn run_controller(_: kube::Client) {}
/// let cluster = kube_harness::shared().await?;
/// let controller = kube_harness::spawn_guarded(run_controller(cluster.client().await?));
/// // … the test's requests; the controller runs meanwhile …
/// drop(controller); // aborted (also when the test panics before this line)
/// # Ok(()) }
/// ```
#[derive(Debug)]
#[must_use = "dropping the guard aborts the task at once"]
pub struct TaskGuard<T> {
    handle: JoinHandle<T>,
}

/// Spawn `future` on the current tokio runtime, aborted when the returned guard drops.
///
/// # Panics
/// Outside a tokio runtime, as [`tokio::spawn`] does.
pub fn spawn_guarded<F>(future: F) -> TaskGuard<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    TaskGuard {
        handle: tokio::spawn(future),
    }
}

impl<T> TaskGuard<T> {
    /// Whether the task has ended (returned, panicked or been aborted).
    pub fn is_finished(&self) -> bool {
        self.handle.is_finished()
    }

    /// Wait for the task to end by itself and return what it returned.
    ///
    /// # Errors
    /// The task's panic, as a [`JoinError`].
    pub async fn join(mut self) -> Result<T, JoinError> {
        // Aborting a finished task (when the guard drops after this) does nothing.
        (&mut self.handle).await
    }

    /// Abort the task and wait until it has stopped (its drop handlers have run).
    pub async fn abort(mut self) {
        self.handle.abort();
        let _ = (&mut self.handle).await;
    }
}

impl<T> Drop for TaskGuard<T> {
    fn drop(&mut self) {
        self.handle.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::Duration;

    struct SetOnDrop(Arc<AtomicBool>);
    impl Drop for SetOnDrop {
        fn drop(&mut self) {
            self.0.store(true, Ordering::SeqCst);
        }
    }

    #[tokio::test]
    async fn dropping_the_guard_aborts_the_task() {
        let stopped = Arc::new(AtomicBool::new(false));
        let flag = SetOnDrop(stopped.clone());
        let guard = spawn_guarded(async move {
            let _flag = flag;
            tokio::time::sleep(Duration::from_secs(3600)).await;
        });
        assert!(!guard.is_finished());
        drop(guard);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while !stopped.load(Ordering::SeqCst) && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert!(
            stopped.load(Ordering::SeqCst),
            "the task still runs after its guard dropped"
        );
    }

    #[tokio::test]
    async fn join_returns_the_output_and_abort_waits() {
        assert_eq!(spawn_guarded(async { 7 }).join().await.ok(), Some(7));
        let stopped = Arc::new(AtomicBool::new(false));
        let flag = SetOnDrop(stopped.clone());
        spawn_guarded(async move {
            let _flag = flag;
            std::future::pending::<()>().await;
        })
        .abort()
        .await;
        assert!(stopped.load(Ordering::SeqCst));
    }
}
