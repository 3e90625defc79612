//! Reading rooms: stored events, the timeline, memberships, and the client format.

use std::{ops::Bound, sync::Arc};

use ruma::{
    CanonicalJsonObject, DeviceId, EventId, OwnedDeviceId, OwnedEventId, OwnedRoomId, RoomId, UserId,
    events::StateEventType,
};
use serde::{Deserialize, Serialize};

use super::{Pdu, Rooms};
use crate::{
    error::{Error, Result},
    store::{Db, key, pos_bytes, prefix, split, trees, utf8},
};

/// An event as stored: the PDU and the stream position it got here.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StoredEvent {
    pub pos: u64,
    pub pdu: CanonicalJsonObject,
    /// The client transaction, shown back only to the device that sent it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub txn_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_id: Option<OwnedDeviceId>,
    /// Known but not in the timeline: an auth event fetched for another, or a soft-failed one.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub outlier: bool,
    /// Failed the auth rules: kept so it is not fetched again, never applied to state.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub rejected: bool,
}

impl StoredEvent {
    /// An event kept out of the timeline: an auth event, a soft-failed or a rejected one.
    pub fn outlier(pdu: &Pdu, rejected: bool) -> Result<Self> {
        Ok(Self { pos: 0, pdu: pdu.json()?.clone(), txn_id: None, device_id: None, outlier: true, rejected })
    }

    pub fn into_pdu(self, event_id: &EventId) -> Result<Pdu> {
        let mut pdu = Pdu::from_json(event_id.to_owned(), self.pdu)?;
        pdu.local_txn = self.device_id.zip(self.txn_id);
        Ok(pdu)
    }
}

/// A user's membership in a room and when it last changed.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UserRoom {
    pub membership: String,
    pub pos: u64,
    pub event_id: OwnedEventId,
}

pub fn load_stored(db: &Db, event_id: &EventId) -> Result<Option<StoredEvent>> {
    db.get_json(trees::EVENTS, event_id.as_bytes())
}

/// A [`StoredEvent`] record with its PDU left as text, for [`load_pdu`].
#[derive(Deserialize)]
struct StoredText<'a> {
    pos: u64,
    #[serde(borrow)]
    pdu: &'a serde_json::value::RawValue,
    #[serde(default)]
    txn_id: Option<String>,
    #[serde(default)]
    device_id: Option<OwnedDeviceId>,
}

pub fn load_pdu(db: &Db, event_id: &EventId) -> Result<Option<Pdu>> {
    Ok(load_pdu_with_pos(db, event_id)?.map(|(_, pdu)| pdu))
}

/// The stored event and its position.
fn load_pdu_with_pos(db: &Db, event_id: &EventId) -> Result<Option<(u64, Pdu)>> {
    let Some(bytes) = db.get(trees::EVENTS, event_id.as_bytes())? else { return Ok(None) };
    parse_stored(event_id, &bytes).map(Some)
}

/// A [`trees::EVENTS`] record: the event's position and its PDU.
pub(super) fn parse_stored(event_id: &EventId, record: &[u8]) -> Result<(u64, Pdu)> {
    let stored: StoredText<'_> = serde_json::from_slice(record)
        .map_err(|e| Error::internal(format!("corrupt record in {}: {e}", trees::EVENTS)))?;
    let mut pdu = Pdu::from_text(event_id.to_owned(), stored.pdu.get())?;
    pdu.local_txn = stored.device_id.zip(stored.txn_id);
    Ok((stored.pos, pdu))
}

impl Rooms {
    pub fn stored_event(&self, event_id: &EventId) -> Result<Option<StoredEvent>> {
        load_stored(&self.db, event_id)
    }

    pub fn pdu(&self, event_id: &EventId) -> Result<Option<Pdu>> {
        load_pdu(&self.db, event_id)
    }

    /// The event and its position.
    pub fn event_with_pos(&self, event_id: &EventId) -> Result<Option<(u64, Pdu)>> {
        load_pdu_with_pos(&self.db, event_id)
    }

    pub async fn current_state(&self, room_id: &RoomId) -> Result<Vec<Arc<Pdu>>> {
        let head = self.head(room_id)?;
        let head = head.lock().await;
        Ok(head.state.values().cloned().collect())
    }

    pub async fn state_event(
        &self,
        room_id: &RoomId,
        kind: &StateEventType,
        state_key: &str,
    ) -> Result<Option<Arc<Pdu>>> {
        let head = self.head(room_id)?;
        let head = head.lock().await;
        Ok(head.get(kind, state_key).cloned())
    }

    pub async fn membership(&self, room_id: &RoomId, user_id: &UserId) -> Result<Option<String>> {
        let head = self.head(room_id)?;
        let head = head.lock().await;
        Ok(head.membership(user_id))
    }

    pub async fn members(&self, room_id: &RoomId, membership: &str) -> Result<Vec<ruma::OwnedUserId>> {
        let head = self.head(room_id)?;
        let head = head.lock().await;
        Ok(head.members_with(membership))
    }

