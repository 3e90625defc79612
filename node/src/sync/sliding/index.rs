//! The user's rooms as sliding sync lists see them, newest first, kept per connection and
//! brought up to date from the store's room log.

use std::{
    cmp::Reverse,
    collections::{BTreeSet, HashMap},
    ops::Bound,
};

use ruma::{OwnedRoomId, RoomId, UserId, events::StateEventType};

use super::filters::{FilterContext, ListFilter, passes};
use crate::{
    Services,
    error::Result,
    rooms::UserRoom,
    store::{key, pos_bytes, prefix, trees},
};

/// What lists need of one of the user's rooms.
#[derive(Debug, Clone)]
pub struct Known {
    pub membership: UserRoom,
    /// The stream position of the room's newest event (of the invite for an invited room).
    pub bump_stamp: u64,
    /// Only read when a list filters on it ([`RoomIndex::facts`]).
    pub encrypted: bool,
    pub room_type: Option<String>,
}

impl Known {
    /// Joined, invited and knocked rooms: in lists whatever the connection was sent.
    fn active(&self) -> bool {
        matches!(self.membership.membership.as_str(), "join" | "invite" | "knock")
    }

    /// Whether the room belongs in lists: joined, invited and knocked rooms, and a room left
    /// since the connection last sent it (`sent`: the membership it was last sent with), once,
    /// so the client learns of the leave.
    pub fn listed(&self, sent: Option<&str>) -> bool {
        match self.membership.membership.as_str() {
            "join" | "invite" | "knock" => true,
            left => sent.is_some_and(|sent| sent != left),
        }
    }
}

/// The user's rooms, newest first, kept per connection and brought up to date by each request
/// from the rooms the store's room log says changed since; a user in 10,000 rooms then pays
/// for the rooms that changed, not for 10,000.
#[derive(Debug, Default)]
pub struct RoomIndex {
    /// `None` until first filled.
    upto: Option<u64>,
    /// Whether `encrypted` and `room_type` were read (some list filters on them).
    facts: bool,
    pub rooms: HashMap<OwnedRoomId, Known>,
    /// Newest first; the room id breaks ties so the order is stable.
    order: BTreeSet<(Reverse<u64>, OwnedRoomId)>,
    /// Rooms left or banned: listed only until the connection was sent the leave (few).
    left: BTreeSet<OwnedRoomId>,
    /// For each list filter seen (by its JSON), how many active rooms pass it, kept up to date
    /// by every insert and remove, so a request reads a list's count instead of walking it.
    counts: HashMap<String, (ListFilter, usize)>,
    /// The `m.direct` rooms and space children the counts were made with.
    ctx: FilterContext,
}

impl RoomIndex {
    fn insert(&mut self, room_id: OwnedRoomId, known: Known) {
        self.recount(&room_id, Some(&known));
        if let Some(old) = self.rooms.get(&room_id) {
            self.order.remove(&(Reverse(old.bump_stamp), room_id.clone()));
        }
        self.order.insert((Reverse(known.bump_stamp), room_id.clone()));
        if known.active() {
            self.left.remove(&room_id);
        } else {
            self.left.insert(room_id.clone());
        }
        self.rooms.insert(room_id, known);
    }

    fn remove(&mut self, room_id: &RoomId) {
        self.recount(room_id, None);
        self.left.remove(room_id);
        if let Some(old) = self.rooms.remove(room_id) {
            self.order.remove(&(Reverse(old.bump_stamp), room_id.to_owned()));
        }
    }

    /// Moves the running counts from the room as it is to the room as it will be.
    fn recount(&mut self, room_id: &RoomId, new: Option<&Known>) {
        let Self { counts, ctx, rooms, .. } = self;
        let old = rooms.get(room_id);
        for (filter, count) in counts.values_mut() {
            let counted = |known: Option<&Known>| known.is_some_and(|k| k.active() && passes(ctx, filter, room_id, k));
            match (counted(old), counted(new)) {
                (true, false) => *count = count.saturating_sub(1),
                (false, true) => *count += 1,
                _ => {}
            }
        }
    }

