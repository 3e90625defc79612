//! The admin API, under `/_tocsin/admin/`, on the client port: views and actions for operators
//! on a running node (users, registration tokens, rooms, media, server notices, backup, the
//! federation backlog, policy plan/apply). `tocsin-node admin ...` is its command line.
//!
//! Access: the access token of an account with the admin flag, or the operator's admin token
//! (`admin_token_file`), which needs no account and so works on a fresh node. `/health` and
//! `/_tocsin/metrics` have their own rules (see those files).

pub mod alarms;
pub mod backup;
pub mod cli;
pub mod federation;
pub mod health;
pub mod listener;
pub mod media;
pub mod metrics;
pub mod notices;
pub mod policy;
pub mod reports;
pub mod rooms;
pub mod tokens;
pub mod users;

use axum::routing::{delete, get, post};
use http::{HeaderMap, Uri};
use serde::de::DeserializeOwned;

use crate::{
    Services,
    error::{Error, Result},
    http::{Auth, EndpointRouter},
};

/// The admin endpoints beyond the federation backlog, policy and metrics.
pub fn routes(endpoints: EndpointRouter) -> EndpointRouter {
    const A: &str = "/_tocsin/admin";
    endpoints
        .raw(&format!("{A}/users"), get(users::list).post(users::add))
        .raw(&format!("{A}/users/{{user_id}}/password"), post(users::reset_password))
        .raw(&format!("{A}/users/{{user_id}}/deactivate"), post(users::deactivate))
        .raw(&format!("{A}/users/{{user_id}}/logout"), post(users::logout_all))
        .raw(&format!("{A}/registration_tokens"), get(tokens::list).post(tokens::create))
        .raw(&format!("{A}/registration_tokens/{{token}}"), delete(tokens::revoke))
        .raw(&format!("{A}/rooms"), get(rooms::list))
        .raw(&format!("{A}/rooms/{{room_id}}"), get(rooms::details))
        .raw(&format!("{A}/rooms/{{room_id}}/shutdown"), post(rooms::shutdown))
        .raw(&format!("{A}/media/{{server}}/{{media_id}}"), delete(media::purge))
        .raw(&format!("{A}/media/purge_remote"), post(media::purge_remote))
        .raw(&format!("{A}/server_notices"), post(notices::send_endpoint))
        .raw(&format!("{A}/backup"), post(backup::endpoint))
        .raw(&format!("{A}/alarms"), get(alarms::list))
        .raw(&format!("{A}/alarms/{{id}}"), get(alarms::status))
        .raw(&format!("{A}/reports"), get(reports::list))
}

/// Who is calling the admin API.
#[derive(Debug, Clone)]
pub enum Caller {
    /// The operator's admin token: no account behind it.
    Operator,
    Admin(Auth),
}

impl Caller {
    /// For the log.
    pub fn name(&self) -> String {
        match self {
            Caller::Operator => "operator token".to_owned(),
            Caller::Admin(auth) => auth.user_id.to_string(),
        }
    }
}

/// The caller, if it holds the operator token or an admin account's access token.
pub fn require_operator(services: &Services, headers: &HeaderMap, uri: &Uri) -> Result<Caller> {
    let token = access_token(headers, uri).ok_or(Error::MissingToken)?;
    if let Some(operator) = &services.admin_token
        && crate::users::secrets_match(&token, operator)
    {
        return Ok(Caller::Operator);
    }
    require_admin(services, headers, uri).map(Caller::Admin)
}

/// The caller, if its access token belongs to an admin account; `M_FORBIDDEN` otherwise.
pub fn require_admin(services: &Services, headers: &HeaderMap, uri: &Uri) -> Result<Auth> {
    let token = access_token(headers, uri).ok_or(Error::MissingToken)?;
    let (auth, _) = services.users.check_token(&token)?;
    match services.users.account(&auth.user_id)? {
        Some(account) if account.admin && !account.deactivated => Ok(auth),
        _ => Err(Error::forbidden("this endpoint is for server admins")),
    }
}

/// A JSON request body (an empty body reads as `{}`).
pub fn body<T: DeserializeOwned>(bytes: &[u8]) -> Result<T> {
    let bytes = if bytes.iter().all(u8::is_ascii_whitespace) { b"{}".as_slice() } else { bytes };
    serde_json::from_slice(bytes).map_err(Error::bad_json)
}

/// A JSON response.
pub fn json(value: &impl serde::Serialize) -> Result<axum::response::Response> {
    use axum::response::IntoResponse;
    let body = serde_json::to_string(value).map_err(Error::internal)?;
    Ok(([(http::header::CONTENT_TYPE, "application/json")], body).into_response())
}

/// `Authorization: Bearer <token>`, or the deprecated `access_token` query parameter.
fn access_token(headers: &HeaderMap, uri: &Uri) -> Option<String> {
    if let Some(value) = headers.get(http::header::AUTHORIZATION) {
        return value.to_str().ok().and_then(|v| v.strip_prefix("Bearer ")).map(|t| t.trim().to_owned());
    }
    uri.query().and_then(|q| {
        q.split('&').filter_map(|kv| kv.split_once('=')).find(|(k, _)| *k == "access_token").map(|(_, v)| v.to_owned())
    })
}
