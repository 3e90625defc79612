//! The node's error type. Every variant maps to a Matrix error code and HTTP status, so a bad
//! request always gets a spec-shaped answer and never a panic.

use axum::response::{IntoResponse, Response};
use bytes::BytesMut;
use http::StatusCode;
use ruma::api::{
    OutgoingResponse,
    client::uiaa::{UiaaInfo, UiaaResponse},
    error::{ErrorBody, ErrorKind, StandardErrorBody},
};
use tocsin_store::StoreError;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    BadJson(String),
    #[error("{0}")]
    NotJson(String),
    #[error("missing access token")]
    MissingToken,
    #[error("unknown or expired access token")]
    UnknownToken,
    /// An access token that expired: the client refreshes it (or logs in again on the same
    /// device) and keeps its session (`soft_logout: true`).
    #[error("the access token expired; refresh it")]
    SoftLogout,
    #[error("{0}")]
    NotFound(String),
    #[error("unrecognized request")]
    Unrecognized,
    #[error("method not allowed on this endpoint")]
    MethodNotAllowed,
    #[error("{0}")]
    TooLarge(String),
    #[error("{0}")]
    InvalidParam(String),
    /// A request the spec refuses with 400 and no more specific code (`M_UNKNOWN`).
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    MissingParam(String),
    #[error("user id already taken")]
    UserInUse,
    /// A password the node's policy refuses (`password_min_length`).
    #[error("{0}")]
    WeakPassword(String),
    #[error("{0}")]
    InvalidUsername(String),
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    BadState(String),
    /// A sliding sync position this server no longer (or never) knew: the client starts over.
    #[error("unknown or expired sliding sync position")]
    UnknownPos,
    #[error("room alias already taken")]
    RoomInUse,
    #[error("unsupported room version")]
    UnsupportedRoomVersion,
    /// A remote server cannot join: it does not support the room's version.
    #[error("the room's version {0} is not among the versions the server supports")]
    IncompatibleRoomVersion(ruma::RoomVersionId),
    #[error("wrong backup version, current is {0:?}")]
    WrongRoomKeysVersion(Option<String>),
    /// A rate limit: try again after the wait (429 `M_LIMIT_EXCEEDED` with `retry_after_ms` and
    /// a `Retry-After` header).
    #[error("too many requests; try again in {} ms", .0.as_millis())]
    LimitExceeded(std::time::Duration),
    #[error("user-interactive authentication required")]
    Uiaa(Box<UiaaInfo>),
    /// A federation peer could not be reached (discovery, connection, TLS or timeout).
    #[error("server unreachable: {0}")]
    Unreachable(String),
    /// A federation peer answered with a Matrix error; its status and code are kept.
    #[error("remote server: {0}")]
    Remote(Box<ruma::api::error::Error>),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("internal error: {0}")]
    Internal(String),
}

impl Error {
    pub fn internal(e: impl std::fmt::Display) -> Self {
        Error::Internal(e.to_string())
    }

    pub fn forbidden(msg: impl Into<String>) -> Self {
        Error::Forbidden(msg.into())
    }

    pub fn not_found(msg: impl Into<String>) -> Self {
        Error::NotFound(msg.into())
    }

    pub fn bad_json(msg: impl std::fmt::Display) -> Self {
        Error::BadJson(msg.to_string())
    }

    pub fn invalid_param(msg: impl std::fmt::Display) -> Self {
        Error::InvalidParam(msg.to_string())
    }

