//! `GET /health`: liveness and readiness for a load balancer or a supervisor, without a token.
//! The node is ready when its store answers a read.

use std::sync::Arc;

use axum::{extract::State, response::IntoResponse};
use http::StatusCode;

use crate::{Services, store::trees};

pub async fn health(State(services): State<Arc<Services>>) -> axum::response::Response {
    let (status, store) = match services.db.get(trees::META, b"health") {
        Ok(_) => (StatusCode::OK, "ok"),
        Err(e) => {
            tracing::error!(error = %e, "health check: the store does not answer");
            (StatusCode::SERVICE_UNAVAILABLE, "unavailable")
        }
    };
    let state = if status == StatusCode::OK { "ok" } else { "unavailable" };
    let body = serde_json::json!({ "status": state, "store": store, "server_name": services.server_name });
    (status, [(http::header::CONTENT_TYPE, "application/json")], body.to_string()).into_response()
}
