//! A [`KvEngine`] on PostgreSQL: one table holds every tree, `(tree, key)` its primary key.
//!
//! `bytea` compares byte by byte, shorter first on a tie, which is the order the trait asks
//! for, so ranges are index scans with `ORDER BY key` and a `LIMIT`. A group of batches is one
//! transaction, and PostgreSQL's `COMMIT` returns once the WAL is flushed (with the default
//! `synchronous_commit = on`): durable on return, as the trait demands. Readers use a
//! connection of their own, so they see a group whole or not at all.
//!
//! The trait is blocking and is called from the node's async tasks and from the store's commit
//! thread. The engine drives its connections on a small runtime of its own and waits for each
//! answer, as a disk read would wait.

use std::{
    collections::BTreeMap,
    future::Future,
    ops::Bound,
    path::Path,
    sync::{Arc, mpsc},
};

use tokio_postgres::{Client, NoTls, types::ToSql};

use crate::{Entries, KvEngine, Op, Result, StoreError, WriteBatch, is_empty_range};

pub struct PostgresEngine {
    /// `None` only while dropping: the runtime is shut down without blocking.
    runtime: Option<tokio::runtime::Runtime>,
    reads: Arc<Client>,
    writes: Arc<tokio::sync::Mutex<Client>>,
    table: String,
}

fn pg_err(e: tokio_postgres::Error) -> StoreError {
    match e.as_db_error() {
        Some(db) => StoreError::Engine(format!("postgres: {} ({})", db.message(), db.code().code())),
        None => StoreError::Engine(format!("postgres: {e}")),
    }
}

impl PostgresEngine {
    /// Connects with `conninfo` (libpq form, `host=/run/postgresql dbname=tocsin`) and keeps
    /// the trees in `table`, created if missing. A table name is letters, digits and `_`.
    pub fn open(conninfo: &str, table: &str) -> Result<Self> {
        let valid = table.chars().next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && table.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid {
            return Err(StoreError::Engine(format!("`{table}` is not a plain SQL table name")));
        }
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("tocsin-postgres")
            .enable_all()
            .build()?;
        let conninfo = conninfo.to_owned();
        let connect = move |conninfo: String| async move {
            let (client, connection) = tokio_postgres::connect(&conninfo, NoTls).await.map_err(pg_err)?;
            tokio::spawn(async move {
                if let Err(e) = connection.await {
                    tracing::error!(error = %e, "the PostgreSQL connection failed");
                }
            });
            Ok::<_, StoreError>(client)
        };
        let ddl = format!(
            "CREATE TABLE IF NOT EXISTS {table} (tree TEXT NOT NULL, key BYTEA NOT NULL, value BYTEA NOT NULL, \
             PRIMARY KEY (tree, key))"
        );
        let (reads, writes) = wait(&runtime, async move {
            let reads = connect(conninfo.clone()).await?;
            let writes = connect(conninfo).await?;
            writes.batch_execute(&ddl).await.map_err(pg_err)?;
            Ok((reads, writes))
        })?;
        Ok(Self {
            runtime: Some(runtime),
            reads: Arc::new(reads),
            writes: Arc::new(tokio::sync::Mutex::new(writes)),
            table: table.to_owned(),
        })
    }

    /// Empties every tree (a benchmark starts from nothing).
    pub fn clear(&self) -> Result<()> {
        let (writes, sql) = (self.writes.clone(), format!("TRUNCATE {}", self.table));
        self.block(async move { writes.lock().await.batch_execute(&sql).await.map_err(pg_err) })
    }

    fn block<T: Send + 'static>(&self, work: impl Future<Output = Result<T>> + Send + 'static) -> Result<T> {
        let runtime = self.runtime.as_ref().ok_or(StoreError::Closed)?;
        wait(runtime, work)
    }
}

/// Runs `work` on the engine's runtime and waits for it on this thread, which may be a thread
/// of another runtime (the node's): only a channel is waited on here.
fn wait<T: Send + 'static>(
    runtime: &tokio::runtime::Runtime,
    work: impl Future<Output = Result<T>> + Send + 'static,
) -> Result<T> {
    let (tx, rx) = mpsc::sync_channel(1);
    runtime.spawn(async move {
        let _ = tx.send(work.await);
    });
    rx.recv().map_err(|_| StoreError::Closed)?
}

