//! Room upgrades (`POST /rooms/{roomId}/upgrade`): a new room of the requested version with the
//! old room's settings, a tombstone in the old room pointing at it, the old room's local aliases
//! and directory entry moved over, and the old room quietened (only moderators may speak or
//! invite). Members follow the tombstone themselves, as in every homeserver.

use ruma::{
    OwnedRoomId, RoomId, RoomVersionId, UserId,
    events::{StateEventType, room::power_levels::UserPowerLevel},
};
use serde_json::{Value, json};
use tocsin_store::WriteBatch;

use super::{CreateRoom, NewEvent, Preset, Rooms};
use crate::{
    error::{Error, Result},
    store::{trees, utf8},
};

/// State copied into the new room, every state key of each type.
const COPIED: &[&str] = &[
    "m.room.join_rules",
    "m.room.history_visibility",
    "m.room.guest_access",
    "m.room.name",
    "m.room.topic",
    "m.room.avatar",
    "m.room.encryption",
    "m.room.server_acl",
    "m.room.canonical_alias",
    "m.space.child",
    "m.space.parent",
    super::retention::RETENTION_EVENT,
    crate::policy::access::STATE_TYPE,
];

impl Rooms {
    /// Upgrades `room_id` to `version` for `user`, who must be joined and may send the
    /// tombstone. Returns the new room.
    pub async fn upgrade(
        &self,
        room_id: &RoomId,
        user: &UserId,
        profile: (Option<String>, Option<String>),
        version: RoomVersionId,
    ) -> Result<OwnedRoomId> {
        let rules = super::version::rules(&version)?;
        if self.membership(room_id, user).await?.as_deref() != Some("join") {
            return Err(Error::forbidden("you are not in this room"));
        }
        let own_level = {
            let head = self.head(room_id)?;
            let head = head.lock().await;
            if !head.may_send_state(user, StateEventType::RoomTombstone) {
                return Err(Error::forbidden("upgrading needs the power to send m.room.tombstone"));
            }
            // A creator of a v12 room has no number; in a room of an older version it is 100.
            match head.power_levels().for_user(user) {
                UserPowerLevel::Infinite => json!(100),
                UserPowerLevel::Int(level) => json!(i64::from(level)),
                _ => json!(100),
            }
        };
        let state = self.current_state(room_id).await?;
        let of = |kind: &str| state.iter().find(|p| p.kind.to_string() == kind && p.state_key.as_deref() == Some(""));

        let mut creation_content = serde_json::Map::new();
        creation_content.insert("predecessor".into(), json!({ "room_id": room_id }));
        if let Some(create) = of("m.room.create") {
            for field in ["type", "m.federate"] {
                if let Some(value) = create.content_field(field) {
                    creation_content.insert(field.into(), value);
                }
            }
        }
        let initial_state: Vec<(String, String, Value)> = state
            .iter()
            .filter(|p| COPIED.contains(&p.kind.to_string().as_str()))
            .filter_map(|p| Some((p.kind.to_string(), p.state_key.clone()?, p.content_value())))
            .collect();
        let public = of("m.room.join_rules").and_then(|p| p.content_field("join_rule")) == Some(json!("public"));

        // The old power levels, with the upgrader able to set up the new room; the old levels
        // are restored once its state is in. Creators of v12 rooms are all-powerful and must not
        // be listed.
        let old_power = of("m.room.power_levels").map(|p| p.content_value()).unwrap_or_else(|| json!({}));
        let mut power = old_power.as_object().cloned().unwrap_or_default();
        let mut users = power.get("users").and_then(Value::as_object).cloned().unwrap_or_default();
        let creators_implicit = rules.authorization.explicitly_privilege_room_creators;
        if creators_implicit {
            users.remove(user.as_str());
        } else {
            users.insert(user.to_string(), json!(100));
        }
        power.insert("users".into(), Value::Object(users));

        let new_room = self
            .create_room(CreateRoom {
                version,
                creator: user.to_owned(),
                creator_profile: profile,
                creation_content,
                preset: if public { Preset::PublicChat } else { Preset::PrivateChat },
                initial_state,
                name: None,
                topic: None,
                invite: Vec::new(),
                is_direct: false,
                alias: None,
                power_override: Some(power.clone()),
                public: false,
                // Encryption comes over with the old room's state, as it was.
                encrypted: false,
            })
            .await?;
        let mut restored = old_power.as_object().cloned().unwrap_or_default();
        let mut restored_users = restored.get("users").and_then(Value::as_object).cloned().unwrap_or_default();
        if creators_implicit {
            restored_users.remove(user.as_str());
        } else {
            // The upgrader keeps the level they had, which may have been a creator's.
            restored_users.insert(user.to_string(), own_level);
        }
        restored.insert("users".into(), Value::Object(restored_users));
        if Value::Object(restored.clone()) != Value::Object(power) {
            let event = NewEvent::state("m.room.power_levels", "", Value::Object(restored));
            self.send(&new_room, user, event, None).await?;
        }

        let tombstone = json!({ "body": "This room has been replaced", "replacement_room": new_room });
        self.send(room_id, user, NewEvent::state("m.room.tombstone", "", tombstone), None).await?;
        self.quieten(room_id, user, &old_power).await;
        self.move_aliases(room_id, &new_room).await?;
        Ok(new_room)
    }

    /// Raises the old room's `events_default` and `invite` so only moderators speak there now,
    /// when the upgrader may change power levels; otherwise the old room stays as it was.
    async fn quieten(&self, room_id: &RoomId, user: &UserId, old_power: &Value) {
        let users_default = old_power.get("users_default").and_then(Value::as_i64).unwrap_or(0);
        let level = json!(50.max(users_default + 1));
        let mut power = old_power.as_object().cloned().unwrap_or_default();
        power.insert("events_default".into(), level.clone());
        power.insert("invite".into(), level);
        let event = NewEvent::state("m.room.power_levels", "", Value::Object(power));
        if let Err(e) = self.send(room_id, user, event, None).await {
            tracing::info!(%room_id, error = %e, "the upgraded room keeps its power levels");
        }
    }

    /// Points the old room's local aliases and its directory entry at the new room.
    async fn move_aliases(&self, old: &RoomId, new: &RoomId) -> Result<()> {
        let mut batch = WriteBatch::new();
        for (alias, target) in self.db.scan_prefix(trees::ALIASES, b"", usize::MAX)? {
            if utf8(&target)? == old.as_str() {
                batch.insert(trees::ALIASES, alias, new.as_bytes().to_vec());
            }
        }
        if self.db.get(trees::PUBLIC_ROOMS, old.as_bytes())?.is_some() {
            batch.remove(trees::PUBLIC_ROOMS, old.as_bytes().to_vec());
            batch.insert(trees::PUBLIC_ROOMS, new.as_bytes().to_vec(), Vec::new());
        }
        if !batch.is_empty() {
            self.db.write(batch).await?;
        }
        Ok(())
    }
}
