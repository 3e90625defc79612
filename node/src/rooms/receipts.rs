//! Read receipts (public and private) as a per-room stream.

use std::ops::Bound;

use ruma::{EventId, RoomId, UserId};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::Rooms;
use crate::{
    error::{Error, Result},
    store::{Db, key, pos_bytes, prefix, split, trees, utf8},
};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Receipt {
    pub event_id: ruma::OwnedEventId,
    pub ts: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thread_id: Option<String>,
}

impl Rooms {
    pub async fn set_receipt(
        &self,
        room: &RoomId,
        user: &UserId,
        kind: &str,
        event_id: &EventId,
        thread_id: Option<String>,
    ) -> Result<()> {
        let k = key(&[room.as_bytes(), kind.as_bytes(), user.as_bytes()]);
        let receipt = Receipt { event_id: event_id.to_owned(), ts: crate::users::now_ms(), thread_id };
        let value = Db::to_json(&receipt)?;
        // A public read receipt counts as read (not acknowledged) for the alarms it covers.
        let mut alarm_rows = tocsin_store::WriteBatch::new();
        if kind == "m.read"
            && let Some(stored) = super::read::load_stored(&self.db, event_id)?
            && stored.pdu.get("room_id").and_then(|r| r.as_str()) == Some(room.as_str())
        {
            let read = crate::alarms::Mark { ts: receipt.ts, event_id: event_id.to_owned() };
            self.alarms.receipt_rows(&self.db, room, user, &read, stored.pos, &mut alarm_rows)?;
        }
        // A local user's read may lower the badge on their other devices (`push::badge`).
        let badge = user.server_name() == self.server_name && matches!(kind, "m.read" | "m.read.private");
        self.db
            .write_streamed(|pos, batch| {
                batch.insert(trees::RECEIPT_CHANGES, key(&[room.as_bytes(), &pos_bytes(pos)]), k.clone());
                batch.insert(trees::RECEIPTS, k, value);
                batch.ops.extend(alarm_rows.ops);
                if badge {
                    crate::push::queue::read_row(batch, pos, user);
                }
            })
            .await?;
        Ok(())
    }

    pub fn receipt(&self, room: &RoomId, user: &UserId, kind: &str) -> Result<Option<Receipt>> {
        self.db.get_json(trees::RECEIPTS, &key(&[room.as_bytes(), kind.as_bytes(), user.as_bytes()]))
    }

    /// The stream position of the latest event the user marked read in the room, public or
    /// private receipt (0 without one). A receipt for an event this node no longer has counts
    /// as none.
    pub fn read_pos(&self, room: &RoomId, user: &UserId) -> Result<u64> {
        let mut pos = 0;
        for kind in ["m.read", "m.read.private"] {
            if let Some(receipt) = self.receipt(room, user, kind)?
                && let Some((at, _)) = self.event_with_pos(&receipt.event_id)?
            {
                pos = pos.max(at);
            }
        }
        Ok(pos)
    }

    /// The `m.receipt` ephemeral event for receipts changed in `(since, upto]` (all when since is
    /// 0). Private receipts are only shown to their owner.
    pub fn receipt_event(&self, room: &RoomId, viewer: &UserId, since: u64, upto: u64) -> Result<Option<Value>> {
        let keys: Vec<Vec<u8>> = if since == 0 {
            self.db
                .scan_prefix(trees::RECEIPTS, &prefix(&[room.as_bytes()]), usize::MAX)?
                .into_iter()
                .map(|(k, _)| k)
                .collect()
        } else {
            let from = key(&[room.as_bytes(), &pos_bytes(since.saturating_add(1))]);
            let to = key(&[room.as_bytes(), &pos_bytes(upto.saturating_add(1))]);
            self.db
                .range(trees::RECEIPT_CHANGES, Bound::Included(&from), Bound::Excluded(&to), false, usize::MAX)?
                .into_iter()
                .map(|(_, v)| v)
                .collect()
        };
        let mut content = serde_json::Map::new();
        for k in keys {
            let parts = split(&k);
            let (Some(kind), Some(user)) = (parts.get(1), parts.get(2)) else { continue };
            let (kind, user) = (utf8(kind)?, utf8(user)?);
            if kind == "m.read.private" && user != viewer.as_str() {
                continue;
            }
            let Some(receipt) = self.db.get_json::<Receipt>(trees::RECEIPTS, &k)? else { continue };
            let mut entry = json!({ "ts": receipt.ts });
            if let Some(thread) = &receipt.thread_id {
                entry["thread_id"] = Value::String(thread.clone());
            }
            let by_event = content.entry(receipt.event_id.to_string()).or_insert_with(|| json!({}));
            let by_kind = by_event
                .as_object_mut()
                .ok_or_else(|| Error::internal("receipt map"))?
                .entry(kind.to_owned())
                .or_insert_with(|| json!({}));
            if let Some(m) = by_kind.as_object_mut() {
                m.insert(user.to_owned(), entry);
            }
        }
        if content.is_empty() {
            return Ok(None);
        }
        Ok(Some(json!({ "type": "m.receipt", "content": content })))
    }
}
