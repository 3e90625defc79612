//! Purging media on an admin's request: one file (local or a cached remote one), or the whole
//! cache of remote files. A file on disk is shared by every id with the same sha256, so it is
//! deleted only when no remaining id names it.

use std::collections::BTreeSet;

use tocsin_store::WriteBatch;

use super::{Media, MediaMeta};
use crate::{
    error::{Error, Result},
    store::{trees, utf8},
};

/// What a purge removed.
#[derive(Debug, Default, serde::Serialize)]
pub struct Purged {
    pub ids: usize,
    pub files: usize,
    pub bytes: u64,
}

impl Media {
    /// Purges one media id: `media_id` for a local file, `server/media_id` for a cached remote
    /// one. `None` if there is no such id.
    pub async fn purge(&self, key: &str) -> Result<Option<Purged>> {
        if self.db.get(trees::MEDIA, key.as_bytes())?.is_none() {
            return Ok(None);
        }
        self.purge_where(|k| k == key).await.map(Some)
    }

    /// Purges every cached remote file (of `server` only, if given).
    pub async fn purge_remote(&self, server: Option<&ruma::ServerName>) -> Result<Purged> {
        let prefix = server.map(|s| format!("{s}/"));
        self.purge_where(|k| match &prefix {
            Some(p) => k.starts_with(p.as_str()),
            None => k.contains('/'),
        })
        .await
    }

    async fn purge_where(&self, doomed: impl Fn(&str) -> bool) -> Result<Purged> {
        let rows = self.db.scan_prefix(trees::MEDIA, b"", usize::MAX)?;
        let mut purged = Purged::default();
        let mut batch = WriteBatch::new();
        let mut candidates = BTreeSet::new();
        let mut kept = BTreeSet::new();
        for (k, v) in rows {
            let key = utf8(&k)?;
            let meta: MediaMeta = serde_json::from_slice(&v).map_err(Error::internal)?;
            if doomed(key) {
                batch.remove(trees::MEDIA, k.clone());
                purged.ids += 1;
                candidates.insert(meta.sha256);
            } else {
                kept.insert(meta.sha256);
            }
        }
        // Metadata first: an id never points at a deleted file, even after a crash mid-purge.
        self.db.write(batch).await?;
        for sha256 in candidates.difference(&kept) {
            let path = self.dir.join(sha256);
            if let Ok(meta) = tokio::fs::metadata(&path).await {
                tokio::fs::remove_file(&path).await.map_err(Error::internal)?;
                purged.files += 1;
                purged.bytes += meta.len();
            }
        }
        Ok(purged)
    }
}
