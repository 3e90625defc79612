//! How room states are stored: as snapshots, most of them a small delta on another.
//!
//! Every event records the state before it as a snapshot id. A state event's snapshot differs
//! from its base by one entry, so storing each one whole made a room's joins cost the square
//! of its size (5,000 joins wrote 5,000 copies of a state that grew to 5,000 members). A new
//! snapshot is therefore stored as the entries that differ from its base; every
//! [`MATERIALIZE_EVERY`]th link of a chain is also stored whole, so reading one walks at most
//! that many small records.
//!
//! Ids: a whole snapshot written without a base is named by the hash of its contents (as every
//! snapshot was before deltas, so older stores read unchanged). A delta is named by the hash
//! of its base id and its entries, so the state after a given event on a given base always
//! gets the same id, which is what lets an event's fork be recognised as the current state
//! without comparing states. Equal states reached by different paths may have different ids;
//! an id still names exactly one state.

use std::{
    collections::{HashMap, VecDeque},
    sync::{Arc, Mutex},
};

use ruma::{OwnedEventId, events::StateEventType, state_res};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tocsin_store::WriteBatch;

use crate::{
    error::{Error, Result},
    store::{Db, trees},
};

/// `(type, state_key) -> event id`: a room state as ids.
pub type StateIds = state_res::StateMap<OwnedEventId>;

/// A snapshot's name: a hash, 16 bytes of SHA-256 (see the module docs for of what).
pub type SnapshotId = [u8; 16];

/// How long a chain of deltas grows before a link is also stored whole.
const MATERIALIZE_EVERY: u32 = 64;

/// A delta bigger than this share of the state is stored whole instead (after a state
/// resolution that replaced much of the state, a delta would save nothing).
const MAX_DELTA_SHARE: usize = 4;

/// How many parsed snapshots the cache keeps. A snapshot of a 5,000-member room is about a
/// megabyte in memory, and the forks of one busy room rarely span more states.
const CACHE_SIZE: usize = 16;

/// One `(type, state_key, event_id)` entry, as stored.
type Row = (String, String, OwnedEventId);

/// A stored delta: the snapshot is `base` with `set` entries replaced or added and `unset`
/// keys removed.
#[derive(Serialize, Deserialize)]
struct Delta {
    base: SnapshotId,
    set: Vec<Row>,
    unset: Vec<(String, String)>,
    /// Links since the nearest snapshot stored whole (0: this one is also stored whole).
    depth: u32,
}

/// The id of the empty state, the base of every room's first snapshot.
pub fn empty_id() -> Result<SnapshotId> {
    whole_id(&whole_bytes(&StateIds::new())?)
}

fn whole_bytes(state: &StateIds) -> Result<Vec<u8>> {
    let mut rows: Vec<(String, &str, &str)> =
        state.iter().map(|((kind, key), id)| (kind.to_string(), key.as_str(), id.as_str())).collect();
    rows.sort_unstable();
    serde_json::to_vec(&rows).map_err(Error::internal)
}

fn whole_id(bytes: &[u8]) -> Result<SnapshotId> {
    truncate(Sha256::digest(bytes).as_slice())
}

fn delta_id(base: &SnapshotId, set: &[Row], unset: &[(String, String)]) -> Result<SnapshotId> {
    let mut hasher = Sha256::new();
    // A prefix no whole snapshot's JSON starts with, so the two kinds of id never meet.
    hasher.update(b"tocsin-state-delta\0");
    hasher.update(base);
    hasher.update(serde_json::to_vec(&(set, unset)).map_err(Error::internal)?);
    truncate(hasher.finalize().as_slice())
}

fn truncate(digest: &[u8]) -> Result<SnapshotId> {
    digest.get(..16).and_then(|d| d.try_into().ok()).ok_or_else(|| Error::internal("short digest"))
}

