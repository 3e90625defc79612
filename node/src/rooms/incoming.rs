//! Events from other servers, after their signatures were checked: authorised against their
//! auth events, against the state before them, and against the current state (soft fail), then
//! appended with the room's forks resolved.

use std::{
    collections::{HashMap, HashSet},
    sync::Arc,
};

use ruma::{
    EventId, OwnedEventId,
    events::StateEventType,
    room_version_rules::{AuthorizationRules, RoomVersionRules},
    state_res,
};
use tocsin_store::WriteBatch;

use super::{
    Pdu, Rooms,
    build::current_state_rows,
    head::RoomHead,
    read::{StoredEvent, load_pdu, load_stored},
    state::{self, StateIds},
};
use crate::{
    error::{Error, Result},
    store::{Db, key, trees},
};

/// Resolves when a staged event is durable.
pub type Durable = std::pin::Pin<Box<dyn std::future::Future<Output = Result<()>> + Send>>;

/// What became of an incoming event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// In the timeline (and in the state, if it won).
    Accepted,
    /// Authorised by the state before it but not by the current state: kept out of the timeline.
    SoftFailed,
    /// Failed the auth rules.
    Rejected(String),
    /// Already known.
    Known,
}

/// Why an event's checks did not pass.
#[derive(Debug)]
pub enum Refusal {
    /// The event breaks the rules: it is recorded as rejected and never applied.
    Rejected(String),
    /// The store failed while deciding. Nothing is recorded, so a retry decides afresh: a
    /// passing disk error must never reject a valid event for good.
    Store(Error),
}

impl From<Error> for Refusal {
    fn from(e: Error) -> Self {
        Refusal::Store(e)
    }
}

/// Splits a check's result: `Ok(None)` passed, `Ok(Some(reason))` rejected, `Err` undecided.
pub(crate) fn verdict(checked: std::result::Result<(), Refusal>) -> Result<Option<String>> {
    match checked {
        Ok(()) => Ok(None),
        Err(Refusal::Rejected(reason)) => Ok(Some(reason)),
        Err(Refusal::Store(e)) => Err(e),
    }
}

/// A verified event for the timeline. `state_before` is given when its prev events are not all
/// known here (it came from the sender's `/state_ids`).
pub struct Incoming {
    pub pdu: Pdu,
    pub state_before: Option<StateIds>,
}

impl Rooms {
    /// Whether the event is stored (as an outlier or in the timeline).
    pub fn knows(&self, event_id: &EventId) -> Result<bool> {
        Ok(self.db.get(trees::EVENTS, event_id.as_bytes())?.is_some())
    }

    /// Whether the event's state is known, so events built on it can be authorised.
    pub fn has_state_at(&self, event_id: &EventId) -> Result<bool> {
        Ok(self.db.get(trees::EVENT_STATE, event_id.as_bytes())?.is_some())
    }

    /// Stores events known only to authorise others (an auth chain, the state at a join), each
    /// checked against its own auth events and the alarm rule. They are not in the timeline.
    pub async fn store_outliers(&self, rules: &AuthorizationRules, mut pdus: Vec<Pdu>) -> Result<usize> {
        pdus.sort_by_key(|p| p.depth);
        let mut accepted: HashMap<OwnedEventId, Arc<Pdu>> = HashMap::new();
        let mut batch = WriteBatch::new();
        let mut rejected = 0;
        for pdu in pdus {
            if accepted.contains_key(&pdu.event_id) || self.knows(&pdu.event_id)? {
                continue;
            }
            let pdu = Arc::new(pdu);
            let rejection = match verdict(self.check_auth_events(rules, &pdu, |id| accepted.get(id).cloned()))? {
                // An outlier may later enter the timeline by backfill: it is held to the alarm
                // rule of live events from the start.
                None => self.policy.check_remote_alarm(&pdu),
                refused => refused,
            };
            let stored = StoredEvent::outlier(&pdu, rejection.is_some())?;
            batch.insert(trees::EVENTS, pdu.event_id.as_bytes().to_vec(), Db::to_json(&stored)?);
            match rejection {
                None => {
                    accepted.insert(pdu.event_id.clone(), pdu);
                }
                Some(reason) => {
                    tracing::info!(event_id = %pdu.event_id, %reason, "rejected outlier");
                    rejected += 1;
                }
            }
        }
        if !batch.is_empty() {
            self.db.write(batch).await?;
        }
        Ok(rejected)
    }

