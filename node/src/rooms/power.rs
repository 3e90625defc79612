//! Power levels as ruma computes them (room v12 creators included), read from any view of a
//! room's state: the live head, or the state before an event.

use std::sync::Arc;

use ruma::{
    OwnedUserId, UserId,
    events::{
        StateEventType,
        room::power_levels::{RoomPowerLevels, RoomPowerLevelsEventContent, RoomPowerLevelsSource},
    },
    room_version_rules::AuthorizationRules,
};

use super::{Pdu, RoomHead};

/// The room's power levels given a lookup of its state by type and key.
pub fn power_levels(
    rules: &AuthorizationRules,
    state: impl Fn(&StateEventType, &str) -> Option<Arc<Pdu>>,
) -> RoomPowerLevels {
    let create = state(&StateEventType::RoomCreate, "");
    let mut creators: Vec<OwnedUserId> = Vec::new();
    if let Some(create) = &create {
        if rules.explicitly_privilege_room_creators {
            creators.push(create.sender.clone());
            if let Some(extra) = create.content_field("additional_creators").and_then(|v| v.as_array().cloned()) {
                creators.extend(extra.iter().filter_map(|u| u.as_str()).filter_map(|u| UserId::parse(u).ok()));
            }
        } else if let Some(creator) = create
            .content_field("creator")
            .and_then(|v| v.as_str().and_then(|u| UserId::parse(u).ok()))
            .or_else(|| Some(create.sender.clone()))
        {
            creators.push(creator);
        }
    }
    // A power-levels event that does not parse (another server's odd content) counts as absent,
    // which is the spec's most restrictive reading for everyone but the creators.
    let content = state(&StateEventType::RoomPowerLevels, "")
        .and_then(|pdu| serde_json::from_str::<RoomPowerLevelsEventContent>(pdu.content.get()).ok());
    RoomPowerLevels::new(RoomPowerLevelsSource::from(content), rules, creators)
}

impl RoomHead {
    /// The current power levels.
    pub fn power_levels(&self) -> RoomPowerLevels {
        power_levels(&self.rules.authorization, |kind, key| self.get(kind, key).cloned())
    }

    /// Whether `user` may send a state event of `kind` now.
    pub fn may_send_state(&self, user: &UserId, kind: StateEventType) -> bool {
        self.power_levels().user_can_send_state(user, kind)
    }
}
