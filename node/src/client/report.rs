//! `POST /rooms/{roomId}/report/{eventId}`: a user reports an event they can see to the node's
//! admins (listed at `GET /_tocsin/admin/reports`).

use std::sync::Arc;

use ruma::api::client::room::report_content;

use super::read::{access, hidden_as_missing};
use crate::{
    Services,
    error::{Error, Result},
    http::Ruma,
};

pub async fn report(s: Arc<Services>, req: Ruma<report_content::v3::Request>) -> Result<report_content::v3::Response> {
    let auth = req.user()?;
    // An event the reporter cannot see is answered like a missing one, so a report cannot probe
    // rooms or history.
    let access = access(&s, auth, &req.room_id).await.map_err(hidden_as_missing)?;
    let (pos, pdu) = s.rooms.served_event(&req.event_id)?.ok_or_else(|| Error::not_found("no such event"))?;
    if pdu.room_id != req.room_id || !access.may_see(pos, &pdu) {
        return Err(Error::not_found("no such event"));
    }
    s.rooms.report(&req.room_id, &req.event_id, &auth.user_id, &pdu.sender, req.reason.as_deref()).await?;
    Ok(report_content::v3::Response::new())
}
