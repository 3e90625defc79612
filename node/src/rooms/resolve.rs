//! State resolution across forks (v2, and v2.1 from room v12), by ruma's `state_res`.
//!
//! Two forks of a big room share nearly all of their state: a partition of a 5,000-member room
//! leaves a few dozen entries that differ. Resolution reads the unconflicted state only through
//! the auth types of the events it checks, and then puts it back on top unchanged; so ruma is
//! given each state cut down to the entries it can read, and the rest is added afterwards. The
//! result is the same as resolving the whole states (debug builds check this on every
//! resolution); the cost follows what differs, not the room's size.

use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
};

use ruma::{
    EventId, OwnedEventId,
    events::StateEventType,
    room_version_rules::{RoomVersionRules, StateResolutionV2Rules},
    state_res,
};

use super::{Pdu, RoomHead, Rooms, head::StateKey, read::load_pdu, state::StateIds};
use crate::{
    error::{Error, Result},
    store::Db,
};

/// A resolution that takes longer than this is logged.
const SLOW_RESOLUTION: std::time::Duration = std::time::Duration::from_millis(250);

impl Rooms {
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

    /// The current state plus `pdu`, when `pdu` is a user's first join on one fork and
    /// resolving the forks would yield exactly that. It must already have passed the auth rules
    /// against the current state (the soft-fail check), and the current state must be the
    /// resolution of the room's extremities, one of which is its only prev event.
    ///
    /// Why resolution would add it and change nothing else: no state of any fork holds the
    /// user's membership, so no event of the resolution was sent by the user or changes their
    /// membership, and none reads that key; a self-join is not a power event, and its own checks
    /// read only the create event, the power levels and the join rules (which resolution
    /// settles among the power events, before any join) and the user's membership (absent). So
    /// it is checked against what the current state holds, and it passed. A healed partition
    /// takes in the other side's new members this way instead of resolving the whole room
    /// once per join. Debug builds resolve anyway and assert the two agree.
    pub(super) fn first_join_on_a_fork(
        &self,
        head: &RoomHead,
        pdu: &Pdu,
        before: &StateIds,
        current: &StateIds,
    ) -> Result<Option<StateIds>> {
        let Some(user) = pdu.state_key.as_deref() else { return Ok(None) };
        if pdu.kind != ruma::events::TimelineEventType::RoomMember
            || user != pdu.sender.as_str()
            || pdu.membership_str() != Some("join")
            // A restricted join also reads the authorising user's membership.
            || pdu.content_field("join_authorised_via_users_server").is_some()
            || pdu.content_field("third_party_invite").is_some()
        {
            return Ok(None);
        }
        let [prev] = pdu.prev_events.as_slice() else { return Ok(None) };
        if !head.extremities.contains(prev) {
            return Ok(None);
        }
        let key: StateKey = (StateEventType::RoomMember, user.to_owned());
        if before.contains_key(&key) {
            return Ok(None);
        }
        for other in head.extremities.iter().filter(|e| *e != prev) {
            if self.state_after_has(other, &key)? != Some(false) {
                return Ok(None);
            }
        }
        let mut state = current.clone();
        state.insert(key, pdu.event_id.clone());
        self.first_joins.inc();
        Ok(Some(state))
    }

