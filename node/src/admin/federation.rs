//! `GET /_tocsin/admin/federation/backlog`: what the outbound sender still owes each peer
//! (DESIGN rule 3: the backlog per peer is visible in the admin API).

use std::sync::Arc;

use axum::{
    extract::State,
    response::{IntoResponse, Response},
};
use http::{HeaderMap, Uri};
use serde::Serialize;

use crate::{
    Services,
    error::{Error, Result},
    federation::sender::Backlog,
};

#[derive(Debug, Serialize)]
pub struct BacklogView {
    pub destinations: Vec<DestinationView>,
    /// The federation list in force (version, expiry, warnings); absent without a list.
    pub federation_list: Option<crate::policy::federation::ListState>,
}

/// One destination's backlog as JSON.
#[derive(Debug, Serialize)]
pub struct DestinationView {
    pub destination: String,
    pub pdus: usize,
    pub edus: usize,
    /// Consecutive failed transactions since the last success.
    pub failures: u32,
    /// Milliseconds until the next attempt, when backing off.
    pub next_retry_in_ms: Option<u64>,
    pub last_error: Option<String>,
    /// Items dropped unsent because the destination is not in the federation list.
    pub dropped: u64,
}

impl From<Backlog> for DestinationView {
    fn from(b: Backlog) -> Self {
        Self {
            destination: b.destination.to_string(),
            pdus: b.pdus,
            edus: b.edus,
            failures: b.failures,
            next_retry_in_ms: b.next_retry_in.map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
            last_error: b.last_error,
            dropped: b.dropped,
        }
    }
}

pub async fn backlog(State(services): State<Arc<Services>>, headers: HeaderMap, uri: Uri) -> Result<Response> {
    super::require_admin(&services, &headers, &uri)?;
    let sender = services.sender.clone();
    let backlog = tokio::task::spawn_blocking(move || sender.backlog()).await.map_err(Error::internal)??;
    let view = BacklogView {
        destinations: backlog.into_iter().map(DestinationView::from).collect(),
        federation_list: services.policy.federation.state(),
    };
    let body = serde_json::to_string(&view).map_err(Error::internal)?;
    Ok(([(http::header::CONTENT_TYPE, "application/json")], body).into_response())
}
