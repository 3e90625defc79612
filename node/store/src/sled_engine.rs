//! The sled engine: one sled `Db`, one sled `Tree` per named tree.

use std::{
    collections::HashMap,
    ops::Bound,
    path::Path,
    sync::{PoisonError, RwLock},
};

use sled::{
    Transactional,
    transaction::{ConflictableTransactionError, TransactionError},
};

use crate::{Entries, KvEngine, Op, Result, StoreError, WriteBatch, is_empty_range};

pub struct SledEngine {
    db: sled::Db,
    /// sled's log file. On Linux `Db::flush` only calls `sync_file_range`, which neither flushes
    /// the drive's write cache nor persists file-size metadata; its man page says it gives no
    /// crash guarantee. An `fdatasync` on this file after each flush makes the write durable.
    log: std::fs::File,
    // Opening a tree goes through sled's metadata; caching the handle keeps it off the hot path.
    trees: RwLock<HashMap<&'static str, sled::Tree>>,
}

/// How long an open waits for the file lock of a store this process just closed.
const LOCK_RELEASE_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// Opens sled's `Db`. Dropping a `Db` returns before sled's background threads have let go of
/// the log, so a reopen straight after a close (a restart in the same process) can find the
/// file lock still held for a few milliseconds; that case is retried briefly. A lock held by
/// another live process is still refused, only later.
fn open_db(path: &Path) -> Result<sled::Db> {
    let deadline = std::time::Instant::now() + LOCK_RELEASE_WAIT;
    loop {
        match sled::Config::new().path(path).open() {
            Ok(db) => return Ok(db),
            Err(sled::Error::Io(e))
                if e.to_string().contains("could not acquire lock") && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            Err(e) => return Err(engine_err(e)),
        }
    }
}

impl SledEngine {
    pub fn open(path: &Path) -> Result<Self> {
        let db = open_db(path)?;
        // sled 0.34 keeps its whole log in `<path>/db`.
        let log = std::fs::File::open(path.join("db"))?;
        // sled does not sync the directory; without this a fresh store's files may vanish in a
        // power cut even though their contents were synced.
        std::fs::File::open(path)?.sync_all()?;
        Ok(Self { db, log, trees: RwLock::new(HashMap::new()) })
    }

    fn cached(&self, name: &'static str) -> Option<sled::Tree> {
        self.trees.read().unwrap_or_else(PoisonError::into_inner).get(name).cloned()
    }

    /// The tree, created if it does not exist yet (for writes).
    fn tree(&self, name: &'static str) -> Result<sled::Tree> {
        if let Some(tree) = self.cached(name) {
            return Ok(tree);
        }
        let tree = self.db.open_tree(name).map_err(engine_err)?;
        self.trees.write().unwrap_or_else(PoisonError::into_inner).insert(name, tree.clone());
        Ok(tree)
    }

    /// The tree if it exists. Reads never create trees, so a read of an unknown tree has no
    /// side effect on disk.
    fn existing_tree(&self, name: &'static str) -> Result<Option<sled::Tree>> {
        if let Some(tree) = self.cached(name) {
            return Ok(Some(tree));
        }
        if self.db.tree_names().iter().any(|n| n.as_ref() == name.as_bytes()) {
            return self.tree(name).map(Some);
        }
        Ok(None)
    }

    fn apply(&self, batch: &WriteBatch) -> Result<()> {
        // Distinct trees of the batch, in first-use order; `slot` maps each op to its tree.
        let mut names: Vec<&'static str> = Vec::new();
        let mut slot = Vec::with_capacity(batch.ops.len());
        for op in &batch.ops {
            let name = match op {
                Op::Insert { tree, .. } | Op::Remove { tree, .. } => *tree,
            };
            let idx = match names.iter().position(|n| *n == name) {
                Some(idx) => idx,
                None => {
                    names.push(name);
                    names.len() - 1
                }
            };
            slot.push(idx);
        }
        let trees = names.iter().map(|n| self.tree(n)).collect::<Result<Vec<_>>>()?;

        match trees.as_slice() {
            [] => Ok(()),
            // One tree: a sled `Batch` is atomic and cheaper than a transaction.
            [tree] => {
                let mut b = sled::Batch::default();
                for op in &batch.ops {
                    match op {
                        Op::Insert { key, value, .. } => b.insert(key.as_slice(), value.as_slice()),
                        Op::Remove { key, .. } => b.remove(key.as_slice()),
                    }
                }
                tree.apply_batch(b).map_err(engine_err)
            }
            // Several trees: a multi-tree transaction makes the batch atomic across them.
            trees => trees
                .transaction(|views| {
                    for (op, &idx) in batch.ops.iter().zip(&slot) {
                        let view = &views[idx];
                        match op {
                            Op::Insert { key, value, .. } => {
                                view.insert(key.as_slice(), value.as_slice())?;
                            }
                            Op::Remove { key, .. } => {
                                view.remove(key.as_slice())?;
                            }
                        }
                    }
                    Ok::<_, ConflictableTransactionError<()>>(())
                })
                .map_err(|e| match e {
                    TransactionError::Abort(()) => StoreError::Engine("sled transaction aborted".into()),
                    TransactionError::Storage(e) => engine_err(e),
                }),
        }
    }
}

impl KvEngine for SledEngine {
    fn name(&self) -> &'static str {
        "sled"
    }

    fn get(&self, tree: &'static str, key: &[u8]) -> Result<Option<Vec<u8>>> {
        let Some(tree) = self.existing_tree(tree)? else {
            return Ok(None);
        };
        Ok(tree.get(key).map_err(engine_err)?.map(|v| v.to_vec()))
    }

    fn range(
        &self,
        tree: &'static str,
        from: Bound<&[u8]>,
        to: Bound<&[u8]>,
        reverse: bool,
        limit: usize,
    ) -> Result<Entries> {
        if limit == 0 || is_empty_range(from, to) {
            return Ok(Vec::new());
        }
        let Some(tree) = self.existing_tree(tree)? else {
            return Ok(Vec::new());
        };
        let iter = tree.range::<&[u8], _>((from, to));
        let pair =
            |r: sled::Result<(sled::IVec, sled::IVec)>| r.map(|(k, v)| (k.to_vec(), v.to_vec())).map_err(engine_err);
        if reverse { iter.rev().take(limit).map(pair).collect() } else { iter.take(limit).map(pair).collect() }
    }

    fn write_durable(&self, batches: &[WriteBatch]) -> Result<()> {
        // On an error, batches before the failing one may still reach disk; every waiter of the
        // group is told it failed, which for them means "outcome unknown", as with any I/O error.
        for batch in batches {
            self.apply(batch)?;
        }
        // All trees share one log: a single flush (and sync, see `log`) makes every batch above
        // durable.
        self.db.flush().map_err(engine_err)?;
        self.log.sync_data()?;
        Ok(())
    }

    /// Every tree copied into a new sled store. sled has no snapshot across trees, so the
    /// store calls this with writes paused (`snapshot_isolated` is false).
    fn backup_to(&self, dir: &Path) -> Result<()> {
        let path = dir.join("sled");
        let copy = sled::Config::new().path(&path).create_new(true).open().map_err(engine_err)?;
        copy.import(self.db.export());
        copy.flush().map_err(engine_err)?;
        std::fs::File::open(path.join("db"))?.sync_all()?;
        Ok(())
    }
}

fn engine_err(e: sled::Error) -> StoreError {
    match e {
        sled::Error::Io(io) => StoreError::Io(io),
        other => StoreError::Engine(format!("sled: {other}")),
    }
}
