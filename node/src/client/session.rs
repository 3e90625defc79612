//! Login, token refresh, logout, whoami, password change and deactivation.

use std::sync::Arc;

use ruma::api::client::{
    account::{change_password, deactivate, whoami},
    session::{get_login_types, login, logout, logout_all, refresh_token},
    uiaa::{AuthData, AuthType, UserIdentifier},
};

use crate::{
    Services,
    error::{Error, Result},
    http::{Action, Ruma},
};

pub async fn login_types(
    _: Arc<Services>,
    _: Ruma<get_login_types::v3::Request>,
) -> Result<get_login_types::v3::Response> {
    Ok(get_login_types::v3::Response::new(vec![get_login_types::v3::LoginType::Password(Default::default())]))
}

/// Checks a login body before ruma parses it: ruma looks `type` up unchecked and panics when it
/// is missing. A body that is not JSON at all is left to ruma, which answers `M_NOT_JSON`.
pub fn login_body(_: &mut http::request::Parts, body: bytes::Bytes) -> Result<bytes::Bytes> {
    let Ok(value) = serde_json::from_slice::<serde_json::Value>(&body) else { return Ok(body) };
    if value.is_object() && !value.get("type").is_some_and(serde_json::Value::is_string) {
        return Err(Error::bad_json("the login body needs a string `type`, e.g. \"m.login.password\""));
    }
    Ok(body)
}

pub async fn login(s: Arc<Services>, req: Ruma<login::v3::Request>) -> Result<login::v3::Response> {
    let ip = req.client_ip;
    s.limits.take(Action::Login, None, ip)?;
    let req = req.body;
    // An unsupported login type is a bad request (400 M_UNKNOWN, as the spec's example), not an
    // unknown endpoint: 404 M_UNRECOGNIZED makes clients think /login itself is missing.
    let login::v3::LoginInfo::Password(password) = &req.login_info else {
        return Err(Error::BadRequest("unsupported login type; this node offers m.login.password".into()));
    };
    #[allow(deprecated)]
    let user = match (&password.identifier, &password.user) {
        (Some(UserIdentifier::Matrix(m)), _) => m.user.clone(),
        (None, Some(user)) => user.clone(),
        _ => return Err(Error::bad_json("only m.id.user identifiers are supported")),
    };
    let user_id = s.users.parse_login_user(&user)?;
    // A failure is charged before the password is checked and given back when it was right:
    // parallel guesses cannot overrun the bucket, and once it is empty even the right password
    // waits (an attacker learns nothing from which attempt would have worked).
    s.limits.take(Action::LoginFailure, Some(&user_id), ip)?;
    if !s.users.check_password(&user_id, &password.password).await? {
        return Err(Error::forbidden("invalid username or password"));
    }
    s.limits.refund(Action::LoginFailure, Some(&user_id), ip);
    let prev = crate::federation::edu::key_position(&s, &user_id);
    let known_device = match &req.device_id {
        Some(d) => s.users.device(&user_id, d)?.is_some(),
        None => false,
    };
    let issued =
        s.users.login_device_with(&user_id, req.device_id, req.initial_device_display_name, req.refresh_token).await?;
    if !known_device {
        // A new device: users and servers that share a room with us refresh our device list.
        s.e2ee.mark_device_change(&user_id).await?;
        crate::federation::edu::device_list_update(&s, &user_id, &issued.device_id, prev).await;
    }
    let mut response = login::v3::Response::new(user_id, issued.access_token, issued.device_id);
    response.refresh_token = issued.refresh_token;
    response.expires_in = issued.expires_in;
    response.well_known = None;
    Ok(response)
}

