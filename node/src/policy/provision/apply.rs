//! Performing a plan: accounts through the users service, rooms and their state through the
//! rooms service, each event sent by the provisioner and authorised like any other.

use std::sync::Arc;

use ruma::{OwnedRoomId, OwnedUserId, RoomId, RoomVersionId, UserId};
use serde_json::{Map, Value, json};
use tocsin_policies::{Change, Credential, NodePolicy, RoomKind, RoomSpec};

use super::{ACCESS_RULES, ApplyView, Failure, PROVISIONER, PROVISIONER_NAME, RETENTION, acl, read};
use crate::{
    Services,
    error::{Error, Result},
    rooms::{CreateRoom, NewEvent, Preset},
};

/// Plans against the node's current state and performs the changes in order. Power level
/// changes of one room go out as one `m.room.power_levels` event. A failed change does not stop
/// the others: a member server that is down must not leave the local rooms without their
/// settings and power levels. Each failure is reported (a change that needed a failed one fails
/// too, naming what is missing), and the next apply tries again.
pub async fn apply(s: &Arc<Services>, policy: &NodePolicy) -> Result<ApplyView> {
    if let Some(wrong) = super::wrong_server(s, policy) {
        return Err(Error::BadState(wrong));
    }
    let _one_at_a_time = s.provisioning.lock.lock().await;
    let current = read::current_state(s, policy).await?;
    let changes = tocsin_policies::plan(policy, &current);
    let mut view = ApplyView {
        server_name: s.server_name.to_string(),
        conflicts: tocsin_policies::conflicts(policy, &current),
        ..ApplyView::default()
    };
    if changes.is_empty() {
        return Ok(view);
    }
    let provisioner = provisioner(s).await?;
    // One step per change, except that a room's power level changes form one step.
    let mut steps: Vec<Vec<&Change>> = Vec::new();
    for change in &changes {
        let Change::SetPowerLevel { alias, .. } = change else {
            steps.push(vec![change]);
            continue;
        };
        let same_room = |step: &&mut Vec<&Change>| matches!(step.first(), Some(Change::SetPowerLevel { alias: a, .. }) if a == alias);
        match steps.iter_mut().find(same_room) {
            Some(step) => step.push(change),
            None => steps.push(vec![change]),
        }
    }
    for step in steps {
        let result = match step.as_slice() {
            [Change::SetPowerLevel { .. }, ..] => set_power_levels(s, &provisioner, &step).await,
            [change] => apply_one(s, &provisioner, change).await,
            _ => Err(Error::internal("empty step")),
        };
        let lines = step.iter().map(|c| c.to_string());
        match result {
            Ok(()) => view.applied.extend(lines),
            Err(e) => {
                let change = lines.collect::<Vec<_>>().join("; ");
                tracing::warn!(%change, error = %e, "policy change failed");
                view.failed.push(Failure { change, error: e.to_string() });
            }
        }
    }
    for line in &view.applied {
        tracing::info!(change = %line, "policy applied");
    }
    Ok(view)
}

/// The provisioning account, created on first use.
async fn provisioner(s: &Services) -> Result<OwnedUserId> {
    let user_id = s.users.user_id_for(PROVISIONER)?;
    if s.users.account(&user_id)?.is_none() {
        s.users.create_account(PROVISIONER, None, Some(PROVISIONER_NAME.to_owned()), false).await?;
    }
    Ok(user_id)
}

