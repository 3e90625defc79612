//! Which users' device lists a client must refresh or may forget, between two stream positions:
//! the `device_lists` of `/sync` and the answer of `/keys/changes`.
//!
//! A client only tracks the devices of users it shares a room with. So besides users whose keys
//! changed, it must hear about users it has just started sharing a room with (it may hold a
//! stale copy of their devices from before, or none) and about users it no longer shares any
//! room with (so it stops trusting and encrypting to their old devices).

use std::collections::BTreeSet;

use ruma::{OwnedRoomId, OwnedUserId, UserId, events::TimelineEventType};

use crate::{Services, error::Result, rooms::read::UserRoom};

#[derive(Debug, Default)]
pub struct DeviceListUpdates {
    pub changed: Vec<OwnedUserId>,
    pub left: Vec<OwnedUserId>,
}

/// The device-list updates for `user` in `(since, upto]`. Room filters do not apply: a client
/// that hides a room from its timeline still encrypts to that room's members.
///
/// Only rooms that changed in the window can hold membership events from it, so when the room
/// log reaches back to `since` only those are read; the cost follows what changed, not the
/// user's room count.
pub async fn device_list_updates(
    services: &Services,
    user: &UserId,
    since: u64,
    upto: u64,
) -> Result<DeviceListUpdates> {
    let own_changes: BTreeSet<_> = services.rooms.membership_changes(user, since, upto)?.into_iter().collect();
    let rooms = match services.db.changes.changed(since, upto) {
        Some(mut changed) => {
            changed.extend(own_changes.iter().cloned());
            services.rooms.user_rooms_among(user, changed)?
        }
        None => services.rooms.user_rooms(user)?,
    };
    device_list_updates_among(services, user, since, upto, &own_changes, &rooms).await
}

/// [`device_list_updates`] for a caller that has already read the user's membership changes in
/// the window (`own_changes`) and `rooms`: the user's rooms among those that changed in it (any
/// superset will do). `/sync` reads both anyway.
pub async fn device_list_updates_among(
    services: &Services,
    user: &UserId,
    since: u64,
    upto: u64,
    own_changes: &BTreeSet<OwnedRoomId>,
    rooms: &[(OwnedRoomId, UserRoom)],
) -> Result<DeviceListUpdates> {
    let mut joined_since = BTreeSet::new();
    let mut gone = BTreeSet::new();
    for (room_id, user_room) in rooms {
        if user_room.membership != "join" {
            if matches!(user_room.membership.as_str(), "leave" | "ban") && own_changes.contains(room_id) {
                // We left (or were removed) in the window: its members are candidates for `left`.
                gone.extend(services.rooms.members(room_id, "join").await?);
            }
            continue;
        }
        if own_changes.contains(room_id) {
            // We joined this room in the window: everyone in it may be new to us.
            joined_since.extend(services.rooms.members(room_id, "join").await?);
        }
        for (_, pdu) in services.rooms.state_changes(room_id, since, upto)? {
            if pdu.kind != TimelineEventType::RoomMember {
                continue;
            }
            let Some(Ok(member)) = pdu.state_key.as_deref().map(UserId::parse) else {
                continue;
            };
            let membership = serde_json::from_str::<serde_json::Value>(pdu.content.get())
                .ok()
                .and_then(|c| c.get("membership").and_then(|m| m.as_str()).map(str::to_owned));
            match membership.as_deref() {
                Some("join") => {
                    joined_since.insert(member);
                }
                Some("leave" | "ban") => {
                    gone.insert(member);
                }
                _ => {}
            }
        }
    }

    let mut sharing = Sharing::new(user);
    let mut changed = Vec::new();
    for u in services.e2ee.changed_users(since, upto)? {
        if sharing.shares(services, &u).await? {
            changed.push(u);
        }
    }
    for u in joined_since {
        // Our own join is no news about our own devices.
        if u != user && !changed.contains(&u) && sharing.shares(services, &u).await? {
            changed.push(u);
        }
    }
    // Someone who left one room but is still with us in another stays tracked.
    let mut left = Vec::new();
    for u in gone {
        if !sharing.shares(services, &u).await? {
            left.push(u);
        }
    }
    Ok(DeviceListUpdates { changed, left })
}

/// Checks of "does this user share a joined room with `user`". Each check reads the other
/// user's rooms; past [`MAX_SINGLE_CHECKS`] it is cheaper to gather everyone `user` shares a
/// room with once, and later checks use that set.
struct Sharing<'a> {
    user: &'a UserId,
    checks: usize,
    everyone: Option<BTreeSet<OwnedUserId>>,
}

const MAX_SINGLE_CHECKS: usize = 64;

impl<'a> Sharing<'a> {
    fn new(user: &'a UserId) -> Self {
        Self { user, checks: 0, everyone: None }
    }

    async fn shares(&mut self, services: &Services, other: &UserId) -> Result<bool> {
        if other == self.user {
            return Ok(true);
        }
        if self.everyone.is_none() && self.checks == MAX_SINGLE_CHECKS {
            let mut everyone = BTreeSet::new();
            for room_id in services.rooms.joined_rooms(self.user)? {
                everyone.extend(services.rooms.members(&room_id, "join").await?);
            }
            self.everyone = Some(everyone);
        }
        if let Some(everyone) = &self.everyone {
            return Ok(everyone.contains(other));
        }
        self.checks += 1;
        for room_id in services.rooms.joined_rooms(other)? {
            if services.rooms.user_room(self.user, &room_id)?.is_some_and(|r| r.membership == "join") {
                return Ok(true);
            }
        }
        Ok(false)
    }
}
