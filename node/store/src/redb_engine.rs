//! The redb engine: one redb file, one table per named tree.

use std::{collections::HashMap, ops::Bound, path::Path};

use redb::{ReadableDatabase, ReadableTable, TableDefinition, TableError, TableHandle};

use crate::{Entries, KvEngine, Op, Result, StoreError, WriteBatch, is_empty_range};

/// The in-process page cache (see `open`).
const CACHE_BYTES: usize = 16 * 1024 * 1024;

type Def = TableDefinition<'static, &'static [u8], &'static [u8]>;
type Guard<'a> = redb::AccessGuard<'a, &'static [u8]>;

type Table = redb::ReadOnlyTable<&'static [u8], &'static [u8]>;

pub struct RedbEngine {
    db: redb::Database,
    /// Tables opened for reading, shared by reads until the next commit. Beginning a read
    /// transaction and opening a table for every get or scan cost more than the lookup itself
    /// on small reads (a `/sync` makes dozens).
    reads: std::sync::Mutex<Reads>,
}

#[derive(Default)]
struct Reads {
    /// The number of commits the tables below were opened after.
    generation: u64,
    tables: HashMap<&'static str, std::sync::Arc<Table>>,
}

/// How long an open waits for a store this process is still closing.
const CLOSE_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// Opens the database file. A node that just shut down in this process (a restart, or a test
/// that stops and starts nodes) may still have the file open for a moment while its last
/// requests finish; that case is retried briefly. A store held open for longer, by another
/// process or node, is still refused.
fn open_db(path: &Path) -> std::result::Result<redb::Database, redb::DatabaseError> {
    let deadline = std::time::Instant::now() + CLOSE_WAIT;
    loop {
        match redb::Builder::new().set_cache_size(CACHE_BYTES).create(path) {
            Err(redb::DatabaseError::DatabaseAlreadyOpen) if std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            other => return other,
        }
    }
}

impl RedbEngine {
    pub fn open(path: &Path) -> Result<Self> {
        // `create` opens an existing file too, and repairs it after an unclean shutdown.
        // redb's default page cache is 1 GiB and fills up under write load; a node must fit in
        // tens of megabytes on a municipal VM, and the OS page cache still holds hot pages.
        let db = open_db(path).map_err(|e| match e {
            redb::DatabaseError::DatabaseAlreadyOpen => StoreError::Engine(format!(
                "the store {} is already open in another process (is another tocsin-node running on this \
                 data dir? stop it first, or wait a moment after it stopped)",
                path.display()
            )),
            other => StoreError::Engine(format!("cannot open the store {}: {other}", path.display())),
        })?;
        // redb does not sync the directory; without this a freshly created file may vanish in a
        // power cut even though its contents were synced.
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::File::open(dir)?.sync_all()?;
        }
        Ok(Self { db, reads: std::sync::Mutex::default() })
    }

    /// Runs `f` on the table in a fresh read transaction, or returns `None` if the table has
    /// never been written (unknown trees read as empty).
    fn with_table<T>(&self, tree: &'static str, f: impl FnOnce(&Table) -> Result<T>) -> Result<Option<T>> {
        let (generation, cached) = {
            let reads = self.lock_reads();
            (reads.generation, reads.tables.get(tree).cloned())
        };
        if let Some(table) = cached {
            return f(&table).map(Some);
        }
        // Begun after reading the generation: at least as new as any commit it counts.
        let txn = self.db.begin_read().map_err(engine_err)?;
        let table = match txn.open_table(Def::new(tree)) {
            Ok(table) => std::sync::Arc::new(table),
            Err(TableError::TableDoesNotExist(_)) => return Ok(None),
            Err(e) => return Err(engine_err(e)),
        };
        {
            let mut reads = self.lock_reads();
            if reads.generation == generation {
                reads.tables.insert(tree, table.clone());
            }
        }
        f(&table).map(Some)
    }

    fn lock_reads(&self) -> std::sync::MutexGuard<'_, Reads> {
        // Only handles to committed data inside: a panic elsewhere leaves nothing half-done.
        self.reads.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// After a commit: later reads open the tables anew, and the old snapshot is let go (redb
    /// keeps the pages a live read transaction can see).
    fn committed(&self) {
        let mut reads = self.lock_reads();
        reads.generation += 1;
        reads.tables.clear();
    }
}

