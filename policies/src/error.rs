//! The crate's error type.

use std::path::PathBuf;

use crate::diagnostics::Diagnostics;

/// Everything that can go wrong when reading, signing, verifying or accepting a policy.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// Reading a file failed.
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// The input has syntax, schema or semantic errors (all of them are listed).
    #[error("{0}")]
    Invalid(Diagnostics),

    /// A key file or base64 key could not be read.
    #[error("invalid operator key: {0}")]
    BadKey(String),

    /// The federation list carries no `[signature]` table.
    #[error("the federation list is not signed (no [signature] table)")]
    MissingSignature,

    /// The signature value is not 64 bytes of base64.
    #[error("the federation list signature is malformed: {0}")]
    MalformedSignature(String),

    /// The list was signed by a key that is not pinned.
    #[error("the federation list is signed by {key_id}, which is not a pinned operator key (pinned: {})", if pinned.is_empty() { "none".to_string() } else { pinned.join(", ") })]
    UnpinnedKey { key_id: String, pinned: Vec<String> },

    /// The signature does not match the list's content: it was forged or the list was changed
    /// after signing.
    #[error("the federation list signature by {key_id} does not match its content (changed after signing, or forged)")]
    BadSignature { key_id: String },

    /// A list with a version not above the active one (rollback or replay).
    #[error("refusing federation list version {offered}: version {current} is already active (rollback or replay)")]
    Rollback { current: u64, offered: u64 },

    /// A list that had already expired when it arrived.
    #[error("refusing federation list version {version}: it expired at {expires}")]
    ExpiredOnArrival { version: u64, expires: String },

    /// An existing `[signature]` table could not be removed cleanly before re-signing.
    #[error("could not remove the existing [signature] table; remove it by hand and sign again")]
    CannotStripSignature,
}

impl From<Diagnostics> for PolicyError {
    fn from(d: Diagnostics) -> Self {
        PolicyError::Invalid(d)
    }
}
