//! The admin API: read-only views for operators, under `/_tocsin/admin/`, on the client port.
//! Every endpoint requires the access token of an account with the admin flag, except
//! `/health`, which tells only whether the node serves.

pub mod federation;
pub mod health;
pub mod listener;
pub mod metrics;
pub mod notices;
pub mod policy;

use http::{HeaderMap, Uri};

use crate::{
    Services,
    error::{Error, Result},
    http::{Auth, EndpointRouter},
};

/// The admin endpoints that are not in the client router's list (users, tokens, rooms, media,
/// notices, backup).
pub fn routes(endpoints: EndpointRouter) -> EndpointRouter {
    endpoints
}

/// The caller, if its access token belongs to an admin account; `M_FORBIDDEN` otherwise.
pub fn require_admin(services: &Services, headers: &HeaderMap, uri: &Uri) -> Result<Auth> {
    let token = access_token(headers, uri).ok_or(Error::MissingToken)?;
    let auth = services.users.authenticate(&token)?;
    match services.users.account(&auth.user_id)? {
        Some(account) if account.admin && !account.deactivated => Ok(auth),
        _ => Err(Error::forbidden("this endpoint is for server admins")),
    }
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