async fn apply_one(s: &Arc<Services>, by: &UserId, change: &Change) -> Result<()> {
    match change {
        Change::CreateAccount { localpart, display_name, roles, admin, credential } => {
            let user_id = match credential {
                Some(Credential::PasswordHash(hash)) => {
                    s.users.create_account_with_hash(localpart, hash, display_name.clone(), *admin).await?
                }
                Some(Credential::Password(password)) => {
                    s.users.create_account(localpart, Some(password), display_name.clone(), *admin).await?
                }
                None => s.users.create_account(localpart, None, display_name.clone(), *admin).await?,
            };
            if !roles.is_empty() {
                update_account(s, localpart, |a| a.roles = roles.clone()).await?;
            }
            tracing::info!(%user_id, "account created from policy");
            Ok(())
        }
        Change::UpdateDisplayName { localpart, to, .. } => set_display_name(s, localpart, to.clone()).await,
        Change::SetAccountRoles { localpart, roles } => update_account(s, localpart, |a| a.roles = roles.clone()).await,
        Change::SetAdmin { localpart, admin } => update_account(s, localpart, |a| a.admin = *admin).await,
        Change::CreateRoom(spec) => create_room(s, by, spec).await,
        Change::SetName { alias, to, .. } => state(s, by, alias, "m.room.name", json!({ "name": to })).await,
        Change::SetTopic { alias, to, .. } => {
            state(s, by, alias, "m.room.topic", json!({ "topic": to.clone().unwrap_or_default() })).await
        }
        Change::EnableEncryption { alias } => state(s, by, alias, "m.room.encryption", encryption()).await,
        Change::SetHistoryVisibility { alias, to, .. } => {
            state(s, by, alias, "m.room.history_visibility", json!({ "history_visibility": to.as_str() })).await
        }
        Change::SetGuestAccess { alias, to } => state(s, by, alias, "m.room.guest_access", guest_access(*to)).await,
        Change::SetAccessRule { alias, to, .. } => {
            state(s, by, alias, ACCESS_RULES, json!({ "rule": to.as_str() })).await
        }
        Change::SetRetention { alias, to } => state(s, by, alias, RETENTION, retention(*to)).await,
        Change::SetAllowedServers { alias, servers } => state(s, by, alias, acl::EVENT, acl::content(servers)).await,
        Change::SetParent { alias, parent } => set_parent(s, by, alias, parent).await,
        Change::Invite { alias, user_id } => invite(s, by, alias, user_id).await,
        Change::SetPowerLevel { .. } => set_power_levels(s, by, &[change]).await,
    }
}

async fn update_account(s: &Services, localpart: &str, f: impl FnOnce(&mut crate::users::Account)) -> Result<()> {
    let user_id = s.users.user_id_for(localpart)?;
    let mut account =
        s.users.account(&user_id)?.ok_or_else(|| Error::not_found(format!("no account {user_id} on this node")))?;
    f(&mut account);
    s.users.put_account(&user_id, &account).await
}

/// Sets the display name and, as a profile change does, refreshes the member event in every
/// room the user has joined (sent by the user, as the spec has it).
async fn set_display_name(s: &Services, localpart: &str, name: Option<String>) -> Result<()> {
    update_account(s, localpart, |a| a.displayname = name).await?;
    let user_id = s.users.user_id_for(localpart)?;
    let profile = s.users.profile(&user_id)?.unwrap_or_default();
    for (room_id, user_room) in s.rooms.user_rooms(&user_id)? {
        if user_room.membership == "join" {
            s.rooms.set_membership(&room_id, &user_id, &user_id, "join", profile.clone(), None).await?;
        }
    }
    Ok(())
}

fn encryption() -> Value {
    json!({ "algorithm": "m.megolm.v1.aes-sha2", "rotation_period_ms": 604_800_000u64, "rotation_period_msgs": 100 })
}

fn guest_access(allowed: bool) -> Value {
    json!({ "guest_access": if allowed { "can_join" } else { "forbidden" } })
}

/// `{}` removes the retention (MSC1763: no `max_lifetime`, no limit).
fn retention(max_age_secs: Option<u64>) -> Value {
    match max_age_secs {
        Some(secs) => crate::rooms::retention::content(secs),
        None => json!({}),
    }
}