    /// Authorises an event against its own auth events. `extra` supplies events not yet stored.
    pub(crate) fn check_auth_events(
        &self,
        rules: &AuthorizationRules,
        pdu: &Arc<Pdu>,
        extra: impl Fn(&EventId) -> Option<Arc<Pdu>>,
    ) -> std::result::Result<(), Refusal> {
        let mut by_key: HashMap<(StateEventType, String), Arc<Pdu>> = HashMap::new();
        for id in &pdu.auth_events {
            let auth = match extra(id) {
                Some(p) => p,
                None => match load_stored(&self.db, id)? {
                    Some(stored) if stored.rejected => {
                        return Err(Refusal::Rejected(format!("auth event {id} was rejected")));
                    }
                    Some(stored) => Arc::new(stored.into_pdu(id)?),
                    None => return Err(Refusal::Rejected(format!("auth event {id} is unknown"))),
                },
            };
            by_key.insert((auth.state_event_type(), auth.state_key.clone().unwrap_or_default()), auth);
        }
        // From v12 the create event is not listed: the room id names it.
        if rules.room_create_event_id_as_room_id
            && pdu.kind != ruma::events::TimelineEventType::RoomCreate
            && let Ok(create_id) = EventId::parse(format!("${}", &pdu.room_id.as_str()[1..]))
        {
            let create = match extra(&create_id) {
                Some(create) => Some(create),
                None => load_pdu(&self.db, &create_id)?.map(Arc::new),
            };
            match create {
                Some(create) => {
                    by_key.insert((StateEventType::RoomCreate, String::new()), create);
                }
                None => return Err(Refusal::Rejected(format!("the room's create event {create_id} is unknown"))),
            }
        }
        let fetch = |id: &EventId| {
            by_key
                .values()
                .find(|p| p.event_id == id)
                .cloned()
                .or_else(|| (pdu.event_id == id).then(|| pdu.clone()))
                .or_else(|| extra(id))
        };
        state_res::check_state_independent_auth_rules(rules, pdu, fetch)
            .map_err(|e| Refusal::Rejected(e.to_string()))?;
        state_res::check_state_dependent_auth_rules(rules, pdu, |kind: &StateEventType, key: &str| {
            by_key.get(&(kind.clone(), key.to_owned())).cloned()
        })
        .map_err(|e| Refusal::Rejected(e.to_string()))
    }

    /// The events of `state` at `keys`, read up front so a store error surfaces as one.
    fn state_events(
        &self,
        head: &RoomHead,
        state: &StateIds,
        keys: impl IntoIterator<Item = (StateEventType, String)>,
    ) -> Result<HashMap<(StateEventType, String), Arc<Pdu>>> {
        let mut out = HashMap::new();
        for k in keys {
            if let Some(id) = state.get(&k)
                && let Some(pdu) = self.state_event_at(head, &k, id)?
            {
                out.insert(k, pdu);
            }
        }
        Ok(out)
    }

    /// The state event `id` at `key`: the head's parsed copy when the current state has it
    /// there (the state before an event is mostly the current one), else read from the store.
    fn state_event_at(
        &self,
        head: &RoomHead,
        key: &(StateEventType, String),
        id: &EventId,
    ) -> Result<Option<Arc<Pdu>>> {
        match head.state.get(key) {
            Some(pdu) if pdu.event_id == id => Ok(Some(pdu.clone())),
            _ => Ok(load_pdu(&self.db, id)?.map(Arc::new)),
        }
    }

