//! Semantic checks on a node policy: names, references, duplicates, and the federation list.

use std::collections::{BTreeMap, BTreeSet};

use super::{AccessRule, Credential, HistoryVisibility, NodePolicy, Room, RoomKind};
use crate::diagnostics::{Diagnostic, Diagnostics, Origin, Severity};
use crate::federation::{FederationList, MemberRole};
use crate::names::{check_alias, check_identifier, check_localpart, check_server_name};

struct Checker {
    out: Vec<Diagnostic>,
}

impl Checker {
    fn error(&mut self, origin: &Origin, field: &str, path: String, message: String) {
        self.out.push(origin.diag(Severity::Error, field, path, message));
    }

    fn warn(&mut self, origin: &Origin, field: &str, path: String, message: String) {
        self.out.push(origin.diag(Severity::Warning, field, path, message));
    }
}

/// Remembers the first definition of each name and reports later ones.
fn first_seen<'a>(seen: &mut BTreeMap<&'a str, &'a Origin>, name: &'a str, origin: &'a Origin) -> Option<&'a Origin> {
    match seen.get(name) {
        Some(first) => Some(*first),
        None => {
            seen.insert(name, origin);
            None
        }
    }
}

pub(super) fn validate(p: &NodePolicy, federation: Option<&FederationList>) -> Diagnostics {
    let mut c = Checker { out: Vec::new() };
    let own_server = p.node.server_name.as_deref();

    if let Some(name) = own_server {
        if let Err(e) = check_server_name(name) {
            c.error(
                &p.node.origin,
                "server_name",
                "node.server_name".into(),
                format!("invalid server name {name:?}: {e}"),
            );
        } else if let Some(list) = federation
            && !list.is_member(name)
        {
            let message = format!("{name:?} is not a member of the federation list {:?}", list.name);
            c.error(&p.node.origin, "server_name", "node.server_name".into(), message);
        }
    }

    check_roles(p, &mut c);
    check_accounts(p, &mut c);
    check_rooms(p, federation, own_server, &mut c);
    check_sections(p, &mut c);
    if let (Some(name), Some(list)) = (own_server, federation)
        && let Some(member) = list.member(name)
    {
        check_alarm_senders(p, member, &mut c);
    }
    super::bridge::validate(p, &mut c.out);
    Diagnostics(c.out)
}

/// An account this policy lets raise a level that the federation list's `alarm_senders` does
/// not name: every other node would reject its alarms.
fn check_alarm_senders(p: &NodePolicy, member: &crate::federation::Member, c: &mut Checker) {
    for (i, account) in p.accounts.iter().enumerate() {
        let missing: Vec<&str> = crate::node_policy::AlarmLevel::ALL
            .iter()
            .filter(|(_, level)| {
                p.may_send_alarm(&account.localpart, *level) && !member.may_raise_alarm(&account.localpart, *level)
            })
            .map(|(keyword, _)| *keyword)
            .collect();
        if !missing.is_empty() {
            let message = format!(
                "may raise {} alarms here, but the federation list's alarm_senders of {} does not name {:?} for them: \
                 other nodes will reject those alarms",
                missing.join(", "),
                member.server_name,
                account.localpart
            );
            c.warn(&account.origin, "roles", format!("account[{i}].roles"), message);
        }
    }
}

fn check_roles(p: &NodePolicy, c: &mut Checker) {
    let mut seen = BTreeMap::new();
    for (i, role) in p.roles.iter().enumerate() {
        let path = |f: &str| format!("role[{i}].{f}");
        if let Err(e) = check_identifier(&role.name) {
            c.error(&role.origin, "name", path("name"), e);
        }
        if let Some(first) = first_seen(&mut seen, &role.name, &role.origin) {
            let message = format!("duplicate role {:?} (first defined at {})", role.name, first.describe());
            c.error(&role.origin, "name", path("name"), message);
        }
        if !role.may_send_alarms
            && !p.alarms.senders.contains(&role.name)
            && role.origin.fields.iter().any(|(f, _)| f == "alarm_levels")
        {
            let message = "alarm_levels has no effect: the role may not send alarms".to_string();
            c.warn(&role.origin, "alarm_levels", path("alarm_levels"), message);
        }
        if (role.may_send_alarms || p.alarms.senders.contains(&role.name)) && role.alarm_levels.is_empty() {
            let message = "the role may send alarms but no alarm level is allowed".to_string();
            c.warn(&role.origin, "alarm_levels", path("alarm_levels"), message);
        }
        check_escalation_room(p, role.escalation_room.as_deref(), &role.origin, &path("escalation_room"), c);
    }
}

