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
///
/// A user's entries are in position order, the order they were recorded in, so the old ones
/// are at the front: each user's front is read up to the first entry kept, then the scan skips
/// to the next user. A trim costs the users and what it removes, not the whole list (which the
/// push worker used to read at every start: minutes at 10 million entries).
pub async fn trim(db: &Db, now_ms: u64) -> Result<usize> {
    const PAGE: usize = 1024;
    let cutoff = now_ms.saturating_sub(KEEP_MS);
    let mut removed = 0;
    let mut next_user: Bound<Vec<u8>> = Bound::Unbounded;
    loop {
        let first = db.range(trees::NOTIFICATIONS, bound_ref(&next_user), Bound::Unbounded, false, 1)?;
        let Some((first_key, _)) = first.into_iter().next() else { break };
        let (user, _) = user_and_pos(&first_key)?;
        let user_end = tocsin_store::prefix_successor(&user_prefix(&user));
        let end = user_end.as_deref().map_or(Bound::Unbounded, Bound::Excluded);
        let mut from = Bound::Included(first_key);
        loop {
            let rows = db.range(trees::NOTIFICATIONS, bound_ref(&from), end, false, PAGE)?;
            let mut batch = WriteBatch::new();
            let mut reached_kept = false;
            for (k, v) in &rows {
                let entry: Notified = serde_json::from_slice(v).map_err(crate::Error::internal)?;
                if entry.ts >= cutoff {
                    reached_kept = true;
                    break;
                }
                let (_, pos) = user_and_pos(k)?;
                batch.remove(trees::UNREAD, unread_key(&user, &entry.room_id, pos));
                batch.remove(trees::NOTIFICATIONS, k.clone());
                removed += 1;
            }
            if !batch.is_empty() {
                db.write(batch).await?;
            }
            match rows.last() {
                Some((last, _)) if !reached_kept && rows.len() == PAGE => from = Bound::Excluded(last.clone()),
                _ => break,
            }
        }
        let Some(user_end) = user_end else { break };
        next_user = Bound::Included(user_end);
        // Many users: let the worker's runtime thread serve others between them.
        tokio::task::yield_now().await;
    }
    Ok(removed)
}

fn bound_ref(bound: &Bound<Vec<u8>>) -> Bound<&[u8]> {
    match bound {
        Bound::Included(k) => Bound::Included(k),
        Bound::Excluded(k) => Bound::Excluded(k),
        Bound::Unbounded => Bound::Unbounded,
    }
}

#[cfg(test)]
mod tests {
    use ruma::{owned_room_id, owned_user_id};

    use super::*;

    fn entry(ts: u64, n: u64) -> Notified {
        Notified {
            room_id: owned_room_id!("!ops:trim.test"),
            event_id: OwnedEventId::try_from(format!("$e{n}")).unwrap(),
            actions: vec![Action::Notify],
            ts,
        }
    }

    /// Each user's old entries go with their room index rows, newer ones (and everything of a
    /// user with none old) stay, across more than a page of one user's entries.
    #[tokio::test]
    async fn trim_removes_each_users_old_entries_and_their_index_rows() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(tocsin_store::EngineKind::Redb, dir.path()).unwrap();
        let now = KEEP_MS * 2;
        let (old, fresh) = (now - KEEP_MS - 1, now - 1);
        let (alice, bob, carol) =
            (owned_user_id!("@alice:trim.test"), owned_user_id!("@bob:trim.test"), owned_user_id!("@carol:trim.test"));
        let room = owned_room_id!("!ops:trim.test");
        let mut batch = WriteBatch::new();
        // alice: 1,500 old entries (more than a page), then 3 fresh ones.
        for pos in 1..=1503 {
            record(&mut batch, &alice, pos, &entry(if pos <= 1500 { old } else { fresh }, pos)).unwrap();
        }
        // bob: only fresh ones; carol: only old ones.
        for pos in 2000..2010 {
            record(&mut batch, &bob, pos, &entry(fresh, pos)).unwrap();
            record(&mut batch, &carol, pos, &entry(old, pos)).unwrap();
        }
        db.write(batch).await.unwrap();

        assert_eq!(trim(&db, now).await.unwrap(), 1500 + 10);
        assert_eq!(list(&db, &alice, None, usize::MAX).unwrap().len(), 3);
        assert_eq!(list(&db, &bob, None, usize::MAX).unwrap().len(), 10);
        assert!(list(&db, &carol, None, usize::MAX).unwrap().is_empty());
        // The room index went with them: alice's unread count is her 3 fresh entries.
        assert_eq!(count(&db, &alice, &room, 0, u64::MAX >> 1, usize::MAX).unwrap(), (3, 0));
        assert_eq!(count(&db, &carol, &room, 0, u64::MAX >> 1, usize::MAX).unwrap(), (0, 0));
        // Nothing old is left.
        assert_eq!(trim(&db, now).await.unwrap(), 0);
    }
}
