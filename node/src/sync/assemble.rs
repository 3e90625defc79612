//! Builds a `/sync` response from the streams, waiting (long-poll) when there is nothing new.

use std::{collections::BTreeSet, time::Duration};

use ruma::{
    OwnedRoomId, RoomId, UInt, UserId,
    api::client::{
        filter::{Filter as EventFilter, FilterDefinition, LazyLoadOptions, RoomEventFilter},
        sync::sync_events::{
            UnreadNotificationsCount,
            v3::{Filter, InvitedRoom, JoinedRoom, KnockedRoom, LeftRoom, Request, Response, State, StateEvents},
        },
    },
    events::{
        StateEventType,
        presence::{PresenceEvent, PresenceEventContent},
    },
    serde::Raw,
};
use serde_json::Value;

use super::Token;
use crate::{
    Services,
    error::{Error, Result},
    http::Auth,
    rooms::Pdu,
};

const DEFAULT_TIMELINE_LIMIT: usize = 10;
const MAX_TIMELINE_LIMIT: usize = 500;
const MAX_TIMEOUT: Duration = Duration::from_secs(60);

pub fn raw<T>(value: &Value) -> Result<Raw<T>> {
    serde_json::value::to_raw_value(value).map(Raw::from_json).map_err(Error::internal)
}

/// Whether an event passes a room event filter's type and sender parts.
pub fn filter_matches(filter: &RoomEventFilter, pdu: &Pdu) -> bool {
    let kind = pdu.kind.to_string();
    let type_match = |pattern: &String| match pattern.strip_suffix('*') {
        Some(prefix) => kind.starts_with(prefix),
        None => *pattern == kind,
    };
    if filter.not_types.iter().any(type_match) {
        return false;
    }
    if let Some(types) = &filter.types
        && !types.iter().any(type_match)
    {
        return false;
    }
    if filter.not_senders.contains(&pdu.sender) {
        return false;
    }
    if let Some(senders) = &filter.senders
        && !senders.contains(&pdu.sender)
    {
        return false;
    }
    true
}

fn load_filter(services: &Services, auth: &Auth, filter: Option<&Filter>) -> Result<FilterDefinition> {
    Ok(match filter {
        None => FilterDefinition::default(),
        Some(Filter::FilterDefinition(def)) => def.clone(),
        Some(Filter::FilterId(id)) => services
            .users
            .filter(&auth.user_id, id)?
            .ok_or_else(|| Error::invalid_param(format!("unknown filter id `{id}`")))?,
        Some(_) => FilterDefinition::default(),
    })
}

pub async fn sync(services: &Services, auth: &Auth, req: Request) -> Result<Response> {
    let since = req.since.as_deref().map(Token::parse).transpose()?;
    let filter = load_filter(services, auth, req.filter.as_ref())?;
    let timeout = req.timeout.unwrap_or_default().min(MAX_TIMEOUT);
    let deadline = tokio::time::Instant::now() + timeout;
    if let Some(since) = since {
        // The client has seen everything up to `since`: its older to-device messages can go.
        services.e2ee.ack_to_device(&auth.user_id, &auth.device_id, since.to_device).await?;
    }
    if let Some(status) = services.sync.presence.synced(&auth.user_id, &req.set_presence) {
        crate::federation::edu::presence(services, &auth.user_id, &status).await;
    }
    // Made before the first build, so no change after that build's position can be missed.
    let mut waiter = services.sync.wakes.waiter(&auth.user_id);
    loop {
        waiter.mark_seen();
        let now = services.sync.current_token();
        // Nothing has happened anywhere since the client's token, so its answer would be
        // empty: the long-poll waits without building it. This is every renewed long-poll in a
        // busy room's fan-out, half of its syncs.
        let nothing_new = since == Some(now) && !req.full_state;
        if !nothing_new || tokio::time::Instant::now() >= deadline {
            let (response, changed) = build(services, auth, since, now, &filter, req.full_state).await?;
            let timed_out = tokio::time::Instant::now() >= deadline;
            if changed || since.is_none() || req.full_state || timed_out {
                return Ok(response);
            }
        }
        let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
        services.sync.wait_for_change(&mut waiter, remaining).await;
    }
}