/// `POST /refresh`: the refresh token is the credential (no access token needed: the old one
/// may have expired). Not rate limited: a refresh token is 32 random characters, nothing to
/// guess, and a client refreshes once per token lifetime.
pub async fn refresh(s: Arc<Services>, req: Ruma<refresh_token::v3::Request>) -> Result<refresh_token::v3::Response> {
    let issued = s.users.refresh(&req.body.refresh_token).await?;
    let mut response = refresh_token::v3::Response::new(issued.access_token);
    response.refresh_token = issued.refresh_token;
    response.expires_in_ms = issued.expires_in;
    Ok(response)
}

pub async fn whoami(_: Arc<Services>, req: Ruma<whoami::v3::Request>) -> Result<whoami::v3::Response> {
    let auth = req.user()?;
    let mut response = whoami::v3::Response::new(auth.user_id.clone(), false);
    response.device_id = Some(auth.device_id.clone());
    Ok(response)
}

pub async fn logout(s: Arc<Services>, req: Ruma<logout::v3::Request>) -> Result<logout::v3::Response> {
    let auth = req.user()?;
    s.users.logout(auth).await?;
    let prev = crate::federation::edu::key_position(&s, &auth.user_id);
    s.e2ee.remove_device(&auth.user_id, &auth.device_id).await?;
    crate::federation::edu::device_list_update(&s, &auth.user_id, &auth.device_id, prev).await;
    Ok(logout::v3::Response::new())
}

pub async fn logout_all(s: Arc<Services>, req: Ruma<logout_all::v3::Request>) -> Result<logout_all::v3::Response> {
    crate::users::deactivation::remove_devices(&s, &req.user()?.user_id, None).await?;
    Ok(logout_all::v3::Response::new())
}

/// Checks a UIA `m.login.password` stage for an already logged-in user, or starts a session.
pub async fn require_password(s: &Services, user_id: &ruma::UserId, auth: Option<&AuthData>) -> Result<()> {
    let flows = vec![vec![AuthType::Password]];
    let Some(AuthData::Password(p)) = auth else {
        return Err(Error::Uiaa(Box::new(s.users.uiaa.start(flows))));
    };
    // Whoever holds a stolen access token could guess the password here: the account's
    // failed-login bucket applies as on /login.
    s.limits.take(Action::LoginFailure, Some(user_id), None)?;
    if !s.users.check_password(user_id, &p.password).await? {
        return Err(Error::forbidden("wrong password"));
    }
    s.limits.refund(Action::LoginFailure, Some(user_id), None);
    if let Some(session) = &p.session {
        s.users.uiaa.complete_stage(session, AuthType::Password, &flows);
    }
    Ok(())
}

pub async fn change_password(
    s: Arc<Services>,
    req: Ruma<change_password::v3::Request>,
) -> Result<change_password::v3::Response> {
    let auth = req.user()?.clone();
    require_password(&s, &auth.user_id, req.body.auth.as_ref()).await?;
    crate::users::password::check(s.config.password_min_length, &req.body.new_password)?;
    s.users.set_password(&auth.user_id, &req.body.new_password).await?;
    if req.body.logout_devices {
        crate::users::deactivation::remove_devices(&s, &auth.user_id, Some(&auth.device_id)).await?;
    }
    Ok(change_password::v3::Response::new())
}

/// `POST /account/deactivate`, after the account's password (UIA). Ruma's request carries
/// `erase`; erasing what the user sent is not done, and the answer says so
/// (`id_server_unbind_result: no-support`: the node keeps no third-party ids either).
pub async fn deactivate(s: Arc<Services>, req: Ruma<deactivate::v3::Request>) -> Result<deactivate::v3::Response> {
    let auth = req.user()?.clone();
    require_password(&s, &auth.user_id, req.body.auth.as_ref()).await?;
    let done = crate::users::deactivation::deactivate(&s, &auth.user_id).await?;
    tracing::info!(user_id = %auth.user_id, devices_logged_out = done.devices_logged_out, rooms_left = done.rooms_left, "account deactivated by its owner");
    Ok(deactivate::v3::Response::new(ruma::api::client::account::ThirdPartyIdRemovalStatus::NoSupport))
}
