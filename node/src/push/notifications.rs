//! The notification list behind `GET /notifications`: every event the push worker found to
//! notify a local user (by their push rules, pushers or not), newest first, kept for
//! [`KEEP_MS`]. The push worker records them as it evaluates events, so listing costs one
//! prefix scan and no rule evaluation.
//!
//! Each entry is also indexed by room ([`trees::UNREAD`]): `/sync`'s unread and highlight
//! counts are a count of a room's keys after the user's read receipt ([`count`]), not the push
//! rules run again over every unread event of every user's first sync.

use std::ops::Bound;

use ruma::{OwnedEventId, OwnedRoomId, RoomId, UserId, push::Action};
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

/// The value of an [`trees::UNREAD`] key: whether the notification highlights.
const HIGHLIGHT: u8 = 1;

fn unread_key(user: &UserId, room: &RoomId, pos: u64) -> Vec<u8> {
    key(&[user.as_bytes(), room.as_bytes(), &pos_bytes(pos)])
}

/// Adds one entry to `batch`, keyed by the event's stream position, and its room index row.
pub fn record(batch: &mut WriteBatch, user: &UserId, pos: u64, entry: &Notified) -> Result<()> {
    let mut k = user_prefix(user);
    k.extend_from_slice(&pos_bytes(pos));
    batch.insert(trees::NOTIFICATIONS, k, Db::to_json(entry)?);
    index_row(batch, user, pos, entry);
    Ok(())
}

fn index_row(batch: &mut WriteBatch, user: &UserId, pos: u64, entry: &Notified) {
    let flags = if entry.highlights() { HIGHLIGHT } else { 0 };
    batch.insert(trees::UNREAD, unread_key(user, &entry.room_id, pos), vec![flags]);
}

/// The user's notifications and highlights in `room` at positions in `(after, upto]`, counting
/// at most `limit` (clients show "99+" long before).
pub fn count(db: &Db, user: &UserId, room: &RoomId, after: u64, upto: u64, limit: usize) -> Result<(u64, u64)> {
    if upto <= after {
        return Ok((0, 0));
    }
    let (from, to) = (unread_key(user, room, after), unread_key(user, room, upto));
    let rows = db.range(trees::UNREAD, Bound::Excluded(&from[..]), Bound::Included(&to[..]), false, limit)?;
    let highlights = rows.iter().filter(|(_, flags)| flags.first().is_some_and(|f| f & HIGHLIGHT != 0)).count();
    Ok((rows.len() as u64, highlights as u64))
}

/// Builds the room index from the list (the store upgrade to schema version 4).
pub async fn index_unread(db: &Db) -> Result<usize> {
    let mut indexed = 0;
    let mut cursor = None;
    while let Some(rows) = next_page(db, &mut cursor)? {
        let mut batch = WriteBatch::new();
        for (k, v) in &rows {
            let (user, pos) = user_and_pos(k)?;
            let entry: Notified = serde_json::from_slice(v).map_err(crate::Error::internal)?;
            index_row(&mut batch, &user, pos, &entry);
            indexed += 1;
        }
        db.write(batch).await?;
    }
    Ok(indexed)
}

/// The next 1,024 entries of the whole list after `cursor` (every user's), moving it on;
/// `None` past the end.
fn next_page(db: &Db, cursor: &mut Option<Vec<u8>>) -> Result<Option<tocsin_store::Entries>> {
    let lower = cursor.as_deref().map_or(Bound::Unbounded, Bound::Excluded);
    let rows = db.range(trees::NOTIFICATIONS, lower, Bound::Unbounded, false, 1024)?;
    let Some((last, _)) = rows.last() else { return Ok(None) };
    *cursor = Some(last.clone());
    Ok(Some(rows))
}

/// The user and position of a [`trees::NOTIFICATIONS`] key.
fn user_and_pos(k: &[u8]) -> Result<(ruma::OwnedUserId, u64)> {
    let pos = crate::store::pos_suffix(k)?;
    let user = k.get(..k.len().saturating_sub(9)).ok_or_else(|| crate::Error::internal("short notification key"))?;
    let user = UserId::parse(crate::store::utf8(user)?).map_err(crate::Error::internal)?;
    Ok((user, pos))
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

/// Removes entries older than [`KEEP_MS`], with their index rows (a notification older than
/// that no longer counts as unread); returns how many.
pub async fn trim(db: &Db, now_ms: u64) -> Result<usize> {
    let cutoff = now_ms.saturating_sub(KEEP_MS);
    let mut removed = 0;
    let mut cursor = None;
    while let Some(rows) = next_page(db, &mut cursor)? {
        let mut batch = WriteBatch::new();
        for (k, v) in &rows {
            let entry: Notified = serde_json::from_slice(v).map_err(crate::Error::internal)?;
            if entry.ts < cutoff {
                let (user, pos) = user_and_pos(k)?;
                batch.remove(trees::UNREAD, unread_key(&user, &entry.room_id, pos));
                batch.remove(trees::NOTIFICATIONS, k.clone());
                removed += 1;
            }
        }
        if !batch.is_empty() {
            db.write(batch).await?;
        }
    }
    Ok(removed)
}