async fn build(
    services: &Services,
    auth: &Auth,
    since: Option<Token>,
    now: Token,
    filter: &FilterDefinition,
    full_state: bool,
) -> Result<(Response, bool)> {
    let user = &auth.user_id;
    let since_pos = since.map(|t| t.pos).unwrap_or(0);
    let since_typing = since.map(|t| t.typing).unwrap_or(0);
    let mut response = Response::new(now.to_string());
    let mut changed = false;
    let room_filter = &filter.room;
    let wanted = |room: &RoomId| {
        !room_filter.not_rooms.iter().any(|r| r == room)
            && room_filter.rooms.as_ref().is_none_or(|rooms| rooms.iter().any(|r| r == room))
    };
    let limit = room_filter
        .timeline
        .limit
        .map(|l| usize::try_from(u64::from(l)).unwrap_or(MAX_TIMELINE_LIMIT))
        .unwrap_or(DEFAULT_TIMELINE_LIMIT)
        .clamp(1, MAX_TIMELINE_LIMIT);
    let since_to_device = since.map(|t| t.to_device).unwrap_or(0);
    // Whether the user's own streams (memberships, account data, to-device messages) moved
    // since the token (to-device may lag behind it): a woken sync in a busy room skips reading
    // each of them.
    let own_moved = since.is_none()
        || services.db.changes.touches_user(user, since_pos.min(since_to_device), now.pos) != Some(false);
    let changed_memberships: BTreeSet<_> = if own_moved {
        services.rooms.membership_changes(user, since_pos, now.pos)?.into_iter().collect()
    } else {
        BTreeSet::new()
    };
    let display_name = super::unread::DisplayName::new(services, user);

    let visited = rooms_to_visit(services, user, since.filter(|_| !full_state), now, &changed_memberships)?;
    for (room_id, user_room) in &visited {
        let room_id = room_id.as_ref();
        if !wanted(room_id) {
            continue;
        }
        let newly = since.is_none() || changed_memberships.contains(room_id);
        match user_room.membership.as_str() {
            "join" => {
                let members = services.rooms.member_summary(room_id).await?;
                // A room joined since the token is sent whole, as in an initial sync.
                let room_since = if newly { 0 } else { since_pos };
                let joined = joined_room(
                    services,
                    auth,
                    room_id,
                    room_since,
                    since_typing,
                    now,
                    limit,
                    filter,
                    full_state || newly,
                    members.as_ref(),
                    &display_name,
                )
                .await?;
                if let Some(joined) = joined {
                    changed = true;
                    response.rooms.join.insert(room_id.to_owned(), joined);
                }
            }
            "invite" if newly => {
                let mut invite = InvitedRoom::new();
                invite.invite_state.events = stripped_room_state(services, user, room_id, &user_room.event_id).await?;
                changed = true;
                response.rooms.invite.insert(room_id.to_owned(), invite);
            }
            "knock" if newly => {
                let mut knock = KnockedRoom::new();
                knock.knock_state.events = stripped_room_state(services, user, room_id, &user_room.event_id).await?;
                changed = true;
                response.rooms.knock.insert(room_id.to_owned(), knock);
            }
            "leave" | "ban" if newly && (since.is_some() || room_filter.include_leave) => {
                let mut left = LeftRoom::new();
                let access = services.rooms.read_access(room_id, user)?;
                let (events, limited) =
                    services.rooms.visible_timeline(room_id, &access, since_pos, user_room.pos, limit)?;
                left.timeline.limited = limited;
                for e in &events {
                    left.timeline.events.push(raw(&services.rooms.client_event(
                        e,
                        Some((user, &auth.device_id)),
                        false,
                    )?)?);
                }
                changed = true;
                response.rooms.leave.insert(room_id.to_owned(), left);
            }
            _ => {}
        }
    }

    let account_data =
        if own_moved { services.users.account_data_since(user, since_pos, now.pos)? } else { Vec::new() };
    for (room, kind, content) in account_data {
        let event = serde_json::json!({ "type": kind, "content": content });
        match room {
            None => response.account_data.events.push(raw(&event)?),
            Some(room) => {
                if let Some(joined) = response.rooms.join.get_mut(&room) {
                    joined.account_data.events.push(raw(&event)?);
                } else if since.is_some() && wanted(&room) {
                    let mut joined = JoinedRoom::new();
                    joined.account_data.events.push(raw(&event)?);
                    response.rooms.join.insert(room, joined);
                }
            }
        }
        changed = true;
    }

    // At most a batch of to-device messages; when more are queued, `next_batch` records the
    // last one delivered, so the next sync acknowledges only those and carries on after them.
    let cap = crate::e2ee::MAX_TO_DEVICE_PER_SYNC;
    let mut queued = if own_moved {
        services.e2ee.to_device_since(user, &auth.device_id, since_to_device, now.pos, cap + 1)?
    } else {
        Vec::new()
    };
    if queued.len() > cap {
        queued.truncate(cap);
        if let Some((last, _)) = queued.last() {
            response.next_batch = super::Token { to_device: *last, ..now }.to_string();
        }
    }
    for (_, event) in &queued {
        response.to_device.events.push(raw(event)?);
        changed = true;
    }
    if since.is_some() {
        // An incremental sync has already read the rooms that changed and the user's
        // memberships in the window; a full-state one visited every room, so it asks anew.
        let updates = if full_state {
            crate::e2ee::device_lists::device_list_updates(services, user, since_pos, now.pos).await?
        } else {
            crate::e2ee::device_lists::device_list_updates_among(
                services,
                user,
                since_pos,
                now.pos,
                &changed_memberships,
                &visited,
            )
            .await?
        };
        changed |= !updates.changed.is_empty() || !updates.left.is_empty();
        response.device_lists.changed = updates.changed;
        response.device_lists.left = updates.left;
    }
    let since_presence = since.map(|t| t.presence).unwrap_or(0);
    if now.presence > since_presence {
        response.presence.events = presence_events(services, user, since_presence, &filter.presence)?;
        changed |= !response.presence.events.is_empty();
    }
    for (algorithm, count) in services.e2ee.one_time_key_counts(user, &auth.device_id)? {
        response
            .device_one_time_keys_count
            .insert(algorithm.as_str().into(), UInt::try_from(count).unwrap_or(UInt::MAX));
    }
    response.device_unused_fallback_key_types = Some(
        services.e2ee.unused_fallback_key_types(user, &auth.device_id)?.iter().map(|a| a.as_str().into()).collect(),
    );
    Ok((response, changed))
}