    /// A membership event against the room's access rule in `state` (policy::access).
    fn check_access_rule_at(&self, head: &RoomHead, pdu: &Pdu, state: &StateIds) -> std::result::Result<(), Refusal> {
        let (Some(membership), Some(target)) =
            (pdu.membership(), pdu.state_key.as_deref().and_then(|k| ruma::UserId::parse(k).ok()))
        else {
            return Ok(());
        };
        let Some(rule_id) = state.get(&(crate::policy::access::STATE_TYPE.into(), String::new())) else {
            return Ok(());
        };
        // Members are taken from the head where the current state has the same event: reading
        // them all made each join into a 5,000-member room parse 5,000 events.
        let rule_key = (StateEventType::from(crate::policy::access::STATE_TYPE), String::new());
        let rule = self.state_event_at(head, &rule_key, rule_id)?.map(|p| p.content_value());
        let mut members = Vec::new();
        for (key, id) in state {
            if key.0 == StateEventType::RoomMember {
                members.push((key.1.as_str(), self.state_event_at(head, key, id)?.and_then(|p| p.membership())));
            }
        }
        let facts = crate::policy::access::RoomFacts::from_members(rule.as_ref(), &target, members);
        self.policy
            .check_access(&pdu.sender, &target, &membership, &facts)
            .map_err(|e| Refusal::Rejected(e.to_string()))
    }

    /// Authorises an event against a room state given as ids.
    fn check_against_state(
        &self,
        head: &RoomHead,
        rules: &AuthorizationRules,
        pdu: &Arc<Pdu>,
        state: &StateIds,
    ) -> std::result::Result<(), Refusal> {
        let mut keys =
            state_res::auth_types_for_event(&pdu.kind, &pdu.sender, pdu.state_key.as_deref(), &pdu.content, rules)
                .map_err(|e| Refusal::Rejected(format!("malformed content: {e}")))?;
        keys.push((StateEventType::RoomCreate, String::new()));
        keys.push((StateEventType::RoomPowerLevels, String::new()));
        let events = self.state_events(head, state, keys)?;
        state_res::check_state_dependent_auth_rules(rules, pdu, |kind: &StateEventType, key: &str| {
            events.get(&(kind.clone(), key.to_owned())).cloned()
        })
        .map_err(|e| Refusal::Rejected(e.to_string()))
    }

    /// Whether an event from another server passes its own auth events: checked before this
    /// node asks that server for anything more about it (its missing prev events).
    pub fn precheck_remote(&self, rules: &AuthorizationRules, pdu: &Pdu) -> Result<Option<String>> {
        verdict(self.check_auth_events(rules, &Arc::new(pdu.clone()), |_| None))
    }

    /// Appends a verified remote event whose auth events are stored, and whose prev events are
    /// stored with their state (or whose state before is given). Returns once durable.
    pub async fn append_remote(&self, incoming: Incoming) -> Result<Outcome> {
        let (outcome, durable) = self.append_remote_staged(incoming).await?;
        if let Some(durable) = durable {
            durable.await?;
        }
        Ok(outcome)
    }

