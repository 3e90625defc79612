//! Federation media: this node's files for other servers (`/_matrix/federation/v1/media/*`), and
//! other servers' files for local clients, fetched once and kept.

use std::sync::Arc;

use ruma::{
    ServerName,
    api::federation::authenticated_media::{
        Content, ContentMetadata, FileOrLocation, get_content, get_content_thumbnail,
    },
    http_headers::{ContentDisposition, ContentDispositionType},
    media::Method,
};

use crate::{
    Services,
    error::{Error, Result},
    http::Ruma,
    media::{MediaMeta, render::Target, thumbnails::Thumbnail},
};

fn local_file(meta: MediaMeta, bytes: Vec<u8>) -> FileOrLocation {
    let disposition = ContentDisposition::new(ContentDispositionType::Attachment).with_filename(meta.filename.clone());
    let content_type = meta.content_type.unwrap_or_else(|| "application/octet-stream".to_owned());
    FileOrLocation::File(Content::new(bytes, content_type, disposition))
}

async fn local(s: &Services, media_id: &str) -> Result<FileOrLocation> {
    let (meta, bytes) = s.media.get(media_id).await?.ok_or_else(|| Error::not_found("no such media"))?;
    Ok(local_file(meta, bytes))
}

pub async fn download(s: Arc<Services>, req: Ruma<get_content::v1::Request>) -> Result<get_content::v1::Response> {
    req.origin()?;
    Ok(get_content::v1::Response::new(ContentMetadata::new(), local(&s, &req.media_id).await?))
}

/// A thumbnail of one of this node's files, made as for local clients.
pub async fn thumbnail(
    s: Arc<Services>,
    req: Ruma<get_content_thumbnail::v1::Request>,
) -> Result<get_content_thumbnail::v1::Response> {
    req.origin()?;
    let side =
        |v: ruma::UInt| u32::try_from(u64::from(v)).map_err(|_| Error::invalid_param("thumbnail size too large"));
    let target = Target::for_request(side(req.width)?, side(req.height)?, req.method.as_ref())?;
    let thumbnail = s
        .media
        .thumbnail(&req.media_id, target, req.animated.unwrap_or(false))
        .await?
        .ok_or_else(|| Error::not_found("no such media"))?;
    let disposition = ContentDisposition::new(ContentDispositionType::Inline).with_filename(Some("thumbnail".into()));
    let file = FileOrLocation::File(Content::new(thumbnail.bytes, thumbnail.content_type, disposition));
    Ok(get_content_thumbnail::v1::Response::new(ContentMetadata::new(), file))
}

/// Another server's thumbnail for a local client, fetched over federation and kept. Only an
/// image comes back to the client: a server that answers with anything else is refused.
pub async fn remote_thumbnail(
    s: &Services,
    server: &ServerName,
    media_id: &str,
    target: Target,
    animated: bool,
) -> Result<Thumbnail> {
    let method = if target.crop { Method::Crop } else { Method::Scale };
    let mut request = get_content_thumbnail::v1::Request::new(
        media_id.to_owned(),
        ruma::UInt::from(target.width),
        ruma::UInt::from(target.height),
    );
    request.method = Some(method);
    request.animated = Some(animated);
    let response = s.federation_client.send(server, request).await?;
    let content = file_of(response.content)?;
    let Ok(format) = image::guess_format(&content.file) else {
        return Err(Error::BadRequest(format!("{server} sent a thumbnail that is not an image")));
    };
    let thumbnail = Thumbnail { bytes: content.file, content_type: format.to_mime_type().to_owned() };
    s.media.keep_remote_thumbnail(server, media_id, target, animated, &thumbnail).await?;
    Ok(thumbnail)
}

/// The file in a remote server's media answer; redirects are not followed.
fn file_of(content: FileOrLocation) -> Result<Content> {
    match content {
        FileOrLocation::File(content) => Ok(content),
        FileOrLocation::Location(_) => {
            Err(Error::not_found("the remote server redirects media elsewhere; not followed"))
        }
        #[allow(unreachable_patterns)]
        _ => Err(Error::not_found("unknown media response")),
    }
}

/// A remote server's file for a local client: from the local copy, or fetched over federation
/// and kept (media ids are immutable, so the copy never goes stale).
pub async fn remote(s: &Services, server: &ServerName, media_id: &str) -> Result<(MediaMeta, Vec<u8>)> {
    if let Some(found) = s.media.get_remote(server, media_id).await? {
        return Ok(found);
    }
    let response = s.federation_client.send(server, get_content::v1::Request::new(media_id.to_owned())).await?;
    let content = file_of(response.content)?;
    let filename = content.content_disposition.as_ref().and_then(|d| d.filename.clone());
    s.media.store_remote(server, media_id, content.file, content.content_type, filename).await
}