/// The rooms a sync looks at: every room of the user on an initial or full-state sync, or when
/// the room log does not reach back to the token (a token from before the node started); else
/// only the rooms that changed since the token (timeline, receipts, typing, the user's own
/// membership). Room account data is found separately. This keeps an incremental sync's cost
/// with what changed, not with how many rooms the user is in.
fn rooms_to_visit(
    services: &Services,
    user: &UserId,
    since: Option<Token>,
    now: Token,
    changed_memberships: &BTreeSet<OwnedRoomId>,
) -> Result<Vec<(OwnedRoomId, crate::rooms::read::UserRoom)>> {
    let Some(since) = since else { return services.rooms.user_rooms(user) };
    let Some(mut changed) = services.db.changes.changed(since.pos, now.pos) else {
        return services.rooms.user_rooms(user);
    };
    changed.extend(services.sync.typing.rooms_changed_since(since.typing));
    changed.extend(changed_memberships.iter().cloned());
    services.rooms.user_rooms_among(user, changed)
}

/// What an invitee or a knocker sees of a room before joining: the state the other server sent
/// for a room this node is not in, else the room's stripped state here; then the user's own
/// membership event.
pub(crate) async fn stripped_room_state<T>(
    services: &Services,
    user: &UserId,
    room_id: &RoomId,
    membership_event: &ruma::EventId,
) -> Result<Vec<Raw<T>>> {
    let mut events = Vec::new();
    if let Some(remote) = services.rooms.remote_invite_state(user, room_id)? {
        for event in &remote {
            events.push(raw(event)?);
        }
        return Ok(events);
    }
    let state = services.rooms.current_state(room_id).await?;
    for pdu in state.iter().filter(|p| stripped_state_type(p)) {
        events.push(raw(&pdu.to_stripped_value())?);
    }
    if let Some((_, pdu)) = services.rooms.event_with_pos(membership_event)? {
        events.push(raw(&pdu.to_stripped_value())?);
    }
    Ok(events)
}

