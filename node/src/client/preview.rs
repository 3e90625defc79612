//! URL previews, `GET /_matrix/client/v1/media/preview_url` and the legacy
//! `/_matrix/media/v3/preview_url`: thin over `media::preview`. Off, the node answers as for an
//! endpoint it does not have (404 `M_UNRECOGNIZED`).
// The legacy v3 endpoint is deprecated by the spec but still used by older clients.
#![allow(deprecated)]

use std::sync::Arc;

use ruma::api::client::{authenticated_media as v1, media as legacy};

use crate::{
    Services,
    error::{Error, Result},
    http::Ruma,
};

pub async fn preview(
    s: Arc<Services>,
    req: Ruma<v1::get_media_preview::v1::Request>,
) -> Result<v1::get_media_preview::v1::Response> {
    let auth = req.user()?;
    let ts = req.body.ts.map(|ts| u64::from(ts.0));
    let preview = s.previews.preview(&s.media, auth.user_id.as_str(), &req.body.url, ts).await?;
    v1::get_media_preview::v1::Response::from_serialize(&*preview).map_err(Error::internal)
}

pub async fn legacy_preview(
    s: Arc<Services>,
    req: Ruma<legacy::get_media_preview::v3::Request>,
) -> Result<legacy::get_media_preview::v3::Response> {
    let auth = req.user()?;
    let ts = req.body.ts.map(|ts| u64::from(ts.0));
    let preview = s.previews.preview(&s.media, auth.user_id.as_str(), &req.body.url, ts).await?;
    legacy::get_media_preview::v3::Response::from_serialize(&*preview).map_err(Error::internal)
}
