//! Badge updates: when a user reads on one device, their other devices' badges must drop too.
//! The Push Gateway API allows a notification with only `counts` (no event, room or type) for
//! that; a phone app sets its badge from it and shows nothing.
//!
//! A local user's read receipt (public or private) writes a read row into the push stream in
//! its own commit (`queue::read_row`), so a crash keeps it. The push worker takes each user's
//! reads of a round together, computes their unread total (the `/sync` counts summed), and if
//! it is lower than the total last given to their gateways, queues a counts-only notification
//! for each of their pushers in the same persisted queue as event pushes: same order, retries
//! and backoff. A receipt that lowers nothing (the room was read already) pushes nothing.
//!
//! A burst of receipts (a client marking several rooms read) makes few pushes: at the head of
//! its queue, a badge update is dropped if anything is queued after it (a later badge update or
//! an event push carries counts at least as new), and otherwise waits [`SETTLE`] after it was
//! queued for the rest of the burst.
//!
//! The total last given is kept in memory: after a restart the first read sends the count
//! once even if it did not change, which is harmless.

use std::{collections::HashMap, sync::Mutex, time::Duration};

use ruma::{OwnedUserId, UserId};
use tocsin_store::WriteBatch;

use super::{
    pushers,
    queue::{QueuedPush, unread_total},
};
use crate::{
    Services,
    error::Result,
    store::{Db, key, pos_bytes, trees},
};

/// How long a badge update at the head of its queue waits for a newer one.
pub const SETTLE: Duration = Duration::from_millis(300);

/// The unread total each user's gateways were last given (by an event push or a badge update).
#[derive(Default)]
pub struct Badges {
    told: Mutex<HashMap<OwnedUserId, u64>>,
}

impl Badges {
    pub(super) fn told(&self, user: &UserId, unread: u64) {
        if let Ok(mut told) = self.told.lock() {
            told.insert(user.to_owned(), unread);
        }
    }

    fn last(&self, user: &UserId) -> Option<u64> {
        self.told.lock().ok().and_then(|told| told.get(user).copied())
    }
}

/// Queues a badge update for each of `user`'s pushers at `pos` (their last read's position)
/// if their unread total dropped; returns the pushers that got one.
pub(super) async fn queue(
    services: &Services,
    user: &UserId,
    pos: u64,
    now: u64,
    batch: &mut WriteBatch,
) -> Result<Vec<Vec<u8>>> {
    let targets = pushers::list(&services.db, user)?;
    if targets.is_empty() {
        return Ok(Vec::new());
    }
    let unread = unread_total(services, user).await?;
    if services.push.badges.last(user).is_some_and(|told| unread >= told) {
        return Ok(Vec::new());
    }
    services.push.badges.told(user, unread);
    let item = QueuedPush { event_id: None, room_id: None, unread, actions: Vec::new(), high: false, queued_at: now };
    let mut touched = Vec::with_capacity(targets.len());
    for target in targets {
        let pusher_key = pushers::pusher_key(user, &target.pusher.ids);
        batch.insert(trees::PUSH_QUEUE, key(&[&pusher_key, &pos_bytes(pos)]), Db::to_json(&item)?);
        touched.push(pusher_key);
    }
    Ok(touched)
}

/// What the delivery task does with a badge update at the head of its queue.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum AtHead {
    Send,
    /// Something newer is queued behind it: drop it unsent.
    Superseded,
    /// Wait this long for the rest of a burst, then look again.
    Settle(Duration),
}

pub(super) fn at_head(item: &QueuedPush, more_queued: bool, now: u64) -> AtHead {
    if more_queued {
        return AtHead::Superseded;
    }
    let ready_at = item.queued_at.saturating_add(SETTLE.as_millis() as u64);
    if now < ready_at { AtHead::Settle(Duration::from_millis(ready_at - now)) } else { AtHead::Send }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn badge(queued_at: u64) -> QueuedPush {
        QueuedPush { event_id: None, room_id: None, unread: 0, actions: Vec::new(), high: false, queued_at }
    }

    #[test]
    fn a_badge_update_waits_for_its_burst_and_yields_to_anything_newer() {
        assert_eq!(at_head(&badge(1_000), true, 1_000), AtHead::Superseded);
        assert_eq!(at_head(&badge(1_000), false, 1_100), AtHead::Settle(Duration::from_millis(200)));
        assert_eq!(at_head(&badge(1_000), false, 1_300), AtHead::Send);
    }

    #[test]
    fn an_event_row_from_before_badge_updates_still_reads() {
        let old = r#"{"event_id":"$e:x","room_id":"!r:x","unread":2,"actions":["notify"],"high":false}"#;
        let item: QueuedPush = serde_json::from_str(old).unwrap();
        assert!(!item.is_badge() && item.queued_at == 0 && item.unread == 2);
        let new = serde_json::to_value(badge(5)).unwrap();
        assert!(new.get("event_id").is_none() && new.get("room_id").is_none(), "{new}");
    }
}
