//! Server-Server queries about users and aliases: device lists, device keys, one-time key claims,
//! profiles and room aliases (answered for local users and aliases only), and the outbound side
//! of `/keys/query` and `/keys/claim` for users on other servers.
//!
//! Remote device lists are not cached: every client `/keys/query` for a remote user asks that
//! user's server. Inbound `m.device_list_update` EDUs only mark the user as changed, so clients
//! query again.

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use futures_util::future::join_all;
use ruma::{
    OwnedDeviceId, OwnedServerName, OwnedUserId, ServerName, UserId,
    api::federation::{
        device::get_devices,
        keys::{claim_keys, get_keys},
        query::{get_profile_information, get_room_information},
    },
    encryption::{CrossSigningKey, DeviceKeys},
    profile::ProfileFieldName,
    serde::Raw,
};
use serde_json::Value;

use crate::{
    Services,
    error::{Error, Result},
    http::Ruma,
    sync::assemble::raw,
};

/// How long a client's key query or claim waits for other servers when it names no timeout.
pub const DEFAULT_REMOTE_TIMEOUT: Duration = Duration::from_secs(10);

fn require_local(s: &Services, user: &UserId) -> Result<()> {
    if !s.users.is_local(user) {
        return Err(Error::invalid_param("the user is not on this server"));
    }
    Ok(())
}

/// A local user's device keys, optionally only `devices`, each with the device's display name
/// under `unsigned` (the spec's `device_display_name`).
pub fn local_device_keys(
    s: &Services,
    user: &UserId,
    devices: &[OwnedDeviceId],
) -> Result<BTreeMap<OwnedDeviceId, Value>> {
    let mut out = BTreeMap::new();
    for (device_id, mut keys) in s.e2ee.device_keys(user)? {
        if !devices.is_empty() && !devices.contains(&device_id) {
            continue;
        }
        // `as_object_mut`, not indexing: stored keys are client input and may not be objects.
        if let Some(device) = s.users.device(user, &device_id)?
            && let Some(name) = device.display_name
            && let Some(object) = keys.as_object_mut()
        {
            object.insert("unsigned".to_owned(), serde_json::json!({ "device_display_name": name }));
        }
        out.insert(device_id, keys);
    }
    Ok(out)
}

/// A cross-signing key with only its owner's signatures: which users verified someone is not
/// another server's business.
fn owner_signatures_only(mut key: Value, owner: &UserId) -> Value {
    if let Some(signatures) = key.get_mut("signatures").and_then(Value::as_object_mut) {
        signatures.retain(|signer, _| signer == owner.as_str());
    }
    key
}

fn public_cross_signing_key(s: &Services, user: &UserId, kind: &str) -> Result<Option<Raw<CrossSigningKey>>> {
    s.e2ee.cross_signing_key(user, kind)?.map(|k| raw(&owner_signatures_only(k, user))).transpose()
}

/// `GET /_matrix/federation/v1/user/devices/{userId}`.
pub async fn devices(s: Arc<Services>, req: Ruma<get_devices::v1::Request>) -> Result<get_devices::v1::Response> {
    req.origin()?;
    let user = &req.user_id;
    require_local(&s, user)?;
    let stream_id = s.e2ee.last_key_change(user)?.unwrap_or(0);
    let mut response =
        get_devices::v1::Response::new(user.clone(), ruma::UInt::try_from(stream_id).unwrap_or(ruma::UInt::MAX));
    let names: BTreeMap<OwnedDeviceId, Option<String>> =
        s.users.devices(user)?.into_iter().map(|(id, d)| (id, d.display_name)).collect();
    for (device_id, keys) in s.e2ee.device_keys(user)? {
        // Keys of a device that was deleted but not cleaned up yet are not listed.
        let Some(name) = names.get(&device_id) else { continue };
        let mut device = get_devices::v1::UserDevice::new(device_id, raw::<DeviceKeys>(&keys)?);
        device.device_display_name = name.clone();
        response.devices.push(device);
    }
    response.master_key = public_cross_signing_key(&s, user, "master")?;
    response.self_signing_key = public_cross_signing_key(&s, user, "self_signing")?;
    Ok(response)
}

