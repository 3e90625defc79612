//! Alarm tracking: who must acknowledge an alarm, who read and who acknowledged it, the status
//! message everyone sees, and escalation when the deadline passes.
//!
//! An alarm is an `m.room.message` carrying [`tocsin_events::AlarmBlock`]. The node of the
//! alarm's sender tracks it; the other nodes only carry the events. Everything rides on the one
//! path every event takes into the timeline (`Rooms::timeline_rows`, local and received alike)
//! and on the one path every read receipt takes (`Rooms::set_receipt`), so acknowledgements and
//! receipts from users of other nodes count like local ones:
//!
//! - [`track`] writes, in the same batch as the event: the alarm record with its expected
//!   recipients (the room's joined members then, less the sender and bots), each
//!   acknowledgement (a reaction or a reply to the alarm), each read (a public read receipt at or
//!   after the alarm) and the end of the alarm (a cancelling edit or a redaction).
//! - [`worker`] keeps the status message current and runs the escalation steps, persisting each
//!   step in [`Progress`] so a restart resumes where it stopped; `escalation` picks the room an
//!   alarm escalates into (its room's, else its sender's role's, else the node's).
//! - [`view`] is the status as JSON (admin API, CLI) and as text (the status message).

pub mod command;
mod escalation;
pub mod remote;
pub mod track;
pub mod view;
mod webhook;
pub mod worker;

use std::sync::Arc;

use ruma::{OwnedEventId, OwnedRoomId, OwnedUserId};
use serde::{Deserialize, Serialize};
use tocsin_events::AlarmLevel;

use crate::{
    error::{Error, Result},
    store::{Db, key, prefix, trees},
};

/// Localparts of the node's own accounts: never expected to acknowledge.
pub const NODE_ACCOUNTS: &[&str] = &[crate::admin::notices::NOTICE_USER, crate::policy::provision::PROVISIONER];

/// An alarm as raised: written once, when the alarm enters the timeline.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AlarmRecord {
    /// The `id` of the alarm block.
    pub id: String,
    pub event_id: OwnedEventId,
    pub room_id: OwnedRoomId,
    pub sender: OwnedUserId,
    pub level: AlarmLevel,
    /// The alarm's text (`body`), for the reminder and the escalation.
    pub body: String,
    /// `origin_server_ts` of the alarm, in ms.
    pub ts: u64,
    /// Stream position of the alarm: a read receipt at or after it counts as read.
    pub pos: u64,
    pub ack_required: bool,
    /// Seconds from the alarm to the reminder.
    pub deadline_s: u64,
    /// Seconds from the reminder to escalation.
    pub escalate_after_s: u64,
    /// Expiry in ms since the epoch.
    pub expires: Option<u64>,
    /// The room's joined members at the alarm, less the sender and bots, sorted.
    pub expected: Vec<OwnedUserId>,
}

/// A read or an acknowledgement.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Mark {
    pub ts: u64,
    /// The reaction, reply or receipted event.
    pub event_id: OwnedEventId,
}

/// Why an alarm stopped (from its events: a cancel or a redaction).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Ended {
    pub reason: String,
    pub ts: u64,
    pub event_id: OwnedEventId,
}

/// One escalation step taken, for the status.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Step {
    /// `reminder`, `escalation_room`, `webhook`.
    pub step: String,
    pub ts: u64,
    pub detail: String,
}

/// A webhook call still to make.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PendingCall {
    pub url: String,
    /// Index in `[[alarms.webhook]]` when queued (the secret is read from the policy at call
    /// time, so it never sits in the store).
    pub index: usize,
    pub attempts: u32,
    pub next_at: u64,
    pub body: String,
}

/// What the worker did for an alarm. Written only by the worker.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Progress {
    pub status_event_id: Option<OwnedEventId>,
    pub status_text: Option<String>,
    pub status_edited_at: u64,
    pub reminded_at: Option<u64>,
    pub escalated_at: Option<u64>,
    pub pending_calls: Vec<PendingCall>,
    pub steps: Vec<Step>,
    /// `acknowledged`, `cancelled`, `redacted`, `expired` or `no_ack_required`: escalation has
    /// stopped for good.
    pub closed: Option<String>,
}

/// How many parsed alarm records [`RecordCache`] keeps: the alarms still drawing reactions.
const RECORD_CACHE_SIZE: usize = 64;

/// Alarm records, parsed once. A record never changes once written, and without this the
/// record of a 5,000-recipient alarm was parsed again for every reaction and read receipt.
#[derive(Default)]
pub(crate) struct RecordCache {
    inner: std::sync::Mutex<std::collections::HashMap<OwnedEventId, Arc<AlarmRecord>>>,
}

impl RecordCache {
    fn lock(&self) -> std::sync::MutexGuard<'_, std::collections::HashMap<OwnedEventId, Arc<AlarmRecord>>> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The record of the alarm whose event is `event_id`, if it is one.
    pub(crate) fn get(&self, db: &Db, event_id: &ruma::EventId) -> Result<Option<Arc<AlarmRecord>>> {
        if let Some(record) = self.lock().get(event_id) {
            return Ok(Some(record.clone()));
        }
        let Some(bytes) = db.get(trees::ALARMS, event_id.as_bytes())? else { return Ok(None) };
        Ok(Some(self.parsed(event_id, &bytes, true)?))
    }

