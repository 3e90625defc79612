//! The event contents Tocsin adds to Matrix, as typed structs.
//!
//! An alarm is an ordinary `m.room.message` (so every client renders its `body` and
//! `formatted_body`) that carries one more block, [`ALARM_KEY`]. The node (which checks, tracks
//! and escalates alarms) and the bridge (which raises them from CAP alerts and serves them back
//! out as CAP) both read and write that block through [`AlarmBlock`], so its shape is defined
//! here once.

mod command;

use std::{fmt, str::FromStr};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

pub use command::{AlarmCommand, CommandError, parse_command};

/// The content key of the alarm block in an `m.room.message`.
pub const ALARM_KEY: &str = "org.tocsin.alarm";

/// How loud an alarm is. `critical` and `urgent` ring through mutes where policy allows;
/// `info` follows the user's own push rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AlarmLevel {
    Critical,
    Urgent,
    Info,
}

impl AlarmLevel {
    /// Every level, with its keyword, loudest first.
    pub const ALL: &'static [(&'static str, AlarmLevel)] =
        &[("critical", AlarmLevel::Critical), ("urgent", AlarmLevel::Urgent), ("info", AlarmLevel::Info)];

    pub fn as_str(self) -> &'static str {
        match self {
            AlarmLevel::Critical => "critical",
            AlarmLevel::Urgent => "urgent",
            AlarmLevel::Info => "info",
        }
    }

    /// Whether this level rings (sound and highlight) even where the user muted the room.
    pub fn rings(self) -> bool {
        matches!(self, AlarmLevel::Critical | AlarmLevel::Urgent)
    }
}

impl fmt::Display for AlarmLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A level keyword that is not one of `critical`, `urgent`, `info`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("alarm level must be \"critical\", \"urgent\" or \"info\", found {0:?}")]
pub struct UnknownLevel(pub String);

impl FromStr for AlarmLevel {
    type Err = UnknownLevel;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL.iter().find(|(k, _)| *k == s).map(|(_, l)| *l).ok_or_else(|| UnknownLevel(s.to_owned()))
    }
}

/// The `org.tocsin.alarm` block.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlarmBlock {
    /// Unique per alarm; chosen by whoever raises it (the bridge uses the CAP identifier's hash,
    /// the node a random id). Acknowledgements and status follow the event, the id names it.
    pub id: String,
    pub level: AlarmLevel,
    /// Whether recipients are expected to acknowledge (react or reply).
    #[serde(default = "default_true")]
    pub ack_required: bool,
    /// Seconds after the alarm's `origin_server_ts` before escalation starts; absent means the
    /// node policy's `[alarms] ack_deadline`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ack_deadline_s: Option<u64>,
    /// When the alarm stops mattering, in milliseconds since the Unix epoch. An expired alarm
    /// no longer escalates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires: Option<u64>,
    /// The CAP `identifier` this alarm was raised from (bridge).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cap_identifier: Option<String>,
    /// The CAP `sender` this alarm was raised from (bridge).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cap_sender: Option<String>,
    /// Set in an edit (`m.new_content`) that cancels the alarm: escalation stops.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub cancelled: bool,
}

fn default_true() -> bool {
    true
}

/// Why an event's content is not a well-formed alarm.
#[derive(Debug, thiserror::Error)]
#[error("{ALARM_KEY} is malformed: {0}")]
pub struct MalformedAlarm(#[from] serde_json::Error);

impl AlarmBlock {
    /// A new alarm block with the defaults a person typing `!alarm` gets.
    pub fn new(id: impl Into<String>, level: AlarmLevel) -> Self {
        AlarmBlock {
            id: id.into(),
            level,
            ack_required: true,
            ack_deadline_s: None,
            expires: None,
            cap_identifier: None,
            cap_sender: None,
            cancelled: false,
        }
    }

    /// The alarm block of an event's content: `Ok(None)` when there is none, an error when the
    /// block is there but malformed (so a broken alarm is refused, never sent as a plain message).
    pub fn from_content(content: &Value) -> Result<Option<Self>, MalformedAlarm> {
        match content.get(ALARM_KEY) {
            None => Ok(None),
            Some(block) => Ok(Some(serde_json::from_value(block.clone())?)),
        }
    }

    /// Whether the alarm has expired at `now_ms`.
    pub fn expired_at(&self, now_ms: u64) -> bool {
        self.expires.is_some_and(|e| e <= now_ms)
    }

    /// A complete `m.room.message` content (`m.text`) carrying this block: `body` for every
    /// client, `formatted_body` as HTML, and the block itself.
    pub fn message(&self, body: &str, html: &str) -> Value {
        let mut content = Map::new();
        content.insert("msgtype".into(), "m.text".into());
        content.insert("body".into(), body.into());
        content.insert("format".into(), "org.matrix.custom.html".into());
        content.insert("formatted_body".into(), html.into());
        content.insert(ALARM_KEY.into(), serde_json::to_value(self).unwrap_or(Value::Null));
        Value::Object(content)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn block_round_trips_and_omits_unset_fields() {
        let mut block = AlarmBlock::new("a1", AlarmLevel::Critical);
        block.ack_deadline_s = Some(600);
        let json = serde_json::to_value(&block).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"id": "a1", "level": "critical", "ack_required": true, "ack_deadline_s": 600})
        );
        let content = block.message("Evacuate", "<b>Evacuate</b>");
        assert_eq!(AlarmBlock::from_content(&content).unwrap(), Some(block));
    }

    #[test]
    fn a_malformed_block_is_an_error_not_a_plain_message() {
        let content = serde_json::json!({"body": "x", ALARM_KEY: {"id": "a", "level": "loud"}});
        assert!(AlarmBlock::from_content(&content).is_err());
        assert!(AlarmBlock::from_content(&serde_json::json!({"body": "x"})).unwrap().is_none());
    }

    #[test]
    fn levels_parse_and_ring() {
        assert_eq!("urgent".parse::<AlarmLevel>(), Ok(AlarmLevel::Urgent));
        assert!("loud".parse::<AlarmLevel>().is_err());
        assert!(AlarmLevel::Critical.rings() && !AlarmLevel::Info.rings());
    }
}
