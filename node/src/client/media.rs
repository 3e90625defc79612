//! Media: upload, and download through the authenticated v1 API and the legacy v3 API.
//!
//! Thumbnails are made here from images (see `media::render`); anything else gets 400, never the
//! original file. Every file goes out with `Content-Security-Policy` and
//! `X-Content-Type-Options: nosniff`, inline only for passive types ([`media::inline_safe`]).
//!
//! Another server's file is fetched over federation only for an authenticated caller (the v1
//! API). The unauthenticated legacy API serves only copies already kept here, and none when the
//! request says `allow_remote=false`: a stranger cannot make this node fetch from its peers.
// The legacy v3 endpoints are deprecated by the spec but still used by older clients.
#![allow(deprecated)]

use std::sync::Arc;

use bytes::BufMut;
use http::{HeaderValue, header};
use ruma::{
    MxcUri, ServerName, UInt,
    api::{
        OutgoingResponse,
        client::{authenticated_media as v1, media as legacy},
        error::IntoHttpError,
    },
    http_headers::{ContentDisposition, ContentDispositionType},
};

use crate::{
    Services,
    error::{Error, Result},
    http::{Action, Ruma},
    media::{
        self, MediaMeta,
        render::Target,
        thumbnails::{self, Thumbnail},
    },
};

pub async fn upload(
    s: Arc<Services>,
    req: Ruma<legacy::create_content::v3::Request>,
) -> Result<legacy::create_content::v3::Response> {
    let auth = req.user()?.clone();
    s.limits.take(Action::Upload, Some(&auth.user_id), req.client_ip)?;
    let body = req.body;
    let media_id = s.media.upload(auth.user_id.as_str(), body.file, body.content_type, body.filename).await?;
    thumbnails::pregenerate(&s, media_id.clone());
    let uri = <&MxcUri>::from(format!("mxc://{}/{media_id}", s.server_name).as_str()).to_owned();
    Ok(legacy::create_content::v3::Response::new(uri))
}

/// A file response with the headers that keep a browser from running it on our origin.
pub struct Hardened<R>(R);

impl<R: OutgoingResponse> OutgoingResponse for Hardened<R> {
    fn try_into_http_response<T: Default + BufMut>(self) -> Result<http::Response<T>, IntoHttpError> {
        let mut response = self.0.try_into_http_response::<T>()?;
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(media::CONTENT_SECURITY_POLICY));
        headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
        Ok(response)
    }
}

/// Where another server's file may come from.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Remote {
    /// From the local copy, else fetched over federation (authenticated callers).
    Fetch,
    /// From the local copy only (the unauthenticated legacy API).
    CachedOnly,
    /// Not at all (`allow_remote=false`).
    Refused,
}

fn legacy_remote(allow_remote: bool) -> Remote {
    if allow_remote { Remote::CachedOnly } else { Remote::Refused }
}

/// The file and what to send with it, or `M_NOT_FOUND`.
async fn fetch(
    s: &Services,
    server: &ServerName,
    media_id: &str,
    filename: Option<String>,
    remote: Remote,
) -> Result<(Vec<u8>, String, ContentDisposition)> {
    let not_found = || Error::not_found("no such media");
    let (meta, bytes): (MediaMeta, Vec<u8>) = if server == s.server_name {
        s.media.get(media_id).await?.ok_or_else(not_found)?
    } else {
        match remote {
            Remote::Fetch => crate::federation::media::remote(s, server, media_id).await?,
            Remote::CachedOnly => s.media.get_remote(server, media_id).await?.ok_or_else(not_found)?,
            Remote::Refused => return Err(not_found()),
        }
    };
    let kind = if media::inline_safe(meta.content_type.as_deref()) {
        ContentDispositionType::Inline
    } else {
        ContentDispositionType::Attachment
    };
    let disposition = ContentDisposition::new(kind).with_filename(filename.or(meta.filename));
    Ok((bytes, meta.content_type.unwrap_or_else(|| "application/octet-stream".into()), disposition))
}

pub async fn download(
    s: Arc<Services>,
    req: Ruma<v1::get_content::v1::Request>,
) -> Result<Hardened<v1::get_content::v1::Response>> {
    req.user()?;
    let (file, content_type, disposition) = fetch(&s, &req.server_name, &req.media_id, None, Remote::Fetch).await?;
    Ok(Hardened(v1::get_content::v1::Response::new(file, content_type, disposition)))
}

pub async fn download_named(
    s: Arc<Services>,
    req: Ruma<v1::get_content_as_filename::v1::Request>,
) -> Result<Hardened<v1::get_content_as_filename::v1::Response>> {
    req.user()?;
    let (file, content_type, disposition) =
        fetch(&s, &req.server_name, &req.media_id, Some(req.filename.clone()), Remote::Fetch).await?;
    Ok(Hardened(v1::get_content_as_filename::v1::Response::new(file, content_type, disposition)))
}

