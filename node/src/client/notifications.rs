//! `GET /notifications`: the events that notified the caller, newest first, as the push worker
//! listed them (see `push::notifications`).

use std::sync::Arc;

use ruma::{
    MilliSecondsSinceUnixEpoch, UInt,
    api::client::push::get_notifications::v3::{Notification, Request, Response},
};

use crate::{
    Services,
    error::{Error, Result},
    http::Ruma,
    sync::assemble::raw,
};

/// The page size when the client gives none, and the most one page holds.
const DEFAULT_LIMIT: usize = 20;
const MAX_LIMIT: usize = 100;

pub async fn list(s: Arc<Services>, req: Ruma<Request>) -> Result<Response> {
    let auth = req.user()?;
    let before = match req.from.as_deref() {
        Some(from) => {
            Some(from.parse::<u64>().map_err(|_| Error::invalid_param("`from` is not a token this node gave"))?)
        }
        None => None,
    };
    let limit = req.limit.map_or(DEFAULT_LIMIT, |l| usize::try_from(l).unwrap_or(MAX_LIMIT)).clamp(1, MAX_LIMIT);
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
