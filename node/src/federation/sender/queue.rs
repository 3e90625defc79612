//! Reading and trimming `FED_QUEUE`: which destinations have rows, the next transaction's worth
//! of rows for one destination, and the backlog counts.

use std::ops::Bound;

use ruma::{OwnedEventId, OwnedServerName, ServerName};
use tocsin_store::{WriteBatch, prefix_successor};

use super::outbox::QueueItem;
use crate::{
    error::{Error, Result},
    store::{Db, SEP, pos_suffix, prefix, trees},
};

/// At most this many PDUs in one transaction (the spec's limit).
pub const MAX_PDUS: usize = 50;
/// At most this many EDUs in one transaction (the spec's limit).
pub const MAX_EDUS: usize = 100;

/// The rows of one transaction, in queue order.
#[derive(Debug, Default)]
pub struct Batch {
    /// Every row this batch covers, to delete once the transaction is acknowledged. Includes
    /// rows that cannot be sent (unparseable), so they do not block the queue forever.
    pub keys: Vec<Vec<u8>>,
    pub first_seq: Option<u64>,
    pub pdus: Vec<OwnedEventId>,
    pub edus: Vec<serde_json::Value>,
}

impl Batch {
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The write that removes this batch's rows.
    pub fn removal(&self) -> WriteBatch {
        let mut batch = WriteBatch::new();
        for key in &self.keys {
            batch.remove(trees::FED_QUEUE, key.clone());
        }
        batch
    }
}

/// The destination part of a `FED_QUEUE` key (`destination SEP seq`).
fn destination_of(key: &[u8]) -> Result<OwnedServerName> {
    let end = key.len().checked_sub(9).ok_or_else(|| Error::internal("federation queue key too short"))?;
    if key[end] != SEP {
        return Err(Error::internal("federation queue key without separator"));
    }
    let name = std::str::from_utf8(&key[..end]).map_err(|_| Error::internal("non-UTF-8 destination in queue"))?;
    OwnedServerName::try_from(name).map_err(|e| Error::internal(format!("bad destination in queue: {e}")))
}

/// Every destination with at least one queued row, in key order.
pub fn destinations(db: &Db) -> Result<Vec<OwnedServerName>> {
    let mut out = Vec::new();
    let mut cursor: Option<Vec<u8>> = None;
    loop {
        let from = match &cursor {
            Some(c) => Bound::Included(c.as_slice()),
            None => Bound::Unbounded,
        };
        let Some((key, _)) = db.range(trees::FED_QUEUE, from, Bound::Unbounded, false, 1)?.into_iter().next() else {
            break;
        };
        let dest = destination_of(&key)?;
        let next = prefix_successor(&prefix(&[dest.as_bytes()]));
        out.push(dest);
        match next {
            Some(next) => cursor = Some(next),
            None => break,
        }
    }
    Ok(out)
}

/// The next transaction for `dest`: rows in queue order, up to [`MAX_PDUS`] PDUs and
/// [`MAX_EDUS`] EDUs, stopping at the first row that does not fit so order is kept across
/// transactions.
pub fn next_batch(db: &Db, dest: &ServerName) -> Result<Batch> {
    let rows = db.scan_prefix(trees::FED_QUEUE, &prefix(&[dest.as_bytes()]), MAX_PDUS + MAX_EDUS)?;
    let mut batch = Batch::default();
    for (key, value) in rows {
        let seq = pos_suffix(&key)?;
        match serde_json::from_slice::<QueueItem>(&value) {
            Ok(QueueItem::Pdu { event_id }) => {
                if batch.pdus.len() == MAX_PDUS {
                    break;
                }
                batch.pdus.push(event_id);
            }
            Ok(QueueItem::Edu { edu }) => {
                if batch.edus.len() == MAX_EDUS {
                    break;
                }
                batch.edus.push(edu);
            }
            Err(e) => {
                tracing::warn!(%dest, seq, error = %e, "dropping an unreadable federation queue row");
            }
        }
        batch.first_seq.get_or_insert(seq);
        batch.keys.push(key);
    }
    Ok(batch)
}

/// How many PDUs and EDUs are queued for `dest`.
pub fn counts(db: &Db, dest: &ServerName) -> Result<(usize, usize)> {
    let rows = db.scan_prefix(trees::FED_QUEUE, &prefix(&[dest.as_bytes()]), usize::MAX)?;
    let (mut pdus, mut edus) = (0, 0);
    for (_, value) in rows {
        match serde_json::from_slice::<KindOnly>(&value) {
            Ok(KindOnly { kind }) if kind == "Pdu" => pdus += 1,
            Ok(_) => edus += 1,
            Err(_) => {}
        }
    }
    Ok((pdus, edus))
}

/// Reads only the tag of a row, so counting a long backlog does not build the EDU bodies.
#[derive(serde::Deserialize)]
struct KindOnly {
    kind: String,
}
