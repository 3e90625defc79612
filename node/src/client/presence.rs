//! `/presence/{userId}/status`: set your own presence, read someone's. With presence off, a set
//! is accepted and ignored and everyone reads as offline, as clients expect of such servers.

use std::sync::Arc;

use ruma::api::client::presence::{get_presence, set_presence};

use crate::{
    Services,
    error::{Error, Result},
    http::Ruma,
};

pub async fn set(s: Arc<Services>, req: Ruma<set_presence::v3::Request>) -> Result<set_presence::v3::Response> {
    let auth = req.user()?;
    if auth.user_id != req.user_id {
        return Err(Error::forbidden("you can only set your own presence"));
    }
    if !crate::sync::presence::is_settable(&req.presence) {
        return Err(Error::invalid_param(format!(
            "`{}` is not a presence state: use online, unavailable or offline",
            req.presence
        )));
    }
    let body = req.body;
    if let Some(status) = s.sync.presence.set(&body.user_id, body.presence, body.status_msg) {
        crate::federation::edu::presence(&s, &body.user_id, &status).await;
    }
    Ok(set_presence::v3::Response::new())
}

pub async fn get(s: Arc<Services>, req: Ruma<get_presence::v3::Request>) -> Result<get_presence::v3::Response> {
    let auth = req.user()?;
    let target = &req.user_id;
    if auth.user_id != *target && !shares_room(&s, &auth.user_id, target)? {
        return Err(Error::forbidden("you share no room with this user"));
    }
    let status = s.sync.presence.get(target);
    let mut response = get_presence::v3::Response::new(status.presence.clone());
    if s.sync.presence.enabled() {
        response.status_msg = status.status_msg.clone();
        response.currently_active = Some(status.currently_active);
        response.last_active_ago = Some(status.last_active_ago);
    }
    Ok(response)
}

fn shares_room(s: &Services, a: &ruma::UserId, b: &ruma::UserId) -> Result<bool> {
    let mine = s.rooms.joined_rooms(a)?;
    Ok(s.rooms.joined_rooms(b)?.iter().any(|r| mine.contains(r)))
}
