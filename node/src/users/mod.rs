//! Accounts, devices, access tokens, profiles and user-interactive auth.

mod account;
mod account_data;
pub mod deactivation;
mod openid;
pub mod password;
pub use openid::OPENID_VALIDITY;
mod tokens;
pub use tokens::Issued;
mod uiaa;

pub use account::{Account, Device, secrets_match};
pub use account_data::AccountDataEntry;
pub use uiaa::UiaaSessions;

use std::{collections::HashMap, sync::RwLock};

use ruma::{OwnedDeviceId, OwnedServerName, OwnedUserId, UserId};
use tocsin_store::WriteBatch;

use crate::{
    error::{Error, Result},
    http::Auth,
    store::{Db, key, prefix, trees, utf8},
};

pub struct Users {
    db: Db,
    server_name: OwnedServerName,
    /// Access tokens are checked on every request; the cache spares a store read.
    token_cache: RwLock<HashMap<String, tokens::CachedToken>>,
    /// Serialise the read-modify-write of a device's tokens (login, refresh, first use of a
    /// refreshed token, logout), so two refreshes of one token cannot both succeed; one lock
    /// per device would be a map to clean up, so devices share a few by hash.
    rotation: [tokio::sync::Mutex<()>; tokens::ROTATION_LOCKS],
    /// How long an access token issued with a refresh token lives.
    access_token_lifetime: std::time::Duration,
    pub uiaa: UiaaSessions,
    hasher: account::HashPool,
}

impl Users {
    pub fn new(db: Db, server_name: OwnedServerName, access_token_lifetime: std::time::Duration) -> Self {
        Self {
            db,
            server_name,
            token_cache: RwLock::default(),
            rotation: std::array::from_fn(|_| tokio::sync::Mutex::default()),
            access_token_lifetime,
            uiaa: UiaaSessions::default(),
            hasher: account::HashPool::new(),
        }
    }

    pub fn server_name(&self) -> &ruma::ServerName {
        &self.server_name
    }

    /// Checks a localpart against the spec's grammar for new accounts and builds the user id.
    pub fn user_id_for(&self, localpart: &str) -> Result<OwnedUserId> {
        let valid = !localpart.is_empty()
            && localpart
                .bytes()
                .all(|b| matches!(b, b'a'..=b'z' | b'0'..=b'9' | b'.' | b'_' | b'=' | b'-' | b'/' | b'+'));
        if !valid {
            return Err(Error::InvalidUsername(format!(
                "`{localpart}` is not a valid username: use a-z, 0-9, and . _ = - / +"
            )));
        }
        UserId::parse(format!("@{localpart}:{}", self.server_name)).map_err(|e| Error::InvalidUsername(e.to_string()))
    }

    /// Parses a login identifier: a full user id or a bare localpart.
    pub fn parse_login_user(&self, user: &str) -> Result<OwnedUserId> {
        if user.starts_with('@') {
            UserId::parse(user).map_err(Error::invalid_param)
        } else {
            UserId::parse(format!("@{}:{}", user.to_lowercase(), self.server_name)).map_err(Error::invalid_param)
        }
    }

    pub fn account(&self, user_id: &UserId) -> Result<Option<Account>> {
        self.db.get_json(trees::USERS, user_id.as_bytes())
    }

    /// Whether `user_id` is an account of this node with the admin flag.
    pub fn is_admin(&self, user_id: &UserId) -> Result<bool> {
        Ok(self.account(user_id)?.is_some_and(|a| a.admin))
    }

    pub fn is_local(&self, user_id: &UserId) -> bool {
        user_id.server_name() == self.server_name
    }

