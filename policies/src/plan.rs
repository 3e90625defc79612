//! `policy plan` / `policy apply`: the changes that bring a node in line with its policy.
//!
//! The node describes what exists in a [`CurrentState`]; [`plan`] compares it with the
//! desired [`NodePolicy`] and lists [`Change`]s. The plan is additive: it creates accounts and
//! rooms, sets names, topics, room settings and power levels to the policy's values, and invites
//! missing members (local accounts and `remote_members`). It never deletes accounts, never
//! kicks anyone and never changes the password of an existing account. Whatever it cannot
//! change (a room that should be a space, encryption that should be off) is listed by
//! [`conflicts`] instead.
//!
//! [`CurrentState::apply`] performs a change on the state itself; the node can use it to keep
//! its view current, and tests use it to check that a plan converges: after applying it,
//! planning again yields nothing.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use crate::node_policy::{AccessRule, Credential, HistoryVisibility, NodePolicy, Room, RoomKind};
use crate::time::format_duration;

/// An existing account, as the node knows it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CurrentAccount {
    pub display_name: Option<String>,
    pub roles: BTreeSet<String>,
    pub admin: bool,
}

/// An existing room, as the node knows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CurrentRoom {
    pub name: String,
    pub topic: Option<String>,
    pub kind: RoomKind,
    pub encrypted: bool,
    pub history_visibility: HistoryVisibility,
    pub guest_access: bool,
    pub access_rule: AccessRule,
    pub retention_max_age: Option<u64>,
    /// Servers in the room's server ACL allow list; `None` without an ACL.
    pub allowed_servers: Option<BTreeSet<String>>,
    /// Alias localpart of the space this room is a child of.
    pub parent: Option<String>,
    /// Full user ids of joined or invited members.
    pub members: BTreeSet<String>,
    /// Full user id -> power level; a missing user has level 0.
    pub power_levels: BTreeMap<String, i64>,
}

/// What exists on the node.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CurrentState {
    /// The node's server name, used to build user ids (`@localpart:server_name`).
    pub server_name: String,
    /// By localpart.
    pub accounts: BTreeMap<String, CurrentAccount>,
    /// By alias localpart.
    pub rooms: BTreeMap<String, CurrentRoom>,
}

/// The settings a room is created with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomSpec {
    pub alias: String,
    pub name: String,
    pub topic: Option<String>,
    pub kind: RoomKind,
    pub encrypted: bool,
    pub history_visibility: HistoryVisibility,
    pub guest_access: bool,
    pub access_rule: AccessRule,
    pub retention_max_age: Option<u64>,
}

/// One step of a plan. Rooms are named by alias localpart, accounts by localpart, members by
/// full user id. `Display` prints one line and never shows a password.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    CreateAccount {
        localpart: String,
        display_name: Option<String>,
        roles: Vec<String>,
        admin: bool,
        credential: Option<Credential>,
    },
    UpdateDisplayName {
        localpart: String,
        from: Option<String>,
        to: Option<String>,
    },
    SetAccountRoles {
        localpart: String,
        roles: Vec<String>,
    },
    SetAdmin {
        localpart: String,
        admin: bool,
    },
    CreateRoom(RoomSpec),
    SetName {
        alias: String,
        from: String,
        to: String,
    },
    SetTopic {
        alias: String,
        from: Option<String>,
        to: Option<String>,
    },
    EnableEncryption {
        alias: String,
    },
    SetHistoryVisibility {
        alias: String,
        from: HistoryVisibility,
        to: HistoryVisibility,
    },
    SetGuestAccess {
        alias: String,
        to: bool,
    },
    SetAccessRule {
        alias: String,
        from: AccessRule,
        to: AccessRule,
    },
    SetRetention {
        alias: String,
        to: Option<u64>,
    },
    /// Sets the server ACL allow list (the node itself plus `shared_with`).
    SetAllowedServers {
        alias: String,
        servers: Vec<String>,
    },
    /// Makes the room a child of a space (`m.space.child` / `m.space.parent`).
    SetParent {
        alias: String,
        parent: String,
    },
    Invite {
        alias: String,
        user_id: String,
    },
    SetPowerLevel {
        alias: String,
        user_id: String,
        from: i64,
        to: i64,
    },
}

