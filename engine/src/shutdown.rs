//! The shutdown signal handed to every binding, and the drain that follows it.
//!
//! Shutdown has two phases: *draining* (listeners close, protocols say goodbye,
//! e.g. MQTT DISCONNECT 0x8B) and, once the grace period is over, *terminated*
//! (whatever is still open is dropped). Connection tasks are spawned through
//! [`Shutdown::spawn`] so the engine knows when they are all gone.

use std::future::Future;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// A cloneable view of the engine's shutdown state.
#[derive(Clone, Debug, Default)]
pub struct Shutdown {
    draining: CancellationToken,
    terminated: CancellationToken,
    tasks: TaskTracker,
}

/// How a drain ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Drained {
    /// Tasks still running when the grace period ran out (0 when all finished).
    pub abandoned: usize,
}

impl Shutdown {
    /// A signal that has not fired.
    pub fn new() -> Self {
        Self::default()
    }

    /// Resolves once shutdown has begun.
    pub async fn draining(&self) {
        self.draining.cancelled().await
    }

    /// Whether shutdown has begun.
    pub fn is_draining(&self) -> bool {
        self.draining.is_cancelled()
    }

    /// Resolves once the grace period is over and remaining streams must close.
    pub async fn terminated(&self) {
        self.terminated.cancelled().await
    }

    /// Spawns a connection (or listener) task the drain waits for.
    pub fn spawn<F>(&self, task: F) -> JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.tasks.spawn(task)
    }

    /// Begins draining, waits up to `grace` for tracked tasks, then terminates
    /// the rest and gives them a brief moment to drop their streams.
    pub async fn shut_down(&self, grace: Duration) -> Drained {
        self.draining.cancel();
        self.tasks.close();
        if tokio::time::timeout(grace, self.tasks.wait()).await.is_ok() {
            self.terminated.cancel();
            return Drained { abandoned: 0 };
        }
        let abandoned = self.tasks.len();
        self.terminated.cancel();
        // Tasks select on `terminated`, so they end promptly; bounded regardless.
        let _ = tokio::time::timeout(Duration::from_secs(1), self.tasks.wait()).await;
        Drained { abandoned }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn drain_waits_for_tasks_within_grace() {
        let shutdown = Shutdown::new();
        let watcher = shutdown.clone();
        shutdown.spawn(async move {
            watcher.draining().await;
            tokio::time::sleep(Duration::from_millis(10)).await;
        });
        let drained = shutdown.shut_down(Duration::from_secs(5)).await;
        assert_eq!(drained, Drained { abandoned: 0 });
    }

    #[tokio::test(start_paused = true)]
    async fn drain_gives_up_after_grace_and_terminates() {
        let shutdown = Shutdown::new();
        let watcher = shutdown.clone();
        shutdown.spawn(async move { watcher.terminated().await });
        let drained = shutdown.shut_down(Duration::from_secs(2)).await;
        assert_eq!(drained, Drained { abandoned: 1 });
    }
}