/// An `escalation_room` (of `[alarms]`, a role or a room) must name a room of this policy: the
/// node posts there as the provisioning account, which is joined to exactly those rooms.
fn check_escalation_room(p: &NodePolicy, alias: Option<&str>, origin: &Origin, path: &str, c: &mut Checker) {
    let Some(alias) = alias else { return };
    match p.room(alias) {
        None => c.error(
            origin,
            "escalation_room",
            path.to_owned(),
            unknown("room", alias, p.rooms.iter().map(|r| &r.alias)),
        ),
        Some(room) if room.kind == RoomKind::Space => {
            let message = format!("{alias:?} is a space: clients do not show messages posted into a space");
            c.error(origin, "escalation_room", path.to_owned(), message);
        }
        Some(_) => {}
    }
}

/// An account whose roles name different escalation rooms: the first role listed wins, which
/// the author may not expect.
fn check_escalation_roles(p: &NodePolicy, c: &mut Checker) {
    for (i, account) in p.accounts.iter().enumerate() {
        let named: Vec<(&str, &str)> = account
            .roles
            .iter()
            .filter_map(|r| p.role(r))
            .filter_map(|r| r.escalation_room.as_deref().map(|room| (r.name.as_str(), room)))
            .collect();
        if let Some((first_role, first_room)) = named.first()
            && named.iter().any(|(_, room)| room != first_room)
        {
            let message = format!(
                "the roles name different escalation rooms; alarms of {:?} outside a room with its own \
                 escalation_room escalate into {first_room:?}, of its first such role {first_role:?}",
                account.localpart
            );
            c.warn(&account.origin, "roles", format!("account[{i}].roles"), message);
        }
    }
}

fn check_accounts(p: &NodePolicy, c: &mut Checker) {
    let mut seen = BTreeMap::new();
    for (i, account) in p.accounts.iter().enumerate() {
        let path = |f: &str| format!("account[{i}].{f}");
        if let Err(e) = check_localpart(&account.localpart) {
            c.error(&account.origin, "localpart", path("localpart"), e);
        }
        if let Some(first) = first_seen(&mut seen, &account.localpart, &account.origin) {
            let message = format!("duplicate account {:?} (first defined at {})", account.localpart, first.describe());
            c.error(&account.origin, "localpart", path("localpart"), message);
        }
        if account.display_name.as_deref().is_some_and(|d| d.trim().is_empty()) {
            c.error(&account.origin, "display_name", path("display_name"), "must not be empty".into());
        }
        for (j, role) in account.roles.iter().enumerate() {
            if p.role(role).is_none() {
                let field = format!("roles[{j}]");
                c.error(&account.origin, &field, path(&field), unknown("role", role, p.roles.iter().map(|r| &r.name)));
            }
        }
        match &account.credential {
            Some(Credential::Password(pw)) => {
                let message = "plaintext password in a policy file; prefer password_hash (argon2id)".to_string();
                c.warn(&account.origin, "password", path("password"), message);
                if pw.is_empty() {
                    c.error(&account.origin, "password", path("password"), "must not be empty".into());
                }
            }
            Some(Credential::PasswordHash(h)) if !is_argon2_phc(h) => {
                let message = "expected an argon2 PHC string like \"$argon2id$v=19$m=19456,t=2,p=1$<salt>$<hash>\"";
                c.error(&account.origin, "password_hash", path("password_hash"), message.into());
            }
            _ => {}
        }
    }
}

fn is_argon2_phc(h: &str) -> bool {
    let parts: Vec<&str> = h.split('$').collect();
    matches!(parts.as_slice(), ["", "argon2id" | "argon2i" | "argon2d", .., salt, hash]
        if parts.len() >= 5 && !salt.is_empty() && !hash.is_empty())
}

fn unknown<'a>(what: &str, name: &str, known: impl Iterator<Item = &'a String>) -> String {
    let known: Vec<String> = known.map(|k| format!("{k:?}")).collect();
    if known.is_empty() {
        format!("unknown {what} {name:?} (none is defined)")
    } else {
        format!("unknown {what} {name:?} (defined: {})", known.join(", "))
    }
}