fn opt(s: &Option<String>) -> String {
    s.as_ref().map(|s| format!("{s:?}")).unwrap_or_else(|| "none".to_string())
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Change::CreateAccount { localpart, display_name, roles, admin, credential } => {
                write!(f, "create account @{localpart} (display name {}", opt(display_name))?;
                write!(f, ", roles [{}]", roles.join(", "))?;
                if *admin {
                    write!(f, ", server admin")?;
                }
                match credential {
                    Some(Credential::Password(_)) => write!(f, ", password from policy)"),
                    Some(Credential::PasswordHash(_)) => write!(f, ", password hash from policy)"),
                    None => write!(f, ", no password)"),
                }
            }
            Change::UpdateDisplayName { localpart, from, to } => {
                write!(f, "set display name of @{localpart}: {} -> {}", opt(from), opt(to))
            }
            Change::SetAccountRoles { localpart, roles } => {
                write!(f, "set roles of @{localpart}: [{}]", roles.join(", "))
            }
            Change::SetAdmin { localpart, admin } => {
                write!(f, "set server admin of @{localpart}: {admin}")
            }
            Change::CreateRoom(s) => {
                write!(f, "create {} #{} {:?} (", s.kind, s.alias, s.name)?;
                write!(f, "{}", if s.encrypted { "encrypted" } else { "NOT encrypted" })?;
                write!(f, ", history {}, {}", s.history_visibility, s.access_rule)?;
                if s.guest_access {
                    write!(f, ", guests allowed")?;
                }
                if let Some(age) = s.retention_max_age {
                    write!(f, ", retention {}", format_duration(age))?;
                }
                write!(f, ")")
            }
            Change::SetName { alias, from, to } => {
                write!(f, "set name of #{alias}: {from:?} -> {to:?}")
            }
            Change::SetTopic { alias, from, to } => {
                write!(f, "set topic of #{alias}: {} -> {}", opt(from), opt(to))
            }
            Change::EnableEncryption { alias } => write!(f, "enable encryption in #{alias}"),
            Change::SetHistoryVisibility { alias, from, to } => {
                write!(f, "set history visibility of #{alias}: {from} -> {to}")
            }
            Change::SetGuestAccess { alias, to } => {
                write!(f, "{} guest access in #{alias}", if *to { "allow" } else { "forbid" })
            }
            Change::SetAccessRule { alias, from, to } => {
                write!(f, "set access rule of #{alias}: {from} -> {to}")
            }
            Change::SetRetention { alias, to } => match to {
                Some(age) => write!(f, "set retention of #{alias} to {}", format_duration(*age)),
                None => write!(f, "remove retention from #{alias}"),
            },
            Change::SetAllowedServers { alias, servers } => {
                write!(f, "allow servers in #{alias}: {}", servers.join(", "))
            }
            Change::SetParent { alias, parent } => write!(f, "add #{alias} to space #{parent}"),
            Change::Invite { alias, user_id } => write!(f, "invite {user_id} to #{alias}"),
            Change::SetPowerLevel { alias, user_id, from, to } => {
                write!(f, "set power level of {user_id} in #{alias}: {from} -> {to}")
            }
        }
    }
}

impl CurrentState {
    pub fn new(server_name: &str) -> Self {
        CurrentState { server_name: server_name.to_string(), ..CurrentState::default() }
    }

    pub fn user_id(&self, localpart: &str) -> String {
        format!("@{localpart}:{}", self.server_name)
    }

