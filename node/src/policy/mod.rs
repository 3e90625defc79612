//! The policy gate: the node policy file, loaded at start and on reload, checked on every local
//! event before it is built. A refusal names the rule that refused it.
//!
//! Rules enforced on local events today: encrypted rooms take no plaintext messages
//! (`room_defaults.encryption` / `room.encrypted`), and only roles allowed by `[alarms]` and
//! `[[role]] may_send_alarms` send `org.tocsin.alarm` messages, at the levels they may.
//! The federation list (member-only federation, external users in restricted rooms) needs the
//! federation layer and is not enforced yet.

use std::{
    path::PathBuf,
    sync::{Arc, RwLock},
};

use ruma::{UserId, events::TimelineEventType};
use serde_json::Value;
use tocsin_policies::{AlarmLevel, NodePolicy};

use crate::{
    error::{Error, Result},
    rooms::{NewEvent, RoomHead},
};

/// The content block that marks a message as an alarm.
pub const ALARM_KEY: &str = "org.tocsin.alarm";

pub struct PolicyGate {
    path: Option<PathBuf>,
    current: RwLock<Option<Arc<NodePolicy>>>,
}

impl PolicyGate {
    /// Loads the policy at `path` (a file or a folder of them). A node must not start on a policy
    /// it cannot read: the error names file, line and field.
    pub fn load(path: Option<PathBuf>) -> anyhow::Result<Self> {
        let current = match &path {
            Some(p) => Some(Arc::new(read(p)?)),
            None => None,
        };
        Ok(Self { path, current: RwLock::new(current) })
    }

    /// Reads the policy again. On any error the node keeps enforcing the last valid policy and
    /// the error comes back for the log.
    pub fn reload(&self) -> std::result::Result<(), String> {
        let Some(path) = &self.path else { return Ok(()) };
        let policy = read(path).map_err(|e| e.to_string())?;
        if let Ok(mut current) = self.current.write() {
            *current = Some(Arc::new(policy));
        }
        Ok(())
    }

    pub fn policy(&self) -> Option<Arc<NodePolicy>> {
        self.current.read().ok().and_then(|p| p.clone())
    }

    /// Whether new rooms are encrypted: the policy's room default when there is a policy.
    pub fn encrypt_new_rooms(&self, config_default: bool) -> bool {
        self.policy().map(|p| p.room_defaults.encryption).unwrap_or(config_default)
    }

    /// Checks a local event against the policy, with the room as it is before the event.
    pub fn check_event(&self, head: &RoomHead, sender: &UserId, event: &NewEvent) -> Result<()> {
        let Some(policy) = self.policy() else { return Ok(()) };
        if event.kind != TimelineEventType::RoomMessage {
            return Ok(());
        }
        let encrypted = head.get(&ruma::events::StateEventType::RoomEncryption, "").is_some();
        if encrypted && policy.room_defaults.encryption {
            return Err(Error::forbidden(
                "refused by policy rule `room_defaults.encryption`: this room is encrypted, so messages must be \
                 sent encrypted (m.room.encrypted)",
            ));
        }
        if let Some(alarm) = event.content.get(ALARM_KEY) {
            let level = alarm_level(alarm)?;
            if !policy.may_send_alarm(sender.localpart(), level) {
                return Err(Error::forbidden(format!(
                    "refused by policy rule `alarms`: {sender} has no role that may send {level} alarms"
                )));
            }
        }
        Ok(())
    }
}

fn read(path: &std::path::Path) -> anyhow::Result<NodePolicy> {
    let parsed =
        tocsin_policies::read_node_policy(path).map_err(|e| anyhow::anyhow!("policy {}: {e}", path.display()))?;
    for warning in parsed.warnings.iter() {
        tracing::warn!(%warning, "policy warning");
    }
    Ok(parsed.policy)
}

fn alarm_level(alarm: &Value) -> Result<AlarmLevel> {
    match alarm.get("level").and_then(Value::as_str) {
        Some("critical") => Ok(AlarmLevel::Critical),
        Some("urgent") => Ok(AlarmLevel::Urgent),
        Some("info") => Ok(AlarmLevel::Info),
        other => Err(Error::bad_json(format!(
            "{ALARM_KEY}.level must be \"critical\", \"urgent\" or \"info\", found {}",
            other.map_or("nothing".to_owned(), |l| format!("\"{l}\""))
        ))),
    }
}
