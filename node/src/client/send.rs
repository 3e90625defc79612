//! Sending: message events (idempotent per device and transaction), state events, redactions.

use std::sync::Arc;

use ruma::{
    api::client::{message::send_message_event, redact::redact_event, state::send_state_event},
    events::TimelineEventType,
};
use serde_json::Value;

use crate::{
    Services,
    error::{Error, Result},
    http::{Action, Ruma},
    rooms::{NewEvent, TxnRef},
};

fn content_of<T>(raw: &ruma::serde::Raw<T>) -> Result<Value> {
    let v: Value =
        serde_json::from_str(raw.json().get()).map_err(|e| Error::bad_json(format!("content is not JSON: {e}")))?;
    if !v.is_object() {
        return Err(Error::bad_json("event content must be a JSON object"));
    }
    Ok(v)
}

pub async fn message(
    s: Arc<Services>,
    req: Ruma<send_message_event::v3::Request>,
) -> Result<send_message_event::v3::Response> {
    let auth = req.user()?;
    s.limits.take(Action::Send, Some(&auth.user_id), req.client_ip)?;
    let mut content = content_of(&req.body.body)?;
    let kind = TimelineEventType::from(req.event_type.to_string());
    // `!alarm ...` typed in any client becomes an alarm before the event is built.
    if kind == TimelineEventType::RoomMessage
        && let Some(alarm) = crate::alarms::command::rewrite(&content)?
    {
        content = alarm;
    }
    let txn = TxnRef { device_id: auth.device_id.clone(), txn_id: req.txn_id.to_string(), endpoint: "send" };
    let pdu = s.rooms.send(&req.room_id, &auth.user_id, NewEvent::message(kind, content), Some(txn)).await?;
    Ok(send_message_event::v3::Response::new(pdu.event_id.clone()))
}

pub async fn state(
    s: Arc<Services>,
    req: Ruma<send_state_event::v3::Request>,
) -> Result<send_state_event::v3::Response> {
    let auth = req.user()?;
    s.limits.take(Action::Send, Some(&auth.user_id), req.client_ip)?;
    let content = content_of(&req.body.body)?;
    let event = NewEvent::state(req.event_type.to_string(), req.state_key.clone(), content);
    let pdu = s.rooms.send(&req.room_id, &auth.user_id, event, None).await?;
    Ok(send_state_event::v3::Response::new(pdu.event_id.clone()))
}

pub async fn redact(s: Arc<Services>, req: Ruma<redact_event::v3::Request>) -> Result<redact_event::v3::Response> {
    let auth = req.user()?;
    s.limits.take(Action::Send, Some(&auth.user_id), req.client_ip)?;
    if s.rooms.pdu(&req.event_id)?.is_none_or(|p| p.room_id != req.room_id) {
        return Err(Error::not_found("no such event in this room"));
    }
    let mut content = serde_json::json!({ "redacts": req.event_id });
    if let Some(reason) = &req.reason {
        content["reason"] = Value::String(reason.clone());
    }
    let event = NewEvent {
        kind: TimelineEventType::RoomRedaction,
        content,
        state_key: None,
        redacts: Some(req.event_id.clone()),
    };
    let txn = TxnRef { device_id: auth.device_id.clone(), txn_id: req.txn_id.to_string(), endpoint: "redact" };
    let pdu = s.rooms.send(&req.room_id, &auth.user_id, event, Some(txn)).await?;
    Ok(redact_event::v3::Response::new(pdu.event_id.clone()))
}
