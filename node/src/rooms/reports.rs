//! Reports by users to the node's admins: of an event they can see
//! (`POST /rooms/{roomId}/report/{eventId}`), of a room (`POST /rooms/{roomId}/report`) and of a
//! user (`POST /users/{userId}/report`). Kept oldest first for the admin API and logged when they
//! arrive; the handlers also post each one to the admin room.

use ruma::{OwnedEventId, OwnedRoomId, OwnedUserId, UserId};
use serde::{Deserialize, Serialize};
use tocsin_store::WriteBatch;

use super::Rooms;
use crate::{
    error::Result,
    store::{Db, key, trees},
};

/// What a report is about.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Subject {
    /// An event, and who sent it.
    Event {
        room_id: OwnedRoomId,
        event_id: OwnedEventId,
        sender: OwnedUserId,
    },
    Room {
        room_id: OwnedRoomId,
    },
    User {
        user_id: OwnedUserId,
    },
}

impl Subject {
    /// The store key's middle part: the ids that name the subject.
    fn key_parts(&self) -> Vec<&[u8]> {
        match self {
            Subject::Event { room_id, event_id, .. } => vec![room_id.as_bytes(), event_id.as_bytes()],
            Subject::Room { room_id } => vec![room_id.as_bytes()],
            Subject::User { user_id } => vec![user_id.as_bytes()],
        }
    }
}

impl std::fmt::Display for Subject {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Subject::Event { room_id, event_id, sender } => {
                write!(f, "event {event_id} in {room_id} (sent by {sender})")
            }
            Subject::Room { room_id } => write!(f, "room {room_id}"),
            Subject::User { user_id } => write!(f, "user {user_id}"),
        }
    }
}

/// One report, as the admin API lists it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    #[serde(flatten)]
    pub subject: Subject,
    pub reporter: OwnedUserId,
    pub reason: Option<String>,
    pub received_ts: u64,
}

/// The longest reason kept; a longer one is cut (the report itself is what matters).
const MAX_REASON_CHARS: usize = 1000;

impl Rooms {
    /// Records a report. The caller has checked that the reporter may report the subject.
    pub async fn report(&self, subject: Subject, reporter: &UserId, reason: Option<&str>) -> Result<Report> {
        let received_ts = crate::users::now_ms();
        let report = Report {
            subject,
            reporter: reporter.to_owned(),
            reason: reason.map(|r| r.chars().take(MAX_REASON_CHARS).collect()),
            received_ts,
        };
        let ts = received_ts.to_be_bytes();
        let mut parts: Vec<&[u8]> = vec![&ts];
        parts.extend(report.subject.key_parts());
        parts.push(reporter.as_bytes());
        let mut batch = WriteBatch::new();
        batch.insert(trees::REPORTS, key(&parts), Db::to_json(&report)?);
        self.db.write(batch).await?;
        tracing::warn!(subject = %report.subject, %reporter, "content reported");
        Ok(report)
    }

    /// Up to `limit` reports, oldest first.
    pub fn reports(&self, limit: usize) -> Result<Vec<Report>> {
        let mut out = Vec::new();
        for (_, value) in self.db.scan_prefix(trees::REPORTS, b"", limit)? {
            out.push(serde_json::from_slice(&value).map_err(crate::Error::internal)?);
        }
        Ok(out)
    }
}
