//! Reading rooms: messages, context, single events, state, members and relations.

use std::sync::Arc;

use ruma::{
    UInt,
    api::{
        Direction,
        client::{
            context::get_context,
            membership::{get_member_events, joined_members},
            message::get_message_events,
            relations::{
                get_relating_events, get_relating_events_with_rel_type,
                get_relating_events_with_rel_type_and_event_type,
            },
            room::{get_event_by_timestamp, get_room_event},
            state::{get_state_event_for_key, get_state_events},
        },
    },
    events::StateEventType,
};

use crate::{
    Services,
    error::{Error, Result},
    http::{Auth, Ruma},
    rooms::{Pdu, visibility::ReadAccess},
    sync::{
        assemble::{filter_matches, raw},
        pagination_token, parse_pagination_token,
    },
};

/// What the caller may read of the room: 403 if nothing (never joined, and not world-readable).
/// Knocking, an invite (accepted or not) and a ban before joining give no read access.
pub(super) async fn access(s: &Services, auth: &Auth, room_id: &ruma::RoomId) -> Result<ReadAccess> {
    if !s.rooms.exists(room_id)? {
        return Err(Error::forbidden("you are not in this room"));
    }
    let access = s.rooms.read_access(room_id, &auth.user_id)?;
    if access.any() { Ok(access) } else { Err(Error::forbidden("you are not in this room")) }
}

/// The room state the caller may see: the current state while joined (or for a world-readable
/// room they never joined), else the state as it was when they left.
async fn readable_state(
    s: &Services,
    auth: &Auth,
    room_id: &ruma::RoomId,
    access: &ReadAccess,
) -> Result<Vec<Arc<Pdu>>> {
    if access.left_at().is_some()
        && let Some(user_room) = s.rooms.user_room(&auth.user_id, room_id)?
        && let Some(state) = s.rooms.state_after(&user_room.event_id)?
    {
        let mut out = Vec::with_capacity(state.len());
        for id in state.values() {
            if let Some(pdu) = s.rooms.pdu(id)? {
                out.push(Arc::new(pdu));
            }
        }
        return Ok(out);
    }
    s.rooms.current_state(room_id).await
}

/// A refusal to read becomes 404, the spec's one answer for an event the caller may not see;
/// any other error (the store's) stays what it is.
pub(super) fn hidden_as_missing(e: Error) -> Error {
    match e {
        Error::Forbidden(_) => Error::not_found("no such event"),
        other => other,
    }
}

/// Most timeline rows one `/messages` call reads, whatever its filter: a filter that matches
/// nothing must not make one request walk a whole room.
const MAX_SCAN: usize = 5_000;

fn limit_of(limit: UInt, max: usize) -> usize {
    usize::try_from(u64::from(limit)).unwrap_or(max).clamp(1, max)
}

pub async fn messages(
    s: Arc<Services>,
    req: Ruma<get_message_events::v3::Request>,
) -> Result<get_message_events::v3::Response> {
    let auth = req.user()?.clone();
    let req = req.body;
    let access = access(&s, &auth, &req.room_id).await?;
    let backwards = req.dir == Direction::Backward;
    let start = match &req.from {
        Some(t) => parse_pagination_token(t)?,
        None if backwards => s.db.streams.visible().saturating_add(1),
        None => 0,
    };
    let stop = req.to.as_deref().map(parse_pagination_token).transpose()?;
    let limit = limit_of(req.limit, 1000);
    let mut chunk = Vec::new();
    let mut cursor = start;
    let mut end = None;
    let upto = s.db.streams.visible();
    let mut scanned = 0;
    // Filtered-out events still advance the cursor; scan in pages until the chunk is full, or
    // until the scan bound, where `end` lets the client go on from there.
    'scan: loop {
        let page = s.rooms.paginate(&req.room_id, cursor, backwards, limit)?;
        if page.is_empty() {
            break;
        }
        for (pos, pdu) in page {
            cursor = pos;
            if stop.is_some_and(|stop| if backwards { pos < stop } else { pos >= stop }) || pos > upto {
                break 'scan;
            }
            scanned += 1;
            if scanned > MAX_SCAN {
                end = Some(pagination_token(pos));
                break 'scan;
            }
            if !access.may_see(pos, &pdu) || !filter_matches(&req.filter, &pdu) {
                continue;
            }
            chunk.push(raw(&s.rooms.client_event(&(pos, pdu), Some((&auth.user_id, &auth.device_id)), true)?)?);
            if chunk.len() == limit {
                end = Some(pagination_token(pos));
                break 'scan;
            }
        }
    }
    let mut response = get_message_events::v3::Response::new();
    response.start = pagination_token(start);
    response.end = end;
    response.chunk = chunk;
    Ok(response)
}

