//! Turns an HTTP request into a ruma request type, authenticating the caller on the way.

use std::{
    any::TypeId,
    net::{IpAddr, SocketAddr},
    sync::Arc,
};

use axum::extract::{ConnectInfo, FromRequest, RawPathParams, Request};
use bytes::Bytes;
use ruma::{
    OwnedDeviceId, OwnedServerName, OwnedUserId, ServerName,
    api::{
        IncomingRequest,
        auth_scheme::{AccessToken, AccessTokenOptional},
        error::{DeserializationError, FromHttpRequestError},
        federation::authentication::{ServerSignatures, XMatrix},
        path_builder::PathBuilder,
    },
    signatures::PublicKeyMap,
};

use crate::{Services, error::Error};

/// Who made the request, when the endpoint needs to know.
#[derive(Clone)]
pub struct Auth {
    pub user_id: OwnedUserId,
    pub device_id: OwnedDeviceId,
    pub access_token: String,
}

/// Without the token: an `Auth` printed with `?` must not put it in a log line.
impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auth")
            .field("user_id", &self.user_id)
            .field("device_id", &self.device_id)
            .field("access_token", &"<redacted>")
            .finish()
    }
}

/// A parsed, authenticated ruma request.
pub struct Ruma<T> {
    pub body: T,
    /// Set for endpoints that require (or accept) an access token and got a valid one.
    pub caller: Option<Auth>,
    /// The raw JSON body, for endpoints that need fields ruma does not model.
    pub json_body: Bytes,
    /// Set for federation endpoints (`ServerSignatures`): the server whose X-Matrix signature
    /// verified.
    pub origin: Option<OwnedServerName>,
    /// The address the client's requests are rate-limited by (see [`super::ratelimit::client_ip`]).
    pub client_ip: Option<IpAddr>,
}

impl<T> Ruma<T> {
    /// The authenticated caller. Only call on endpoints whose scheme is `AccessToken`.
    pub fn user(&self) -> Result<&Auth, Error> {
        self.caller.as_ref().ok_or(Error::MissingToken)
    }

    /// The server that signed the request. Only set on endpoints whose scheme is
    /// `ServerSignatures`, after its signature verified.
    pub fn origin(&self) -> Result<&ServerName, Error> {
        self.origin
            .as_deref()
            .ok_or_else(|| Error::Unauthorized("the request carries no verified X-Matrix origin".to_owned()))
    }
}

impl<T> std::ops::Deref for Ruma<T> {
    type Target = T;

    fn deref(&self) -> &T {
        &self.body
    }
}

/// Bodies larger than this are refused before parsing; media uploads have their own limit.
const MAX_JSON_BODY: usize = 1024 * 1024;

/// An endpoint's check or fix of a request before ruma parses it: for requests ruma parses
/// wrongly (a panic, or a field or query parameter the spec makes optional that ruma
/// requires). It may rewrite the URI and returns the body to parse.
pub type Prepare = fn(&mut http::request::Parts, Bytes) -> Result<Bytes, Error>;

/// For a [`Prepare`]: a JSON object body without `field`, for which `applies` holds, gets
/// `field` set to `value`. Anything else (not JSON, not an object) is left for ruma to judge.
pub fn default_field(
    body: Bytes,
    field: &str,
    value: serde_json::Value,
    applies: impl Fn(&serde_json::Map<String, serde_json::Value>) -> bool,
) -> Result<Bytes, Error> {
    match serde_json::from_slice::<serde_json::Value>(&body) {
        Ok(serde_json::Value::Object(mut fields)) if !fields.contains_key(field) && applies(&fields) => {
            fields.insert(field.to_owned(), value);
            Ok(serde_json::to_vec(&fields).map_err(Error::internal)?.into())
        }
        _ => Ok(body),
    }
}

impl<T> FromRequest<Arc<Services>> for Ruma<T>
where
    T: IncomingRequest + Send + 'static,
{
    type Rejection = Error;

    async fn from_request(req: Request, services: &Arc<Services>) -> Result<Self, Error> {
        Self::extract(req, services, None).await
    }
}