    fn resolve_differing(
        &self,
        rules: &RoomVersionRules,
        all: &[StateIds],
        unstored: Option<&Arc<Pdu>>,
        head: &RoomHead,
    ) -> Result<StateIds> {
        let v2 = rules
            .state_res
            .v2_rules()
            .ok_or_else(|| Error::internal("room version does not use state resolution v2"))?;
        let mut events = EventCache { db: &self.db, head, events: HashMap::new() };
        if let Some(pdu) = unstored {
            events.events.insert(pdu.event_id.clone(), pdu.clone());
        }
        let conflicted = conflicted_keys(all);
        // Resolution uses the states' full auth chains only for their difference (what is not
        // in every chain). The events all states hold have the same chain in each, so it lies
        // in every full chain: taking it out of each set leaves the difference as it was, and
        // the shared events (nearly all of a big room's state) are walked once, not per state.
        let shared = all[0].iter().filter(|(key, _)| !conflicted.contains(key));
        let common = events.auth_chain(shared)?;
        let mut auth_chains: Vec<HashSet<OwnedEventId>> = Vec::with_capacity(all.len());
        for state in all {
            let own = state.iter().filter(|(key, _)| conflicted.contains(key));
            let mut chain = events.auth_chain(own)?;
            chain.retain(|id| !common.contains(id));
            auth_chains.push(chain);
        }
        let readable = events.readable_keys(&rules.authorization, v2, all, &conflicted, &auth_chains)?;
        let cut: Vec<StateIds> = all
            .iter()
            .map(|state| {
                state.iter().filter(|(key, _)| readable.contains(*key)).map(|(k, v)| (k.clone(), v.clone())).collect()
            })
            .collect();
        for state in &cut {
            for (key, id) in state {
                events.load_at(key, id)?;
            }
        }
        #[cfg(debug_assertions)]
        let chains_for_check = auth_chains.clone();
        let mut resolved = resolve_by_ruma(&self.db, rules, v2, &cut, auth_chains, &events.events)?;
        // Unconflicted entries outside the cut: resolution would end by putting them on top.
        for (key, id) in all[0].iter().filter(|(key, _)| !readable.contains(*key)) {
            resolved.insert(key.clone(), id.clone());
        }
        #[cfg(debug_assertions)]
        {
            for state in all {
                for (key, id) in state {
                    events.load_at(key, id)?;
                }
            }
            let whole = resolve_by_ruma(&self.db, rules, v2, all, chains_for_check, &events.events)?;
            debug_assert_eq!(resolved, whole, "resolving the cut states differs from resolving the whole");
        }
        Ok(resolved)
    }
}

/// The keys whose event is not the same in every state (or is missing from some).
fn conflicted_keys(all: &[StateIds]) -> HashSet<&StateKey> {
    let mut conflicted = HashSet::new();
    for (i, state) in all.iter().enumerate() {
        for (key, id) in state {
            if all.iter().enumerate().any(|(j, other)| j != i && other.get(key) != Some(id)) {
                conflicted.insert(key);
            }
        }
    }
    conflicted
}

/// ruma's resolution of `states`, with events read from `cache` (else from the store).
fn resolve_by_ruma(
    db: &Db,
    rules: &RoomVersionRules,
    v2: &StateResolutionV2Rules,
    states: &[StateIds],
    auth_chains: Vec<HashSet<OwnedEventId>>,
    cache: &HashMap<OwnedEventId, Arc<Pdu>>,
) -> Result<StateIds> {
    let failed = std::cell::RefCell::new(None);
    let fetch = cached_fetch(db, cache, &failed);
    let subgraph = |conflicted: &state_res::StateMap<Vec<OwnedEventId>>| {
        Some(conflicted_subgraph(conflicted.values().flatten(), &fetch).into_iter().collect())
    };
    let resolved = state_res::resolve(
        &rules.authorization,
        v2,
        states,
        auth_chains.into_iter().map(|c| c.into_iter().collect()).collect(),
        &fetch,
        subgraph,
    );
    // A store error would have made an event look missing, and resolution silently drop it.
    if let Some(e) = failed.borrow_mut().take() {
        return Err(e);
    }
    resolved.map_err(|e| Error::internal(format!("state resolution failed: {e}")))
}

/// Events from `cache`, else from the store. ruma's fetch can only say "missing", so the first
/// store error is kept in `failed` for the caller to return instead of a result built without
/// the event.
fn cached_fetch<'a>(
    db: &'a Db,
    cache: &'a HashMap<OwnedEventId, Arc<Pdu>>,
    failed: &'a std::cell::RefCell<Option<Error>>,
) -> impl Fn(&EventId) -> Option<Arc<Pdu>> + 'a {
    move |id: &EventId| {
        if let Some(pdu) = cache.get(id) {
            return Some(pdu.clone());
        }
        match load_pdu(db, id) {
            Ok(pdu) => pdu.map(Arc::new),
            Err(e) => {
                failed.borrow_mut().get_or_insert(e);
                None
            }
        }
    }
}

/// Events read once per resolution, with their auth chains. The head's current state is looked
/// up by key first: the states being resolved mostly hold its events.
struct EventCache<'a> {
    db: &'a Db,
    head: &'a RoomHead,
    events: HashMap<OwnedEventId, Arc<Pdu>>,
}

