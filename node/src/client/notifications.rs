//! `GET /notifications`: the events that notified the caller, newest first, as the push worker
//! listed them (see `push::notifications`).

use std::sync::Arc;

use ruma::{
    MilliSecondsSinceUnixEpoch, UInt,
    api::client::push::get_notifications::v3::{Notification, Request, Response},
};

use crate::{Services, error::Result, http::Ruma, sync::assemble::raw};

pub async fn list(s: Arc<Services>, req: Ruma<Request>) -> Result<Response> {
    let auth = req.user()?;
    let before = super::paging::from_position(req.from.as_deref())?;
    let limit = super::paging::limit(req.limit);
    let only_highlight = req.only.as_deref() == Some("highlight");
    let viewer = Some((&*auth.user_id, &*auth.device_id));

    let mut notifications = Vec::new();
    let mut cursor = before;
    let mut next_token = None;
    // `only=highlight` filters after the scan, so a page may take several reads.
    'pages: loop {
        let page = crate::push::notifications::list(&s.db, &auth.user_id, cursor, limit)?;
        let exhausted = page.len() < limit;
        for (pos, entry) in page {
            cursor = Some(pos);
            if only_highlight && !entry.highlights() {
                continue;
            }
            // A purged event leaves the list with it; a redacted one shows redacted.
            let Some(event) = s.rooms.served_event(&entry.event_id)? else { continue };
            let read = s.rooms.read_pos(&entry.room_id, &auth.user_id)? >= pos;
            let ts = MilliSecondsSinceUnixEpoch(UInt::try_from(entry.ts).unwrap_or(UInt::MAX));
            let event = raw(&s.rooms.client_event(&event, viewer, true)?)?;
            notifications.push(Notification::new(entry.actions, event, read, entry.room_id, ts));
            if notifications.len() == limit {
                next_token = Some(pos.to_string());
                break 'pages;
            }
        }
        if exhausted {
            break;
        }
    }
    let mut response = Response::new(notifications);
    response.next_token = next_token;
    Ok(response)
}