/// The entries of `state` that differ from `base`, and the keys of `base` it lacks, sorted.
fn diff(base: &StateIds, state: &StateIds) -> (Vec<Row>, Vec<(String, String)>) {
    let mut set: Vec<Row> = state
        .iter()
        .filter(|(k, id)| base.get(*k) != Some(*id))
        .map(|((kind, key), id)| (kind.to_string(), key.clone(), id.clone()))
        .collect();
    let mut unset: Vec<(String, String)> =
        base.keys().filter(|k| !state.contains_key(*k)).map(|(kind, key)| (kind.to_string(), key.clone())).collect();
    set.sort_unstable();
    unset.sort_unstable();
    (set, unset)
}

/// Stored snapshots: written as deltas, read through a cache of parsed states.
pub struct Snapshots {
    db: Db,
    cache: Mutex<Cached>,
    /// Which snapshot is the state after an event, for the events asked about lately (the
    /// room's extremities and the prev events of what arrives). Each received event asks this
    /// of every fork's extremity; reading and parsing each of those events again was a tenth
    /// of the receive path in a burst from several servers. The answer never changes once
    /// found: the state before an event and the event are fixed.
    after: Mutex<HashMap<OwnedEventId, SnapshotId>>,
}

/// How many events' [`Snapshots::after`] answers are kept.
const AFTER_KEPT: usize = 4096;

/// Parsed snapshots with their chain depth, and the order they were cached in (the oldest is
/// dropped first).
#[derive(Default)]
struct Cached {
    map: HashMap<SnapshotId, (Arc<StateIds>, u32)>,
    order: VecDeque<SnapshotId>,
}

impl Snapshots {
    pub fn new(db: Db) -> Self {
        Self { db, cache: Mutex::default(), after: Mutex::default() }
    }

    /// The snapshot found earlier to be the state after `event_id`.
    pub fn known_after(&self, event_id: &ruma::EventId) -> Option<SnapshotId> {
        self.after.lock().unwrap_or_else(|e| e.into_inner()).get(event_id).copied()
    }

    pub fn remember_after(&self, event_id: &ruma::EventId, id: SnapshotId) {
        let mut after = self.after.lock().unwrap_or_else(|e| e.into_inner());
        if after.len() >= AFTER_KEPT {
            after.clear();
        }
        after.insert(event_id.to_owned(), id);
    }

    fn cached(&self, id: &SnapshotId) -> Result<Option<(Arc<StateIds>, u32)>> {
        Ok(self.cache.lock().map_err(|_| poisoned())?.map.get(id).cloned())
    }

    fn remember(&self, id: SnapshotId, state: Arc<StateIds>, depth: u32) -> Result<()> {
        let mut cache = self.cache.lock().map_err(|_| poisoned())?;
        if cache.map.insert(id, (state, depth)).is_none() {
            cache.order.push_back(id);
            while cache.order.len() > CACHE_SIZE {
                if let Some(old) = cache.order.pop_front() {
                    cache.map.remove(&old);
                }
            }
        }
        Ok(())
    }

    fn delta(&self, id: &SnapshotId) -> Result<Option<Delta>> {
        self.db.get_json(trees::STATE_DELTAS, id)
    }

    /// Whether the delta `id` is stored (a whole snapshot is not looked for: reading one to
    /// learn that it exists costs as much as reading it).
    pub fn has_delta(&self, id: &SnapshotId) -> Result<bool> {
        Ok(self.db.get(trees::STATE_DELTAS, id)?.is_some())
    }

    /// Links from `id` to the nearest snapshot stored whole.
    fn depth(&self, id: &SnapshotId) -> Result<u32> {
        if let Some((_, depth)) = self.cached(id)? {
            return Ok(depth);
        }
        Ok(self.delta(id)?.map_or(0, |d| d.depth))
    }

    /// The id `state` would be written under as the state after `event` on `base` alone: what
    /// [`Snapshots::write`] names it when `base` was the current state.
    pub fn id_after_one(
        base: &SnapshotId,
        kind: &StateEventType,
        state_key: &str,
        event: &OwnedEventId,
    ) -> Result<SnapshotId> {
        delta_id(base, &[(kind.to_string(), state_key.to_owned(), event.clone())], &[])
    }

