//! What changed at which stream positions, in memory: the rooms, so an incremental `/sync`
//! visits the rooms that changed since its token instead of every room the user is in; and
//! whom each change concerns, so a change wakes only the long-polls it matters to.
//!
//! The log is fed from the writes themselves ([`ChangeLog::note_batch`], called by every `Db`
//! write before the position can become visible): a timeline row, a receipt change, a
//! membership change, account data, a to-device message or a key change names its room or
//! user and its position in its key. No caller has to remember to report a change, and a reader
//! that saw position `p` visible knows every change up to `p` is in the log.
//!
//! It holds the latest [`CAPACITY`] changes. Positions at or below its floor (before the node
//! started, or evicted) are unknown: a sync from such a token visits every room as before, and
//! the wake-up dispatcher wakes everyone.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    hash::Hash,
    ops::Bound,
    sync::{Arc, Mutex, PoisonError},
};

use ruma::{OwnedRoomId, OwnedUserId, RoomId, UserId};
use tocsin_store::{Op, WriteBatch};

use super::{SEP, trees};

/// Changes kept; a few MiB of ids at most.
const CAPACITY: usize = 200_000;

/// Whom a change concerns.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Change {
    /// Something in the room's timeline or receipts: its members.
    Room(Arc<OwnedRoomId>),
    /// Something of one user's own: a membership, account data, a to-device message.
    User(Arc<OwnedUserId>),
    /// The user's keys or devices: everyone who shares a room with them, and they themselves.
    Audience(Arc<OwnedUserId>),
}

pub struct ChangeLog {
    inner: Mutex<Inner>,
}

struct Inner {
    /// position -> changes there (usually one).
    changes: BTreeMap<u64, Vec<Change>>,
    len: usize,
    /// Changes at or below this position are not in the log.
    floor: u64,
    /// One shared id per room and per user, so the log does not hold a copy per change.
    rooms: Interner<OwnedRoomId>,
    users: Interner<OwnedUserId>,
}

struct Interner<T>(HashMap<T, Arc<T>>);

impl<T: Eq + Hash + Clone> Interner<T> {
    fn get(&mut self, id: T) -> Arc<T> {
        if let Some(shared) = self.0.get(&id) {
            return shared.clone();
        }
        let shared = Arc::new(id.clone());
        self.0.insert(id, shared.clone());
        shared
    }
}

