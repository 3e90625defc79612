//! `GET /_matrix/federation/v1/hierarchy/{roomId}`: a space and its child rooms, as far as this
//! node knows them, for a peer's space browser.

use std::sync::Arc;

use ruma::{
    RoomId, ServerName, UInt,
    api::federation::space::{SpaceHierarchyParentSummary, get_hierarchy},
    events::StateEventType,
    room::{JoinRuleSummary, RoomSummary},
    serde::Raw,
};

use crate::{
    Services,
    error::{Error, Result},
    http::Ruma,
};

/// The room's summary, if `origin` may see it: a public room, or one it has a member in.
async fn summary(s: &Services, room_id: &RoomId, origin: &ServerName) -> Result<Option<RoomSummary>> {
    if !s.rooms.exists(room_id)? {
        return Ok(None);
    }
    let state = s.rooms.current_state(room_id).await?;
    let field = |kind: StateEventType, name: &str| {
        state
            .iter()
            .find(|p| p.state_event_type() == kind && p.state_key.as_deref() == Some(""))
            .and_then(|p| p.content_field(name))
            .and_then(|v| v.as_str().map(str::to_owned))
    };
    let members: Vec<_> = state
        .iter()
        .filter(|p| p.state_event_type() == StateEventType::RoomMember && p.membership().as_deref() == Some("join"))
        .filter_map(|p| p.state_key.clone())
        .collect();
    let join_rule = match field(StateEventType::RoomJoinRules, "join_rule").as_deref() {
        Some("public") => JoinRuleSummary::Public,
        Some("knock") => JoinRuleSummary::Knock,
        _ => JoinRuleSummary::Invite,
    };
    let has_member = members.iter().any(|m| m.rsplit_once(':').is_some_and(|(_, server)| server == origin.as_str()));
    if !matches!(join_rule, JoinRuleSummary::Public | JoinRuleSummary::Knock) && !has_member {
        return Ok(None);
    }
    let world_readable =
        field(StateEventType::RoomHistoryVisibility, "history_visibility").as_deref() == Some("world_readable");
    let mut summary = RoomSummary::new(
        room_id.to_owned(),
        join_rule,
        false,
        UInt::try_from(members.len()).unwrap_or(UInt::MAX),
        world_readable,
    );
    summary.name = field(StateEventType::RoomName, "name");
    summary.topic = field(StateEventType::RoomTopic, "topic");
    summary.canonical_alias = field(StateEventType::RoomCanonicalAlias, "alias").and_then(|a| a.try_into().ok());
    summary.room_type = field(StateEventType::RoomCreate, "type").map(Into::into);
    summary.room_version = Some(s.rooms.version(room_id).await?);
    Ok(Some(summary))
}

pub async fn hierarchy(s: Arc<Services>, req: Ruma<get_hierarchy::v1::Request>) -> Result<get_hierarchy::v1::Response> {
    let origin = req.origin()?.to_owned();
    let parent =
        summary(&s, &req.room_id, &origin).await?.ok_or_else(|| Error::not_found("no such room visible to you"))?;
    let state = s.rooms.current_state(&req.room_id).await?;
    let mut children_state = Vec::new();
    let mut children = Vec::new();
    let mut inaccessible = Vec::new();
    for child in state.iter().filter(|p| p.kind.to_string() == "m.space.child") {
        let Some(child_id) = child.state_key.as_deref().and_then(|k| RoomId::parse(k).ok()) else { continue };
        // An m.space.child without `via` is a removed child.
        if child.content_field("via").and_then(|v| v.as_array().map(|a| !a.is_empty())) != Some(true) {
            continue;
        }
        let stripped = serde_json::json!({
            "type": "m.space.child",
            "state_key": child_id,
            "content": child.content_value(),
            "sender": child.sender,
            "origin_server_ts": child.origin_server_ts,
        });
        if let Ok(raw) = Raw::from_json_string(stripped.to_string()) {
            children_state.push(raw);
        }
        match summary(&s, &child_id, &origin).await? {
            Some(found) => children.push(found),
            None => inaccessible.push(child_id),
        }
    }
    let mut response = get_hierarchy::v1::Response::new(SpaceHierarchyParentSummary::new(parent, children_state));
    response.children = children;
    response.inaccessible_children = inaccessible;
    Ok(response)
}