    /// [`Rooms::append_remote`] without waiting for the disk: the event is visible to the next
    /// event's checks at once, and the returned future resolves when it is durable. A
    /// transaction awaits all of its events' futures before answering, so they share an fsync.
    pub async fn append_remote_staged(&self, incoming: Incoming) -> Result<(Outcome, Option<Durable>)> {
        let Incoming { pdu, state_before } = incoming;
        let head_lock = self.head(&pdu.room_id)?;
        let mut head = head_lock.lock().await;
        if let Some(stored) = load_stored(&self.db, &pdu.event_id)? {
            if stored.rejected {
                return Ok((Outcome::Rejected("rejected before".into()), None));
            }
            if !stored.outlier || self.has_state_at(&pdu.event_id)? {
                return Ok((Outcome::Known, None));
            }
        }
        // The create event starts the room: once the room has a timeline, it never enters it
        // again. (A peer's gap fill can hand it back, oldest first; appended, it would fork
        // the room from the empty state.)
        if pdu.kind == ruma::events::TimelineEventType::RoomCreate && !head.extremities.is_empty() {
            return Ok((Outcome::Known, None));
        }
        let pdu = Arc::new(pdu);
        let rules = head.rules.clone();
        let mut batch = WriteBatch::new();
        // Its auth events are mostly in the current state: taken from the head, not the store.
        let in_head = head_auth_events(&head, &pdu);
        let from_head = |id: &EventId| in_head.iter().find(|p| p.event_id == id).cloned();
        if let Some(reason) = verdict(self.check_auth_events(&rules.authorization, &pdu, from_head))? {
            self.store_rejected(&pdu, None, batch).await?;
            return Ok((Outcome::Rejected(reason), None));
        }
        let current = head.shared_state_ids();
        let (before, known_id) = match state_before {
            Some(state) => (Arc::new(state), None),
            None => self.state_at_prev_events(&mut head, &rules, &pdu)?,
        };
        // Written as a delta on the current state: a fork's state is mostly the same (and when
        // it is equal, it is the current snapshot).
        let before_id = match known_id {
            Some(id) => id,
            None => self.snapshots.write(&before, Some((head.snapshot, &current)), &mut batch)?,
        };
        if let Some(reason) = verdict(self.check_against_state(&head, &rules.authorization, &pdu, &before))? {
            self.store_rejected(&pdu, Some(before_id), batch).await?;
            return Ok((Outcome::Rejected(reason), None));
        }
        // The room's access rule (policy::access), against the state before the event.
        if let Some(reason) = verdict(self.check_access_rule_at(&head, &pdu, &before))? {
            self.store_rejected(&pdu, Some(before_id), batch).await?;
            return Ok((Outcome::Rejected(reason), None));
        }
        // An alarm from a user the federation list does not allow to raise it (policy::federation).
        if let Some(reason) = self.policy.check_remote_alarm(&pdu) {
            self.store_rejected(&pdu, Some(before_id), batch).await?;
            return Ok((Outcome::Rejected(reason), None));
        }
        // A room being joined has no current state yet: the join is checked against the state
        // the resident server gave.
        let joining = head.extremities.is_empty();
        let soft_failure = if joining {
            None
        } else {
            verdict(self.check_against_state(&head, &rules.authorization, &pdu, &current))?
        };
        if let Some(reason) = soft_failure {
            tracing::info!(event_id = %pdu.event_id, %reason, "soft-failed event");
            let stored = StoredEvent::outlier(&pdu, false)?;
            batch.insert(trees::EVENTS, pdu.event_id.as_bytes().to_vec(), Db::to_json(&stored)?);
            batch.insert(trees::EVENT_STATE, pdu.event_id.as_bytes().to_vec(), before_id.to_vec());
            drop(head);
            self.db.write(batch).await?;
            return Ok((Outcome::SoftFailed, None));
        }

        let power = self.state_events(
            &head,
            &before,
            [(StateEventType::RoomCreate, String::new()), (StateEventType::RoomPowerLevels, String::new())],
        )?;
        let redacts = self.redaction_effect(&rules, &pdu, super::redaction::Origin::Remote, |k, key| {
            power.get(&(k.clone(), key.to_owned())).cloned()
        })?;
        let ticket = self.db.allocate()?;
        self.timeline_rows(&head, &pdu, ticket.pos(), None, Some(before_id), redacts.as_deref(), &mut batch)?;
        let mut extremities: Vec<OwnedEventId> =
            head.extremities.iter().filter(|e| !pdu.prev_events.contains(e)).cloned().collect();
        extremities.push(pdu.event_id.clone());
        // Most events change no state, on forks that all have the current state (a burst of
        // reactions from several servers): the state stays as it is, with nothing to resolve,
        // compare or write, however big the room.
        let unchanged = pdu.state_key.is_none()
            && before_id == head.snapshot
            && self.forks_have_state(&extremities, &pdu.event_id, head.snapshot)?;
        let first_join = if unchanged || extremities.len() == 1 {
            None
        } else {
            self.first_join_on_a_fork(&head, &pdu, &before, &current)?
        };
        let new_state = if unchanged {
            current.clone()
        } else if extremities.len() == 1 {
            Arc::new(state::apply(Arc::unwrap_or_clone(before), &pdu))
        } else {
            match first_join {
                Some(state) if !cfg!(debug_assertions) => Arc::new(state),
                first_join => {
                    let after_event = state::apply(Arc::unwrap_or_clone(before), &pdu);
                    let mut states = vec![after_event];
                    for extremity in extremities.iter().filter(|e| **e != pdu.event_id) {
                        if let Some(state) = self.state_after(extremity)? {
                            states.push(state);
                        }
                    }
                    let resolved = self.resolve_with(&rules, states, Some(&pdu), &head)?;
                    // Debug builds resolve every first join too, and check the shortcut.
                    if let Some(shortcut) = first_join {
                        debug_assert_eq!(shortcut, resolved, "a fork's first join resolves to the state plus the join");
                    }
                    Arc::new(resolved)
                }
            }
        };

        // Write what changed in the current state; each change needs its own stream position.
        let mut extra_tickets = Vec::new();
        let mut changed: Vec<Arc<Pdu>> = Vec::new();
        for (k, id) in new_state.iter().filter(|_| !unchanged) {
            if current.get(k) != Some(id) {
                let event = if *id == pdu.event_id {
                    pdu.clone()
                } else {
                    Arc::new(load_pdu(&self.db, id)?.ok_or_else(|| Error::internal("resolved state event missing"))?)
                };
                changed.push(event);
            }
        }
        for (i, event) in changed.iter().enumerate() {
            let pos = if i == 0 {
                ticket.pos()
            } else {
                let extra = self.db.allocate()?;
                let pos = extra.pos();
                extra_tickets.push(extra);
                pos
            };
            current_state_rows(event, pos, &mut batch)?;
        }
        for (kind, state_key) in current.keys().filter(|k| !unchanged && !new_state.contains_key(*k)) {
            let room = pdu.room_id.as_bytes();
            batch.remove(trees::ROOM_STATE, key(&[room, kind.to_string().as_bytes(), state_key.as_bytes()]));
            head.state.remove(&(kind.clone(), state_key.clone()));
        }
        // Most events change no state: the state after them is one already stored.
        let snapshot = if pdu.state_key.is_none() && extremities.len() == 1 {
            before_id
        } else if unchanged || new_state == current {
            head.snapshot
        } else {
            self.snapshots.write(&new_state, Some((head.snapshot, &current)), &mut batch)?
        };
        for event in &changed {
            if let Some(state_key) = &event.state_key {
                head.state.insert((event.state_event_type(), state_key.clone()), event.clone());
            }
        }
        head.extremities = extremities;
        head.depth = head.depth.max(u64::from(pdu.depth));
        head.snapshot = snapshot;
        batch.insert(trees::ROOMS, pdu.room_id.as_bytes().to_vec(), Db::to_json(&head.meta())?);
        let room_id = pdu.room_id.clone();
        let staged = self.db.stage_ticket(ticket, batch);
        drop(head);
        // The head stays held until the write is durable, so it cannot leave the cache before.
        let (streams, heads, held) = (self.db.streams.clone(), self.heads.clone(), head_lock.clone());
        // A task of its own finishes the tickets, so a dropped future cannot stall the stream.
        let (tx, rx) = tokio::sync::oneshot::channel();
        tokio::spawn(async move {
            let result = staged.await;
            for extra in extra_tickets {
                streams.finish(extra);
            }
            if result.is_err() {
                // The head ran ahead of the store: reload it from what is on disk.
                heads.remove(&room_id);
            }
            drop(held);
            let _ = tx.send(result.map(|_| ()));
        });
        let durable: Durable =
            Box::pin(async move { rx.await.map_err(|_| Error::internal("the commit task stopped"))? });
        Ok((Outcome::Accepted, Some(durable)))
    }

