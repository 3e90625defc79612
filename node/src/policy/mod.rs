//! The policy gate: the node policy file, loaded at start and on reload, checked on every local
//! event before it is built. A refusal names the rule that refused it.
//!
//! Rules enforced on local events today: encrypted rooms take no plaintext messages of any
//! kind (`room_defaults.encryption` / `room.encrypted`; see [`PLAINTEXT_MESSAGE_TYPES`]), and only roles allowed by `[alarms]` and
//! `[[role]] may_send_alarms` send `org.tocsin.alarm` messages, at the levels they may.
//!
//! The federation list ([`federation`]): only members federate with this node. Inbound, the
//! X-Matrix extractor refuses a non-member origin with 403 before any handler runs (and before
//! its keys are fetched); outbound, the federation client refuses to contact a non-member, the
//! sender drops (and counts) what is queued for one, and a local invite of a non-member's user
//! is refused here at creation. A PDU pushed to this node whose sender's server is not a member
//! is rejected on receipt, even when a member relays it.
//!
//! Access rules ([`access`]): `restricted` rooms refuse users of `external` servers, `direct`
//! rooms have at most two members; checked on local memberships here, on remote ones at
//! `make_join` and on receipt (`send_join`, transactions).

pub mod accepted;
pub mod access;
pub mod federation;
pub mod provision;
pub mod watch;

use std::{
    path::PathBuf,
    sync::{Arc, RwLock},
};

use ruma::{UserId, events::TimelineEventType};
use serde_json::Value;
use tocsin_events::AlarmBlock;
/// The policies crate, for tools and tests that write or sign policy files for a node.
pub use tocsin_policies as policies;
use tocsin_policies::NodePolicy;

use crate::{
    error::{Error, Result},
    rooms::{NewEvent, RoomHead},
};

/// What [`PolicyGate::new_room_defaults`] gives a new room.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewRoomDefaults {
    pub history_visibility: &'static str,
    pub guest_access: bool,
    /// Seconds, for `m.room.retention`.
    pub retention_max_age: Option<u64>,
}

/// The content block that marks a message as an alarm.
pub use tocsin_events::ALARM_KEY;

pub struct PolicyGate {
    path: Option<PathBuf>,
    server_name: String,
    current: RwLock<Option<Arc<NodePolicy>>>,
    /// The signed federation list: who may federate with this node.
    pub federation: federation::FederationGate,
}

impl PolicyGate {
    /// Loads the policy at `path` (a file or a folder of them). A node must not start on a policy
    /// it cannot read: the error names file, line and field.
    /// A policy written for another server (its `[node] server_name`) is refused: its accounts
    /// and rooms would be provisioned under the wrong name.
    pub fn load(path: Option<PathBuf>, server_name: &str) -> anyhow::Result<Self> {
        let current = match &path {
            Some(p) => Some(Arc::new(read(p, server_name)?)),
            None => None,
        };
        Ok(Self {
            path,
            server_name: server_name.to_owned(),
            current: RwLock::new(current),
            federation: federation::FederationGate::open(),
        })
    }

    /// Loads the node policy (`policy`) and the federation list (`federation_list`, verified
    /// with `federation_operator_keys`). A bad file of either stops the start.
    pub fn from_config(config: &crate::Config) -> anyhow::Result<Self> {
        let mut gate = Self::load(config.policy.clone(), &config.server_name)?;
        gate.federation = federation::FederationGate::load_saved(
            config.federation_list.clone(),
            &config.federation_operator_keys,
            Some(accepted::path_in(&config.data_dir)),
        )?;
        if !gate.federation.enforced() {
            tracing::warn!("no federation_list configured: any server may federate with this node");
        }
        Ok(gate)
    }

    /// The node policy file or folder, for change polling.
    pub fn path(&self) -> Option<&std::path::Path> {
        self.path.as_deref()
    }

    /// Reads the policy again. On any error the node keeps enforcing the last valid policy and
    /// the error comes back for the log.
    pub fn reload(&self) -> std::result::Result<(), String> {
        let Some(path) = &self.path else { return Ok(()) };
        let policy = read(path, &self.server_name).map_err(|e| e.to_string())?;
        if let Ok(mut current) = self.current.write() {
            *current = Some(Arc::new(policy));
        }
        Ok(())
    }

    pub fn policy(&self) -> Option<Arc<NodePolicy>> {
        self.current.read().ok().and_then(|p| p.clone())
    }

    /// History visibility, guest access and retention for a new room, from the policy's room
    /// with the same alias or the policy's defaults; `None` without a node policy.
    pub fn new_room_defaults(&self, alias_localpart: Option<&str>) -> Option<NewRoomDefaults> {
        let policy = self.policy()?;
        let defaults = &policy.room_defaults;
        let history_visibility = match alias_localpart.and_then(|a| policy.room(a)) {
            Some(room) => policy.history_visibility(room),
            None => defaults.history_visibility,
        };
        Some(NewRoomDefaults {
            history_visibility: history_visibility.as_str(),
            guest_access: defaults.guest_access,
            retention_max_age: defaults.retention_max_age,
        })
    }

    /// Whether new rooms are encrypted: the policy's room default when there is a policy.
    pub fn encrypt_new_rooms(&self, config_default: bool) -> bool {
        self.policy().map(|p| p.room_defaults.encryption).unwrap_or(config_default)
    }