impl EventCache<'_> {
    fn load(&mut self, id: &EventId) -> Result<Option<Arc<Pdu>>> {
        if let Some(pdu) = self.events.get(id) {
            return Ok(Some(pdu.clone()));
        }
        let Some(pdu) = load_pdu(self.db, id)? else { return Ok(None) };
        let pdu = Arc::new(pdu);
        self.events.insert(id.to_owned(), pdu.clone());
        Ok(Some(pdu))
    }

    /// The head's copy of the state event `id` at `key`, if its current state holds it.
    fn in_head(&self, key: &StateKey, id: &EventId) -> Option<Arc<Pdu>> {
        self.head.state.get(key).filter(|pdu| pdu.event_id == id).cloned()
    }

    /// The state event `id` at `key`, kept in the cache.
    fn load_at(&mut self, key: &StateKey, id: &EventId) -> Result<Option<Arc<Pdu>>> {
        match self.in_head(key, id) {
            Some(pdu) => {
                if !self.events.contains_key(id) {
                    self.events.insert(id.to_owned(), pdu.clone());
                }
                Ok(Some(pdu))
            }
            None => self.load(id),
        }
    }

    /// [`EventCache::load_at`] without caching the head's copy: the shared events are only
    /// walked through.
    fn peek_at(&mut self, key: &StateKey, id: &EventId) -> Result<Option<Arc<Pdu>>> {
        match self.in_head(key, id) {
            Some(pdu) => Ok(Some(pdu)),
            None => self.load(id),
        }
    }

    /// Every event reachable through `auth_events` from the state entries `from` (not including
    /// those events themselves).
    fn auth_chain<'i>(
        &mut self,
        from: impl Iterator<Item = (&'i StateKey, &'i OwnedEventId)>,
    ) -> Result<HashSet<OwnedEventId>> {
        let mut seen = HashSet::new();
        let mut todo: Vec<Arc<Pdu>> = Vec::new();
        for (key, id) in from {
            if let Some(pdu) = self.peek_at(key, id)? {
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

    /// The keys resolution can read: the conflicted ones, the create event and power levels,
    /// and the auth types of every event of the full conflicted set (the conflicted events,
    /// the auth difference and, in v2.1, the conflicted subgraph), which are the only keys its
    /// auth checks look up in the state they build.
    fn readable_keys(
        &mut self,
        rules: &ruma::room_version_rules::AuthorizationRules,
        v2: &StateResolutionV2Rules,
        all: &[StateIds],
        conflicted: &HashSet<&StateKey>,
        auth_chains: &[HashSet<OwnedEventId>],
    ) -> Result<HashSet<StateKey>> {
        let mut readable: HashSet<StateKey> = conflicted.iter().map(|k| (*k).clone()).collect();
        readable.insert((StateEventType::RoomCreate, String::new()));
        readable.insert((StateEventType::RoomPowerLevels, String::new()));
        let mut full: HashSet<OwnedEventId> = HashSet::new();
        for state in all {
            for key in conflicted {
                if let Some(id) = state.get(*key) {
                    self.load_at(key, id)?;
                    full.insert(id.clone());
                }
            }
        }
        for chain in auth_chains {
            full.extend(chain.iter().filter(|id| !auth_chains.iter().all(|c| c.contains(*id))).cloned());
        }
        if v2.consider_conflicted_state_subgraph {
            let failed = std::cell::RefCell::new(None);
            let fetch = cached_fetch(self.db, &self.events, &failed);
            let conflicted_ids: Vec<OwnedEventId> =
                all.iter().flat_map(|s| conflicted.iter().filter_map(|k| s.get(*k).cloned())).collect();
            let subgraph = conflicted_subgraph(conflicted_ids.iter(), &fetch);
            if let Some(e) = failed.borrow_mut().take() {
                return Err(e);
            }
            full.extend(subgraph);
        }
        for id in &full {
            let Some(pdu) = self.load(id)? else { continue };
            let Some(state_key) = pdu.state_key.as_deref() else { continue };
            // Malformed content: resolution skips the event without reading anything.
            if let Ok(types) =
                state_res::auth_types_for_event(&pdu.kind, &pdu.sender, Some(state_key), &pdu.content, rules)
            {
                readable.extend(types);
            }
        }
        Ok(readable)
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
