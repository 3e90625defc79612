//! Which rooms each list holds, in which order: the user's rooms through the list's filters,
//! newest activity first (the bump stamp), cut to the requested ranges.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use ruma::{
    OwnedRoomId, RoomId, UserId,
    api::client::sync::sync_events::v5::request::{List, ListFilters},
    directory::RoomTypeFilter,
};

use super::{
    connection::{PosState, RoomConfig},
    index::{Known, RoomIndex},
};
use crate::{Services, error::Result};

/// Ranges past this index are cut: no client shows that many rooms at once.
const MAX_INDEX: u64 = 10_000;
/// A list's or subscription's timeline limit is capped at this.
pub const MAX_TIMELINE_LIMIT: usize = 500;

/// Whether any list filters on what [`Known`] holds beyond membership and recency.
pub fn needs_facts(lists: &BTreeMap<String, List>) -> bool {
    lists
        .values()
        .filter_map(|l| l.filters.as_ref())
        .any(|f| f.is_encrypted.is_some() || !f.room_types.is_empty() || !f.not_room_types.is_empty())
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

pub fn timeline_limit(limit: ruma::UInt) -> usize {
    usize::try_from(u64::from(limit)).unwrap_or(MAX_TIMELINE_LIMIT).min(MAX_TIMELINE_LIMIT)
}

/// Every list's room count, and the rooms inside any list's ranges with how to send them.
pub struct Window {
    pub counts: BTreeMap<String, usize>,
    pub rooms: HashMap<OwnedRoomId, RoomConfig>,
}

/// The membership a room was last sent to the connection with, if it was.
pub fn sent_membership<'a>(base: &'a PosState, room_id: &RoomId) -> Option<&'a str> {
    base.rooms.get(room_id).map(|sent| sent.membership.as_str())
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
            if !known.listed(sent_membership(base, room_id))
                || !list.filters.as_ref().is_none_or(|f| passes(ctx, f, room_id, known))
            {
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
