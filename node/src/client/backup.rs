//! Server-side key backup (`/room_keys`): thin handlers over `E2ee`'s backup store. The server
//! never sees a session key in the clear: it keeps the encrypted blobs and the `auth_data` that
//! lets the user's other devices check the backup key.

use std::{collections::BTreeMap, sync::Arc};

use ruma::{
    OwnedRoomId, UInt,
    api::client::backup::{
        KeyBackupData, RoomKeyBackup, add_backup_keys, add_backup_keys_for_room, add_backup_keys_for_session,
        create_backup_version, delete_backup_keys, delete_backup_keys_for_room, delete_backup_keys_for_session,
        delete_backup_version, get_backup_info, get_backup_keys, get_backup_keys_for_room, get_backup_keys_for_session,
        get_latest_backup_info, update_backup_version,
    },
    serde::Raw,
};
use serde_json::Value;

use crate::{
    Services,
    error::{Error, Result},
    http::Ruma,
    sync::assemble::raw,
};

fn count(n: usize) -> UInt {
    UInt::try_from(n).unwrap_or(UInt::MAX)
}

/// The `{algorithm, auth_data}` object of a create or update body, checked for shape. The
/// auth data is opaque to the server (clients verify its signatures), so it is kept as sent.
fn algorithm_of(raw: &Raw<ruma::api::client::backup::BackupAlgorithm>) -> Result<Value> {
    let value: Value = serde_json::from_str(raw.json().get()).map_err(Error::bad_json)?;
    if value.get("algorithm").and_then(Value::as_str).is_none() {
        return Err(Error::bad_json("`algorithm` must be a string"));
    }
    if !value.get("auth_data").is_some_and(Value::is_object) {
        return Err(Error::bad_json("`auth_data` must be an object"));
    }
    // Only the two fields the spec defines are stored; `version` in an update body is checked
    // by the caller against the path and is not part of the algorithm.
    Ok(serde_json::json!({ "algorithm": value["algorithm"], "auth_data": value["auth_data"] }))
}

fn key_data(raw: &Raw<KeyBackupData>) -> Result<Value> {
    let value: Value = serde_json::from_str(raw.json().get()).map_err(Error::bad_json)?;
    if !value.is_object() || !value.get("session_data").is_some_and(Value::is_object) {
        return Err(Error::bad_json("key backup data must be an object with `session_data`"));
    }
    Ok(value)
}

/// The info of one version, shared by the "latest" and "by version" endpoints.
fn info(
    s: &Services,
    user: &ruma::UserId,
    version: &str,
    record: &Value,
) -> Result<(Raw<ruma::api::client::backup::BackupAlgorithm>, UInt, String)> {
    let (etag, n) = s.e2ee.backup_etag_and_count(user, version)?;
    let algorithm = record.get("algorithm").ok_or_else(|| Error::internal("backup record without algorithm"))?;
    Ok((raw(algorithm)?, count(n), etag))
}

/// The etag and key count after a write, as every key upload and deletion returns them.
fn etag_and_count(s: &Services, user: &ruma::UserId, version: &str) -> Result<(String, UInt)> {
    let (etag, n) = s.e2ee.backup_etag_and_count(user, version)?;
    Ok((etag, count(n)))
}

pub async fn create_version(
    s: Arc<Services>,
    req: Ruma<create_backup_version::v3::Request>,
) -> Result<create_backup_version::v3::Response> {
    let auth = req.user()?;
    let algorithm = algorithm_of(&req.algorithm)?;
    let version = s.e2ee.create_backup(&auth.user_id, algorithm).await?;
    Ok(create_backup_version::v3::Response::new(version))
}

pub async fn latest_version(
    s: Arc<Services>,
    req: Ruma<get_latest_backup_info::v3::Request>,
) -> Result<get_latest_backup_info::v3::Response> {
    let auth = req.user()?;
    let (version, record) = s.e2ee.latest_backup(&auth.user_id)?.ok_or_else(|| Error::not_found("no backup exists"))?;
    let (algorithm, n, etag) = info(&s, &auth.user_id, &version, &record)?;
    Ok(get_latest_backup_info::v3::Response::new(algorithm, n, etag, version))
}

