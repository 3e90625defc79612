//! `GET /rooms/{roomId}/hierarchy` (a space's rooms, for Element's space browser) and
//! `GET /room_summary/{roomIdOrAlias}` (a room's preview before joining). The walk and what a
//! viewer may see are in [`crate::spaces`] and `rooms::summary`.

use std::sync::Arc;

use ruma::{
    UInt,
    api::client::{room::get_summary, space::get_hierarchy},
    events::room::member::MembershipState,
};

use crate::{
    Services,
    error::{Error, Result},
    http::Ruma,
    rooms::summary::Viewer,
};

const DEFAULT_LIMIT: usize = 50;
const MAX_LIMIT: usize = 100;
/// How deep a walk goes when the client does not say, and at most.
const MAX_DEPTH: usize = 5;

pub async fn hierarchy(s: Arc<Services>, req: Ruma<get_hierarchy::v1::Request>) -> Result<get_hierarchy::v1::Response> {
    let auth = req.user()?;
    let skip = match req.from.as_deref() {
        Some(from) => {
            from.parse::<usize>().map_err(|_| Error::invalid_param("`from` is not a token this node gave"))?
        }
        None => 0,
    };
    let limit = req.limit.map_or(DEFAULT_LIMIT, |l| to_usize(l, MAX_LIMIT)).clamp(1, MAX_LIMIT);
    let max_depth = req.max_depth.map_or(MAX_DEPTH, |d| to_usize(d, MAX_DEPTH)).min(MAX_DEPTH);
    let (rooms, next) =
        crate::spaces::hierarchy(&s, &auth.user_id, &req.room_id, skip, limit, max_depth, req.suggested_only).await?;
    let mut response = get_hierarchy::v1::Response::new();
    response.rooms = rooms;
    response.next_batch = next.map(|n| n.to_string());
    Ok(response)
}

fn to_usize(value: UInt, cap: usize) -> usize {
    usize::try_from(u64::from(value)).unwrap_or(cap)
}

pub async fn summary(s: Arc<Services>, req: Ruma<get_summary::v1::Request>) -> Result<get_summary::v1::Response> {
    let viewer = match req.caller.as_ref() {
        Some(auth) => Viewer::User(&auth.user_id),
        None => Viewer::Anonymous,
    };
    let (room_id, mut via) = super::rooms::resolve_with_servers(&s, &req.room_id_or_alias).await?;
    let not_found = || Error::not_found("no such room, or you may not see it");
    if s.rooms.exists(&room_id)? {
        let described = s.rooms.describe(&room_id, viewer).await?.ok_or_else(not_found)?;
        let mut response = get_summary::v1::Response::new(described.summary);
        response.membership = described.membership.map(|m| MembershipState::from(m.as_str()));
        return Ok(response);
    }
    via.extend(req.via.iter().cloned());
    via.extend(crate::federation::membership::room_server(&room_id));
    via.dedup();
    let (summary, _) = crate::spaces::remote(&s, &room_id, &via, false).await.ok_or_else(not_found)?;
    Ok(get_summary::v1::Response::new(summary))
}
