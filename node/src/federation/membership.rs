//! Memberships asked for by other servers: `make_join`/`send_join` v2, `make_leave`/`send_leave`
//! v2 and `invite` v2.

use std::sync::Arc;

use ruma::{
    RoomId, RoomVersionId, ServerName, UserId,
    api::federation::membership::{
        RawStrippedState, create_invite, create_join_event, create_knock_event, create_leave_event, prepare_join_event,
        prepare_knock_event, prepare_leave_event,
    },
    events::TimelineEventType,
};
use serde_json::value::RawValue;

use super::{
    events::auth_chain_ids,
    pdu::{self, to_raw},
};
use crate::{
    Services,
    error::{Error, Result},
    http::Ruma,
    rooms::{Incoming, Outcome, Pdu},
};

fn require_own_user(origin: &ServerName, user_id: &UserId) -> Result<()> {
    if user_id.server_name() != origin {
        return Err(Error::Forbidden(format!("{origin} may not act for {user_id}")));
    }
    Ok(())
}

async fn template_raw(
    s: &Services,
    room_id: &RoomId,
    user_id: &UserId,
    membership: &str,
) -> Result<(RoomVersionId, Box<RawValue>)> {
    let (version, template) = s.rooms.membership_template(room_id, user_id, membership).await?;
    Ok((version, to_raw(&template)?))
}

pub async fn make_join(
    s: Arc<Services>,
    req: Ruma<prepare_join_event::v1::Request>,
) -> Result<prepare_join_event::v1::Response> {
    require_own_user(req.origin()?, &req.user_id)?;
    let version = s.rooms.version(&req.room_id).await?;
    if !req.ver.contains(&version) {
        return Err(Error::IncompatibleRoomVersion(version));
    }
    let (version, template) = template_raw(&s, &req.room_id, &req.user_id, "join").await?;
    let mut response = prepare_join_event::v1::Response::new(template);
    response.room_version = Some(version);
    Ok(response)
}

pub async fn make_leave(
    s: Arc<Services>,
    req: Ruma<prepare_leave_event::v1::Request>,
) -> Result<prepare_leave_event::v1::Response> {
    require_own_user(req.origin()?, &req.user_id)?;
    let (version, template) = template_raw(&s, &req.room_id, &req.user_id, "leave").await?;
    Ok(prepare_leave_event::v1::Response::new(Some(version), template))
}

/// Checks a membership event a remote server signed and sent back, and appends it.
async fn accept_membership(
    s: &Arc<Services>,
    origin: &ServerName,
    room_id: &RoomId,
    event_id: &ruma::EventId,
    raw: &RawValue,
    membership: &str,
) -> Result<Pdu> {
    let version = s.rooms.version(room_id).await?;
    let rules = crate::rooms::version::rules(&version)?;
    let pdu = pdu::verify(s, &rules, raw, origin).await?;
    if pdu.event_id != event_id || pdu.room_id != room_id {
        return Err(Error::bad_json("the event id or room id does not match the path"));
    }
    let sender_ok = pdu.state_key.as_deref() == Some(pdu.sender.as_str());
    if pdu.kind != TimelineEventType::RoomMember || pdu.membership().as_deref() != Some(membership) || !sender_ok {
        return Err(Error::bad_json(format!("expected the sender's own m.room.member {membership} event")));
    }
    require_own_user(origin, &pdu.sender)?;
    match s.rooms.append_remote(Incoming { pdu: pdu.clone(), state_before: None }).await? {
        Outcome::Accepted | Outcome::Known => {}
        Outcome::SoftFailed => return Err(Error::Forbidden("the event is not allowed by the current state".into())),
        Outcome::Rejected(reason) => return Err(Error::Forbidden(format!("the event is not allowed: {reason}"))),
    }
    // The joining server does not know who else is in the room: the resident server passes
    // the event on.
    s.rooms.forward(&pdu, &[origin]).await?;
    if membership == "join" {
        super::edu::presence_on_join(s, room_id, &pdu.sender).await;
    }
    Ok(pdu)
}

pub async fn send_join(
    s: Arc<Services>,
    req: Ruma<create_join_event::v2::Request>,
) -> Result<create_join_event::v2::Response> {
    let origin = req.origin()?.to_owned();
    let pdu = accept_membership(&s, &origin, &req.room_id, &req.event_id, &req.pdu, "join").await?;
    let state = s.rooms.state_before(&pdu.event_id)?.ok_or_else(|| Error::internal("join stored without state"))?;
    let state_ids: Vec<_> = state.into_values().collect();
    let chain = auth_chain_ids(&s, state_ids.iter().cloned().chain([pdu.event_id.clone()]))?;
    let mut room_state = create_join_event::v2::RoomState::new();
    for id in chain {
        if let Some(p) = s.rooms.pdu(&id)? {
            room_state.auth_chain.push(p.to_raw()?);
        }
    }
    for id in &state_ids {
        if let Some(p) = s.rooms.pdu(id)? {
            room_state.state.push(p.to_raw()?);
        }
    }
    let servers: std::collections::BTreeSet<String> =
        s.rooms.members(&req.room_id, "join").await?.iter().map(|u| u.server_name().to_string()).collect();
    room_state.servers_in_room = Some(servers.into_iter().collect());
    Ok(create_join_event::v2::Response::new(room_state))
}

