//! Serving a room's events to other servers in it: single events, the state at an event, auth
//! chains, backfill, missing events and the event nearest a time.

use std::{
    collections::{BTreeSet, HashSet},
    sync::Arc,
};

use ruma::room_version_rules::RoomVersionRules;
use ruma::{
    EventId, MilliSecondsSinceUnixEpoch, OwnedEventId, RoomId, ServerName,
    api::federation::{
        authorization::get_event_authorization,
        backfill::get_backfill,
        event::{get_event, get_event_by_timestamp, get_missing_events, get_room_state, get_room_state_ids},
    },
};
use serde_json::value::RawValue;

use super::pdu::to_raw;
use crate::{
    Services,
    error::{Error, Result},
    http::Ruma,
    rooms::{Pdu, visibility::ReadAccess},
};

/// Most events one backfill or missing-events answer carries.
const MAX_EVENTS: usize = 100;
/// How far back a missing-events walk goes to find the oldest events of a gap.
const MAX_WALK: usize = 10_000;

/// Refuses servers with no joined member in the room now: a server whose users all left, or
/// were kicked or banned, reads nothing more.
async fn require_in_room(s: &Services, room_id: &RoomId, origin: &ServerName) -> Result<ReadAccess> {
    let access = s.rooms.server_read_access(room_id, origin)?;
    if access.joined_now() {
        Ok(access)
    } else {
        Err(Error::Forbidden(format!("{origin} has no joined member in {room_id}")))
    }
}

/// Refuses servers that neither had a joined member at `event_id` nor may see it by the history
/// visibility at it: the state and auth chain at an event are for the servers that were in the
/// room then, or (under `shared` visibility) joined later and fill a gap before their join.
async fn require_in_room_at(s: &Services, room_id: &RoomId, event_id: &EventId, origin: &ServerName) -> Result<()> {
    let access = require_in_room(s, room_id, origin).await?;
    let (pos, pdu) =
        s.rooms.event_with_pos(event_id)?.ok_or_else(|| Error::not_found(format!("unknown event {event_id}")))?;
    if pdu.room_id != room_id || !(access.joined_at(pos, &pdu) || access.may_see(pos, &pdu)) {
        return Err(Error::Forbidden(format!(
            "{origin} had no joined member in {room_id} at {event_id} and may not see it"
        )));
    }
    Ok(())
}

/// The event as `origin` may have it: whole where the history visibility at the event lets its
/// users read it, else redacted (the DAG still needs its skeleton), as the spec says.
fn as_served(rules: &RoomVersionRules, access: &ReadAccess, pos: u64, pdu: &Pdu) -> Result<Box<RawValue>> {
    if access.may_see(pos, pdu) {
        return pdu.to_raw();
    }
    let skeleton =
        ruma::canonical_json::redact(pdu.json()?.clone(), &rules.redaction, None).map_err(Error::internal)?;
    to_raw(&skeleton)
}

async fn rules_of(s: &Services, room_id: &RoomId) -> Result<RoomVersionRules> {
    crate::rooms::version::rules(&s.rooms.version(room_id).await?)
}

/// An event other servers may have: known, and not hidden by the room's retention.
fn load(s: &Services, id: &EventId) -> Result<(u64, Pdu)> {
    s.rooms.served_event(id)?.ok_or_else(|| Error::not_found(format!("unknown event {id}")))
}

pub async fn event(s: Arc<Services>, req: Ruma<get_event::v1::Request>) -> Result<get_event::v1::Response> {
    let origin = req.origin()?.to_owned();
    let (pos, pdu) = load(&s, &req.event_id)?;
    let access = require_in_room(&s, &pdu.room_id, &origin).await?;
    let rules = rules_of(&s, &pdu.room_id).await?;
    let served = as_served(&rules, &access, pos, &pdu)?;
    Ok(get_event::v1::Response::new(s.server_name.clone(), MilliSecondsSinceUnixEpoch::now(), served))
}

/// The ids of every event in the auth chains of `from` (not including `from`).
pub fn auth_chain_ids(s: &Services, from: impl IntoIterator<Item = OwnedEventId>) -> Result<BTreeSet<OwnedEventId>> {
    let mut seen = BTreeSet::new();
    let mut todo: Vec<OwnedEventId> = Vec::new();
    for id in from {
        if let Some(pdu) = s.rooms.pdu(&id)? {
            todo.extend(pdu.auth_events);
        }
    }
    while let Some(id) = todo.pop() {
        if seen.contains(&id) {
            continue;
        }
        if let Some(pdu) = s.rooms.pdu(&id)? {
            todo.extend(pdu.auth_events.into_iter().filter(|a| !seen.contains(a)));
        }
        seen.insert(id);
    }
    Ok(seen)
}

