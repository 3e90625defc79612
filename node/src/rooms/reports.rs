//! Reports of events by the users who can see them (`POST /rooms/{roomId}/report/{eventId}`):
//! kept for the node's admins, oldest first, and logged when they arrive.

use ruma::{EventId, OwnedEventId, OwnedRoomId, OwnedUserId, RoomId, UserId};
use serde::{Deserialize, Serialize};
use tocsin_store::WriteBatch;

use super::Rooms;
use crate::{
    error::Result,
    store::{Db, key, trees},
};

/// One report, as the admin API lists it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    pub room_id: OwnedRoomId,
    pub event_id: OwnedEventId,
    pub reporter: OwnedUserId,
    /// Who sent the reported event.
    pub sender: OwnedUserId,
    pub reason: Option<String>,
    pub received_ts: u64,
}

/// The longest reason kept; a longer one is cut (the report itself is what matters).
const MAX_REASON_CHARS: usize = 1000;

impl Rooms {
    /// Records a report. The caller has checked that the reporter may see the event.
    pub async fn report(
        &self,
        room_id: &RoomId,
        event_id: &EventId,
        reporter: &UserId,
        sender: &UserId,
        reason: Option<&str>,
    ) -> Result<Report> {
        let received_ts = crate::users::now_ms();
        let report = Report {
            room_id: room_id.to_owned(),
            event_id: event_id.to_owned(),
            reporter: reporter.to_owned(),
            sender: sender.to_owned(),
            reason: reason.map(|r| r.chars().take(MAX_REASON_CHARS).collect()),
            received_ts,
        };
        let mut batch = WriteBatch::new();
        batch.insert(
            trees::REPORTS,
            key(&[&received_ts.to_be_bytes(), room_id.as_bytes(), event_id.as_bytes(), reporter.as_bytes()]),
            Db::to_json(&report)?,
        );
        self.db.write(batch).await?;
        tracing::warn!(%room_id, %event_id, %reporter, %sender, "content reported");
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
