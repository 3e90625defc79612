//! CAP out: alarms raised in the rooms the bot is in (by people, with `!alarm ...` or a
//! client's alarm content) become CAP 1.2 alerts, served as an Atom feed with one CAP document
//! per alarm. Edits of an alarm become Update messages, cancelling edits Cancel messages, both
//! with `references` to the original.

use std::sync::Arc;

use chrono::{DateTime, FixedOffset, TimeZone, Utc};
use matrix_sdk::event_handler::RawEvent;
use matrix_sdk::ruma::events::room::message::OriginalSyncRoomMessageEvent;
use matrix_sdk::{Client, Room};
use serde_json::Value;
use tocsin_events::{AlarmBlock, AlarmLevel, parse_command};
use tracing::warn;

use crate::cap::{self, Alert, Area, Category, Certainty, Info, MsgType, Reference, Scope, Severity, Status, Urgency};
use crate::store::{FeedEntry, Store};

/// Watches every room the client syncs for alarms.
pub fn watch(client: &Client, store: Arc<Store>) {
    client.add_event_handler(move |ev: OriginalSyncRoomMessageEvent, room: Room, raw: RawEvent, client: Client| {
        let store = store.clone();
        async move {
            // The bridge's own alarms came from CAP already.
            if client.user_id() == Some(&*ev.sender) {
                return;
            }
            let Ok(raw) = serde_json::from_str::<Value>(raw.get()) else { return };
            let content = raw.get("content").cloned().unwrap_or(Value::Null);
            let room_name = room.name().unwrap_or_else(|| room.room_id().to_string());
            let ts = i64::from(ev.origin_server_ts.0);
            match alarm_to_cap(&store, ev.event_id.as_ref(), ev.sender.as_str(), &room_name, ts, &content) {
                Ok(Some(entry)) => {
                    let entry = FeedEntry { room_id: room.room_id().to_string(), ..entry };
                    if let Err(e) = store.add_feed(&entry) {
                        warn!("cannot record an alarm for the CAP feed: {e}");
                    }
                }
                Ok(None) => {}
                Err(e) => warn!(event = %ev.event_id, "alarm not served as CAP: {e}"),
            }
        }
    });
}

#[derive(Debug, thiserror::Error)]
pub enum CapOutError {
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error(transparent)]
    Malformed(#[from] tocsin_events::MalformedAlarm),
}

fn severity_of(level: AlarmLevel) -> (Severity, Urgency) {
    match level {
        AlarmLevel::Critical => (Severity::Extreme, Urgency::Immediate),
        AlarmLevel::Urgent => (Severity::Severe, Urgency::Expected),
        AlarmLevel::Info => (Severity::Minor, Urgency::Future),
    }
}

/// CAP identifiers may not contain spaces, commas, `<` or `&`; event ids never do, but keep
/// only safe characters anyway.
fn identifier_for(event_id: &str) -> String {
    let safe: String = event_id.chars().filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')).collect();
    format!("tocsin-{safe}")
}

fn cap_time(ms: i64) -> DateTime<FixedOffset> {
    Utc.timestamp_millis_opt(ms).single().unwrap_or_default().fixed_offset()
}

