//! History visibility, decided per event as the spec's algorithm says: from the room's history
//! visibility and the reader's membership *at that event*, not today's. Both are kept as
//! histories by stream position (`MEMBER_HISTORY`, `VISIBILITY_HISTORY`), written wherever the
//! current state changes, so a decision costs two prefix scans per room and request.

use std::{collections::HashMap, ops::Bound};

use ruma::{OwnedUserId, RoomId, ServerName, UserId, events::TimelineEventType};
use tocsin_store::WriteBatch;

use super::{Pdu, Rooms};
use crate::{
    error::{Error, Result},
    store::{key, pos_bytes, pos_suffix, prefix, split, trees, utf8},
};

/// The room's `history_visibility`, ordered from the most restrictive to the most open.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum HistoryVisibility {
    Joined,
    Invited,
    Shared,
    WorldReadable,
}

impl HistoryVisibility {
    /// An unknown value is read as the most restrictive, never as more open than meant.
    pub fn parse(value: &str) -> Self {
        match value {
            "world_readable" => Self::WorldReadable,
            "shared" => Self::Shared,
            "invited" => Self::Invited,
            _ => Self::Joined,
        }
    }

    fn of_event(pdu: &Pdu) -> Option<Self> {
        (pdu.kind == TimelineEventType::RoomHistoryVisibility && pdu.state_key.as_deref() == Some(""))
            .then(|| pdu.content_field("history_visibility"))
            .map(|v| Self::parse(v.as_ref().and_then(|v| v.as_str()).unwrap_or("")))
    }
}

/// The rows that record a state change at `pos` in the visibility histories.
pub(crate) fn history_rows(pdu: &Pdu, pos: u64, batch: &mut WriteBatch) {
    let room = pdu.room_id.as_bytes();
    if pdu.kind == TimelineEventType::RoomMember
        && let Some(user) = pdu.state_key.as_deref().and_then(|k| UserId::parse(k).ok())
    {
        let membership = pdu.membership().unwrap_or_default();
        let k = key(&[room, user.server_name().as_bytes(), user.as_bytes(), &pos_bytes(pos)]);
        batch.insert(trees::MEMBER_HISTORY, k, membership.into_bytes());
    }
    if pdu.kind == TimelineEventType::RoomHistoryVisibility && pdu.state_key.as_deref() == Some("") {
        let value = pdu.content_field("history_visibility").and_then(|v| v.as_str().map(str::to_owned));
        batch.insert(trees::VISIBILITY_HISTORY, key(&[room, &pos_bytes(pos)]), value.unwrap_or_default().into_bytes());
    }
}

/// A membership history: (position, membership), oldest first.
type Memberships = Vec<(u64, String)>;

fn membership_at(history: &Memberships, pos: u64) -> Option<&str> {
    history.iter().take_while(|(p, _)| *p < pos).last().map(|(_, m)| m.as_str())
}

/// What one reader (a user, or all users of one server) may see of one room's history.
pub struct ReadAccess {
    visibility: Vec<(u64, HistoryVisibility)>,
    /// The reader's users and their membership histories.
    members: HashMap<OwnedUserId, Memberships>,
}

impl ReadAccess {
    /// The visibility in force just before `pos`. History older than the first change this node
    /// recorded (backfilled, or from before it joined) takes the first value it knows.
    fn visibility_at(&self, pos: u64) -> HistoryVisibility {
        self.visibility
            .iter()
            .take_while(|(p, _)| *p < pos)
            .last()
            .or(self.visibility.first())
            .map_or(HistoryVisibility::Shared, |(_, v)| *v)
    }

    /// Whether the event at `pos` may be read, by the spec's algorithm.
    pub fn may_see(&self, pos: u64, pdu: &Pdu) -> bool {
        let mut visibility = self.visibility_at(pos);
        // A change of visibility is seen by those who could see the room before or after it.
        if let Some(new) = HistoryVisibility::of_event(pdu) {
            visibility = visibility.max(new);
        }
        if visibility == HistoryVisibility::WorldReadable {
            return true;
        }
        self.members.iter().any(|(user, history)| {
            // A member event about the reader shows the membership it sets: everyone sees their
            // own join, invite, leave or ban.
            let own = pdu.kind == TimelineEventType::RoomMember && pdu.state_key.as_deref() == Some(user.as_str());
            let membership = if own { pdu.membership() } else { membership_at(history, pos).map(str::to_owned) };
            match (membership.as_deref(), visibility) {
                (Some("join"), _) => true,
                (Some("invite"), HistoryVisibility::Invited) => true,
                (_, HistoryVisibility::Shared) => history.iter().any(|(p, m)| *p > pos && m == "join"),
                _ => false,
            }
        })
    }

    /// Whether one of the reader's users was joined at the event at `pos` (or joins by it).
    /// An event with no timeline position (an outlier) is judged by the membership today.
    pub fn joined_at(&self, pos: u64, pdu: &Pdu) -> bool {
        if pos == 0 {
            return self.joined_now();
        }
        self.members.iter().any(|(user, history)| {
            let own = pdu.kind == TimelineEventType::RoomMember && pdu.state_key.as_deref() == Some(user.as_str());
            if own { pdu.membership().as_deref() == Some("join") } else { membership_at(history, pos) == Some("join") }
        })
    }

