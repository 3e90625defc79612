//! Sliding sync extensions: to-device messages, end-to-end encryption state, account data,
//! receipts and typing, from the same streams `/sync` v3 reads.

use std::collections::BTreeSet;

use ruma::{
    OwnedRoomId, UInt,
    api::client::sync::sync_events::v5::{request, response},
};

use super::connection::PosState;
use crate::{
    Services,
    error::{Error, Result},
    http::Auth,
    sync::{Token, assemble::raw},
};

/// The rooms extensions speak of: those in the lists' ranges and the subscriptions, and the ones
/// sent whole in this response (their receipts and typing start from nothing).
pub struct InView<'a> {
    pub rooms: &'a BTreeSet<OwnedRoomId>,
    pub initial: &'a BTreeSet<OwnedRoomId>,
}

/// The `since` of the to-device extension: the position the client has received up to.
pub fn to_device_since(req: &request::ToDevice) -> Result<u64> {
    match &req.since {
        None => Ok(0),
        Some(s) => {
            s.parse().map_err(|_| Error::invalid_param(format!("`{s}` is not a to-device token from this server")))
        }
    }
}

/// The extensions' part of a response, and whether it carries anything new.
pub async fn build(
    services: &Services,
    auth: &Auth,
    req: &request::Extensions,
    base: &PosState,
    now: Token,
    view: &InView<'_>,
) -> Result<(response::Extensions, bool)> {
    let mut out = response::Extensions::default();
    let mut changed = false;
    let user = &auth.user_id;
    let since = base.token.map_or(0, |t| t.pos);
    let enabled = |e: Option<bool>| e == Some(true);

    if enabled(req.to_device.enabled) {
        let since = to_device_since(&req.to_device)?;
        let cap = crate::e2ee::MAX_TO_DEVICE_PER_SYNC;
        let limit = req.to_device.limit.and_then(|l| usize::try_from(u64::from(l)).ok()).unwrap_or(cap).clamp(1, cap);
        let mut queued = services.e2ee.to_device_since(user, &auth.device_id, since, now.pos, limit + 1)?;
        let mut next_batch = now.pos.max(since);
        if queued.len() > limit {
            queued.truncate(limit);
            next_batch = queued.last().map_or(next_batch, |(pos, _)| *pos);
        }
        let mut to_device = response::ToDevice::default();
        to_device.next_batch = next_batch.to_string();
        for (_, event) in &queued {
            to_device.events.push(raw(event)?);
        }
        changed |= !to_device.events.is_empty();
        out.to_device = Some(to_device);
    }

    if enabled(req.e2ee.enabled) {
        if base.token.is_some() {
            let updates = crate::e2ee::device_lists::device_list_updates(services, user, since, now.pos).await?;
            changed |= !updates.changed.is_empty() || !updates.left.is_empty();
            out.e2ee.device_lists.changed = updates.changed;
            out.e2ee.device_lists.left = updates.left;
        }
        for (algorithm, count) in services.e2ee.one_time_key_counts(user, &auth.device_id)? {
            out.e2ee
                .device_one_time_keys_count
                .insert(algorithm.as_str().into(), UInt::try_from(count).unwrap_or(UInt::MAX));
        }
        out.e2ee.device_unused_fallback_key_types = Some(
            services.e2ee.unused_fallback_key_types(user, &auth.device_id)?.iter().map(|a| a.as_str().into()).collect(),
        );
    }

    if enabled(req.account_data.enabled) {
        for (room, kind, content) in services.users.account_data_since(user, since, now.pos)? {
            let event = serde_json::json!({ "type": kind, "content": content });
            match room {
                None => out.account_data.global.push(raw(&event)?),
                Some(room) => out.account_data.rooms.entry(room).or_default().push(raw(&event)?),
            }
            changed = true;
        }
    }

    if enabled(req.receipts.enabled) {
        for room in view.rooms {
            let from = if view.initial.contains(room) { 0 } else { since };
            if let Some(event) = services.rooms.receipt_event(room, user, from, now.pos)? {
                out.receipts.rooms.insert(room.clone(), raw(&event)?);
                changed = true;
            }
        }
    }

    if enabled(req.typing.enabled) {
        let since_typing = base.token.map_or(0, |t| t.typing);
        for room in view.rooms {
            let from = if view.initial.contains(room) { 0 } else { since_typing };
            if let Some(users) = services.sync.typing.typing_since(room, from)
                && (from != 0 || !users.is_empty())
            {
                let event = serde_json::json!({ "type": "m.typing", "content": { "user_ids": users } });
                out.typing.rooms.insert(room.clone(), raw(&event)?);
                changed = true;
            }
        }
    }
    Ok((out, changed))
}
