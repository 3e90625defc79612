//! A watched folder: CAP files dropped into it are taken in, then moved to `done/`; invalid
//! ones go to `quarantine/` with a `.error.txt` beside them saying what is wrong and where.
//! The folder is polled (no inotify dependency; the interval is configurable). Writers should
//! create files under a leading-dot name and rename them, so half-written files are skipped.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tracing::{error, warn};

use super::{TakeError, take_document};
use crate::ingest::Ingest;

pub async fn run(
    name: String,
    dir: PathBuf,
    interval: Duration,
    ingest: Arc<Ingest>,
    mut shutdown: watch::Receiver<bool>,
) {
    loop {
        let (n, d, i) = (name.clone(), dir.clone(), ingest.clone());
        // File I/O and parsing off the async threads.
        if let Err(e) = tokio::task::spawn_blocking(move || scan(&n, &d, &i)).await {
            error!(source = name, "folder scan panicked: {e}");
        }
        tokio::select! {
            _ = shutdown.changed() => return,
            _ = tokio::time::sleep(interval) => {}
        }
    }
}

/// One pass over the folder, oldest name first.
pub fn scan(source: &str, dir: &Path, ingest: &Ingest) {
    let mut files = match candidates(dir) {
        Ok(f) => f,
        Err(e) => {
            warn!(source, dir = %dir.display(), "cannot read the drop folder: {e}");
            return;
        }
    };
    files.sort();
    for path in files {
        let file_name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let text = match std::fs::read(&path) {
            Ok(bytes) => String::from_utf8(bytes),
            Err(e) => {
                warn!(source, file = file_name, "cannot read: {e}");
                continue;
            }
        };
        let result = match text {
            Ok(text) => take_document(ingest, source, &file_name, &text),
            Err(_) => Err(TakeError::Invalid(crate::cap::CapError {
                line: 1,
                element: "document".into(),
                message: "not UTF-8 text".into(),
            })),
        };
        let moved = match result {
            Ok(_) => move_to(dir, "done", &path, None),
            Err(e @ (TakeError::Invalid(_) | TakeError::InvalidJson(_))) => {
                move_to(dir, "quarantine", &path, Some(&format!("{file_name}: {e}\n")))
            }
            Err(TakeError::Store(e)) => {
                error!(source, file = file_name, "cannot record the alert, will retry: {e}");
                continue;
            }
        };
        if let Err(e) = moved {
            error!(source, file = file_name, "cannot move the file out of the drop folder: {e}");
        }
    }
}

fn candidates(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        if entry.file_type()?.is_file() && !name.to_string_lossy().starts_with('.') {
            out.push(entry.path());
        }
    }
    Ok(out)
}

fn move_to(dir: &Path, sub: &str, path: &Path, note: Option<&str>) -> std::io::Result<()> {
    let target_dir = dir.join(sub);
    std::fs::create_dir_all(&target_dir)?;
    let name = path.file_name().unwrap_or_default();
    let mut target = target_dir.join(name);
    // Never overwrite an earlier file of the same name.
    let mut n = 1;
    while target.exists() {
        target = target_dir.join(format!("{}.{n}", name.to_string_lossy()));
        n += 1;
    }
    std::fs::rename(path, &target)?;
    if let Some(note) = note {
        let mut err_name = target.clone().into_os_string();
        err_name.push(".error.txt");
        std::fs::write(err_name, note)?;
    }
    Ok(())
}
