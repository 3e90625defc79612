//! Access tokens and refresh tokens: issued at login, checked on every request, rotated by
//! `POST /refresh`.
//!
//! A client that asks for a refresh token gets an access token that expires after
//! `access_token_lifetime_secs`; an expired one is answered with `M_UNKNOWN_TOKEN` and
//! `soft_logout: true`, so the client refreshes and keeps its session. Clients that do not ask
//! keep tokens that never expire. A refresh ends the old access token at once; the old refresh
//! token stays valid until the new access or refresh token is first used (as the spec says), so
//! a client whose refresh answer was lost can ask again.

use std::time::Duration;

use ruma::{OwnedDeviceId, OwnedUserId, UserId};
use serde::{Deserialize, Serialize};
use tocsin_store::WriteBatch;

use super::{Device, Users, now_ms, random_string};
use crate::{
    error::{Error, Result},
    http::Auth,
    store::{Db, key, trees},
};

/// How many locks the devices' token rotations share.
pub(super) const ROTATION_LOCKS: usize = 16;

#[derive(Serialize, Deserialize)]
pub(super) struct TokenInfo {
    user_id: OwnedUserId,
    device_id: OwnedDeviceId,
    /// Set for tokens issued with a refresh token; the others never expire.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    expires_at_ms: Option<u64>,
    /// The refresh token that the refresh which issued this token replaced: revoked when this
    /// token is first used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    retires: Option<String>,
}

#[derive(Serialize, Deserialize)]
struct RefreshInfo {
    user_id: OwnedUserId,
    device_id: OwnedDeviceId,
}

/// A checked token kept in memory, so a request costs no store read.
#[derive(Clone)]
pub(super) struct CachedToken {
    auth: Auth,
    expires_at_ms: Option<u64>,
}

/// What a login or refresh hands the client.
pub struct Issued {
    pub access_token: String,
    pub device_id: OwnedDeviceId,
    /// Only for clients that asked for one.
    pub refresh_token: Option<String>,
    /// How long the access token lives; `None`: it does not expire.
    pub expires_in: Option<Duration>,
}

impl Users {
    /// The lock that serialises changes to this device's tokens.
    pub(super) fn rotation_lock(&self, user_id: &UserId, device_id: &ruma::DeviceId) -> &tokio::sync::Mutex<()> {
        use std::hash::{Hash, Hasher};
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        (user_id, device_id).hash(&mut hasher);
        // The remainder is below ROTATION_LOCKS, the array's length.
        let shard = usize::try_from(hasher.finish() % ROTATION_LOCKS as u64).unwrap_or(0);
        &self.rotation[shard]
    }

    /// Creates (or reuses) a device and issues a new access token for it that never expires.
    pub async fn login_device(
        &self,
        user_id: &UserId,
        device_id: Option<OwnedDeviceId>,
        display_name: Option<String>,
    ) -> Result<(String, OwnedDeviceId)> {
        let issued = self.login_device_with(user_id, device_id, display_name, false).await?;
        Ok((issued.access_token, issued.device_id))
    }

    /// Creates (or reuses) a device and issues its tokens: with `refreshable`, an access token
    /// that expires and a refresh token. A login on an existing device replaces its tokens.
    #[tracing::instrument(skip(self, display_name))]
    pub async fn login_device_with(
        &self,
        user_id: &UserId,
        device_id: Option<OwnedDeviceId>,
        display_name: Option<String>,
        refreshable: bool,
    ) -> Result<Issued> {
        let device_id = device_id.unwrap_or_else(|| OwnedDeviceId::from(random_string(10).to_uppercase()));
        let device_key = key(&[user_id.as_bytes(), device_id.as_bytes()]);
        let _rotation = self.rotation_lock(user_id, &device_id).lock().await;
        let mut batch = WriteBatch::new();
        let mut device: Device = self.db.get_json(trees::DEVICES, &device_key)?.unwrap_or_default();
        self.drop_tokens(&mut device, &mut batch);
        if display_name.is_some() {
            device.display_name = display_name;
        }
        device.last_seen_ts = Some(now_ms());
        let issued = self.issue(user_id, &device_id, &mut device, refreshable, None, &mut batch)?;
        batch.insert(trees::DEVICES, device_key, Db::to_json(&device)?);
        self.db.write(batch).await?;
        Ok(issued)
    }

