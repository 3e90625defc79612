//! Creating rooms and memberships: createRoom, join, knock, invite, leave, forget, kick, ban,
//! unban.

use std::sync::Arc;

use ruma::{
    OwnedRoomId, RoomAliasId, RoomId, RoomOrAliasId, RoomVersionId,
    api::client::{
        knock::knock_room,
        membership::{
            ban_user, forget_room, invite_user, join_room_by_id, join_room_by_id_or_alias, joined_rooms, kick_user,
            leave_room, unban_user,
        },
        room::{Visibility, create_room},
    },
};
use serde_json::Value;

use crate::{
    Services,
    error::{Error, Result},
    http::{Action, Ruma},
    rooms::{CreateRoom, Preset},
};

fn to_object<T>(raw: &ruma::serde::Raw<T>) -> Result<serde_json::Map<String, Value>> {
    serde_json::from_str(raw.json().get()).map_err(|e| Error::bad_json(format!("expected an object: {e}")))
}

pub async fn create(s: Arc<Services>, req: Ruma<create_room::v3::Request>) -> Result<create_room::v3::Response> {
    let auth = req.user()?.clone();
    let body = req.body;
    let version = match body.room_version {
        Some(v) => v,
        None => RoomVersionId::try_from(s.config.default_room_version.as_str()).map_err(Error::internal)?,
    };
    crate::rooms::version::rules(&version)?;
    let preset = match body.preset {
        Some(create_room::v3::RoomPreset::PublicChat) => Preset::PublicChat,
        Some(create_room::v3::RoomPreset::TrustedPrivateChat) => Preset::TrustedPrivateChat,
        Some(create_room::v3::RoomPreset::PrivateChat) => Preset::PrivateChat,
        None if body.visibility == Visibility::Public => Preset::PublicChat,
        _ => Preset::PrivateChat,
    };
    let mut initial_state = Vec::new();
    for raw in &body.initial_state {
        let event = to_object(raw)?;
        let kind = event
            .get("type")
            .and_then(Value::as_str)
            .ok_or_else(|| Error::bad_json("initial_state event without type"))?;
        let key = event.get("state_key").and_then(Value::as_str).unwrap_or_default();
        let content = event.get("content").cloned().unwrap_or_else(|| Value::Object(Default::default()));
        initial_state.push((kind.to_owned(), key.to_owned(), content));
    }
    let alias = match &body.room_alias_name {
        Some(local) => Some(
            RoomAliasId::parse(format!("#{local}:{}", s.server_name))
                .map_err(|e| Error::invalid_param(format!("bad alias: {e}")))?,
        ),
        None => None,
    };
    let creation_content = match &body.creation_content {
        Some(raw) => to_object(raw)?,
        None => Default::default(),
    };
    let power_override = match &body.power_level_content_override {
        Some(raw) => Some(to_object(raw)?),
        None => None,
    };
    let creator_profile = s.users.profile(&auth.user_id)?.unwrap_or_default();
    let room_id = s
        .rooms
        .create_room(CreateRoom {
            version,
            creator: auth.user_id.clone(),
            creator_profile,
            creation_content,
            preset,
            initial_state,
            name: body.name.clone(),
            topic: body.topic.clone(),
            invite: body.invite.clone(),
            is_direct: body.is_direct,
            alias,
            power_override,
            public: body.visibility == Visibility::Public,
            encrypted: s.policy.encrypt_new_rooms(s.config.encrypt_new_rooms),
        })
        .await?;
    for invitee in body.invite.iter().filter(|u| !s.users.is_local(u)) {
        crate::federation::join::invite_remote(&s, &room_id, &auth.user_id, invitee, None).await?;
    }
    Ok(create_room::v3::Response::new(room_id))
}

/// Joins locally when a user of this node is in the room (the state here is current), and
/// through another server otherwise.
async fn join(
    s: &Arc<Services>,
    user: &ruma::UserId,
    room_id: &RoomId,
    via: &[ruma::OwnedServerName],
) -> Result<OwnedRoomId> {
    let joined = join_here_or_remote(s, user, room_id, via).await?;
    crate::federation::edu::presence_on_join(s, &joined, user).await;
    Ok(joined)
}

