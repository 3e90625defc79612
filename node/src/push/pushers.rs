//! Pushers: where a user's notifications go, persisted per user.
//!
//! A pusher is keyed by (user, app_id, pushkey). The pair (app_id, pushkey) names one device at
//! one gateway, so setting it without `append` takes it away from every other user (the spec's
//! rule: a phone that changes hands must not keep receiving the previous owner's pushes).

use ruma::{
    UserId,
    api::client::push::{Pusher, PusherIds, PusherKind},
};
use serde::{Deserialize, Serialize};
use tocsin_store::WriteBatch;

use super::queue;
use crate::{
    error::{Error, Result},
    store::{Db, key, prefix, split, trees, utf8},
};

/// The path every gateway serves (the Push Gateway API); a pusher URL must end with it.
pub const NOTIFY_PATH: &str = "/_matrix/push/v1/notify";

/// One pusher as stored.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct StoredPusher {
    pub pusher: Pusher,
    /// When the pushkey was last set, in seconds since the Unix epoch (sent as `pushkey_ts`).
    pub pushkey_ts: u64,
}

impl StoredPusher {
    /// The gateway URL of an HTTP pusher.
    pub fn url(&self) -> Option<&str> {
        match &self.pusher.kind {
            PusherKind::Http(http) => Some(http.url.as_str()),
            _ => None,
        }
    }
}

/// The key of a pusher in [`trees::PUSHERS`], also the prefix of its queue in
/// [`trees::PUSH_QUEUE`].
pub fn pusher_key(user: &UserId, ids: &PusherIds) -> Vec<u8> {
    key(&[user.as_bytes(), ids.app_id.as_bytes(), ids.pushkey.as_bytes()])
}

fn holder_key(ids: &PusherIds, user: &UserId) -> Vec<u8> {
    key(&[ids.app_id.as_bytes(), ids.pushkey.as_bytes(), user.as_bytes()])
}

/// Checks a new HTTP pusher: its URL must be a gateway's notify endpoint.
fn validate(pusher: &Pusher) -> Result<()> {
    let PusherKind::Http(http) = &pusher.kind else {
        return Err(Error::invalid_param("only `http` pushers are supported (this node sends no e-mail)"));
    };
    let url = reqwest::Url::parse(&http.url).map_err(|e| Error::invalid_param(format!("data.url: {e}")))?;
    if !matches!(url.scheme(), "https" | "http") || url.host_str().is_none() {
        return Err(Error::invalid_param("data.url must be an http(s) URL"));
    }
    if !url.path().ends_with(NOTIFY_PATH) {
        return Err(Error::invalid_param(format!("data.url must be a push gateway's {NOTIFY_PATH}")));
    }
    if pusher.ids.app_id.len() > 64 || pusher.ids.pushkey.len() > 512 {
        return Err(Error::invalid_param("app_id is at most 64 characters and pushkey at most 512 bytes"));
    }
    Ok(())
}

pub fn list(db: &Db, user: &UserId) -> Result<Vec<StoredPusher>> {
    db.scan_prefix(trees::PUSHERS, &prefix(&[user.as_bytes()]), usize::MAX)?
        .into_iter()
        .map(|(_, v)| serde_json::from_slice(&v).map_err(|e| Error::internal(format!("corrupt pusher: {e}"))))
        .collect()
}

pub fn get(db: &Db, key: &[u8]) -> Result<Option<StoredPusher>> {
    db.get_json(trees::PUSHERS, key)
}

/// Adds or replaces `pusher` for `user`; without `append`, the same (app_id, pushkey) held by
/// other users is removed.
pub async fn set(db: &Db, user: &UserId, pusher: Pusher, append: bool) -> Result<()> {
    validate(&pusher)?;
    let mut batch = WriteBatch::new();
    if !append {
        for other in holders(db, &pusher.ids)? {
            if other != user {
                remove_into(db, &other, &pusher.ids, &mut batch)?;
            }
        }
    }
    let stored = StoredPusher { pushkey_ts: crate::users::now_ms() / 1000, pusher };
    batch.insert(trees::PUSHERS, pusher_key(user, &stored.pusher.ids), Db::to_json(&stored)?);
    batch.insert(trees::PUSHKEYS, holder_key(&stored.pusher.ids, user), Vec::new());
    db.write(batch).await
}

/// Removes `user`'s pusher `ids` and whatever is still queued for it. Removing a pusher that
/// does not exist is not an error (the spec's `kind: null` is idempotent).
pub async fn remove(db: &Db, user: &UserId, ids: &PusherIds) -> Result<()> {
    let mut batch = WriteBatch::new();
    remove_into(db, user, ids, &mut batch)?;
    db.write(batch).await
}

pub fn remove_into(db: &Db, user: &UserId, ids: &PusherIds, batch: &mut WriteBatch) -> Result<()> {
    let key = pusher_key(user, ids);
    batch.remove(trees::PUSHERS, key.clone());
    batch.remove(trees::PUSHKEYS, holder_key(ids, user));
    queue::remove_queue_rows(db, &key, batch)
}

/// The users holding (app_id, pushkey).
fn holders(db: &Db, ids: &PusherIds) -> Result<Vec<ruma::OwnedUserId>> {
    let start = prefix(&[ids.app_id.as_bytes(), ids.pushkey.as_bytes()]);
    let mut users = Vec::new();
    for (k, _) in db.scan_prefix(trees::PUSHKEYS, &start, usize::MAX)? {
        let parts = split(&k);
        if let Some(user) = parts.get(2) {
            users.push(UserId::parse(utf8(user)?).map_err(|e| Error::internal(format!("bad user in PUSHKEYS: {e}")))?);
        }
    }
    Ok(users)
}