pub async fn event(s: Arc<Services>, req: Ruma<get_room_event::v3::Request>) -> Result<get_room_event::v3::Response> {
    let auth = req.user()?;
    // The spec's one answer for an event the caller may not read is 404, as for a missing one.
    let access = access(&s, auth, &req.room_id).await.map_err(hidden_as_missing)?;
    let (pos, pdu) = s.rooms.served_event(&req.event_id)?.ok_or_else(|| Error::not_found("no such event"))?;
    if pdu.room_id != req.room_id || !access.may_see(pos, &pdu) {
        return Err(Error::not_found("no such event"));
    }
    Ok(get_room_event::v3::Response::new(raw(&s.rooms.client_event(
        &(pos, pdu),
        Some((&auth.user_id, &auth.device_id)),
        true,
    )?)?))
}

/// `GET /rooms/{roomId}/timestamp_to_event`: jump to a date.
pub async fn event_at_ts(
    s: Arc<Services>,
    req: Ruma<get_event_by_timestamp::v1::Request>,
) -> Result<get_event_by_timestamp::v1::Response> {
    let auth = req.user()?;
    let access = access(&s, auth, &req.room_id).await?;
    let forward = req.dir == Direction::Forward;
    let (_, pdu) = s
        .rooms
        .event_at_ts(&req.room_id, req.ts.get().into(), forward, &access)?
        .ok_or_else(|| Error::not_found("no event you may see in that direction"))?;
    Ok(get_event_by_timestamp::v1::Response::new(pdu.event_id.clone(), pdu.origin_server_ts))
}

pub async fn context(s: Arc<Services>, req: Ruma<get_context::v3::Request>) -> Result<get_context::v3::Response> {
    let auth = req.user()?.clone();
    let access = access(&s, &auth, &req.room_id).await?;
    let (pos, pdu) = s.rooms.served_event(&req.event_id)?.ok_or_else(|| Error::not_found("no such event"))?;
    if pdu.room_id != req.room_id || !access.may_see(pos, &pdu) {
        return Err(Error::not_found("no such event"));
    }
    let half = limit_of(req.limit, 100) / 2;
    let viewer = Some((&*auth.user_id, &*auth.device_id));
    let before = s.rooms.paginate(&req.room_id, pos, true, half.max(1))?;
    let after = s.rooms.paginate(&req.room_id, pos, false, half.max(1))?;
    let mut response = get_context::v3::Response::new();
    response.start = Some(pagination_token(before.last().map(|(p, _)| *p).unwrap_or(pos)));
    response.end = Some(pagination_token(after.last().map(|(p, _)| *p).unwrap_or(pos)));
    for e in before.iter().filter(|(p, e)| access.may_see(*p, e)) {
        response.events_before.push(raw(&s.rooms.client_event(e, viewer, true)?)?);
    }
    for e in after.iter().filter(|(p, e)| access.may_see(*p, e)) {
        response.events_after.push(raw(&s.rooms.client_event(e, viewer, true)?)?);
    }
    for state in readable_state(&s, &auth, &req.room_id, &access).await? {
        response.state.push(raw(&s.rooms.client_event(&(0, (*state).clone()), None, true)?)?);
    }
    response.event = Some(raw(&s.rooms.client_event(&(pos, pdu), viewer, true)?)?);
    Ok(response)
}

