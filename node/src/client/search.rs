//! `POST /search`: full-text search of the caller's joined rooms (see `search`). Hits are
//! shown only as the room's read rules let the caller see them, and pass the request's room
//! event filter; each comes with the events around it and, when asked, the senders' profiles,
//! the rooms' state and groups by room or sender.

use std::{
    collections::{BTreeMap, HashMap},
    sync::Arc,
};

use ruma::{
    OwnedRoomId, OwnedUserId, UInt,
    api::client::search::search_events::v3::{
        Criteria, EventContextResult, GroupingKey, OrderBy, Request, Response, ResultCategories, ResultGroup,
        ResultGroupMap, ResultRoomEvents, SearchResult, UserProfile,
    },
    events::StateEventType,
};

use crate::{
    Services,
    error::{Error, Result},
    http::{Auth, Ruma},
    rooms::{Pdu, visibility::ReadAccess},
    search::{KEYS, SearchQuery},
    sync::assemble::{filter_matches, raw},
};

/// Results per page when the filter sets no limit, and the most a filter may ask for.
const DEFAULT_LIMIT: usize = 10;
const MAX_LIMIT: usize = 50;
/// The most events of context on either side of a result.
const MAX_CONTEXT: usize = 20;

pub async fn search(s: Arc<Services>, req: Ruma<Request>) -> Result<Response> {
    let auth = req.user()?.clone();
    let Some(criteria) = req.body.search_categories.room_events.as_ref() else {
        return Ok(Response::new(ResultCategories::new()));
    };
    if criteria.search_term.trim().is_empty() {
        return Err(Error::invalid_param("search_term is empty"));
    }
    let offset = match req.body.next_batch.as_deref() {
        Some(token) => {
            token.parse::<usize>().map_err(|_| Error::invalid_param("next_batch is not a token of this server"))?
        }
        None => 0,
    };
    let events = room_events(&s, &auth, criteria, offset).await?;
    let mut categories = ResultCategories::new();
    categories.room_events = events;
    Ok(Response::new(categories))
}

async fn room_events(s: &Services, auth: &Auth, criteria: &Criteria, offset: usize) -> Result<ResultRoomEvents> {
    let filter = &criteria.filter;
    let rooms: Vec<OwnedRoomId> = s
        .rooms
        .joined_rooms(&auth.user_id)?
        .into_iter()
        .filter(|r| filter.rooms.as_ref().is_none_or(|only| only.contains(r)) && !filter.not_rooms.contains(r))
        .collect();
    let keys: Vec<&'static str> = match &criteria.keys {
        None => KEYS.to_vec(),
        Some(asked) => KEYS.iter().copied().filter(|k| asked.iter().any(|a| a.as_str() == *k)).collect(),
    };
    let limit =
        filter.limit.map_or(DEFAULT_LIMIT, |l| usize::try_from(u64::from(l)).unwrap_or(MAX_LIMIT).clamp(1, MAX_LIMIT));
    let recent_first = matches!(criteria.order_by, Some(OrderBy::Recent));

    // Hits the caller may not see, or that the filter's types and senders exclude, are
    // skipped: a page is read until it holds `limit` results or the hits run out.
    let mut access: HashMap<OwnedRoomId, ReadAccess> = HashMap::new();
    let mut found: Vec<(f32, u64, Pdu)> = Vec::new();
    let mut at = offset;
    let mut count;
    loop {
        let query =
            SearchQuery { term: &criteria.search_term, rooms: &rooms, keys: &keys, recent_first, offset: at, limit };
        let (hits, total) = s.search.query(&query)?;
        count = total;
        let page = hits.len();
        for hit in hits {
            at += 1;
            let Some((pos, pdu)) = s.rooms.served_event(&hit.event_id)? else { continue };
            if !access.contains_key(&pdu.room_id) {
                access.insert(pdu.room_id.clone(), s.rooms.read_access(&pdu.room_id, &auth.user_id)?);
            }
            let room_access = &access[&pdu.room_id];
            if room_access.may_see(pos, &pdu) && filter_matches(filter, &pdu) {
                found.push((hit.score, pos, pdu));
                if found.len() == limit {
                    break;
                }
            }
        }
        if found.len() == limit || page < limit {
            break;
        }
    }

    let viewer = Some((&*auth.user_id, &*auth.device_id));
    let context = &criteria.event_context;
    let before = usize::try_from(u64::from(context.before_limit)).unwrap_or(MAX_CONTEXT).min(MAX_CONTEXT);
    let after = usize::try_from(u64::from(context.after_limit)).unwrap_or(MAX_CONTEXT).min(MAX_CONTEXT);
    let mut events = ResultRoomEvents::new();
    for (score, pos, pdu) in &found {
        let room_access = access.get(&pdu.room_id).ok_or_else(|| Error::internal("read access not kept"))?;
        let mut result = SearchResult::new();
        result.rank = (!recent_first).then_some(f64::from(*score));
        result.context =
            event_context(s, room_access, *pos, pdu, (before, after), context.include_profile, viewer).await?;
        result.result = Some(raw(&s.rooms.client_event(&(*pos, pdu.clone()), viewer, true)?)?);
        events.results.push(result);
    }
    events.count = UInt::try_from(count).ok();
    events.next_batch = (at < count && found.len() == limit).then(|| at.to_string());
    events.highlights = s.search.highlights(&criteria.search_term);
    if criteria.include_state == Some(true) {
        for room_id in found.iter().map(|(_, _, p)| &p.room_id) {
            if events.state.contains_key(room_id) {
                continue;
            }
            let mut state = Vec::new();
            for pdu in s.rooms.current_state(room_id).await? {
                state.push(raw(&s.rooms.client_event(&(0, (*pdu).clone()), None, true)?)?);
            }
            events.state.insert(room_id.clone(), state);
        }
    }
    for grouping in &criteria.groupings.group_by {
        match grouping.key {
            Some(GroupingKey::RoomId) => {
                let groups = group(&found, |p| p.room_id.clone());
                events.groups.insert(ResultGroupMap::RoomId(groups));
            }
            Some(GroupingKey::Sender) => {
                let groups = group(&found, |p| p.sender.clone());
                events.groups.insert(ResultGroupMap::Sender(groups));
            }
            _ => {}
        }
    }
    Ok(events)
}

