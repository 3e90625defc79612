//! An alarm's status: as JSON for the admin API and the CLI, and as the text of the status
//! message in the room.

use ruma::{OwnedEventId, OwnedRoomId, OwnedUserId};
use serde::{Deserialize, Serialize};
use tocsin_events::AlarmLevel;

use super::{AlarmRecord, Alarms, Step};
use crate::{error::Result, store::trees};

/// How many waiting users the status message names before "and N more".
const NAMED_IN_TEXT: usize = 20;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UserMark {
    pub user_id: OwnedUserId,
    pub ts: u64,
}

/// `GET /_tocsin/admin/alarms/{id}` and `tocsin-node alarm status ID`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AlarmStatus {
    pub id: String,
    pub event_id: OwnedEventId,
    pub room_id: OwnedRoomId,
    pub sender: OwnedUserId,
    pub level: AlarmLevel,
    pub body: String,
    pub ts: u64,
    pub ack_required: bool,
    /// When the reminder is due (ms since the epoch).
    pub remind_at: u64,
    /// When escalation is due.
    pub escalate_at: u64,
    pub expires: Option<u64>,
    pub expected: Vec<OwnedUserId>,
    pub acknowledged: Vec<UserMark>,
    pub read: Vec<UserMark>,
    /// Expected users who have not acknowledged.
    pub waiting: Vec<OwnedUserId>,
    pub status_event_id: Option<OwnedEventId>,
    pub steps: Vec<Step>,
    /// Why escalation stopped (`acknowledged`, `cancelled`, `redacted`, `expired`,
    /// `no_ack_required`); `null` while the alarm is open.
    pub closed: Option<String>,
}

impl AlarmStatus {
    pub fn build(alarms: &Alarms, record: &AlarmRecord, now: u64) -> Result<Self> {
        let progress = alarms.progress(&record.event_id)?;
        let acks = alarms.marks(trees::ALARM_ACKS, &record.event_id)?;
        let reads = alarms.marks(trees::ALARM_READS, &record.event_id)?;
        let acked: std::collections::HashSet<&OwnedUserId> = acks.iter().map(|(user_id, _)| user_id).collect();
        let waiting: Vec<OwnedUserId> = record.expected.iter().filter(|u| !acked.contains(u)).cloned().collect();
        let closed = match progress.closed.clone() {
            Some(reason) => Some(reason),
            None => closing_reason(alarms, record, waiting.is_empty(), now)?,
        };
        let remind_at = record.ts.saturating_add(record.deadline_s.saturating_mul(1000));
        Ok(AlarmStatus {
            id: record.id.clone(),
            event_id: record.event_id.clone(),
            room_id: record.room_id.clone(),
            sender: record.sender.clone(),
            level: record.level,
            body: record.body.clone(),
            ts: record.ts,
            ack_required: record.ack_required,
            remind_at,
            escalate_at: remind_at.saturating_add(record.escalate_after_s.saturating_mul(1000)),
            expires: record.expires,
            expected: record.expected.clone(),
            acknowledged: acks.into_iter().map(|(user_id, m)| UserMark { user_id, ts: m.ts }).collect(),
            read: reads.into_iter().map(|(user_id, m)| UserMark { user_id, ts: m.ts }).collect(),
            waiting,
            status_event_id: progress.status_event_id,
            steps: progress.steps,
            closed,
        })
    }

    /// The status message's text.
    pub fn text(&self) -> String {
        let total = self.expected.len();
        let acked = total - self.waiting.len();
        let mut out = format!("Alarm status ({}): {acked} of {total} acknowledged", self.level);
        if !self.read.is_empty() {
            out.push_str(&format!(", {} read", self.read.len()));
        }
        match self.closed.as_deref() {
            Some("acknowledged") => out = format!("Alarm status ({}): all {total} acknowledged ✅", self.level),
            Some("cancelled") => out.push_str("; the alarm was cancelled"),
            Some("redacted") => out.push_str("; the alarm was withdrawn"),
            Some("expired") => out.push_str("; the alarm has expired"),
            Some("no_ack_required") if total > 0 => out.push_str("; no acknowledgement required"),
            _ => {}
        }
        if self.closed.as_deref() != Some("acknowledged") && !self.waiting.is_empty() {
            let named: Vec<&str> = self.waiting.iter().take(NAMED_IN_TEXT).map(|u| u.as_str()).collect();
            out.push_str(&format!("; waiting for: {}", named.join(", ")));
            if self.waiting.len() > NAMED_IN_TEXT {
                out.push_str(&format!(" and {} more", self.waiting.len() - NAMED_IN_TEXT));
            }
        }
        for step in &self.steps {
            out.push_str(&format!("\n• {}", step.detail));
        }
        out
    }
}

/// Whether the alarm's own events or the clock close it now.
pub(crate) fn closing_reason(
    alarms: &Alarms,
    record: &AlarmRecord,
    all_acked: bool,
    now: u64,
) -> Result<Option<String>> {
    if let Some(ended) = alarms.ended(&record.event_id)? {
        return Ok(Some(ended.reason));
    }
    if all_acked {
        return Ok(Some(if record.ack_required { "acknowledged" } else { "no_ack_required" }.to_owned()));
    }
    if !record.ack_required {
        return Ok(Some("no_ack_required".to_owned()));
    }
    if record.expires.is_some_and(|e| e <= now) {
        return Ok(Some("expired".to_owned()));
    }
    Ok(None)
}
