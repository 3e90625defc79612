//! Media: uploads stored on disk named by their sha256 (so identical files are stored once),
//! with their metadata in the store. Thumbnails ([`render`], cached by [`thumbnails`]) sit
//! beside them. URL previews ([`preview`]) fetch pages from the operator's allow list and keep
//! their images here.

pub mod preview;
pub mod render;
pub mod thumbnails;

mod purge;

use std::path::PathBuf;

pub use purge::Purged;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tocsin_store::WriteBatch;

use crate::{
    error::{Error, Result},
    store::{Db, trees},
};

/// The `Content-Security-Policy` of every file served to clients: whatever a browser is made to
/// open from our origin runs sandboxed, with no scripts and nothing fetched from elsewhere.
pub const CONTENT_SECURITY_POLICY: &str =
    "sandbox; default-src 'none'; script-src 'none'; style-src 'unsafe-inline'; media-src 'self'; object-src 'self'";

/// Whether a file of this content type may be shown inline (`Content-Disposition: inline`);
/// every other type is served as an attachment, so active content (HTML, SVG, XML, scripts,
/// PDF) never renders on our origin. Decided on the MIME essence: lower-cased, parameters such
/// as `; charset=utf-8` dropped. The allow-list: raster images (PNG, JPEG, GIF, WebP, APNG,
/// AVIF, BMP; not SVG, which can carry script), any audio and video type, `text/plain`,
/// `text/csv` and `application/json`.
pub fn inline_safe(content_type: Option<&str>) -> bool {
    let Some(content_type) = content_type else { return false };
    let essence = content_type.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    const SAFE: &[&str] = &[
        "image/png",
        "image/jpeg",
        "image/gif",
        "image/webp",
        "image/apng",
        "image/avif",
        "image/bmp",
        "text/plain",
        "text/csv",
        "application/json",
    ];
    SAFE.contains(&essence.as_str())
        || ["audio/", "video/"]
            .iter()
            .any(|prefix| essence.strip_prefix(prefix).is_some_and(|sub| !sub.is_empty() && !sub.contains('/')))
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MediaMeta {
    pub sha256: String,
    pub content_type: Option<String>,
    pub filename: Option<String>,
    pub size: u64,
    pub uploader: String,
}

pub struct Media {
    db: Db,
    dir: PathBuf,
    pub max_bytes: u64,
}

impl Media {
    pub fn new(db: Db, dir: PathBuf, max_bytes: u64) -> std::io::Result<Self> {
        std::fs::create_dir_all(&dir)?;
        Ok(Self { db, dir, max_bytes })
    }

    /// Stores `bytes` and returns the new media id. The file is synced before the id is given out.
    pub async fn upload(
        &self,
        uploader: &str,
        bytes: Vec<u8>,
        content_type: Option<String>,
        filename: Option<String>,
    ) -> Result<String> {
        if bytes.len() as u64 > self.max_bytes {
            return Err(Error::TooLarge(format!("upload is larger than {} bytes", self.max_bytes)));
        }
        let size = bytes.len() as u64;
        let sha256 = self.write_file(&bytes).await?;
        let media_id = crate::users::random_string(24);
        let meta = MediaMeta { sha256, content_type, filename, size, uploader: uploader.to_owned() };
        let mut batch = WriteBatch::new();
        batch.insert(trees::MEDIA, media_id.as_bytes().to_vec(), Db::to_json(&meta)?);
        self.db.write(batch).await?;
        Ok(media_id)
    }

    /// Writes the bytes under their sha256 (synced, once) and returns the hash.
    async fn write_file(&self, bytes: &[u8]) -> Result<String> {
        let sha256: String = Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect();
        let path = self.dir.join(&sha256);
        if tokio::fs::metadata(&path).await.is_err() {
            let bytes = bytes.to_vec();
            let tmp = self.dir.join(format!("{sha256}.tmp{}", crate::users::random_string(6)));
            tokio::task::spawn_blocking(move || -> std::io::Result<()> {
                use std::io::Write;
                let mut f = std::fs::File::create(&tmp)?;
                f.write_all(&bytes)?;
                f.sync_all()?;
                std::fs::rename(&tmp, &path)
            })
            .await
            .map_err(Error::internal)?
            .map_err(Error::internal)?;
        }
        Ok(sha256)
    }

    /// A copy of another server's file, kept under `server/media_id` (local ids have no `/`).
    pub async fn get_remote(&self, server: &ruma::ServerName, media_id: &str) -> Result<Option<(MediaMeta, Vec<u8>)>> {
        self.get(&format!("{server}/{media_id}")).await
    }

    pub async fn store_remote(
        &self,
        server: &ruma::ServerName,
        media_id: &str,
        bytes: Vec<u8>,
        content_type: Option<String>,
        filename: Option<String>,
    ) -> Result<(MediaMeta, Vec<u8>)> {
        if bytes.len() as u64 > self.max_bytes {
            return Err(Error::TooLarge(format!("remote file is larger than {} bytes", self.max_bytes)));
        }
        let sha256 = self.write_file(&bytes).await?;
        let meta = MediaMeta { sha256, content_type, filename, size: bytes.len() as u64, uploader: server.to_string() };
        let mut batch = WriteBatch::new();
        batch.insert(trees::MEDIA, format!("{server}/{media_id}").into_bytes(), Db::to_json(&meta)?);
        self.db.write(batch).await?;
        Ok((meta, bytes))
    }

    pub async fn get(&self, media_id: &str) -> Result<Option<(MediaMeta, Vec<u8>)>> {
        let Some(meta) = self.db.get_json::<MediaMeta>(trees::MEDIA, media_id.as_bytes())? else {
            return Ok(None);
        };
        let bytes = tokio::fs::read(self.dir.join(&meta.sha256)).await.map_err(Error::internal)?;
        Ok(Some((meta, bytes)))
    }
}

#[cfg(test)]
mod tests {
    use super::inline_safe;

    #[test]
    fn only_passive_types_are_inline() {
        for t in [
            "image/png",
            "IMAGE/PNG",
            "image/jpeg; charset=utf-8",
            "audio/ogg",
            "video/mp4",
            "text/plain; charset=utf-8",
        ] {
            assert!(inline_safe(Some(t)), "{t}");
        }
        for t in
            ["image/svg+xml", "image/svg+xml; charset=utf-8", "Image/SVG+XML", "text/html", "application/xhtml+xml"]
        {
            assert!(!inline_safe(Some(t)), "{t}");
        }
        assert!(!inline_safe(Some("text/html ; charset=utf-8")));
        assert!(!inline_safe(Some("audio/")));
        assert!(!inline_safe(None));
    }
}
