//! `GET /_tocsin/admin/reports`: what users reported (`POST /rooms/{roomId}/report/{eventId}`),
//! oldest first.

use std::sync::Arc;

use axum::{
    extract::{Query, State},
    response::Response,
};
use http::{HeaderMap, Uri};
use serde::Deserialize;

use crate::{Services, error::Result};

#[derive(Deserialize)]
pub struct Params {
    limit: Option<usize>,
}

pub async fn list(
    State(s): State<Arc<Services>>,
    Query(params): Query<Params>,
    headers: HeaderMap,
    uri: Uri,
) -> Result<Response> {
    super::require_operator(&s, &headers, &uri)?;
    let limit = params.limit.unwrap_or(100).clamp(1, 1000);
    super::json(&serde_json::json!({ "reports": s.rooms.reports(limit)? }))
}
