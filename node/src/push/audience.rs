//! Who an event must be evaluated for. A room's local members are split once per room state
//! (and again when any user's rules change) into those on the default rules, who share one
//! evaluation, and those evaluated alone. When the shared evaluation does not notify (a
//! reaction, an edit, a receipt-like event), only the members evaluated alone and the members
//! the event names are visited: 5,000 reactions in a 1,000-member room are 5,000 evaluations,
//! not five million visits.

use std::{collections::HashMap, sync::Arc};

use ruma::{OwnedRoomId, OwnedUserId, RoomId, UserId};

use super::rules::{self, RuleInput};
use crate::{Services, error::Result, rooms::LocalMembers};

/// A room's local members as the push worker splits them.
pub struct Audience {
    pub members: Arc<LocalMembers>,
    /// Joined members whose rules are not the defaults, or whose ids `event_match` would read as
    /// a glob pattern: never covered by the shared evaluation. Sorted.
    alone: Vec<OwnedUserId>,
    /// [`super::rules::RulesCache::generation`] when `alone` was made.
    rules_generation: u64,
}

impl Audience {
    fn load(services: &Services, members: Arc<LocalMembers>) -> Result<Self> {
        let rules_generation = services.push.rules.generation();
        let mut alone = Vec::new();
        for user in &members.joined {
            if !rules::effective_rules(services, user)?.default || user.as_str().contains(['*', '?']) {
                alone.push(user.clone());
            }
        }
        Ok(Self { members, alone, rules_generation })
    }

    pub fn is_joined(&self, user: &UserId) -> bool {
        self.members.joined.binary_search_by(|u| u.as_str().cmp(user.as_str())).is_ok()
    }

    fn is_alone(&self, user: &UserId) -> bool {
        self.alone.binary_search_by(|u| u.as_str().cmp(user.as_str())).is_ok()
    }

    /// Joined members the event names (a mention, the target of a membership change).
    pub fn named<'a>(&'a self, input: &'a RuleInput) -> impl Iterator<Item = OwnedUserId> + 'a {
        input
            .strings()
            .filter(|s| s.starts_with('@'))
            .filter_map(|s| UserId::parse(s.as_str()).ok())
            .filter(|u| self.is_joined(u))
    }

    /// A joined member the shared evaluation speaks for: on the default rules, not the sender,
    /// not named by the event.
    pub fn representative(&self, input: &RuleInput) -> Option<&UserId> {
        self.members.joined.iter().find(|u| !self.is_alone(u) && !input.is_sender(u) && !input.names(u)).map(|u| &**u)
    }

    /// The members evaluated even when the shared evaluation does not notify.
    pub fn alone(&self) -> &[OwnedUserId] {
        &self.alone
    }
}

/// How many rooms' audiences the push worker keeps: the rooms with traffic now.
const KEPT_ROOMS: usize = 1024;

/// The push worker's audiences, each kept while its room's state and every user's rules are
/// unchanged. Splitting a 1,000-member room again for each round (a round is often a single
/// event in a burst of reactions) was the worker's biggest cost.
#[derive(Default)]
pub struct Audiences {
    rooms: HashMap<OwnedRoomId, Arc<Audience>>,
}

impl Audiences {
    pub async fn of(&mut self, services: &Services, room_id: &RoomId) -> Result<Arc<Audience>> {
        let members = services.rooms.local_members(room_id).await?;
        if let Some(known) = self.rooms.get(room_id)
            && Arc::ptr_eq(&known.members, &members)
            && known.rules_generation == services.push.rules.generation()
        {
            return Ok(known.clone());
        }
        if self.rooms.len() >= KEPT_ROOMS {
            self.rooms.clear();
        }
        let audience = Arc::new(Audience::load(services, members)?);
        self.rooms.insert(room_id.to_owned(), audience.clone());
        Ok(audience)
    }
}