async fn join_here_or_remote(
    s: &Arc<Services>,
    user: &ruma::UserId,
    room_id: &RoomId,
    via: &[ruma::OwnedServerName],
) -> Result<OwnedRoomId> {
    if s.rooms.is_shut_down(room_id)? {
        return Err(Error::forbidden("this room was shut down by the server's administrator"));
    }
    if s.rooms.exists(room_id)? && s.rooms.has_local_member(room_id).await? {
        let profile = s.users.profile(user)?.unwrap_or_default();
        s.rooms.set_membership(room_id, user, user, "join", profile, None).await?;
        return Ok(room_id.to_owned());
    }
    let mut servers: Vec<ruma::OwnedServerName> = via.to_vec();
    if let Some(inviter) = s.rooms.inviter(user, room_id)? {
        servers.push(inviter.server_name().to_owned());
    }
    servers.extend(crate::federation::membership::room_server(room_id));
    if !s.rooms.exists(room_id)? && servers.is_empty() {
        return Err(Error::not_found("this node does not know the room; name a server to join through (via)"));
    }
    servers.dedup();
    crate::federation::join::join_remote(s, user, room_id, &servers).await
}

pub async fn join_by_id(
    s: Arc<Services>,
    req: Ruma<join_room_by_id::v3::Request>,
) -> Result<join_room_by_id::v3::Response> {
    let auth = req.user()?;
    s.limits.take(Action::Join, Some(&auth.user_id), req.client_ip)?;
    Ok(join_room_by_id::v3::Response::new(join(&s, &auth.user_id, &req.room_id, &[]).await?))
}

pub async fn join_by_id_or_alias(
    s: Arc<Services>,
    req: Ruma<join_room_by_id_or_alias::v3::Request>,
) -> Result<join_room_by_id_or_alias::v3::Response> {
    let auth = req.user()?;
    s.limits.take(Action::Join, Some(&auth.user_id), req.client_ip)?;
    let (room_id, mut via) = resolve_with_servers(&s, &req.room_id_or_alias).await?;
    via.extend(req.via.iter().cloned());
    Ok(join_room_by_id_or_alias::v3::Response::new(join(&s, &auth.user_id, &room_id, &via).await?))
}

/// Knocks on a room (join rule `knock`): on this node when it is in the room, else through the
/// servers named (`via`), the alias's server, or the server the room id names.
pub async fn knock(s: Arc<Services>, req: Ruma<knock_room::v3::Request>) -> Result<knock_room::v3::Response> {
    let auth = req.user()?.clone();
    s.limits.take(Action::Join, Some(&auth.user_id), req.client_ip)?;
    let (room_id, alias_servers) = resolve_with_servers(&s, &req.room_id_or_alias).await?;
    let reason = req.body.reason.as_deref();
    if s.rooms.exists(&room_id)? && s.rooms.has_local_member(&room_id).await? {
        let profile = s.users.profile(&auth.user_id)?.unwrap_or_default();
        s.rooms.set_membership(&room_id, &auth.user_id, &auth.user_id, "knock", profile, reason).await?;
        return Ok(knock_room::v3::Response::new(room_id));
    }
    let mut servers = alias_servers;
    servers.extend(req.body.via.iter().cloned());
    servers.extend(crate::federation::membership::room_server(&room_id));
    servers.dedup();
    crate::federation::join::knock_remote(&s, &auth.user_id, &room_id, &servers, reason).await?;
    Ok(knock_room::v3::Response::new(room_id))
}

/// A room id as it is, or an alias resolved (on its own server when that is another one), with
/// the servers the alias's directory says to join through.
pub async fn resolve_with_servers(
    s: &Services,
    id: &RoomOrAliasId,
) -> Result<(OwnedRoomId, Vec<ruma::OwnedServerName>)> {
    match <&RoomId>::try_from(id) {
        Ok(room) => Ok((room.to_owned(), Vec::new())),
        Err(alias) => crate::federation::directory::resolve_alias(s, alias).await,
    }
}