/// What a key in a streamed tree says about its change, before its ids are checked.
enum Raw<'a> {
    Room(&'a [u8]),
    User(&'a [u8]),
    Audience(&'a [u8]),
}

impl ChangeLog {
    /// A log that knows every change after `floor` (the last position before the node started).
    pub fn new(floor: u64) -> Self {
        Self {
            inner: Mutex::new(Inner {
                changes: BTreeMap::new(),
                len: 0,
                floor,
                rooms: Interner(HashMap::new()),
                users: Interner(HashMap::new()),
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Records what a batch changes, from the keys of its streamed rows.
    pub fn note_batch(&self, batch: &WriteBatch) {
        let mut found: Vec<(u64, Raw<'_>)> = Vec::new();
        for op in &batch.ops {
            let Op::Insert { tree, key, value } = op else { continue };
            if let Some(change) = classify(tree, key, value) {
                found.push(change);
            }
        }
        if found.is_empty() {
            return;
        }
        let mut inner = self.lock();
        for (pos, raw) in found {
            let user = |id: &[u8]| parse(id, |s| UserId::parse(s));
            let change = match raw {
                Raw::Room(id) => parse(id, |s| RoomId::parse(s)).map(|room| Change::Room(inner.rooms.get(room))),
                Raw::User(id) => user(id).map(|u| Change::User(inner.users.get(u))),
                Raw::Audience(id) => user(id).map(|u| Change::Audience(inner.users.get(u))),
            };
            let Some(change) = change else { continue };
            inner.note(pos, change);
        }
    }

    /// The rooms changed in `(since, upto]`, or `None` when the log does not reach back to
    /// `since`.
    pub fn changed(&self, since: u64, upto: u64) -> Option<HashSet<OwnedRoomId>> {
        self.collect(since, upto, |change| match change {
            Change::Room(room) => Some((**room).clone()),
            _ => None,
        })
    }

    /// Every change in `(since, upto]`, once each, or `None` when the log does not reach back
    /// to `since`.
    pub fn between(&self, since: u64, upto: u64) -> Option<HashSet<Change>> {
        self.collect(since, upto, |change| Some(change.clone()))
    }

    /// Whether anything of `user`'s own (a membership, account data, a to-device message)
    /// changed in `(since, upto]`, or `None` when the log does not reach back to `since`.
    pub fn touches_user(&self, user: &UserId, since: u64, upto: u64) -> Option<bool> {
        self.read(since, upto, |changes| {
            for change in changes {
                if matches!(change, Change::User(u) if u.as_str() == user.as_str()) {
                    return true;
                }
            }
            false
        })
    }

    fn collect<T: Eq + Hash>(&self, since: u64, upto: u64, pick: impl Fn(&Change) -> Option<T>) -> Option<HashSet<T>> {
        self.read(since, upto, |changes| changes.filter_map(pick).collect())
    }

    /// `read` over the changes in `(since, upto]`, or `None` when the log does not reach back
    /// to `since`.
    fn read<T>(&self, since: u64, upto: u64, read: impl FnOnce(&mut dyn Iterator<Item = &Change>) -> T) -> Option<T> {
        let inner = self.lock();
        if since < inner.floor {
            return None;
        }
        let mut changes = inner
            .changes
            .range((Bound::Excluded(since), Bound::Included(upto)))
            .flat_map(|(_, changes)| changes.iter());
        Some(read(&mut changes))
    }
}

impl Inner {
    fn note(&mut self, pos: u64, change: Change) {
        // A position at or below the floor (backfilled history) is never asked about.
        if pos <= self.floor {
            return;
        }
        let at = self.changes.entry(pos).or_default();
        if !at.contains(&change) {
            at.push(change);
            self.len += 1;
        }
        while self.len > CAPACITY {
            let Some((pos, changes)) = self.changes.pop_first() else { break };
            self.len -= changes.len();
            self.floor = pos;
        }
    }
}

fn parse<T>(id: &[u8], parse: impl Fn(&str) -> Result<T, ruma::IdParseError>) -> Option<T> {
    std::str::from_utf8(id).ok().and_then(|s| parse(s).ok())
}

/// The position and the room or user of a row in a streamed tree (see `trees` for the key
/// shapes); `None` for every other row.
fn classify<'a>(tree: &str, key: &'a [u8], value: &'a [u8]) -> Option<(u64, Raw<'a>)> {
    match tree {
        trees::TIMELINE | trees::RECEIPT_CHANGES => {
            let (room, pos) = head_and_pos(key)?;
            Some((pos, Raw::Room(room)))
        }
        trees::MEMBERSHIP_CHANGES | trees::ACCOUNT_DATA_CHANGES => {
            let (user, pos) = head_and_pos(key)?;
            Some((pos, Raw::User(user)))
        }
        trees::TO_DEVICE => {
            // user SEP device SEP pos: the user is the part before the first separator.
            let (user_device, pos) = head_and_pos(key)?;
            let user = user_device.split(|b| *b == SEP).next()?;
            Some((pos, Raw::User(user)))
        }
        trees::KEY_CHANGES => {
            let pos = u64::from_be_bytes(key.try_into().ok()?);
            Some((pos, Raw::Audience(value)))
        }
        _ => None,
    }
}

/// `head SEP pos(8)`: what precedes the position at the end of a key, and the position.
fn head_and_pos(key: &[u8]) -> Option<(&[u8], u64)> {
    let cut = key.len().checked_sub(9)?;
    if key[cut] != SEP {
        return None;
    }
    let pos = u64::from_be_bytes(key[cut + 1..].try_into().ok()?);
    Some((&key[..cut], pos))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{key, pos_bytes};

    fn batch(rows: &[(&'static str, &str, u64)]) -> WriteBatch {
        let mut batch = WriteBatch::new();
        for (tree, id, pos) in rows {
            if *tree == trees::KEY_CHANGES {
                batch.insert(tree, pos_bytes(*pos).to_vec(), id.as_bytes().to_vec());
            } else {
                batch.insert(tree, key(&[id.as_bytes(), &pos_bytes(*pos)]), b"x".to_vec());
            }
        }
        batch
    }

    fn names(s: HashSet<OwnedRoomId>) -> Vec<String> {
        let mut v: Vec<String> = s.into_iter().map(|r| r.to_string()).collect();
        v.sort();
        v
    }

    #[test]
    fn changes_are_found_by_position_and_unknown_below_the_floor() {
        let log = ChangeLog::new(100);
        log.note_batch(&batch(&[
            (trees::TIMELINE, "!a:x", 101),
            (trees::RECEIPT_CHANGES, "!b:x", 102),
            (trees::TIMELINE, "!c:x", 50),
        ]));
        assert_eq!(names(log.changed(100, 102).unwrap()), ["!a:x", "!b:x"]);
        assert_eq!(names(log.changed(101, 102).unwrap()), ["!b:x"]);
        assert!(log.changed(102, 102).unwrap().is_empty());
        assert!(log.changed(99, 102).is_none(), "below the floor the log cannot say");
    }

    #[test]
    fn users_and_audiences_are_told_apart_from_rooms() {
        let log = ChangeLog::new(0);
        log.note_batch(&batch(&[
            (trees::ACCOUNT_DATA_CHANGES, "@a:x", 1),
            (trees::MEMBERSHIP_CHANGES, "@b:x", 2),
            (trees::KEY_CHANGES, "@c:x", 3),
            (trees::TIMELINE, "!r:x", 4),
        ]));
        let mut to_device = WriteBatch::new();
        to_device.insert(trees::TO_DEVICE, key(&[b"@d:x", b"DEVICE", &pos_bytes(5)]), b"{}".to_vec());
        log.note_batch(&to_device);
        let all = log.between(0, 5).unwrap();
        let user = |u: &str| Arc::new(UserId::parse(u).unwrap());
        assert!(all.contains(&Change::User(user("@a:x"))));
        assert!(all.contains(&Change::User(user("@b:x"))));
        assert!(all.contains(&Change::Audience(user("@c:x"))));
        assert!(all.contains(&Change::User(user("@d:x"))));
        assert!(all.contains(&Change::Room(Arc::new(RoomId::parse("!r:x").unwrap()))));
        assert_eq!(all.len(), 5);
        assert_eq!(names(log.changed(0, 5).unwrap()), ["!r:x"], "only rooms are rooms");
    }

    #[test]
    fn a_users_own_changes_are_found_and_no_one_elses() {
        let log = ChangeLog::new(10);
        log.note_batch(&batch(&[
            (trees::MEMBERSHIP_CHANGES, "@a:x", 11),
            (trees::KEY_CHANGES, "@b:x", 12),
            (trees::TIMELINE, "!r:x", 13),
        ]));
        let (a, b) = (UserId::parse("@a:x").unwrap(), UserId::parse("@b:x").unwrap());
        assert_eq!(log.touches_user(&a, 10, 13), Some(true));
        assert_eq!(log.touches_user(&a, 11, 13), Some(false), "after its membership change");
        assert_eq!(log.touches_user(&b, 10, 13), Some(false), "a key change concerns the audience");
        assert_eq!(log.touches_user(&a, 9, 13), None, "below the floor the log cannot say");
    }

    #[test]
    fn eviction_raises_the_floor() {
        let log = ChangeLog::new(0);
        let rows: Vec<(&str, &str, u64)> = (1..=(CAPACITY as u64 + 10)).map(|p| (trees::TIMELINE, "!a:x", p)).collect();
        log.note_batch(&batch(&rows));
        assert!(log.changed(5, 20).is_none());
        assert!(log.between(5, 20).is_none());
        assert_eq!(log.changed(CAPACITY as u64, CAPACITY as u64 + 10).unwrap().len(), 1);
    }
}
