//! `GET /_tocsin/admin/alarms` (the open alarms) and `GET /_tocsin/admin/alarms/{id}` (one
//! alarm, by its block id or event id): the JSON `tocsin-node alarm list|status` prints.

use std::sync::Arc;

use axum::{
    extract::{Path, State},
    response::{IntoResponse, Response},
};
use http::{HeaderMap, Uri};

use crate::{
    Services,
    error::{Error, Result},
};

fn json(value: &impl serde::Serialize) -> Result<Response> {
    let body = serde_json::to_string(value).map_err(Error::internal)?;
    Ok(([(http::header::CONTENT_TYPE, "application/json")], body).into_response())
}

pub async fn list(State(services): State<Arc<Services>>, headers: HeaderMap, uri: Uri) -> Result<Response> {
    super::require_admin(&services, &headers, &uri)?;
    json(&serde_json::json!({ "alarms": services.alarms.open()? }))
}

pub async fn status(
    State(services): State<Arc<Services>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    uri: Uri,
) -> Result<Response> {
    super::require_admin(&services, &headers, &uri)?;
    json(&services.alarms.status(&id)?)
}
