//! EDUs, both ways: typing, receipts, presence (when on), device-list updates, to-device
//! messages and cross-signing key updates.
//!
//! Inbound ([`handle`]): an EDU about a user of another server than the transaction's origin,
//! or that cannot be applied, is logged and dropped; EDUs carry no durability promise.
//!
//! Outbound: the functions below build the EDU with ruma's types and queue it on the persisted
//! sender for every other server concerned. They log instead of failing: the local change they
//! announce has already happened, and the caller's client should not see an error for it.

use std::{collections::BTreeMap, time::Duration};

use ruma::{
    DeviceId, EventId, OwnedDeviceId, OwnedServerName, OwnedTransactionId, OwnedUserId, RoomId, ServerName, UInt,
    UserId,
    api::federation::transactions::edu::{
        DeviceListUpdateContent, DirectDeviceContent, Edu, PresenceContent, PresenceUpdate, ReceiptContent,
        ReceiptData, ReceiptMap, SigningKeyUpdateContent, TypingContent,
    },
    events::receipt::{Receipt, ReceiptThread},
    presence::PresenceState,
    serde::Raw,
    to_device::DeviceIdOrAllDevices,
};
use serde_json::{Value, value::RawValue};

use super::user_keys::belongs_to;
use crate::{Services, error::Result, sync::assemble::raw};

/// How long a remote user counts as typing after an `m.typing` EDU with `typing: true`, unless
/// a later EDU stops it. The EDU carries no timeout; 30 s is what senders refresh within.
pub const REMOTE_TYPING_TIMEOUT: Duration = Duration::from_secs(30);

/// The device id under which inbound to-device messages are deduplicated: with the sending
/// user and the EDU's `message_id`, a peer's retried transaction delivers nothing twice.
const FEDERATION_DEVICE: &str = "m.federation";

/// Applies one EDU from `origin`.
pub async fn handle(s: &Services, origin: &ServerName, raw: &RawValue) {
    let edu = match serde_json::from_str::<Edu>(raw.get()) {
        Ok(edu) => edu,
        Err(e) => {
            tracing::debug!(%origin, error = %e, "dropped an EDU that does not parse");
            return;
        }
    };
    let result = match edu {
        Edu::Typing(content) => inbound_typing(s, origin, content).await,
        Edu::Receipt(content) => inbound_receipts(s, origin, content).await,
        Edu::DeviceListUpdate(content) => inbound_key_change(s, origin, &content.user_id).await,
        Edu::SigningKeyUpdate(content) => inbound_key_change(s, origin, &content.user_id).await,
        Edu::DirectToDevice(content) => inbound_to_device(s, origin, content).await,
        Edu::Presence(content) => inbound_presence(s, origin, content),
        // Other types are not known.
        _ => Ok(()),
    };
    if let Err(e) = result {
        tracing::info!(%origin, error = %e, "dropped an EDU");
    }
}

/// Whether `user` is joined to `room` here (false for an unknown room).
async fn is_joined(s: &Services, room: &RoomId, user: &UserId) -> bool {
    s.rooms.exists(room).unwrap_or(false) && matches!(s.rooms.membership(room, user).await, Ok(Some(m)) if m == "join")
}

async fn inbound_typing(s: &Services, origin: &ServerName, content: TypingContent) -> Result<()> {
    if !belongs_to(&content.user_id, origin) || !is_joined(s, &content.room_id, &content.user_id).await {
        tracing::debug!(%origin, user = %content.user_id, room = %content.room_id, "dropped an m.typing EDU");
        return Ok(());
    }
    let timeout = content.typing.then_some(REMOTE_TYPING_TIMEOUT);
    s.sync.typing.set(&content.room_id, &content.user_id, timeout);
    Ok(())
}

/// `m.presence`: kept for users of `origin` who share a room with someone here; dropped whole
/// when presence is off on this node.
fn inbound_presence(s: &Services, origin: &ServerName, content: PresenceContent) -> Result<()> {
    if !s.sync.presence.enabled() {
        return Ok(());
    }
    for update in content.push {
        let known = belongs_to(&update.user_id, origin) && !s.rooms.joined_rooms(&update.user_id)?.is_empty();
        if !known {
            tracing::debug!(%origin, user = %update.user_id, "dropped a presence update");
            continue;
        }
        if !crate::sync::presence::is_settable(&update.presence) {
            continue;
        }
        s.sync.presence.remote(&update);
    }
    Ok(())
}

async fn inbound_receipts(s: &Services, origin: &ServerName, content: ReceiptContent) -> Result<()> {
    for (room, map) in content.receipts {
        for (user, data) in map.read {
            if !belongs_to(&user, origin) || !is_joined(s, &room, &user).await {
                tracing::debug!(%origin, %user, %room, "dropped a receipt");
                continue;
            }
            let thread = match &data.data.thread {
                ReceiptThread::Unthreaded => None,
                other => other.as_str().map(str::to_owned),
            };
            // One receipt per user and room: the newest event named counts.
            let Some(event_id) = data.event_ids.last() else { continue };
            s.rooms.set_receipt(&room, &user, "m.read", event_id, thread).await?;
        }
    }
    Ok(())
}