fn raws(s: &Services, ids: impl IntoIterator<Item = OwnedEventId>) -> Result<Vec<Box<RawValue>>> {
    let mut out = Vec::new();
    for id in ids {
        if let Some(pdu) = s.rooms.pdu(&id)? {
            out.push(pdu.to_raw()?);
        }
    }
    Ok(out)
}

/// The state before `event_id` (what `/state` and `/state_ids` answer), as ids.
fn state_ids_at(s: &Services, event_id: &EventId) -> Result<Vec<OwnedEventId>> {
    let state = s.rooms.state_before(event_id)?.ok_or_else(|| Error::not_found("no state known at that event"))?;
    Ok(state.into_values().collect())
}

pub async fn state_ids(
    s: Arc<Services>,
    req: Ruma<get_room_state_ids::v1::Request>,
) -> Result<get_room_state_ids::v1::Response> {
    require_in_room_at(&s, &req.room_id, &req.event_id, req.origin()?).await?;
    let pdu_ids = state_ids_at(&s, &req.event_id)?;
    let auth_chain_ids = auth_chain_ids(&s, pdu_ids.iter().cloned())?.into_iter().collect();
    Ok(get_room_state_ids::v1::Response::new(auth_chain_ids, pdu_ids))
}

pub async fn state(s: Arc<Services>, req: Ruma<get_room_state::v1::Request>) -> Result<get_room_state::v1::Response> {
    require_in_room_at(&s, &req.room_id, &req.event_id, req.origin()?).await?;
    let pdu_ids = state_ids_at(&s, &req.event_id)?;
    let chain = auth_chain_ids(&s, pdu_ids.iter().cloned())?;
    Ok(get_room_state::v1::Response::new(raws(&s, chain)?, raws(&s, pdu_ids)?))
}

pub async fn event_auth(
    s: Arc<Services>,
    req: Ruma<get_event_authorization::v1::Request>,
) -> Result<get_event_authorization::v1::Response> {
    require_in_room_at(&s, &req.room_id, &req.event_id, req.origin()?).await?;
    let chain = auth_chain_ids(&s, [req.event_id.clone()])?;
    Ok(get_event_authorization::v1::Response::new(raws(&s, chain)?))
}

/// A walk back through a room's `prev_events`.
struct Walk<'a> {
    from: &'a [OwnedEventId],
    /// Whether the `from` events are part of the walk, or only their prev events.
    include_from: bool,
    stop: HashSet<OwnedEventId>,
    /// Most events handed out.
    limit: usize,
    /// The depth below which no `stop` event can be met again, and the events still wanted
    /// once the walk has gone below it.
    around: Option<(u64, usize)>,
}

/// What a walk found: the events, newest first, and whether it went below its `around` depth.
struct Walked {
    events: Vec<(u64, Pdu)>,
    ran_around: bool,
}

/// Walks `prev_events` back, newest first by depth, stopping at the walk's `stop` events.
fn walk_back(s: &Services, room_id: &RoomId, walk: &Walk<'_>) -> Result<Walked> {
    // A frontier ordered by depth, so the newest events come first, as backfill wants.
    let mut frontier: BTreeSet<(u64, OwnedEventId)> = BTreeSet::new();
    let mut seen: HashSet<OwnedEventId> = HashSet::new();
    let mut out = Vec::new();
    let mut limit = walk.limit;
    let mut ran_around = false;
    // Expired and purged events are walked through (their skeleton keeps `prev_events`), never
    // handed out.
    let retention = s.rooms.retention(room_id)?;
    for id in walk.from {
        if let Some(pdu) = s.rooms.pdu(id)? {
            if walk.include_from {
                frontier.insert((u64::from(pdu.depth), id.clone()));
            } else {
                for prev in &pdu.prev_events {
                    if let Some(p) = s.rooms.pdu(prev)? {
                        frontier.insert((u64::from(p.depth), prev.clone()));
                    }
                }
            }
        }
    }
    while let Some((depth, id)) = frontier.pop_last() {
        // Depth falls along `prev_events`, and the frontier is taken deepest first: below the
        // floor, every event still to come is older than all the stop events.
        if let Some((floor, wanted)) = walk.around
            && depth < floor
            && !ran_around
        {
            ran_around = true;
            limit = limit.min(out.len().max(wanted));
        }
        if out.len() >= limit {
            break;
        }
        if !seen.insert(id.clone()) || walk.stop.contains(&id) {
            continue;
        }
        let Some((pos, pdu)) = s.rooms.event_with_pos(&id)? else { continue };
        if pdu.room_id != room_id {
            continue;
        }
        for prev in &pdu.prev_events {
            if !seen.contains(prev)
                && let Some(p) = s.rooms.pdu(prev)?
            {
                frontier.insert((u64::from(p.depth), prev.clone()));
            }
        }
        if s.rooms.serves(&retention, &pdu)? {
            out.push((pos, pdu));
        }
    }
    Ok(Walked { events: out, ran_around })
}

