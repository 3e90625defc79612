//! Which rooms each list holds, in which order: the user's rooms through the list's filters,
//! newest activity first (the bump stamp), cut to the requested ranges.

use std::{
    cmp::Reverse,
    collections::{BTreeMap, BTreeSet, HashMap},
    ops::Bound,
};

use ruma::{
    OwnedRoomId, RoomId, UserId,
    api::client::sync::sync_events::v5::request::{List, ListFilters},
    directory::RoomTypeFilter,
    events::StateEventType,
};

use super::connection::{PosState, RoomConfig};
use crate::{
    Services,
    error::Result,
    rooms::UserRoom,
    store::{key, pos_bytes, prefix, trees},
};

/// Ranges past this index are cut: no client shows that many rooms at once.
const MAX_INDEX: u64 = 10_000;
/// A list's or subscription's timeline limit is capped at this.
pub const MAX_TIMELINE_LIMIT: usize = 500;

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
    /// Whether the room belongs in lists: joined, invited and knocked rooms, and a room left
    /// since the connection last sent it (once, so the client learns of the leave).
    pub fn listed(&self, room_id: &RoomId, base: &PosState) -> bool {
        match self.membership.membership.as_str() {
            "join" | "invite" | "knock" => true,
            _ => base.rooms.get(room_id).is_some_and(|sent| sent.membership != self.membership.membership),
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
}

impl RoomIndex {
    fn insert(&mut self, room_id: OwnedRoomId, known: Known) {
        if let Some(old) = self.rooms.get(&room_id) {
            self.order.remove(&(Reverse(old.bump_stamp), room_id.clone()));
        }
        self.order.insert((Reverse(known.bump_stamp), room_id.clone()));
        self.rooms.insert(room_id, known);
    }

    fn remove(&mut self, room_id: &RoomId) {
        if let Some(old) = self.rooms.remove(room_id) {
            self.order.remove(&(Reverse(old.bump_stamp), room_id.to_owned()));
        }
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
            Some(from) if self.facts || !facts => services.db.room_log.changed(from, upto).map(|c| (from, c)),
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
                *self = RoomIndex { upto: None, facts, ..RoomIndex::default() };
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

/// Whether any list filters on what [`Known`] holds beyond membership and recency.
pub fn needs_facts(lists: &BTreeMap<String, List>) -> bool {
    lists
        .values()
        .filter_map(|l| l.filters.as_ref())
        .any(|f| f.is_encrypted.is_some() || !f.room_types.is_empty() || !f.not_room_types.is_empty())
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

/// What list filters need to know about the user: the rooms `m.direct` names.
pub struct FilterContext {
    pub direct_rooms: BTreeSet<OwnedRoomId>,
}

impl FilterContext {
    pub fn load(services: &Services, user: &UserId) -> Result<Self> {
        let mut direct_rooms = BTreeSet::new();
        if let Some(serde_json::Value::Object(direct)) = services.users.account_data(user, None, "m.direct")? {
            for rooms in direct.values() {
                for room in rooms.as_array().into_iter().flatten() {
                    if let Some(room) = room.as_str().and_then(|r| RoomId::parse(r).ok()) {
                        direct_rooms.insert(room);
                    }
                }
            }
        }
        Ok(Self { direct_rooms })
    }
}

/// Whether a room passes a list's filters (all of them: they combine with AND).
pub fn passes(ctx: &FilterContext, filters: &ListFilters, room_id: &RoomId, room: &Known) -> bool {
    if let Some(is_dm) = filters.is_dm
        && ctx.direct_rooms.contains(room_id) != is_dm
    {
        return false;
    }
    if let Some(is_invite) = filters.is_invite
        && (room.membership.membership == "invite") != is_invite
    {
        return false;
    }
    if let Some(is_encrypted) = filters.is_encrypted
        && room.encrypted != is_encrypted
    {
        return false;
    }
    if !filters.room_types.is_empty() || !filters.not_room_types.is_empty() {
        // `Default` (no string) is a room without a type.
        let matches = |f: &RoomTypeFilter| f.as_str() == room.room_type.as_deref();
        if filters.not_room_types.iter().any(matches) {
            return false;
        }
        if !filters.room_types.is_empty() && !filters.room_types.iter().any(matches) {
            return false;
        }
    }
    true
}

/// The `type` of the room's create event, if any.
async fn room_type(services: &Services, room_id: &RoomId) -> Result<Option<String>> {
    let create = services.rooms.state_event(room_id, &StateEventType::RoomCreate, "").await?;
    Ok(create.and_then(|c| c.content_field("type")).and_then(|t| t.as_str().map(str::to_owned)))
}

pub fn timeline_limit(limit: ruma::UInt) -> usize {
    usize::try_from(u64::from(limit)).unwrap_or(MAX_TIMELINE_LIMIT).min(MAX_TIMELINE_LIMIT)
}

/// Every list's room count, and the rooms inside any list's ranges with how to send them.
pub struct Window {
    pub counts: BTreeMap<String, usize>,
    pub rooms: HashMap<OwnedRoomId, RoomConfig>,
}

pub fn window(ctx: &FilterContext, lists: &BTreeMap<String, List>, index: &RoomIndex, base: &PosState) -> Window {
    let mut window = Window { counts: BTreeMap::new(), rooms: HashMap::new() };
    for (name, list) in lists {
        let limit = timeline_limit(list.room_details.timeline_limit);
        let ranges: Vec<(u64, u64)> = list
            .ranges
            .iter()
            .map(|(start, end)| (u64::from(*start).min(MAX_INDEX), u64::from(*end).min(MAX_INDEX)))
            .collect();
        // One pass in order: count the list's rooms and take those whose index is in a range.
        let mut count = 0u64;
        for (room_id, known) in index.newest_first() {
            if !known.listed(room_id, base) || !list.filters.as_ref().is_none_or(|f| passes(ctx, f, room_id, known)) {
                continue;
            }
            if ranges.iter().any(|(start, end)| (*start..=*end).contains(&count)) {
                window.rooms.entry(room_id.clone()).or_default().merge(&list.room_details.required_state, limit);
            }
            count += 1;
        }
        window.counts.insert(name.clone(), usize::try_from(count).unwrap_or(usize::MAX));
    }
    window
}