/// `m.presence` for the syncing user and the users sharing a joined room with them, changed
/// after `since`.
fn presence_events(
    services: &Services,
    user: &UserId,
    since: u64,
    filter: &EventFilter,
) -> Result<Vec<Raw<PresenceEvent>>> {
    let kind = "m.presence".to_owned();
    let excluded = |list: &[String]| list.iter().any(|t| *t == kind || t == "*");
    if excluded(&filter.not_types) || filter.types.as_ref().is_some_and(|t| !t.iter().any(|t| *t == kind || t == "*")) {
        return Ok(Vec::new());
    }
    let changed = services.sync.presence.changed_since(since);
    if changed.is_empty() {
        return Ok(Vec::new());
    }
    let joined = services.rooms.joined_rooms(user)?;
    let mut events = Vec::new();
    for (other, status) in changed {
        if filter.not_senders.contains(&other) || filter.senders.as_ref().is_some_and(|s| !s.contains(&other)) {
            continue;
        }
        let shares = other == *user || services.rooms.joined_rooms(&other)?.iter().any(|room| joined.contains(room));
        if !shares {
            continue;
        }
        let mut content = PresenceEventContent::new(status.presence.clone());
        content.status_msg = status.status_msg.clone();
        content.last_active_ago = Some(status.last_active_ago_ms());
        content.currently_active = Some(status.currently_active);
        events.push(Raw::new(&PresenceEvent { content, sender: other }).map_err(Error::internal)?);
    }
    if let Some(limit) = filter.limit.and_then(|l| usize::try_from(u64::from(l)).ok()) {
        events.truncate(limit);
    }
    Ok(events)
}

/// The state types shown to an invitee before joining.
pub fn stripped_state_type(pdu: &Pdu) -> bool {
    matches!(
        pdu.kind.to_string().as_str(),
        "m.room.create"
            | "m.room.join_rules"
            | "m.room.name"
            | "m.room.avatar"
            | "m.room.canonical_alias"
            | "m.room.encryption"
            | "m.room.topic"
    )
}