    pub async fn create_account(
        &self,
        localpart: &str,
        password: Option<&str>,
        displayname: Option<String>,
        admin: bool,
    ) -> Result<OwnedUserId> {
        let user_id = self.user_id_for(localpart)?;
        if self.account(&user_id)?.is_some() {
            return Err(Error::UserInUse);
        }
        let password_hash = match password {
            Some(p) => Some(self.hasher.hash(p.to_owned()).await?),
            None => None,
        };
        let account = Account {
            password_hash,
            displayname: Some(displayname.unwrap_or_else(|| localpart.to_owned())),
            avatar_url: None,
            admin,
            deactivated: false,
            roles: Vec::new(),
        };
        let mut batch = WriteBatch::new();
        batch.insert(trees::USERS, user_id.as_bytes().to_vec(), Db::to_json(&account)?);
        self.db.write(batch).await?;
        Ok(user_id)
    }

    /// Creates an account whose password is already an argon2 PHC string (a policy's
    /// `password_hash`); the hash must parse, so a typo cannot lock the account for good.
    pub async fn create_account_with_hash(
        &self,
        localpart: &str,
        password_hash: &str,
        displayname: Option<String>,
        admin: bool,
    ) -> Result<OwnedUserId> {
        argon2::PasswordHash::new(password_hash)
            .map_err(|e| Error::invalid_param(format!("password hash of `{localpart}` is not a PHC string: {e}")))?;
        let user_id = self.user_id_for(localpart)?;
        if self.account(&user_id)?.is_some() {
            return Err(Error::UserInUse);
        }
        let account = Account {
            password_hash: Some(password_hash.to_owned()),
            displayname: Some(displayname.unwrap_or_else(|| localpart.to_owned())),
            admin,
            ..Account::default()
        };
        self.put_account(&user_id, &account).await?;
        Ok(user_id)
    }

    /// Every local account, deactivated ones included.
    pub fn accounts(&self) -> Result<Vec<(OwnedUserId, Account)>> {
        let mut out = Vec::new();
        for (k, v) in self.db.scan_prefix(trees::USERS, b"", usize::MAX)? {
            let Ok(user_id) = UserId::parse(utf8(&k)?) else { continue };
            out.push((user_id, serde_json::from_slice(&v).map_err(Error::internal)?));
        }
        Ok(out)
    }

    pub async fn put_account(&self, user_id: &UserId, account: &Account) -> Result<()> {
        let mut batch = WriteBatch::new();
        batch.insert(trees::USERS, user_id.as_bytes().to_vec(), Db::to_json(account)?);
        self.db.write(batch).await
    }

    /// Checks a password; an account without a password never matches. Every refusal costs
    /// one argon2 verification, so the time taken does not tell whether the account exists.
    pub async fn check_password(&self, user_id: &UserId, password: &str) -> Result<bool> {
        let hash = match self.account(user_id)? {
            Some(account) if !account.deactivated && self.is_local(user_id) => account.password_hash,
            _ => None,
        };
        match hash {
            Some(hash) => self.hasher.verify(password.to_owned(), hash).await,
            None => {
                self.hasher.verify_dummy(password.to_owned()).await?;
                Ok(false)
            }
        }
    }

    pub async fn set_password(&self, user_id: &UserId, password: &str) -> Result<()> {
        let mut account = self.account(user_id)?.ok_or_else(|| Error::not_found("no such user"))?;
        account.password_hash = Some(self.hasher.hash(password.to_owned()).await?);
        self.put_account(user_id, &account).await
    }

    pub fn device(&self, user_id: &UserId, device_id: &ruma::DeviceId) -> Result<Option<Device>> {
        self.db.get_json(trees::DEVICES, &key(&[user_id.as_bytes(), device_id.as_bytes()]))
    }

    pub fn devices(&self, user_id: &UserId) -> Result<Vec<(OwnedDeviceId, Device)>> {
        let mut out = Vec::new();
        for (k, v) in self.db.scan_prefix(trees::DEVICES, &prefix(&[user_id.as_bytes()]), usize::MAX)? {
            let parts = crate::store::split(&k);
            let Some(device_id) = parts.get(1) else { continue };
            let device: Device = serde_json::from_slice(&v).map_err(Error::internal)?;
            out.push((OwnedDeviceId::from(utf8(device_id)?), device));
        }
        Ok(out)
    }