/// The state the caller may read, or 403.
async fn state_for(s: &Services, auth: &Auth, room_id: &ruma::RoomId) -> Result<Vec<Arc<Pdu>>> {
    let access = access(s, auth, room_id).await?;
    readable_state(s, auth, room_id, &access).await
}

pub async fn state_all(
    s: Arc<Services>,
    req: Ruma<get_state_events::v3::Request>,
) -> Result<get_state_events::v3::Response> {
    let auth = req.user()?;
    let mut room_state = Vec::new();
    for pdu in state_for(&s, auth, &req.room_id).await? {
        room_state.push(raw(&s.rooms.client_event(&(0, (*pdu).clone()), None, true)?)?);
    }
    Ok(get_state_events::v3::Response::new(room_state))
}

pub async fn state_for_key(
    s: Arc<Services>,
    req: Ruma<get_state_event_for_key::v3::Request>,
) -> Result<get_state_event_for_key::v3::Response> {
    let auth = req.user()?;
    let kind = StateEventType::from(req.event_type.to_string());
    let pdu = state_for(&s, auth, &req.room_id)
        .await?
        .into_iter()
        .find(|p| p.state_event_type() == kind && p.state_key.as_deref() == Some(req.state_key.as_str()))
        .ok_or_else(|| Error::not_found("no such state event"))?;
    let event = match req.format {
        get_state_event_for_key::v3::StateEventFormat::Event => {
            s.rooms.client_event(&(0, (*pdu).clone()), None, true)?
        }
        _ => pdu.content_value(),
    };
    Ok(get_state_event_for_key::v3::Response::new(serde_json::value::to_raw_value(&event).map_err(Error::internal)?))
}

pub async fn members(
    s: Arc<Services>,
    req: Ruma<get_member_events::v3::Request>,
) -> Result<get_member_events::v3::Response> {
    let auth = req.user()?;
    let mut chunk = Vec::new();
    for pdu in state_for(&s, auth, &req.room_id).await? {
        if pdu.kind != ruma::events::TimelineEventType::RoomMember {
            continue;
        }
        let membership = pdu.membership().unwrap_or_default();
        if let Some(only) = &req.membership
            && only.as_str() != membership
        {
            continue;
        }
        if let Some(not) = &req.not_membership
            && not.as_str() == membership
        {
            continue;
        }
        chunk.push(raw(&s.rooms.client_event(&(0, (*pdu).clone()), None, true)?)?);
    }
    Ok(get_member_events::v3::Response::new(chunk))
}

pub async fn joined_members(
    s: Arc<Services>,
    req: Ruma<joined_members::v3::Request>,
) -> Result<joined_members::v3::Response> {
    let auth = req.user()?;
    // Current members only (the spec): a user who left does not follow who is in the room.
    if s.rooms.membership(&req.room_id, &auth.user_id).await?.as_deref() != Some("join") {
        return Err(Error::forbidden("you are not in this room"));
    }
    let mut joined = std::collections::BTreeMap::new();
    for pdu in s.rooms.current_state(&req.room_id).await? {
        if pdu.kind == ruma::events::TimelineEventType::RoomMember
            && pdu.membership().as_deref() == Some("join")
            && let Some(user) = pdu.state_key.as_deref().and_then(|k| ruma::UserId::parse(k).ok())
        {
            let mut member = joined_members::v3::RoomMember::new();
            member.display_name = pdu.content_field("displayname").and_then(|v| v.as_str().map(str::to_owned));
            member.avatar_url = pdu.content_field("avatar_url").and_then(|v| v.as_str().map(Into::into));
            joined.insert(user, member);
        }
    }
    Ok(joined_members::v3::Response::new(joined))
}

fn relation_matches(pdu: &Pdu, rel_type: Option<&str>, event_type: Option<&str>) -> bool {
    let rel = pdu.content_field("m.relates_to");
    let actual = rel.as_ref().and_then(|r| r.get("rel_type")).and_then(|t| t.as_str());
    rel_type.is_none_or(|t| actual == Some(t)) && event_type.is_none_or(|t| pdu.kind.to_string() == t)
}