    /// New tokens on `device` (whose old ones the caller dropped), written to `batch`.
    fn issue(
        &self,
        user_id: &UserId,
        device_id: &OwnedDeviceId,
        device: &mut Device,
        refreshable: bool,
        retires: Option<String>,
        batch: &mut WriteBatch,
    ) -> Result<Issued> {
        let access_token = random_string(32);
        let expires_in = refreshable.then_some(self.access_token_lifetime);
        let info = TokenInfo {
            user_id: user_id.to_owned(),
            device_id: device_id.clone(),
            expires_at_ms: expires_in.map(|d| now_ms().saturating_add(d.as_millis() as u64)),
            retires,
        };
        batch.insert(trees::TOKENS, access_token.as_bytes().to_vec(), Db::to_json(&info)?);
        device.access_token = Some(access_token.clone());
        let refresh_token = if refreshable {
            let token = random_string(32);
            let info = RefreshInfo { user_id: user_id.to_owned(), device_id: device_id.clone() };
            batch.insert(trees::REFRESH_TOKENS, token.as_bytes().to_vec(), Db::to_json(&info)?);
            device.refresh_token = Some(token.clone());
            Some(token)
        } else {
            None
        };
        Ok(Issued { access_token, device_id: device_id.clone(), refresh_token, expires_in })
    }

    /// Removes every token of `device` (access, refresh and a previous refresh token) in
    /// `batch`, and forgets the access token at once.
    pub(super) fn drop_tokens(&self, device: &mut Device, batch: &mut WriteBatch) {
        if let Some(old) = device.access_token.take() {
            batch.remove(trees::TOKENS, old.as_bytes().to_vec());
            self.forget_cached_token(&old);
        }
        for refresh in [device.refresh_token.take(), device.previous_refresh_token.take()].into_iter().flatten() {
            batch.remove(trees::REFRESH_TOKENS, refresh.as_bytes().to_vec());
        }
    }

    /// Checks an access token and, at the first use of a refreshed one, revokes the refresh
    /// token that its refresh replaced.
    pub async fn authenticate(&self, token: &str) -> Result<Auth> {
        let (auth, retires) = self.check_token(token)?;
        if let Some(old) = retires {
            self.retire(&auth, token, &old).await?;
        }
        Ok(auth)
    }

    /// Checks an access token without writing anything: for callers that cannot wait on the
    /// store (the admin API). A refreshed token is not cached until `authenticate` has seen it,
    /// so the revocation it owes happens at its first client request.
    pub fn check_token(&self, token: &str) -> Result<(Auth, Option<String>)> {
        if let Ok(cache) = self.token_cache.read()
            && let Some(cached) = cache.get(token)
        {
            return match cached.expires_at_ms {
                Some(at) if at <= now_ms() => Err(Error::SoftLogout),
                _ => Ok((cached.auth.clone(), None)),
            };
        }
        let info: TokenInfo = self.db.get_json(trees::TOKENS, token.as_bytes())?.ok_or(Error::UnknownToken)?;
        if info.expires_at_ms.is_some_and(|at| at <= now_ms()) {
            return Err(Error::SoftLogout);
        }
        let auth = Auth { user_id: info.user_id, device_id: info.device_id, access_token: token.to_owned() };
        if info.retires.is_none()
            && let Ok(mut cache) = self.token_cache.write()
        {
            cache.insert(token.to_owned(), CachedToken { auth: auth.clone(), expires_at_ms: info.expires_at_ms });
        }
        Ok((auth, info.retires))
    }

