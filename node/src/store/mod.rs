//! The node's view of the store: named trees, key codecs and the stream position counter.
//!
//! Every change a client can sync (an event, a receipt, account data, a to-device message, a
//! device-list change) gets a position from one counter. A position becomes visible to readers
//! only when it and every position below it are durable, so `/sync` never skips a write that
//! commits late.

mod change_log;
pub mod schema;
mod streams;
pub mod trees;

use std::{ops::Bound, path::Path, sync::Arc};

use serde::{Serialize, de::DeserializeOwned};
use tocsin_store::{EngineKind, Entries, Store, WriteBatch};

pub use change_log::Change;
pub use streams::{LIVE_BASE, Streams};

use crate::error::{Error, Result};

/// Separator between key parts. 0xFF never occurs in UTF-8, so it cannot collide with ids.
pub const SEP: u8 = 0xFF;

/// Joins key parts with [`SEP`].
pub fn key(parts: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::with_capacity(parts.iter().map(|p| p.len() + 1).sum());
    for (i, p) in parts.iter().enumerate() {
        if i > 0 {
            out.push(SEP);
        }
        out.extend_from_slice(p);
    }
    out
}

/// `parts` joined, plus a trailing separator: the prefix of every key that continues them.
pub fn prefix(parts: &[&[u8]]) -> Vec<u8> {
    let mut out = key(parts);
    out.push(SEP);
    out
}

/// Splits a key back into its parts.
pub fn split(key: &[u8]) -> Vec<&[u8]> {
    key.split(|b| *b == SEP).collect()
}

pub fn utf8(bytes: &[u8]) -> Result<&str> {
    std::str::from_utf8(bytes).map_err(|_| Error::internal("non-UTF-8 key in store"))
}

pub fn pos_bytes(pos: u64) -> [u8; 8] {
    pos.to_be_bytes()
}

/// The position that ends a key. Positions are raw big-endian bytes and may contain [`SEP`], so
/// they always come last and are read by length, never by splitting.
pub fn pos_suffix(key: &[u8]) -> Result<u64> {
    let start = key.len().checked_sub(8).ok_or_else(|| Error::internal("key too short for a position"))?;
    pos_from(&key[start..])
}

pub fn pos_from(bytes: &[u8]) -> Result<u64> {
    let arr: [u8; 8] = bytes.try_into().map_err(|_| Error::internal("bad position in store"))?;
    Ok(u64::from_be_bytes(arr))
}

/// The store plus the stream counter, shared by every area of the node.
#[derive(Clone)]
pub struct Db {
    store: Store,
    pub streams: Arc<Streams>,
    /// What changed at which positions since the node started, and whom it concerns
    /// (incremental sync, long-poll wake-ups).
    pub changes: Arc<change_log::ChangeLog>,
}

impl Db {
    pub fn open(kind: EngineKind, dir: &Path) -> Result<Self> {
        let store = Store::open(kind, dir)?;
        let streams = Arc::new(Streams::load(&store)?);
        let changes = Arc::new(change_log::ChangeLog::new(streams.visible()));
        Ok(Self { store, streams, changes })
    }

    /// A consistent copy of the store, taken while it is in use, as a new store in `dir`
    /// (see `tocsin_store::Store::backup`). Blocking.
    pub fn backup(&self, dir: &Path) -> Result<()> {
        Ok(self.store.backup(dir)?)
    }

    /// Commit counts and latencies since the store opened (metrics).
    pub fn commit_stats(&self) -> &tocsin_store::CommitStats {
        self.store.commit_stats()
    }

    pub fn engine_name(&self) -> &'static str {
        self.store.engine_name()
    }

    pub fn get(&self, tree: &'static str, key: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(self.store.get(tree, key)?)
    }

    pub fn get_json<T: DeserializeOwned>(&self, tree: &'static str, key: &[u8]) -> Result<Option<T>> {
        match self.store.get(tree, key)? {
            Some(bytes) => serde_json::from_slice(&bytes)
                .map(Some)
                .map_err(|e| Error::internal(format!("corrupt record in {tree}: {e}"))),
            None => Ok(None),
        }
    }

    pub fn scan_prefix(&self, tree: &'static str, prefix: &[u8], limit: usize) -> Result<Entries> {
        Ok(self.store.scan_prefix(tree, prefix, limit)?)
    }

    pub fn range(
        &self,
        tree: &'static str,
        from: Bound<&[u8]>,
        to: Bound<&[u8]>,
        reverse: bool,
        limit: usize,
    ) -> Result<Entries> {
        Ok(self.store.range(tree, from, to, reverse, limit)?)
    }

    /// Durable write of something that has no stream position.
    pub async fn write(&self, batch: WriteBatch) -> Result<()> {
        self.changes.note_batch(&batch);
        Ok(self.store.commit(batch).await?)
    }

    pub fn write_blocking(&self, batch: WriteBatch) -> Result<()> {
        self.changes.note_batch(&batch);
        Ok(self.store.commit_blocking(batch)?)
    }

    /// Durable write of a streamed change: `build` gets the new position and fills the batch.
    /// Returns once durable; the position is visible to `/sync` from then on.
    pub async fn write_streamed(&self, build: impl FnOnce(u64, &mut WriteBatch)) -> Result<u64> {
        let ticket = self.allocate()?;
        let mut batch = WriteBatch::new();
        build(ticket.pos(), &mut batch);
        self.commit_ticket(ticket, batch).await
    }

    /// For callers that must allocate the position while holding a lock (room timelines, so that
    /// timeline order is position order) and await durability after releasing it.
    pub fn allocate(&self) -> Result<streams::Ticket> {
        self.streams.allocate(&self.store)
    }

    pub async fn commit_ticket(&self, ticket: streams::Ticket, batch: WriteBatch) -> Result<u64> {
        let pos = ticket.pos();
        self.changes.note_batch(&batch);
        let result = self.store.commit(batch).await;
        self.streams.finish(ticket);
        result?;
        Ok(pos)
    }

    /// Like [`Db::commit_ticket`], but the batch is visible to point reads at once and the
    /// returned future only waits for durability, so several writes can share it.
    pub fn stage_ticket(
        &self,
        ticket: streams::Ticket,
        batch: WriteBatch,
    ) -> impl std::future::Future<Output = Result<u64>> + Send + 'static {
        self.changes.note_batch(&batch);
        let staged = self.store.stage(batch);
        let streams = self.streams.clone();
        let pos = ticket.pos();
        // The ticket is finished by a task of its own, so a caller that drops the future cannot
        // stall the stream watermark.
        let (tx, rx) = tokio::sync::oneshot::channel();
        tokio::spawn(async move {
            let result = match staged {
                Ok(staged) => staged.durable().await,
                Err(e) => Err(e),
            };
            streams.finish(ticket);
            let _ = tx.send(result);
        });
        async move {
            rx.await.map_err(|_| Error::internal("the commit task stopped"))??;
            Ok(pos)
        }
    }

    /// Stages a write with no stream position (see [`Db::stage_ticket`]).
    pub fn stage(&self, batch: WriteBatch) -> impl std::future::Future<Output = Result<()>> + Send + 'static {
        self.changes.note_batch(&batch);
        let staged = self.store.stage(batch);
        async move { Ok(staged?.durable().await?) }
    }

    pub fn to_json<T: Serialize>(value: &T) -> Result<Vec<u8>> {
        serde_json::to_vec(value).map_err(Error::internal)
    }
}
