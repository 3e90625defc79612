//! The worker registry: every background task of a node runs under it.
//!
//! A worker is started with [`Workers::spawn`], gets a [`Stop`] signal, runs inside a `worker`
//! tracing span carrying its name, and is joined by [`Workers::shutdown`]. Shutdown is one
//! sequence for all of them: raise the stop signal, wait for every worker to return, and abort
//! (and name) any that outlive the grace period. No task holds the services past shutdown, so
//! the store is closed when the node's handle is dropped and the same data directory can be
//! opened again at once.

use std::{
    collections::HashMap,
    future::Future,
    sync::{Arc, Mutex, MutexGuard},
    time::Duration,
};

use tokio::{
    sync::watch,
    task::{Id, JoinSet},
};
use tracing::Instrument;

/// A worker's stop signal: `wait_for(|stop| *stop)` returns when the node shuts down.
pub type Stop = watch::Receiver<bool>;

/// The node's background tasks. Cheap to clone: clones share one registry.
#[derive(Clone)]
pub struct Workers {
    inner: Arc<Inner>,
}

struct Inner {
    stop: watch::Sender<bool>,
    running: Mutex<Running>,
}

#[derive(Default)]
struct Running {
    tasks: JoinSet<()>,
    names: HashMap<Id, &'static str>,
    /// Set by shutdown: a worker spawned after it is not started.
    closed: bool,
}

/// What [`Workers::shutdown`] saw.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct ShutdownReport {
    /// Workers that returned (or had returned) by themselves.
    pub joined: usize,
    /// Workers still running after the grace period, by name: aborted.
    pub aborted: Vec<&'static str>,
}

impl Default for Workers {
    fn default() -> Self {
        Self::new()
    }
}

impl Workers {
    pub fn new() -> Self {
        let (stop, _) = watch::channel(false);
        Workers { inner: Arc::new(Inner { stop, running: Mutex::new(Running::default()) }) }
    }

    fn running(&self) -> MutexGuard<'_, Running> {
        // A panic while holding this lock leaves only bookkeeping behind: carry on with it.
        self.inner.running.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Starts `run` as the worker `name`. It must return soon after its [`Stop`] fires. After
    /// shutdown has begun, nothing is started (the future is dropped unpolled).
    pub fn spawn<F, Fut>(&self, name: &'static str, run: F)
    where
        F: FnOnce(Stop) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let stop = self.stop_signal();
        let mut running = self.running();
        if running.closed {
            tracing::debug!(worker = name, "not started: the node is shutting down");
            return;
        }
        // Reap finished workers so short-lived ones (a backfill, one announce) do not pile up.
        while let Some(done) = running.tasks.try_join_next_with_id() {
            let id = match &done {
                Ok((id, ())) => *id,
                Err(e) => e.id(),
            };
            let finished = running.names.remove(&id).unwrap_or("worker");
            log_outcome(finished, &done);
        }
        let span = tracing::info_span!("worker", name);
        let handle = running.tasks.spawn(run(stop).instrument(span));
        running.names.insert(handle.id(), name);
    }

    /// The signal every worker watches; also for servers that stop with the node.
    pub fn stop_signal(&self) -> Stop {
        self.inner.stop.subscribe()
    }

    /// Whether shutdown has begun.
    pub fn stopping(&self) -> bool {
        *self.inner.stop.borrow()
    }

    /// How many workers are running now (finished ones not yet reaped are counted).
    pub fn len(&self) -> usize {
        self.running().tasks.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Raises the stop signal without waiting.
    pub fn signal_stop(&self) {
        self.inner.stop.send_replace(true);
    }

    /// Raises the stop signal, joins every worker, and aborts those still running after
    /// `grace`. A worker that another one tries to start from here on is not started.
    pub async fn shutdown(&self, grace: Duration) -> ShutdownReport {
        self.signal_stop();
        let mut tasks = {
            let mut running = self.running();
            running.closed = true;
            std::mem::take(&mut running.tasks)
        };
        let mut report = ShutdownReport::default();
        let deadline = tokio::time::Instant::now() + grace;
        loop {
            match tokio::time::timeout_at(deadline, tasks.join_next_with_id()).await {
                Ok(Some(done)) => {
                    let id = match &done {
                        Ok((id, ())) => *id,
                        Err(e) => e.id(),
                    };
                    let name = self.running().names.remove(&id).unwrap_or("?");
                    log_outcome(name, &done);
                    report.joined += 1;
                }
                Ok(None) => break,
                Err(_) => {
                    let mut aborted: Vec<&'static str> = self.running().names.values().copied().collect();
                    aborted.sort_unstable();
                    tracing::warn!(?aborted, "workers did not stop within {grace:?}: aborting them");
                    report.aborted = aborted;
                    tasks.shutdown().await;
                    break;
                }
            }
        }
        self.running().names.clear();
        report
    }
}

fn log_outcome(name: &'static str, done: &Result<(Id, ()), tokio::task::JoinError>) {
    if let Err(e) = done
        && e.is_panic()
    {
        tracing::error!(worker = name, "worker panicked");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn shutdown_joins_workers_that_honour_the_signal() {
        let workers = Workers::new();
        for _ in 0..3 {
            workers.spawn("polite", |mut stop| async move {
                let _ = stop.wait_for(|s| *s).await;
            });
        }
        let report = workers.shutdown(Duration::from_secs(5)).await;
        assert_eq!(report, ShutdownReport { joined: 3, aborted: vec![] });
        assert!(workers.is_empty());
    }

    #[tokio::test]
    async fn a_worker_that_ignores_the_signal_is_aborted_and_named() {
        let workers = Workers::new();
        workers.spawn("stubborn", |_stop| async move { std::future::pending::<()>().await });
        workers.spawn("polite", |mut stop| async move {
            let _ = stop.wait_for(|s| *s).await;
        });
        let report = workers.shutdown(Duration::from_millis(100)).await;
        assert_eq!(report, ShutdownReport { joined: 1, aborted: vec!["stubborn"] });
    }

    #[tokio::test]
    async fn nothing_starts_after_shutdown() {
        let workers = Workers::new();
        workers.shutdown(Duration::from_millis(10)).await;
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        workers.spawn("late", |_| async move {
            let _ = tx.send(());
        });
        assert!(rx.await.is_err(), "a worker spawned after shutdown must not run");
    }
}
