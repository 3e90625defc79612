//! The retention purge: a background task that deletes the bodies of the events rooms'
//! `m.room.retention` lets expire.
//!
//! For each expired message event (see [`Retention::expired`]) one batch removes its timeline
//! row, the relation row it added, the record of its redaction, and replaces its stored JSON with
//! the redacted skeleton (no content), marked in `PURGED`. State events and forward extremities
//! are never touched. The room's head is locked while a room is purged, so local sends and
//! inbound events do not interleave with it.

use std::{sync::Arc, time::Duration};

use ruma::{EventId, OwnedRoomId, RoomId};
use tocsin_store::WriteBatch;

use super::Retention;
use crate::{
    Services,
    error::{Error, Result},
    rooms::{Rooms, StoredEvent, build::relates_to, read::load_stored},
    store::{Db, key, pos_bytes, pos_suffix, prefix, trees, utf8},
};

/// The slowest the purge runs when no configured interval applies.
const MAX_INTERVAL: Duration = Duration::from_secs(600);
/// The fastest it runs.
const MIN_INTERVAL: Duration = Duration::from_secs(1);
/// Writes per store batch: a first purge of a long history is committed in pieces.
const MAX_BATCH: usize = 4_096;

/// What one purge run did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct PurgeReport {
    /// Rooms with a retention limit that were looked at.
    pub rooms: usize,
    /// Events whose body was deleted.
    pub purged: usize,
    /// The shortest `max_lifetime` among them, in ms.
    pub shortest_lifetime_ms: Option<u64>,
}

impl Rooms {
    /// Purges every room with a retention limit once.
    pub async fn purge_expired(&self) -> Result<PurgeReport> {
        let mut report = PurgeReport::default();
        for room_id in self.room_ids()? {
            let (lifetime, purged) = self.purge_room(&room_id).await?;
            if let Some(ms) = lifetime {
                report.rooms += 1;
                report.purged += purged;
                report.shortest_lifetime_ms = Some(report.shortest_lifetime_ms.map_or(ms, |s| s.min(ms)));
            }
        }
        Ok(report)
    }

    fn room_ids(&self) -> Result<Vec<OwnedRoomId>> {
        let mut out = Vec::new();
        for (room, _) in self.db.scan_prefix(trees::ROOMS, b"", usize::MAX)? {
            if let Ok(room_id) = RoomId::parse(utf8(&room)?) {
                out.push(room_id);
            }
        }
        Ok(out)
    }

    /// Purges one room: its `max_lifetime` (if any) and how many events lost their body.
    ///
    /// The timeline is read oldest first and the scan stops at the first message event that has
    /// not expired: what comes after it is newer (but for late arrivals with an old timestamp,
    /// which are hidden anyway and purged once what precedes them expires). Purged rows leave
    /// the timeline, so the next run starts where this one stopped.
    pub async fn purge_room(&self, room_id: &RoomId) -> Result<(Option<u64>, usize)> {
        // Most rooms have no limit: asked before the head, which would load the room's state.
        if self.retention(room_id)?.max_lifetime_ms.is_none() {
            return Ok((None, 0));
        }
        let head = self.head(room_id)?;
        let head = head.lock().await;
        let retention = self.retention(room_id)?;
        let Some(lifetime) = retention.max_lifetime_ms else { return Ok((None, 0)) };
        let mut batch = WriteBatch::new();
        let mut purged = 0;
        for (row, id) in self.db.scan_prefix(trees::TIMELINE, &prefix(&[room_id.as_bytes()]), usize::MAX)? {
            let event_id = EventId::parse(utf8(&id)?).map_err(Error::internal)?;
            let Some(stored) = load_stored(&self.db, &event_id)? else {
                // A row whose event is gone points at nothing: drop it too.
                batch.remove(trees::TIMELINE, row);
                continue;
            };
            let pos = pos_suffix(&row)?;
            match purge_writes(&self.db, &retention, &head.rules.redaction, &event_id, stored, pos, &mut batch)? {
                Verdict::Purged => {
                    batch.remove(trees::TIMELINE, row);
                    purged += 1;
                }
                Verdict::Kept => {}
                Verdict::Unexpired => break,
            }
            if batch.len() >= MAX_BATCH {
                self.db.write(std::mem::take(&mut batch)).await?;
            }
        }
        if !batch.is_empty() {
            self.db.write(batch).await?;
        }
        Ok((Some(lifetime), purged))
    }
}