    /// Performs a change on this state, as the node would on its rooms and accounts.
    /// Changes that name a missing account or room do nothing.
    pub fn apply(&mut self, change: &Change) {
        match change {
            Change::CreateAccount { localpart, display_name, roles, admin, .. } => {
                let account = CurrentAccount {
                    display_name: display_name.clone(),
                    roles: roles.iter().cloned().collect(),
                    admin: *admin,
                };
                self.accounts.insert(localpart.clone(), account);
            }
            Change::UpdateDisplayName { localpart, to, .. } => {
                if let Some(a) = self.accounts.get_mut(localpart) {
                    a.display_name = to.clone();
                }
            }
            Change::SetAccountRoles { localpart, roles } => {
                if let Some(a) = self.accounts.get_mut(localpart) {
                    a.roles = roles.iter().cloned().collect();
                }
            }
            Change::SetAdmin { localpart, admin } => {
                if let Some(a) = self.accounts.get_mut(localpart) {
                    a.admin = *admin;
                }
            }
            Change::CreateRoom(spec) => {
                self.rooms.insert(spec.alias.clone(), created_room(spec));
            }
            Change::SetName { alias, to, .. } => self.with_room(alias, |r| r.name = to.clone()),
            Change::SetTopic { alias, to, .. } => self.with_room(alias, |r| r.topic = to.clone()),
            Change::EnableEncryption { alias } => self.with_room(alias, |r| r.encrypted = true),
            Change::SetHistoryVisibility { alias, to, .. } => self.with_room(alias, |r| r.history_visibility = *to),
            Change::SetGuestAccess { alias, to } => self.with_room(alias, |r| r.guest_access = *to),
            Change::SetAccessRule { alias, to, .. } => self.with_room(alias, |r| r.access_rule = *to),
            Change::SetRetention { alias, to } => self.with_room(alias, |r| r.retention_max_age = *to),
            Change::SetAllowedServers { alias, servers } => {
                self.with_room(alias, |r| r.allowed_servers = Some(servers.iter().cloned().collect()))
            }
            Change::SetParent { alias, parent } => self.with_room(alias, |r| r.parent = Some(parent.clone())),
            Change::Invite { alias, user_id } => self.with_room(alias, |r| {
                r.members.insert(user_id.clone());
            }),
            Change::SetPowerLevel { alias, user_id, to, .. } => self.with_room(alias, |r| {
                r.power_levels.insert(user_id.clone(), *to);
            }),
        }
    }

    fn with_room(&mut self, alias: &str, f: impl FnOnce(&mut CurrentRoom)) {
        if let Some(room) = self.rooms.get_mut(alias) {
            f(room);
        }
    }
}

fn created_room(spec: &RoomSpec) -> CurrentRoom {
    CurrentRoom {
        name: spec.name.clone(),
        topic: spec.topic.clone(),
        kind: spec.kind,
        encrypted: spec.encrypted,
        history_visibility: spec.history_visibility,
        guest_access: spec.guest_access,
        access_rule: spec.access_rule,
        retention_max_age: spec.retention_max_age,
        allowed_servers: None,
        parent: None,
        members: BTreeSet::new(),
        power_levels: BTreeMap::new(),
    }
}

fn spec_of(p: &NodePolicy, room: &Room) -> RoomSpec {
    RoomSpec {
        alias: room.alias.clone(),
        name: room.name.clone(),
        topic: room.topic.clone(),
        kind: room.kind,
        encrypted: p.encrypted(room) && room.kind == RoomKind::Room,
        history_visibility: p.history_visibility(room),
        guest_access: p.room_defaults.guest_access,
        access_rule: p.access_rule(room),
        retention_max_age: p.room_defaults.retention_max_age,
    }
}

/// The changes that bring `current` in line with `desired`, in an order the node can apply
/// them: accounts, then rooms (spaces first), then room settings, invites and power levels.
pub fn plan(desired: &NodePolicy, current: &CurrentState) -> Vec<Change> {
    let mut changes = Vec::new();
    plan_accounts(desired, current, &mut changes);

    let mut rooms: Vec<&Room> = desired.rooms.iter().collect();
    rooms.sort_by_key(|r| (r.kind != RoomKind::Space, depth(desired, r)));
    let mut created: BTreeMap<&str, CurrentRoom> = BTreeMap::new();
    for room in &rooms {
        if !current.rooms.contains_key(&room.alias) {
            let spec = spec_of(desired, room);
            created.insert(&room.alias, created_room(&spec));
            changes.push(Change::CreateRoom(spec));
        }
    }
    let (mut settings, mut invites, mut levels) = (Vec::new(), Vec::new(), Vec::new());
    for room in &rooms {
        let Some(have) = current.rooms.get(&room.alias).or_else(|| created.get(room.alias.as_str())) else {
            continue;
        };
        plan_room_settings(desired, current, room, have, &mut settings);
        for user_id in &room.remote_members {
            if !have.members.contains(user_id) {
                invites.push(Change::Invite { alias: room.alias.clone(), user_id: user_id.clone() });
            }
        }
        for localpart in desired.members_of(room) {
            let user_id = current.user_id(&localpart);
            if !have.members.contains(&user_id) {
                invites.push(Change::Invite { alias: room.alias.clone(), user_id: user_id.clone() });
            }
            let from = have.power_levels.get(&user_id).copied().unwrap_or(0);
            let to = desired.power_level_of(&localpart);
            if from != to {
                let alias = room.alias.clone();
                levels.push(Change::SetPowerLevel { alias, user_id, from, to });
            }
        }
    }
    changes.extend(settings);
    changes.extend(invites);
    changes.extend(levels);
    changes
}

