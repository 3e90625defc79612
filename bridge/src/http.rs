//! The bridge's HTTP side: pushed CAP (`POST /cap/<source>`), JSON webhooks
//! (`POST /hook/<source>`), the CAP-out Atom feed
//! (`GET /cap/feed.atom`, `GET /cap/alerts/<identifier>.xml`) and `GET /metrics`.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::json;
use tokio::sync::watch;

use crate::config::SourceKind;
use crate::ingest::Ingest;
use crate::json::template::AlertTemplate;
use crate::metrics::Metrics;
use crate::sources::{TakeError, hook, push, take_document};
use crate::store::Store;

/// Secrets of the `cap_post` sources, by name.
pub type PushSources = HashMap<String, (Option<String>, Option<String>)>;

/// A `json_post` source: its secrets and compiled template.
pub struct Hook {
    pub hmac_secret: Option<String>,
    pub bearer_secret: Option<String>,
    pub template: Arc<AlertTemplate>,
}

pub struct HttpState {
    pub ingest: Arc<Ingest>,
    pub store: Arc<Store>,
    pub metrics: Arc<Metrics>,
    pub push: PushSources,
    pub hooks: HashMap<String, Hook>,
    pub data_dir: PathBuf,
    pub base_url: String,
}

pub fn push_sources(sources: &[crate::config::Source]) -> PushSources {
    sources
        .iter()
        .filter_map(|s| match &s.kind {
            SourceKind::CapPost { hmac_secret, bearer_secret } => {
                Some((s.name.clone(), (hmac_secret.clone(), bearer_secret.clone())))
            }
            _ => None,
        })
        .collect()
}

/// A `json_post` source whose template does not compile.
#[derive(Debug, thiserror::Error)]
#[error("source {source_name:?}: {error}")]
pub struct HookError {
    pub source_name: String,
    pub error: crate::json::template::TemplateError,
}

/// The `json_post` sources with their templates compiled.
pub fn hook_sources(sources: &[crate::config::Source]) -> Result<HashMap<String, Hook>, HookError> {
    let mut out = HashMap::new();
    for s in sources {
        if let SourceKind::JsonPost { hmac_secret, bearer_secret } = &s.kind {
            let template = AlertTemplate::compile(&s.template_fields())
                .map_err(|error| HookError { source_name: s.name.clone(), error })?;
            let hook = Hook {
                hmac_secret: hmac_secret.clone(),
                bearer_secret: bearer_secret.clone(),
                template: Arc::new(template),
            };
            out.insert(s.name.clone(), hook);
        }
    }
    Ok(out)
}

pub fn router(state: Arc<HttpState>) -> Router {
    Router::new()
        .route("/cap/feed.atom", get(feed))
        .route("/cap/alerts/{file}", get(alert_doc))
        .route("/cap/{source}", post(push_cap))
        .route("/hook/{source}", post(push_json))
        .route("/metrics", get(metrics))
        .with_state(state)
}

/// Serves until `shutdown`.
pub async fn serve(listener: tokio::net::TcpListener, state: Arc<HttpState>, mut shutdown: watch::Receiver<bool>) {
    let app = router(state);
    let stop = async move {
        let _ = shutdown.changed().await;
    };
    if let Err(e) = axum::serve(listener, app).with_graceful_shutdown(stop).await {
        tracing::error!("bridge HTTP server stopped: {e}");
    }
}

pub async fn bind(addr: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(addr).await
}

fn json_body(v: serde_json::Value) -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], v.to_string())
}

fn internal(e: impl std::fmt::Display) -> Response {
    tracing::error!("bridge HTTP: {e}");
    (StatusCode::INTERNAL_SERVER_ERROR, "internal error").into_response()
}

async fn feed(State(s): State<Arc<HttpState>>) -> Response {
    match s.store.feed(200) {
        Ok(entries) => ([(header::CONTENT_TYPE, "application/atom+xml")], crate::capout::atom(&entries, &s.base_url))
            .into_response(),
        Err(e) => internal(e),
    }
}

