//! Room state at every event (resolution across forks is in `rooms::resolve`).
//!
//! Each event records the state *before* it as a snapshot id (stored by `rooms::snapshots`).
//! Messages share the snapshot of the state they were sent in, so only state events write a new
//! one. This is what `/state_ids`, the auth check against the state before an incoming event,
//! and state resolution read.

use std::sync::Arc;

use ruma::EventId;

use super::{Pdu, Rooms, snapshots::Snapshots};
use crate::{
    error::{Error, Result},
    store::trees,
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
        if let Some(id) = self.snapshots.known_after(event_id) {
            return Ok(Some(id));
        }
        let Some(id) = self.snapshot_id_before(event_id)? else { return Ok(None) };
        let Some(stored) = self.stored_event(event_id)? else { return Ok(None) };
        let after = if stored.rejected || !stored.pdu.contains_key("state_key") {
            Some(id)
        } else {
            let pdu = stored.into_pdu(event_id)?;
            self.delta_after(&id, &pdu)?
        };
        // `None` may turn into a snapshot once the event's delta is written: not kept.
        if let Some(after) = after {
            self.snapshots.remember_after(event_id, after);
        }
        Ok(after)
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

    /// Whether the state after `event_id` holds `key`; `None` when that state is not known.
    pub(super) fn state_after_has(&self, event_id: &EventId, key: &super::head::StateKey) -> Result<Option<bool>> {
        let Some((_, before)) = self.snapshot_before(event_id)? else { return Ok(None) };
        if before.contains_key(key) {
            return Ok(Some(true));
        }
        let Some(stored) = self.stored_event(event_id)? else { return Ok(None) };
        if stored.rejected {
            return Ok(Some(false));
        }
        let pdu = stored.into_pdu(event_id)?;
        Ok(Some(pdu.state_key.as_deref() == Some(key.1.as_str()) && pdu.state_event_type() == key.0))
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
}
