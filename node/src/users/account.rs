//! Stored account and device records, and password hashing.

use argon2::{
    Argon2, PasswordHash, PasswordHasher, PasswordVerifier,
    password_hash::SaltString,
};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Account {
    /// argon2id PHC string.
    pub password_hash: Option<String>,
    pub displayname: Option<String>,
    pub avatar_url: Option<String>,
    #[serde(default)]
    pub admin: bool,
    #[serde(default)]
    pub deactivated: bool,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Device {
    pub display_name: Option<String>,
    pub access_token: Option<String>,
    pub last_seen_ts: Option<u64>,
}

/// Hashes off the async runtime: argon2 takes tens of milliseconds by design.
pub async fn hash_password(password: String) -> Result<String> {
    tokio::task::spawn_blocking(move || {
        let salt = SaltString::encode_b64(&rand::random::<[u8; 16]>()).map_err(Error::internal)?;
        Argon2::default()
            .hash_password(password.as_bytes(), &salt)
            .map(|h| h.to_string())
            .map_err(Error::internal)
    })
    .await
    .map_err(Error::internal)?
}

pub async fn verify_password(password: String, hash: String) -> Result<bool> {
    tokio::task::spawn_blocking(move || {
        let parsed = PasswordHash::new(&hash).map_err(Error::internal)?;
        Ok(Argon2::default().verify_password(password.as_bytes(), &parsed).is_ok())
    })
    .await
    .map_err(Error::internal)?
}