impl KvEngine for RedbEngine {
    fn name(&self) -> &'static str {
        "redb"
    }

    fn get(&self, tree: &'static str, key: &[u8]) -> Result<Option<Vec<u8>>> {
        let found =
            self.with_table(tree, |table| Ok(table.get(key).map_err(engine_err)?.map(|v| v.value().to_vec())))?;
        Ok(found.flatten())
    }

    fn range(
        &self,
        tree: &'static str,
        from: Bound<&[u8]>,
        to: Bound<&[u8]>,
        reverse: bool,
        limit: usize,
    ) -> Result<Entries> {
        // redb, like BTreeMap, may reject inverted bounds; they mean "nothing" here.
        if limit == 0 || is_empty_range(from, to) {
            return Ok(Vec::new());
        }
        let found = self.with_table(tree, |table| {
            let iter = table.range::<&[u8]>((from, to)).map_err(engine_err)?;
            let pair = |r: Result<(Guard<'_>, Guard<'_>), redb::StorageError>| {
                r.map(|(k, v)| (k.value().to_vec(), v.value().to_vec())).map_err(engine_err)
            };
            if reverse { iter.rev().take(limit).map(pair).collect() } else { iter.take(limit).map(pair).collect() }
        })?;
        Ok(found.unwrap_or_default())
    }

    fn write_durable(&self, batches: &[WriteBatch]) -> Result<()> {
        if batches.iter().all(WriteBatch::is_empty) {
            return Ok(());
        }
        // One write transaction for the whole group: it is atomic, so each batch in it is too,
        // and its commit (default durability: immediate) is the group's single fsync.
        let txn = self.db.begin_write().map_err(engine_err)?;
        {
            let mut tables = HashMap::new();
            for op in batches.iter().flat_map(|b| &b.ops) {
                let name = match op {
                    Op::Insert { tree, .. } | Op::Remove { tree, .. } => *tree,
                };
                let table = match tables.entry(name) {
                    std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
                    std::collections::hash_map::Entry::Vacant(e) => {
                        e.insert(txn.open_table(Def::new(name)).map_err(engine_err)?)
                    }
                };
                match op {
                    Op::Insert { key, value, .. } => {
                        table.insert(key.as_slice(), value.as_slice()).map_err(engine_err)?;
                    }
                    Op::Remove { key, .. } => {
                        table.remove(key.as_slice()).map_err(engine_err)?;
                    }
                }
            }
        }
        // Dropping `txn` on an error above aborts it, so a failed group leaves nothing behind.
        let result = txn.commit().map_err(engine_err);
        // Before the committer answers: whoever sees their write done then reads it.
        self.committed();
        result
    }

    /// One read transaction (a snapshot of every table at once) copied into a new redb file;
    /// writers carry on meanwhile.
    fn backup_to(&self, dir: &Path) -> Result<()> {
        let path = dir.join("tocsin.redb");
        if path.exists() {
            return Err(StoreError::Engine(format!("{} exists already", path.display())));
        }
        let copy = redb::Database::create(&path).map_err(engine_err)?;
        let read = self.db.begin_read().map_err(engine_err)?;
        let write = copy.begin_write().map_err(engine_err)?;
        for handle in read.list_tables().map_err(engine_err)? {
            let def = TableDefinition::<&[u8], &[u8]>::new(handle.name());
            let from = read.open_table(def).map_err(engine_err)?;
            let mut to = write.open_table(def).map_err(engine_err)?;
            for entry in from.iter().map_err(engine_err)? {
                let (k, v) = entry.map_err(engine_err)?;
                to.insert(k.value(), v.value()).map_err(engine_err)?;
            }
        }
        write.commit().map_err(engine_err)?;
        std::fs::File::open(dir)?.sync_all()?;
        Ok(())
    }

    fn snapshot_isolated(&self) -> bool {
        true
    }
}

fn engine_err(e: impl Into<redb::Error>) -> StoreError {
    match e.into() {
        redb::Error::Io(io) => StoreError::Io(io),
        other => StoreError::Engine(format!("redb: {other}")),
    }
}
