//! `GET /rooms/{roomId}/threads`: the room's thread roots, the most recently active first, each
//! with its thread summary bundled (see `rooms::threads`).

use std::sync::Arc;

use ruma::api::client::threads::get_threads::v1::{IncludeThreads, Request, Response};

use super::read::access;
use crate::{
    Services,
    error::{Error, Result},
    http::Ruma,
    sync::assemble::raw,
};

pub async fn list(s: Arc<Services>, req: Ruma<Request>) -> Result<Response> {
    let auth = req.user()?;
    let access = access(&s, auth, &req.room_id).await?;
    let mut before = super::paging::from_position(req.from.as_deref())?;
    let limit = super::paging::limit(req.limit);
    let participated_only = req.include == IncludeThreads::Participated;
    let viewer = Some((&*auth.user_id, &*auth.device_id));
    let mut chunk = Vec::new();
    let mut next_batch = None;
    // Roots the viewer may not see (or threads they did not join, for `participated`) are
    // skipped, so a page may take several reads.
    'pages: loop {
        let (roots, more) = s.rooms.thread_roots(&req.room_id, before, limit)?;
        for (root_id, latest) in roots {
            before = Some(latest);
            let Some((pos, root)) = s.rooms.served_event(&root_id)? else { continue };
            if root.room_id != req.room_id || !access.may_see(pos, &root) {
                continue;
            }
            let Some(thread) = s.rooms.thread(&req.room_id, &root, &auth.user_id, &access)? else { continue };
            if participated_only && !thread.participated {
                continue;
            }
            chunk.push(raw(&s.rooms.client_event(&(pos, root), viewer, true)?)?);
            if chunk.len() == limit {
                next_batch = Some(latest.to_string());
                break 'pages;
            }
        }
        if !more {
            break;
        }
    }
    let mut response = Response::new(chunk);
    response.next_batch = next_batch;
    Ok(response)
}

/// ruma 0.16 requires `include`, which the spec makes optional (default `all`), and matrix-sdk
/// leaves it out: supply the default before parsing.
pub fn default_include(parts: &mut http::request::Parts, body: bytes::Bytes) -> Result<bytes::Bytes> {
    let query = parts.uri.query().unwrap_or("");
    if query.split('&').any(|kv| kv.split('=').next() == Some("include")) {
        return Ok(body);
    }
    let query = if query.is_empty() { "include=all".to_owned() } else { format!("{query}&include=all") };
    let uri = format!("{}?{query}", parts.uri.path());
    parts.uri = uri.parse().map_err(|_| Error::invalid_param("the request URI is not valid"))?;
    Ok(body)
}
