//! List filters: what a room must be to pass a list's `filters`, and what the user's own data
//! (`m.direct`) says about their rooms.

use std::collections::{BTreeMap, BTreeSet};

use ruma::{
    OwnedRoomId, RoomId, UserId,
    api::client::sync::sync_events::v5::request::{List, ListFilters},
    directory::RoomTypeFilter,
};

use super::index::Known;
use crate::{Services, error::Result};

/// Whether any list filters on what [`Known`] holds beyond membership and recency.
pub fn needs_facts(lists: &BTreeMap<String, List>) -> bool {
    lists
        .values()
        .filter_map(|l| l.filters.as_ref())
        .any(|f| f.is_encrypted.is_some() || !f.room_types.is_empty() || !f.not_room_types.is_empty())
}

/// What list filters need to know about the user: the rooms `m.direct` names.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
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

/// Whether a room passes a list's filters (all of them: they combine with AND); no filters
/// pass every room.
pub fn passes(ctx: &FilterContext, filters: Option<&ListFilters>, room_id: &RoomId, room: &Known) -> bool {
    let Some(filters) = filters else { return true };
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
