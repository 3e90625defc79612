//! The room heads in memory, bounded: a node with 10,000 rooms keeps the heads it uses.
//!
//! A head is both a cache of the store and the lock that orders a room's writes, so only an idle
//! head may go: one that nobody holds (its `Arc` is in the map alone). A head being written holds
//! its `Arc` until the write is durable, so a head reloaded from the store never misses an event.
//! Idle heads beyond the capacity go least recently used first.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, MutexGuard},
};

use ruma::{OwnedRoomId, RoomId};

use super::RoomHead;
use crate::error::{Error, Result};

pub type SharedHead = Arc<tokio::sync::Mutex<RoomHead>>;

pub struct HeadCache {
    inner: Mutex<Inner>,
    capacity: usize,
}

#[derive(Default)]
struct Inner {
    heads: HashMap<OwnedRoomId, Entry>,
    clock: u64,
}

struct Entry {
    head: SharedHead,
    used: u64,
}

impl HeadCache {
    pub fn new(capacity: usize) -> Self {
        Self { inner: Mutex::default(), capacity: capacity.max(1) }
    }

    fn lock(&self) -> Result<MutexGuard<'_, Inner>> {
        self.inner.lock().map_err(|_| Error::internal("room cache poisoned"))
    }

    pub fn get(&self, room_id: &RoomId) -> Result<Option<SharedHead>> {
        Ok(self.lock()?.touch(room_id))
    }

    /// The cached head of the room if there is one (another task loaded it first), else `head`.
    pub fn get_or_insert(&self, room_id: &RoomId, head: RoomHead) -> Result<SharedHead> {
        let mut inner = self.lock()?;
        if let Some(existing) = inner.touch(room_id) {
            return Ok(existing);
        }
        Ok(inner.insert(room_id.to_owned(), head, self.capacity))
    }

    /// `head`, cached, unless the room has a head already: `None` then.
    pub fn claim(&self, head: RoomHead) -> Result<Option<SharedHead>> {
        let mut inner = self.lock()?;
        if inner.heads.contains_key(&head.room_id) {
            return Ok(None);
        }
        Ok(Some(inner.insert(head.room_id.clone(), head, self.capacity)))
    }

    /// Caches `head`, replacing the room's head if it had one.
    pub fn replace(&self, head: RoomHead) -> Result<SharedHead> {
        Ok(self.lock()?.insert(head.room_id.clone(), head, self.capacity))
    }

    /// Drops the room's head, so the next use reloads it from the store.
    pub fn remove(&self, room_id: &RoomId) {
        let mut inner = self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        inner.heads.remove(room_id);
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.inner.lock().map(|i| i.heads.len()).unwrap_or_default()
    }
}

impl Inner {
    fn touch(&mut self, room_id: &RoomId) -> Option<SharedHead> {
        self.clock += 1;
        let clock = self.clock;
        self.heads.get_mut(room_id).map(|entry| {
            entry.used = clock;
            entry.head.clone()
        })
    }

    fn insert(&mut self, room_id: OwnedRoomId, head: RoomHead, capacity: usize) -> SharedHead {
        self.clock += 1;
        let head = Arc::new(tokio::sync::Mutex::new(head));
        self.heads.insert(room_id, Entry { head: head.clone(), used: self.clock });
        if self.heads.len() > capacity {
            self.evict_idle(capacity - capacity / 8);
        }
        head
    }

    /// Drops the least recently used idle heads until `keep` remain (or none is idle). Going an
    /// eighth below the capacity spreads the sort over many inserts.
    fn evict_idle(&mut self, keep: usize) {
        let mut idle: Vec<(u64, OwnedRoomId)> = self
            .heads
            .iter()
            .filter(|(_, entry)| Arc::strong_count(&entry.head) == 1)
            .map(|(room_id, entry)| (entry.used, room_id.clone()))
            .collect();
        idle.sort_unstable_by_key(|(used, _)| *used);
        let excess = self.heads.len().saturating_sub(keep);
        for (_, room_id) in idle.into_iter().take(excess) {
            self.heads.remove(&room_id);
        }
    }
}

#[cfg(test)]
mod tests {
    use ruma::{RoomVersionId, owned_room_id};

    use super::*;

    fn head(n: usize) -> RoomHead {
        let room_id = RoomId::parse(format!("!r{n}:example.org")).expect("room id");
        RoomHead::new(room_id, RoomVersionId::V11).expect("head")
    }

    #[test]
    fn keeps_held_and_recent_heads_and_drops_the_oldest_idle_ones() {
        let cache = HeadCache::new(8);
        let held = cache.replace(head(0)).expect("insert");
        for n in 1..8 {
            cache.replace(head(n)).expect("insert");
        }
        // Room 1 is used again: room 2 is now the least recently used idle head.
        assert!(cache.get(&owned_room_id!("!r1:example.org")).expect("get").is_some());
        cache.replace(head(8)).expect("insert");
        assert_eq!(cache.len(), 7, "an eighth below the capacity after the sweep");
        assert!(cache.get(&owned_room_id!("!r0:example.org")).expect("get").is_some(), "a held head stays");
        assert!(cache.get(&owned_room_id!("!r1:example.org")).expect("get").is_some(), "a recent head stays");
        assert!(cache.get(&owned_room_id!("!r2:example.org")).expect("get").is_none(), "the oldest idle head went");
        drop(held);
    }

    #[test]
    fn a_full_cache_of_held_heads_grows_instead_of_dropping_one() {
        let cache = HeadCache::new(4);
        let held: Vec<_> = (0..6).map(|n| cache.replace(head(n)).expect("insert")).collect();
        assert_eq!(cache.len(), 6);
        drop(held);
        cache.replace(head(6)).expect("insert");
        assert_eq!(cache.len(), 4, "back to the capacity once the heads are idle");
    }
}