impl Drop for PostgresEngine {
    fn drop(&mut self) {
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

impl KvEngine for PostgresEngine {
    fn name(&self) -> &'static str {
        "postgres"
    }

    fn get(&self, tree: &'static str, key: &[u8]) -> Result<Option<Vec<u8>>> {
        let (client, key) = (self.reads.clone(), key.to_vec());
        let sql = format!("SELECT value FROM {} WHERE tree = $1 AND key = $2", self.table);
        self.block(async move {
            let row = client.query_opt(&sql, &[&tree, &key]).await.map_err(pg_err)?;
            Ok(row.map(|r| r.get(0)))
        })
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
        let mut sql = format!("SELECT key, value FROM {} WHERE tree = $1", self.table);
        let mut keys: Vec<Vec<u8>> = Vec::new();
        for (bound, included, excluded) in [(from, ">=", ">"), (to, "<=", "<")] {
            let (op, key) = match bound {
                Bound::Included(k) => (included, k),
                Bound::Excluded(k) => (excluded, k),
                Bound::Unbounded => continue,
            };
            keys.push(key.to_vec());
            sql += &format!(" AND key {op} ${}", keys.len() + 1);
        }
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        sql += &format!(" ORDER BY key {} LIMIT ${}", if reverse { "DESC" } else { "ASC" }, keys.len() + 2);
        let client = self.reads.clone();
        self.block(async move {
            let mut params: Vec<&(dyn ToSql + Sync)> = vec![&tree];
            params.extend(keys.iter().map(|k| k as &(dyn ToSql + Sync)));
            params.push(&limit);
            let rows = client.query(&sql, &params).await.map_err(pg_err)?;
            Ok(rows.into_iter().map(|r| (r.get(0), r.get(1))).collect())
        })
    }

    fn write_durable(&self, batches: &[WriteBatch]) -> Result<()> {
        // The last operation on a key wins, so the group folds to one state per key: one
        // statement can then carry all removals and one all inserts.
        let mut last: BTreeMap<(&'static str, &[u8]), Option<&[u8]>> = BTreeMap::new();
        for op in batches.iter().flat_map(|b| &b.ops) {
            match op {
                Op::Insert { tree, key, value } => last.insert((tree, key), Some(value)),
                Op::Remove { tree, key } => last.insert((tree, key), None),
            };
        }
        if last.is_empty() {
            return Ok(());
        }
        let (mut removed, mut inserted): (Vec<_>, Vec<_>) = (Vec::new(), Vec::new());
        for ((tree, key), value) in last {
            match value {
                Some(value) => inserted.push((tree, key.to_vec(), value.to_vec())),
                None => removed.push((tree, key.to_vec())),
            }
        }
        let remove =
            format!("DELETE FROM {} WHERE (tree, key) IN (SELECT * FROM unnest($1::text[], $2::bytea[]))", self.table);
        let insert = format!(
            "INSERT INTO {} (tree, key, value) SELECT * FROM unnest($1::text[], $2::bytea[], $3::bytea[]) \
             ON CONFLICT (tree, key) DO UPDATE SET value = EXCLUDED.value",
            self.table
        );
        let writes = self.writes.clone();
        self.block(async move {
            let mut client = writes.lock().await;
            let txn = client.transaction().await.map_err(pg_err)?;
            if !removed.is_empty() {
                let (trees, keys): (Vec<&str>, Vec<Vec<u8>>) = removed.into_iter().unzip();
                txn.execute(&remove, &[&trees, &keys]).await.map_err(pg_err)?;
            }
            if !inserted.is_empty() {
                let mut columns = (Vec::new(), Vec::new(), Vec::new());
                for (tree, key, value) in inserted {
                    columns.0.push(tree);
                    columns.1.push(key);
                    columns.2.push(value);
                }
                txn.execute(&insert, &[&columns.0, &columns.1, &columns.2]).await.map_err(pg_err)?;
            }
            txn.commit().await.map_err(pg_err)
        })
    }

    fn backup_to(&self, _dir: &Path) -> Result<()> {
        Err(StoreError::Engine(
            "a PostgreSQL store is backed up by the database (pg_basebackup or pg_dump), not into a folder".to_owned(),
        ))
    }
}
