//! Room state at every event, and state resolution across forks.
//!
//! Each event records the state *before* it as a snapshot id (stored by `rooms::snapshots`).
//! Messages share the snapshot of the state they were sent in, so only state events write a new
//! one. This is what `/state_ids`, the auth check against the state before an incoming event,
//! and state resolution read.

use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
};

use ruma::{EventId, OwnedEventId, room_version_rules::RoomVersionRules, state_res};

use super::{Pdu, RoomHead, Rooms, read::load_pdu, snapshots::Snapshots};
use crate::{
    error::{Error, Result},
    store::{Db, trees},
};

pub use super::snapshots::{SnapshotId, StateIds};

/// The state after `pdu`, given the state before it.
pub fn apply(mut before: StateIds, pdu: &Pdu) -> StateIds {
    if let Some(key) = &pdu.state_key {
        before.insert((pdu.state_event_type(), key.clone()), pdu.event_id.clone());
    }
    before
}

impl Rooms {
    /// The state before `event_id`, if the event is known with its state.
    pub fn state_before(&self, event_id: &EventId) -> Result<Option<StateIds>> {
        Ok(self.snapshot_before(event_id)?.map(|(_, state)| StateIds::clone(&state)))
    }

    /// The snapshot of the state before `event_id`: its id and the state, shared.
    fn snapshot_before(&self, event_id: &EventId) -> Result<Option<(SnapshotId, Arc<StateIds>)>> {
        match self.snapshot_id_before(event_id)? {
            Some(id) => Ok(Some((id, self.snapshots.get(&id)?))),
            None => Ok(None),
        }
    }

    /// The id of the snapshot of the state before `event_id`, without reading the snapshot.
    fn snapshot_id_before(&self, event_id: &EventId) -> Result<Option<SnapshotId>> {
        match self.db.get(trees::EVENT_STATE, event_id.as_bytes())? {
            Some(id) => Ok(Some(id.as_slice().try_into().map_err(|_| Error::internal("bad snapshot id"))?)),
            None => Ok(None),
        }
    }

    /// The id of the stored snapshot that is the state after `event_id`, when there is one
    /// without building it: the state before an event that changes no state (a message or a
    /// rejected event), or for a state event, the delta that adds it to the state before it
    /// (stored when the event was appended to the current state). `None` otherwise.
    pub(super) fn snapshot_id_after(&self, event_id: &EventId) -> Result<Option<SnapshotId>> {
        let Some(id) = self.snapshot_id_before(event_id)? else { return Ok(None) };
        let Some(stored) = self.stored_event(event_id)? else { return Ok(None) };
        if stored.rejected || !stored.pdu.contains_key("state_key") {
            return Ok(Some(id));
        }
        let pdu = stored.into_pdu(event_id)?;
        self.delta_after(&id, &pdu)
    }

    /// The id of the delta that is the state after the state event `pdu` on `before`, if stored.
    fn delta_after(&self, before: &SnapshotId, pdu: &Pdu) -> Result<Option<SnapshotId>> {
        let Some(state_key) = &pdu.state_key else { return Ok(None) };
        let id = Snapshots::id_after_one(before, &pdu.state_event_type(), state_key, &pdu.event_id)?;
        Ok(self.snapshots.has_delta(&id)?.then_some(id))
    }

    /// A stored snapshot, parsed and shared through the cache.
    pub(super) fn snapshot(&self, id: &SnapshotId) -> Result<Arc<StateIds>> {
        self.snapshots.get(id)
    }

    /// The state after `event_id` (rejected events change nothing).
    pub fn state_after(&self, event_id: &EventId) -> Result<Option<StateIds>> {
        Ok(self.state_after_with_id(event_id)?.map(|(state, _)| state))
    }