pub async fn version(
    s: Arc<Services>,
    req: Ruma<get_backup_info::v3::Request>,
) -> Result<get_backup_info::v3::Response> {
    let auth = req.user()?;
    let record =
        s.e2ee.backup(&auth.user_id, &req.version)?.ok_or_else(|| Error::not_found("unknown backup version"))?;
    let (algorithm, n, etag) = info(&s, &auth.user_id, &req.version, &record)?;
    Ok(get_backup_info::v3::Response::new(algorithm, n, etag, req.version.clone()))
}

pub async fn update_version(
    s: Arc<Services>,
    req: Ruma<update_backup_version::v3::Request>,
) -> Result<update_backup_version::v3::Response> {
    let auth = req.user()?;
    let body: Value = serde_json::from_str(req.algorithm.json().get()).map_err(Error::bad_json)?;
    if let Some(v) = body.get("version")
        && v.as_str() != Some(req.version.as_str())
    {
        return Err(Error::invalid_param("`version` in the body does not match the path"));
    }
    let algorithm = algorithm_of(&req.algorithm)?;
    let record =
        s.e2ee.backup(&auth.user_id, &req.version)?.ok_or_else(|| Error::not_found("unknown backup version"))?;
    // The spec lets a client update the auth data (new signatures), not switch algorithms.
    if record.get("algorithm").and_then(|a| a.get("algorithm")) != algorithm.get("algorithm") {
        return Err(Error::invalid_param("the algorithm of a backup version cannot change"));
    }
    s.e2ee.update_backup(&auth.user_id, &req.version, algorithm).await?;
    Ok(update_backup_version::v3::Response::new())
}

pub async fn delete_version(
    s: Arc<Services>,
    req: Ruma<delete_backup_version::v3::Request>,
) -> Result<delete_backup_version::v3::Response> {
    let auth = req.user()?;
    s.e2ee.delete_backup(&auth.user_id, &req.version).await?;
    Ok(delete_backup_version::v3::Response::new())
}

pub async fn put_keys(
    s: Arc<Services>,
    req: Ruma<add_backup_keys::v3::Request>,
) -> Result<add_backup_keys::v3::Response> {
    let auth = req.user()?;
    let mut keys = Vec::new();
    for (room, backup) in &req.rooms {
        for (session, data) in &backup.sessions {
            keys.push((room.clone(), session.clone(), key_data(data)?));
        }
    }
    s.e2ee.put_backup_keys(&auth.user_id, &req.version, keys).await?;
    let (etag, n) = etag_and_count(&s, &auth.user_id, &req.version)?;
    Ok(add_backup_keys::v3::Response::new(etag, n))
}

pub async fn put_room_keys(
    s: Arc<Services>,
    req: Ruma<add_backup_keys_for_room::v3::Request>,
) -> Result<add_backup_keys_for_room::v3::Response> {
    let auth = req.user()?;
    let mut keys = Vec::new();
    for (session, data) in &req.sessions {
        keys.push((req.room_id.clone(), session.clone(), key_data(data)?));
    }
    s.e2ee.put_backup_keys(&auth.user_id, &req.version, keys).await?;
    let (etag, n) = etag_and_count(&s, &auth.user_id, &req.version)?;
    Ok(add_backup_keys_for_room::v3::Response::new(etag, n))
}

pub async fn put_session_key(
    s: Arc<Services>,
    req: Ruma<add_backup_keys_for_session::v3::Request>,
) -> Result<add_backup_keys_for_session::v3::Response> {
    let auth = req.user()?;
    let keys = vec![(req.room_id.clone(), req.session_id.clone(), key_data(&req.session_data)?)];
    s.e2ee.put_backup_keys(&auth.user_id, &req.version, keys).await?;
    let (etag, n) = etag_and_count(&s, &auth.user_id, &req.version)?;
    Ok(add_backup_keys_for_session::v3::Response::new(etag, n))
}

