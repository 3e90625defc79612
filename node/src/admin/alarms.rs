//! `GET /_tocsin/admin/alarms` (the open alarms) and `GET /_tocsin/admin/alarms/{id}` (one
//! alarm, by its block id or event id): the JSON `tocsin-node alarm list|status` prints.

use std::sync::Arc;

use axum::{
    extract::{Path, State},
    response::Response,
};
use http::{HeaderMap, Uri};

use crate::{Services, error::Result};

pub async fn list(State(services): State<Arc<Services>>, headers: HeaderMap, uri: Uri) -> Result<Response> {
    super::require_operator(&services, &headers, &uri)?;
    super::json(&serde_json::json!({ "alarms": services.alarms.open()? }))
}

pub async fn status(
    State(services): State<Arc<Services>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    uri: Uri,
) -> Result<Response> {
    super::require_operator(&services, &headers, &uri)?;
    super::json(&services.alarms.status(&id)?)
}