async fn alert_doc(State(s): State<Arc<HttpState>>, Path(file): Path<String>) -> Response {
    let Some(identifier) = file.strip_suffix(".xml") else { return StatusCode::NOT_FOUND.into_response() };
    match s.store.feed_by_identifier(identifier) {
        Ok(Some(entry)) => ([(header::CONTENT_TYPE, "application/cap+xml")], entry.xml).into_response(),
        Ok(None) => StatusCode::NOT_FOUND.into_response(),
        Err(e) => internal(e),
    }
}

async fn metrics(State(s): State<Arc<HttpState>>) -> Response {
    match s.store.outbox_len() {
        Ok(n) => ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], s.metrics.render(n)).into_response(),
        Err(e) => internal(e),
    }
}

async fn push_cap(
    State(s): State<Arc<HttpState>>,
    Path(source): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some((hmac, bearer)) = s.push.get(&source) else { return StatusCode::NOT_FOUND.into_response() };
    if !push::authorized(&headers, &body, hmac.as_deref(), bearer.as_deref()) {
        return (StatusCode::UNAUTHORIZED, json_body(json!({"error": "missing or wrong secret or signature"})))
            .into_response();
    }
    let Ok(text) = std::str::from_utf8(&body) else {
        return (StatusCode::BAD_REQUEST, json_body(json!({"error": "the body is not UTF-8"}))).into_response();
    };
    let state = s.clone();
    let text = text.to_owned();
    let src = source.clone();
    let result = tokio::task::spawn_blocking(move || take_document(&state.ingest, &src, "POST", &text)).await;
    match result {
        Ok(Ok(outcome)) => {
            (StatusCode::ACCEPTED, json_body(json!({"outcome": format!("{outcome:?}")}))).into_response()
        }
        Ok(Err(TakeError::Invalid(e))) => {
            if let Err(io) = push::quarantine(&s.data_dir, &source, &body, &e.to_string()) {
                tracing::error!("cannot quarantine a pushed document: {io}");
            }
            (StatusCode::BAD_REQUEST, json_body(json!({"error": e.to_string(), "line": e.line, "element": e.element})))
                .into_response()
        }
        // Pushed CAP is parsed as CAP only.
        Ok(Err(TakeError::InvalidJson(e))) => internal(e),
        Ok(Err(TakeError::Store(e))) => internal(e),
        Err(e) => internal(e),
    }
}

/// `POST /hook/<source>`: a JSON document mapped by the source's template. Answers 202, 400
/// with `{"error", "at"}` (the body is kept in `data_dir/quarantine/`), or 401.
async fn push_json(
    State(s): State<Arc<HttpState>>,
    Path(source): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some(h) = s.hooks.get(&source) else { return StatusCode::NOT_FOUND.into_response() };
    if !push::authorized(&headers, &body, h.hmac_secret.as_deref(), h.bearer_secret.as_deref()) {
        return (StatusCode::UNAUTHORIZED, json_body(json!({"error": "missing or wrong secret or signature"})))
            .into_response();
    }
    let (state, template, src, doc) = (s.clone(), h.template.clone(), source.clone(), body.clone());
    let span = tracing::info_span!("hook", source);
    let result =
        tokio::task::spawn_blocking(move || span.in_scope(|| hook::take(&state.ingest, &template, &src, &doc))).await;
    match result {
        Ok(Ok(outcome)) => {
            (StatusCode::ACCEPTED, json_body(json!({"outcome": format!("{outcome:?}")}))).into_response()
        }
        Ok(Err(TakeError::InvalidJson(e))) => {
            if let Err(io) = push::quarantine_as(&s.data_dir, &source, "json", &body, &e.to_string()) {
                tracing::error!("cannot quarantine a posted document: {io}");
            }
            (StatusCode::BAD_REQUEST, json_body(json!({"error": e.to_string(), "at": e.at}))).into_response()
        }
        Ok(Err(e)) => internal(e),
        Err(e) => internal(e),
    }
}