impl<T> Ruma<T>
where
    T: IncomingRequest + Send + 'static,
{
    /// Authenticates and parses the request; `prepare` sees the body first.
    pub async fn extract(req: Request, services: &Arc<Services>, prepare: Option<Prepare>) -> Result<Self, Error> {
        let (mut parts, body) = req.into_parts();
        let mut path_args: Vec<String> =
            match <RawPathParams as axum::extract::FromRequestParts<Arc<Services>>>::from_request_parts(
                &mut parts, services,
            )
            .await
            {
                Ok(params) => params.iter().map(|(_, v)| v.to_owned()).collect(),
                // A segment that percent-decodes to invalid UTF-8 is the client's error; without
                // this the arguments went missing and the request was parsed short of them.
                Err(axum::extract::rejection::RawPathParamsRejection::InvalidUtf8InPathParam(_)) => {
                    return Err(Error::invalid_param("a path segment is not valid UTF-8"));
                }
                Err(_) => Vec::new(),
            };
        // The router also mounts state endpoints without their `{state_key}` segment (empty
        // state key, with or without the trailing slash); supply the missing argument as "".
        // Only the last segment can be absent, so at most one is added.
        let expected = T::PATH_BUILDER.all_paths().next().map_or(0, |p| p.matches('{').count());
        if path_args.len() + 1 == expected {
            path_args.push(String::new());
        }

        let is_upload = parts.uri.path().contains("/media/") && parts.uri.path().ends_with("/upload")
            || parts.uri.path().contains("/upload/");
        let limit = if is_upload {
            usize::try_from(services.config.max_upload_bytes).unwrap_or(usize::MAX)
        } else {
            MAX_JSON_BODY
        };
        let bytes = axum::body::to_bytes(body, limit)
            .await
            .map_err(|_| Error::TooLarge(format!("request body is larger than {limit} bytes")))?;

        let auth_type = TypeId::of::<T::Authentication>();
        let token = access_token(&parts);
        let auth = if auth_type == TypeId::of::<AccessToken>() {
            let token = token.ok_or(Error::MissingToken)?;
            Some(services.users.authenticate(&token).await?)
        } else if auth_type == TypeId::of::<AccessTokenOptional>() {
            match token {
                Some(token) => Some(services.users.authenticate(&token).await?),
                None => None,
            }
        } else {
            None
        };

        let origin = if auth_type == TypeId::of::<ServerSignatures>() {
            Some(verify_x_matrix(services, &parts, &bytes).await?)
        } else {
            None
        };

        let peer = parts.extensions.get::<ConnectInfo<SocketAddr>>().map(|c| c.0);
        let client_ip = super::ratelimit::client_ip(peer, &parts.headers, &services.config.rate_limits.trusted_proxies);
        let bytes = match prepare {
            Some(prepare) => prepare(&mut parts, bytes)?,
            None => bytes,
        };
        let http_req = http::Request::from_parts(parts, bytes.clone());
        // Parsing is pure, so a panic in it (ruma indexes some bodies unchecked) is the input's
        // fault: the client gets 400 instead of a dropped connection or a 500.
        let parsed =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| T::try_from_http_request(http_req, &path_args)))
                .map_err(|_| Error::bad_json("the request body does not have the shape this endpoint takes"))?;
        let body = parsed.map_err(|e| request_error(e, &bytes))?;
        Ok(Ruma { body, caller: auth, json_body: bytes, origin, client_ip })
    }
}

/// Checks a federation request's `Authorization: X-Matrix ...` header against the origin's keys
/// and returns the origin. Every failure is 401 `M_UNAUTHORIZED`, before the handler runs.
async fn verify_x_matrix(
    services: &Services,
    parts: &http::request::Parts,
    body: &Bytes,
) -> Result<OwnedServerName, Error> {
    let unauthorized = |msg: String| Error::Unauthorized(msg);
    let header = parts
        .headers
        .get(http::header::AUTHORIZATION)
        .ok_or_else(|| unauthorized("this endpoint needs an X-Matrix Authorization header".to_owned()))?;
    let x_matrix = XMatrix::try_from(header).map_err(|e| unauthorized(format!("malformed X-Matrix header: {e}")))?;
    let origin = x_matrix.origin.clone();
    if let Some(destination) = &x_matrix.destination
        && *destination != services.server_name
    {
        return Err(unauthorized(format!(
            "the request is addressed to {destination}, this server is {}",
            services.server_name
        )));
    }
    // The policy gate (DESIGN rule 2): a server that is not in the federation list is refused
    // with 403 before its keys are fetched and before any handler runs. Refusing the claimed
    // origin before the signature is checked is safe: whether or not the claim is true, the
    // request is refused.
    services.policy.federation.check(&origin, "its requests are refused")?;
    let keys = services
        .remote_keys
        .keys_for(&origin)
        .await
        .map_err(|e| unauthorized(format!("cannot get the signing keys of {origin}: {e}")))?;
    let map = PublicKeyMap::from([(origin.to_string(), keys)]);
    let mut request = http::Request::new(body.clone());
    *request.method_mut() = parts.method.clone();
    *request.uri_mut() = parts.uri.clone();
    x_matrix
        .verify_request(&request, &services.server_name, &map)
        .map_err(|e| unauthorized(format!("the X-Matrix signature of {origin} does not verify: {e}")))?;
    // Any verified traffic from a peer means it is up: its outbound queue may flush now.
    let _ = services.peer_seen.send(origin.clone());
    Ok(origin)
}

fn access_token(parts: &http::request::Parts) -> Option<String> {
    if let Some(value) = parts.headers.get(http::header::AUTHORIZATION) {
        return value.to_str().ok().and_then(bearer).map(|t| t.trim().to_owned());
    }
    // The query parameter is deprecated but still sent by some clients.
    parts.uri.query().and_then(|q| {
        q.split('&').filter_map(|kv| kv.split_once('=')).find(|(k, _)| *k == "access_token").map(|(_, v)| v.to_owned())
    })
}

/// The token of a `Bearer` Authorization header. Auth schemes are case-insensitive (RFC 9110).
fn bearer(value: &str) -> Option<&str> {
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then_some(token)
}

/// Distinguishes "this is not JSON at all" from "this JSON does not fit the endpoint".
fn request_error(e: FromHttpRequestError, body: &[u8]) -> Error {
    match e {
        // Query strings, path segments and headers are parameters, not JSON.
        FromHttpRequestError::Deserialization(
            d @ (DeserializationError::Query(_)
            | DeserializationError::Ident(_)
            | DeserializationError::Header(_)
            | DeserializationError::Utf8(_)),
        ) => Error::InvalidParam(format!("invalid request: {d}")),
        FromHttpRequestError::Deserialization(d) => {
            let is_json = body.is_empty() || serde_json::from_slice::<serde::de::IgnoredAny>(body).is_ok();
            if is_json {
                Error::BadJson(format!("invalid request: {d}"))
            } else {
                Error::NotJson("request body is not valid JSON".to_owned())
            }
        }
        FromHttpRequestError::MethodMismatch { .. } => Error::MethodNotAllowed,
        other => Error::InvalidParam(other.to_string()),
    }
}