    /// How many joined, invited and knocked rooms pass `filter`; the first time a filter is
    /// asked about, the rooms are walked once.
    pub fn count(&mut self, filter: &ListFilter) -> usize {
        let walk =
            |index: &Self| index.rooms.iter().filter(|(id, k)| k.active() && passes(&index.ctx, filter, id, k)).count();
        let Ok(key) = serde_json::to_string(filter) else { return walk(self) };
        if let Some((_, count)) = self.counts.get(&key) {
            return *count;
        }
        let count = walk(self);
        self.counts.insert(key, (filter.clone(), count));
        count
    }

    /// Rooms left or banned, which lists show once.
    pub fn left_rooms(&self) -> impl Iterator<Item = (&OwnedRoomId, &Known)> {
        self.left.iter().filter_map(|id| self.rooms.get_key_value(id))
    }

    /// What the filters know of the user; the running counts start over when it changed.
    pub fn set_context(&mut self, ctx: FilterContext) {
        if ctx != self.ctx {
            self.counts.clear();
            self.ctx = ctx;
        }
    }

    pub fn context(&self) -> &FilterContext {
        &self.ctx
    }

    /// The rooms newest first.
    pub fn newest_first(&self) -> impl Iterator<Item = (&OwnedRoomId, &Known)> {
        self.order.iter().filter_map(|(_, id)| self.rooms.get_key_value(id))
    }

    /// Brings the index to `upto`: only the rooms that changed since it was last brought up to
    /// date, or every room when it is new, the room log does not reach back that far, or it
    /// lacks the facts now needed. A position only moves forward, so an index shared by the
    /// positions of one connection serves a retried older position too.
    pub async fn refresh(&mut self, services: &Services, user: &UserId, upto: u64, facts: bool) -> Result<()> {
        let changed = match self.upto {
            Some(from) if from >= upto => return Ok(()),
            Some(from) if self.facts || !facts => services.db.changes.changed(from, upto).map(|c| (from, c)),
            _ => None,
        };
        match changed {
            Some((from, mut changed)) => {
                changed.extend(services.rooms.membership_changes(user, from, upto)?);
                for room_id in changed {
                    match services.rooms.user_room(user, &room_id)? {
                        Some(membership) => {
                            let known = known(services, &room_id, membership, upto, self.facts).await?;
                            self.insert(room_id, known);
                        }
                        None => self.remove(&room_id),
                    }
                }
            }
            None => {
                *self = RoomIndex { upto: None, facts, ctx: std::mem::take(&mut self.ctx), ..RoomIndex::default() };
                for (room_id, membership) in services.rooms.user_rooms(user)? {
                    let known = known(services, &room_id, membership, upto, facts).await?;
                    self.insert(room_id, known);
                }
            }
        }
        self.upto = Some(upto);
        Ok(())
    }
}

async fn known(services: &Services, room_id: &RoomId, membership: UserRoom, upto: u64, facts: bool) -> Result<Known> {
    let joined = membership.membership == "join";
    let bump_stamp =
        if joined { last_event_pos(services, room_id, upto)?.unwrap_or(membership.pos) } else { membership.pos };
    let (encrypted, room_type) = if joined && facts {
        let encrypted = services.rooms.state_event(room_id, &StateEventType::RoomEncryption, "").await?.is_some();
        (encrypted, room_type(services, room_id).await?)
    } else {
        (false, None)
    };
    Ok(Known { membership, bump_stamp, encrypted, room_type })
}

/// The position of the newest timeline event at or before `upto`, read from the timeline index
/// alone (no event is loaded).
fn last_event_pos(services: &Services, room_id: &RoomId, upto: u64) -> Result<Option<u64>> {
    let start = prefix(&[room_id.as_bytes()]);
    let end = key(&[room_id.as_bytes(), &pos_bytes(upto.saturating_add(1))]);
    let rows = services.db.range(trees::TIMELINE, Bound::Included(&start), Bound::Excluded(&end), true, 1)?;
    rows.first().map(|(k, _)| crate::store::pos_suffix(k)).transpose()
}

/// The `type` of the room's create event, if any.
async fn room_type(services: &Services, room_id: &RoomId) -> Result<Option<String>> {
    let create = services.rooms.state_event(room_id, &StateEventType::RoomCreate, "").await?;
    Ok(create.and_then(|c| c.content_field("type")).and_then(|t| t.as_str().map(str::to_owned)))
}
