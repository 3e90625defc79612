//! Which rooms each list holds, in which order: the user's rooms through the list's filters,
//! newest activity first (the bump stamp), cut to the requested ranges.

use std::{
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

/// A room the user may see in lists.
pub struct Candidate {
    pub room_id: OwnedRoomId,
    pub membership: UserRoom,
    /// The stream position of the room's newest event (of the invite for an invited room).
    pub bump_stamp: u64,
}

/// The user's rooms for lists: joined, invited and knocked ones, and rooms left since the
/// connection last sent them (once, so the client learns of the leave).
pub fn candidates(services: &Services, user: &UserId, base: &PosState, upto: u64) -> Result<Vec<Candidate>> {
    let mut out = Vec::new();
    for (room_id, membership) in services.rooms.user_rooms(user)? {
        let listed = match membership.membership.as_str() {
            "join" | "invite" | "knock" => true,
            _ => base.rooms.get(&room_id).is_some_and(|sent| sent.membership != membership.membership),
        };
        if !listed {
            continue;
        }
        let bump_stamp = match membership.membership.as_str() {
            "join" => last_event_pos(services, &room_id, upto)?.unwrap_or(membership.pos),
            _ => membership.pos,
        };
        out.push(Candidate { room_id, membership, bump_stamp });
    }
    // Newest first; the room id breaks ties so the order is stable.
    out.sort_by(|a, b| b.bump_stamp.cmp(&a.bump_stamp).then_with(|| a.room_id.cmp(&b.room_id)));
    Ok(out)
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
pub async fn passes(services: &Services, ctx: &FilterContext, filters: &ListFilters, room: &Candidate) -> Result<bool> {
    if let Some(is_dm) = filters.is_dm
        && ctx.direct_rooms.contains(&room.room_id) != is_dm
    {
        return Ok(false);
    }
    if let Some(is_invite) = filters.is_invite
        && (room.membership.membership == "invite") != is_invite
    {
        return Ok(false);
    }
    let joined = room.membership.membership == "join";
    if let Some(is_encrypted) = filters.is_encrypted {
        let encrypted =
            joined && services.rooms.state_event(&room.room_id, &StateEventType::RoomEncryption, "").await?.is_some();
        if encrypted != is_encrypted {
            return Ok(false);
        }
    }
    if !filters.room_types.is_empty() || !filters.not_room_types.is_empty() {
        let kind = if joined { room_type(services, &room.room_id).await? } else { None };
        // `Default` (no string) is a room without a type.
        let matches = |f: &RoomTypeFilter| f.as_str() == kind.as_deref();
        if filters.not_room_types.iter().any(matches) {
            return Ok(false);
        }
        if !filters.room_types.is_empty() && !filters.room_types.iter().any(matches) {
            return Ok(false);
        }
    }
    Ok(true)
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

pub async fn window(
    services: &Services,
    ctx: &FilterContext,
    lists: &BTreeMap<String, List>,
    candidates: &[Candidate],
) -> Result<Window> {
    let mut window = Window { counts: BTreeMap::new(), rooms: HashMap::new() };
    for (name, list) in lists {
        let mut members = Vec::new();
        for room in candidates {
            let passes = match &list.filters {
                Some(filters) => passes(services, ctx, filters, room).await?,
                None => true,
            };
            if passes {
                members.push(room);
            }
        }
        window.counts.insert(name.clone(), members.len());
        let limit = timeline_limit(list.room_details.timeline_limit);
        for (start, end) in &list.ranges {
            let (start, end) = (u64::from(*start).min(MAX_INDEX), u64::from(*end).min(MAX_INDEX));
            for index in start..=end {
                let Some(room) = usize::try_from(index).ok().and_then(|i| members.get(i)) else { break };
                window.rooms.entry(room.room_id.clone()).or_default().merge(&list.room_details.required_state, limit);
            }
        }
    }
    Ok(window)
}