    /// Revokes `old`, the refresh token the refresh that issued `token` replaced.
    async fn retire(&self, auth: &Auth, token: &str, old: &str) -> Result<()> {
        let _rotation = self.rotation_lock(&auth.user_id, &auth.device_id).lock().await;
        // Read again under the lock: a concurrent first use may have done it already.
        let Some(mut info) = self.db.get_json::<TokenInfo>(trees::TOKENS, token.as_bytes())? else {
            return Err(Error::UnknownToken);
        };
        let mut batch = WriteBatch::new();
        if info.retires.take().is_some() {
            batch.remove(trees::REFRESH_TOKENS, old.as_bytes().to_vec());
            let device_key = key(&[auth.user_id.as_bytes(), auth.device_id.as_bytes()]);
            if let Some(mut device) = self.db.get_json::<Device>(trees::DEVICES, &device_key)?
                && device.previous_refresh_token.as_deref() == Some(old)
            {
                device.previous_refresh_token = None;
                batch.insert(trees::DEVICES, device_key, Db::to_json(&device)?);
            }
            batch.insert(trees::TOKENS, token.as_bytes().to_vec(), Db::to_json(&info)?);
            self.db.write(batch).await?;
            tracing::debug!(user_id = %auth.user_id, device_id = %auth.device_id, "the refreshed token is in use; its predecessor's refresh token is revoked");
        }
        if let Ok(mut cache) = self.token_cache.write() {
            cache.insert(token.to_owned(), CachedToken { auth: auth.clone(), expires_at_ms: info.expires_at_ms });
        }
        Ok(())
    }

    /// `POST /refresh`: a new access token and refresh token for the device `refresh_token`
    /// belongs to. The old access token ends now. An unknown, revoked or logged-out refresh token
    /// is `M_UNKNOWN_TOKEN` (not a soft logout: the client must log in again).
    #[tracing::instrument(skip_all)]
    pub async fn refresh(&self, refresh_token: &str) -> Result<Issued> {
        let read = || self.db.get_json::<RefreshInfo>(trees::REFRESH_TOKENS, refresh_token.as_bytes());
        let info = read()?.ok_or(Error::UnknownToken)?;
        let _rotation = self.rotation_lock(&info.user_id, &info.device_id).lock().await;
        // Read again under the lock: a concurrent refresh may have revoked it meanwhile.
        let info = read()?.ok_or(Error::UnknownToken)?;
        let device_key = key(&[info.user_id.as_bytes(), info.device_id.as_bytes()]);
        let mut batch = WriteBatch::new();
        let Some(mut device) = self.db.get_json::<Device>(trees::DEVICES, &device_key)? else {
            // A row its device no longer names cannot refresh anything.
            batch.remove(trees::REFRESH_TOKENS, refresh_token.as_bytes().to_vec());
            self.db.write(batch).await?;
            return Err(Error::UnknownToken);
        };
        if device.refresh_token.as_deref() == Some(refresh_token) {
            // The newest refresh token is in use: the one it replaced is done with.
            if let Some(previous) = device.previous_refresh_token.take() {
                batch.remove(trees::REFRESH_TOKENS, previous.as_bytes().to_vec());
            }
        } else if device.previous_refresh_token.as_deref() == Some(refresh_token) {
            // The answer to the last refresh never reached the client (its tokens were never
            // used): they are revoked and replaced.
            if let Some(unused) = device.refresh_token.take() {
                batch.remove(trees::REFRESH_TOKENS, unused.as_bytes().to_vec());
            }
        } else {
            batch.remove(trees::REFRESH_TOKENS, refresh_token.as_bytes().to_vec());
            self.db.write(batch).await?;
            return Err(Error::UnknownToken);
        }
        if let Some(old) = device.access_token.take() {
            batch.remove(trees::TOKENS, old.as_bytes().to_vec());
            self.forget_cached_token(&old);
        }
        device.refresh_token = None;
        device.previous_refresh_token = Some(refresh_token.to_owned());
        let issued =
            self.issue(&info.user_id, &info.device_id, &mut device, true, Some(refresh_token.to_owned()), &mut batch)?;
        batch.insert(trees::DEVICES, device_key, Db::to_json(&device)?);
        self.db.write(batch).await?;
        tracing::debug!(user_id = %info.user_id, device_id = %info.device_id, "access token refreshed");
        Ok(issued)
    }

    pub(super) fn forget_cached_token(&self, token: &str) {
        if let Ok(mut cache) = self.token_cache.write() {
            cache.remove(token);
        }
    }
}
