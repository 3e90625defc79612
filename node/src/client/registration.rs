//! Registration: `/register`, and the checks a sign-up form makes first (`/register/available`
//! and the registration token's validity).

use std::sync::Arc;

use ruma::api::client::{
    account::{check_registration_token_validity, get_username_availability, register},
    uiaa::{AuthData, AuthType},
};

use crate::{
    Registration, Services,
    error::{Error, Result},
    http::{Action, Ruma},
};

fn registration_flows(mode: Registration) -> Vec<Vec<AuthType>> {
    match mode {
        Registration::Open => vec![vec![AuthType::Dummy]],
        Registration::Token => vec![vec![AuthType::RegistrationToken]],
        Registration::Closed => Vec::new(),
    }
}

pub async fn register(s: Arc<Services>, req: Ruma<register::v3::Request>) -> Result<register::v3::Response> {
    let mode = s.config.registration;
    if mode == Registration::Closed {
        return Err(Error::forbidden("registration is closed on this node; ask an admin for an account"));
    }
    let ip = req.client_ip;
    let req = req.body;
    if req.kind == register::RegistrationKind::Guest {
        return Err(Error::forbidden("guest access is disabled"));
    }
    let flows = registration_flows(mode);
    // Refuse a bad or taken username before any UIA stage is completed: completing the stage
    // ends the session, so failing afterwards would make the client start over.
    let localpart = match &req.username {
        Some(u) => {
            let localpart = u.to_lowercase();
            let user_id = s.users.user_id_for(&localpart)?;
            if s.users.account(&user_id)?.is_some() {
                return Err(Error::UserInUse);
            }
            localpart
        }
        None => crate::users::random_string(12).to_lowercase(),
    };
    let Some(auth) = &req.auth else {
        return Err(Error::Uiaa(Box::new(s.users.uiaa.start(flows))));
    };
    // Each attempt at a stage counts (a registration token is guessed here), not only successes.
    s.limits.take(Action::Register, None, ip)?;
    let session =
        auth.session().map(str::to_owned).ok_or_else(|| Error::Uiaa(Box::new(s.users.uiaa.start(flows.clone()))))?;
    if !s.users.uiaa.exists(&session) {
        return Err(Error::forbidden("unknown or expired auth session"));
    }
    let stage = match (auth, mode) {
        (AuthData::Dummy(_), Registration::Open) => AuthType::Dummy,
        (AuthData::RegistrationToken(t), Registration::Token) => {
            // One use of an admin API token is counted once the account exists.
            if !token_accepted(&s, &t.token)? {
                return Err(Error::forbidden("invalid registration token"));
            }
            AuthType::RegistrationToken
        }
        _ => return Err(Error::forbidden("this auth stage is not offered")),
    };
    // Checked before the stage completes, for the same reason as the username above.
    let password = req.password.as_deref().ok_or_else(|| Error::MissingParam("password is required".into()))?;
    crate::users::password::check(s.config.password_min_length, password)?;
    s.users.uiaa.complete_stage(&session, stage, &flows);
    let user_id = s.users.create_account(&localpart, Some(password), None, false).await?;
    if let Some(AuthData::RegistrationToken(t)) = &req.auth {
        crate::admin::tokens::count_use(&s, &t.token).await?;
    }
    tracing::info!(%user_id, "registered a new account");
    let mut response = register::v3::Response::new(user_id.clone());
    if !req.inhibit_login {
        let issued = s
            .users
            .login_device_with(&user_id, req.device_id, req.initial_device_display_name, req.refresh_token)
            .await?;
        response.access_token = Some(issued.access_token);
        response.device_id = Some(issued.device_id);
        response.refresh_token = issued.refresh_token;
        response.expires_in = issued.expires_in;
    }
    Ok(response)
}

/// `GET /register/available`: whether a username could be registered. Each ask counts against
/// the registration rate limit, since it tells which accounts exist.
pub async fn available(
    s: Arc<Services>,
    req: Ruma<get_username_availability::v3::Request>,
) -> Result<get_username_availability::v3::Response> {
    if s.config.registration == Registration::Closed {
        return Err(Error::forbidden("registration is closed on this node; ask an admin for an account"));
    }
    s.limits.take(Action::Register, None, req.client_ip)?;
    let user_id = s.users.user_id_for(&req.username.to_lowercase())?;
    if s.users.account(&user_id)?.is_some() {
        return Err(Error::UserInUse);
    }
    Ok(get_username_availability::v3::Response::new(true))
}

/// `GET /register/m.login.registration_token/validity`: whether a token would be accepted now,
/// without using it up. 403 where registration takes no tokens, as the spec says.
pub async fn token_validity(
    s: Arc<Services>,
    req: Ruma<check_registration_token_validity::v1::Request>,
) -> Result<check_registration_token_validity::v1::Response> {
    if s.config.registration != Registration::Token {
        return Err(Error::forbidden("this node does not take registration tokens"));
    }
    // A guessing oracle otherwise.
    s.limits.take(Action::Register, None, req.client_ip)?;
    Ok(check_registration_token_validity::v1::Response::new(token_accepted(&s, &req.token)?))
}

/// A token from the config file, or one made with the admin API that is still usable.
fn token_accepted(s: &Services, token: &str) -> Result<bool> {
    let expected = s.config.registration_token.as_deref().unwrap_or_default();
    if !expected.is_empty() && crate::users::secrets_match(token, expected) {
        return Ok(true);
    }
    crate::admin::tokens::usable(s, token)
}
