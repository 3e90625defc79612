//! Thumbnails as a service: made from the kept original (local uploads and copies of remote
//! files), cached on disk next to the originals, and the spec's recommended sizes made when an
//! image is uploaded. Another server's thumbnails, fetched over federation, are cached too.

use std::{path::PathBuf, sync::Arc};

use ruma::ServerName;
use sha2::{Digest, Sha256};

use super::{
    Media, MediaMeta,
    render::{self, Rendered, Target, ThumbnailError},
};
use crate::{
    Services,
    error::{Error, Result},
};

/// A thumbnail, or the original where it already fits the box.
#[derive(Debug, Clone)]
pub struct Thumbnail {
    pub bytes: Vec<u8>,
    pub content_type: String,
}

/// Cached files carry their type in the extension.
const KINDS: [(&str, &str); 3] = [("jpg", "image/jpeg"), ("png", "image/png"), ("gif", "image/gif")];

impl From<ThumbnailError> for Error {
    fn from(e: ThumbnailError) -> Self {
        match e {
            ThumbnailError::BadSize => Error::InvalidParam(e.to_string()),
            ThumbnailError::NotAnImage | ThumbnailError::Undecodable(_) => Error::BadRequest(e.to_string()),
            ThumbnailError::Encode(_) => Error::internal(e),
        }
    }
}

impl Media {
    fn thumbnail_dir(&self) -> PathBuf {
        self.dir.join("thumbnails")
    }

    /// The cache file stem of a thumbnail of `origin` (a sha256, or a hash of a remote id).
    fn thumbnail_stem(&self, origin: &str, target: Target, animated: bool) -> PathBuf {
        self.thumbnail_dir().join(format!("{origin}-{}", target.key(animated)))
    }

    async fn cached(&self, stem: &std::path::Path) -> Result<Option<Thumbnail>> {
        for (ext, content_type) in KINDS {
            match tokio::fs::read(stem.with_extension(ext)).await {
                Ok(bytes) => return Ok(Some(Thumbnail { bytes, content_type: content_type.to_owned() })),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(Error::internal(e)),
            }
        }
        Ok(None)
    }

    /// Writes a cache file whole (a reader never sees half of one). Not synced: a lost cache
    /// file is made again.
    async fn keep(&self, stem: &std::path::Path, bytes: &[u8], content_type: &str) -> Result<()> {
        let ext = KINDS.iter().find(|(_, t)| *t == content_type).map(|(e, _)| *e);
        let Some(ext) = ext else { return Ok(()) };
        let path = stem.with_extension(ext);
        let tmp = stem.with_extension(format!("tmp{}", crate::users::random_string(6)));
        tokio::fs::create_dir_all(self.thumbnail_dir()).await.map_err(Error::internal)?;
        tokio::fs::write(&tmp, bytes).await.map_err(Error::internal)?;
        tokio::fs::rename(&tmp, &path).await.map_err(Error::internal)
    }

    /// The thumbnail of a file kept here (`key`: a local media id, or `server/id` for a copy
    /// of a remote file), or `None` when there is no such file.
    pub async fn thumbnail(&self, key: &str, target: Target, animated: bool) -> Result<Option<Thumbnail>> {
        let Some((meta, bytes)) = self.get(key).await? else { return Ok(None) };
        let stem = self.thumbnail_stem(&meta.sha256, target, animated);
        if let Some(found) = self.cached(&stem).await? {
            return Ok(Some(found));
        }
        let (rendered, bytes) = tokio::task::spawn_blocking(move || (render::render(&bytes, target, animated), bytes))
            .await
            .map_err(Error::internal)?;
        Ok(Some(match rendered? {
            Rendered::Original => original(&meta, bytes),
            Rendered::Image { bytes, content_type } => {
                self.keep(&stem, &bytes, content_type).await?;
                Thumbnail { bytes, content_type: content_type.to_owned() }
            }
        }))
    }

    /// Makes the recommended sizes of a new upload, from one decode. Not an image: nothing.
    pub async fn pregenerate(&self, media_id: &str) -> Result<usize> {
        let Some((meta, bytes)) = self.get(media_id).await? else { return Ok(0) };
        let rendered = tokio::task::spawn_blocking(move || render::render_all(&bytes, &render::RECOMMENDED))
            .await
            .map_err(Error::internal)?;
        let rendered = match rendered {
            Ok(rendered) => rendered,
            Err(ThumbnailError::NotAnImage | ThumbnailError::Undecodable(_)) => return Ok(0),
            Err(e) => return Err(e.into()),
        };
        let mut made = 0;
        for (target, rendered) in rendered {
            if let Rendered::Image { bytes, content_type } = rendered {
                self.keep(&self.thumbnail_stem(&meta.sha256, target, false), &bytes, content_type).await?;
                made += 1;
            }
        }
        Ok(made)
    }

    fn remote_stem(&self, server: &ServerName, media_id: &str, target: Target, animated: bool) -> PathBuf {
        // Hashed: the id comes from a request path and must not shape a file name.
        let origin: String =
            Sha256::digest(format!("{server}/{media_id}")).iter().map(|b| format!("{b:02x}")).collect();
        self.thumbnail_stem(&format!("remote-{origin}"), target, animated)
    }

    /// A thumbnail of another server's file fetched earlier.
    pub async fn remote_thumbnail(
        &self,
        server: &ServerName,
        media_id: &str,
        target: Target,
        animated: bool,
    ) -> Result<Option<Thumbnail>> {
        self.cached(&self.remote_stem(server, media_id, target, animated)).await
    }

    /// Keeps a thumbnail another server sent, if it is an image this node would serve.
    pub async fn keep_remote_thumbnail(
        &self,
        server: &ServerName,
        media_id: &str,
        target: Target,
        animated: bool,
        thumbnail: &Thumbnail,
    ) -> Result<()> {
        let stem = self.remote_stem(server, media_id, target, animated);
        self.keep(&stem, &thumbnail.bytes, &thumbnail.content_type).await
    }
}

/// The original, already small enough, typed by what its bytes are (render decoded it as an
/// image), not by what the uploader claimed.
fn original(meta: &MediaMeta, bytes: Vec<u8>) -> Thumbnail {
    let content_type = image::guess_format(&bytes)
        .map(|f| f.to_mime_type().to_owned())
        .ok()
        .or_else(|| meta.content_type.clone())
        .unwrap_or_else(|| "application/octet-stream".into());
    Thumbnail { bytes, content_type }
}

/// After an upload: the recommended sizes, made in the background so the upload answers at once.
pub fn pregenerate(services: &Arc<Services>, media_id: String) {
    let s = services.clone();
    services.workers.spawn("thumbnails", |_stop| async move {
        match s.media.pregenerate(&media_id).await {
            Ok(made) => tracing::debug!(%media_id, made, "thumbnails made"),
            Err(e) => tracing::warn!(%media_id, error = %e, "thumbnails not made"),
        }
    });
}