#[allow(clippy::too_many_arguments)]
async fn joined_room(
    services: &Services,
    auth: &Auth,
    room_id: &RoomId,
    since: u64,
    since_typing: u64,
    now: super::Token,
    limit: usize,
    filter: &FilterDefinition,
    full_state: bool,
    members: &crate::rooms::head::MemberSummary,
    display_name: &super::unread::DisplayName<'_>,
) -> Result<Option<JoinedRoom>> {
    let user = &auth.user_id;
    let viewer = Some((&**user, &*auth.device_id));
    let mut joined = JoinedRoom::new();
    let mut any = false;

    let timeline = super::room_delta::timeline(services, user, room_id, since, now.pos, limit)?;
    let limited = timeline.limited;
    let events: Vec<&(u64, Pdu)> =
        timeline.events.iter().filter(|(_, p)| filter_matches(&filter.room.timeline, p)).collect();
    let first_pos = events.first().map(|(p, _)| *p).unwrap_or(now.pos + 1);
    joined.timeline.limited = limited;
    if since == 0 || limited || !events.is_empty() {
        joined.timeline.prev_batch = Some(crate::sync::pagination_token(first_pos));
    }
    for e in &events {
        joined.timeline.events.push(raw(&services.rooms.client_event(e, viewer, false)?)?);
        any = true;
    }

    // State: the whole current state on an initial (or full-state) sync, else the state that
    // changed between the token and the start of the timeline. Events already in the timeline
    // are left out, and with lazy loading only the members the timeline needs are sent.
    let in_timeline: BTreeSet<_> = events.iter().map(|(_, p)| p.event_id.clone()).collect();
    let lazy = matches!(filter.room.state.lazy_load_options, LazyLoadOptions::Enabled { .. });
    let senders: BTreeSet<String> =
        events.iter().map(|(_, p)| p.sender.to_string()).chain([user.to_string()]).collect();
    let state =
        super::room_delta::state_delta(services, room_id, since, first_pos.saturating_sub(1), full_state || since == 0)
            .await?;
    // The summary may be left out when it has not changed (as Synapse does): only membership,
    // name and alias events in the window can change it.
    let touches_summary = |pdu: &Pdu| {
        matches!(
            pdu.kind,
            ruma::events::TimelineEventType::RoomMember
                | ruma::events::TimelineEventType::RoomName
                | ruma::events::TimelineEventType::RoomCanonicalAlias
        )
    };
    let summary_changed = since == 0
        || full_state
        || timeline.events.iter().any(|(_, p)| touches_summary(p))
        || state.iter().any(|p| touches_summary(p));
    let mut state_events = StateEvents::new();
    for pdu in state {
        if in_timeline.contains(&pdu.event_id) {
            continue;
        }
        if lazy
            && pdu.kind == ruma::events::TimelineEventType::RoomMember
            && !pdu.state_key.as_ref().is_some_and(|k| senders.contains(k))
        {
            continue;
        }
        state_events.events.push(raw(&services.rooms.client_event(&(0, (*pdu).clone()), None, false)?)?);
        any = true;
    }
    joined.state = State::Before(state_events);

    if let Some(typing) = services.sync.typing.typing_since(room_id, since_typing) {
        let event = serde_json::json!({ "type": "m.typing", "content": { "user_ids": typing } });
        joined.ephemeral.events.push(raw(&event)?);
        any = true;
    }
    if let Some(receipts) = services.rooms.receipt_event(room_id, user, since, now.pos)? {
        joined.ephemeral.events.push(raw(&receipts)?);
        any = true;
    }

    if any || since == 0 {
        let loaded = timeline.whole.then_some((since, &timeline.events[..]));
        let (notify, highlight) =
            super::room_delta::unread_counts(services, user, room_id, now.pos, members.joined, display_name, loaded)
                .await?;
        joined.unread_notifications = UnreadNotificationsCount::new();
        joined.unread_notifications.notification_count = Some(UInt::try_from(notify).unwrap_or(UInt::MAX));
        joined.unread_notifications.highlight_count = Some(UInt::try_from(highlight).unwrap_or(UInt::MAX));
        if summary_changed {
            joined.summary.joined_member_count = Some(UInt::try_from(members.joined).unwrap_or(UInt::MAX));
            joined.summary.invited_member_count = Some(UInt::try_from(members.invited).unwrap_or(UInt::MAX));
            let has_name = services.rooms.state_event(room_id, &StateEventType::RoomName, "").await?.is_some();
            if !has_name {
                joined.summary.heroes = members.heroes(user, 5);
            }
        }
    }
    Ok((any || since == 0).then_some(joined))
}