async fn create_room(s: &Services, by: &UserId, spec: &RoomSpec) -> Result<()> {
    let version = RoomVersionId::try_from(s.config.default_room_version.as_str()).map_err(Error::internal)?;
    let mut creation_content = Map::new();
    if spec.kind == RoomKind::Space {
        creation_content.insert("type".into(), json!("m.space"));
    }
    let mut initial_state = vec![
        (
            "m.room.history_visibility".to_owned(),
            String::new(),
            json!({ "history_visibility": spec.history_visibility.as_str() }),
        ),
        ("m.room.guest_access".to_owned(), String::new(), guest_access(spec.guest_access)),
        (ACCESS_RULES.to_owned(), String::new(), json!({ "rule": spec.access_rule.as_str() })),
    ];
    if spec.retention_max_age.is_some() {
        initial_state.push((RETENTION.to_owned(), String::new(), retention(spec.retention_max_age)));
    }
    let room_id = s
        .rooms
        .create_room(CreateRoom {
            version,
            creator: by.to_owned(),
            creator_profile: s.users.profile(by)?.unwrap_or_default(),
            creation_content,
            preset: Preset::PrivateChat,
            initial_state,
            name: Some(spec.name.clone()),
            topic: spec.topic.clone(),
            invite: Vec::new(),
            is_direct: false,
            alias: Some(read::room_alias(s, &spec.alias)?),
            power_override: None,
            public: false,
            encrypted: spec.encrypted,
        })
        .await?;
    tracing::info!(%room_id, alias = %spec.alias, "room created from policy");
    Ok(())
}

fn room_id(s: &Services, alias: &str) -> Result<OwnedRoomId> {
    let full = read::room_alias(s, alias)?;
    s.rooms.resolve_alias(&full)?.ok_or_else(|| Error::not_found(format!("no room {full} on this node")))
}

async fn state(s: &Services, by: &UserId, alias: &str, kind: &str, content: Value) -> Result<()> {
    send_state(s, by, &room_id(s, alias)?, kind, "", content).await
}

async fn send_state(s: &Services, by: &UserId, room: &RoomId, kind: &str, key: &str, content: Value) -> Result<()> {
    s.rooms.send(room, by, NewEvent::state(kind, key, content), None).await.map(|_| ())
}

/// Links the room into its space both ways: `m.space.child` in the space, `m.space.parent`
/// (canonical) in the room.
async fn set_parent(s: &Services, by: &UserId, alias: &str, parent: &str) -> Result<()> {
    let child = room_id(s, alias)?;
    let space = room_id(s, parent)?;
    let via = json!({ "via": [s.server_name.as_str()] });
    send_state(s, by, &space, "m.space.child", child.as_str(), via.clone()).await?;
    let mut parent_content = via;
    parent_content["canonical"] = json!(true);
    send_state(s, by, &child, "m.space.parent", space.as_str(), parent_content).await
}

async fn invite(s: &Arc<Services>, by: &UserId, alias: &str, user_id: &str) -> Result<()> {
    let room = room_id(s, alias)?;
    let user = UserId::parse(user_id).map_err(|e| Error::invalid_param(format!("`{user_id}`: {e}")))?;
    if !s.users.is_local(&user) {
        return crate::federation::join::invite_remote(s, &room, by, &user, None).await;
    }
    if s.users.account(&user)?.is_none() {
        return Err(Error::not_found(format!("no account {user} on this node")));
    }
    let profile = s.users.profile(&user)?.unwrap_or_default();
    s.rooms.set_membership(&room, by, &user, "invite", profile, None).await.map(|_| ())
}

/// One `m.room.power_levels` event for all level changes of one room.
async fn set_power_levels(s: &Services, by: &UserId, changes: &[&Change]) -> Result<()> {
    let Some(Change::SetPowerLevel { alias, .. }) = changes.first() else { return Ok(()) };
    let room = room_id(s, alias)?;
    let mut content = s
        .rooms
        .state_event(&room, &"m.room.power_levels".into(), "")
        .await?
        .map(|p| p.content_value())
        .unwrap_or_else(|| json!({}));
    if !content.get("users").is_some_and(Value::is_object) {
        content["users"] = json!({});
    }
    for change in changes {
        if let Change::SetPowerLevel { user_id, to, .. } = change {
            content["users"][user_id.as_str()] = json!(to);
        }
    }
    send_state(s, by, &room, "m.room.power_levels", "", content).await
}
