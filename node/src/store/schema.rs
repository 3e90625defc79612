//! The store's schema version (`META` key `schema_version`): a node refuses a store written by
//! a newer Tocsin (its layout may mean something this one cannot read), and upgrades an older
//! one step by step at start, each step recorded when done.
//!
//! Versions:
//! - 1: stores written before the version was recorded (Tocsin 0.1 before this change).
//! - 2: the visibility histories (`MEMBER_HISTORY`, `VISIBILITY_HISTORY`) are complete; a
//!   version 1 store has them built from the recorded state changes.
//! - 3: room states may be stored as deltas (`STATE_DELTAS`), which an older node cannot read;
//!   a version 2 store needs no change (its whole snapshots read as before).
//! - 4: notifications are indexed by room (`UNREAD`), and `/sync` counts unread notifications
//!   from that index; a version 3 store has it built from its notification list.

use tocsin_store::WriteBatch;

use super::{Db, trees};
use crate::error::{Error, Result};

/// The version this build writes and reads.
pub const CURRENT: u32 = 4;

const KEY: &[u8] = b"schema_version";

#[derive(Debug, thiserror::Error)]
pub enum SchemaError {
    #[error(
        "the store is schema version {found}, newer than this tocsin-node understands ({CURRENT}): it was \
         written by a newer release. Run that release, or restore a backup taken before the upgrade"
    )]
    Newer { found: u32 },
}

/// The recorded version; `None` for a store without one (fresh, or version 1).
pub fn read(db: &Db) -> Result<Option<u32>> {
    match db.get(trees::META, KEY)? {
        Some(bytes) => {
            let arr: [u8; 4] =
                bytes.as_slice().try_into().map_err(|_| Error::internal("corrupt schema_version in the store"))?;
            Ok(Some(u32::from_be_bytes(arr)))
        }
        None => Ok(None),
    }
}

/// Whether the store has never been written (no events, no accounts).
fn is_fresh(db: &Db) -> Result<bool> {
    Ok(db.scan_prefix(trees::EVENTS, b"", 1)?.is_empty() && db.scan_prefix(trees::USERS, b"", 1)?.is_empty())
}

/// The version the store is at: recorded, else 1 for a used store, else current (fresh).
pub fn effective(db: &Db) -> Result<u32> {
    match read(db)? {
        Some(v) => Ok(v),
        None if is_fresh(db)? => Ok(CURRENT),
        None => Ok(1),
    }
}

/// Called when the store opens: refuses a newer store before anything writes to it.
pub fn check(db: &Db) -> std::result::Result<(), anyhow::Error> {
    let found = effective(db)?;
    if found > CURRENT {
        return Err(SchemaError::Newer { found }.into());
    }
    Ok(())
}

pub fn record_batch(version: u32) -> WriteBatch {
    let mut batch = WriteBatch::new();
    batch.insert(trees::META, KEY.to_vec(), version.to_be_bytes().to_vec());
    batch
}

/// Runs every step from the store's version to [`CURRENT`], recording each; returns the
/// versions it went through (empty if the store was current).
pub async fn upgrade(services: &crate::Services) -> anyhow::Result<Vec<u32>> {
    let db = &services.db;
    let mut version = effective(db)?;
    if version > CURRENT {
        return Err(SchemaError::Newer { found: version }.into());
    }
    let mut steps = Vec::new();
    while version < CURRENT {
        let next = version + 1;
        tracing::info!(from = version, to = next, "upgrading the store");
        match next {
            2 => services.rooms.index_visibility_history().await?,
            3 => {}
            4 => {
                let indexed = crate::push::notifications::index_unread(db).await?;
                tracing::info!(indexed, "notifications indexed by room");
            }
            other => anyhow::bail!("no upgrade step to schema version {other}"),
        }
        db.write(record_batch(next)).await?;
        steps.push(next);
        version = next;
    }
    if read(db)?.is_none() {
        db.write(record_batch(CURRENT)).await?;
    }
    Ok(steps)
}