    /// Stores `state` (if it is not stored yet) and returns its id: a delta on `base` when one
    /// is given and the difference is small, else the whole state. A state equal to its base
    /// is its base.
    pub fn write(
        &self,
        state: &Arc<StateIds>,
        base: Option<(SnapshotId, &StateIds)>,
        batch: &mut WriteBatch,
    ) -> Result<SnapshotId> {
        if let Some((base_id, base_state)) = base {
            let (set, unset) = diff(base_state, state);
            if set.is_empty() && unset.is_empty() {
                return Ok(base_id);
            }
            if (set.len() + unset.len()) * MAX_DELTA_SHARE <= state.len().max(1) || set.len() + unset.len() <= 1 {
                let id = delta_id(&base_id, &set, &unset)?;
                // The store, not the cache, says whether it is written: a cached snapshot may
                // come from a batch that failed.
                if let Some(stored) = self.delta(&id)? {
                    self.remember(id, state.clone(), stored.depth)?;
                    return Ok(id);
                }
                let mut depth = self.depth(&base_id)? + 1;
                if depth >= MATERIALIZE_EVERY {
                    batch.insert(trees::STATE_SNAPSHOTS, id.to_vec(), whole_bytes(state)?);
                    depth = 0;
                }
                let delta = Delta { base: base_id, set, unset, depth };
                batch.insert(trees::STATE_DELTAS, id.to_vec(), Db::to_json(&delta)?);
                self.remember(id, state.clone(), depth)?;
                return Ok(id);
            }
        }
        let bytes = whole_bytes(state)?;
        let id = whole_id(&bytes)?;
        if self.db.get(trees::STATE_SNAPSHOTS, &id)?.is_none() {
            batch.insert(trees::STATE_SNAPSHOTS, id.to_vec(), bytes);
        }
        self.remember(id, state.clone(), 0)?;
        Ok(id)
    }

    /// A stored snapshot, parsed (and shared through the cache).
    pub fn get(&self, id: &SnapshotId) -> Result<Arc<StateIds>> {
        if let Some((state, _)) = self.cached(id)? {
            return Ok(state);
        }
        // Walk to the nearest snapshot that is cached or stored whole, then apply the deltas
        // on the way back.
        let mut chain: Vec<Delta> = Vec::new();
        let empty = empty_id()?;
        let mut at = *id;
        let (base, base_depth) = loop {
            if let Some(found) = self.cached(&at)? {
                break found;
            }
            if let Some(bytes) = self.db.get(trees::STATE_SNAPSHOTS, &at)? {
                let state = Arc::new(parse_whole(&bytes)?);
                self.remember(at, state.clone(), 0)?;
                break (state, 0);
            }
            if at == empty {
                break (Arc::new(StateIds::new()), 0);
            }
            let delta = self.delta(&at)?.ok_or_else(|| Error::internal("state snapshot missing"))?;
            if chain.len() > MATERIALIZE_EVERY as usize {
                return Err(Error::internal("state snapshot chain longer than it may be"));
            }
            at = delta.base;
            chain.push(delta);
        };
        if chain.is_empty() {
            return Ok(base);
        }
        let mut state = StateIds::clone(&base);
        let mut depth = base_depth;
        for delta in chain.iter().rev() {
            for (kind, key) in &delta.unset {
                state.remove(&(StateEventType::from(kind.as_str()), key.clone()));
            }
            for (kind, key, event) in &delta.set {
                state.insert((StateEventType::from(kind.as_str()), key.clone()), event.clone());
            }
            depth = delta.depth;
        }
        let state = Arc::new(state);
        self.remember(*id, state.clone(), depth)?;
        Ok(state)
    }
}

fn parse_whole(bytes: &[u8]) -> Result<StateIds> {
    let rows: Vec<Row> = serde_json::from_slice(bytes).map_err(Error::internal)?;
    Ok(rows.into_iter().map(|(kind, key, id)| ((StateEventType::from(kind), key), id)).collect())
}

fn poisoned() -> Error {
    Error::internal("snapshot cache poisoned")
}
