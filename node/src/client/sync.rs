//! `/v3/sync`, typing, receipts and read markers.

use std::sync::Arc;

use bytes::{BufMut, Bytes};
use ruma::api::client::{
    read_marker::set_read_marker,
    receipt::create_receipt::{self, v3::ReceiptType},
    sync::sync_events,
    typing::create_typing_event::{self, v3::Typing},
};
use ruma::api::{OutgoingResponse, error::IntoHttpError};

use crate::{
    Services,
    error::{Error, Result},
    http::Ruma,
};

pub async fn sync(s: Arc<Services>, req: Ruma<sync_events::v3::Request>) -> Result<SyncResponse> {
    let auth = req.user()?.clone();
    Ok(SyncResponse(crate::sync::sync(&s, &auth, req.body).await?))
}

/// The `/sync` response, serialised by ruma except in one case: ruma 0.16 (the version
/// matrix-sdk 0.18 links) leaves `rooms` out when it holds only knocked rooms, so a client never
/// saw its knock. Fixed upstream in ruma PR #2523; drop this wrapper when ruma is upgraded.
pub struct SyncResponse(sync_events::v3::Response);

impl OutgoingResponse for SyncResponse {
    fn try_into_http_response<T: Default + BufMut>(self) -> std::result::Result<http::Response<T>, IntoHttpError> {
        let rooms = &self.0.rooms;
        let knock_only = !rooms.knock.is_empty() && rooms.is_empty();
        let knock = if knock_only { Some(serde_json::to_value(&rooms.knock)?) } else { None };
        let response = self.0.try_into_http_response::<Vec<u8>>()?;
        let (parts, mut body) = response.into_parts();
        if let Some(knock) = knock {
            let mut value: serde_json::Value = serde_json::from_slice(&body)?;
            if let Some(object) = value.as_object_mut() {
                object.insert("rooms".to_owned(), serde_json::json!({ "knock": knock }));
            }
            body = serde_json::to_vec(&value)?;
        }
        let mut out = T::default();
        out.put_slice(&body);
        Ok(http::Response::from_parts(parts, out))
    }
}

/// The spec's schema requires only `typing`, but ruma refuses `{"typing": true}` without a
/// `timeout`. Such a request gets the 30 s that Synapse gives it.
pub fn typing_body(_: &mut http::request::Parts, body: Bytes) -> Result<Bytes> {
    crate::http::default_field(body, "timeout", 30_000.into(), |fields| {
        fields.get("typing") == Some(&serde_json::Value::Bool(true))
    })
}

pub async fn typing(
    s: Arc<Services>,
    req: Ruma<create_typing_event::v3::Request>,
) -> Result<create_typing_event::v3::Response> {
    let auth = req.user()?;
    if auth.user_id != req.user_id {
        return Err(Error::forbidden("you can only set your own typing state"));
    }
    if s.rooms.membership(&req.room_id, &auth.user_id).await?.as_deref() != Some("join") {
        return Err(Error::forbidden("you are not in this room"));
    }
    let timeout = match req.state {
        Typing::Yes(t) => Some(t.timeout),
        _ => None,
    };
    s.sync.typing.set(&req.room_id, &auth.user_id, timeout);
    crate::federation::edu::typing(&s, &req.room_id, &auth.user_id, timeout.is_some()).await;
    Ok(create_typing_event::v3::Response::new())
}

/// Receipts and read markers are for members: checked before anything is stored, so a refused
/// request leaves no marker behind.
async fn ensure_joined(s: &Services, auth: &crate::http::Auth, room: &ruma::RoomId) -> Result<()> {
    if s.rooms.membership(room, &auth.user_id).await?.as_deref() != Some("join") {
        return Err(Error::forbidden("you are not in this room"));
    }
    Ok(())
}

async fn receipt(
    s: &Services,
    auth: &crate::http::Auth,
    room: &ruma::RoomId,
    kind: &str,
    event_id: &ruma::EventId,
    thread: Option<String>,
) -> Result<()> {
    ensure_joined(s, auth, room).await?;
    if s.rooms.pdu(event_id)?.is_none_or(|p| p.room_id != room) {
        return Err(Error::not_found("no such event in this room"));
    }
    s.rooms.set_receipt(room, &auth.user_id, kind, event_id, thread.clone()).await?;
    // Private receipts stay on this server.
    if kind == "m.read" {
        crate::federation::edu::receipt(s, room, &auth.user_id, event_id, thread).await;
    }
    Ok(())
}

pub async fn create_receipt(
    s: Arc<Services>,
    req: Ruma<create_receipt::v3::Request>,
) -> Result<create_receipt::v3::Response> {
    let auth = req.user()?;
    let thread = match &req.thread {
        ruma::events::receipt::ReceiptThread::Unthreaded => None,
        other => other.as_str().map(str::to_owned),
    };
    match req.receipt_type {
        ReceiptType::Read => receipt(&s, auth, &req.room_id, "m.read", &req.event_id, thread).await?,
        ReceiptType::ReadPrivate => receipt(&s, auth, &req.room_id, "m.read.private", &req.event_id, thread).await?,
        ReceiptType::FullyRead => {
            ensure_joined(&s, auth, &req.room_id).await?;
            let content = serde_json::json!({ "event_id": req.event_id });
            s.users.set_account_data(&auth.user_id, Some(&req.room_id), "m.fully_read", &content).await?;
        }
        _ => return Err(Error::invalid_param("unknown receipt type")),
    }
    Ok(create_receipt::v3::Response::new())
}

pub async fn read_markers(
    s: Arc<Services>,
    req: Ruma<set_read_marker::v3::Request>,
) -> Result<set_read_marker::v3::Response> {
    let auth = req.user()?;
    ensure_joined(&s, auth, &req.room_id).await?;
    if let Some(fully_read) = &req.fully_read {
        let content = serde_json::json!({ "event_id": fully_read });
        s.users.set_account_data(&auth.user_id, Some(&req.room_id), "m.fully_read", &content).await?;
    }
    if let Some(id) = &req.read_receipt {
        receipt(&s, auth, &req.room_id, "m.read", id, None).await?;
    }
    if let Some(id) = &req.private_read_receipt {
        receipt(&s, auth, &req.room_id, "m.read.private", id, None).await?;
    }
    Ok(set_read_marker::v3::Response::new())
}