fn check_rooms(p: &NodePolicy, federation: Option<&FederationList>, own_server: Option<&str>, c: &mut Checker) {
    let mut seen = BTreeMap::new();
    for (i, room) in p.rooms.iter().enumerate() {
        let path = |f: &str| format!("room[{i}].{f}");
        let o = &room.origin;
        if let Err(e) = check_alias(&room.alias) {
            c.error(o, "alias", path("alias"), e);
        }
        if let Some(first) = first_seen(&mut seen, &room.alias, o) {
            let message = format!("duplicate room alias {:?} (first defined at {})", room.alias, first.describe());
            c.error(o, "alias", path("alias"), message);
        }
        if room.name.trim().is_empty() {
            c.error(o, "name", path("name"), "must not be empty".into());
        }
        for (j, role) in room.members_by_role.iter().enumerate() {
            if p.role(role).is_none() {
                let field = format!("members_by_role[{j}]");
                c.error(o, &field, path(&field), unknown("role", role, p.roles.iter().map(|r| &r.name)));
            }
        }
        for (j, member) in room.members.iter().enumerate() {
            if p.account(member).is_none() {
                let field = format!("members[{j}]");
                c.error(o, &field, path(&field), unknown("account", member, p.accounts.iter().map(|a| &a.localpart)));
            }
        }
        check_shared_with(p, room, i, federation, own_server, c);
        check_remote_members(room, i, c);
        check_parent(p, room, i, c);
        check_escalation_room(p, room.escalation_room.as_deref(), o, &path("escalation_room"), c);
        if room.escalation_room.as_deref() == Some(room.alias.as_str()) {
            let message = "a room that escalates into itself tells nobody new".to_string();
            c.warn(o, "escalation_room", path("escalation_room"), message);
        }
        if p.access_rule(room) == AccessRule::Direct {
            let local = p.members_of(room).len();
            let remote = room.remote_members.len().max(room.shared_with.len().min(1));
            if room.shared_with.len() > 1 || local + remote > 2 {
                let message = format!(
                    "a \"direct\" room has at most 2 members, but this one is for {local} local account(s) and {} server(s)",
                    room.shared_with.len()
                );
                c.error(o, "access_rule", path("access_rule"), message);
            }
            if room.kind == RoomKind::Space {
                c.error(o, "access_rule", path("access_rule"), "a space cannot be \"direct\"".into());
            }
        }
        if room.kind == RoomKind::Room && !p.encrypted(room) {
            c.warn(o, "encrypted", path("encrypted"), "the room is not end-to-end encrypted".into());
        }
        if p.history_visibility(room) == HistoryVisibility::WorldReadable {
            let message = "history is world_readable: anyone can read the room without joining".to_string();
            c.warn(o, "history_visibility", path("history_visibility"), message);
        }
    }
}

fn check_shared_with(
    p: &NodePolicy,
    room: &Room,
    i: usize,
    federation: Option<&FederationList>,
    own_server: Option<&str>,
    c: &mut Checker,
) {
    let o = &room.origin;
    let mut seen = BTreeSet::new();
    for (j, server) in room.shared_with.iter().enumerate() {
        let field = format!("shared_with[{j}]");
        let path = format!("room[{i}].{field}");
        if let Err(e) = check_server_name(server) {
            c.error(o, &field, path, format!("invalid server name {server:?}: {e}"));
            continue;
        }
        if !seen.insert(server.as_str()) {
            c.error(o, &field, path, format!("{server:?} is listed twice"));
            continue;
        }
        if own_server == Some(server.as_str()) {
            c.error(o, &field, path, format!("{server:?} is this node itself"));
            continue;
        }
        let Some(list) = federation else {
            continue;
        };
        match list.member(server) {
            None => {
                let message = format!("{server:?} is not a member of the federation list {:?}", list.name);
                c.error(o, &field, path, message);
            }
            Some(m) if m.role == MemberRole::External => {
                if p.access_rule(room) == AccessRule::Restricted {
                    let message = format!(
                        "{server:?} is an external member ({}), which a \"restricted\" room keeps out",
                        m.agency
                    );
                    c.error(o, &field, path, message);
                } else if !p.external_users.allowed {
                    let message = format!("{server:?} is an external member, but [external_users] allowed = false");
                    c.error(o, &field, path, message);
                }
            }
            Some(_) => {}
        }
    }
}

