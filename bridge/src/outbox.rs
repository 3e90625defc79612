//! Delivers queued messages in order. While the homeserver is unreachable the head job is
//! retried with backoff and nothing behind it overtakes it; the queue is in the store, so a
//! restart resumes where delivery stopped.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Notify, watch};
use tracing::{error, warn};

use crate::matrix::Bot;
use crate::metrics::Metrics;
use crate::render;
use crate::store::{JobKind, Store, StoreError};

/// Runs until `shutdown`.
pub async fn run(
    store: Arc<Store>,
    bot: Arc<Bot>,
    metrics: Arc<Metrics>,
    wake: Arc<Notify>,
    mut shutdown: watch::Receiver<bool>,
) {
    tokio::select! {
        _ = shutdown.changed() => return,
        _ = bot.first_sync() => {}
    }
    let mut backoff = Duration::from_millis(200);
    loop {
        if *shutdown.borrow() {
            return;
        }
        let delay = match step(&store, &bot, &metrics).await {
            Ok(true) => {
                backoff = Duration::from_millis(200);
                continue;
            }
            // Empty: wait for new work (or a periodic look, in case a wake-up was missed).
            Ok(false) => Duration::from_secs(5),
            Err(e) => {
                warn!("delivery failed, retrying in {backoff:?}: {e}");
                Metrics::inc(&metrics.delivery_failures);
                let d = backoff;
                backoff = (backoff * 2).min(Duration::from_secs(5));
                tokio::select! {
                    _ = shutdown.changed() => return,
                    _ = tokio::time::sleep(d) => {}
                }
                continue;
            }
        };
        tokio::select! {
            _ = shutdown.changed() => return,
            _ = wake.notified() => {}
            _ = tokio::time::sleep(delay) => {}
        }
    }
}

#[derive(Debug, thiserror::Error)]
enum StepError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Matrix(#[from] crate::matrix::MatrixError),
}

/// Delivers the head job: `Ok(true)` when one was handled, `Ok(false)` when the queue is empty.
async fn step(store: &Store, bot: &Bot, metrics: &Metrics) -> Result<bool, StepError> {
    let Some((seq, job)) = store.next_job()? else { return Ok(false) };
    let content = match job.kind {
        JobKind::Post => job.content.clone(),
        JobKind::Edit => match store.posted(&job.root, &job.room)? {
            Some(target) => render::edit(job.content.clone(), &target),
            None => {
                error!(root = job.root, room = job.room, "the original of an edit was never posted; dropping the edit");
                store.job_done(seq, None)?;
                return Ok(true);
            }
        },
    };
    match bot.send(&job.room, content).await {
        Ok(event_id) => {
            store.job_done(seq, Some((&job, &event_id)))?;
            Metrics::inc(match job.kind {
                JobKind::Post => &metrics.posted,
                JobKind::Edit => &metrics.edited,
            });
            Ok(true)
        }
        Err(e) if e.is_permanent() => {
            error!(room = job.room, root = job.root, "the homeserver refused an alarm; dropping it: {e}");
            store.job_done(seq, None)?;
            Ok(true)
        }
        Err(e) => Err(e.into()),
    }
}
