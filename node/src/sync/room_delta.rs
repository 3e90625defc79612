//! One room's changes between two stream positions, as both sync APIs send them: the timeline
//! the user may see, the state that changed, and the unread counts. `/sync` v3 (`assemble.rs`)
//! and sliding sync (`sliding/room.rs`) only render these, so the two cannot drift apart.

use std::{collections::BTreeMap, sync::Arc};

use ruma::{RoomId, UserId};

use crate::{Services, error::Result, rooms::Pdu};

/// Timeline events in `(since, upto]`, newest `limit`, oldest first.
pub struct Timeline {
    pub events: Vec<(u64, Pdu)>,
    /// More events were there than `limit`.
    pub limited: bool,
    /// `events` are every event of the room in the range: none was cut by `limit` or hidden.
    pub whole: bool,
}

impl Timeline {
    /// The position of the first event, or just past `upto` when there is none: pagination
    /// backwards starts there.
    pub fn first_pos(&self, upto: u64) -> u64 {
        self.events.first().map(|(p, _)| *p).unwrap_or(upto + 1)
    }

    pub fn prev_batch(&self, upto: u64) -> String {
        super::pagination_token(self.first_pos(upto))
    }
}

/// The timeline `user` may read in `(since, upto]`, by history visibility per event: a new
/// member does not see what came before they could.
pub fn timeline(
    services: &Services,
    user: &UserId,
    room_id: &RoomId,
    since: u64,
    upto: u64,
    limit: usize,
) -> Result<Timeline> {
    let (mut events, mut limited) = services.rooms.timeline_since(room_id, since, upto, limit)?;
    let mut whole = !limited;
    if !events.is_empty() && !joined_throughout(services, user, room_id, &events)? {
        let access = services.rooms.read_access(room_id, user)?;
        if !events.iter().all(|(pos, pdu)| access.may_see(*pos, pdu)) {
            (events, limited) = services.rooms.visible_timeline(room_id, &access, since, upto, limit)?;
            whole = false;
        }
    }
    Ok(Timeline { events, limited, whole })
}

/// Whether `user` was joined to the room at every one of `events` (read after them): their
/// membership now is a join older than the oldest of them, and none of them is about them. A
/// member sees whatever is sent while they are joined, under every history visibility, so
/// a woken sync need not read the room's visibility and membership histories.
fn joined_throughout(services: &Services, user: &UserId, room_id: &RoomId, events: &[(u64, Pdu)]) -> Result<bool> {
    let Some(oldest) = events.iter().map(|(pos, _)| *pos).min() else { return Ok(true) };
    let about_user = |pdu: &Pdu| {
        pdu.kind == ruma::events::TimelineEventType::RoomMember && pdu.state_key.as_deref() == Some(user.as_str())
    };
    if events.iter().any(|(_, pdu)| about_user(pdu)) {
        return Ok(false);
    }
    Ok(services.rooms.user_room(user, room_id)?.is_some_and(|r| r.membership == "join" && r.pos < oldest))
}

/// The room's current state when `full`, else the newest event of each state key that changed
/// in `(since, upto]`.
/// Shared, not copied: a big room's full state is thousands of events, and lazy loading sends
/// only a few of them.
pub async fn state_delta(
    services: &Services,
    room_id: &RoomId,
    since: u64,
    upto: u64,
    full: bool,
) -> Result<Vec<Arc<Pdu>>> {
    if full {
        return services.rooms.current_state(room_id).await;
    }
    let mut latest = BTreeMap::new();
    for (_, pdu) in services.rooms.state_changes(room_id, since, upto)? {
        latest.insert((pdu.kind.to_string(), pdu.state_key.clone().unwrap_or_default()), Arc::new(pdu));
    }
    Ok(latest.into_values().collect())
}

/// Notification and highlight counts at `upto`, through the push rules. `loaded`, when given,
/// holds every event of the room after its position up to `upto`, already read for the
/// timeline: the count reads them again only when it must start before that.
pub async fn unread_counts(
    services: &Services,
    user: &UserId,
    room_id: &RoomId,
    upto: u64,
    joined_members: usize,
    display_name: &super::unread::DisplayName<'_>,
    loaded: Option<(u64, &[(u64, Pdu)])>,
) -> Result<(u64, u64)> {
    super::unread::counts(services, user, room_id, upto, joined_members, display_name, loaded).await
}
