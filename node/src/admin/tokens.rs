//! `/_tocsin/admin/registration_tokens`: tokens for `m.login.registration_token` (with
//! `registration = "token"`), each with an optional number of uses and expiry. Created, listed
//! and revoked on the running node; registration checks them besides the config's token.

use std::sync::Arc;

use axum::{
    extract::{Path, State},
    response::Response,
};
use bytes::Bytes;
use http::{HeaderMap, Uri};
use serde::{Deserialize, Serialize};
use tocsin_store::WriteBatch;

use super::{body, json, require_operator};
use crate::{
    Services,
    error::{Error, Result},
    store::{Db, trees},
    users::now_ms,
};

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct RegistrationToken {
    pub token: String,
    /// How many accounts may be registered with it; unset: no limit.
    pub uses_allowed: Option<u32>,
    pub completed: u32,
    /// Milliseconds since the epoch after which it is refused; unset: never.
    pub expiry_time: Option<u64>,
    pub created_ms: u64,
}

impl RegistrationToken {
    fn valid(&self, now: u64) -> bool {
        self.uses_allowed.is_none_or(|n| self.completed < n) && self.expiry_time.is_none_or(|t| now < t)
    }
}

fn load(s: &Services, token: &str) -> Result<Option<RegistrationToken>> {
    s.db.get_json(trees::REGISTRATION_TOKENS, token.as_bytes())
}

/// Whether a stored token may register one more account now.
pub fn usable(s: &Services, token: &str) -> Result<bool> {
    Ok(load(s, token)?.is_some_and(|t| t.valid(now_ms())))
}

/// Counts one registration made with `token` (a config token is not stored: nothing to count).
pub async fn count_use(s: &Services, token: &str) -> Result<()> {
    if let Some(mut t) = load(s, token)? {
        t.completed = t.completed.saturating_add(1);
        let mut batch = WriteBatch::new();
        batch.insert(trees::REGISTRATION_TOKENS, token.as_bytes().to_vec(), Db::to_json(&t)?);
        s.db.write(batch).await?;
    }
    Ok(())
}

pub async fn list(State(s): State<Arc<Services>>, headers: HeaderMap, uri: Uri) -> Result<Response> {
    require_operator(&s, &headers, &uri)?;
    let mut tokens = Vec::new();
    for (_, v) in s.db.scan_prefix(trees::REGISTRATION_TOKENS, b"", usize::MAX)? {
        let t: RegistrationToken = serde_json::from_slice(&v).map_err(Error::internal)?;
        let valid = t.valid(now_ms());
        let mut view = serde_json::to_value(&t).map_err(Error::internal)?;
        view["valid"] = serde_json::Value::Bool(valid);
        tokens.push(view);
    }
    json(&serde_json::json!({ "registration_tokens": tokens }))
}

#[derive(Deserialize)]
struct Create {
    /// Made up when absent.
    token: Option<String>,
    uses_allowed: Option<u32>,
    /// Lifetime in seconds from now.
    expires_in_secs: Option<u64>,
}

pub async fn create(State(s): State<Arc<Services>>, headers: HeaderMap, uri: Uri, bytes: Bytes) -> Result<Response> {
    let caller = require_operator(&s, &headers, &uri)?;
    let req: Create = body(&bytes)?;
    let token = req.token.unwrap_or_else(|| crate::users::random_string(24));
    // The spec's grammar for registration tokens: [A-Za-z0-9._~-], at most 64 characters.
    if token.is_empty()
        || token.len() > 64
        || !token.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '~' | '-'))
    {
        return Err(Error::invalid_param("a token is 1 to 64 characters of A-Z a-z 0-9 . _ ~ -"));
    }
    if load(&s, &token)?.is_some() {
        return Err(Error::invalid_param("this token exists already"));
    }
    let now = now_ms();
    let t = RegistrationToken {
        token: token.clone(),
        uses_allowed: req.uses_allowed,
        completed: 0,
        expiry_time: req.expires_in_secs.map(|secs| now.saturating_add(secs.saturating_mul(1000))),
        created_ms: now,
    };
    let mut batch = WriteBatch::new();
    batch.insert(trees::REGISTRATION_TOKENS, token.as_bytes().to_vec(), Db::to_json(&t)?);
    s.db.write(batch).await?;
    tracing::info!(uses_allowed = ?t.uses_allowed, by = %caller.name(), "admin API: registration token created");
    json(&t)
}

pub async fn revoke(
    State(s): State<Arc<Services>>,
    Path(token): Path<String>,
    headers: HeaderMap,
    uri: Uri,
) -> Result<Response> {
    let caller = require_operator(&s, &headers, &uri)?;
    if load(&s, &token)?.is_none() {
        return Err(Error::not_found("no such registration token"));
    }
    let mut batch = WriteBatch::new();
    batch.remove(trees::REGISTRATION_TOKENS, token.as_bytes().to_vec());
    s.db.write(batch).await?;
    tracing::info!(by = %caller.name(), "admin API: registration token revoked");
    json(&serde_json::json!({ "revoked": token }))
}
