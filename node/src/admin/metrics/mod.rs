//! `GET /_tocsin/metrics`: Prometheus text format (0.0.4): requests by endpoint and status with
//! latency histograms, the store (commit latency, size), federation (the list in force, backlog
//! and failures per peer), and the process. Other areas add theirs through
//! [`Services::metrics`] (see [`crate::metrics`]).
//!
//! Access: the `[metrics]` bearer token, or a separate listener (`[metrics] listen`). Never a
//! user's access token: a scraper needs no account. Not "loopback only": the client port usually
//! sits behind a reverse proxy on the same host, so every request comes from loopback. Not public
//! either: the member list and the backlog per peer tell an outsider which agencies are
//! unreachable during a crisis.

pub mod sources;

use std::sync::Arc;

use axum::{
    extract::State,
    response::{IntoResponse, Response},
};
use http::HeaderMap;
use subtle::ConstantTimeEq;

use crate::{
    Services,
    error::{Error, Result},
};

pub async fn metrics(State(services): State<Arc<Services>>, headers: HeaderMap) -> Result<Response> {
    check_token(&services, &headers)?;
    render_response(services).await
}

/// The scrape itself, once access is settled.
pub async fn render_response(services: Arc<Services>) -> Result<Response> {
    let body = tokio::task::spawn_blocking(move || sources::render_all(&services)).await.map_err(Error::internal)??;
    Ok(([(http::header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], body).into_response())
}

/// The configured metrics token must come as `Authorization: Bearer`. Without one configured,
/// the client port does not serve metrics (only a `[metrics] listen` address does).
pub fn check_token(services: &Services, headers: &HeaderMap) -> Result<()> {
    let Some(expected) = services.metrics_token.as_deref() else {
        return Err(Error::forbidden("metrics are off on this port: set `[metrics] token` or `[metrics] listen`"));
    };
    let given = headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .ok_or(Error::MissingToken)?;
    if bool::from(given.as_bytes().ct_eq(expected.as_bytes())) {
        Ok(())
    } else {
        Err(Error::forbidden("wrong metrics token"))
    }
}