/// Reading needs the version to exist (404 otherwise) but not to be the current one: a client
/// restoring from an older backup is allowed to.
fn require_version(s: &Services, user: &ruma::UserId, version: &str) -> Result<()> {
    match s.e2ee.backup(user, version)? {
        Some(_) => Ok(()),
        None => Err(Error::not_found("unknown backup version")),
    }
}

pub async fn get_keys(
    s: Arc<Services>,
    req: Ruma<get_backup_keys::v3::Request>,
) -> Result<get_backup_keys::v3::Response> {
    let auth = req.user()?;
    require_version(&s, &auth.user_id, &req.version)?;
    let mut rooms: BTreeMap<OwnedRoomId, BTreeMap<String, Raw<KeyBackupData>>> = BTreeMap::new();
    for (room, session, data) in s.e2ee.backup_keys(&auth.user_id, &req.version, None, None)? {
        let room = OwnedRoomId::try_from(room).map_err(Error::internal)?;
        rooms.entry(room).or_default().insert(session, raw(&data)?);
    }
    let rooms = rooms.into_iter().map(|(room, sessions)| (room, RoomKeyBackup::new(sessions))).collect();
    Ok(get_backup_keys::v3::Response::new(rooms))
}

pub async fn get_room_keys(
    s: Arc<Services>,
    req: Ruma<get_backup_keys_for_room::v3::Request>,
) -> Result<get_backup_keys_for_room::v3::Response> {
    let auth = req.user()?;
    require_version(&s, &auth.user_id, &req.version)?;
    let mut sessions = BTreeMap::new();
    for (_, session, data) in s.e2ee.backup_keys(&auth.user_id, &req.version, Some(&req.room_id), None)? {
        sessions.insert(session, raw(&data)?);
    }
    Ok(get_backup_keys_for_room::v3::Response::new(sessions))
}

pub async fn get_session_key(
    s: Arc<Services>,
    req: Ruma<get_backup_keys_for_session::v3::Request>,
) -> Result<get_backup_keys_for_session::v3::Response> {
    let auth = req.user()?;
    require_version(&s, &auth.user_id, &req.version)?;
    let (_, _, data) = s
        .e2ee
        .backup_keys(&auth.user_id, &req.version, Some(&req.room_id), Some(&req.session_id))?
        .into_iter()
        .next()
        .ok_or_else(|| Error::not_found("no such session in the backup"))?;
    Ok(get_backup_keys_for_session::v3::Response::new(raw(&data)?))
}

pub async fn delete_keys(
    s: Arc<Services>,
    req: Ruma<delete_backup_keys::v3::Request>,
) -> Result<delete_backup_keys::v3::Response> {
    let auth = req.user()?;
    s.e2ee.delete_backup_keys(&auth.user_id, &req.version, None, None).await?;
    let (etag, n) = etag_and_count(&s, &auth.user_id, &req.version)?;
    Ok(delete_backup_keys::v3::Response::new(etag, n))
}

pub async fn delete_room_keys(
    s: Arc<Services>,
    req: Ruma<delete_backup_keys_for_room::v3::Request>,
) -> Result<delete_backup_keys_for_room::v3::Response> {
    let auth = req.user()?;
    s.e2ee.delete_backup_keys(&auth.user_id, &req.version, Some(&req.room_id), None).await?;
    let (etag, n) = etag_and_count(&s, &auth.user_id, &req.version)?;
    Ok(delete_backup_keys_for_room::v3::Response::new(etag, n))
}

pub async fn delete_session_key(
    s: Arc<Services>,
    req: Ruma<delete_backup_keys_for_session::v3::Request>,
) -> Result<delete_backup_keys_for_session::v3::Response> {
    let auth = req.user()?;
    s.e2ee.delete_backup_keys(&auth.user_id, &req.version, Some(&req.room_id), Some(&req.session_id)).await?;
    let (etag, n) = etag_and_count(&s, &auth.user_id, &req.version)?;
    Ok(delete_backup_keys_for_session::v3::Response::new(etag, n))
}