/// `POST /_matrix/federation/v1/user/keys/query`: local users only; others are left out.
pub async fn query(s: Arc<Services>, req: Ruma<get_keys::v1::Request>) -> Result<get_keys::v1::Response> {
    req.origin()?;
    let mut response = get_keys::v1::Response::default();
    for (user, devices) in &req.device_keys {
        if !s.users.is_local(user) {
            continue;
        }
        let mut keys = BTreeMap::new();
        for (device_id, value) in local_device_keys(&s, user, devices)? {
            keys.insert(device_id, raw(&value)?);
        }
        response.device_keys.insert(user.clone(), keys);
        if let Some(master) = public_cross_signing_key(&s, user, "master")? {
            response.master_keys.insert(user.clone(), master);
        }
        if let Some(ssk) = public_cross_signing_key(&s, user, "self_signing")? {
            response.self_signing_keys.insert(user.clone(), ssk);
        }
    }
    Ok(response)
}

/// `POST /_matrix/federation/v1/user/keys/claim`: one key per local device asked for.
pub async fn claim(s: Arc<Services>, req: Ruma<claim_keys::v1::Request>) -> Result<claim_keys::v1::Response> {
    req.origin()?;
    let mut claimed = BTreeMap::new();
    for (user, devices) in &req.one_time_keys {
        if !s.users.is_local(user) {
            continue;
        }
        claimed.insert(user.clone(), claim_local(&s, user, devices).await?);
    }
    Ok(claim_keys::v1::Response::new(claimed))
}

/// Claims one key per (device, algorithm) of a local user.
pub async fn claim_local<K>(
    s: &Services,
    user: &UserId,
    devices: &BTreeMap<OwnedDeviceId, ruma::OneTimeKeyAlgorithm>,
) -> Result<BTreeMap<OwnedDeviceId, BTreeMap<ruma::OwnedOneTimeKeyId, Raw<K>>>> {
    let mut per_device = BTreeMap::new();
    for (device, algorithm) in devices {
        if let Some((key_id, key)) = s.e2ee.claim(user, device, algorithm.as_str()).await? {
            let key_id = ruma::OneTimeKeyId::parse(&key_id).map_err(Error::internal)?;
            per_device.insert(device.clone(), BTreeMap::from([(key_id, raw(&key)?)]));
        }
    }
    Ok(per_device)
}

/// `GET /_matrix/federation/v1/query/profile`.
pub async fn profile(
    s: Arc<Services>,
    req: Ruma<get_profile_information::v1::Request>,
) -> Result<get_profile_information::v1::Response> {
    req.origin()?;
    require_local(&s, &req.user_id)?;
    let (displayname, avatar_url) = s.users.profile(&req.user_id)?.ok_or_else(|| Error::not_found("no such user"))?;
    let mut response = get_profile_information::v1::Response::new();
    let wants = |field: ProfileFieldName| req.field.as_ref().is_none_or(|f| *f == field);
    if wants(ProfileFieldName::DisplayName)
        && let Some(name) = displayname
    {
        response.set("displayname".to_owned(), Value::String(name));
    }
    if wants(ProfileFieldName::AvatarUrl)
        && let Some(url) = avatar_url
    {
        response.set("avatar_url".to_owned(), Value::String(url));
    }
    Ok(response)
}

/// `GET /_matrix/federation/v1/query/directory`: a local alias to its room and the servers in it.
pub async fn directory(
    s: Arc<Services>,
    req: Ruma<get_room_information::v1::Request>,
) -> Result<get_room_information::v1::Response> {
    req.origin()?;
    if req.room_alias.server_name() != s.server_name {
        return Err(Error::invalid_param("the alias is not on this server"));
    }
    let room_id = s.rooms.resolve_alias(&req.room_alias)?.ok_or_else(|| Error::not_found("no such alias"))?;
    // This server first: it knows the alias, so it is the best one to join through.
    let mut servers = vec![s.server_name.clone()];
    for server in room_servers(&s, &room_id).await? {
        if !servers.contains(&server) {
            servers.push(server);
        }
    }
    Ok(get_room_information::v1::Response::new(room_id, servers))
}