    /// Member counts and heroes for sync summaries (see [`super::head::MemberSummary`]).
    pub async fn member_summary(&self, room_id: &RoomId) -> Result<Arc<super::head::MemberSummary>> {
        let head = self.head(room_id)?;
        let mut head = head.lock().await;
        Ok(head.member_summary())
    }

    /// The servers with a joined member (this one included if it has one), sorted.
    pub async fn joined_servers(&self, room_id: &RoomId) -> Result<Arc<Vec<ruma::OwnedServerName>>> {
        let head = self.head(room_id)?;
        let mut head = head.lock().await;
        Ok(head.joined_servers())
    }

    /// This node's joined and invited members, shared until the room's state changes.
    pub async fn local_members(&self, room_id: &RoomId) -> Result<std::sync::Arc<super::head::LocalMembers>> {
        let head = self.head(room_id)?;
        let mut head = head.lock().await;
        Ok(head.local_members_of(&self.server_name))
    }

    /// This node's users whose syncs show the room's changes (the joined and the invited),
    /// `None` for a room this node does not hold.
    pub async fn local_audience(&self, room_id: &RoomId) -> Result<Option<std::sync::Arc<super::head::LocalMembers>>> {
        match self.local_members(room_id).await {
            Ok(members) => Ok(Some(members)),
            Err(Error::NotFound(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    pub async fn version(&self, room_id: &RoomId) -> Result<ruma::RoomVersionId> {
        let head = self.head(room_id)?;
        let head = head.lock().await;
        Ok(head.version.clone())
    }

    /// Every room the user has a membership in, with that membership.
    pub fn user_rooms(&self, user_id: &UserId) -> Result<Vec<(OwnedRoomId, UserRoom)>> {
        let mut out = Vec::new();
        for (k, v) in self.db.scan_prefix(trees::USER_ROOMS, &prefix(&[user_id.as_bytes()]), usize::MAX)? {
            let parts = split(&k);
            let Some(room) = parts.get(1) else { continue };
            let room_id = RoomId::parse(utf8(room)?).map_err(Error::internal)?;
            out.push((room_id, serde_json::from_slice(&v).map_err(Error::internal)?));
        }
        Ok(out)
    }

    /// The rooms the user is joined to (as far as this server knows, for remote users).
    pub fn joined_rooms(&self, user_id: &UserId) -> Result<std::collections::BTreeSet<OwnedRoomId>> {
        Ok(self.user_rooms(user_id)?.into_iter().filter(|(_, r)| r.membership == "join").map(|(id, _)| id).collect())
    }

    /// The user's rows among `rooms` (those the user has a membership in): what a sync reads
    /// for the rooms the room log says changed.
    pub fn user_rooms_among(
        &self,
        user_id: &UserId,
        rooms: impl IntoIterator<Item = OwnedRoomId>,
    ) -> Result<Vec<(OwnedRoomId, UserRoom)>> {
        let mut out = Vec::new();
        for room_id in rooms {
            if let Some(user_room) = self.user_room(user_id, &room_id)? {
                out.push((room_id, user_room));
            }
        }
        Ok(out)
    }

    pub fn user_room(&self, user_id: &UserId, room_id: &RoomId) -> Result<Option<UserRoom>> {
        self.db.get_json(trees::USER_ROOMS, &key(&[user_id.as_bytes(), room_id.as_bytes()]))
    }

    /// Rooms whose membership for `user_id` changed in `(since, to]`.
    pub fn membership_changes(&self, user_id: &UserId, since: u64, to: u64) -> Result<Vec<OwnedRoomId>> {
        let from = key(&[user_id.as_bytes(), &pos_bytes(since + 1)]);
        let end = key(&[user_id.as_bytes(), &pos_bytes(to.saturating_add(1))]);
        let mut out = Vec::new();
        for (_, room) in self.db.range(
            trees::MEMBERSHIP_CHANGES,
            Bound::Included(&from),
            Bound::Excluded(&end),
            false,
            usize::MAX,
        )? {
            let room_id = RoomId::parse(utf8(&room)?).map_err(Error::internal)?;
            if !out.contains(&room_id) {
                out.push(room_id);
            }
        }
        Ok(out)
    }

    /// Timeline events of a room with position in `(after, upto]`, newest last. When there are
    /// more than `limit`, the newest `limit` come back and the flag says so.
    pub fn timeline_since(
        &self,
        room_id: &RoomId,
        after: u64,
        upto: u64,
        limit: usize,
    ) -> Result<(Vec<(u64, Pdu)>, bool)> {
        let (from, to) = (
            key(&[room_id.as_bytes(), &pos_bytes(after.saturating_add(1))]),
            key(&[room_id.as_bytes(), &pos_bytes(upto.saturating_add(1))]),
        );
        let rows = self.db.range(trees::TIMELINE, Bound::Included(&from), Bound::Excluded(&to), true, limit + 1)?;
        let limited = rows.len() > limit;
        let mut out = self.rows_to_pdus(rows.into_iter().take(limit))?;
        out.reverse();
        self.retain_served(room_id, &mut out, |(_, pdu)| pdu)?;
        Ok((out, limited))
    }

    /// Paginates: events strictly before `pos` going backwards (`backwards`), or strictly after
    /// it going forwards, at most `limit`, in the order of travel. Events the room's retention
    /// hides are skipped (and do not count).
    pub fn paginate(&self, room_id: &RoomId, pos: u64, backwards: bool, limit: usize) -> Result<Vec<(u64, Pdu)>> {
        let mut out = Vec::new();
        let mut cursor = pos;
        while out.len() < limit {
            let at = key(&[room_id.as_bytes(), &pos_bytes(cursor)]);
            let room_start = prefix(&[room_id.as_bytes()]);
            let room_end = key(&[room_id.as_bytes(), &[0xFF; 9]]);
            let want = limit - out.len();
            let rows = if backwards {
                self.db.range(trees::TIMELINE, Bound::Included(&room_start), Bound::Excluded(&at), true, want)?
            } else {
                self.db.range(trees::TIMELINE, Bound::Excluded(&at), Bound::Excluded(&room_end), false, want)?
            };
            let Some((last, _)) = rows.last() else { break };
            cursor = crate::store::pos_suffix(last)?;
            let full = rows.len() == want;
            let mut page = self.rows_to_pdus(rows.into_iter())?;
            self.retain_served(room_id, &mut page, |(_, pdu)| pdu)?;
            out.extend(page);
            if !full {
                break;
            }
        }
        Ok(out)
    }

    fn rows_to_pdus(&self, rows: impl Iterator<Item = (Vec<u8>, Vec<u8>)>) -> Result<Vec<(u64, Pdu)>> {
        let mut out = Vec::new();
        for (k, id) in rows {
            let pos = crate::store::pos_suffix(&k)?;
            let event_id = EventId::parse(utf8(&id)?).map_err(Error::internal)?;
            if let Some((_, pdu)) = self.recent.load(&self.db, &event_id)? {
                out.push((pos, pdu));
            }
        }
        Ok(out)
    }

    /// State events whose position is in `(after, upto]`.
    pub fn state_changes(&self, room_id: &RoomId, after: u64, upto: u64) -> Result<Vec<(u64, Pdu)>> {
        let from = key(&[room_id.as_bytes(), &pos_bytes(after.saturating_add(1))]);
        let to = key(&[room_id.as_bytes(), &pos_bytes(upto.saturating_add(1))]);
        let rows =
            self.db.range(trees::STATE_CHANGES, Bound::Included(&from), Bound::Excluded(&to), false, usize::MAX)?;
        self.rows_to_pdus(rows.into_iter())
    }

    /// Events that relate to `target`, oldest first.
    pub fn relations(&self, room_id: &RoomId, target: &EventId) -> Result<Vec<(u64, Pdu)>> {
        let p = prefix(&[room_id.as_bytes(), target.as_bytes()]);
        let rows = self.db.scan_prefix(trees::RELATIONS, &p, usize::MAX)?;
        let mut out = self.rows_to_pdus(rows.into_iter())?;
        self.retain_served(room_id, &mut out, |(_, pdu)| pdu)?;
        Ok(out)
    }

    pub fn redacted_by(&self, event_id: &EventId) -> Result<Option<OwnedEventId>> {
        match self.db.get(trees::REDACTIONS, event_id.as_bytes())? {
            Some(id) => Ok(Some(EventId::parse(utf8(&id)?).map_err(Error::internal)?)),
            None => Ok(None),
        }
    }

    /// The event as a client sees it: `unsigned` with the transaction id (for the sending
    /// device), `redacted_because`, the previous content of state events, and for a thread root
    /// the thread's summary as the viewer sees it.
    pub fn client_event(
        &self,
        pos_and_pdu: &(u64, Pdu),
        viewer_device: Option<(&UserId, &DeviceId)>,
        with_room_id: bool,
    ) -> Result<serde_json::Value> {
        let (_, pdu) = pos_and_pdu;
        let mut unsigned = serde_json::Map::new();
        if let Some((user, device)) = viewer_device
            && user == pdu.sender
            && let Some((sent_from, txn)) = &pdu.local_txn
            && sent_from == device
        {
            unsigned.insert("transaction_id".into(), txn.as_str().into());
        }
        if let Some(redaction_id) = self.redacted_by(&pdu.event_id)?
            && let Some(redaction) = load_pdu(&self.db, &redaction_id)?
        {
            unsigned.insert("redacted_because".into(), redaction.to_client_value(serde_json::Map::new(), with_room_id));
        }
        if let Some((user, _)) = viewer_device
            && let Some(thread) = self.bundled_thread(pdu, user, with_room_id)?
        {
            unsigned.insert("m.relations".into(), serde_json::json!({ "m.thread": thread }));
        }
        let age = ruma::MilliSecondsSinceUnixEpoch::now().0.saturating_sub(pdu.origin_server_ts.0);
        unsigned.insert("age".into(), serde_json::Value::from(u64::from(age)));
        Ok(pdu.to_client_value(unsigned, with_room_id))
    }
}
