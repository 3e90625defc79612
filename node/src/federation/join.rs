//! A local user joining or knocking on a room through another server, inviting a user of
//! another server, and the history a new member gets by backfill.

use std::sync::Arc;

use ruma::{
    CanonicalJsonValue, MilliSecondsSinceUnixEpoch, OwnedEventId, OwnedRoomId, OwnedServerName, RoomId, RoomVersionId,
    UInt, UserId,
    api::federation::{
        backfill::get_backfill,
        membership::{
            RawStrippedState, create_invite, create_join_event, create_knock_event, prepare_join_event,
            prepare_knock_event,
        },
    },
    canonical_json::to_canonical_value,
    room_version_rules::RoomVersionRules,
    signatures::hash_and_sign_event,
};
use serde_json::value::RawValue;

use super::{pdu, receive::verify_all};
use crate::{
    Services,
    error::{Error, Result},
    rooms::{Incoming, NewEvent, Outcome, member_content},
};

/// How much history a new member's server fetches right after joining.
const BACKFILL_ON_JOIN: u32 = 100;
/// How often that backfill is tried before it is left to later pagination.
const BACKFILL_TRIES: u32 = 6;

/// Room versions this node can join.
fn supported_versions() -> Vec<RoomVersionId> {
    vec![RoomVersionId::V10, RoomVersionId::V11, RoomVersionId::V12]
}

/// Joins `user` to a room this node is not in, through the first of `servers` that answers.
pub async fn join_remote(
    s: &Arc<Services>,
    user: &UserId,
    room_id: &RoomId,
    servers: &[OwnedServerName],
) -> Result<OwnedRoomId> {
    let mut last_error = Error::not_found("no server to join the room through");
    for server in servers.iter().filter(|srv| **srv != s.server_name) {
        match join_via(s, user, room_id, server).await {
            Ok(()) => return Ok(room_id.to_owned()),
            Err(e) => {
                tracing::info!(%room_id, %server, error = %e, "joining through this server failed");
                last_error = e;
            }
        }
    }
    Err(last_error)
}

/// A membership event of `user` filled in from a resident server's template (make_join,
/// make_knock): only the fields the resident chose stay, ours are set here, and it is signed.
fn fill_template(
    s: &Services,
    user: &UserId,
    template: &RawValue,
    rules: &RoomVersionRules,
    membership: &str,
    reason: Option<&str>,
) -> Result<(OwnedEventId, Box<RawValue>)> {
    let mut object = pdu::parse_object(template)?;
    let profile = s.users.profile(user)?.unwrap_or_default();
    let content = to_canonical_value(member_content(membership, &profile, reason)).map_err(Error::internal)?;
    object.insert("content".into(), content);
    object.insert("sender".into(), CanonicalJsonValue::String(user.to_string()));
    object.insert("state_key".into(), CanonicalJsonValue::String(user.to_string()));
    object.insert("origin_server_ts".into(), CanonicalJsonValue::Integer(MilliSecondsSinceUnixEpoch::now().0.into()));
    object.remove("hashes");
    object.remove("signatures");
    object.remove("event_id");
    hash_and_sign_event(s.server_name.as_str(), s.keys.pair(), &mut object, &rules.redaction)
        .map_err(Error::internal)?;
    Ok((pdu::event_id(&object, rules)?, pdu::to_raw(&object)?))
}

async fn join_via(s: &Arc<Services>, user: &UserId, room_id: &RoomId, server: &OwnedServerName) -> Result<()> {
    let mut make = prepare_join_event::v1::Request::new(room_id.to_owned(), user.to_owned());
    make.ver = supported_versions();
    let made = s.federation_client.send(server, make).await?;
    let version = made.room_version.unwrap_or(RoomVersionId::V1);
    let rules = crate::rooms::version::rules(&version)?;
    let (event_id, raw) = fill_template(s, user, &made.event, &rules, "join", None)?;
    let sent = s
        .federation_client
        .send(server, create_join_event::v2::Request::new(room_id.to_owned(), event_id.clone(), raw.clone()))
        .await?;
    let room_state = sent.room_state;
    // The resident server may return the join with its own signature added (restricted rooms).
    let join = pdu::verify(s, &rules, room_state.event.as_deref().unwrap_or(&raw), server).await?;
    if join.event_id != event_id {
        return Err(Error::bad_json("the resident server changed the join event"));
    }
    let mut events = verify_all(s, &rules, &room_state.auth_chain, server).await;
    let state_events = verify_all(s, &rules, &room_state.state, server).await;
    let state: crate::rooms::StateIds = state_events
        .iter()
        .filter(|p| p.room_id == room_id)
        .filter_map(|p| p.state_key.as_ref().map(|k| ((p.state_event_type(), k.clone()), p.event_id.clone())))
        .collect();
    events.extend(state_events);
    s.rooms.store_outliers(&rules.authorization, events).await?;
    let _head = s.rooms.begin_remote_room(room_id, version)?;
    match s.rooms.append_remote(Incoming { pdu: join.clone(), state_before: Some(state) }).await? {
        Outcome::Accepted | Outcome::Known => {}
        other => return Err(Error::Forbidden(format!("the join was not accepted here: {other:?}"))),
    }
    // The resident server passes the join on, but it may go dark right after (a crisis): the
    // other servers also hear it from here, or they would not send this node the room's events.
    // A server that has it already just acknowledges it.
    if let Err(e) = s.rooms.forward(&join, &[server]).await {
        tracing::warn!(%room_id, error = %e, "could not queue the join for the room's other servers");
    }
    // History arrives in the background: the join itself must not wait for it.
    let (s2, room, server) = (s.clone(), room_id.to_owned(), server.clone());
    s.workers.spawn("backfill-after-join", |_stop| async move {
        // A link can drop right after the join: a few tries, backing off, before giving up.
        for attempt in 0..BACKFILL_TRIES {
            match backfill(&s2, &room, &server, BACKFILL_ON_JOIN).await {
                Ok(_) => return,
                Err(e) => {
                    tracing::info!(room_id = %room, %server, attempt, error = %e, "backfill after join failed");
                    tokio::time::sleep(std::time::Duration::from_millis(500 << attempt)).await;
                }
            }
        }
    });
    Ok(())
}