    /// The record stored as `bytes`, parsed unless it is cached. A scan of every record
    /// (`keep` false) leaves the cache to the alarms that events touch.
    fn parsed(&self, event_id: &ruma::EventId, bytes: &[u8], keep: bool) -> Result<Arc<AlarmRecord>> {
        if let Some(record) = self.lock().get(event_id) {
            return Ok(record.clone());
        }
        let record: Arc<AlarmRecord> = Arc::new(serde_json::from_slice(bytes).map_err(Error::internal)?);
        if !keep {
            return Ok(record);
        }
        let mut inner = self.lock();
        if inner.len() >= RECORD_CACHE_SIZE {
            inner.clear();
        }
        inner.insert(event_id.to_owned(), record.clone());
        Ok(record)
    }
}

/// The alarm service: reads for the admin API and the CLI; the worker is in [`worker`].
#[derive(Clone)]
pub struct Alarms {
    db: Db,
    wake: Arc<tokio::sync::Notify>,
    records: Arc<RecordCache>,
}

impl Alarms {
    pub fn new(db: Db) -> Self {
        Self { db, wake: Arc::new(tokio::sync::Notify::new()), records: Arc::default() }
    }

    /// The hook `Rooms` calls on every event and receipt.
    pub fn tracker(
        &self,
        server_name: ruma::OwnedServerName,
        policy: Arc<crate::policy::PolicyGate>,
    ) -> track::Tracker {
        track::Tracker::new(server_name, policy, self.wake.clone(), self.records.clone())
    }

    pub(crate) fn wake_handle(&self) -> Arc<tokio::sync::Notify> {
        self.wake.clone()
    }

    /// The record of the alarm with block id `id`, or whose event id is `id`.
    pub fn find(&self, id: &str) -> Result<Option<Arc<AlarmRecord>>> {
        let event_id = match self.db.get(trees::ALARM_IDS, id.as_bytes())? {
            Some(bytes) => crate::store::utf8(&bytes)?.to_owned(),
            None => id.to_owned(),
        };
        // Not an event id: no alarm has it.
        let Ok(event_id) = ruma::EventId::parse(event_id) else { return Ok(None) };
        self.records.get(&self.db, &event_id)
    }

    pub fn progress(&self, event_id: &ruma::EventId) -> Result<Progress> {
        Ok(self.db.get_json(trees::ALARM_PROGRESS, event_id.as_bytes())?.unwrap_or_default())
    }

    pub fn ended(&self, event_id: &ruma::EventId) -> Result<Option<Ended>> {
        self.db.get_json(trees::ALARM_ENDS, event_id.as_bytes())
    }

    /// Acknowledgements or reads (`tree`) of an alarm, by user.
    pub(crate) fn marks(&self, tree: &'static str, event_id: &ruma::EventId) -> Result<Vec<(OwnedUserId, Mark)>> {
        let mut out = Vec::new();
        for (k, v) in self.db.scan_prefix(tree, &prefix(&[event_id.as_bytes()]), usize::MAX)? {
            let parts = crate::store::split(&k);
            let Some(user) = parts.get(1) else { continue };
            let user = OwnedUserId::try_from(crate::store::utf8(user)?).map_err(Error::internal)?;
            let mark: Mark = serde_json::from_slice(&v).map_err(Error::internal)?;
            out.push((user, mark));
        }
        Ok(out)
    }

    /// Every alarm record (open and closed), oldest first by event id order.
    pub fn records(&self) -> Result<Vec<Arc<AlarmRecord>>> {
        let mut out = Vec::new();
        for (k, v) in self.db.scan_prefix(trees::ALARMS, &[], usize::MAX)? {
            let event_id = ruma::EventId::parse(crate::store::utf8(&k)?).map_err(Error::internal)?;
            out.push(self.records.parsed(&event_id, &v, false)?);
        }
        Ok(out)
    }

    /// The full status of one alarm (admin API, CLI).
    pub fn status(&self, id: &str) -> Result<view::AlarmStatus> {
        let record = self.find(id)?.ok_or_else(|| Error::not_found(format!("no alarm {id} on this node")))?;
        view::AlarmStatus::build(self, &record, crate::users::now_ms())
    }

    /// The status of every alarm that is still open.
    pub fn open(&self) -> Result<Vec<view::AlarmStatus>> {
        let now = crate::users::now_ms();
        let mut out = Vec::new();
        for record in self.records()? {
            let status = view::AlarmStatus::build(self, &record, now)?;
            if status.closed.is_none() {
                out.push(status);
            }
        }
        out.sort_by_key(|s| s.ts);
        Ok(out)
    }
}

/// `ALARM_ACKS` / `ALARM_READS` key.
pub(crate) fn mark_key(alarm: &ruma::EventId, user: &ruma::UserId) -> Vec<u8> {
    key(&[alarm.as_bytes(), user.as_bytes()])
}

/// The device the alarm worker's transaction ids are scoped to.
const DEVICE: &str = "TOCSIN_ALARMS";

/// A transaction id of the alarm worker's own messages (status, reminders, escalation), so a
/// step retried after a restart is sent once.
fn txn(id: String) -> crate::rooms::TxnRef {
    crate::rooms::TxnRef { device_id: DEVICE.into(), txn_id: id, endpoint: "send" }
}
