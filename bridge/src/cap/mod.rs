//! CAP 1.2 (OASIS Common Alerting Protocol): the typed model, its parser and validator
//! ([`parse`]) and its writer ([`write`]).
//!
//! Every element of the standard is here: `alert`, `info` (one per language), `resource` and
//! `area` with `polygon`, `circle`, `geocode`, `altitude` and `ceiling`. Keyword fields are
//! enums; dates keep the sender's offset.

mod enums;
pub mod parse;
pub mod signature;
pub mod write;
pub mod xml;

use chrono::{DateTime, FixedOffset};

pub use enums::{Category, Certainty, Keyword, MsgType, ResponseType, Scope, Severity, Status, Urgency};
pub use parse::{CapError, parse};

/// The CAP 1.2 XML namespace.
pub const NS: &str = "urn:oasis:names:tc:emergency:cap:1.2";
/// The XML-DSig namespace (`<Signature>` may follow the alert's other elements).
pub const DSIG_NS: &str = "http://www.w3.org/2000/09/xmldsig#";

/// A `valueName` / `value` pair (`eventCode`, `parameter`, `geocode`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NamedValue {
    pub value_name: String,
    pub value: String,
}

/// One `<alert>`.
#[derive(Debug, Clone, PartialEq)]
pub struct Alert {
    pub identifier: String,
    pub sender: String,
    pub sent: DateTime<FixedOffset>,
    pub status: Status,
    pub msg_type: MsgType,
    pub source: Option<String>,
    pub scope: Scope,
    pub restriction: Option<String>,
    pub addresses: Option<String>,
    pub codes: Vec<String>,
    pub note: Option<String>,
    /// `sender,identifier,sent` triples of earlier messages this one updates or cancels.
    pub references: Vec<Reference>,
    pub incidents: Option<String>,
    pub infos: Vec<Info>,
    /// Whether the document carried an XML-DSig `<Signature>`.
    pub signed: bool,
}

/// One entry of `<references>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    pub sender: String,
    pub identifier: String,
    pub sent: String,
}

/// One `<info>`: the alert in one language.
#[derive(Debug, Clone, PartialEq)]
pub struct Info {
    pub language: String,
    pub categories: Vec<Category>,
    pub event: String,
    pub response_types: Vec<ResponseType>,
    pub urgency: Urgency,
    pub severity: Severity,
    pub certainty: Certainty,
    pub audience: Option<String>,
    pub event_codes: Vec<NamedValue>,
    pub effective: Option<DateTime<FixedOffset>>,
    pub onset: Option<DateTime<FixedOffset>>,
    pub expires: Option<DateTime<FixedOffset>>,
    pub sender_name: Option<String>,
    pub headline: Option<String>,
    pub description: Option<String>,
    pub instruction: Option<String>,
    pub web: Option<String>,
    pub contact: Option<String>,
    pub parameters: Vec<NamedValue>,
    pub resources: Vec<Resource>,
    pub areas: Vec<Area>,
}

/// One `<resource>`: a file that goes with the info.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resource {
    pub resource_desc: String,
    pub mime_type: String,
    pub size: Option<u64>,
    pub uri: Option<String>,
    pub deref_uri: Option<String>,
    pub digest: Option<String>,
}

/// Points and circles are the policy crate's, so alert areas and room areas are one type.
pub use tocsin_policies::{GeoCircle as Circle, GeoPoint as Point};

/// One `<area>`.
#[derive(Debug, Clone, PartialEq)]
pub struct Area {
    pub area_desc: String,
    /// Closed rings of at least four points.
    pub polygons: Vec<Vec<Point>>,
    pub circles: Vec<Circle>,
    pub geocodes: Vec<NamedValue>,
    /// Feet above mean sea level.
    pub altitude: Option<f64>,
    pub ceiling: Option<f64>,
}

impl Alert {
    /// The key CAP uses to refer to a message: `sender,identifier,sent` (as written).
    pub fn reference_key(&self) -> String {
        format!("{},{},{}", self.sender, self.identifier, cap_datetime(&self.sent))
    }

    /// The latest `expires` over all infos (an alert matters until its last info expires);
    /// `None` when some info has no expiry.
    pub fn expires(&self) -> Option<DateTime<FixedOffset>> {
        let mut latest = None;
        for info in &self.infos {
            let e = info.expires?;
            latest = Some(latest.map_or(e, |l: DateTime<FixedOffset>| l.max(e)));
        }
        latest
    }

    /// Whether this is a drill or not meant for the public: Exercise, Test, Draft, System.
    pub fn is_not_actual(&self) -> bool {
        self.status != Status::Actual
    }
}

impl Reference {
    pub fn key(&self) -> String {
        format!("{},{},{}", self.sender, self.identifier, self.sent)
    }
}

/// A date as CAP writes it: seconds, explicit offset, never `Z`.
pub fn cap_datetime(t: &DateTime<FixedOffset>) -> String {
    t.format("%Y-%m-%dT%H:%M:%S%:z").to_string()
}

#[cfg(test)]
mod signature_tests;
#[cfg(test)]
mod tests;
