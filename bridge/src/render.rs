//! An alert as an alarm message every client can read: headline, severity, area, instruction
//! and expiry in `body` and `formatted_body`, plus the `org.tocsin.alarm` block.

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use tocsin_events::{AlarmBlock, AlarmLevel};

use crate::cap::{Alert, Info, Keyword, Severity, Status, Urgency, cap_datetime};

/// What a reader needs to see, and what an update is compared on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Summary {
    pub headline: String,
    pub event: String,
    pub severity: String,
    pub urgency: String,
    pub certainty: String,
    pub area: String,
    pub instruction: Option<String>,
    pub expires: Option<String>,
    pub sender: String,
    pub status: String,
    pub level: AlarmLevel,
    /// Headlines in the alert's other languages.
    pub other_languages: Vec<(String, String)>,
}

/// CAP severity and urgency to an alarm level. Anything but an Actual alert is `info`.
pub fn level(status: Status, severity: Severity, urgency: Urgency) -> AlarmLevel {
    if status != Status::Actual {
        return AlarmLevel::Info;
    }
    match (severity, urgency) {
        (Severity::Extreme, Urgency::Immediate | Urgency::Expected) | (Severity::Severe, Urgency::Immediate) => {
            AlarmLevel::Critical
        }
        (Severity::Extreme | Severity::Severe, _) | (Severity::Moderate, Urgency::Immediate) => AlarmLevel::Urgent,
        _ => AlarmLevel::Info,
    }
}

/// The alarm id the bridge gives an alert: a hash of its CAP reference key.
pub fn alarm_id(reference_key: &str) -> String {
    let digest = Sha256::digest(reference_key.as_bytes());
    format!("cap-{}", digest.iter().take(12).map(|b| format!("{b:02x}")).collect::<String>())
}

fn primary(alert: &Alert) -> Option<&Info> {
    alert.infos.first()
}

pub fn summary(alert: &Alert) -> Summary {
    let info = primary(alert);
    let loudest =
        alert.infos.iter().map(|i| level(alert.status, i.severity, i.urgency)).min().unwrap_or(AlarmLevel::Info);
    let area: Vec<&str> = info.map(|i| i.areas.iter().map(|a| a.area_desc.as_str()).collect()).unwrap_or_default();
    Summary {
        headline: info
            .and_then(|i| i.headline.clone())
            .or_else(|| info.map(|i| i.event.clone()))
            .unwrap_or_else(|| alert.note.clone().unwrap_or_else(|| alert.identifier.clone())),
        event: info.map(|i| i.event.clone()).unwrap_or_default(),
        severity: info.map(|i| i.severity.as_text()).unwrap_or("Unknown").to_owned(),
        urgency: info.map(|i| i.urgency.as_text()).unwrap_or("Unknown").to_owned(),
        certainty: info.map(|i| i.certainty.as_text()).unwrap_or("Unknown").to_owned(),
        area: if area.is_empty() { "unspecified".into() } else { area.join("; ") },
        instruction: info.and_then(|i| i.instruction.clone()),
        expires: alert.expires().map(|e| cap_datetime(&e)),
        sender: info.and_then(|i| i.sender_name.clone()).unwrap_or_else(|| alert.sender.clone()),
        status: alert.status.as_text().to_owned(),
        level: loudest,
        other_languages: alert
            .infos
            .iter()
            .skip(1)
            .map(|i| (i.language.clone(), i.headline.clone().unwrap_or_else(|| i.event.clone())))
            .collect(),
    }
}

