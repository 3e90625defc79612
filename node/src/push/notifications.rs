//! The notification list behind `GET /notifications`: every event the push worker found to
//! notify a local user (by their push rules, pushers or not), newest first, kept for
//! [`KEEP_MS`]. The push worker records them as it evaluates events, so listing costs one
//! prefix scan and no rule evaluation.

use std::ops::Bound;

use ruma::{OwnedEventId, OwnedRoomId, UserId, push::Action};
use serde::{Deserialize, Serialize};
use tocsin_store::WriteBatch;

use crate::{
    error::Result,
    store::{Db, key, pos_bytes, pos_from, trees},
};

/// How long a notification stays listed.
pub const KEEP_MS: u64 = 30 * 24 * 60 * 60 * 1000;

/// One entry of a user's list.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Notified {
    pub room_id: OwnedRoomId,
    pub event_id: OwnedEventId,
    pub actions: Vec<Action>,
    /// When it was recorded (ms since the epoch).
    pub ts: u64,
}

impl Notified {
    pub fn highlights(&self) -> bool {
        super::rules::highlights(&self.actions)
    }
}

fn user_prefix(user: &UserId) -> Vec<u8> {
    key(&[user.as_bytes(), b""])
}

/// Adds one entry to `batch`, keyed by the event's stream position.
pub fn record(batch: &mut WriteBatch, user: &UserId, pos: u64, entry: &Notified) -> Result<()> {
    let mut k = user_prefix(user);
    k.extend_from_slice(&pos_bytes(pos));
    batch.insert(trees::NOTIFICATIONS, k, Db::to_json(entry)?);
    Ok(())
}

/// Up to `limit` entries before position `before` (all when `None`), newest first, with their
/// positions.
pub fn list(db: &Db, user: &UserId, before: Option<u64>, limit: usize) -> Result<Vec<(u64, Notified)>> {
    let prefix = user_prefix(user);
    let mut upper = prefix.clone();
    let upper = match before {
        Some(pos) => {
            upper.extend_from_slice(&pos_bytes(pos));
            Bound::Excluded(upper)
        }
        None => {
            upper.extend_from_slice(&[0xff; 8]);
            Bound::Included(upper)
        }
    };
    let rows =
        db.range(trees::NOTIFICATIONS, Bound::Included(&prefix[..]), upper.as_ref().map(Vec::as_slice), true, limit)?;
    rows.into_iter()
        .map(|(k, v)| Ok((pos_from(&k[prefix.len()..])?, serde_json::from_slice(&v).map_err(crate::Error::internal)?)))
        .collect()
}

/// Removes entries older than [`KEEP_MS`]; returns how many.
pub async fn trim(db: &Db, now_ms: u64) -> Result<usize> {
    let cutoff = now_ms.saturating_sub(KEEP_MS);
    let mut removed = 0;
    let mut from: Option<Vec<u8>> = None;
    loop {
        let lower = from.as_deref().map_or(Bound::Unbounded, Bound::Excluded);
        let rows = db.range(trees::NOTIFICATIONS, lower, Bound::Unbounded, false, 1024)?;
        let Some((last, _)) = rows.last() else { return Ok(removed) };
        from = Some(last.clone());
        let mut batch = WriteBatch::new();
        for (k, v) in &rows {
            let entry: Notified = serde_json::from_slice(v).map_err(crate::Error::internal)?;
            if entry.ts < cutoff {
                batch.remove(trees::NOTIFICATIONS, k.clone());
                removed += 1;
            }
        }
        if !batch.is_empty() {
            db.write(batch).await?;
        }
    }
}