/// `m.device_list_update` and `m.signing_key_update`: the user's keys changed. Keys of remote
/// users are not cached, so this only records the change: clients sharing a room see the user
/// in `device_lists.changed` and query again (over federation).
async fn inbound_key_change(s: &Services, origin: &ServerName, user: &UserId) -> Result<()> {
    if !belongs_to(user, origin) {
        tracing::debug!(%origin, %user, "dropped a key update about another server's user");
        return Ok(());
    }
    // Only users someone here shares a room with matter (their membership is known here).
    let shares = s.rooms.user_rooms(user)?.iter().any(|(_, r)| r.membership == "join");
    if shares {
        s.e2ee.mark_device_change(user).await?;
    }
    Ok(())
}

async fn inbound_to_device(s: &Services, origin: &ServerName, content: DirectDeviceContent) -> Result<()> {
    if !belongs_to(&content.sender, origin) {
        tracing::debug!(%origin, sender = %content.sender, "dropped to-device messages from another server's user");
        return Ok(());
    }
    let targets = crate::e2ee::local_targets(s, &content.messages)?;
    let device = OwnedDeviceId::from(FEDERATION_DEVICE);
    s.e2ee
        .send_to_device(&content.sender, &device, content.message_id.as_str(), &content.ev_type.to_string(), targets)
        .await
}

// ----- outbound -----

/// Queues `edu` for `destinations` (this server left out), logging a failure.
async fn queue(s: &Services, mut destinations: Vec<OwnedServerName>, edu: Edu) {
    destinations.retain(|d| *d != s.server_name);
    destinations.sort();
    destinations.dedup();
    if destinations.is_empty() {
        return;
    }
    let value = match serde_json::to_value(&edu) {
        Ok(v) => v,
        Err(e) => {
            tracing::warn!(error = %e, "could not serialise an EDU");
            return;
        }
    };
    if let Err(e) = s.sender.queue_edu(&destinations, value).await {
        tracing::warn!(error = %e, "could not queue an EDU");
    }
}

/// The other servers with a joined member in `room`.
async fn room_destinations(s: &Services, room: &RoomId) -> Vec<OwnedServerName> {
    match super::user_keys::room_servers(s, room).await {
        Ok(servers) => servers,
        Err(e) => {
            tracing::warn!(%room, error = %e, "could not list the room's servers");
            Vec::new()
        }
    }
}

/// The other servers that share a room with `user` (joined members of the user's joined rooms).
pub async fn servers_sharing(s: &Services, user: &UserId) -> Vec<OwnedServerName> {
    let mut servers = Vec::new();
    let rooms = match s.rooms.user_rooms(user) {
        Ok(rooms) => rooms,
        Err(e) => {
            tracing::warn!(%user, error = %e, "could not list the user's rooms");
            return servers;
        }
    };
    for (room, user_room) in rooms {
        if user_room.membership == "join" {
            servers.extend(room_destinations(s, &room).await);
        }
    }
    servers.retain(|d| *d != s.server_name);
    servers.sort();
    servers.dedup();
    servers
}

/// The position of a local user's last key change, to pass to [`device_list_update`] after the
/// change (0 when there was none, or it cannot be read).
pub fn key_position(s: &Services, user: &UserId) -> u64 {
    s.e2ee.last_key_change(user).ok().flatten().unwrap_or(0)
}

/// `m.device_list_update` for one device of a local user, after a change that moved the user's
/// key-change position past `prev` (from [`key_position`] before it). The position is the
/// update's `stream_id` and `prev` its `prev_id`. A device that no longer exists is announced
/// as deleted.
pub async fn device_list_update(s: &Services, user: &UserId, device: &DeviceId, prev: u64) {
    let stream_id = key_position(s, user);
    if stream_id <= prev {
        return; // nothing changed (an identical re-upload, say)
    }
    let destinations = servers_sharing(s, user).await;
    if destinations.is_empty() {
        return;
    }
    let mut content = DeviceListUpdateContent::new(
        user.to_owned(),
        device.to_owned(),
        UInt::try_from(stream_id).unwrap_or(UInt::MAX),
    );
    if prev > 0 {
        content.prev_id = vec![UInt::try_from(prev).unwrap_or(UInt::MAX)];
    }
    match s.users.device(user, device) {
        Ok(Some(d)) => {
            content.device_display_name = d.display_name;
            let keys = s.e2ee.device_keys(user).ok().and_then(|mut k| k.remove(device));
            content.keys = keys.and_then(|k| raw(&k).ok());
        }
        Ok(None) => content.deleted = Some(true),
        Err(e) => {
            tracing::warn!(%user, error = %e, "could not read the device");
            return;
        }
    }
    queue(s, destinations, Edu::DeviceListUpdate(content)).await;
}