pub async fn backfill(s: Arc<Services>, req: Ruma<get_backfill::v1::Request>) -> Result<get_backfill::v1::Response> {
    let access = require_in_room(&s, &req.room_id, req.origin()?).await?;
    let rules = rules_of(&s, &req.room_id).await?;
    let limit = usize::try_from(u64::from(req.limit)).unwrap_or(MAX_EVENTS).min(MAX_EVENTS);
    let walk = Walk { from: &req.v, include_from: true, stop: HashSet::new(), limit, around: None };
    let events = walk_back(&s, &req.room_id, &walk)?.events;
    let pdus = events.iter().map(|(pos, p)| as_served(&rules, &access, *pos, p)).collect::<Result<_>>()?;
    Ok(get_backfill::v1::Response::new(s.server_name.clone(), MilliSecondsSinceUnixEpoch::now(), pdus))
}

pub async fn missing_events(
    s: Arc<Services>,
    req: Ruma<get_missing_events::v1::Request>,
) -> Result<get_missing_events::v1::Response> {
    let access = require_in_room(&s, &req.room_id, req.origin()?).await?;
    let rules = rules_of(&s, &req.room_id).await?;
    let limit = usize::try_from(u64::from(req.limit)).unwrap_or(MAX_EVENTS).min(MAX_EVENTS);
    let min_depth = u64::from(req.min_depth);
    // The requester has its newest events and all before them. Once the walk is older than
    // the oldest of those, it can no longer be stopped by one: it has run around them.
    let mut floor: Option<u64> = None;
    for id in &req.earliest_events {
        if let Some(pdu) = s.rooms.pdu(id)? {
            let depth = u64::from(pdu.depth);
            floor = Some(floor.map_or(depth, |f| f.min(depth)));
        }
    }
    let walk = Walk {
        from: &req.latest_events,
        include_from: false,
        stop: req.earliest_events.iter().cloned().collect(),
        limit: MAX_WALK,
        around: floor.map(|f| (f, limit)),
    };
    let walked = walk_back(&s, &req.room_id, &walk)?;
    let mut events = walked.events;
    // In a busy room whose servers all write at once, paths run around the requester's newest
    // events to the room's create event (or to the walk's cap): the oldest events of such a
    // walk are ones the requester has had for long, and handing them out made it give up and
    // fetch the room's whole state instead (seconds, at 5,000 members). Then the events
    // nearest the new one are what it lacks.
    let enclosed =
        !walked.ran_around && events.len() < MAX_WALK && !events.iter().any(|(_, e)| e.prev_events.is_empty());
    events.retain(|(_, e)| u64::from(e.depth) >= min_depth);
    if !enclosed {
        // The walk visits the newest first.
        events.truncate(limit);
    }
    // Oldest first: the receiver applies them in order and asks again for the rest, so an
    // enclosed gap is filled completely rather than from its newer end.
    events.reverse();
    events.truncate(limit);
    let pdus = events.iter().map(|(pos, p)| as_served(&rules, &access, *pos, p)).collect::<Result<_>>()?;
    Ok(get_missing_events::v1::Response::new(pdus))
}

/// `GET /timestamp_to_event/{roomId}`: the event nearest a time, for a server in the room.
pub async fn event_at_ts(
    s: Arc<Services>,
    req: Ruma<get_event_by_timestamp::v1::Request>,
) -> Result<get_event_by_timestamp::v1::Response> {
    let access = require_in_room(&s, &req.room_id, req.origin()?).await?;
    let forward = req.dir == ruma::api::Direction::Forward;
    let (_, pdu) = s
        .rooms
        .event_at_ts(&req.room_id, req.ts.get().into(), forward, &access)?
        .ok_or_else(|| Error::not_found("no event in that direction"))?;
    Ok(get_event_by_timestamp::v1::Response::new(pdu.event_id.clone(), pdu.origin_server_ts))
}