/// The results grouped by `key`, each group in result order, ordered by its first result.
fn group<K: Ord + Clone>(found: &[(f32, u64, Pdu)], key: impl Fn(&Pdu) -> K) -> BTreeMap<K, ResultGroup> {
    let mut groups: BTreeMap<K, ResultGroup> = BTreeMap::new();
    for (i, (_, _, pdu)) in found.iter().enumerate() {
        let group = groups.entry(key(pdu)).or_insert_with(|| {
            let mut g = ResultGroup::new();
            g.order = UInt::try_from(i).ok();
            g
        });
        group.results.push(pdu.event_id.clone());
    }
    groups
}

/// The events just before and after a result that the caller may see, with pagination
/// tokens, and the profiles of their senders when asked.
async fn event_context(
    s: &Services,
    access: &ReadAccess,
    pos: u64,
    pdu: &Pdu,
    (before, after): (usize, usize),
    include_profile: bool,
    viewer: Option<(&ruma::UserId, &ruma::DeviceId)>,
) -> Result<EventContextResult> {
    let mut context = EventContextResult::new();
    if before == 0 && after == 0 {
        return Ok(context);
    }
    let earlier = if before > 0 { s.rooms.paginate(&pdu.room_id, pos, true, before)? } else { Vec::new() };
    let later = if after > 0 { s.rooms.paginate(&pdu.room_id, pos, false, after)? } else { Vec::new() };
    context.start = Some(crate::sync::pagination_token(earlier.last().map_or(pos, |(p, _)| *p)));
    context.end = Some(crate::sync::pagination_token(later.last().map_or(pos, |(p, _)| *p)));
    let mut senders: Vec<OwnedUserId> = vec![pdu.sender.clone()];
    for e in earlier.iter().filter(|(p, e)| access.may_see(*p, e)) {
        senders.push(e.1.sender.clone());
        context.events_before.push(raw(&s.rooms.client_event(e, viewer, true)?)?);
    }
    for e in later.iter().filter(|(p, e)| access.may_see(*p, e)) {
        senders.push(e.1.sender.clone());
        context.events_after.push(raw(&s.rooms.client_event(e, viewer, true)?)?);
    }
    if include_profile {
        for sender in senders {
            if context.profile_info.contains_key(&sender) {
                continue;
            }
            let member = s.rooms.state_event(&pdu.room_id, &StateEventType::RoomMember, sender.as_str()).await?;
            let mut profile = UserProfile::new();
            if let Some(member) = member {
                profile.displayname =
                    member.content_field("displayname").and_then(|v| v.as_str().map(ToOwned::to_owned));
                profile.avatar_url =
                    member.content_field("avatar_url").and_then(|v| v.as_str().map(ruma::OwnedMxcUri::from));
            }
            context.profile_info.insert(sender, profile);
        }
    }
    Ok(context)
}