/// How many parents a room has above it (bounded, so a cycle cannot hang).
fn depth(p: &NodePolicy, room: &Room) -> usize {
    let mut n = 0;
    let mut cur = room.parent.as_deref();
    while let Some(alias) = cur {
        n += 1;
        if n > p.rooms.len() {
            break;
        }
        cur = p.room(alias).and_then(|r| r.parent.as_deref());
    }
    n
}

fn plan_accounts(desired: &NodePolicy, current: &CurrentState, changes: &mut Vec<Change>) {
    for account in &desired.accounts {
        let roles: BTreeSet<String> = account.roles.iter().cloned().collect();
        let Some(have) = current.accounts.get(&account.localpart) else {
            changes.push(Change::CreateAccount {
                localpart: account.localpart.clone(),
                display_name: account.display_name.clone(),
                roles: roles.into_iter().collect(),
                admin: account.admin,
                credential: account.credential.clone(),
            });
            continue;
        };
        let localpart = account.localpart.clone();
        if account.display_name.is_some() && have.display_name != account.display_name {
            changes.push(Change::UpdateDisplayName {
                localpart: localpart.clone(),
                from: have.display_name.clone(),
                to: account.display_name.clone(),
            });
        }
        if have.roles != roles {
            changes.push(Change::SetAccountRoles { localpart: localpart.clone(), roles: roles.into_iter().collect() });
        }
        if have.admin != account.admin {
            changes.push(Change::SetAdmin { localpart, admin: account.admin });
        }
    }
}

fn plan_room_settings(p: &NodePolicy, current: &CurrentState, room: &Room, have: &CurrentRoom, out: &mut Vec<Change>) {
    let want = spec_of(p, room);
    let alias = room.alias.clone();
    if have.name != want.name {
        out.push(Change::SetName { alias: alias.clone(), from: have.name.clone(), to: want.name.clone() });
    }
    if want.topic.is_some() && have.topic != want.topic {
        out.push(Change::SetTopic { alias: alias.clone(), from: have.topic.clone(), to: want.topic.clone() });
    }
    if want.encrypted && !have.encrypted {
        out.push(Change::EnableEncryption { alias: alias.clone() });
    }
    if have.history_visibility != want.history_visibility {
        out.push(Change::SetHistoryVisibility {
            alias: alias.clone(),
            from: have.history_visibility,
            to: want.history_visibility,
        });
    }
    if have.guest_access != want.guest_access {
        out.push(Change::SetGuestAccess { alias: alias.clone(), to: want.guest_access });
    }
    if have.access_rule != want.access_rule {
        out.push(Change::SetAccessRule { alias: alias.clone(), from: have.access_rule, to: want.access_rule });
    }
    if have.retention_max_age != want.retention_max_age {
        out.push(Change::SetRetention { alias: alias.clone(), to: want.retention_max_age });
    }
    let servers: BTreeSet<String> =
        std::iter::once(current.server_name.clone()).chain(room.shared_with.iter().cloned()).collect();
    if have.allowed_servers.as_ref() != Some(&servers) {
        out.push(Change::SetAllowedServers { alias: alias.clone(), servers: servers.into_iter().collect() });
    }
    if let Some(parent) = &room.parent
        && have.parent.as_ref() != Some(parent)
    {
        out.push(Change::SetParent { alias, parent: parent.clone() });
    }
}

/// Differences the plan cannot resolve, one sentence each.
pub fn conflicts(desired: &NodePolicy, current: &CurrentState) -> Vec<String> {
    let mut out = Vec::new();
    for room in &desired.rooms {
        let Some(have) = current.rooms.get(&room.alias) else {
            continue;
        };
        if have.kind != room.kind {
            out.push(format!(
                "#{} exists as a {} but the policy wants a {}; a room's type cannot change",
                room.alias, have.kind, room.kind
            ));
        }
        if have.encrypted && !desired.encrypted(room) && room.kind == RoomKind::Room {
            out.push(format!("#{} is encrypted; encryption cannot be turned off", room.alias));
        }
    }
    out
}

#[cfg(test)]
mod tests;
