//! Node policy: the accounts, roles, rooms and rules one node provisions and enforces.
//!
//! A policy is one TOML file or a folder of `*.toml` files that are merged (see
//! [`read_node_policy`]). Everything but `[[account]]`, `[[role]]` and `[[room]]` has defaults
//! that fit a crisis: rooms are encrypted and restricted to public bodies, members see the
//! room's history ("shared"), there are no guests and no external users.
//!
//! ```toml
//! [node]
//! server_name = "riverton:8448"          # optional; checked against the federation list
//!
//! [room_defaults]
//! encryption = true                       # default true
//! history_visibility = "shared"           # shared | invited | joined | world_readable
//! guest_access = false                    # default false
//! access_rule = "restricted"              # restricted | unrestricted | direct
//! retention_max_age = "30d"               # optional; units s m h d, e.g. "1d12h"
//!
//! [alarms]
//! senders = ["mayor"]                     # roles that may send org.tocsin.alarm (besides
//!                                         # roles with may_send_alarms = true)
//! ack_deadline = "10m"                    # optional default acknowledgement deadline
//! escalation_room = "crisis-staff"        # optional alias of a room in this policy: the
//!                                         # node's default (see [`NodePolicy::escalation_room_for`])
//! escalate_after = "5m"                   # optional: time from the reminder to escalation
//!                                         # (default: the alarm's acknowledgement deadline)
//! ring_in_muted_rooms = true              # default true
//!
//! [[alarms.webhook]]                      # called on escalation (SMS or e-mail gateways)
//! url = "https://sms-gateway.example/tocsin"
//! secret = "..."                          # HMAC-SHA256 key: X-Tocsin-Signature: sha256=<hex>
//!
//! [external_users]
//! allowed = false                         # users of `external` federation members
//! may_invite = false
//! max_per_room = 5                        # optional
//!
//! [[role]]
//! name = "mayor"
//! power_level = 100                       # 0..=100
//! may_send_alarms = true                  # default false
//! alarm_levels = ["critical", "urgent", "info"]   # default: all three
//! escalation_room = "mayors-office"       # optional: where this role's alarms escalate
//!
//! [[account]]
//! localpart = "mayor"
//! display_name = "Mayor Ann Doe"
//! roles = ["mayor"]
//! password_hash = "$argon2id$v=19$..."   # or password = "..." (warned about)
//! admin = false                           # server admin; default false
//! bot = false                             # a bot is never expected to acknowledge alarms
//!
//! [[room]]
//! alias = "crisis"                        # alias localpart: #crisis:<server>
//! name = "Crisis staff"
//! topic = "..."                           # optional
//! kind = "room"                           # room | space; default room
//! members_by_role = ["mayor"]             # accounts with any of these roles are invited
//! members = ["duty.officer"]              # and these accounts
//! remote_members = ["@mayor:lakeside:8449"]   # users of shared_with servers to invite
//! shared_with = ["lakeside:8449"]         # federation members allowed in the room
//! access_rule = "restricted"              # default from room_defaults
//! encrypted = true                        # default from room_defaults
//! history_visibility = "shared"           # default from room_defaults
//! parent = "river-valley"                 # optional alias of a space in this policy
//! escalation_room = "levee-duty"          # optional: where alarms raised here escalate
//! ```

mod decode;
pub(crate) mod load;
pub(crate) mod validate;

use std::fmt;

use crate::decode::Keyword;
use crate::diagnostics::{Diagnostics, Origin};

pub use bridge::{BridgePolicy, BridgeRoute, CapSeverity, CapUrgency, GeoCircle, GeoPoint};
pub use load::{ParsedPolicy, parse_node_policy, read_node_policy, read_node_policy_files};

macro_rules! keyword_enum {
    ($(#[$m:meta])* $name:ident { $($(#[$vm:meta])* $variant:ident = $text:literal),+ $(,)? }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub enum $name { $($(#[$vm])* $variant),+ }

        impl Keyword for $name {
            const ALL: &'static [(&'static str, Self)] = &[$(($text, $name::$variant)),+];
        }

        impl $name {
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

pub mod bridge;

/// Severity of an `org.tocsin.alarm`: defined once, with the alarm block, in `tocsin-events`.
pub use tocsin_events::AlarmLevel;

impl Keyword for AlarmLevel {
    const ALL: &'static [(&'static str, Self)] = AlarmLevel::ALL;
}

keyword_enum!(
    /// A plain room or a space (a room that groups rooms).
    RoomKind { Room = "room", Space = "space" }
);

keyword_enum!(
    /// Tchap-style access rules.
    AccessRule {
        /// Only users of non-`external` federation members.
        Restricted = "restricted",
        /// External users too (if `[external_users] allowed`).
        Unrestricted = "unrestricted",
        /// At most two members.
        Direct = "direct",
    }
);

