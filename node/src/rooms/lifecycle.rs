//! Creating rooms and changing memberships. Every step is an ordinary signed event, authorised
//! by the room's auth rules, so a refused act is a 403 and nothing is stored.

use ruma::{OwnedRoomAliasId, OwnedRoomId, OwnedUserId, RoomId, RoomVersionId, UserId, events::TimelineEventType};
use serde_json::{Value, json};
use tocsin_store::WriteBatch;

use super::{NewEvent, Rooms};
use crate::{
    error::{Error, Result},
    store::trees,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Preset {
    PrivateChat,
    TrustedPrivateChat,
    PublicChat,
}

/// Everything `createRoom` asks for, already checked by the handler.
#[derive(Debug, Clone)]
pub struct CreateRoom {
    pub version: RoomVersionId,
    pub creator: OwnedUserId,
    pub creator_profile: (Option<String>, Option<String>),
    pub creation_content: serde_json::Map<String, Value>,
    pub preset: Preset,
    pub initial_state: Vec<(String, String, Value)>,
    pub name: Option<String>,
    pub topic: Option<String>,
    pub invite: Vec<OwnedUserId>,
    pub is_direct: bool,
    pub alias: Option<OwnedRoomAliasId>,
    pub power_override: Option<serde_json::Map<String, Value>>,
    pub public: bool,
    pub encrypted: bool,
}

/// The member event content for a user, with their profile.
pub fn member_content(membership: &str, profile: &(Option<String>, Option<String>), reason: Option<&str>) -> Value {
    let mut content = json!({ "membership": membership });
    if let Some(name) = &profile.0 {
        content["displayname"] = Value::String(name.clone());
    }
    if let Some(avatar) = &profile.1 {
        content["avatar_url"] = Value::String(avatar.clone());
    }
    if let Some(reason) = reason {
        content["reason"] = Value::String(reason.to_owned());
    }
    content
}

impl Rooms {
    pub async fn create_room(&self, req: CreateRoom) -> Result<OwnedRoomId> {
        if let Some(alias) = &req.alias
            && self.resolve_alias(alias)?.is_some()
        {
            return Err(Error::RoomInUse);
        }
        let rules = super::version::rules(&req.version)?;
        let mut create = req.creation_content.clone();
        if !rules.authorization.use_room_create_sender {
            create.insert("creator".into(), Value::String(req.creator.to_string()));
        }
        create.insert("room_version".into(), Value::String(req.version.to_string()));
        let room_id = self.create(req.version.clone(), &req.creator, Value::Object(create)).await?;
        let creator = &*req.creator;
        let send_state = |kind: &str, key: &str, content: Value| NewEvent::state(kind, key, content);

        self.send(
            &room_id,
            creator,
            send_state("m.room.member", creator.as_str(), member_content("join", &req.creator_profile, None)),
            None,
        )
        .await?;

        // Creators have unbounded power from v12 on and must not be listed in `users`.
        let creators_implicit = rules.authorization.explicitly_privilege_room_creators;
        let mut users = serde_json::Map::new();
        if !creators_implicit {
            users.insert(creator.to_string(), json!(100));
        }
        if req.preset == Preset::TrustedPrivateChat {
            for invitee in &req.invite {
                users.insert(invitee.to_string(), json!(100));
            }
        }
        let mut power = json!({
            "users": users,
            "users_default": 0,
            "events": {
                "m.room.name": 50, "m.room.power_levels": 100, "m.room.history_visibility": 100,
                "m.room.canonical_alias": 50, "m.room.avatar": 50, "m.room.tombstone": 100,
                "m.room.server_acl": 100, "m.room.encryption": 100,
            },
            "events_default": 0, "state_default": 50, "ban": 50, "kick": 50, "redact": 50, "invite": 0,
        });
        if let Some(over) = &req.power_override {
            for (k, v) in over {
                power[k] = v.clone();
            }
        }
        self.send(&room_id, creator, send_state("m.room.power_levels", "", power), None).await?;

        if let Some(alias) = &req.alias {
            self.send(&room_id, creator, send_state("m.room.canonical_alias", "", json!({ "alias": alias })), None)
                .await?;
        }
        let join_rule = if req.preset == Preset::PublicChat { "public" } else { "invite" };
        self.send(&room_id, creator, send_state("m.room.join_rules", "", json!({ "join_rule": join_rule })), None)
            .await?;
        // History, guests and retention from the node policy (its room with this alias, else
        // its defaults), unless initial_state sets them. Without a policy: shared history and,
        // the crisis default, no guests whatever the preset says.
        let defaults = self.policy.new_room_defaults(req.alias.as_ref().map(|a| a.alias()));
        let in_initial = |kind: &str| req.initial_state.iter().any(|(k, _, _)| k == kind);
        if !in_initial("m.room.history_visibility") {
            let visibility = defaults.as_ref().map_or("shared", |d| d.history_visibility);
            let content = json!({ "history_visibility": visibility });
            self.send(&room_id, creator, send_state("m.room.history_visibility", "", content), None).await?;
        }
        if !in_initial("m.room.guest_access") {
            let guests = if defaults.as_ref().is_some_and(|d| d.guest_access) { "can_join" } else { "forbidden" };
            let content = json!({ "guest_access": guests });
            self.send(&room_id, creator, send_state("m.room.guest_access", "", content), None).await?;
        }
        if !in_initial(super::retention::RETENTION_EVENT)
            && let Some(max_age) = defaults.as_ref().and_then(|d| d.retention_max_age)
        {
            let content = super::retention::content(max_age);
            self.send(&room_id, creator, send_state(super::retention::RETENTION_EVENT, "", content), None).await?;
        }

        // The access rule from the node policy (policy::access), unless initial_state sets one.
        let access_type = crate::policy::access::STATE_TYPE;
        if !req.initial_state.iter().any(|(kind, _, _)| kind == access_type)
            && let Some(rule) =
                self.policy.access_rule_for_new_room(req.alias.as_ref().map(|a| a.alias()), req.is_direct)
        {
            let content = crate::policy::access::content(rule);
            self.send(&room_id, creator, send_state(access_type, "", content), None).await?;
        }
        let has_encryption = req.initial_state.iter().any(|(kind, _, _)| kind == "m.room.encryption");
        for (kind, key, content) in &req.initial_state {
            self.send(&room_id, creator, send_state(kind, key, content.clone()), None).await?;
        }
        if req.encrypted && !has_encryption && req.preset != Preset::PublicChat {
            let content = json!({ "algorithm": "m.megolm.v1.aes-sha2", "rotation_period_ms": 604_800_000u64, "rotation_period_msgs": 100 });
            self.send(&room_id, creator, send_state("m.room.encryption", "", content), None).await?;
        }
        if let Some(name) = &req.name {
            self.send(&room_id, creator, send_state("m.room.name", "", json!({ "name": name })), None).await?;
        }
        if let Some(topic) = &req.topic {
            self.send(&room_id, creator, send_state("m.room.topic", "", json!({ "topic": topic })), None).await?;
        }
        // Users of other servers are invited by the caller through federation (their server
        // must countersign the invite).
        for invitee in req.invite.iter().filter(|u| u.server_name() == self.server_name) {
            let mut content = json!({ "membership": "invite" });
            if req.is_direct {
                content["is_direct"] = Value::Bool(true);
            }
            self.send(&room_id, creator, send_state("m.room.member", invitee.as_str(), content), None).await?;
        }

        let mut batch = WriteBatch::new();
        if let Some(alias) = &req.alias {
            batch.insert(trees::ALIASES, alias.as_bytes().to_vec(), room_id.as_bytes().to_vec());
        }
        if req.public {
            batch.insert(trees::PUBLIC_ROOMS, room_id.as_bytes().to_vec(), Vec::new());
        }
        if !batch.is_empty() {
            self.db.write(batch).await?;
        }
        Ok(room_id)
    }

    /// Sets a membership for `target`, sent by `sender`; the auth rules decide if it's allowed.
    pub async fn set_membership(
        &self,
        room_id: &RoomId,
        sender: &UserId,
        target: &UserId,
        membership: &str,
        profile: (Option<String>, Option<String>),
        reason: Option<&str>,
    ) -> Result<ruma::OwnedEventId> {
        let content = member_content(membership, &profile, reason);
        let event = NewEvent {
            kind: TimelineEventType::RoomMember,
            content,
            state_key: Some(target.to_string()),
            redacts: None,
        };
        Ok(self.send(room_id, sender, event, None).await?.event_id.clone())
    }

    pub fn resolve_alias(&self, alias: &ruma::RoomAliasId) -> Result<Option<OwnedRoomId>> {
        match self.db.get(trees::ALIASES, alias.as_bytes())? {
            Some(id) => Ok(Some(RoomId::parse(crate::store::utf8(&id)?).map_err(Error::internal)?)),
            None => Ok(None),
        }
    }

    pub async fn set_alias(&self, alias: &ruma::RoomAliasId, room_id: Option<&RoomId>) -> Result<()> {
        let mut batch = WriteBatch::new();
        match room_id {
            Some(room) => batch.insert(trees::ALIASES, alias.as_bytes().to_vec(), room.as_bytes().to_vec()),
            None => batch.remove(trees::ALIASES, alias.as_bytes().to_vec()),
        }
        self.db.write(batch).await
    }

    pub fn aliases_of(&self, room_id: &RoomId) -> Result<Vec<ruma::OwnedRoomAliasId>> {
        let mut out = Vec::new();
        for (k, v) in self.db.scan_prefix(trees::ALIASES, b"", usize::MAX)? {
            if v == room_id.as_bytes()
                && let Ok(alias) = ruma::RoomAliasId::parse(crate::store::utf8(&k)?)
            {
                out.push(alias);
            }
        }
        Ok(out)
    }

    pub fn public_rooms(&self) -> Result<Vec<OwnedRoomId>> {
        let mut out = Vec::new();
        for (k, _) in self.db.scan_prefix(trees::PUBLIC_ROOMS, b"", usize::MAX)? {
            if let Ok(room) = RoomId::parse(crate::store::utf8(&k)?) {
                out.push(room);
            }
        }
        Ok(out)
    }

    pub async fn set_public(&self, room_id: &RoomId, public: bool) -> Result<()> {
        let mut batch = WriteBatch::new();
        if public {
            batch.insert(trees::PUBLIC_ROOMS, room_id.as_bytes().to_vec(), Vec::new());
        } else {
            batch.remove(trees::PUBLIC_ROOMS, room_id.as_bytes().to_vec());
        }
        self.db.write(batch).await
    }
}