/// What the three relations endpoints share: one page of events relating to `target`.
struct RelationsQuery<'a> {
    room_id: &'a ruma::RoomId,
    target: &'a ruma::EventId,
    rel_type: Option<String>,
    event_type: Option<String>,
    from: Option<&'a str>,
    dir: Direction,
    limit: Option<UInt>,
}

async fn relations_page<T>(
    s: &Services,
    auth: &Auth,
    q: RelationsQuery<'_>,
) -> Result<(Vec<ruma::serde::Raw<T>>, Option<String>)> {
    // 404 for a parent the caller may not read, as for a missing one (the spec).
    let access = access(s, auth, q.room_id).await.map_err(hidden_as_missing)?;
    let limit = q.limit.map(|l| limit_of(l, 1000)).unwrap_or(50);
    let mut related: Vec<_> = s
        .rooms
        .relations(q.room_id, q.target)?
        .into_iter()
        .filter(|(pos, pdu)| {
            access.may_see(*pos, pdu) && relation_matches(pdu, q.rel_type.as_deref(), q.event_type.as_deref())
        })
        .collect();
    let backwards = q.dir == Direction::Backward;
    if backwards {
        related.reverse();
    }
    if let Some(from) = q.from {
        let from = parse_pagination_token(from)?;
        related.retain(|(pos, _)| if backwards { *pos < from } else { *pos > from });
    }
    let more = related.len() > limit;
    related.truncate(limit);
    let mut chunk = Vec::new();
    for e in &related {
        chunk.push(raw(&s.rooms.client_event(e, Some((&auth.user_id, &auth.device_id)), true)?)?);
    }
    let next = if more { related.last().map(|(p, _)| pagination_token(*p)) } else { None };
    Ok((chunk, next))
}

pub async fn relations(
    s: Arc<Services>,
    req: Ruma<get_relating_events::v1::Request>,
) -> Result<get_relating_events::v1::Response> {
    let auth = req.user()?.clone();
    let query = RelationsQuery {
        room_id: &req.room_id,
        target: &req.event_id,
        rel_type: None,
        event_type: None,
        from: req.from.as_deref(),
        dir: req.dir,
        limit: req.limit,
    };
    let (chunk, next) = relations_page(&s, &auth, query).await?;
    let mut response = get_relating_events::v1::Response::new(chunk);
    response.next_batch = next;
    Ok(response)
}

pub async fn relations_of_type(
    s: Arc<Services>,
    req: Ruma<get_relating_events_with_rel_type::v1::Request>,
) -> Result<get_relating_events_with_rel_type::v1::Response> {
    let auth = req.user()?.clone();
    let rel_type = Some(req.rel_type.to_string());
    let query = RelationsQuery {
        room_id: &req.room_id,
        target: &req.event_id,
        rel_type,
        event_type: None,
        from: req.from.as_deref(),
        dir: req.dir,
        limit: req.limit,
    };
    let (chunk, next) = relations_page(&s, &auth, query).await?;
    let mut response = get_relating_events_with_rel_type::v1::Response::new(chunk);
    response.next_batch = next;
    Ok(response)
}

pub async fn relations_of_type_and_event_type(
    s: Arc<Services>,
    req: Ruma<get_relating_events_with_rel_type_and_event_type::v1::Request>,
) -> Result<get_relating_events_with_rel_type_and_event_type::v1::Response> {
    let auth = req.user()?.clone();
    let (rel_type, event_type) = (Some(req.rel_type.to_string()), Some(req.event_type.to_string()));
    let query = RelationsQuery {
        room_id: &req.room_id,
        target: &req.event_id,
        rel_type,
        event_type,
        from: req.from.as_deref(),
        dir: req.dir,
        limit: req.limit,
    };
    let (chunk, next) = relations_page(&s, &auth, query).await?;
    let mut response = get_relating_events_with_rel_type_and_event_type::v1::Response::new(chunk);
    response.next_batch = next;
    Ok(response)
}