/// What changed between two summaries, as "field: old → new" parts.
pub fn changes(old: &Summary, new: &Summary) -> Vec<String> {
    let mut out = Vec::new();
    let mut cmp = |name: &str, a: &str, b: &str| {
        if a != b {
            out.push(format!("{name}: {a} → {b}"));
        }
    };
    cmp("headline", &old.headline, &new.headline);
    cmp("severity", &old.severity, &new.severity);
    cmp("urgency", &old.urgency, &new.urgency);
    cmp("certainty", &old.certainty, &new.certainty);
    cmp("area", &old.area, &new.area);
    cmp("instruction", old.instruction.as_deref().unwrap_or("none"), new.instruction.as_deref().unwrap_or("none"));
    cmp("expires", old.expires.as_deref().unwrap_or("none"), new.expires.as_deref().unwrap_or("none"));
    cmp("level", old.level.as_str(), new.level.as_str());
    out
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// Text and HTML for a summary, with an optional first line (update, cancel).
fn texts(s: &Summary, lead: Option<&str>) -> (String, String) {
    let mut body = Vec::new();
    let mut html = Vec::new();
    if let Some(lead) = lead {
        body.push(lead.to_owned());
        html.push(format!("<p><strong>{}</strong></p>", escape(lead)));
    }
    if s.status != "Actual" {
        let mark = format!("{} — NOT A REAL ALERT", s.status.to_uppercase());
        body.push(mark.clone());
        html.push(format!("<p><strong>{}</strong></p>", escape(&mark)));
    }
    body.push(format!("[{} · {} · {}] {}", s.level.as_str().to_uppercase(), s.severity, s.urgency, s.headline));
    html.push(format!(
        "<p><strong>[{} · {} · {}]</strong> {}</p>",
        s.level.as_str().to_uppercase(),
        escape(&s.severity),
        escape(&s.urgency),
        escape(&s.headline)
    ));
    let mut rows = vec![("Event", s.event.clone()), ("Area", s.area.clone())];
    if let Some(i) = &s.instruction {
        rows.push(("Instruction", i.clone()));
    }
    rows.push(("Expires", s.expires.clone().unwrap_or_else(|| "not given".into())));
    rows.push(("From", s.sender.clone()));
    for (lang, headline) in &s.other_languages {
        rows.push(("Also", format!("({lang}) {headline}")));
    }
    html.push("<ul>".into());
    for (k, v) in rows {
        body.push(format!("{k}: {v}"));
        html.push(format!("<li><strong>{k}:</strong> {}</li>", escape(&v)));
    }
    html.push("</ul>".into());
    (body.join("\n"), html.join(""))
}

/// The alarm block for an alert.
pub fn block(alert: &Alert, s: &Summary, id: &str) -> AlarmBlock {
    let mut block = AlarmBlock::new(id, s.level);
    // Drills are marked, never ring and need no acknowledgement.
    block.ack_required = alert.status == Status::Actual && s.level.rings();
    block.expires = alert.expires().and_then(|e| u64::try_from(e.timestamp_millis()).ok());
    block.cap_identifier = Some(alert.identifier.clone());
    block.cap_sender = Some(alert.sender.clone());
    block
}

/// A new alarm message.
pub fn new_message(block: &AlarmBlock, s: &Summary) -> Value {
    let (body, html) = texts(s, None);
    block.message(&body, &html)
}

/// The new content of an edit that updates the alarm and says what changed (wrap it with
/// [`edit`] once the original's event id is known).
pub fn update_message(block: &AlarmBlock, s: &Summary, changed: &[String]) -> Value {
    let lead = if changed.is_empty() {
        "UPDATE (no change to headline, severity, area, instruction or expiry)".to_owned()
    } else {
        format!("UPDATE — {}", changed.join("; "))
    };
    let (body, html) = texts(s, Some(&lead));
    block.message(&body, &html)
}

/// The new content of an edit that cancels the alarm: escalation and acknowledgement stop.
pub fn cancel_message(block: &AlarmBlock, s: &Summary, reason: Option<&str>) -> Value {
    let mut block = block.clone();
    block.cancelled = true;
    block.ack_required = false;
    let lead = match reason {
        Some(r) => format!("CANCELLED — {r}"),
        None => "CANCELLED".to_owned(),
    };
    let (body, html) = texts(s, Some(&lead));
    block.message(&body, &html)
}

/// An `m.replace` edit of `target` carrying `new_content` (clients without edit support show
/// the starred fallback).
pub fn edit(new_content: Value, target: &str) -> Value {
    let mut outer = new_content.clone();
    if let Some(obj) = outer.as_object_mut() {
        for key in ["body", "formatted_body"] {
            if let Some(Value::String(s)) = obj.get(key) {
                let starred = format!("* {s}");
                obj.insert(key.into(), starred.into());
            }
        }
        obj.insert("m.new_content".into(), new_content);
        obj.insert("m.relates_to".into(), json!({"rel_type": "m.replace", "event_id": target}));
    }
    outer
}

/// The alarm block of a message (or of its `m.new_content` for an edit).
pub fn block_of(content: &Value) -> Result<Option<AlarmBlock>, tocsin_events::MalformedAlarm> {
    AlarmBlock::from_content(content.get("m.new_content").unwrap_or(content))
}
