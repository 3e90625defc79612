//! `/_tocsin/admin/users`: list and add accounts, reset a password, deactivate an account, log a
//! user out everywhere. Thin: the accounts live in `users`, devices and their keys in `e2ee`.

use std::sync::Arc;

use axum::{
    extract::{Path, State},
    response::Response,
};
use bytes::Bytes;
use http::{HeaderMap, Uri};
use ruma::{OwnedUserId, UserId};
use serde::{Deserialize, Serialize};

use super::{body, json, require_operator};
use crate::{
    Services,
    error::{Error, Result},
};

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
pub struct UserView {
    pub user_id: OwnedUserId,
    pub displayname: Option<String>,
    pub admin: bool,
    pub deactivated: bool,
    pub devices: usize,
}

pub async fn list(State(s): State<Arc<Services>>, headers: HeaderMap, uri: Uri) -> Result<Response> {
    require_operator(&s, &headers, &uri)?;
    let mut users = Vec::new();
    for (user_id, account) in s.users.accounts()? {
        let devices = s.users.devices(&user_id)?.len();
        users.push(UserView {
            user_id,
            displayname: account.displayname,
            admin: account.admin,
            deactivated: account.deactivated,
            devices,
        });
    }
    json(&serde_json::json!({ "users": users }))
}

#[derive(Deserialize)]
struct AddUser {
    username: String,
    /// Made up (and returned) when absent.
    password: Option<String>,
    #[serde(default)]
    admin: bool,
    displayname: Option<String>,
}

pub async fn add(State(s): State<Arc<Services>>, headers: HeaderMap, uri: Uri, bytes: Bytes) -> Result<Response> {
    let caller = require_operator(&s, &headers, &uri)?;
    let req: AddUser = body(&bytes)?;
    let generated = req.password.is_none();
    let password = req.password.unwrap_or_else(|| crate::users::random_string(20));
    crate::users::password::check(s.config.password_min_length, &password)?;
    let user_id =
        s.users.create_account(&req.username.to_lowercase(), Some(&password), req.displayname, req.admin).await?;
    tracing::info!(%user_id, admin = req.admin, by = %caller.name(), "admin API: account created");
    let mut out = serde_json::json!({ "user_id": user_id, "admin": req.admin });
    if generated {
        out["password"] = serde_json::Value::String(password);
    }
    json(&out)
}

/// A local user id from the path: `@alice:server` or just `alice`.
fn local_user(s: &Services, raw: &str) -> Result<OwnedUserId> {
    let user_id = if raw.starts_with('@') {
        UserId::parse(raw).map_err(|e| Error::invalid_param(format!("`{raw}` is not a user id: {e}")))?
    } else {
        s.users.user_id_for(&raw.to_lowercase())?
    };
    if !s.users.is_local(&user_id) || s.users.account(&user_id)?.is_none() {
        return Err(Error::not_found(format!("no local account {user_id}")));
    }
    Ok(user_id)
}

#[derive(Deserialize)]
struct ResetPassword {
    password: String,
    /// Log out every device too (default): whoever knew the old password may hold a session.
    #[serde(default = "yes")]
    logout_devices: bool,
}

fn yes() -> bool {
    true
}

pub async fn reset_password(
    State(s): State<Arc<Services>>,
    Path(user): Path<String>,
    headers: HeaderMap,
    uri: Uri,
    bytes: Bytes,
) -> Result<Response> {
    let caller = require_operator(&s, &headers, &uri)?;
    let user_id = local_user(&s, &user)?;
    let req: ResetPassword = body(&bytes)?;
    crate::users::password::check(s.config.password_min_length, &req.password)?;
    s.users.set_password(&user_id, &req.password).await?;
    let removed =
        if req.logout_devices { crate::users::deactivation::remove_devices(&s, &user_id, None).await? } else { 0 };
    tracing::info!(%user_id, devices_logged_out = removed, by = %caller.name(), "admin API: password reset");
    json(&serde_json::json!({ "user_id": user_id, "devices_logged_out": removed }))
}

pub async fn logout_all(
    State(s): State<Arc<Services>>,
    Path(user): Path<String>,
    headers: HeaderMap,
    uri: Uri,
) -> Result<Response> {
    let caller = require_operator(&s, &headers, &uri)?;
    let user_id = local_user(&s, &user)?;
    let removed = crate::users::deactivation::remove_devices(&s, &user_id, None).await?;
    tracing::info!(%user_id, devices_logged_out = removed, by = %caller.name(), "admin API: logged out everywhere");
    json(&serde_json::json!({ "user_id": user_id, "devices_logged_out": removed }))
}

/// Deactivation: no password, no devices, out of every room; the account id stays taken.
pub async fn deactivate(
    State(s): State<Arc<Services>>,
    Path(user): Path<String>,
    headers: HeaderMap,
    uri: Uri,
) -> Result<Response> {
    let caller = require_operator(&s, &headers, &uri)?;
    let user_id = local_user(&s, &user)?;
    let done = crate::users::deactivation::deactivate(&s, &user_id).await?;
    let (removed, left) = (done.devices_logged_out, done.rooms_left);
    tracing::info!(%user_id, devices_logged_out = removed, rooms_left = left, by = %caller.name(), "admin API: account deactivated");
    json(&serde_json::json!({ "user_id": user_id, "devices_logged_out": removed, "rooms_left": left }))
}
