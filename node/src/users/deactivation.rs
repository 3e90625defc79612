//! Ending an account's sessions and the account itself. One place for what `/logout/all`,
//! `/account/deactivate` and the admin API's logout and deactivation do, since each step reaches
//! past the users area (device keys, device-list updates to other servers, room membership).

use ruma::{DeviceId, UserId};

use crate::{Services, error::Result};

/// What a deactivation did.
#[derive(Debug, Clone, Copy)]
pub struct Deactivated {
    pub devices_logged_out: usize,
    pub rooms_left: usize,
}

/// Removes the user's devices (access tokens and keys), but `keep`, and tells the servers that
/// share a room with the user that the device list changed.
pub async fn remove_devices(s: &Services, user_id: &UserId, keep: Option<&DeviceId>) -> Result<usize> {
    let mut removed = 0;
    for (device_id, _) in s.users.devices(user_id)? {
        if Some(&*device_id) == keep {
            continue;
        }
        let prev = crate::federation::edu::key_position(s, user_id);
        s.users.remove_device(user_id, &device_id).await?;
        s.e2ee.remove_device(user_id, &device_id).await?;
        crate::federation::edu::device_list_update(s, user_id, &device_id, prev).await;
        removed += 1;
    }
    Ok(removed)
}

/// Deactivates the account: no password, no devices, out of every joined room. The user id
/// stays taken. A room that cannot be left is logged and the rest still done.
pub async fn deactivate(s: &Services, user_id: &UserId) -> Result<Deactivated> {
    let mut account = s.users.account(user_id)?.ok_or_else(|| crate::Error::not_found("no such user"))?;
    account.deactivated = true;
    account.password_hash = None;
    s.users.put_account(user_id, &account).await?;
    let devices_logged_out = remove_devices(s, user_id, None).await?;
    let mut rooms_left = 0;
    for room_id in s.rooms.joined_rooms(user_id)? {
        match s.rooms.set_membership(&room_id, user_id, user_id, "leave", (None, None), Some("deactivated")).await {
            Ok(_) => rooms_left += 1,
            Err(e) => tracing::warn!(%user_id, %room_id, error = %e, "deactivation: cannot leave a room"),
        }
    }
    Ok(Deactivated { devices_logged_out, rooms_left })
}
