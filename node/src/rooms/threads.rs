//! Threads: events that relate to a root with `rel_type: m.thread`. Each reply is indexed under
//! its root ([`trees::THREADS`]) as it is committed, so a root's summary (the latest reply, the
//! count, whether the viewer took part) and a room's thread list need no walk of the timeline.
//! The summary is bundled into the root as clients see it (`unsigned.m.relations.m.thread`),
//! counting only the replies the viewer may see.

use std::collections::HashMap;

use ruma::{EventId, OwnedEventId, RoomId, UserId};
use serde_json::{Value, json};
use tocsin_store::WriteBatch;

use super::{Pdu, Rooms, visibility::ReadAccess};
use crate::{
    error::{Error, Result},
    store::{key, pos_bytes, pos_suffix, prefix, trees, utf8},
};

/// Most replies read to list a room's threads: bounds one `/threads` request.
const MAX_SCAN: usize = 50_000;

/// The root a thread reply belongs to.
pub fn thread_root(pdu: &Pdu) -> Option<OwnedEventId> {
    let rel = pdu.content_field("m.relates_to")?;
    if rel.get("rel_type")?.as_str()? != "m.thread" {
        return None;
    }
    EventId::parse(rel.get("event_id")?.as_str()?).ok()
}

fn row_key(room: &RoomId, root: &EventId, pos: u64) -> Vec<u8> {
    key(&[room.as_bytes(), root.as_bytes(), &pos_bytes(pos)])
}

/// Indexes a thread reply (part of the event's commit).
pub(crate) fn index_reply(pdu: &Pdu, pos: u64, batch: &mut WriteBatch) {
    if let Some(root) = thread_root(pdu) {
        batch.insert(trees::THREADS, row_key(&pdu.room_id, &root, pos), pdu.event_id.as_bytes().to_vec());
    }
}

/// Drops a purged reply from the index.
pub(crate) fn unindex_reply(pdu: &Pdu, pos: u64, batch: &mut WriteBatch) {
    if let Some(root) = thread_root(pdu) {
        batch.remove(trees::THREADS, row_key(&pdu.room_id, &root, pos));
    }
}

/// A thread as one viewer sees it.
pub struct Thread {
    pub latest: (u64, Pdu),
    pub count: u64,
    pub participated: bool,
}

impl Rooms {
    /// The thread under `root` as `viewer` sees it, or `None` when it has no reply they may see.
    pub fn thread(&self, room: &RoomId, root: &Pdu, viewer: &UserId, access: &ReadAccess) -> Result<Option<Thread>> {
        let rows =
            self.db.scan_prefix(trees::THREADS, &prefix(&[room.as_bytes(), root.event_id.as_bytes()]), MAX_SCAN)?;
        let mut thread: Option<Thread> = None;
        let mut participated = root.sender == viewer;
        for (k, id) in rows {
            let pos = pos_suffix(&k)?;
            let event_id = EventId::parse(utf8(&id)?).map_err(Error::internal)?;
            let Some((_, reply)) = self.served_event(&event_id)? else { continue };
            if !access.may_see(pos, &reply) {
                continue;
            }
            participated |= reply.sender == viewer;
            let count = thread.as_ref().map_or(0, |t| t.count) + 1;
            thread = Some(Thread { latest: (pos, reply), count, participated: false });
        }
        Ok(thread.map(|t| Thread { participated, ..t }))
    }

    /// The room's thread roots by latest reply, newest first: up to `limit` of those whose latest
    /// reply is before `before`, and whether more follow. Latest positions count every reply;
    /// [`Rooms::thread`] then tells what the viewer sees of each.
    pub fn thread_roots(
        &self,
        room: &RoomId,
        before: Option<u64>,
        limit: usize,
    ) -> Result<(Vec<(OwnedEventId, u64)>, bool)> {
        let room_prefix = prefix(&[room.as_bytes()]);
        let rows = self.db.scan_prefix(trees::THREADS, &room_prefix, MAX_SCAN)?;
        let room_prefix = room_prefix.len();
        let mut latest: HashMap<OwnedEventId, u64> = HashMap::new();
        for (k, _) in rows {
            let pos = pos_suffix(&k)?;
            // room SEP root SEP pos: the root sits between the room and the position.
            let root =
                k.get(room_prefix..k.len().saturating_sub(9)).ok_or_else(|| Error::internal("short thread key"))?;
            let root = EventId::parse(utf8(root)?).map_err(Error::internal)?;
            let entry = latest.entry(root).or_default();
            *entry = (*entry).max(pos);
        }
        let mut roots: Vec<(OwnedEventId, u64)> =
            latest.into_iter().filter(|(_, pos)| before.is_none_or(|b| *pos < b)).collect();
        roots.sort_by_key(|(_, latest)| std::cmp::Reverse(*latest));
        let more = roots.len() > limit;
        roots.truncate(limit);
        Ok((roots, more))
    }

    /// `unsigned.m.relations.m.thread` for a root as `viewer` sees it, if it has replies.
    pub(super) fn bundled_thread(&self, root: &Pdu, viewer: &UserId, with_room_id: bool) -> Result<Option<Value>> {
        let has_replies = !self
            .db
            .scan_prefix(trees::THREADS, &prefix(&[root.room_id.as_bytes(), root.event_id.as_bytes()]), 1)?
            .is_empty();
        if !has_replies {
            return Ok(None);
        }
        let access = self.read_access(&root.room_id, viewer)?;
        let Some(thread) = self.thread(&root.room_id, root, viewer, &access)? else { return Ok(None) };
        Ok(Some(json!({
            "latest_event": thread.latest.1.to_client_value(serde_json::Map::new(), with_room_id),
            "count": thread.count,
            "current_user_participated": thread.participated,
        })))
    }
}
