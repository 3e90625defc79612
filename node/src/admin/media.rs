//! `/_tocsin/admin/media`: purge one file, or the cache of other servers' files.

use std::sync::Arc;

use axum::{
    extract::{Path, State},
    response::Response,
};
use bytes::Bytes;
use http::{HeaderMap, Uri};
use serde::Deserialize;

use super::{body, json, require_operator};
use crate::{
    Services,
    error::{Error, Result},
};

/// `DELETE /_tocsin/admin/media/{server}/{media_id}`: the file behind `mxc://server/media_id`.
pub async fn purge(
    State(s): State<Arc<Services>>,
    Path((server, media_id)): Path<(String, String)>,
    headers: HeaderMap,
    uri: Uri,
) -> Result<Response> {
    let caller = require_operator(&s, &headers, &uri)?;
    let key = if server == s.server_name.as_str() { media_id.clone() } else { format!("{server}/{media_id}") };
    let purged = s.media.purge(&key).await?.ok_or_else(|| Error::not_found("no such media"))?;
    tracing::info!(mxc = %format!("mxc://{server}/{media_id}"), files = purged.files, by = %caller.name(), "admin API: media purged");
    json(&purged)
}

#[derive(Deserialize)]
struct PurgeRemote {
    /// Only this server's files; all remote files when absent.
    server: Option<ruma::OwnedServerName>,
}

pub async fn purge_remote(
    State(s): State<Arc<Services>>,
    headers: HeaderMap,
    uri: Uri,
    bytes: Bytes,
) -> Result<Response> {
    let caller = require_operator(&s, &headers, &uri)?;
    let req: PurgeRemote = body(&bytes)?;
    let purged = s.media.purge_remote(req.server.as_deref()).await?;
    tracing::info!(ids = purged.ids, files = purged.files, bytes = purged.bytes, by = %caller.name(), "admin API: remote media cache purged");
    json(&purged)
}