    /// The state before a received event, from its prev events, and the id of the snapshot it
    /// is already stored as, if it is one. An event built on exactly this node's extremities
    /// (the common case) has the current state before it, which the head holds in memory.
    fn state_at_prev_events(
        &self,
        head: &mut RoomHead,
        rules: &RoomVersionRules,
        pdu: &Pdu,
    ) -> Result<(Arc<StateIds>, Option<state::SnapshotId>)> {
        let prevs: HashSet<&OwnedEventId> = pdu.prev_events.iter().collect();
        if !prevs.is_empty() && prevs == head.extremities.iter().collect() {
            return Ok((head.shared_state_ids(), Some(head.snapshot)));
        }
        // Prev events that change no state, all in one state (another server's fork of a
        // room whose state did not change): that state, read by id, with nothing to resolve.
        if let Some(id) = self.common_snapshot_after(&pdu.prev_events)? {
            let state = if id == head.snapshot { head.shared_state_ids() } else { self.snapshot(&id)? };
            return Ok((state, Some(id)));
        }
        let mut states = Vec::with_capacity(pdu.prev_events.len());
        let mut ids = Vec::with_capacity(pdu.prev_events.len());
        for prev in &pdu.prev_events {
            let (state, id) = self
                .state_after_with_id(prev)?
                .ok_or_else(|| Error::internal(format!("state at prev event {prev} unknown")))?;
            states.push(state);
            ids.push(id);
        }
        if let ([_], [id]) = (states.as_slice(), ids.as_slice()) {
            let id = *id;
            return Ok((Arc::new(states.pop().unwrap_or_default()), id));
        }
        Ok((Arc::new(self.resolve(rules, states, head)?), None))
    }

