//! Tocsin's storage layer.
//!
//! [`KvEngine`] is the small trait every engine implements: sled and redb, which a node opens
//! in its data folder, and PostgreSQL ([`PostgresEngine`]), which passes the same conformance
//! and crash suites but is not yet selectable in a node's config. Nodes never
//! write to an engine directly: they hand a [`WriteBatch`] to [`Store::commit`], which groups
//! concurrent batches into one durable write (one fsync for many batches) and returns only once
//! the batch is on disk. That is what lets the node acknowledge an event only when it is durable
//! without paying one fsync per event.

mod commit;
mod postgres_engine;
mod redb_engine;
mod sled_engine;

use std::{ops::Bound, path::Path, str::FromStr, sync::Arc};

pub use commit::{COMMIT_BUCKETS, CommitStats, Staged, Store};
pub use postgres_engine::PostgresEngine;
pub use redb_engine::RedbEngine;
pub use sled_engine::SledEngine;

/// A storage error. The node maps every variant to `M_UNKNOWN` with a 500: none of them is the
/// client's fault.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("storage engine error: {0}")]
    Engine(String),
    #[error("storage I/O error: {0}")]
    Io(#[from] std::io::Error),
    #[error("the store is shut down")]
    Closed,
    #[error("unknown storage engine `{0}` (expected `sled` or `redb`)")]
    UnknownEngine(String),
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// One write operation on a named tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    Insert { tree: &'static str, key: Vec<u8>, value: Vec<u8> },
    Remove { tree: &'static str, key: Vec<u8> },
}

/// A set of writes, possibly across several trees, that is applied atomically: after a crash
/// either all of them are there or none is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WriteBatch {
    pub ops: Vec<Op>,
}

impl WriteBatch {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn insert(&mut self, tree: &'static str, key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) {
        self.ops.push(Op::Insert { tree, key: key.into(), value: value.into() });
    }

    pub fn remove(&mut self, tree: &'static str, key: impl Into<Vec<u8>>) {
        self.ops.push(Op::Remove { tree, key: key.into() });
    }

    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    pub fn len(&self) -> usize {
        self.ops.len()
    }
}

/// Key/value pairs as returned by scans.
pub type Entries = Vec<(Vec<u8>, Vec<u8>)>;

/// The trait every storage engine implements. Trees are created on first use. Keys and values
/// are raw bytes, ordered lexicographically by key.
pub trait KvEngine: Send + Sync + 'static {
    /// The engine's name as used in config (`sled`, `redb`).
    fn name(&self) -> &'static str;

    fn get(&self, tree: &'static str, key: &[u8]) -> Result<Option<Vec<u8>>>;

    /// Entries with `from <= key < to` (as bounds say), in ascending order, or descending when
    /// `reverse`, at most `limit` of them.
    fn range(
        &self,
        tree: &'static str,
        from: Bound<&[u8]>,
        to: Bound<&[u8]>,
        reverse: bool,
        limit: usize,
    ) -> Result<Entries>;

    /// Entries whose key starts with `prefix`, ascending, at most `limit`.
    fn scan_prefix(&self, tree: &'static str, prefix: &[u8], limit: usize) -> Result<Entries> {
        match prefix_successor(prefix) {
            Some(end) => self.range(tree, Bound::Included(prefix), Bound::Excluded(&end), false, limit),
            None => self.range(tree, Bound::Included(prefix), Bound::Unbounded, false, limit),
        }
    }

    /// Applies each batch atomically, in order, and returns only when all of them are durable
    /// (on disk, surviving a SIGKILL or power cut as far as the OS's fsync promises).
    fn write_durable(&self, batches: &[WriteBatch]) -> Result<()>;

    /// Writes a consistent copy of every tree as a new store of this engine in `dir` (the
    /// layout [`open_engine`] opens), durable when it returns. Used by [`Store::backup`].
    fn backup_to(&self, dir: &Path) -> Result<()>;

    /// Whether [`KvEngine::backup_to`] sees one point in time while writes go on. When false,
    /// the store pauses its writes for the copy.
    fn snapshot_isolated(&self) -> bool {
        false
    }
}

/// The smallest key greater than every key that starts with `prefix`, or `None` if there is
/// none (the prefix is all 0xFF).
pub fn prefix_successor(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xFF {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

/// Whether the bounds select no key at all (`from` past `to`). Engines return nothing for
/// such ranges instead of handing them to a B-tree that may panic on them.
pub(crate) fn is_empty_range(from: Bound<&[u8]>, to: Bound<&[u8]>) -> bool {
    match (from, to) {
        (Bound::Included(a), Bound::Included(b)) => a > b,
        (Bound::Included(a) | Bound::Excluded(a), Bound::Excluded(b)) | (Bound::Excluded(a), Bound::Included(b)) => {
            a >= b
        }
        _ => false,
    }
}

/// Which engine to open.
/// The default is the engine that passes the crash test and measures best (see the README).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum EngineKind {
    Sled,
    // redb: both engines pass the SIGKILL test, but redb fdatasyncs every commit by design while
    // sled 0.34's flush is only `sync_file_range` (our SledEngine adds the fdatasync itself), and
    // redb commits at least as fast under concurrent load; sled wins single-writer latency and
    // point reads. Figures and reasoning: node/store/BENCH.md.
    #[default]
    Redb,
}

impl std::fmt::Display for EngineKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            EngineKind::Sled => "sled",
            EngineKind::Redb => "redb",
        })
    }
}

impl FromStr for EngineKind {
    type Err = StoreError;

    fn from_str(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "sled" => Ok(EngineKind::Sled),
            "redb" => Ok(EngineKind::Redb),
            other => Err(StoreError::UnknownEngine(other.to_owned())),
        }
    }
}

/// Opens the engine of the given kind in `dir` (created if missing).
pub fn open_engine(kind: EngineKind, dir: &Path) -> Result<Arc<dyn KvEngine>> {
    std::fs::create_dir_all(dir)?;
    Ok(match kind {
        EngineKind::Sled => Arc::new(SledEngine::open(&dir.join("sled"))?),
        EngineKind::Redb => Arc::new(RedbEngine::open(&dir.join("tocsin.redb"))?),
    })
}
