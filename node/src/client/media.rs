//! Media: upload, and download through the authenticated v1 API and the legacy v3 API.
//!
//! Thumbnails are not generated yet: the thumbnail endpoints return the original file, which
//! every client scales itself. Media on other servers needs federation and is `M_NOT_FOUND`.
// The legacy v3 endpoints are deprecated by the spec but still used by older clients.
#![allow(deprecated)]

use std::sync::Arc;

use ruma::{
    MxcUri, ServerName, UInt,
    api::client::{authenticated_media as v1, media as legacy},
    http_headers::{ContentDisposition, ContentDispositionType},
};

use crate::{
    Services,
    error::{Error, Result},
    http::{Action, Ruma},
    media::MediaMeta,
};

pub async fn upload(
    s: Arc<Services>,
    req: Ruma<legacy::create_content::v3::Request>,
) -> Result<legacy::create_content::v3::Response> {
    let auth = req.user()?.clone();
    s.limits.take(Action::Upload, Some(&auth.user_id), req.client_ip)?;
    let body = req.body;
    let media_id = s.media.upload(auth.user_id.as_str(), body.file, body.content_type, body.filename).await?;
    let uri = <&MxcUri>::from(format!("mxc://{}/{media_id}", s.server_name).as_str()).to_owned();
    Ok(legacy::create_content::v3::Response::new(uri))
}

/// The file and what to send with it, or `M_NOT_FOUND`.
async fn fetch(
    s: &Services,
    server: &ServerName,
    media_id: &str,
    filename: Option<String>,
) -> Result<(Vec<u8>, Option<String>, ContentDisposition)> {
    let (meta, bytes): (MediaMeta, Vec<u8>) = if server == s.server_name {
        s.media.get(media_id).await?.ok_or_else(|| Error::not_found("no such media"))?
    } else {
        crate::federation::media::remote(s, server, media_id).await?
    };
    // Active content (HTML, SVG, scripts) is never shown inline: that would run it on our origin.
    let inline = meta.content_type.as_deref().is_some_and(|t| {
        t.starts_with("image/") && t != "image/svg+xml"
            || t.starts_with("video/")
            || t.starts_with("audio/")
            || t == "text/plain"
    });
    let kind = if inline { ContentDispositionType::Inline } else { ContentDispositionType::Attachment };
    let disposition = ContentDisposition::new(kind).with_filename(filename.or(meta.filename));
    Ok((bytes, meta.content_type, disposition))
}

pub async fn download(
    s: Arc<Services>,
    req: Ruma<v1::get_content::v1::Request>,
) -> Result<v1::get_content::v1::Response> {
    req.user()?;
    let (file, content_type, disposition) = fetch(&s, &req.server_name, &req.media_id, None).await?;
    Ok(v1::get_content::v1::Response::new(
        file,
        content_type.unwrap_or_else(|| "application/octet-stream".into()),
        disposition,
    ))
}

pub async fn download_named(
    s: Arc<Services>,
    req: Ruma<v1::get_content_as_filename::v1::Request>,
) -> Result<v1::get_content_as_filename::v1::Response> {
    req.user()?;
    let (file, content_type, disposition) =
        fetch(&s, &req.server_name, &req.media_id, Some(req.filename.clone())).await?;
    Ok(v1::get_content_as_filename::v1::Response::new(
        file,
        content_type.unwrap_or_else(|| "application/octet-stream".into()),
        disposition,
    ))
}

pub async fn thumbnail(
    s: Arc<Services>,
    req: Ruma<v1::get_content_thumbnail::v1::Request>,
) -> Result<v1::get_content_thumbnail::v1::Response> {
    req.user()?;
    let (file, content_type, disposition) = fetch(&s, &req.server_name, &req.media_id, None).await?;
    Ok(v1::get_content_thumbnail::v1::Response::new(
        file,
        content_type.unwrap_or_else(|| "application/octet-stream".into()),
        disposition,
    ))
}

pub async fn config(
    s: Arc<Services>,
    req: Ruma<v1::get_media_config::v1::Request>,
) -> Result<v1::get_media_config::v1::Response> {
    req.user()?;
    Ok(v1::get_media_config::v1::Response::new(UInt::try_from(s.media.max_bytes).unwrap_or(UInt::MAX)))
}

pub async fn legacy_download(
    s: Arc<Services>,
    req: Ruma<legacy::get_content::v3::Request>,
) -> Result<legacy::get_content::v3::Response> {
    let (file, content_type, disposition) = fetch(&s, &req.server_name, &req.media_id, None).await?;
    let mut response = legacy::get_content::v3::Response::new(
        file,
        content_type.unwrap_or_else(|| "application/octet-stream".into()),
        disposition,
    );
    response.cross_origin_resource_policy = Some("cross-origin".into());
    Ok(response)
}

pub async fn legacy_download_named(
    s: Arc<Services>,
    req: Ruma<legacy::get_content_as_filename::v3::Request>,
) -> Result<legacy::get_content_as_filename::v3::Response> {
    let (file, content_type, disposition) =
        fetch(&s, &req.server_name, &req.media_id, Some(req.filename.clone())).await?;
    let mut response = legacy::get_content_as_filename::v3::Response::new(
        file,
        content_type.unwrap_or_else(|| "application/octet-stream".into()),
        disposition,
    );
    response.cross_origin_resource_policy = Some("cross-origin".into());
    Ok(response)
}

pub async fn legacy_thumbnail(
    s: Arc<Services>,
    req: Ruma<legacy::get_content_thumbnail::v3::Request>,
) -> Result<legacy::get_content_thumbnail::v3::Response> {
    let (file, content_type, disposition) = fetch(&s, &req.server_name, &req.media_id, None).await?;
    let mut response = legacy::get_content_thumbnail::v3::Response::new(
        file,
        content_type.unwrap_or_else(|| "application/octet-stream".into()),
        disposition,
    );
    response.cross_origin_resource_policy = Some("cross-origin".into());
    Ok(response)
}

pub async fn legacy_config(
    s: Arc<Services>,
    req: Ruma<legacy::get_media_config::v3::Request>,
) -> Result<legacy::get_media_config::v3::Response> {
    req.user()?;
    Ok(legacy::get_media_config::v3::Response::new(UInt::try_from(s.media.max_bytes).unwrap_or(UInt::MAX)))
}