/// Splits `@localpart:server` into its parts.
pub(crate) fn split_user_id(user_id: &str) -> Option<(&str, &str)> {
    user_id.strip_prefix('@')?.split_once(':')
}

fn check_remote_members(room: &Room, i: usize, c: &mut Checker) {
    let mut seen = BTreeSet::new();
    for (j, user_id) in room.remote_members.iter().enumerate() {
        let field = format!("remote_members[{j}]");
        let path = format!("room[{i}].{field}");
        let Some((localpart, server)) = split_user_id(user_id) else {
            let message = format!("expected a user id like \"@mayor:lakeside:8449\", found {user_id:?}");
            c.error(&room.origin, &field, path, message);
            continue;
        };
        if let Err(e) = check_localpart(localpart).and_then(|()| check_server_name(server)) {
            c.error(&room.origin, &field, path, format!("invalid user id {user_id:?}: {e}"));
        } else if !room.shared_with.iter().any(|s| s == server) {
            let message = format!("{user_id:?} is on {server:?}, which is not in this room's shared_with");
            c.error(&room.origin, &field, path, message);
        } else if !seen.insert(user_id.as_str()) {
            c.error(&room.origin, &field, path, format!("{user_id:?} is listed twice"));
        }
    }
}

fn check_parent(p: &NodePolicy, room: &Room, i: usize, c: &mut Checker) {
    let Some(parent) = &room.parent else {
        return;
    };
    let o = &room.origin;
    let path = format!("room[{i}].parent");
    match p.room(parent) {
        None => c.error(o, "parent", path, unknown("space", parent, p.rooms.iter().map(|r| &r.alias))),
        Some(space) if space.kind != RoomKind::Space => {
            c.error(o, "parent", path, format!("{parent:?} is a room, not a space"));
        }
        Some(_) => {
            // Walk up the chain; coming back to this room means a cycle.
            let mut seen = BTreeSet::from([room.alias.as_str()]);
            let mut cur = Some(parent.as_str());
            while let Some(alias) = cur {
                if !seen.insert(alias) {
                    c.error(o, "parent", path, format!("the parent chain of {:?} loops", room.alias));
                    break;
                }
                cur = p.room(alias).and_then(|r| r.parent.as_deref());
            }
        }
    }
}

fn check_sections(p: &NodePolicy, c: &mut Checker) {
    let d = &p.room_defaults;
    if !d.encryption {
        let message = "rooms are unencrypted by default; crisis rooms should be end-to-end encrypted".to_string();
        c.warn(&d.origin, "encryption", "room_defaults.encryption".into(), message);
    }
    if d.guest_access {
        let message = "guest access is on by default".to_string();
        c.warn(&d.origin, "guest_access", "room_defaults.guest_access".into(), message);
    }
    let a = &p.alarms;
    for (j, role) in a.senders.iter().enumerate() {
        if p.role(role).is_none() {
            let field = format!("senders[{j}]");
            let message = unknown("role", role, p.roles.iter().map(|r| &r.name));
            c.error(&a.origin, &field, format!("alarms.{field}"), message);
        }
    }
    check_escalation_room(p, a.escalation_room.as_deref(), &a.origin, "alarms.escalation_room", c);
    check_escalation_roles(p, c);
    for (j, hook) in a.webhooks.iter().enumerate() {
        let path = |f: &str| format!("alarms.webhook[{j}].{f}");
        match url::Url::parse(&hook.url) {
            Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => {
                if u.scheme() == "http" {
                    let message = "plain http: the alarm text travels unencrypted".to_string();
                    c.warn(&hook.origin, "url", path("url"), message);
                }
            }
            Ok(_) => c.error(&hook.origin, "url", path("url"), "must be an http or https URL with a host".into()),
            Err(e) => c.error(&hook.origin, "url", path("url"), format!("invalid URL: {e}")),
        }
        if hook.secret.len() < 16 {
            c.error(&hook.origin, "secret", path("secret"), "must be at least 16 characters".into());
        }
    }
    let x = &p.external_users;
    if !x.allowed && (x.may_invite || x.max_per_room.is_some_and(|n| n > 0)) {
        let message = "has no effect while external users are not allowed".to_string();
        let field = if x.may_invite { "may_invite" } else { "max_per_room" };
        c.warn(&x.origin, field, format!("external_users.{field}"), message);
    }
}
