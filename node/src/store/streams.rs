//! The stream position counter and the watermark readers may see up to.

use std::{
    collections::BTreeSet,
    sync::{Mutex, MutexGuard},
};

use tocsin_store::{Store, WriteBatch};
use tokio::sync::watch;

use super::trees;
use crate::error::{Error, Result};

/// Positions are reserved on disk in blocks, so allocation never waits for I/O and a restart
/// never reuses a position (it skips the rest of the block instead).
const RESERVE_BLOCK: u64 = 100_000;
const RESERVED_KEY: &[u8] = b"stream_reserved";
/// Live positions of a new store start here; the positions below are handed out downwards to
/// events backfilled from other servers, so history fetched later still sorts before the events
/// that came after it.
pub const LIVE_BASE: u64 = 1 << 32;

struct State {
    next: u64,
    reserved: u64,
    in_flight: BTreeSet<u64>,
}

pub struct Streams {
    state: Mutex<State>,
    visible: watch::Sender<u64>,
}

/// A position handed out and not yet finished. Pass it back to [`Streams::finish`].
#[must_use]
pub struct Ticket(u64);

impl Ticket {
    pub fn pos(&self) -> u64 {
        self.0
    }
}

impl Streams {
    pub fn load(store: &Store) -> Result<Self> {
        let reserved = match store.get(trees::META, RESERVED_KEY)? {
            Some(b) => super::pos_from(&b)?,
            None => LIVE_BASE,
        };
        let (visible, _) = watch::channel(reserved);
        Ok(Self { state: Mutex::new(State { next: reserved + 1, reserved, in_flight: BTreeSet::new() }), visible })
    }

    fn lock(&self) -> Result<MutexGuard<'_, State>> {
        self.state.lock().map_err(|_| Error::internal("stream counter lock poisoned"))
    }

    pub fn allocate(&self, store: &Store) -> Result<Ticket> {
        let mut state = self.lock()?;
        if state.next > state.reserved {
            let reserved = state.reserved + RESERVE_BLOCK;
            let mut batch = WriteBatch::new();
            batch.insert(trees::META, RESERVED_KEY.to_vec(), reserved.to_be_bytes().to_vec());
            // Rare (once per block): a short blocking write is simpler than an async dance here.
            store.commit_blocking(batch)?;
            state.reserved = reserved;
        }
        let pos = state.next;
        state.next += 1;
        state.in_flight.insert(pos);
        Ok(Ticket(pos))
    }

    /// The highest position handed out so far (durable or not).
    pub fn allocated(&self) -> u64 {
        self.state.lock().map(|s| s.next - 1).unwrap_or_else(|_| self.visible())
    }

    /// Marks `ticket` done (durable or failed) and advances the visible watermark.
    pub fn finish(&self, ticket: Ticket) {
        let Ok(mut state) = self.state.lock() else { return };
        state.in_flight.remove(&ticket.0);
        let watermark = match state.in_flight.first() {
            Some(lowest) => lowest - 1,
            None => state.next - 1,
        };
        drop(state);
        self.visible.send_if_modified(|v| {
            if watermark > *v {
                *v = watermark;
                true
            } else {
                false
            }
        });
    }

    /// Everything at or below this position is durable and readable.
    pub fn visible(&self) -> u64 {
        *self.visible.borrow()
    }

    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.visible.subscribe()
    }
}
