//! Unread and highlight counts: events after the user's read receipt, run through their push
//! rules. Counting is incremental, so a sync costs only the events since the last one.

use std::{collections::HashMap, sync::Mutex};

use ruma::{
    OwnedRoomId, OwnedUserId, RoomId, UserId,
    push::{Action, Ruleset},
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

/// The user's effective push rules (their own plus the node's alarm rules; see `push::rules`).
pub fn push_rules(services: &Services, user: &UserId) -> Result<std::sync::Arc<Ruleset>> {
    crate::push::rules::effective(services, user)
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
        let read_pos = services.rooms.read_pos(room, user)?;
        // Without a receipt, counting starts at the user's join (as Synapse does): the invite
        // and what came before it are not unread news.
        let joined_at = services.rooms.user_room(user, room)?.map(|r| r.pos).unwrap_or(0);
        let read_pos = read_pos.max(joined_at);
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
                // The same evaluation the push worker makes, so badge and push agree.
                let facts = crate::push::rules::RoomFacts::with_member_count(services, room, members).await?;
                // The user's own events never count; skipped before they are flattened.
                for (_, pdu) in events.iter().filter(|(_, pdu)| pdu.sender != user) {
                    let Some(input) = crate::push::rules::RuleInput::new(pdu) else { continue };
                    let actions = crate::push::rules::actions(&rules, user, display_name, &facts, &input).await;
                    if actions.iter().any(Action::should_notify) {
                        counted.notify += 1;
                    }
                    if crate::push::rules::highlights(&actions) {
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
