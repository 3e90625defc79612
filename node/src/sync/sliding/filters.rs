//! List filters: what a room must be to pass a list's `filters`, and what the user's own data
//! (`m.direct`) and the spaces they filter by say about their rooms.

use std::collections::{BTreeMap, BTreeSet};

use ruma::{
    OwnedRoomId, RoomId, UserId,
    api::client::sync::sync_events::v5::request::{List, ListFilters},
    directory::RoomTypeFilter,
};
use serde::{Deserialize, Serialize};

use super::index::Known;
use crate::{
    Services,
    error::{Error, Result},
};

/// A list's filters: ruma's, and MSC4186's `spaces`, which ruma 0.16 does not model (it is read
/// from the request's JSON by [`list_spaces`]). Serialised, it keys the index's running counts.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ListFilter {
    pub filters: Option<ListFilters>,
    /// Only rooms that are children of one of these spaces.
    pub spaces: BTreeSet<OwnedRoomId>,
}

/// Each list's filters, with the `spaces` of the list of the same name.
pub fn of_lists(
    lists: &BTreeMap<String, List>,
    spaces: &BTreeMap<String, BTreeSet<OwnedRoomId>>,
) -> BTreeMap<String, ListFilter> {
    lists
        .iter()
        .map(|(name, list)| {
            let spaces = spaces.get(name).cloned().unwrap_or_default();
            (name.clone(), ListFilter { filters: list.filters.clone(), spaces })
        })
        .collect()
}

/// The part of a sliding sync body ruma drops: `lists.<name>.filters.spaces`.
#[derive(Deserialize)]
struct RawBody {
    #[serde(default)]
    lists: Option<BTreeMap<String, RawList>>,
}

#[derive(Deserialize)]
struct RawList {
    #[serde(default)]
    filters: Option<RawFilters>,
}

#[derive(Deserialize)]
struct RawFilters {
    #[serde(default)]
    spaces: Option<BTreeSet<OwnedRoomId>>,
}

/// The `spaces` filter of each list that has one, from the request's JSON body (which ruma has
/// already accepted, so only a bad room id can fail here).
pub fn list_spaces(body: &[u8]) -> Result<BTreeMap<String, BTreeSet<OwnedRoomId>>> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(BTreeMap::new());
    }
    let raw: RawBody = serde_json::from_slice(body).map_err(|e| Error::bad_json(format!("list filters: {e}")))?;
    Ok(raw
        .lists
        .unwrap_or_default()
        .into_iter()
        .filter_map(|(name, list)| Some((name, list.filters?.spaces?)))
        .filter(|(_, spaces)| !spaces.is_empty())
        .collect())
}

/// Whether any list filters on what [`Known`] holds beyond membership and recency.
pub fn needs_facts(filters: &BTreeMap<String, ListFilter>) -> bool {
    filters
        .values()
        .filter_map(|l| l.filters.as_ref())
        .any(|f| f.is_encrypted.is_some() || !f.room_types.is_empty() || !f.not_room_types.is_empty())
}

/// What list filters need to know about the user: the rooms `m.direct` names, and the children
/// of the spaces lists filter by.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct FilterContext {
    pub direct_rooms: BTreeSet<OwnedRoomId>,
    /// For each space a list filters by that the user has joined, its children (not theirs:
    /// MSC4186 does not descend into subspaces). A space the user is not in has no entry, so no
    /// room passes through it.
    pub space_children: BTreeMap<OwnedRoomId, BTreeSet<OwnedRoomId>>,
}

impl FilterContext {
    pub async fn load<'a>(
        services: &Services,
        user: &UserId,
        filters: impl IntoIterator<Item = &'a ListFilter>,
    ) -> Result<Self> {
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
        let mut space_children = BTreeMap::new();
        let spaces: BTreeSet<&OwnedRoomId> = filters.into_iter().flat_map(|f| &f.spaces).collect();
        for space in spaces {
            let joined = services.rooms.user_room(user, space)?.is_some_and(|r| r.membership == "join");
            if joined {
                space_children.insert(space.clone(), services.rooms.space_children(space).await?);
            }
        }
        Ok(Self { direct_rooms, space_children })
    }
}

/// Whether a room passes a list's filters (all of them: they combine with AND); no filters
/// pass every room.
pub fn passes(ctx: &FilterContext, filter: &ListFilter, room_id: &RoomId, room: &Known) -> bool {
    if !filter.spaces.is_empty()
        && !filter.spaces.iter().any(|space| ctx.space_children.get(space).is_some_and(|c| c.contains(room_id)))
    {
        return false;
    }
    let Some(filters) = &filter.filters else { return true };
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
