//! `GET /_matrix/federation/v1/publicRooms`: this node's public room directory, for peers; and
//! resolving another server's room alias through its directory query.

use std::sync::Arc;

use ruma::{
    UInt,
    api::federation::directory::get_public_rooms,
    directory::{PublicRoomsChunk, PublicRoomsChunkInit},
    events::StateEventType,
};

use crate::{
    Services,
    error::{Error, Result},
    http::Ruma,
};

/// Rooms per page when the peer names no limit.
const DEFAULT_LIMIT: usize = 100;

/// The room an alias names and the servers to join it through: asked of the alias's own server
/// when it is another one, looked up here otherwise.
pub async fn resolve_alias(
    s: &Services,
    alias: &ruma::RoomAliasId,
) -> Result<(ruma::OwnedRoomId, Vec<ruma::OwnedServerName>)> {
    if alias.server_name() == s.server_name {
        let room_id =
            s.rooms.resolve_alias(alias)?.ok_or_else(|| Error::not_found(format!("no room has the alias {alias}")))?;
        return Ok((room_id, vec![s.server_name.clone()]));
    }
    let request = ruma::api::federation::query::get_room_information::v1::Request::new(alias.to_owned());
    let response = s.federation_client.send(alias.server_name(), request).await?;
    Ok((response.room_id, response.servers))
}

pub async fn public_rooms(
    s: Arc<Services>,
    req: Ruma<get_public_rooms::v1::Request>,
) -> Result<get_public_rooms::v1::Response> {
    // The extractor has verified the X-Matrix signature; the origin is known.
    req.origin()?;
    let rooms = s.rooms.public_rooms()?;
    let total = rooms.len();
    let start: usize = match req.since.as_deref() {
        Some(since) => since.parse().map_err(|_| Error::invalid_param("bad since token"))?,
        None => 0,
    };
    let limit = req.limit.and_then(|l| usize::try_from(u64::from(l)).ok()).unwrap_or(DEFAULT_LIMIT).max(1);
    let mut chunk = Vec::new();
    for room_id in rooms.into_iter().skip(start).take(limit) {
        chunk.push(room_chunk(&s, room_id).await?);
    }
    let end = start.saturating_add(limit).min(total);
    let mut response = get_public_rooms::v1::Response::new();
    response.chunk = chunk;
    response.next_batch = (end < total).then(|| end.to_string());
    response.prev_batch = (start > 0).then(|| start.saturating_sub(limit).to_string());
    response.total_room_count_estimate = UInt::try_from(total).ok();
    Ok(response)
}

async fn room_chunk(s: &Services, room_id: ruma::OwnedRoomId) -> Result<PublicRoomsChunk> {
    let members = s.rooms.members(&room_id, "join").await?;
    let text = async |kind: StateEventType, field: &str| -> Result<Option<String>> {
        let pdu = s.rooms.state_event(&room_id, &kind, "").await?;
        Ok(pdu.and_then(|p| p.content_field(field)).and_then(|v| v.as_str().map(str::to_owned)))
    };
    let name = text(StateEventType::RoomName, "name").await?;
    let topic = text(StateEventType::RoomTopic, "topic").await?;
    let alias = text(StateEventType::RoomCanonicalAlias, "alias").await?;
    let mut chunk: PublicRoomsChunk = PublicRoomsChunkInit {
        num_joined_members: UInt::try_from(members.len()).unwrap_or(UInt::MAX),
        room_id: room_id.clone(),
        world_readable: false,
        guest_can_join: false,
    }
    .into();
    chunk.name = name;
    chunk.topic = topic;
    chunk.canonical_alias = alias.and_then(|a| a.try_into().ok());
    Ok(chunk)
}