/// The thumbnail for a request, from this node's files, a kept copy of a remote file, or
/// (where `remote` allows) the remote server's thumbnail endpoint.
async fn thumbnail_of(
    s: &Services,
    server: &ServerName,
    media_id: &str,
    target: Target,
    animated: bool,
    remote: Remote,
) -> Result<(Vec<u8>, String, ContentDisposition)> {
    let not_found = || Error::not_found("no such media");
    let thumbnail = if server == s.server_name {
        s.media.thumbnail(media_id, target, animated).await?.ok_or_else(not_found)?
    } else if remote == Remote::Refused {
        return Err(not_found());
    } else if let Some(kept) = s.media.remote_thumbnail(server, media_id, target, animated).await? {
        kept
    } else if let Some(made) = s.media.thumbnail(&format!("{server}/{media_id}"), target, animated).await? {
        made
    } else if remote == Remote::Fetch {
        crate::federation::media::remote_thumbnail(s, server, media_id, target, animated).await?
    } else {
        return Err(not_found());
    };
    let Thumbnail { bytes, content_type } = thumbnail;
    let kind = if media::inline_safe(Some(&content_type)) {
        ContentDispositionType::Inline
    } else {
        ContentDispositionType::Attachment
    };
    Ok((bytes, content_type, ContentDisposition::new(kind).with_filename(Some("thumbnail".to_owned()))))
}

fn target(width: UInt, height: UInt, method: Option<&ruma::media::Method>) -> Result<Target> {
    let side = |v: UInt| u32::try_from(u64::from(v)).map_err(|_| Error::invalid_param("thumbnail size too large"));
    Ok(Target::for_request(side(width)?, side(height)?, method)?)
}

pub async fn thumbnail(
    s: Arc<Services>,
    req: Ruma<v1::get_content_thumbnail::v1::Request>,
) -> Result<Hardened<v1::get_content_thumbnail::v1::Response>> {
    req.user()?;
    let target = target(req.width, req.height, req.method.as_ref())?;
    let animated = req.animated.unwrap_or(false);
    let (file, content_type, disposition) =
        thumbnail_of(&s, &req.server_name, &req.media_id, target, animated, Remote::Fetch).await?;
    Ok(Hardened(v1::get_content_thumbnail::v1::Response::new(file, content_type, disposition)))
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
) -> Result<Hardened<legacy::get_content::v3::Response>> {
    let remote = legacy_remote(req.allow_remote);
    let (file, content_type, disposition) = fetch(&s, &req.server_name, &req.media_id, None, remote).await?;
    let mut response = legacy::get_content::v3::Response::new(file, content_type, disposition);
    response.cross_origin_resource_policy = Some("cross-origin".into());
    Ok(Hardened(response))
}

pub async fn legacy_download_named(
    s: Arc<Services>,
    req: Ruma<legacy::get_content_as_filename::v3::Request>,
) -> Result<Hardened<legacy::get_content_as_filename::v3::Response>> {
    let remote = legacy_remote(req.allow_remote);
    let (file, content_type, disposition) =
        fetch(&s, &req.server_name, &req.media_id, Some(req.filename.clone()), remote).await?;
    let mut response = legacy::get_content_as_filename::v3::Response::new(file, content_type, disposition);
    response.cross_origin_resource_policy = Some("cross-origin".into());
    Ok(Hardened(response))
}

pub async fn legacy_thumbnail(
    s: Arc<Services>,
    req: Ruma<legacy::get_content_thumbnail::v3::Request>,
) -> Result<Hardened<legacy::get_content_thumbnail::v3::Response>> {
    let remote = legacy_remote(req.allow_remote);
    let target = target(req.width, req.height, req.method.as_ref())?;
    let animated = req.animated.unwrap_or(false);
    let (file, content_type, disposition) =
        thumbnail_of(&s, &req.server_name, &req.media_id, target, animated, remote).await?;
    let mut response = legacy::get_content_thumbnail::v3::Response::new(file, content_type, disposition);
    response.cross_origin_resource_policy = Some("cross-origin".into());
    Ok(Hardened(response))
}

pub async fn legacy_config(
    s: Arc<Services>,
    req: Ruma<legacy::get_media_config::v3::Request>,
) -> Result<legacy::get_media_config::v3::Response> {
    req.user()?;
    Ok(legacy::get_media_config::v3::Response::new(UInt::try_from(s.media.max_bytes).unwrap_or(UInt::MAX)))
}
