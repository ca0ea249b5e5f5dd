//! The shutdown signal handed to every binding, and the drain that follows it.
//!
//! Shutdown has two phases: *draining* (listeners close, protocols say goodbye,
//! e.g. MQTT DISCONNECT 0x8B) and, once the grace period is over, *terminated*
//! (whatever is still open is dropped). Connection tasks are spawned through
//! [`Shutdown::spawn_connection`] (other tasks through [`Shutdown::spawn`]) so
//! the engine knows when they are all gone.
//!
//! A reload adds a step that comes before, or instead of, draining: a
//! configuration that another has replaced stops *accepting* (its listeners
//! stop taking connections) while the connections it already has carry on
//! undisturbed; it is drained only once they have all ended, or when the
//! process shuts down.

use std::future::Future;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// A cloneable view of the engine's shutdown state.
#[derive(Clone, Debug)]
pub struct Shutdown {
    draining: CancellationToken,
    /// A child of `draining`: cancelled by it, or alone when replaced by a reload.
    accepting: CancellationToken,
    terminated: CancellationToken,
    tasks: TaskTracker,
    /// The subset of `tasks` that accept connections.
    listeners: TaskTracker,
    /// The subset of `tasks` that serve a connection.
    connections: TaskTracker,
}

impl Default for Shutdown {
    fn default() -> Self {
        let draining = CancellationToken::new();
        Self {
            accepting: draining.child_token(),
            draining,
            terminated: CancellationToken::new(),
            tasks: TaskTracker::new(),
            listeners: TaskTracker::new(),
            connections: TaskTracker::new(),
        }
    }
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

    /// Resolves once listeners must stop accepting: on shutdown, or when a
    /// reloaded configuration has taken over. Accept loops select on this,
    /// not on [`draining`](Self::draining), so that a replaced configuration
    /// stops accepting without disturbing its connections.
    pub async fn accepting_stopped(&self) {
        self.accepting.cancelled().await
    }

    /// Whether listeners must stop accepting.
    pub fn is_accepting(&self) -> bool {
        !self.accepting.is_cancelled()
    }

    /// Stops accepting without draining: connections carry on.
    pub fn stop_accepting(&self) {
        self.accepting.cancel();
    }

    /// Resolves once the grace period is over and remaining streams must close.
    pub async fn terminated(&self) {
        self.terminated.cancelled().await
    }

    /// Spawns a background task the drain waits for.
    pub fn spawn<F>(&self, task: F) -> JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.tasks.spawn(task)
    }

    /// Spawns an accept loop, which must end once
    /// [`accepting_stopped`](Self::accepting_stopped) resolves.
    pub fn spawn_listener<F>(&self, task: F) -> JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.tasks.spawn(self.listeners.track_future(task))
    }

    /// Spawns the task serving one accepted connection: the drain waits for
    /// it, and [`connections_ended`](Self::connections_ended) tells when the
    /// last one is gone.
    pub fn spawn_connection<F>(&self, task: F) -> JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.tasks.spawn(self.connections.track_future(task))
    }

    /// Connections still being served.
    pub fn connections(&self) -> usize {
        self.connections.len()
    }

    /// Resolves once accepting has stopped, every accept loop has returned
    /// and every connection task has ended (at once when there were none).
    pub async fn connections_ended(&self) {
        self.accepting_stopped().await;
        // An accept loop may be handing over a connection as accepting stops;
        // only once the loops are gone is the set of connections final.
        self.listeners.close();
        self.listeners.wait().await;
        self.connections.close();
        self.connections.wait().await
    }

    /// Begins draining, waits up to `grace` for tracked tasks, then terminates
    /// the rest and gives them a brief moment to drop their streams.
    pub async fn shut_down(&self, grace: Duration) -> Drained {
        self.draining.cancel();
        self.tasks.close();
        self.listeners.close();
        self.connections.close();
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

    #[tokio::test(start_paused = true)]
    async fn stop_accepting_leaves_connections_running() {
        let shutdown = Shutdown::new();
        let watcher = shutdown.clone();
        let (finish, finished) = tokio::sync::oneshot::channel::<()>();
        shutdown.spawn_connection(async move {
            tokio::select! {
                _ = watcher.draining() => panic!("a replaced configuration does not drain"),
                _ = finished => {}
            }
        });
        assert!(shutdown.is_accepting());
        shutdown.stop_accepting();
        assert!(!shutdown.is_accepting() && !shutdown.is_draining());
        shutdown.accepting_stopped().await;
        assert_eq!(shutdown.connections(), 1);
        let ended = shutdown.clone();
        let waiting = tokio::spawn(async move { ended.connections_ended().await });
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished());
        finish.send(()).unwrap();
        waiting.await.unwrap();
        assert_eq!(shutdown.connections(), 0);
    }

    #[tokio::test(start_paused = true)]
    async fn draining_also_stops_accepting() {
        let shutdown = Shutdown::new();
        let drained = shutdown.shut_down(Duration::from_secs(1)).await;
        assert_eq!(drained, Drained { abandoned: 0 });
        assert!(!shutdown.is_accepting());
        shutdown.accepting_stopped().await;
        shutdown.connections_ended().await;
    }
}
