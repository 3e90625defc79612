//! Unread and highlight counts: events after the user's read receipt, run through their push
//! rules. Counting is incremental, so a sync costs only the events since the last one.

use std::{collections::HashMap, sync::Mutex};

use ruma::{
    OwnedRoomId, OwnedUserId, RoomId, UInt, UserId,
    push::{Action, PushConditionRoomCtx, Ruleset},
    serde::Raw,
};

use crate::{Services, error::Result};

#[derive(Clone, Copy, Default)]
struct Counted {
    read_pos: u64,
    upto: u64,
    notify: u64,
    highlight: u64,
}

#[derive(Default)]
pub struct UnreadCache {
    counted: Mutex<HashMap<(OwnedUserId, OwnedRoomId), Counted>>,
}

/// Counting past this many unread events stops: clients show "99+" long before.
const MAX_SCAN: usize = 1000;

pub fn push_rules(services: &Services, user: &UserId) -> Result<Ruleset> {
    Ok(services
        .users
        .account_data(user, None, "m.push_rules")?
        .and_then(|v| v.get("global").cloned())
        .and_then(|g| serde_json::from_value(g).ok())
        .unwrap_or_else(|| Ruleset::server_default(user)))
}

impl UnreadCache {
    pub async fn counts(
        &self,
        services: &Services,
        user: &UserId,
        room: &RoomId,
        upto: u64,
        members: usize,
        display_name: &str,
    ) -> Result<(u64, u64)> {
        let read_pos = ["m.read", "m.read.private"]
            .iter()
            .filter_map(|kind| services.rooms.receipt(room, user, kind).ok().flatten())
            .filter_map(|r| services.rooms.event_with_pos(&r.event_id).ok().flatten().map(|(pos, _)| pos))
            .max()
            .unwrap_or(0);
        let cache_key = (user.to_owned(), room.to_owned());
        let mut counted = self
            .counted
            .lock()
            .ok()
            .and_then(|m| m.get(&cache_key).copied())
            .filter(|c| c.read_pos == read_pos && c.upto <= upto)
            .unwrap_or(Counted { read_pos, upto: read_pos, notify: 0, highlight: 0 });
        if counted.upto < upto {
            let (events, _) = services.rooms.timeline_since(room, counted.upto, upto, MAX_SCAN)?;
            if !events.is_empty() {
                let rules = push_rules(services, user)?;
                let ctx = PushConditionRoomCtx::new(
                    room.to_owned(),
                    UInt::try_from(members).unwrap_or(UInt::MAX),
                    user.to_owned(),
                    display_name.to_owned(),
                );
                for (_, pdu) in &events {
                    if pdu.sender == user {
                        continue;
                    }
                    let value = pdu.to_client_value(Default::default(), true);
                    let Ok(raw) = serde_json::value::to_raw_value(&value) else { continue };
                    let raw: Raw<ruma::events::AnySyncTimelineEvent> = Raw::from_json(raw);
                    let actions = rules.get_actions(&raw, &ctx).await;
                    if actions.iter().any(Action::should_notify) {
                        counted.notify += 1;
                    }
                    if actions.iter().any(|a| a.is_highlight()) {
                        counted.highlight += 1;
                    }
                }
            }
            counted.upto = upto;
        }
        if let Ok(mut m) = self.counted.lock() {
            m.insert(cache_key, counted);
        }
        Ok((counted.notify, counted.highlight))
    }
}
