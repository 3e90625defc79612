//! What other areas need to queue outbound federation traffic: the row format of `FED_QUEUE`,
//! [`queue_pdu_rows`] to add PDU rows to an event's own write batch, and [`Outbox`] to wake the
//! sender once that batch is durable.
//!
//! This file depends on nothing but the store, so the room service can hold an [`Outbox`]
//! without depending on the sender (which depends on the room service to load events).

use std::{
    collections::BTreeSet,
    sync::{Arc, Mutex},
};

use ruma::{EventId, OwnedEventId, OwnedServerName};
use serde::{Deserialize, Serialize};
use tocsin_store::WriteBatch;
use tokio::sync::Notify;

use crate::store::{Db, key, pos_bytes, trees};

/// One row of `FED_QUEUE`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind")]
pub enum QueueItem {
    /// A PDU of this node; its JSON is loaded from the `EVENTS` tree when it is sent.
    Pdu { event_id: OwnedEventId },
    /// A full EDU object: `{"edu_type": ..., "content": ...}`.
    Edu { edu: serde_json::Value },
}

/// The `FED_QUEUE` key of an item: `destination SEP seq` (seq 8 bytes big-endian, last).
pub fn queue_key(destination: &ruma::ServerName, seq: u64) -> Vec<u8> {
    key(&[destination.as_bytes(), &pos_bytes(seq)])
}

/// Adds one `FED_QUEUE` row per destination for `event_id` to `batch`, so that the queue entry
/// commits atomically with the event. `seq` must be unique among queue rows: the event's stream
/// position is. After the batch is durable, call [`Outbox::wake`] with the same destinations.
pub fn queue_pdu_rows(batch: &mut WriteBatch, destinations: &[OwnedServerName], seq: u64, event_id: &EventId) {
    let item = QueueItem::Pdu { event_id: event_id.to_owned() };
    // Serialising an enum of an id cannot fail; fall back to skipping rather than panicking.
    let Ok(value) = Db::to_json(&item) else {
        tracing::error!(%event_id, "could not serialise a federation queue row");
        return;
    };
    for dest in destinations {
        batch.insert(trees::FED_QUEUE, queue_key(dest, seq), value.clone());
    }
}

/// The wake-up line from the rest of the node to the federation sender. Cheap to clone.
///
/// Wakes are coalesced per destination and never lost: a wake before the sender runs is picked
/// up when it starts (and the sender scans the queue on start anyway).
#[derive(Clone, Default)]
pub struct Outbox {
    inner: Arc<OutboxInner>,
}

#[derive(Default)]
struct OutboxInner {
    pending: Mutex<BTreeSet<OwnedServerName>>,
    notify: Notify,
}

impl Outbox {
    pub fn new() -> Self {
        Self::default()
    }

    /// Tells the sender that `destinations` have new rows in `FED_QUEUE` (already durable).
    pub fn wake(&self, destinations: &[OwnedServerName]) {
        if destinations.is_empty() {
            return;
        }
        match self.inner.pending.lock() {
            Ok(mut pending) => pending.extend(destinations.iter().cloned()),
            Err(_) => {
                tracing::error!("federation outbox lock poisoned; the queue is rescanned on restart");
                return;
            }
        }
        self.inner.notify.notify_one();
    }

    /// Waits for at least one wake and returns every destination woken since the last call.
    pub(super) async fn next(&self) -> Vec<OwnedServerName> {
        loop {
            let taken = match self.inner.pending.lock() {
                Ok(mut pending) => std::mem::take(&mut *pending),
                Err(_) => BTreeSet::new(),
            };
            if !taken.is_empty() {
                return taken.into_iter().collect();
            }
            self.inner.notify.notified().await;
        }
    }
}