    /// The one snapshot that is the state after every event of `events`, if they all change no
    /// state and share it.
    fn common_snapshot_after(&self, events: &[OwnedEventId]) -> Result<Option<state::SnapshotId>> {
        let mut common = None;
        for event in events {
            match self.snapshot_id_after(event)? {
                Some(id) if common.is_none_or(|c| c == id) => common = Some(id),
                _ => return Ok(None),
            }
        }
        Ok(common)
    }

    /// Whether every extremity but `new` has `snapshot` as its state after.
    fn forks_have_state(
        &self,
        extremities: &[OwnedEventId],
        new: &EventId,
        snapshot: state::SnapshotId,
    ) -> Result<bool> {
        for extremity in extremities.iter().filter(|e| *e != new) {
            if self.snapshot_id_after(extremity)? != Some(snapshot) {
                return Ok(false);
            }
        }
        Ok(true)
    }

    async fn store_rejected(
        &self,
        pdu: &Pdu,
        state_before: Option<state::SnapshotId>,
        mut batch: WriteBatch,
    ) -> Result<()> {
        tracing::info!(event_id = %pdu.event_id, "rejected event");
        let stored = StoredEvent::outlier(pdu, true)?;
        batch.insert(trees::EVENTS, pdu.event_id.as_bytes().to_vec(), Db::to_json(&stored)?);
        if let Some(id) = state_before {
            batch.insert(trees::EVENT_STATE, pdu.event_id.as_bytes().to_vec(), id.to_vec());
        }
        self.db.write(batch).await
    }
}

/// The current state's events that an event's auth events usually are: the create event, the
/// power levels, the join rules, and the sender's and the target's membership.
fn head_auth_events(head: &RoomHead, pdu: &Pdu) -> Vec<Arc<Pdu>> {
    let mut keys = vec![
        (StateEventType::RoomCreate, String::new()),
        (StateEventType::RoomPowerLevels, String::new()),
        (StateEventType::RoomJoinRules, String::new()),
        (StateEventType::RoomMember, pdu.sender.to_string()),
    ];
    if pdu.kind == ruma::events::TimelineEventType::RoomMember
        && let Some(target) = &pdu.state_key
    {
        keys.push((StateEventType::RoomMember, target.clone()));
    }
    keys.iter().filter_map(|k| head.state.get(k).cloned()).collect()
}
