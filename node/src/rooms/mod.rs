//! Rooms: building, signing and authorising PDUs, the room state and the timeline.
//!
//! Each room has a [`RoomHead`] in memory: its current state (as PDUs), its forward extremities
//! and depth. Appending an event locks the head only while the event is built, authorised and
//! queued for the store; waiting for durability happens after the lock is released, so many
//! senders in one room share an fsync instead of queueing for one each.

mod backfill;
mod build;
pub mod head;
mod incoming;
mod lifecycle;
mod pdu;
pub mod power;
pub mod read;
mod receipts;
mod redaction;
mod remote;
pub mod reports;
mod resolve;
pub mod retention;
pub mod snapshots;
pub mod state;
pub mod summary;
pub mod threads;
mod timestamp;
mod upgrade;
pub mod version;
pub mod visibility;

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

pub use build::{NewEvent, TxnRef, relates_to};
pub use head::{LocalMembers, RoomHead};
pub use incoming::{Durable, Incoming, Outcome};
pub use lifecycle::{CreateRoom, Preset, member_content};
pub use pdu::Pdu;
pub use read::{StoredEvent, UserRoom};
pub use receipts::Receipt;
use ruma::{OwnedRoomId, OwnedServerName, RoomId};
pub use state::StateIds;

use crate::{
    error::{Error, Result},
    keys::ServerKeys,
    store::Db,
};

pub struct Rooms {
    db: Db,
    server_name: OwnedServerName,
    keys: ServerKeys,
    policy: Arc<crate::policy::PolicyGate>,
    outbox: crate::federation::sender::Outbox,
    /// Alarm tracking's hook on every event and receipt (`alarms::track`).
    alarms: crate::alarms::track::Tracker,
    heads: Arc<Mutex<HashMap<OwnedRoomId, Arc<tokio::sync::Mutex<RoomHead>>>>>,
    snapshots: Arc<snapshots::Snapshots>,
    /// How long each state resolution of states that differ took (`/_tocsin/metrics`).
    resolutions: crate::metrics::Histogram,
    /// Forks' first joins of a user that need no resolution (`Rooms::first_join_on_a_fork`).
    first_joins: crate::metrics::Counter,
}

/// `tocsin_state_resolution_seconds`' buckets: from a fork of a few events to a partition's.
const RESOLUTION_BUCKETS: &[f64] = &[0.001, 0.005, 0.025, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0];

impl Rooms {
    pub fn new(
        db: Db,
        server_name: OwnedServerName,
        keys: ServerKeys,
        policy: Arc<crate::policy::PolicyGate>,
        outbox: crate::federation::sender::Outbox,
        alarms: crate::alarms::track::Tracker,
        metrics: &crate::metrics::Registry,
    ) -> Self {
        let snapshots = Arc::new(snapshots::Snapshots::new(db.clone()));
        let resolutions = metrics.histogram(
            "tocsin_state_resolution_seconds",
            "Time of one state resolution between room states that differ (forks, a healed partition).",
            RESOLUTION_BUCKETS,
            &[],
        );
        let first_joins = metrics.counter(
            "tocsin_state_first_joins_unresolved_total",
            "A fork's first joins of a user that need no state resolution (release builds add them without one).",
            &[],
        );
        Self {
            db,
            server_name,
            keys,
            policy,
            outbox,
            alarms,
            heads: Arc::default(),
            snapshots,
            resolutions,
            first_joins,
        }
    }

    pub fn server_name(&self) -> &ruma::ServerName {
        &self.server_name
    }

    /// The room's head, loaded from the store on first use. `NotFound` if the room is unknown.
    pub fn head(&self, room_id: &RoomId) -> Result<Arc<tokio::sync::Mutex<RoomHead>>> {
        if let Some(h) = self.heads.lock().map_err(|_| Error::internal("room cache poisoned"))?.get(room_id) {
            return Ok(h.clone());
        }
        let head = RoomHead::load(&self.db, room_id)?.ok_or_else(|| Error::not_found("unknown room"))?;
        let mut heads = self.heads.lock().map_err(|_| Error::internal("room cache poisoned"))?;
        Ok(heads.entry(room_id.to_owned()).or_insert_with(|| Arc::new(tokio::sync::Mutex::new(head))).clone())
    }

    pub fn exists(&self, room_id: &RoomId) -> Result<bool> {
        match self.head(room_id) {
            Ok(_) => Ok(true),
            Err(Error::NotFound(_)) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Whether an admin shut the room down: it then takes nothing from this node's users but
    /// their leaving, and nobody here may join it again.
    pub fn is_shut_down(&self, room_id: &RoomId) -> Result<bool> {
        Ok(self.db.get(crate::store::trees::SHUT_DOWN_ROOMS, room_id.as_bytes())?.is_some())
    }

    /// Drops the cached head so the next use reloads it from the store (after a failed write).
    fn evict(&self, room_id: &RoomId) {
        if let Ok(mut heads) = self.heads.lock() {
            heads.remove(room_id);
        }
    }

    /// Installs the head of a room being created, unless a room with that id exists (in memory
    /// or in the store): `None` then.
    pub(crate) fn claim_new_head(&self, head: RoomHead) -> Result<Option<Arc<tokio::sync::Mutex<RoomHead>>>> {
        let room_id = head.room_id.clone();
        if self.db.get(crate::store::trees::ROOMS, room_id.as_bytes())?.is_some() {
            return Ok(None);
        }
        let mut heads = self.heads.lock().map_err(|_| Error::internal("room cache poisoned"))?;
        if heads.contains_key(&room_id) {
            return Ok(None);
        }
        let head = Arc::new(tokio::sync::Mutex::new(head));
        heads.insert(room_id, head.clone());
        Ok(Some(head))
    }

    pub(crate) fn insert_head(&self, head: RoomHead) -> Result<Arc<tokio::sync::Mutex<RoomHead>>> {
        let room_id = head.room_id.clone();
        let head = Arc::new(tokio::sync::Mutex::new(head));
        self.heads.lock().map_err(|_| Error::internal("room cache poisoned"))?.insert(room_id, head.clone());
        Ok(head)
    }
}