/// The servers with a joined member in `room` (this one included if it has one).
pub async fn room_servers(s: &Services, room: &ruma::RoomId) -> Result<Vec<OwnedServerName>> {
    Ok(s.rooms.joined_servers(room).await?.as_ref().clone())
}

/// Groups `users` by server, leaving out this server's.
pub fn remote_by_server<V: Clone>(
    s: &Services,
    users: &BTreeMap<OwnedUserId, V>,
) -> BTreeMap<OwnedServerName, BTreeMap<OwnedUserId, V>> {
    let mut out: BTreeMap<OwnedServerName, BTreeMap<OwnedUserId, V>> = BTreeMap::new();
    for (user, v) in users {
        if !s.users.is_local(user) {
            out.entry(user.server_name().to_owned()).or_default().insert(user.clone(), v.clone());
        }
    }
    out
}

/// The spec's `failures` entry for a server that could not be asked.
fn failure(e: &Error) -> Value {
    serde_json::json!({ "error": e.to_string() })
}

/// Asks each server in `by_server` for its users' keys, all at once, each within `timeout`.
/// Answers about users of another server than the one asked are dropped.
pub async fn query_remote(
    s: &Services,
    by_server: BTreeMap<OwnedServerName, BTreeMap<OwnedUserId, Vec<OwnedDeviceId>>>,
    timeout: Duration,
) -> (Vec<get_keys::v1::Response>, BTreeMap<String, Value>) {
    let asks = by_server.into_iter().map(|(server, users)| async move {
        let request = get_keys::v1::Request::new(users);
        let result = match tokio::time::timeout(timeout, s.federation_client.send(&server, request)).await {
            Ok(r) => r,
            Err(_) => Err(Error::Unreachable(format!("no answer within {timeout:?}"))),
        };
        (server, result)
    });
    let mut answers = Vec::new();
    let mut failures = BTreeMap::new();
    for (server, result) in join_all(asks).await {
        match result {
            Ok(mut response) => {
                let ours = |u: &OwnedUserId| u.server_name() == server;
                response.device_keys.retain(|u, _| ours(u));
                response.master_keys.retain(|u, _| ours(u));
                response.self_signing_keys.retain(|u, _| ours(u));
                answers.push(response);
            }
            Err(e) => {
                tracing::info!(%server, error = %e, "remote key query failed");
                failures.insert(server.to_string(), failure(&e));
            }
        }
    }
    (answers, failures)
}

/// Claims one-time keys of users on other servers, all servers at once, each within `timeout`.
pub async fn claim_remote(
    s: &Services,
    by_server: BTreeMap<OwnedServerName, claim_keys::v1::OneTimeKeyClaims>,
    timeout: Duration,
) -> (claim_keys::v1::OneTimeKeys, BTreeMap<String, Value>) {
    let asks = by_server.into_iter().map(|(server, users)| async move {
        let request = claim_keys::v1::Request::new(users);
        let result = match tokio::time::timeout(timeout, s.federation_client.send(&server, request)).await {
            Ok(r) => r,
            Err(_) => Err(Error::Unreachable(format!("no answer within {timeout:?}"))),
        };
        (server, result)
    });
    let mut claimed = BTreeMap::new();
    let mut failures = BTreeMap::new();
    for (server, result) in join_all(asks).await {
        match result {
            Ok(response) => {
                claimed.extend(response.one_time_keys.into_iter().filter(|(u, _)| u.server_name() == server));
            }
            Err(e) => {
                tracing::info!(%server, error = %e, "remote key claim failed");
                failures.insert(server.to_string(), failure(&e));
            }
        }
    }
    (claimed, failures)
}

/// Whether `user` is `origin`'s: EDUs and queries about other servers' users are refused.
pub fn belongs_to(user: &UserId, origin: &ServerName) -> bool {
    user.server_name() == origin
}