    fn status_and_kind(&self) -> (StatusCode, ErrorKind) {
        use ErrorKind as K;
        match self {
            Error::Forbidden(_) => (StatusCode::FORBIDDEN, K::Forbidden),
            Error::BadJson(_) => (StatusCode::BAD_REQUEST, K::BadJson),
            Error::NotJson(_) => (StatusCode::BAD_REQUEST, K::NotJson),
            Error::MissingToken => (StatusCode::UNAUTHORIZED, K::MissingToken),
            Error::UnknownToken => {
                (StatusCode::UNAUTHORIZED, K::UnknownToken(ruma::api::error::UnknownTokenErrorData::new()))
            }
            Error::SoftLogout => {
                let mut data = ruma::api::error::UnknownTokenErrorData::new();
                data.soft_logout = true;
                (StatusCode::UNAUTHORIZED, K::UnknownToken(data))
            }
            Error::NotFound(_) => (StatusCode::NOT_FOUND, K::NotFound),
            Error::Unrecognized => (StatusCode::NOT_FOUND, K::Unrecognized),
            Error::MethodNotAllowed => (StatusCode::METHOD_NOT_ALLOWED, K::Unrecognized),
            Error::TooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, K::TooLarge),
            Error::InvalidParam(_) => (StatusCode::BAD_REQUEST, K::InvalidParam),
            Error::BadRequest(_) => (StatusCode::BAD_REQUEST, K::Unknown),
            Error::MissingParam(_) => (StatusCode::BAD_REQUEST, K::MissingParam),
            Error::UserInUse => (StatusCode::BAD_REQUEST, K::UserInUse),
            Error::WeakPassword(_) => (StatusCode::BAD_REQUEST, K::WeakPassword),
            Error::InvalidUsername(_) => (StatusCode::BAD_REQUEST, K::InvalidUsername),
            Error::Unauthorized(_) => (StatusCode::UNAUTHORIZED, K::Unauthorized),
            Error::BadState(_) => (StatusCode::BAD_REQUEST, K::BadState),
            Error::UnknownPos => (StatusCode::BAD_REQUEST, K::UnknownPos),
            Error::RoomInUse => (StatusCode::BAD_REQUEST, K::RoomInUse),
            Error::UnsupportedRoomVersion => (StatusCode::BAD_REQUEST, K::UnsupportedRoomVersion),
            Error::IncompatibleRoomVersion(v) => (
                StatusCode::BAD_REQUEST,
                K::IncompatibleRoomVersion(ruma::api::error::IncompatibleRoomVersionErrorData::new(v.clone())),
            ),
            Error::WrongRoomKeysVersion(current) => (
                StatusCode::FORBIDDEN,
                K::WrongRoomKeysVersion(ruma::api::error::WrongRoomKeysVersionErrorData::new(
                    current.clone().unwrap_or_default(),
                )),
            ),
            Error::LimitExceeded(wait) => {
                let mut data = ruma::api::error::LimitExceededErrorData::new();
                data.retry_after = Some(ruma::api::error::RetryAfter::Delay(*wait));
                (StatusCode::TOO_MANY_REQUESTS, K::LimitExceeded(data))
            }
            Error::Uiaa(_) => (StatusCode::UNAUTHORIZED, K::Forbidden),
            Error::Unreachable(_) => (StatusCode::BAD_GATEWAY, K::Unknown),
            Error::Remote(e) => (e.status_code, e.error_kind().cloned().unwrap_or(K::Unknown)),
            Error::Store(_) | Error::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, K::Unknown),
        }
    }
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        if let Error::Store(e) = &self {
            tracing::error!(error = %e, "storage error");
        } else if let Error::Internal(e) = &self {
            tracing::error!(error = %e, "internal error");
        }
        let response = match self {
            Error::Uiaa(info) => UiaaResponse::AuthResponse(*info).try_into_http_response::<BytesMut>(),
            other => {
                let (status, kind) = other.status_and_kind();
                let message = match &other {
                    // Don't leak storage internals to clients; the log has them.
                    Error::Store(_) | Error::Internal(_) => "internal server error".to_owned(),
                    e => e.to_string(),
                };
                ruma::api::error::Error::new(status, ErrorBody::Standard(StandardErrorBody::new(kind, message)))
                    .try_into_http_response::<BytesMut>()
            }
        };
        match response {
            Ok(r) => r.map(|b| axum::body::Body::from(b.freeze())),
            Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
        }
    }
}