/// An alarm message as a CAP feed entry (`None` when the message is no alarm).
pub fn alarm_to_cap(
    store: &Store,
    event_id: &str,
    sender: &str,
    room_name: &str,
    ts_ms: i64,
    content: &Value,
) -> Result<Option<FeedEntry>, CapOutError> {
    let inner = content.get("m.new_content").unwrap_or(content);
    let body = inner.get("body").and_then(Value::as_str).unwrap_or("");
    let (level, cancelled, expires) = match AlarmBlock::from_content(inner)? {
        Some(b) => (b.level, b.cancelled, b.expires),
        None => match parse_command(body) {
            Some(Ok(cmd)) => (cmd.level, false, None),
            _ => return Ok(None),
        },
    };
    let text = match parse_command(body) {
        Some(Ok(cmd)) => cmd.text,
        _ => body.to_owned(),
    };
    let sent = cap_time(ts_ms);
    let replaces = content
        .get("m.relates_to")
        .filter(|r| r.get("rel_type").and_then(Value::as_str) == Some("m.replace"))
        .and_then(|r| r.get("event_id"))
        .and_then(Value::as_str);
    let (msg_type, references) = match replaces {
        None => (MsgType::Alert, Vec::new()),
        Some(original) => match store.feed_by_event(original)? {
            Some(orig) => {
                let r = cap::parse(&orig.xml).map(|a| Reference {
                    sender: a.sender,
                    identifier: a.identifier,
                    sent: cap::cap_datetime(&a.sent),
                });
                match r {
                    Ok(r) => (if cancelled { MsgType::Cancel } else { MsgType::Update }, vec![r]),
                    Err(_) => (MsgType::Alert, Vec::new()),
                }
            }
            // An edit of an alarm we never served: serve it as a new alert.
            None => (MsgType::Alert, Vec::new()),
        },
    };
    let (severity, urgency) = severity_of(level);
    let headline: String = text.lines().next().unwrap_or("").chars().take(160).collect();
    let sender_id: String = sender.chars().filter(|c| !c.is_whitespace() && *c != ',').collect();
    let alert = Alert {
        identifier: identifier_for(event_id),
        sender: sender_id,
        sent,
        status: Status::Actual,
        msg_type,
        source: Some("Tocsin".into()),
        scope: Scope::Public,
        restriction: None,
        addresses: None,
        codes: Vec::new(),
        note: cancelled.then(|| "Cancelled in Tocsin".to_owned()),
        references,
        incidents: None,
        infos: vec![Info {
            language: "en".into(),
            categories: vec![Category::Safety],
            event: "Tocsin alarm".into(),
            response_types: Vec::new(),
            urgency,
            severity,
            certainty: Certainty::Observed,
            audience: None,
            event_codes: Vec::new(),
            effective: None,
            onset: None,
            expires: expires.and_then(|e| i64::try_from(e).ok()).map(cap_time),
            sender_name: Some(sender.to_owned()),
            headline: Some(headline.clone()),
            description: Some(text.clone()),
            instruction: None,
            web: None,
            contact: None,
            parameters: vec![cap::NamedValue { value_name: "tocsin_level".into(), value: level.as_str().into() }],
            resources: Vec::new(),
            areas: vec![Area {
                area_desc: room_name.to_owned(),
                polygons: Vec::new(),
                circles: Vec::new(),
                geocodes: Vec::new(),
                altitude: None,
                ceiling: None,
            }],
        }],
        signed: false,
    };
    let title = format!(
        "{}{}",
        match msg_type {
            MsgType::Cancel => "Cancelled: ",
            MsgType::Update => "Update: ",
            _ => "",
        },
        headline
    );
    Ok(Some(FeedEntry {
        event_id: event_id.to_owned(),
        room_id: String::new(),
        identifier: alert.identifier.clone(),
        xml: cap::write::to_xml(&alert),
        updated: sent.to_rfc3339(),
        title,
    }))
}

fn esc(s: &str) -> String {
    quick_xml::escape::escape(s).into_owned()
}

/// The Atom feed of the newest entries; each links to its CAP document and embeds it.
pub fn atom(entries: &[FeedEntry], base_url: &str) -> String {
    let updated = entries.first().map(|e| e.updated.clone()).unwrap_or_else(|| Utc::now().to_rfc3339());
    let mut out =
        String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<feed xmlns=\"http://www.w3.org/2005/Atom\">\n");
    out.push_str(&format!(
        "  <id>{}/cap/feed.atom</id>\n  <title>Tocsin alarms (CAP 1.2)</title>\n  <updated>{}</updated>\n  <link rel=\"self\" href=\"{}/cap/feed.atom\"/>\n  <author><name>tocsin-bridge</name></author>\n",
        esc(base_url), esc(&updated), esc(base_url)
    ));
    for e in entries {
        let href = format!("{base_url}/cap/alerts/{}.xml", e.identifier);
        // The embedded document without its XML declaration.
        let doc = e.xml.split_once("?>").map(|(_, rest)| rest.trim_start()).unwrap_or(&e.xml);
        out.push_str(&format!(
            "  <entry>\n    <id>urn:tocsin:{}</id>\n    <title>{}</title>\n    <updated>{}</updated>\n    <link rel=\"alternate\" type=\"application/cap+xml\" href=\"{}\"/>\n    <content type=\"application/cap+xml\">\n{}\n    </content>\n  </entry>\n",
            esc(&e.identifier), esc(&e.title), esc(&e.updated), esc(&href), doc
        ));
    }
    out.push_str("</feed>\n");
    out
}