    /// [`Rooms::state_after`], with the id of its stored snapshot when it has one: the state
    /// after a message (or a rejected event) is the snapshot before it.
    pub(super) fn state_after_with_id(&self, event_id: &EventId) -> Result<Option<(StateIds, Option<SnapshotId>)>> {
        let Some((id, before)) = self.snapshot_before(event_id)? else { return Ok(None) };
        let Some(stored) = self.stored_event(event_id)? else { return Ok(None) };
        let rejected = stored.rejected;
        let pdu = stored.into_pdu(event_id)?;
        if rejected || pdu.state_key.is_none() {
            return Ok(Some((StateIds::clone(&before), Some(id))));
        }
        let after = self.delta_after(&id, &pdu)?;
        Ok(Some((apply(StateIds::clone(&before), &pdu), after)))
    }

    /// Resolves several states of one room into one (state resolution v2, v2.1 from v12).
    /// `head` is the room's: its parsed current state spares reading most events again.
    pub fn resolve(&self, rules: &RoomVersionRules, states: Vec<StateIds>, head: &RoomHead) -> Result<StateIds> {
        self.resolve_with(rules, states, None, head)
    }

    /// [`Rooms::resolve`] when one of the states holds an event not stored yet (the one being
    /// appended): resolution must see it, or it silently loses.
    pub fn resolve_with(
        &self,
        rules: &RoomVersionRules,
        states: Vec<StateIds>,
        unstored: Option<&Arc<Pdu>>,
        head: &RoomHead,
    ) -> Result<StateIds> {
        let mut states = states.into_iter();
        let Some(first) = states.next() else { return Ok(StateIds::new()) };
        let rest: Vec<StateIds> = states.filter(|s| *s != first).collect();
        if rest.is_empty() {
            return Ok(first);
        }
        let all: Vec<StateIds> = std::iter::once(first).chain(rest).collect();
        let started = std::time::Instant::now();
        let resolved = self.resolve_differing(rules, &all, unstored, head);
        let took = started.elapsed();
        self.resolutions.observe_duration(took);
        if took > SLOW_RESOLUTION {
            tracing::info!(
                states = all.len(),
                entries = all[0].len(),
                ms = took.as_millis() as u64,
                "slow state resolution"
            );
        }
        resolved
    }

    fn resolve_differing(
        &self,
        rules: &RoomVersionRules,
        all: &[StateIds],
        unstored: Option<&Arc<Pdu>>,
        head: &RoomHead,
    ) -> Result<StateIds> {
        let mut events = EventCache::new(&self.db);
        // The states differ in a few entries and share the rest, mostly with the current state:
        // its events are parsed already. Reading a 5,000-member state's events and their auth
        // chains from the store took some 100 ms per resolution.
        for pdu in head.state.values() {
            events.events.insert(pdu.event_id.clone(), pdu.clone());
        }
        if let Some(pdu) = unstored {
            events.events.insert(pdu.event_id.clone(), pdu.clone());
        }
        // Resolution uses the states' full auth chains only for their difference (what is not
        // in every chain). The events all states hold have the same chain in each, so it lies
        // in every full chain: taking it out of each set leaves the difference as it was, and
        // the shared events (nearly all of a big room's state) are walked once, not per state.
        let shared: Vec<&OwnedEventId> = all[0]
            .iter()
            .filter(|(key, id)| all[1..].iter().all(|other| other.get(*key) == Some(*id)))
            .map(|(_, id)| id)
            .collect();
        let common = events.auth_chain(shared.into_iter())?;
        let mut auth_chains: Vec<HashSet<OwnedEventId>> = Vec::with_capacity(all.len());
        for state in all {
            let own = state.iter().filter(|(key, id)| all.iter().any(|other| other.get(*key) != Some(*id)));
            let mut chain = events.auth_chain(own.map(|(_, id)| id))?;
            chain.retain(|id| !common.contains(id));
            auth_chains.push(chain);
        }
        for state in all {
            for id in state.values() {
                events.load(id)?;
            }
        }
        let resolution_rules = rules
            .state_res
            .v2_rules()
            .ok_or_else(|| Error::internal("room version does not use state resolution v2"))?;
        let cache = &events.events;
        let fetch =
            |id: &EventId| cache.get(id).cloned().or_else(|| load_pdu(&self.db, id).ok().flatten().map(Arc::new));
        let subgraph = |conflicted: &state_res::StateMap<Vec<OwnedEventId>>| {
            Some(conflicted_subgraph(conflicted.values().flatten(), &fetch).into_iter().collect())
        };
        state_res::resolve(
            &rules.authorization,
            resolution_rules,
            all,
            auth_chains.into_iter().map(|c| c.into_iter().collect()).collect(),
            fetch,
            subgraph,
        )
        .map_err(|e| Error::internal(format!("state resolution failed: {e}")))
    }
}

