//! Where alerts come from. Every source hands documents to [`take_document`], which parses and
//! validates them and passes valid alerts to the [`Ingest`](crate::ingest::Ingest).

pub mod folder;
pub mod hook;
pub mod poll;
pub mod push;

use chrono::Utc;
use tracing::warn;

use crate::cap::{self, CapError};
use crate::ingest::{Ingest, Outcome};
use crate::json::JsonError;
use crate::metrics::Metrics;
use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum TakeError {
    /// The document is not valid CAP 1.2: quarantine it.
    #[error("{0}")]
    Invalid(#[from] CapError),
    /// The JSON document cannot be taken as an alert: quarantine it.
    #[error("{0}")]
    InvalidJson(#[from] JsonError),
    /// The bridge could not record it: keep it and try again.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Checks the signature (where `source` requires one), parses one CAP document from `source`
/// and takes it in.
pub fn take_document(ingest: &Ingest, source: &str, name: &str, text: &str) -> Result<Outcome, TakeError> {
    // A source that requires signatures takes nothing unsigned or badly signed.
    let checked = match ingest.verifier(source) {
        Some(v) => v.verify(text).and_then(|()| cap::parse(text)),
        None => cap::parse(text),
    };
    let alert = match checked {
        Ok(a) => a,
        Err(e) => {
            Metrics::inc(&ingest.metrics().quarantined);
            warn!(source, document = name, "invalid CAP refused: {e}");
            return Err(e.into());
        }
    };
    Ok(ingest.alert(source, &alert, Utc::now())?)
}

/// Takes an alert read from JSON (`what` parses it); a document that is refused counts as
/// quarantined.
pub fn take_json(
    ingest: &Ingest,
    source: &str,
    name: &str,
    what: impl FnOnce() -> Result<cap::Alert, JsonError>,
) -> Result<Outcome, TakeError> {
    let alert = match what() {
        Ok(a) => a,
        Err(e) => {
            Metrics::inc(&ingest.metrics().quarantined);
            warn!(source, document = name, "JSON alert refused: {e}");
            return Err(e.into());
        }
    };
    Ok(ingest.alert(source, &alert, Utc::now())?)
}