    /// Whether the room is world-readable now.
    pub fn world_readable_now(&self) -> bool {
        self.visibility.last().is_some_and(|(_, v)| *v == HistoryVisibility::WorldReadable)
    }

    /// Whether any of the reader's users is joined now.
    pub fn joined_now(&self) -> bool {
        self.members.values().any(|h| h.last().is_some_and(|(_, m)| m == "join"))
    }

    /// Whether the reader may read anything of the room at all: they joined at some point, or
    /// the room is (or was) world-readable.
    pub fn any(&self) -> bool {
        self.members.values().any(|h| h.iter().any(|(_, m)| m == "join"))
            || self.visibility.iter().any(|(_, v)| *v == HistoryVisibility::WorldReadable)
    }

    /// Where the reader's view of the room's state stops: `None` while joined (the current
    /// state), else the position of their last membership change, if they were ever joined.
    pub fn left_at(&self) -> Option<u64> {
        if self.joined_now() {
            return None;
        }
        self.members.values().filter_map(|h| h.last()).map(|(p, _)| *p).max()
    }
}

impl Rooms {
    fn visibility_history(&self, room_id: &RoomId) -> Result<Vec<(u64, HistoryVisibility)>> {
        let rows = self.db.scan_prefix(trees::VISIBILITY_HISTORY, &prefix(&[room_id.as_bytes()]), usize::MAX)?;
        rows.iter().map(|(k, v)| Ok((pos_suffix(k)?, HistoryVisibility::parse(utf8(v)?)))).collect()
    }

    fn member_histories(&self, scan: &[u8]) -> Result<HashMap<OwnedUserId, Memberships>> {
        let mut out: HashMap<OwnedUserId, Memberships> = HashMap::new();
        for (k, v) in self.db.scan_prefix(trees::MEMBER_HISTORY, scan, usize::MAX)? {
            let pos = pos_suffix(&k)?;
            let parts = split(&k[..k.len() - 8]);
            let user = parts.get(2).ok_or_else(|| Error::internal("short member history key"))?;
            let user = UserId::parse(utf8(user)?).map_err(Error::internal)?;
            out.entry(user).or_default().push((pos, utf8(&v)?.to_owned()));
        }
        Ok(out)
    }

    /// What `user` may read of the room.
    pub fn read_access(&self, room_id: &RoomId, user: &UserId) -> Result<ReadAccess> {
        let scan = prefix(&[room_id.as_bytes(), user.server_name().as_bytes(), user.as_bytes()]);
        let mut members = self.member_histories(&scan)?;
        members.entry(user.to_owned()).or_default();
        Ok(ReadAccess { visibility: self.visibility_history(room_id)?, members })
    }

    /// What the users of `server` may read of the room, together (the Server-Server rule).
    pub fn server_read_access(&self, room_id: &RoomId, server: &ServerName) -> Result<ReadAccess> {
        let scan = prefix(&[room_id.as_bytes(), server.as_bytes()]);
        Ok(ReadAccess { visibility: self.visibility_history(room_id)?, members: self.member_histories(&scan)? })
    }

    /// The newest `limit` timeline events in `(after, upto]` that the reader may see, oldest
    /// first, and whether older events were left out. Reads at most a bounded number of rows.
    pub fn visible_timeline(
        &self,
        room_id: &RoomId,
        access: &ReadAccess,
        after: u64,
        upto: u64,
        limit: usize,
    ) -> Result<(Vec<(u64, Pdu)>, bool)> {
        const MAX_SCAN: usize = 5_000;
        let mut out = Vec::new();
        let (mut top, mut scanned) = (upto, 0);
        loop {
            let (page, more) = self.timeline_since(room_id, after, top, limit)?;
            let Some(oldest) = page.first().map(|(p, _)| *p) else { break };
            scanned += page.len();
            for event in page.into_iter().rev() {
                if access.may_see(event.0, &event.1) {
                    out.push(event);
                    if out.len() == limit {
                        out.reverse();
                        return Ok((out, true));
                    }
                }
            }
            if !more || oldest == 0 {
                break;
            }
            if scanned >= MAX_SCAN {
                out.reverse();
                return Ok((out, true));
            }
            top = oldest - 1;
        }
        out.reverse();
        Ok((out, false))
    }

    /// Builds the visibility histories from the recorded state changes, once, for a store
    /// written before they existed.
    pub async fn index_visibility_history(&self) -> Result<()> {
        const DONE: &[u8] = b"visibility_history_v1";
        if self.db.get(trees::META, DONE)?.is_some() {
            return Ok(());
        }
        let mut batch = WriteBatch::new();
        let rows = self.db.range(trees::STATE_CHANGES, Bound::Unbounded, Bound::Unbounded, false, usize::MAX)?;
        for (k, id) in rows {
            let event_id = ruma::EventId::parse(utf8(&id)?).map_err(Error::internal)?;
            if let Some(pdu) = super::read::load_pdu(&self.db, &event_id)? {
                history_rows(&pdu, pos_suffix(&k)?, &mut batch);
            }
        }
        batch.insert(trees::META, DONE.to_vec(), Vec::new());
        self.db.write(batch).await
    }
}