    pub async fn update_device(
        &self,
        user_id: &UserId,
        device_id: &ruma::DeviceId,
        display_name: Option<String>,
    ) -> Result<()> {
        let device_key = key(&[user_id.as_bytes(), device_id.as_bytes()]);
        let mut device: Device =
            self.db.get_json(trees::DEVICES, &device_key)?.ok_or_else(|| Error::not_found("no such device"))?;
        device.display_name = display_name;
        let mut batch = WriteBatch::new();
        batch.insert(trees::DEVICES, device_key, Db::to_json(&device)?);
        self.db.write(batch).await
    }

    /// Deletes a device and its tokens (access and refresh). The caller removes its keys (e2ee owns those).
    pub async fn remove_device(&self, user_id: &UserId, device_id: &ruma::DeviceId) -> Result<bool> {
        let device_key = key(&[user_id.as_bytes(), device_id.as_bytes()]);
        let _rotation = self.rotation_lock(user_id, device_id).lock().await;
        let Some(mut device) = self.db.get_json::<Device>(trees::DEVICES, &device_key)? else {
            return Ok(false);
        };
        let mut batch = WriteBatch::new();
        self.drop_tokens(&mut device, &mut batch);
        batch.remove(trees::DEVICES, device_key);
        self.db.write(batch).await?;
        Ok(true)
    }

    /// Logs out a token but keeps nothing of its device (the spec deletes the device).
    pub async fn logout(&self, auth: &Auth) -> Result<()> {
        self.remove_device(&auth.user_id, &auth.device_id).await.map(|_| ())
    }

    pub fn profile(&self, user_id: &UserId) -> Result<Option<(Option<String>, Option<String>)>> {
        Ok(self.account(user_id)?.map(|a| (a.displayname, a.avatar_url)))
    }

    /// Local users whose id or display name contains `term` (case-insensitive).
    pub fn search(&self, term: &str, limit: usize) -> Result<(Vec<(OwnedUserId, Account)>, bool)> {
        let term = term.to_lowercase();
        let mut out = Vec::new();
        let mut limited = false;
        for (k, v) in self.db.scan_prefix(trees::USERS, b"", usize::MAX)? {
            let Ok(user_id) = UserId::parse(utf8(&k)?) else { continue };
            let account: Account = serde_json::from_slice(&v).map_err(Error::internal)?;
            if account.deactivated {
                continue;
            }
            let name_match = account.displayname.as_deref().is_some_and(|d| d.to_lowercase().contains(&term));
            if user_id.as_str().to_lowercase().contains(&term) || name_match {
                if out.len() == limit {
                    limited = true;
                    break;
                }
                out.push((user_id, account));
            }
        }
        Ok((out, limited))
    }
}

pub fn random_string(len: usize) -> String {
    const CHARS: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    (0..len).map(|_| CHARS[rand::random_range(0..CHARS.len())] as char).collect()
}

pub fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

impl Users {
    pub fn filter(&self, user: &UserId, id: &str) -> Result<Option<ruma::api::client::filter::FilterDefinition>> {
        match self.db.get(trees::FILTERS, &key(&[user.as_bytes(), id.as_bytes()]))? {
            Some(bytes) => Ok(Some(serde_json::from_slice(&bytes).map_err(Error::internal)?)),
            None => Ok(None),
        }
    }

    pub async fn create_filter(
        &self,
        user: &UserId,
        filter: &ruma::api::client::filter::FilterDefinition,
    ) -> Result<String> {
        let id = random_string(12);
        let mut batch = WriteBatch::new();
        batch.insert(
            trees::FILTERS,
            key(&[user.as_bytes(), id.as_bytes()]),
            serde_json::to_vec(filter).map_err(Error::internal)?,
        );
        self.db.write(batch).await?;
        Ok(id)
    }
}