/// A resolution that takes longer than this is logged.
const SLOW_RESOLUTION: std::time::Duration = std::time::Duration::from_millis(250);

/// Events read once per resolution, with their auth chains.
struct EventCache<'a> {
    db: &'a Db,
    events: HashMap<OwnedEventId, Arc<Pdu>>,
}

impl<'a> EventCache<'a> {
    fn new(db: &'a Db) -> Self {
        Self { db, events: HashMap::new() }
    }

    fn load(&mut self, id: &EventId) -> Result<Option<Arc<Pdu>>> {
        if let Some(pdu) = self.events.get(id) {
            return Ok(Some(pdu.clone()));
        }
        let Some(pdu) = load_pdu(self.db, id)? else { return Ok(None) };
        let pdu = Arc::new(pdu);
        self.events.insert(id.to_owned(), pdu.clone());
        Ok(Some(pdu))
    }

    /// Every event reachable through `auth_events` from `from` (not including `from` itself).
    fn auth_chain<'i>(&mut self, from: impl Iterator<Item = &'i OwnedEventId>) -> Result<HashSet<OwnedEventId>> {
        let mut seen = HashSet::new();
        let mut todo: Vec<Arc<Pdu>> = Vec::new();
        for id in from {
            if let Some(pdu) = self.load(id)? {
                todo.push(pdu);
            }
        }
        // Each event id is copied once, when first seen.
        while let Some(pdu) = todo.pop() {
            for parent in &pdu.auth_events {
                if seen.contains(parent) {
                    continue;
                }
                seen.insert(parent.clone());
                if let Some(parent) = self.load(parent)? {
                    todo.push(parent);
                }
            }
        }
        Ok(seen)
    }
}

/// The conflicted state subgraph (state resolution v2.1): the conflicted events plus every event
/// on an auth path from one conflicted event to another.
fn conflicted_subgraph<'i>(
    conflicted: impl Iterator<Item = &'i OwnedEventId>,
    fetch: &impl Fn(&EventId) -> Option<Arc<Pdu>>,
) -> HashSet<OwnedEventId> {
    let conflicted: HashSet<OwnedEventId> = conflicted.cloned().collect();
    // reaches[e]: whether some conflicted event is a strict auth ancestor of e.
    let mut reaches: HashMap<OwnedEventId, bool> = HashMap::new();
    fn visit(
        id: &EventId,
        conflicted: &HashSet<OwnedEventId>,
        fetch: &impl Fn(&EventId) -> Option<Arc<Pdu>>,
        reaches: &mut HashMap<OwnedEventId, bool>,
    ) -> bool {
        if let Some(known) = reaches.get(id) {
            return *known;
        }
        // Mark first so a malformed cycle cannot recurse forever.
        reaches.insert(id.to_owned(), false);
        let mut found = false;
        if let Some(pdu) = fetch(id) {
            for parent in &pdu.auth_events {
                let parent_reaches = visit(parent, conflicted, fetch, reaches);
                found |= conflicted.contains(parent) || parent_reaches;
            }
        }
        reaches.insert(id.to_owned(), found);
        found
    }
    for id in &conflicted {
        visit(id, &conflicted, fetch, &mut reaches);
    }
    let mut out: HashSet<OwnedEventId> = conflicted.clone();
    out.extend(reaches.into_iter().filter(|(_, r)| *r).map(|(id, _)| id));
    out
}
