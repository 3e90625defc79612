//! `GET /voip/turnServer`: the configured TURN servers with credentials that expire, in the
//! TURN REST API form coturn's `use-auth-secret` checks (as Synapse hands them out): the user
//! name is `<expiry>:<user id>`, the password the base64 HMAC-SHA1 of it under the shared secret.

use std::{sync::Arc, time::Duration};

use base64::Engine;
use hmac::{Hmac, Mac};
use ruma::{
    UserId,
    api::client::voip::get_turn_server_info::v3::{Request, Response},
};
use sha1::Sha1;

use crate::{
    Services,
    config::clients::{DEFAULT_TURN_USER_LIFETIME_SECS, TurnConfig},
    error::{Error, Result},
    http::Ruma,
};

pub async fn turn_server(s: Arc<Services>, req: Ruma<Request>) -> Result<Response> {
    let auth = req.user()?;
    let turn = &s.config.turn;
    if turn.uris.is_empty() {
        return Err(Error::Unrecognized);
    }
    let secret = shared_secret(turn)?;
    let lifetime = turn.user_lifetime_secs.unwrap_or(DEFAULT_TURN_USER_LIFETIME_SECS);
    let expiry = crate::users::now_ms() / 1000 + lifetime;
    let (username, password) = credentials(&secret, &auth.user_id, expiry)?;
    Ok(Response::new(username, password, turn.uris.clone(), Duration::from_secs(lifetime)))
}

fn shared_secret(turn: &TurnConfig) -> Result<String> {
    match (&turn.shared_secret, &turn.shared_secret_file) {
        (Some(secret), _) => Ok(secret.clone()),
        (None, Some(path)) => std::fs::read_to_string(path)
            .map(|s| s.trim().to_owned())
            .map_err(|e| Error::internal(format!("reading turn.shared_secret_file {}: {e}", path.display()))),
        (None, None) => Err(Error::internal("turn.uris is set without a shared secret")),
    }
}

/// The TURN REST API credentials for `user` until `expiry` (Unix seconds).
fn credentials(secret: &str, user: &UserId, expiry: u64) -> Result<(String, String)> {
    let username = format!("{expiry}:{user}");
    let mut mac = Hmac::<Sha1>::new_from_slice(secret.as_bytes()).map_err(Error::internal)?;
    mac.update(username.as_bytes());
    let password = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    Ok((username, password))
}