keyword_enum!(
    /// `m.room.history_visibility`.
    HistoryVisibility {
        Shared = "shared",
        Invited = "invited",
        Joined = "joined",
        WorldReadable = "world_readable",
    }
);

/// `[node]`: facts about the node itself.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodeSettings {
    pub server_name: Option<String>,
    pub origin: Origin,
}

/// How an account logs in. `Debug` never shows the secret.
#[derive(Clone, PartialEq, Eq)]
pub enum Credential {
    /// A plaintext password (discouraged: it sits in version control).
    Password(String),
    /// An argon2 PHC string (`$argon2id$v=19$...`).
    PasswordHash(String),
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Credential::Password(_) => f.write_str("Password(<redacted>)"),
            Credential::PasswordHash(_) => f.write_str("PasswordHash(<redacted>)"),
        }
    }
}

/// `[[account]]`: a local user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    pub localpart: String,
    pub display_name: Option<String>,
    pub roles: Vec<String>,
    pub credential: Option<Credential>,
    /// Server administrator (admin API).
    pub admin: bool,
    /// An automated account (a bridge, a bot): never counted among an alarm's recipients.
    pub bot: bool,
    pub origin: Origin,
}

/// `[[role]]`: a function people hold, mapped to a power level and alarm rights.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Role {
    pub name: String,
    /// Power level in provisioned rooms, 0..=100.
    pub power_level: i64,
    pub may_send_alarms: bool,
    /// The alarm levels this role may send (when it may send alarms at all).
    pub alarm_levels: Vec<AlarmLevel>,
    /// Alias of the room this role's alarms escalate into (unless their room names one).
    pub escalation_room: Option<String>,
    pub origin: Origin,
}

/// `[[room]]`: a room or space to provision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Room {
    pub alias: String,
    pub name: String,
    pub topic: Option<String>,
    pub kind: RoomKind,
    pub members_by_role: Vec<String>,
    pub members: Vec<String>,
    /// Full user ids on `shared_with` servers to invite.
    pub remote_members: Vec<String>,
    pub shared_with: Vec<String>,
    pub access_rule: Option<AccessRule>,
    pub encrypted: Option<bool>,
    pub history_visibility: Option<HistoryVisibility>,
    pub parent: Option<String>,
    /// Alias of the room alarms raised in this room escalate into (before any role's or the
    /// node's).
    pub escalation_room: Option<String>,
    pub origin: Origin,
}

/// Which policy entry chose an alarm's escalation room.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EscalationSource<'a> {
    /// The alarm's room (`[[room]] escalation_room`), by its alias.
    Room(&'a str),
    /// A role of the sender (`[[role]] escalation_room`), by its name.
    Role(&'a str),
    /// `[alarms] escalation_room`.
    Node,
}

impl fmt::Display for EscalationSource<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EscalationSource::Room(alias) => write!(f, "room {alias:?}"),
            EscalationSource::Role(role) => write!(f, "role {role:?}"),
            EscalationSource::Node => f.write_str("[alarms]"),
        }
    }
}

/// `[room_defaults]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomDefaults {
    pub encryption: bool,
    pub history_visibility: HistoryVisibility,
    pub guest_access: bool,
    pub access_rule: AccessRule,
    /// `m.room.retention` max age in seconds.
    pub retention_max_age: Option<u64>,
    pub origin: Origin,
}

impl Default for RoomDefaults {
    fn default() -> Self {
        RoomDefaults {
            encryption: true,
            history_visibility: HistoryVisibility::Shared,
            guest_access: false,
            access_rule: AccessRule::Restricted,
            retention_max_age: None,
            origin: Origin::default(),
        }
    }
}

/// `[alarms]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlarmPolicy {
    /// Roles that may send alarms, in addition to roles with `may_send_alarms = true`.
    pub senders: Vec<String>,
    /// Default acknowledgement deadline in seconds.
    pub ack_deadline: Option<u64>,
    pub escalation_room: Option<String>,
    /// Seconds from the reminder to escalation; `None`: the alarm's own deadline again.
    pub escalate_after: Option<u64>,
    /// Called on escalation, each with an HMAC-SHA256 signature of the body.
    pub webhooks: Vec<AlarmWebhook>,
    pub ring_in_muted_rooms: bool,
    pub origin: Origin,
}

/// `[[alarms.webhook]]`: an outbound call made when an alarm escalates.
#[derive(Clone, PartialEq, Eq)]
pub struct AlarmWebhook {
    pub url: String,
    /// The HMAC-SHA256 key the receiver checks `X-Tocsin-Signature` with.
    pub secret: String,
    pub origin: Origin,
}

impl fmt::Debug for AlarmWebhook {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AlarmWebhook").field("url", &self.url).field("secret", &"<redacted>").finish()
    }
}

