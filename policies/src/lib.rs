//! Tocsin policies: the federation list and node policy models, their parsers, validator,
//! signer and planner. Pure: no I/O except reading files, no network.
//!
//! - [`federation`]: the signed federation list (format, canonical form, lookups, status).
//! - [`signing`]: operator keys, [`sign_text`] / [`sign_list`], [`verify`], [`accept_update`].
//! - [`node_policy`]: accounts, roles, rooms, room defaults, alarms, external users.
//! - [`check`]: [`check_paths`], what `tocsin-node policy check` runs.
//! - [`mod@plan`]: [`plan()`], the changes `policy apply` would make.
//! - [`diagnostics`]: every problem with file, line, column and field path.

pub mod canonical;
pub mod check;
mod decode;
pub mod diagnostics;
pub mod error;
pub mod federation;
pub mod names;
pub mod node_policy;
pub mod pem;
pub mod plan;
pub mod signing;
pub mod time;

pub use check::{CheckedFile, FileKind, Report, check_paths, check_paths_at, detect_kind};
pub use diagnostics::{Diagnostic, Diagnostics, Origin, Pos, Severity};
pub use error::PolicyError;
pub use federation::{
    FederationList, ListStatus, Member, MemberChanges, MemberRole, ParsedList, Signature, parse_federation_list,
    read_federation_list,
};
pub use node_policy::{
    AccessRule, Account, AlarmLevel, AlarmPolicy, AlarmWebhook, BridgePolicy, BridgeRoute, CapSeverity, CapUrgency,
    Credential, EscalationSource, ExternalUsers, GeoCircle, GeoPoint, HistoryVisibility, NodePolicy, NodeSettings,
    ParsedPolicy, Role, Room, RoomDefaults, RoomKind, parse_node_policy, read_node_policy, read_node_policy_files,
};
pub use plan::{Change, CurrentAccount, CurrentRoom, CurrentState, RoomSpec, conflicts, plan};
pub use signing::{
    OperatorPublicKey, OperatorSecretKey, SignedFederationList, VerifiedList, accept_update, generate_operator_key,
    key_file_text, sign_list, sign_text, verify, verify_file, verify_parsed,
};
pub use time::{Timestamp, format_duration, parse_duration, parse_rfc3339_utc};