pub async fn send_leave(
    s: Arc<Services>,
    req: Ruma<create_leave_event::v2::Request>,
) -> Result<create_leave_event::v2::Response> {
    let origin = req.origin()?.to_owned();
    accept_membership(&s, &origin, &req.room_id, &req.event_id, &req.pdu, "leave").await?;
    Ok(create_leave_event::v2::Response::new())
}

pub async fn make_knock(
    s: Arc<Services>,
    req: Ruma<prepare_knock_event::v1::Request>,
) -> Result<prepare_knock_event::v1::Response> {
    require_own_user(req.origin()?, &req.user_id)?;
    let version = s.rooms.version(&req.room_id).await?;
    if !req.ver.contains(&version) {
        return Err(Error::IncompatibleRoomVersion(version));
    }
    let (version, template) = template_raw(&s, &req.room_id, &req.user_id, "knock").await?;
    Ok(prepare_knock_event::v1::Response::new(version, template))
}

/// Accepts a knock and answers with the room's stripped state, so the knocking user's client can
/// show what they knocked on.
pub async fn send_knock(
    s: Arc<Services>,
    req: Ruma<create_knock_event::v1::Request>,
) -> Result<create_knock_event::v1::Response> {
    let origin = req.origin()?.to_owned();
    accept_membership(&s, &origin, &req.room_id, &req.event_id, &req.pdu, "knock").await?;
    let state = s
        .rooms
        .current_state(&req.room_id)
        .await?
        .iter()
        .filter(|p| crate::sync::assemble::stripped_state_type(p))
        .map(|p| p.to_raw().map(RawStrippedState::Pdu))
        .collect::<Result<Vec<_>>>()?;
    Ok(create_knock_event::v1::Response::new(state))
}

pub async fn invite(s: Arc<Services>, req: Ruma<create_invite::v2::Request>) -> Result<create_invite::v2::Response> {
    let origin = req.origin()?.to_owned();
    let rules = crate::rooms::version::rules(&req.room_version)?;
    let mut object = pdu::parse_object(&req.event)?;
    let pdu = pdu::verify(&s, &rules, &req.event, &origin).await?;
    if pdu.event_id != req.event_id || pdu.room_id != req.room_id {
        return Err(Error::bad_json("the event id or room id does not match the path"));
    }
    if pdu.kind != TimelineEventType::RoomMember || pdu.membership().as_deref() != Some("invite") {
        return Err(Error::bad_json("expected an m.room.member invite event"));
    }
    require_own_user(&origin, &pdu.sender)?;
    let invitee = pdu
        .state_key
        .as_deref()
        .and_then(|k| UserId::parse(k).ok())
        .ok_or_else(|| Error::bad_json("invite without a user id as state key"))?;
    if !s.users.is_local(&invitee) || s.users.account(&invitee)?.is_none() {
        return Err(Error::not_found(format!("no user {invitee} here")));
    }
    s.rooms.check_access_rule(&req.room_id, &pdu.sender, &invitee, "invite").await?;
    object.remove("unsigned");
    s.rooms.countersign(&req.room_version, &mut object)?;
    let signed = Pdu::from_json(pdu.event_id.clone(), object.clone())?;
    if !s.rooms.exists(&req.room_id)? {
        let mut stripped: Vec<serde_json::Value> = req.invite_room_state.iter().filter_map(stripped_value).collect();
        stripped.push(signed.to_stripped_value());
        s.rooms.record_remote_membership(&invitee, &signed, stripped).await?;
    }
    // In a room this node is in, the invite also arrives in the inviting server's transaction.
    Ok(create_invite::v2::Response::new(to_raw(&object)?))
}

/// One entry of an invite's room state in the client's stripped form.
#[allow(deprecated)]
pub(super) fn stripped_value(state: &RawStrippedState) -> Option<serde_json::Value> {
    let raw = match state {
        RawStrippedState::Pdu(raw) => raw.get(),
        RawStrippedState::Stripped(raw) => raw.json().get(),
        _ => return None,
    };
    let full: serde_json::Value = serde_json::from_str(raw).ok()?;
    Some(serde_json::json!({
        "type": full.get("type")?,
        "state_key": full.get("state_key")?,
        "sender": full.get("sender")?,
        "content": full.get("content")?,
    }))
}

/// The server a pre-v12 room id names, a last resort to join through.
pub fn room_server(room_id: &RoomId) -> Option<ruma::OwnedServerName> {
    room_id.server_name().map(ToOwned::to_owned)
}
