//! Backup and restore of a node's data: the store (a consistent snapshot taken while the node
//! runs), the media files, the signing key, the TLS files the node made and the federation list
//! it last accepted (every file at the top of the data directory).
//!
//! `POST /_tocsin/admin/backup {"destination": "/abs/path"}` (what `tocsin-node backup DEST`
//! calls) writes a backup directory on the node's host; `tocsin-node restore SRC` puts one back
//! into a stopped node's data directory. The store is copied first and the media after, so
//! every file an event of the snapshot names is in the copy (purges are the rare exception).

use std::{
    path::{Path, PathBuf},
    sync::Arc,
};

use axum::{extract::State, response::Response};
use bytes::Bytes;
use http::{HeaderMap, Uri};
use serde::{Deserialize, Serialize};

use super::{body, json, require_operator};
use crate::{
    Config, Services,
    error::{Error, Result},
    store::schema,
};

pub const MANIFEST: &str = "tocsin-backup.json";

/// What a backup holds; written last, so a backup without it is incomplete.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Manifest {
    pub server_name: String,
    pub engine: String,
    pub schema_version: u32,
    pub tocsin_version: String,
    pub created_ms: u64,
    pub store_bytes: u64,
    pub media_files: u64,
    pub took_ms: u64,
}

#[derive(Deserialize)]
struct BackupRequest {
    destination: PathBuf,
}

pub async fn endpoint(State(s): State<Arc<Services>>, headers: HeaderMap, uri: Uri, bytes: Bytes) -> Result<Response> {
    let caller = require_operator(&s, &headers, &uri)?;
    let req: BackupRequest = body(&bytes)?;
    let services = s.clone();
    let dest = req.destination.clone();
    let manifest = tokio::task::spawn_blocking(move || take(&services, &dest)).await.map_err(Error::internal)??;
    tracing::info!(destination = %req.destination.display(), took_ms = manifest.took_ms, by = %caller.name(), "backup taken");
    json(&manifest)
}

/// Takes a backup into `dest` (absolute; must not exist yet, or be an empty directory).
pub fn take(s: &Services, dest: &Path) -> Result<Manifest> {
    let started = std::time::Instant::now();
    if !dest.is_absolute() {
        return Err(Error::invalid_param("the destination must be an absolute path on the node's host"));
    }
    if dest.exists() && std::fs::read_dir(dest).map_err(Error::internal)?.next().is_some() {
        return Err(Error::invalid_param(format!("{} exists and is not empty", dest.display())));
    }
    std::fs::create_dir_all(dest)
        .map_err(|e| Error::invalid_param(format!("cannot create {}: {e}", dest.display())))?;
    let schema_version = schema::effective(&s.db)?;
    s.db.backup(&dest.join("store"))?;
    let data = &s.config.data_dir;
    let media_files = copy_dir(&data.join("media"), &dest.join("media")).map_err(Error::internal)?;
    for entry in std::fs::read_dir(data).map_err(Error::internal)? {
        let entry = entry.map_err(Error::internal)?;
        if entry.file_type().map_err(Error::internal)?.is_file() {
            copy_synced(&entry.path(), &dest.join(entry.file_name())).map_err(Error::internal)?;
        }
    }
    let manifest = Manifest {
        server_name: s.server_name.to_string(),
        engine: s.db.engine_name().to_owned(),
        schema_version,
        tocsin_version: env!("CARGO_PKG_VERSION").to_owned(),
        created_ms: crate::users::now_ms(),
        store_bytes: super::metrics::sources::dir_size(&dest.join("store")),
        media_files,
        took_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
    };
    let text = serde_json::to_vec_pretty(&manifest).map_err(Error::internal)?;
    write_synced(&dest.join(MANIFEST), &text).map_err(Error::internal)?;
    std::fs::File::open(dest).and_then(|d| d.sync_all()).map_err(Error::internal)?;
    Ok(manifest)
}

fn copy_synced(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::copy(from, to)?;
    std::fs::File::open(to)?.sync_all()
}

fn write_synced(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut f = std::fs::File::create(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

/// Copies a directory tree (files synced); returns the number of files. A missing source is an
/// empty tree.
fn copy_dir(from: &Path, to: &Path) -> std::io::Result<u64> {
    let Ok(entries) = std::fs::read_dir(from) else { return Ok(0) };
    std::fs::create_dir_all(to)?;
    let mut files = 0;
    for entry in entries {
        let entry = entry?;
        let kind = entry.file_type()?;
        let target = to.join(entry.file_name());
        if kind.is_dir() {
            files += copy_dir(&entry.path(), &target)?;
        } else if kind.is_file() {
            // Half-written uploads (`<sha>.tmpXXXX`) are not media yet.
            if entry.file_name().to_string_lossy().contains(".tmp") {
                continue;
            }
            copy_synced(&entry.path(), &target)?;
            files += 1;
        }
    }
    std::fs::File::open(to)?.sync_all()?;
    Ok(files)
}

#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    #[error("{0} is not a complete Tocsin backup (no {MANIFEST}): {1}")]
    NoManifest(PathBuf, std::io::Error),
    #[error("{0}: the manifest is unreadable: {1}")]
    BadManifest(PathBuf, serde_json::Error),
    #[error("the backup is of {backup}, this config is for {config}")]
    OtherServer { backup: String, config: String },
    #[error("the backup's store is {backup}, this config says `store = \"{config}\"`")]
    OtherEngine { backup: String, config: String },
    #[error("the backup is schema version {0}, newer than this tocsin-node ({current})", current = schema::CURRENT)]
    Newer(u32),
    #[error(
        "{0} already holds a store; stop the node and move the data directory aside (or pass --force to have \
         restore move it to {1})"
    )]
    Occupied(PathBuf, PathBuf),
    #[error("restore: {0}")]
    Io(#[from] std::io::Error),
}

/// Restores the backup in `src` into the config's data directory (the node must be stopped).
/// With `force`, an existing data directory is moved aside, not deleted. Returns the manifest.
pub fn restore(config: &Config, src: &Path, force: bool) -> std::result::Result<Manifest, RestoreError> {
    let manifest_path = src.join(MANIFEST);
    let text = std::fs::read(&manifest_path).map_err(|e| RestoreError::NoManifest(src.to_owned(), e))?;
    let manifest: Manifest = serde_json::from_slice(&text).map_err(|e| RestoreError::BadManifest(manifest_path, e))?;
    if manifest.server_name != config.server_name {
        return Err(RestoreError::OtherServer { backup: manifest.server_name, config: config.server_name.clone() });
    }
    if manifest.engine != config.store.to_string() {
        return Err(RestoreError::OtherEngine { backup: manifest.engine, config: config.store.to_string() });
    }
    if manifest.schema_version > schema::CURRENT {
        return Err(RestoreError::Newer(manifest.schema_version));
    }
    let data = &config.data_dir;
    if data.join("store").exists() {
        let aside = data.with_extension(format!("before-restore-{}", crate::users::now_ms()));
        if !force {
            return Err(RestoreError::Occupied(data.clone(), aside));
        }
        std::fs::rename(data, &aside)?;
        tracing::info!(moved_to = %aside.display(), "the old data directory was moved aside");
    }
    std::fs::create_dir_all(data)?;
    copy_dir_all(src, data)?;
    // The manifest describes the backup, not a data directory.
    let _ = std::fs::remove_file(data.join(MANIFEST));
    Ok(manifest)
}

fn copy_dir_all(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_dir_all(&entry.path(), &target)?;
        } else {
            copy_synced(&entry.path(), &target)?;
        }
    }
    std::fs::File::open(to)?.sync_all()
}
