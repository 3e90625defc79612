//! Which users' device lists a client must refresh or may forget, between two stream positions:
//! the `device_lists` of `/sync` and the answer of `/keys/changes`.
//!
//! A client only tracks the devices of users it shares a room with. So besides users whose keys
//! changed, it must hear about users it has just started sharing a room with (it may hold a
//! stale copy of their devices from before, or none) and about users it no longer shares any
//! room with (so it stops trusting and encrypting to their old devices).

use std::collections::BTreeSet;

use ruma::{OwnedUserId, UserId, events::TimelineEventType};

use crate::{Services, error::Result};

#[derive(Debug, Default)]
pub struct DeviceListUpdates {
    pub changed: Vec<OwnedUserId>,
    pub left: Vec<OwnedUserId>,
}

/// The device-list updates for `user` in `(since, upto]`. Room filters do not apply: a client
/// that hides a room from its timeline still encrypts to that room's members.
pub async fn device_list_updates(
    services: &Services,
    user: &UserId,
    since: u64,
    upto: u64,
) -> Result<DeviceListUpdates> {
    let own_changes: BTreeSet<_> = services.rooms.membership_changes(user, since, upto)?.into_iter().collect();
    let mut shared: BTreeSet<OwnedUserId> = BTreeSet::from([user.to_owned()]);
    let mut joined_since = BTreeSet::new();
    let mut gone = BTreeSet::new();
    for (room_id, user_room) in services.rooms.user_rooms(user)? {
        if user_room.membership != "join" {
            if matches!(user_room.membership.as_str(), "leave" | "ban") && own_changes.contains(&room_id) {
                // We left (or were removed) in the window: its members are candidates for `left`.
                gone.extend(services.rooms.members(&room_id, "join").await?);
            }
            continue;
        }
        let members = services.rooms.members(&room_id, "join").await?;
        if own_changes.contains(&room_id) {
            // We joined this room in the window: everyone in it may be new to us.
            joined_since.extend(members.iter().cloned());
        }
        shared.extend(members);
        for (_, pdu) in services.rooms.state_changes(&room_id, since, upto)? {
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

    let mut changed: Vec<OwnedUserId> =
        services.e2ee.changed_users(since, upto)?.into_iter().filter(|u| shared.contains(u)).collect();
    for u in joined_since {
        // Our own join is no news about our own devices.
        if u != user && shared.contains(&u) && !changed.contains(&u) {
            changed.push(u);
        }
    }
    // Someone who left one room but is still with us in another stays tracked.
    let left = gone.into_iter().filter(|u| !shared.contains(u)).collect();
    Ok(DeviceListUpdates { changed, left })
}
