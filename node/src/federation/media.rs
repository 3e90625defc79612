//! Federation media: this node's files for other servers (`/_matrix/federation/v1/media/*`), and
//! other servers' files for local clients, fetched once and kept.

use std::sync::Arc;

use ruma::{
    ServerName,
    api::federation::authenticated_media::{
        Content, ContentMetadata, FileOrLocation, get_content, get_content_thumbnail,
    },
    http_headers::{ContentDisposition, ContentDispositionType},
};

use crate::{
    Services,
    error::{Error, Result},
    http::Ruma,
    media::MediaMeta,
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

/// Thumbnails are not made yet: the original file is sent (clients scale it).
pub async fn thumbnail(
    s: Arc<Services>,
    req: Ruma<get_content_thumbnail::v1::Request>,
) -> Result<get_content_thumbnail::v1::Response> {
    req.origin()?;
    Ok(get_content_thumbnail::v1::Response::new(ContentMetadata::new(), local(&s, &req.media_id).await?))
}

/// A remote server's file for a local client: from the local copy, or fetched over federation
/// and kept (media ids are immutable, so the copy never goes stale).
pub async fn remote(s: &Services, server: &ServerName, media_id: &str) -> Result<(MediaMeta, Vec<u8>)> {
    if let Some(found) = s.media.get_remote(server, media_id).await? {
        return Ok(found);
    }
    let response = s.federation_client.send(server, get_content::v1::Request::new(media_id.to_owned())).await?;
    let content = match response.content {
        FileOrLocation::File(content) => content,
        FileOrLocation::Location(_) => {
            return Err(Error::not_found("the remote server redirects media elsewhere; not followed"));
        }
        #[allow(unreachable_patterns)]
        _ => return Err(Error::not_found("unknown media response")),
    };
    let filename = content.content_disposition.as_ref().and_then(|d| d.filename.clone());
    s.media.store_remote(server, media_id, content.file, content.content_type, filename).await
}
