//! Which rooms changed at which stream positions, in memory, so an incremental `/sync` visits
//! the rooms that changed since its token instead of every room the user is in.
//!
//! The log is fed from the writes themselves ([`RoomLog::note_batch`], called by every `Db`
//! write before the position can become visible): a timeline row or a receipt change names its
//! room and position in its key. No caller has to remember to report a change, and a reader
//! that saw position `p` visible knows every change up to `p` is in the log.
//!
//! It holds the latest [`CAPACITY`] changes. Positions at or below its floor (before the node
//! started, or evicted) are unknown, and a sync from such a token visits every room as before.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    ops::Bound,
    sync::{Arc, Mutex, PoisonError},
};

use ruma::{OwnedRoomId, RoomId};
use tocsin_store::{Op, WriteBatch};

use super::trees;

/// Changes kept; a few MiB of room ids at most.
const CAPACITY: usize = 200_000;

pub struct RoomLog {
    inner: Mutex<Inner>,
}

struct Inner {
    /// position -> rooms changed there (usually one).
    changes: BTreeMap<u64, Vec<Arc<OwnedRoomId>>>,
    len: usize,
    /// Changes at or below this position are not in the log.
    floor: u64,
    /// One shared id per room, so the log does not hold a copy per change (rooms are few next
    /// to changes).
    ids: HashMap<OwnedRoomId, Arc<OwnedRoomId>>,
}

impl RoomLog {
    /// A log that knows every change after `floor` (the last position before the node started).
    pub fn new(floor: u64) -> Self {
        Self { inner: Mutex::new(Inner { changes: BTreeMap::new(), len: 0, floor, ids: HashMap::new() }) }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Records the rooms a batch changes: its timeline rows and receipt changes.
    pub fn note_batch(&self, batch: &WriteBatch) {
        let mut found: Vec<(u64, &[u8])> = Vec::new();
        for op in &batch.ops {
            let Op::Insert { tree, key, .. } = op else { continue };
            if (*tree == trees::TIMELINE || *tree == trees::RECEIPT_CHANGES)
                && let Some((room, pos)) = room_and_pos(key)
            {
                found.push((pos, room));
            }
        }
        if found.is_empty() {
            return;
        }
        let mut inner = self.lock();
        for (pos, room) in found {
            let Ok(room) = std::str::from_utf8(room) else { continue };
            let Ok(room) = RoomId::parse(room) else { continue };
            inner.note(pos, &room);
        }
    }

    /// The rooms changed in `(since, upto]`, or `None` when the log does not reach back to
    /// `since`.
    pub fn changed(&self, since: u64, upto: u64) -> Option<HashSet<OwnedRoomId>> {
        let inner = self.lock();
        if since < inner.floor {
            return None;
        }
        let rooms = inner
            .changes
            .range((Bound::Excluded(since), Bound::Included(upto)))
            .flat_map(|(_, rooms)| rooms.iter().map(|r| (**r).clone()))
            .collect();
        Some(rooms)
    }
}

impl Inner {
    fn note(&mut self, pos: u64, room: &RoomId) {
        // A position at or below the floor (backfilled history) is never asked about.
        if pos <= self.floor {
            return;
        }
        let id = match self.ids.get(room) {
            Some(id) => id.clone(),
            None => {
                let id = Arc::new(room.to_owned());
                self.ids.insert(room.to_owned(), id.clone());
                id
            }
        };
        let at = self.changes.entry(pos).or_default();
        if !at.contains(&id) {
            at.push(id);
            self.len += 1;
        }
        while self.len > CAPACITY {
            let Some((pos, rooms)) = self.changes.pop_first() else { break };
            self.len -= rooms.len();
            self.floor = pos;
        }
    }
}

/// `room SEP pos(8)`: the room and position at the end of a timeline or receipt-change key.
fn room_and_pos(key: &[u8]) -> Option<(&[u8], u64)> {
    let cut = key.len().checked_sub(9)?;
    if key[cut] != super::SEP {
        return None;
    }
    let pos = u64::from_be_bytes(key[cut + 1..].try_into().ok()?);
    Some((&key[..cut], pos))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{key, pos_bytes};

    fn batch(rows: &[(&str, &str, u64)]) -> WriteBatch {
        let mut batch = WriteBatch::new();
        for (tree, room, pos) in rows {
            let tree = if *tree == "timeline" { trees::TIMELINE } else { trees::RECEIPT_CHANGES };
            batch.insert(tree, key(&[room.as_bytes(), &pos_bytes(*pos)]), b"x".to_vec());
        }
        batch
    }

    #[test]
    fn changes_are_found_by_position_and_unknown_below_the_floor() {
        let log = RoomLog::new(100);
        log.note_batch(&batch(&[("timeline", "!a:x", 101), ("receipts", "!b:x", 102), ("timeline", "!c:x", 50)]));
        let names = |s: HashSet<OwnedRoomId>| {
            let mut v: Vec<String> = s.into_iter().map(|r| r.to_string()).collect();
            v.sort();
            v
        };
        assert_eq!(names(log.changed(100, 102).unwrap()), ["!a:x", "!b:x"]);
        assert_eq!(names(log.changed(101, 102).unwrap()), ["!b:x"]);
        assert!(log.changed(102, 102).unwrap().is_empty());
        assert!(log.changed(99, 102).is_none(), "below the floor the log cannot say");
    }

    #[test]
    fn eviction_raises_the_floor() {
        let log = RoomLog::new(0);
        let rows: Vec<(&str, &str, u64)> = (1..=(CAPACITY as u64 + 10)).map(|p| ("timeline", "!a:x", p)).collect();
        log.note_batch(&batch(&rows));
        assert!(log.changed(5, 20).is_none());
        assert_eq!(log.changed(CAPACITY as u64, CAPACITY as u64 + 10).unwrap().len(), 1);
    }
}