/// `m.signing_key_update` with a local user's current master and self-signing keys (the
/// user-signing key stays private).
pub async fn signing_key_update(s: &Services, user: &UserId) {
    let destinations = servers_sharing(s, user).await;
    if destinations.is_empty() {
        return;
    }
    let mut content = SigningKeyUpdateContent::new(user.to_owned());
    let public = |kind: &str| -> Option<Raw<ruma::encryption::CrossSigningKey>> {
        let mut key = s.e2ee.cross_signing_key(user, kind).ok().flatten()?;
        if let Some(signatures) = key.get_mut("signatures").and_then(Value::as_object_mut) {
            signatures.retain(|signer, _| signer == user.as_str());
        }
        raw(&key).ok()
    };
    content.master_key = public("master");
    content.self_signing_key = public("self_signing");
    queue(s, destinations, Edu::SigningKeyUpdate(content)).await;
}

/// `m.typing` for a local user to the room's other servers.
pub async fn typing(s: &Services, room: &RoomId, user: &UserId, is_typing: bool) {
    let destinations = room_destinations(s, room).await;
    let content = TypingContent::new(room.to_owned(), user.to_owned(), is_typing);
    queue(s, destinations, Edu::Typing(content)).await;
}

fn presence_update(user: &UserId, status: &crate::sync::presence::Status) -> PresenceUpdate {
    let mut update = PresenceUpdate::new(user.to_owned(), status.presence.clone(), status.last_active_ago_ms());
    update.status_msg = status.status_msg.clone();
    update.currently_active = status.currently_active;
    update
}

/// `m.presence` for a local user whose status changed, to the servers sharing a room with them.
pub async fn presence(s: &Services, user: &UserId, status: &crate::sync::presence::Status) {
    if !s.sync.presence.enabled() {
        return;
    }
    let destinations = servers_sharing(s, user).await;
    queue(s, destinations, Edu::Presence(PresenceContent::new(vec![presence_update(user, status)]))).await;
}

/// A user joined `room`. Presence goes out only on a change, so a server new to the room would
/// otherwise see nobody's status until it changed: a local joiner's status goes to the room's
/// other servers, and a remote joiner's server gets this server's members' statuses.
pub async fn presence_on_join(s: &Services, room: &RoomId, joiner: &UserId) {
    if !s.sync.presence.enabled() {
        return;
    }
    let update = |user: &UserId| {
        let status = s.sync.presence.get(user);
        (status.presence != PresenceState::Offline).then(|| presence_update(user, &status))
    };
    let (destinations, updates) = if s.users.is_local(joiner) {
        (room_destinations(s, room).await, update(joiner).into_iter().collect())
    } else {
        let members = match s.rooms.members(room, "join").await {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(%room, error = %e, "could not list the room's members");
                return;
            }
        };
        let updates: Vec<_> = members.iter().filter(|m| s.users.is_local(m)).filter_map(|m| update(m)).collect();
        (vec![joiner.server_name().to_owned()], updates)
    };
    if !updates.is_empty() {
        queue(s, destinations, Edu::Presence(PresenceContent::new(updates))).await;
    }
}

/// `m.receipt` (public read receipts only) for a local user to the room's other servers.
pub async fn receipt(s: &Services, room: &RoomId, user: &UserId, event_id: &EventId, thread: Option<String>) {
    let destinations = room_destinations(s, room).await;
    let mut data = Receipt::new(ruma::MilliSecondsSinceUnixEpoch::now());
    data.thread = ReceiptThread::try_from(thread).unwrap_or(ReceiptThread::Unthreaded);
    let read = BTreeMap::from([(user.to_owned(), ReceiptData::new(data, vec![event_id.to_owned()]))]);
    let content = ReceiptContent::new(BTreeMap::from([(room.to_owned(), ReceiptMap::new(read))]));
    queue(s, destinations, Edu::Receipt(content)).await;
}

/// To-device messages from a local device for users of other servers: one `m.direct_to_device`
/// per server. The `message_id` derives from the sending device and its transaction id, so a
/// client's retry carries the same id and the receiver drops the copy.
pub async fn to_device(
    s: &Services,
    sender: &UserId,
    sender_device: &DeviceId,
    txn_id: &str,
    event_type: &str,
    messages: BTreeMap<OwnedUserId, BTreeMap<DeviceIdOrAllDevices, Raw<ruma::events::AnyToDeviceEventContent>>>,
) {
    let mut by_server: BTreeMap<OwnedServerName, BTreeMap<_, _>> = BTreeMap::new();
    for (user, devices) in messages {
        if !s.users.is_local(&user) {
            by_server.entry(user.server_name().to_owned()).or_default().insert(user, devices);
        }
    }
    let message_id = OwnedTransactionId::from(format!("{sender_device}_{txn_id}"));
    for (server, messages) in by_server {
        let mut content = DirectDeviceContent::new(sender.to_owned(), event_type.into(), message_id.clone());
        content.messages = messages;
        queue(s, vec![server], Edu::DirectToDevice(content)).await;
    }
}