pub async fn invite(s: Arc<Services>, req: Ruma<invite_user::v3::Request>) -> Result<invite_user::v3::Response> {
    let auth = req.user()?;
    s.limits.take(Action::Invite, Some(&auth.user_id), req.client_ip)?;
    let invite_user::v3::InvitationRecipient::UserId(recipient) = &req.recipient else {
        return Err(Error::forbidden("third-party invites are not supported"));
    };
    let user_id = &recipient.user_id;
    if s.users.is_local(user_id) && s.users.account(user_id)?.is_none() {
        return Err(Error::not_found(format!("no user {user_id} on this node")));
    }
    if !s.users.is_local(user_id) {
        crate::federation::join::invite_remote(&s, &req.room_id, &auth.user_id, user_id, recipient.reason.as_deref())
            .await?;
        return Ok(invite_user::v3::Response::new());
    }
    let profile = s.users.profile(user_id)?.unwrap_or_default();
    s.rooms
        .set_membership(&req.room_id, &auth.user_id, user_id, "invite", profile, recipient.reason.as_deref())
        .await?;
    Ok(invite_user::v3::Response::new())
}

pub async fn leave(s: Arc<Services>, req: Ruma<leave_room::v3::Request>) -> Result<leave_room::v3::Response> {
    let auth = req.user()?;
    s.rooms
        .set_membership(&req.room_id, &auth.user_id, &auth.user_id, "leave", (None, None), req.reason.as_deref())
        .await?;
    Ok(leave_room::v3::Response::new())
}

pub async fn forget(s: Arc<Services>, req: Ruma<forget_room::v3::Request>) -> Result<forget_room::v3::Response> {
    let auth = req.user()?;
    match s.rooms.membership(&req.room_id, &auth.user_id).await?.as_deref() {
        // Invited and knocking users have not left either: they reject or rescind first.
        Some("join" | "invite" | "knock") => Err(Error::BadState("leave the room before forgetting it".into())),
        _ => Ok(forget_room::v3::Response::new()),
    }
}

pub async fn kick(s: Arc<Services>, req: Ruma<kick_user::v3::Request>) -> Result<kick_user::v3::Response> {
    let auth = req.user()?;
    s.rooms
        .set_membership(&req.room_id, &auth.user_id, &req.user_id, "leave", (None, None), req.reason.as_deref())
        .await?;
    Ok(kick_user::v3::Response::new())
}

pub async fn ban(s: Arc<Services>, req: Ruma<ban_user::v3::Request>) -> Result<ban_user::v3::Response> {
    let auth = req.user()?;
    s.rooms
        .set_membership(&req.room_id, &auth.user_id, &req.user_id, "ban", (None, None), req.reason.as_deref())
        .await?;
    Ok(ban_user::v3::Response::new())
}

pub async fn unban(s: Arc<Services>, req: Ruma<unban_user::v3::Request>) -> Result<unban_user::v3::Response> {
    let auth = req.user()?;
    s.rooms
        .set_membership(&req.room_id, &auth.user_id, &req.user_id, "leave", (None, None), req.reason.as_deref())
        .await?;
    Ok(unban_user::v3::Response::new())
}

pub async fn joined(s: Arc<Services>, req: Ruma<joined_rooms::v3::Request>) -> Result<joined_rooms::v3::Response> {
    let auth = req.user()?;
    let rooms = s
        .rooms
        .user_rooms(&auth.user_id)?
        .into_iter()
        .filter(|(_, r)| r.membership == "join")
        .map(|(id, _)| id)
        .collect();
    Ok(joined_rooms::v3::Response::new(rooms))
}

pub async fn upgrade(
    s: Arc<Services>,
    req: Ruma<ruma::api::client::room::upgrade_room::v3::Request>,
) -> Result<ruma::api::client::room::upgrade_room::v3::Response> {
    let auth = req.user()?;
    // Creating a room's worth of events, like a join.
    s.limits.take(Action::Join, Some(&auth.user_id), req.client_ip)?;
    let profile = s.users.profile(&auth.user_id)?.unwrap_or_default();
    let new_room = s.rooms.upgrade(&req.room_id, &auth.user_id, profile, req.new_version.clone()).await?;
    Ok(ruma::api::client::room::upgrade_room::v3::Response::new(new_room))
}
