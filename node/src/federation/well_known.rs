//! `GET /.well-known/matrix/server` on the client port: delegates a server name without a port
//! (`riverton.example`) to where the federation listener really is (`federation_delegate`, e.g.
//! `matrix.riverton.example:8448`). The reverse proxy on port 443 of the server name's host
//! passes this path to the node like the client API.

use std::sync::Arc;

use axum::{
    extract::State,
    response::{IntoResponse, Response},
};

use crate::{Services, error::Error};

pub async fn server(State(services): State<Arc<Services>>) -> Response {
    match &services.config.federation_delegate {
        Some(delegate) => {
            let body = serde_json::json!({ "m.server": delegate });
            // Peers cache the answer; a day is the spec's suggested default.
            (
                [(http::header::CONTENT_TYPE, "application/json"), (http::header::CACHE_CONTROL, "max-age=86400")],
                body.to_string(),
            )
                .into_response()
        }
        None => Error::not_found("this server does not delegate federation").into_response(),
    }
}
