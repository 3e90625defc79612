//! Room aliases and the public room directory.

use std::sync::Arc;

use bytes::Bytes;
use ruma::{
    UInt,
    api::client::{
        alias::{create_alias, delete_alias, get_alias},
        directory::{get_public_rooms, get_public_rooms_filtered, get_room_visibility, set_room_visibility},
        room::{Visibility, aliases},
    },
    directory::{PublicRoomsChunk, PublicRoomsChunkInit},
    events::StateEventType,
};

use crate::{
    Services,
    error::{Error, Result},
    http::Ruma,
};

pub async fn create(s: Arc<Services>, req: Ruma<create_alias::v3::Request>) -> Result<create_alias::v3::Response> {
    let auth = req.user()?;
    crate::directory::create_alias(&s, &req.room_alias, &req.room_id, &auth.user_id).await?;
    Ok(create_alias::v3::Response::new())
}

pub async fn delete(s: Arc<Services>, req: Ruma<delete_alias::v3::Request>) -> Result<delete_alias::v3::Response> {
    let auth = req.user()?;
    crate::directory::delete_alias(&s, &req.room_alias, &auth.user_id).await?;
    Ok(delete_alias::v3::Response::new())
}

pub async fn get(s: Arc<Services>, req: Ruma<get_alias::v3::Request>) -> Result<get_alias::v3::Response> {
    let (room, servers) = crate::federation::directory::resolve_alias(&s, &req.room_alias).await?;
    Ok(get_alias::v3::Response::new(room, servers))
}

pub async fn room_aliases(s: Arc<Services>, req: Ruma<aliases::v3::Request>) -> Result<aliases::v3::Response> {
    let auth = req.user()?;
    // Members now, or anyone for a world-readable room (the spec): not those who left.
    let access =
        if s.rooms.exists(&req.room_id)? { Some(s.rooms.read_access(&req.room_id, &auth.user_id)?) } else { None };
    if !access.is_some_and(|a| a.joined_now() || a.world_readable_now()) {
        return Err(Error::forbidden("you are not in this room"));
    }
    Ok(aliases::v3::Response::new(s.rooms.aliases_of(&req.room_id)?))
}

pub async fn visibility(
    s: Arc<Services>,
    req: Ruma<get_room_visibility::v3::Request>,
) -> Result<get_room_visibility::v3::Response> {
    let public = s.rooms.public_rooms()?.contains(&req.room_id);
    Ok(get_room_visibility::v3::Response::new(if public { Visibility::Public } else { Visibility::Private }))
}

/// The spec makes `visibility` optional (default `public`, as Synapse reads it); ruma requires it.
pub fn visibility_body(_: &mut http::request::Parts, body: Bytes) -> Result<Bytes> {
    crate::http::default_field(body, "visibility", "public".into(), |_| true)
}

pub async fn set_visibility(
    s: Arc<Services>,
    req: Ruma<set_room_visibility::v3::Request>,
) -> Result<set_room_visibility::v3::Response> {
    let auth = req.user()?;
    crate::directory::set_published(&s, &req.room_id, &auth.user_id, req.visibility == Visibility::Public).await?;
    Ok(set_room_visibility::v3::Response::new())
}

async fn chunks(s: &Services, term: Option<&str>) -> Result<Vec<PublicRoomsChunk>> {
    let mut out = Vec::new();
    for room_id in s.rooms.public_rooms()? {
        let members = s.rooms.members(&room_id, "join").await?;
        let str_of = |p: Option<std::sync::Arc<crate::rooms::Pdu>>, field: &str| {
            p.and_then(|p| p.content_field(field)).and_then(|v| v.as_str().map(str::to_owned))
        };
        let name = str_of(s.rooms.state_event(&room_id, &StateEventType::RoomName, "").await?, "name");
        let topic = str_of(s.rooms.state_event(&room_id, &StateEventType::RoomTopic, "").await?, "topic");
        let alias = str_of(s.rooms.state_event(&room_id, &StateEventType::RoomCanonicalAlias, "").await?, "alias");
        if let Some(term) = term {
            let term = term.to_lowercase();
            let hay = format!(
                "{} {} {}",
                name.as_deref().unwrap_or(""),
                topic.as_deref().unwrap_or(""),
                alias.as_deref().unwrap_or("")
            );
            if !hay.to_lowercase().contains(&term) {
                continue;
            }
        }
        let mut chunk: PublicRoomsChunk = PublicRoomsChunkInit {
            num_joined_members: UInt::try_from(members.len()).unwrap_or(UInt::MAX),
            room_id,
            world_readable: false,
            guest_can_join: false,
        }
        .into();
        chunk.name = name;
        chunk.topic = topic;
        chunk.canonical_alias = alias.and_then(|a| a.try_into().ok());
        out.push(chunk);
    }
    Ok(out)
}

/// One page of the directory: the rooms, the next and previous tokens, and the total.
struct Page {
    chunk: Vec<PublicRoomsChunk>,
    next: Option<String>,
    prev: Option<String>,
    total: usize,
}

fn page(all: Vec<PublicRoomsChunk>, since: Option<&str>, limit: Option<UInt>) -> Result<Page> {
    let total = all.len();
    let start: usize =
        since.map(|s| s.parse().map_err(|_| Error::invalid_param("bad since token"))).transpose()?.unwrap_or(0);
    let limit = limit.and_then(|l| usize::try_from(u64::from(l)).ok()).unwrap_or(100).max(1);
    let end = (start + limit).min(total);
    let chunk = all.into_iter().skip(start).take(limit).collect();
    let next = (end < total).then(|| end.to_string());
    let prev = (start > 0).then(|| start.saturating_sub(limit).to_string());
    Ok(Page { chunk, next, prev, total })
}

pub async fn public_rooms(
    s: Arc<Services>,
    req: Ruma<get_public_rooms::v3::Request>,
) -> Result<get_public_rooms::v3::Response> {
    let Page { chunk, next, prev, total } = page(chunks(&s, None).await?, req.since.as_deref(), req.limit)?;
    let mut response = get_public_rooms::v3::Response::new(chunk);
    response.next_batch = next;
    response.prev_batch = prev;
    response.total_room_count_estimate = UInt::try_from(total).ok();
    Ok(response)
}

pub async fn public_rooms_filtered(
    s: Arc<Services>,
    req: Ruma<get_public_rooms_filtered::v3::Request>,
) -> Result<get_public_rooms_filtered::v3::Response> {
    req.user()?;
    let all = chunks(&s, req.filter.generic_search_term.as_deref()).await?;
    let Page { chunk, next, prev, total } = page(all, req.since.as_deref(), req.limit)?;
    let mut response = get_public_rooms_filtered::v3::Response::new();
    response.chunk = chunk;
    response.next_batch = next;
    response.prev_batch = prev;
    response.total_room_count_estimate = UInt::try_from(total).ok();
    Ok(response)
}
