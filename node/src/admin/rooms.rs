//! `/_tocsin/admin/rooms`: list rooms, one room's details, shut a room down with a notice.
//!
//! Shutting down: every local member (joined or invited) gets the notice as a server notice and
//! is made to leave; the room leaves the public directory and loses its local aliases; from then
//! on this node's users can only leave it (checked in `Rooms::send`). Remote members are not
//! touched: this node cannot speak for them.

use std::sync::Arc;

use axum::{
    extract::{Path, State},
    response::Response,
};
use bytes::Bytes;
use http::{HeaderMap, Uri};
use ruma::{OwnedRoomId, RoomId, events::StateEventType};
use serde::{Deserialize, Serialize};
use tocsin_store::WriteBatch;

use super::{body, json, require_operator};
use crate::{
    Services,
    error::{Error, Result},
    store::{Db, trees, utf8},
    users::now_ms,
};

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct RoomView {
    pub room_id: OwnedRoomId,
    pub name: Option<String>,
    pub version: String,
    pub joined_members: usize,
    pub joined_local_members: usize,
    pub shut_down: bool,
}

#[derive(Serialize, Deserialize)]
struct ShutDown {
    notice: String,
    by: String,
    at_ms: u64,
}

async fn view(s: &Services, room_id: &RoomId) -> Result<RoomView> {
    let name = s
        .rooms
        .state_event(room_id, &StateEventType::RoomName, "")
        .await?
        .and_then(|pdu| pdu.content_field("name").and_then(|n| n.as_str().map(str::to_owned)));
    let joined = s.rooms.members(room_id, "join").await?;
    let local = joined.iter().filter(|u| s.users.is_local(u)).count();
    Ok(RoomView {
        room_id: room_id.to_owned(),
        name,
        version: s.rooms.version(room_id).await?.to_string(),
        joined_members: joined.len(),
        joined_local_members: local,
        shut_down: s.db.get(trees::SHUT_DOWN_ROOMS, room_id.as_bytes())?.is_some(),
    })
}

fn room_ids(s: &Services) -> Result<Vec<OwnedRoomId>> {
    let mut out = Vec::new();
    for (k, _) in s.db.scan_prefix(trees::ROOMS, b"", usize::MAX)? {
        out.push(RoomId::parse(utf8(&k)?).map_err(Error::internal)?);
    }
    Ok(out)
}

pub async fn list(State(s): State<Arc<Services>>, headers: HeaderMap, uri: Uri) -> Result<Response> {
    require_operator(&s, &headers, &uri)?;
    let mut rooms = Vec::new();
    for room_id in room_ids(&s)? {
        rooms.push(view(&s, &room_id).await?);
    }
    json(&serde_json::json!({ "rooms": rooms }))
}

fn known_room(s: &Services, raw: &str) -> Result<OwnedRoomId> {
    let room_id = RoomId::parse(raw).map_err(|e| Error::invalid_param(format!("`{raw}` is not a room id: {e}")))?;
    if !s.rooms.exists(&room_id)? {
        return Err(Error::not_found("this node does not know that room"));
    }
    Ok(room_id)
}

pub async fn details(
    State(s): State<Arc<Services>>,
    Path(room): Path<String>,
    headers: HeaderMap,
    uri: Uri,
) -> Result<Response> {
    require_operator(&s, &headers, &uri)?;
    let room_id = known_room(&s, &room)?;
    let room = view(&s, &room_id).await?;
    let members = s.rooms.members(&room_id, "join").await?;
    let invited = s.rooms.members(&room_id, "invite").await?;
    let aliases = s.rooms.aliases_of(&room_id)?;
    let mut out = serde_json::to_value(&room).map_err(Error::internal)?;
    out["members"] = serde_json::to_value(members).map_err(Error::internal)?;
    out["invited"] = serde_json::to_value(invited).map_err(Error::internal)?;
    out["aliases"] = serde_json::to_value(aliases).map_err(Error::internal)?;
    out["public"] = serde_json::Value::Bool(s.rooms.public_rooms()?.contains(&room_id));
    json(&out)
}

#[derive(Deserialize)]
struct Shutdown {
    notice: String,
}

pub async fn shutdown(
    State(s): State<Arc<Services>>,
    Path(room): Path<String>,
    headers: HeaderMap,
    uri: Uri,
    bytes: Bytes,
) -> Result<Response> {
    let caller = require_operator(&s, &headers, &uri)?;
    let room_id = known_room(&s, &room)?;
    let req: Shutdown = body(&bytes)?;
    if req.notice.trim().is_empty() {
        return Err(Error::MissingParam("a shutdown needs a notice for the members".into()));
    }
    // Marked first, so nobody joins while members are being removed.
    let mut batch = WriteBatch::new();
    let record = ShutDown { notice: req.notice.clone(), by: caller.name(), at_ms: now_ms() };
    batch.insert(trees::SHUT_DOWN_ROOMS, room_id.as_bytes().to_vec(), Db::to_json(&record)?);
    s.db.write(batch).await?;
    let name = view(&s, &room_id).await?.name.unwrap_or_else(|| room_id.to_string());
    let mut members = s.rooms.members(&room_id, "join").await?;
    members.extend(s.rooms.members(&room_id, "invite").await?);
    let mut removed = Vec::new();
    for user_id in members.into_iter().filter(|u| s.users.is_local(u)) {
        let text = format!("The room \"{name}\" was shut down by the server's administrator: {}", req.notice);
        if let Err(e) = super::notices::to_user(&s, &user_id, &text).await {
            tracing::warn!(%user_id, error = %e, "room shutdown: cannot send the notice");
        }
        match s.rooms.set_membership(&room_id, &user_id, &user_id, "leave", (None, None), Some(&req.notice)).await {
            Ok(_) => removed.push(user_id),
            Err(e) => tracing::warn!(%user_id, %room_id, error = %e, "room shutdown: cannot remove a member"),
        }
    }
    s.rooms.set_public(&room_id, false).await?;
    for alias in s.rooms.aliases_of(&room_id)? {
        if alias.server_name() == s.server_name {
            s.rooms.set_alias(&alias, None).await?;
        }
    }
    tracing::info!(%room_id, members_removed = removed.len(), by = %caller.name(), "admin API: room shut down");
    json(&serde_json::json!({ "room_id": room_id, "members_removed": removed }))
}