/// What the purge does with one event.
enum Verdict {
    /// Expired: its body goes.
    Purged,
    /// State or a forward extremity: it stays, whatever its age.
    Kept,
    /// A message event that has not expired yet.
    Unexpired,
}

/// The writes that purge one stored event, if the retention lets it expire.
fn purge_writes(
    db: &Db,
    retention: &Retention,
    redaction_rules: &ruma::room_version_rules::RedactionRules,
    event_id: &EventId,
    stored: StoredEvent,
    pos: u64,
    batch: &mut WriteBatch,
) -> Result<Verdict> {
    let pdu = stored.clone().into_pdu(event_id)?;
    if !retention.expired(&pdu) {
        let unexpired = !pdu.is_state() && !retention.extremities.contains(&pdu.event_id);
        return Ok(if unexpired { Verdict::Unexpired } else { Verdict::Kept });
    }
    let room = pdu.room_id.as_bytes();
    let id = event_id.as_bytes();
    if let Some(target) = relates_to(&pdu) {
        batch.remove(trees::RELATIONS, key(&[room, target.as_bytes(), &pos_bytes(pos)]));
        crate::rooms::threads::unindex_reply(&pdu, pos, batch);
    }
    // Who redacted it no longer matters; and a redaction that goes stops naming its target.
    batch.remove(trees::REDACTIONS, id.to_vec());
    if let Some(target) = pdu.redaction_target(redaction_rules)
        && db.get(trees::REDACTIONS, target.as_bytes())?.as_deref() == Some(id)
    {
        batch.remove(trees::REDACTIONS, target.as_bytes().to_vec());
    }
    let skeleton = ruma::canonical_json::redact(stored.pdu, redaction_rules, None)
        .map_err(|e| Error::internal(format!("cannot redact {event_id} for the purge: {e}")))?;
    let stub = StoredEvent { pdu: skeleton, txn_id: None, device_id: None, ..stored };
    batch.insert(trees::EVENTS, id.to_vec(), Db::to_json(&stub)?);
    batch.insert(trees::PURGED, id.to_vec(), room.to_vec());
    crate::search::queue_purge(event_id, pos, batch);
    Ok(Verdict::Purged)
}

/// How long to wait before the next run: the configured interval, or half the shortest
/// `max_lifetime` seen, between [`MIN_INTERVAL`] and [`MAX_INTERVAL`].
fn next_interval(configured: Option<u64>, shortest_lifetime_ms: Option<u64>) -> Duration {
    match (configured, shortest_lifetime_ms) {
        (Some(secs), _) => Duration::from_secs(secs).max(MIN_INTERVAL),
        (None, Some(ms)) => Duration::from_millis(ms / 2).clamp(MIN_INTERVAL, MAX_INTERVAL),
        (None, None) => MAX_INTERVAL,
    }
}

/// Runs the purge until the node stops: once at start, then at [`next_interval`].
pub fn spawn(node: &Arc<Services>) {
    let configured = node.config.retention_purge_interval_secs;
    let services = node.clone();
    node.workers.spawn("retention-purge", |mut shutdown| async move {
        loop {
            let wait = match services.rooms.purge_expired().await {
                Ok(report) => {
                    if report.purged > 0 {
                        tracing::info!(purged = report.purged, rooms = report.rooms, "retention purge");
                    } else {
                        tracing::debug!(purged = 0, rooms = report.rooms, "retention purge");
                    }
                    next_interval(configured, report.shortest_lifetime_ms)
                }
                Err(e) => {
                    tracing::warn!(error = %e, "retention purge failed; retrying later");
                    next_interval(configured, None).min(Duration::from_secs(60))
                }
            };
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = shutdown.wait_for(|stop| *stop) => return,
            }
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_interval_follows_config_then_the_shortest_lifetime() {
        assert_eq!(next_interval(Some(5), Some(100)), Duration::from_secs(5));
        assert_eq!(next_interval(Some(0), None), MIN_INTERVAL);
        assert_eq!(next_interval(None, Some(2_000)), Duration::from_secs(1));
        assert_eq!(next_interval(None, Some(500)), MIN_INTERVAL);
        assert_eq!(next_interval(None, Some(30 * 86_400_000)), MAX_INTERVAL);
        assert_eq!(next_interval(None, None), MAX_INTERVAL);
    }
}
