//! The newest federation list this node ever accepted, kept in its data dir
//! ([`FILE_NAME`]), so that rollback protection holds across restarts.
//!
//! In memory, a reload refuses a version that is not above the active one. Without this file a
//! restart would forget the active version: whoever could put an older, validly signed list in
//! the `federation_list` file (a restored backup, a config management run, an attacker with
//! write access to /etc but not to the operator's key) would bring back members the federation
//! had removed. So the verified text of every accepted list is written here (atomically, with
//! fsync), and at start the node enforces whichever of the two verifies and is newer, and says
//! loudly when the file on disk is the older one.
//!
//! The saved copy is verified again at start against the pinned operator keys: a copy signed by
//! a key that is no longer pinned is ignored (with a warning), since unpinning a key is how an
//! operator revokes what it signed.

use std::{
    io::Write,
    path::{Path, PathBuf},
};

use tocsin_policies::{OperatorPublicKey, PolicyError, VerifiedList, parse_federation_list, verify_parsed};

/// The saved copy's name inside the data dir.
pub const FILE_NAME: &str = "federation_list.accepted.toml";

/// Where a node with data dir `data_dir` keeps its saved copy.
pub fn path_in(data_dir: &Path) -> PathBuf {
    data_dir.join(FILE_NAME)
}

/// A list that verified, with the exact text that did (what gets saved).
pub struct Verified {
    pub list: VerifiedList,
    pub text: String,
}

/// Reads a signed list file and checks its signature, keeping its text.
pub fn read_verified(path: &Path, keys: &[OperatorPublicKey]) -> Result<Verified, PolicyError> {
    let text = std::fs::read_to_string(path).map_err(|source| PolicyError::Io { path: path.to_path_buf(), source })?;
    let parsed = parse_federation_list(&text, Some(path))?;
    let list = verify_parsed(&parsed, keys)?;
    Ok(Verified { list, text })
}

/// The saved copy, if there is one that still verifies. Problems are logged, not fatal: the
/// list file itself still has to verify for the node to start.
pub fn load(path: &Path, keys: &[OperatorPublicKey]) -> Option<Verified> {
    if !path.exists() {
        return None;
    }
    match read_verified(path, keys) {
        Ok(saved) => Some(saved),
        Err(e) => {
            tracing::warn!(
                file = %path.display(),
                error = %e,
                "the saved copy of the last accepted federation list does not verify (unpinned key?); ignoring it"
            );
            None
        }
    }
}

/// Saves `text` as the newest accepted list: written to a temporary file, synced, renamed over
/// the old copy, and the folder synced, so a crash leaves either the old or the new copy.
pub fn save(path: &Path, text: &str) -> std::io::Result<()> {
    let tmp = path.with_extension("toml.tmp");
    {
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(text.as_bytes())?;
        file.sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent()
        && let Ok(dir) = std::fs::File::open(dir)
    {
        // Not every platform can sync a directory; the rename is done either way.
        let _ = dir.sync_all();
    }
    Ok(())
}