impl Default for AlarmPolicy {
    fn default() -> Self {
        AlarmPolicy {
            senders: Vec::new(),
            ack_deadline: None,
            escalation_room: None,
            escalate_after: None,
            webhooks: Vec::new(),
            ring_in_muted_rooms: true,
            origin: Origin::default(),
        }
    }
}

/// `[external_users]`: users of federation members whose role is `external`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExternalUsers {
    pub allowed: bool,
    pub may_invite: bool,
    pub max_per_room: Option<u32>,
    pub origin: Origin,
}

/// A whole node policy.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodePolicy {
    pub node: NodeSettings,
    pub accounts: Vec<Account>,
    pub roles: Vec<Role>,
    pub rooms: Vec<Room>,
    pub room_defaults: RoomDefaults,
    pub alarms: AlarmPolicy,
    pub external_users: ExternalUsers,
    pub bridge: bridge::BridgePolicy,
}

impl NodePolicy {
    pub fn account(&self, localpart: &str) -> Option<&Account> {
        self.accounts.iter().find(|a| a.localpart == localpart)
    }

    pub fn role(&self, name: &str) -> Option<&Role> {
        self.roles.iter().find(|r| r.name == name)
    }

    pub fn room(&self, alias: &str) -> Option<&Room> {
        self.rooms.iter().find(|r| r.alias == alias)
    }

    /// Whether the account is marked `bot = true`.
    pub fn is_bot(&self, localpart: &str) -> bool {
        self.account(localpart).is_some_and(|a| a.bot)
    }

    /// The highest power level among the account's roles (0 without roles).
    pub fn power_level_of(&self, localpart: &str) -> i64 {
        self.account(localpart)
            .map(|a| a.roles.iter().filter_map(|r| self.role(r)).map(|r| r.power_level).max().unwrap_or(0))
            .unwrap_or(0)
    }

    /// Whether a role may send alarms of `level`.
    pub fn role_may_send_alarm(&self, role: &str, level: AlarmLevel) -> bool {
        let Some(r) = self.role(role) else {
            return false;
        };
        (r.may_send_alarms || self.alarms.senders.iter().any(|s| s == role)) && r.alarm_levels.contains(&level)
    }

    /// Whether an account may send alarms of `level` (through any of its roles).
    pub fn may_send_alarm(&self, localpart: &str, level: AlarmLevel) -> bool {
        self.account(localpart).is_some_and(|a| a.roles.iter().any(|r| self.role_may_send_alarm(r, level)))
    }

    /// The alias of the room an alarm escalates into, and which entry chose it. The most
    /// specific entry wins: the alarm's room (`room_alias`, when the room is one of this
    /// policy's), then the sender's roles in the order the account lists them, then `[alarms]`.
    /// A room knows who must hear of its incidents better than a role does, and a role better
    /// than the node.
    pub fn escalation_room_for(&self, room_alias: Option<&str>, sender: &str) -> Option<(&str, EscalationSource<'_>)> {
        if let Some(room) = room_alias.and_then(|alias| self.room(alias))
            && let Some(target) = &room.escalation_room
        {
            return Some((target, EscalationSource::Room(&room.alias)));
        }
        let roles = self.account(sender).map(|a| a.roles.as_slice()).unwrap_or_default();
        if let Some(role) = roles.iter().filter_map(|r| self.role(r)).find(|r| r.escalation_room.is_some())
            && let Some(target) = &role.escalation_room
        {
            return Some((target, EscalationSource::Role(&role.name)));
        }
        self.alarms.escalation_room.as_deref().map(|target| (target, EscalationSource::Node))
    }

    /// The local accounts a room is for: holders of `members_by_role` plus `members`, sorted.
    pub fn members_of(&self, room: &Room) -> Vec<String> {
        let mut out: Vec<String> = self
            .accounts
            .iter()
            .filter(|a| a.roles.iter().any(|r| room.members_by_role.contains(r)))
            .map(|a| a.localpart.clone())
            .chain(room.members.iter().cloned())
            .collect();
        out.sort();
        out.dedup();
        out
    }

    pub fn encrypted(&self, room: &Room) -> bool {
        room.encrypted.unwrap_or(self.room_defaults.encryption)
    }

    pub fn access_rule(&self, room: &Room) -> AccessRule {
        room.access_rule.unwrap_or(self.room_defaults.access_rule)
    }

    pub fn history_visibility(&self, room: &Room) -> HistoryVisibility {
        room.history_visibility.unwrap_or(self.room_defaults.history_visibility)
    }

    /// Semantic checks; with a federation list, `shared_with` and `[node] server_name` are
    /// checked against its members.
    pub fn validate(&self, federation: Option<&crate::FederationList>) -> Diagnostics {
        validate::validate(self, federation)
    }
}
