//! JSON documents POSTed to `/hook/<source>` by sensors and other systems (river gauges, smoke
//! detectors), authenticated as pushed CAP is, and mapped to an alert by the source's template
//! ([`crate::json::template`]).

use chrono::Utc;
use serde_json::Value;

use super::{TakeError, take_json};
use crate::ingest::{Ingest, Outcome};
use crate::json::JsonError;
use crate::json::template::AlertTemplate;

/// Parses `body`, renders the template with it and takes the alert in.
pub fn take(ingest: &Ingest, template: &AlertTemplate, source: &str, body: &[u8]) -> Result<Outcome, TakeError> {
    take_json(ingest, source, "POST", || {
        let doc: Value = serde_json::from_slice(body).map_err(|e| JsonError::syntax(&e))?;
        template.render(&doc, Utc::now())
    })
}
