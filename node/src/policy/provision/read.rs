//! The node's current state as the planner sees it: local accounts, and the rooms the policy
//! names, read from their current state events.

use std::collections::{BTreeMap, BTreeSet};

use ruma::{OwnedRoomId, RoomAliasId, events::StateEventType};
use serde_json::Value;
use tocsin_policies::{AccessRule, CurrentAccount, CurrentRoom, CurrentState, HistoryVisibility, NodePolicy, RoomKind};

use super::{ACCESS_RULES, PROVISIONER, RETENTION, acl};
use crate::{
    Services,
    error::{Error, Result},
    rooms::RoomHead,
};

/// Accounts (all local ones but the provisioner) and the policy's rooms that exist.
pub async fn current_state(s: &Services, policy: &NodePolicy) -> Result<CurrentState> {
    let mut state = CurrentState::new(s.server_name.as_str());
    for (user_id, account) in s.users.accounts()? {
        if user_id.localpart() == PROVISIONER {
            continue;
        }
        state.accounts.insert(
            user_id.localpart().to_owned(),
            CurrentAccount {
                display_name: account.displayname,
                roles: account.roles.into_iter().collect(),
                admin: account.admin,
            },
        );
    }
    let rooms = provisioned_rooms(s, policy)?;
    let aliases: BTreeMap<&OwnedRoomId, &str> = rooms.iter().map(|(alias, id)| (id, alias.as_str())).collect();
    for (alias, room_id) in &rooms {
        let head = s.rooms.head(room_id)?;
        let head = head.lock().await;
        state.rooms.insert(alias.clone(), room_of(&head, &aliases));
    }
    Ok(state)
}

/// The policy's aliases that resolve to a room here, with the room id.
pub(super) fn provisioned_rooms(s: &Services, policy: &NodePolicy) -> Result<BTreeMap<String, OwnedRoomId>> {
    let mut out = BTreeMap::new();
    for room in &policy.rooms {
        let alias = room_alias(s, &room.alias)?;
        if let Some(room_id) = s.rooms.resolve_alias(&alias)?
            && s.rooms.exists(&room_id)?
        {
            out.insert(room.alias.clone(), room_id);
        }
    }
    Ok(out)
}

/// `#localpart:<server_name>`.
pub(super) fn room_alias(s: &Services, localpart: &str) -> Result<ruma::OwnedRoomAliasId> {
    RoomAliasId::parse(format!("#{localpart}:{}", s.server_name))
        .map_err(|e| Error::invalid_param(format!("policy room alias `{localpart}`: {e}")))
}

fn content(head: &RoomHead, kind: &str, state_key: &str) -> Option<Value> {
    head.get(&StateEventType::from(kind), state_key).map(|p| p.content_value())
}

fn str_field(head: &RoomHead, kind: &str, field: &str) -> Option<String> {
    content(head, kind, "").and_then(|c| c.get(field).and_then(Value::as_str).map(str::to_owned))
}

fn room_of(head: &RoomHead, aliases: &BTreeMap<&OwnedRoomId, &str>) -> CurrentRoom {
    let kind = match str_field(head, "m.room.create", "type").as_deref() {
        Some("m.space") => RoomKind::Space,
        _ => RoomKind::Room,
    };
    let history_visibility = match str_field(head, "m.room.history_visibility", "history_visibility").as_deref() {
        Some("invited") => HistoryVisibility::Invited,
        Some("joined") => HistoryVisibility::Joined,
        Some("world_readable") => HistoryVisibility::WorldReadable,
        // The spec's default when the event is missing.
        _ => HistoryVisibility::Shared,
    };
    // Without the event no rule is enforced, which is what `unrestricted` means.
    let access_rule = match str_field(head, ACCESS_RULES, "rule").as_deref() {
        Some("restricted") => AccessRule::Restricted,
        Some("direct") => AccessRule::Direct,
        _ => AccessRule::Unrestricted,
    };
    let retention_max_age =
        content(head, RETENTION, "").and_then(|c| c.get("max_lifetime").and_then(Value::as_u64)).map(|ms| ms / 1000);
    let allowed_servers = content(head, acl::EVENT, "").map(|c| {
        let list = c.get(acl::SERVERS).or_else(|| c.get("allow"));
        list.and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_str).map(str::to_owned).collect())
            .unwrap_or_default()
    });
    // The parent is the provisioned space this room names in a live `m.space.parent`.
    let parent = head
        .state
        .iter()
        .filter(|((kind, _), pdu)| kind.to_string() == "m.space.parent" && has_via(&pdu.content_value()))
        .find_map(|((_, key), _)| {
            aliases.iter().find(|(id, _)| id.as_str() == key.as_str()).map(|(_, a)| a.to_string())
        });
    let mut members: BTreeSet<String> = BTreeSet::new();
    for membership in ["join", "invite"] {
        members.extend(head.members_with(membership).into_iter().map(|u| u.to_string()));
    }
    CurrentRoom {
        name: str_field(head, "m.room.name", "name").unwrap_or_default(),
        topic: str_field(head, "m.room.topic", "topic"),
        kind,
        encrypted: content(head, "m.room.encryption", "").is_some(),
        history_visibility,
        guest_access: str_field(head, "m.room.guest_access", "guest_access").as_deref() == Some("can_join"),
        access_rule,
        retention_max_age,
        allowed_servers,
        parent,
        power_levels: power_levels(head, &members),
        members,
    }
}

/// An `m.space.child` / `m.space.parent` without `via` is a removed link.
fn has_via(content: &Value) -> bool {
    content.get("via").and_then(Value::as_array).is_some_and(|v| !v.is_empty())
}

/// Explicit levels from `users`, and `users_default` for members not listed there.
fn power_levels(head: &RoomHead, members: &BTreeSet<String>) -> BTreeMap<String, i64> {
    let content = content(head, "m.room.power_levels", "").unwrap_or(Value::Null);
    let mut out: BTreeMap<String, i64> = content
        .get("users")
        .and_then(Value::as_object)
        .map(|users| users.iter().filter_map(|(u, l)| Some((u.clone(), level(l)?))).collect())
        .unwrap_or_default();
    let default = content.get("users_default").and_then(level).unwrap_or(0);
    for member in members {
        out.entry(member.clone()).or_insert(default);
    }
    out
}

/// A power level: an integer, or a string holding one (older rooms allow both).
fn level(v: &Value) -> Option<i64> {
    v.as_i64().or_else(|| v.as_str().and_then(|s| s.parse().ok()))
}
