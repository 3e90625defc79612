//! The separate metrics listener (`[metrics] listen`): plain HTTP serving `/_tocsin/metrics` and
//! `/health` only, for a monitoring network that should not reach the client API.

use std::{net::SocketAddr, sync::Arc};

use axum::{Router, extract::State, routing::get};
use http::HeaderMap;
use tokio::net::TcpListener;

use crate::{Services, error::Result};

async fn metrics(State(services): State<Arc<Services>>, headers: HeaderMap) -> Result<axum::response::Response> {
    // A token, when configured, is wanted here too.
    if services.metrics_token.is_some() {
        super::metrics::check_token(&services, &headers)?;
    }
    super::metrics::render_response(services).await
}

/// Binds `[metrics] listen` if set and serves until the node stops; returns the bound address.
pub async fn spawn_metrics(node: &Arc<Services>) -> anyhow::Result<Option<SocketAddr>> {
    let services = node.clone();
    let Some(addr) = services.config.metrics.listen else { return Ok(None) };
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {addr} (`[metrics] listen`): {e}"))?;
    let bound = listener.local_addr()?;
    let app = Router::new()
        .route("/_tocsin/metrics", get(metrics))
        .route("/health", get(super::health::health))
        .with_state(services);
    node.workers.spawn("metrics-listener", |mut stop| async move {
        let serve = axum::serve(listener, app).with_graceful_shutdown(async move {
            let _ = stop.wait_for(|stop| *stop).await;
        });
        if let Err(e) = serve.await {
            tracing::error!(error = %e, "metrics listener stopped with an error");
        }
    });
    Ok(Some(bound))
}
