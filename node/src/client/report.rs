//! Reports to the node's admins: `POST /rooms/{roomId}/report/{eventId}` (an event the reporter
//! can see), `POST /rooms/{roomId}/report` and `POST /users/{userId}/report`. Each is kept for
//! `GET /_tocsin/admin/reports` and posted to the admin room.

use std::sync::Arc;

use ruma::api::client::{
    reporting::report_user,
    room::{report_content, report_room},
};

use super::read::{access, hidden_as_missing};
use crate::{
    Services,
    error::{Error, Result},
    http::Ruma,
    rooms::reports::Subject,
};

pub async fn event(s: Arc<Services>, req: Ruma<report_content::v3::Request>) -> Result<report_content::v3::Response> {
    let auth = req.user()?;
    // An event the reporter cannot see is answered like a missing one, so a report cannot probe
    // rooms or history.
    let access = access(&s, auth, &req.room_id).await.map_err(hidden_as_missing)?;
    let (pos, pdu) = s.rooms.served_event(&req.event_id)?.ok_or_else(|| Error::not_found("no such event"))?;
    if pdu.room_id != req.room_id || !access.may_see(pos, &pdu) {
        return Err(Error::not_found("no such event"));
    }
    let subject = Subject::Event { room_id: req.room_id.clone(), event_id: req.event_id.clone(), sender: pdu.sender };
    crate::admin::notices::file_report(&s, subject, &auth.user_id, req.reason.as_deref()).await?;
    Ok(report_content::v3::Response::new())
}

pub async fn room(s: Arc<Services>, req: Ruma<report_room::v3::Request>) -> Result<report_room::v3::Response> {
    let auth = req.user()?;
    if !s.rooms.exists(&req.room_id)? {
        return Err(Error::not_found("no such room on this node"));
    }
    let subject = Subject::Room { room_id: req.room_id.clone() };
    crate::admin::notices::file_report(&s, subject, &auth.user_id, given(&req.reason)).await?;
    Ok(report_room::v3::Response::new())
}

pub async fn user(s: Arc<Services>, req: Ruma<report_user::v3::Request>) -> Result<report_user::v3::Response> {
    let auth = req.user()?;
    if s.users.is_local(&req.user_id) && s.users.account(&req.user_id)?.is_none() {
        return Err(Error::not_found("no such user on this node"));
    }
    let subject = Subject::User { user_id: req.user_id.clone() };
    crate::admin::notices::file_report(&s, subject, &auth.user_id, given(&req.reason)).await?;
    Ok(report_user::v3::Response::new())
}

/// The room and user report endpoints take a reason that may be empty: empty means none given.
fn given(reason: &str) -> Option<&str> {
    Some(reason).filter(|r| !r.trim().is_empty())
}