    /// Checks a local event against the policy, with the room as it is before the event.
    pub fn check_event(&self, head: &RoomHead, sender: &UserId, event: &NewEvent) -> Result<()> {
        if event.kind == TimelineEventType::RoomMember {
            self.check_member_server(sender, event)?;
            if let Some(target) = event.state_key.as_deref().and_then(|k| UserId::parse(k).ok()) {
                let membership = event.content.get("membership").and_then(Value::as_str).unwrap_or("");
                self.check_access(sender, &target, membership, &access::RoomFacts::from_head(head, &target))?;
            }
        }
        if event.kind.to_string() == access::STATE_TYPE {
            self.check_rule_change(head, &event.content)?;
        }
        let Some(policy) = self.policy() else { return Ok(()) };
        let encrypted = head.get(&ruma::events::StateEventType::RoomEncryption, "").is_some();
        if encrypted && policy.room_defaults.encryption && is_plaintext_message(event) {
            return Err(Error::forbidden(format!(
                "refused by policy rule `room_defaults.encryption`: this room is encrypted, so {} events must be \
                 sent encrypted (m.room.encrypted)",
                event.kind
            )));
        }
        if event.kind != TimelineEventType::RoomMessage {
            return Ok(());
        }
        if let Some(alarm) = AlarmBlock::from_content(&event.content).map_err(|e| Error::bad_json(e.to_string()))? {
            let level = alarm.level;
            if !policy.may_send_alarm(sender.localpart(), level) {
                return Err(Error::forbidden(format!(
                    "refused by policy rule `alarms`: {sender} has no role that may send {level} alarms"
                )));
            }
        }
        Ok(())
    }
}

impl PolicyGate {
    /// Why a received alarm must be rejected: its sender is not allowed, by the federation list
    /// entry of its server (`alarm_senders`), to raise an alarm of its level; or its block is
    /// malformed. `None` when the event is not an alarm, is allowed, or no list is enforced
    /// (then any server federates, and nothing says who may raise alarms).
    pub fn check_remote_alarm(&self, pdu: &crate::rooms::Pdu) -> Option<String> {
        if pdu.kind != TimelineEventType::RoomMessage {
            return None;
        }
        let alarm = match AlarmBlock::from_content(&pdu.content_value()) {
            Ok(Some(alarm)) => alarm,
            Ok(None) => return None,
            Err(e) => return Some(e.to_string()),
        };
        let list = self.federation.list()?;
        let server = pdu.sender.server_name().as_str();
        let allowed =
            list.list().member(server).is_some_and(|m| m.may_raise_alarm(pdu.sender.localpart(), alarm.level));
        (!allowed).then(|| {
            format!(
                "refused by the federation list (`alarm_senders` of {server}): {} may not raise {} alarms",
                pdu.sender, alarm.level
            )
        })
    }

    /// A local membership change that reaches out to a user of another server (an invite, or
    /// any membership a local user sets for them) needs that server to be a member of the list.
    fn check_member_server(&self, sender: &UserId, event: &NewEvent) -> Result<()> {
        let Some(target) = event.state_key.as_deref().and_then(|k| UserId::parse(k).ok()) else { return Ok(()) };
        if target.server_name() == sender.server_name() {
            return Ok(());
        }
        let membership = event.content.get("membership").and_then(Value::as_str).unwrap_or("");
        if !matches!(membership, "invite" | "join" | "knock") {
            return Ok(());
        }
        self.federation
            .check(target.server_name(), &format!("its user {target} cannot get membership `{membership}` here"))
    }
}

/// Message types that carry what users say: refused in plaintext where the policy wants
/// encryption. Polls are here under their stable and unstable (MSC3381) names.
const PLAINTEXT_MESSAGE_TYPES: &[&str] = &[
    "m.room.message",
    "m.sticker",
    "m.poll.start",
    "m.poll.response",
    "m.poll.end",
    "org.matrix.msc3381.poll.start",
    "org.matrix.msc3381.poll.response",
    "org.matrix.msc3381.poll.end",
];

/// Whether `event` is a message-like event that carries content in the clear: one of
/// [`PLAINTEXT_MESSAGE_TYPES`], or any other non-state event with a `body` (custom types are
/// a way around a list). `m.room.encrypted`, reactions and redactions have no body and pass.
fn is_plaintext_message(event: &NewEvent) -> bool {
    if event.state_key.is_some() || event.kind == TimelineEventType::RoomEncrypted {
        return false;
    }
    PLAINTEXT_MESSAGE_TYPES.contains(&event.kind.to_string().as_str()) || event.content.get("body").is_some()
}

/// Reads a node policy and checks it is written for `server_name`.
pub fn read(path: &std::path::Path, server_name: &str) -> anyhow::Result<NodePolicy> {
    let parsed =
        tocsin_policies::read_node_policy(path).map_err(|e| anyhow::anyhow!("policy {}: {e}", path.display()))?;
    for warning in parsed.warnings.iter() {
        tracing::warn!(%warning, "policy warning");
    }
    if let Some(for_server) = &parsed.policy.node.server_name
        && for_server != server_name
    {
        anyhow::bail!(
            "policy {}: written for server {for_server} ([node] server_name), but this node is {server_name}; \
             point `policy` at this node's own policy, or correct [node] server_name",
            path.display()
        );
    }
    Ok(parsed.policy)
}
