//! Rooms: building, signing and authorising PDUs, the room state and the timeline.
//!
//! Each room has a [`RoomHead`] in memory: its current state (as PDUs), its forward extremities
//! and depth. Appending an event locks the head only while the event is built, authorised and
//! queued for the store; waiting for durability happens after the lock is released, so many
//! senders in one room share an fsync instead of queueing for one each.

mod backfill;
mod build;
pub mod head;
mod head_cache;
mod incoming;
mod lifecycle;
mod pdu;
pub mod power;
pub mod read;
mod receipts;
mod recent;
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

use std::sync::Arc;

pub use build::{NewEvent, TxnRef, relates_to};
pub use head::{LocalMembers, RoomHead};
pub use head_cache::SharedHead;
pub use incoming::{Durable, Incoming, Outcome};
pub use lifecycle::{CreateRoom, Preset, member_content};
pub use pdu::Pdu;
pub use read::{StoredEvent, UserRoom};
pub use receipts::Receipt;
use ruma::{OwnedServerName, RoomId};
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
    heads: Arc<head_cache::HeadCache>,
    snapshots: Arc<snapshots::Snapshots>,
    /// Parsed copies of the events read last (timeline reads).
    recent: Arc<recent::RecentEvents>,
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
            heads: Arc::new(head_cache::HeadCache::new(crate::config::ops::DEFAULT_ROOM_HEADS_IN_MEMORY)),
            snapshots,
            recent: Arc::default(),
            resolutions,
            first_joins,
        }
    }

    /// Keeps at most `capacity` idle room heads in memory (`room_heads_in_memory`).
    #[must_use]
    pub fn with_head_capacity(mut self, capacity: usize) -> Self {
        self.heads = Arc::new(head_cache::HeadCache::new(capacity));
        self
    }

    pub fn server_name(&self) -> &ruma::ServerName {
        &self.server_name
    }

    /// The room's head, loaded from the store on first use. `NotFound` if the room is unknown.
    pub fn head(&self, room_id: &RoomId) -> Result<SharedHead> {
        if let Some(head) = self.heads.get(room_id)? {
            return Ok(head);
        }
        let head = RoomHead::load(&self.db, room_id)?.ok_or_else(|| Error::not_found("unknown room"))?;
        self.heads.get_or_insert(room_id, head)
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
        self.heads.remove(room_id);
    }

    /// Installs the head of a room being created, unless a room with that id exists (in memory
    /// or in the store): `None` then.
    pub(crate) fn claim_new_head(&self, head: RoomHead) -> Result<Option<SharedHead>> {
        if self.db.get(crate::store::trees::ROOMS, head.room_id.as_bytes())?.is_some() {
            return Ok(None);
        }
        self.heads.claim(head)
    }

    pub(crate) fn insert_head(&self, head: RoomHead) -> Result<SharedHead> {
        self.heads.replace(head)
    }
}
