//! The `search-index` worker: takes [`trees::SEARCH_QUEUE`] into the index as positions become
//! visible, and once, for an index that was new when the node started, indexes the events the
//! store already held.

use std::{ops::Bound, sync::Arc, time::Duration};

use tocsin_store::WriteBatch;

use super::{Change, parse_row};
use crate::{
    Services,
    error::Result,
    store::{pos_bytes, trees},
    workers::Stop,
};

/// Queue rows (or stored events, when catching up) taken per index commit.
const ROUND: usize = 500;

/// How often an idle worker looks at the queue anyway.
const IDLE_LOOK: Duration = Duration::from_secs(2);

/// The least time between two index commits while the queue is short. Each commit makes
/// tantivy set up a new segment writer (some megabytes of tables, zeroed), which costs far more
/// than indexing one message: a busy room's events are taken a batch at a time instead.
const COMMIT_GAP: Duration = Duration::from_secs(2);

/// `META` key: the last `TIMELINE` key the catch-up indexed; the value `done` when finished.
const CATCH_UP: &[u8] = b"search_catch_up";
const DONE: &[u8] = b"done";

pub fn spawn(node: &Arc<Services>) {
    let services = node.clone();
    node.workers.spawn("search-index", |stop| run(services, stop));
}

async fn run(s: Arc<Services>, mut stop: Stop) {
    let mut visible = s.db.streams.subscribe();
    // A new index (its folder lost, or a store from before search) starts the catch-up over.
    if s.search.was_fresh() {
        let mut batch = WriteBatch::new();
        batch.remove(trees::META, CATCH_UP.to_vec());
        if let Err(e) = s.db.write(batch).await {
            tracing::warn!(error = %e, "cannot restart the search catch-up");
        }
    }
    loop {
        let step = match catch_up(&s).await {
            Ok(true) => drain(&s).await,
            Ok(false) => Ok(Drained::Full),
            Err(e) => Err(e),
        };
        let pause = match step {
            Ok(Drained::Full) => {
                if *stop.borrow() {
                    return;
                }
                continue;
            }
            Ok(Drained::Some) => COMMIT_GAP,
            Ok(Drained::Empty) => {
                tokio::select! {
                    changed = visible.changed() => if changed.is_err() { return },
                    // The purge's rows come with no new stream position to wake on.
                    _ = tokio::time::sleep(IDLE_LOOK) => {}
                    _ = stop.wait_for(|stop| *stop) => return,
                }
                continue;
            }
            Err(e) => {
                tracing::warn!(error = %e, "search indexing failed; retrying");
                Duration::from_secs(1)
            }
        };
        tokio::select! {
            _ = tokio::time::sleep(pause) => {}
            _ = stop.wait_for(|stop| *stop) => return,
        }
    }
}

/// What one round of the queue found.
enum Drained {
    Empty,
    /// Some rows, all taken.
    Some,
    /// A full round: more may wait.
    Full,
}

/// Applies and commits `changes` on a blocking thread: a commit writes and syncs files.
async fn apply(s: &Arc<Services>, changes: Vec<Change>) -> Result<()> {
    let s = s.clone();
    tokio::task::spawn_blocking(move || s.search.apply(&changes))
        .await
        .map_err(|e| crate::Error::internal(format!("the search commit stopped: {e}")))?
}

/// One round of the queue.
async fn drain(s: &Arc<Services>) -> Result<Drained> {
    let upto = pos_bytes(s.db.streams.visible().saturating_add(1));
    let rows = s.db.range(trees::SEARCH_QUEUE, Bound::Unbounded, Bound::Excluded(&upto[..]), false, ROUND)?;
    if rows.is_empty() {
        return Ok(Drained::Empty);
    }
    let full = if rows.len() == ROUND { Drained::Full } else { Drained::Some };
    let mut changes = Vec::with_capacity(rows.len());
    let mut done = WriteBatch::new();
    for (key, value) in rows {
        done.remove(trees::SEARCH_QUEUE, key.clone());
        let Some((pos, add, event_id)) = parse_row(&key, &value)? else { continue };
        // What is served now decides: a redacted, purged or expired event leaves the index.
        match s.rooms.served_event(&event_id)? {
            Some((_, pdu)) if add => changes.push(Change::Add(Box::new(pdu), pos)),
            _ => changes.push(Change::Drop(event_id)),
        }
    }
    apply(s, changes).await?;
    s.db.write(done).await?;
    Ok(full)
}

/// One round of indexing what the store held before the index existed; `true` once done.
async fn catch_up(s: &Arc<Services>) -> Result<bool> {
    let cursor = match s.db.get(trees::META, CATCH_UP)? {
        Some(c) if c == DONE => return Ok(true),
        Some(c) => Some(c),
        None if !s.search.was_fresh() => return Ok(true),
        None => None,
    };
    let from = cursor.as_deref().map_or(Bound::Unbounded, Bound::Excluded);
    let rows = s.db.range(trees::TIMELINE, from, Bound::Unbounded, false, ROUND)?;
    let mut changes = Vec::new();
    for (_, event_id) in &rows {
        let event_id = ruma::EventId::parse(crate::store::utf8(event_id)?).map_err(crate::Error::internal)?;
        if let Some((pos, pdu)) = s.rooms.served_event(&event_id)?
            && super::indexable(&pdu).is_some()
        {
            changes.push(Change::Add(Box::new(pdu), pos));
        }
    }
    if !changes.is_empty() {
        apply(s, changes).await?;
    }
    let mut batch = WriteBatch::new();
    match rows.last() {
        Some((key, _)) if rows.len() == ROUND => batch.insert(trees::META, CATCH_UP.to_vec(), key.clone()),
        _ => {
            tracing::info!("search index caught up with the store");
            batch.insert(trees::META, CATCH_UP.to_vec(), DONE.to_vec());
        }
    }
    s.db.write(batch).await?;
    Ok(false)
}
