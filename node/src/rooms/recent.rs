//! Parsed copies of the events read last, for the timeline reads of woken syncs: a message into
//! a 5,000-member room is read by 5,000 syncs, and parsing its stored record was most of the
//! cost of each read. A copy is used only while the stored record is byte for byte the one it
//! was parsed from, so a redaction or a purge is seen at once and nothing needs invalidating.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, PoisonError},
};

use ruma::{EventId, OwnedEventId};

use super::{Pdu, read::parse_stored};
use crate::{
    error::Result,
    store::{Db, trees},
};

/// Events kept: more than a busy node writes between two reads of the same event.
const KEPT: usize = 1024;

#[derive(Default)]
pub struct RecentEvents {
    parsed: Mutex<HashMap<OwnedEventId, Arc<Parsed>>>,
}

struct Parsed {
    record: Vec<u8>,
    pos: u64,
    pdu: Pdu,
}

impl RecentEvents {
    /// The stored event and its position, as [`super::read::load_pdu`] reads it.
    pub fn load(&self, db: &Db, event_id: &EventId) -> Result<Option<(u64, Pdu)>> {
        let Some(record) = db.get(trees::EVENTS, event_id.as_bytes())? else { return Ok(None) };
        let lock = || self.parsed.lock().unwrap_or_else(PoisonError::into_inner);
        let known = lock().get(event_id).cloned();
        if let Some(parsed) = known.filter(|p| p.record == record) {
            return Ok(Some((parsed.pos, parsed.pdu.clone())));
        }
        let (pos, pdu) = parse_stored(event_id, &record)?;
        let parsed = Arc::new(Parsed { record, pos, pdu: pdu.clone() });
        let mut kept = lock();
        if kept.len() >= KEPT {
            kept.clear();
        }
        kept.insert(event_id.to_owned(), parsed);
        Ok(Some((pos, pdu)))
    }
}

#[cfg(test)]
mod tests {
    use ruma::{event_id, owned_room_id, owned_user_id};
    use serde_json::json;
    use tocsin_store::{EngineKind, WriteBatch};

    use super::*;

    async fn store(db: &Db, event_id: &EventId, body: &str) {
        let record = json!({
            "pos": 7,
            "pdu": {
                "room_id": owned_room_id!("!r:example.org"),
                "sender": owned_user_id!("@a:example.org"),
                "origin_server_ts": 1,
                "type": "m.room.message",
                "content": { "body": body },
                "prev_events": [],
                "auth_events": [],
                "depth": 3,
            },
        });
        let mut batch = WriteBatch::new();
        batch.insert(trees::EVENTS, event_id.as_bytes().to_vec(), serde_json::to_vec(&record).unwrap());
        db.write(batch).await.unwrap();
    }

    #[tokio::test]
    async fn a_rewritten_record_is_parsed_again() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(EngineKind::Redb, dir.path()).unwrap();
        let recent = RecentEvents::default();
        let id = event_id!("$e:example.org");
        assert!(recent.load(&db, id).unwrap().is_none());
        store(&db, id, "first").await;
        let body = |recent: &RecentEvents| recent.load(&db, id).unwrap().unwrap().1.content.get().to_owned();
        assert_eq!(body(&recent), r#"{"body":"first"}"#);
        assert_eq!(body(&recent), r#"{"body":"first"}"#, "the kept copy");
        // A redaction or a purge rewrites the record: the next read sees the new one.
        store(&db, id, "second").await;
        assert_eq!(body(&recent), r#"{"body":"second"}"#);
    }
}