/// Knocks for `user` on a room this node is not in, through the first of `servers` that
/// answers. The room then shows as knocked in the user's `/sync`, with the stripped state the
/// resident server returned; an invite arrives later over federation like any other.
pub async fn knock_remote(
    s: &Arc<Services>,
    user: &UserId,
    room_id: &RoomId,
    servers: &[OwnedServerName],
    reason: Option<&str>,
) -> Result<()> {
    let mut last_error = Error::not_found("no server to knock through: name one (via)");
    for server in servers.iter().filter(|srv| **srv != s.server_name) {
        match knock_via(s, user, room_id, server, reason).await {
            Ok(()) => return Ok(()),
            Err(e) => {
                tracing::info!(%room_id, %server, error = %e, "knocking through this server failed");
                last_error = e;
            }
        }
    }
    Err(last_error)
}

async fn knock_via(
    s: &Arc<Services>,
    user: &UserId,
    room_id: &RoomId,
    server: &OwnedServerName,
    reason: Option<&str>,
) -> Result<()> {
    let mut make = prepare_knock_event::v1::Request::new(room_id.to_owned(), user.to_owned());
    make.ver = supported_versions();
    let made = s.federation_client.send(server, make).await?;
    let rules = crate::rooms::version::rules(&made.room_version)?;
    let (event_id, raw) = fill_template(s, user, &made.event, &rules, "knock", reason)?;
    let knock = pdu::verify(s, &rules, &raw, server).await?;
    let sent = s
        .federation_client
        .send(server, create_knock_event::v1::Request::new(room_id.to_owned(), event_id, raw))
        .await?;
    // What the resident server says the room looks like, and the knock itself.
    let mut stripped: Vec<serde_json::Value> =
        sent.knock_room_state.iter().filter_map(super::membership::stripped_value).collect();
    stripped.push(knock.to_stripped_value());
    s.rooms.record_remote_membership(user, &knock, stripped).await
}

/// Fetches up to `limit` events of history before the earliest event known here.
pub async fn backfill(s: &Arc<Services>, room_id: &RoomId, server: &OwnedServerName, limit: u32) -> Result<usize> {
    let from = s.rooms.backfill_from(room_id)?;
    if from.is_empty() {
        return Ok(0);
    }
    let version = s.rooms.version(room_id).await?;
    let rules = crate::rooms::version::rules(&version)?;
    let request = get_backfill::v1::Request::new(room_id.to_owned(), from, UInt::from(limit));
    let response = s.federation_client.send(server, request).await?;
    let mut events = verify_all(s, &rules, &response.pdus, server).await;
    events.sort_by_key(|e| std::cmp::Reverse(e.depth));
    // Each event is authorised against its auth events: fetch any this node lacks first.
    for event in &events {
        super::receive::ensure_auth_chain(s, server, &rules, event).await?;
    }
    s.rooms.store_backfill(room_id, &rules, events).await
}

/// Invites a user of another server: the invitee's server countersigns the invite before it
/// enters the room here, then it goes to every server in the room.
pub async fn invite_remote(
    s: &Arc<Services>,
    room_id: &RoomId,
    sender: &UserId,
    invitee: &UserId,
    reason: Option<&str>,
) -> Result<()> {
    let content = member_content("invite", &(None, None), reason);
    let event = NewEvent::state("m.room.member", invitee.as_str(), content);
    let (version, pdu) = s.rooms.prepare(room_id, sender, event).await?;
    let stripped = s
        .rooms
        .current_state(room_id)
        .await?
        .iter()
        .filter(|p| crate::sync::assemble::stripped_state_type(p))
        .map(|p| p.to_raw().map(RawStrippedState::Pdu))
        .collect::<Result<Vec<_>>>()?;
    let request = create_invite::v2::Request::new(
        room_id.to_owned(),
        pdu.event_id.clone(),
        version.clone(),
        pdu.to_raw()?,
        stripped,
    );
    let response = s.federation_client.send(invitee.server_name(), request).await?;
    let rules = crate::rooms::version::rules(&version)?;
    let signed = pdu::verify(s, &rules, &response.event, invitee.server_name()).await?;
    if signed.event_id != pdu.event_id {
        return Err(Error::bad_json("the invitee's server changed the invite"));
    }
    match s.rooms.append_remote(Incoming { pdu: signed.clone(), state_before: None }).await? {
        Outcome::Accepted | Outcome::Known => {}
        other => return Err(Error::Forbidden(format!("the invite was not accepted: {other:?}"))),
    }
    s.rooms.forward(&signed, &[]).await
}
