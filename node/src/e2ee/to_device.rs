//! To-device messages: queued per device, delivered by `/sync`, deleted once the client syncs
//! past them.

use std::ops::Bound;

use ruma::{DeviceId, UserId};
use serde_json::Value;
use tocsin_store::WriteBatch;

use super::E2ee;
use crate::{
    error::{Error, Result},
    store::{key, pos_bytes, prefix, trees},
};

impl E2ee {
    /// Queues messages; each target is (user, device, event) and shares one position.
    pub async fn send_to_device(&self, sender: &UserId, event_type: &str, targets: Vec<(ruma::OwnedUserId, ruma::OwnedDeviceId, Value)>) -> Result<()> {
        if targets.is_empty() {
            return Ok(());
        }
        let mut rows = Vec::new();
        for (user, device, content) in &targets {
            let event = serde_json::json!({ "type": event_type, "sender": sender, "content": content });
            rows.push((user.clone(), device.clone(), serde_json::to_vec(&event).map_err(Error::internal)?));
        }
        self.db
            .write_streamed(|pos, batch| {
                for (user, device, event) in rows {
                    batch.insert(trees::TO_DEVICE, key(&[user.as_bytes(), device.as_bytes(), &pos_bytes(pos)]), event);
                }
            })
            .await?;
        Ok(())
    }

    /// All devices of a user, for `*` targets.
    pub fn device_ids(&self, user: &UserId) -> Result<Vec<ruma::OwnedDeviceId>> {
        Ok(self.device_keys(user)?.into_keys().collect())
    }

    /// Messages for a device with position in `(since, upto]`, at most `limit`.
    pub fn to_device_since(&self, user: &UserId, device: &DeviceId, since: u64, upto: u64, limit: usize) -> Result<Vec<Value>> {
        let from = key(&[user.as_bytes(), device.as_bytes(), &pos_bytes(since.saturating_add(1))]);
        let to = key(&[user.as_bytes(), device.as_bytes(), &pos_bytes(upto.saturating_add(1))]);
        self.db
            .range(trees::TO_DEVICE, Bound::Included(&from), Bound::Excluded(&to), false, limit)?
            .into_iter()
            .map(|(_, v)| serde_json::from_slice(&v).map_err(Error::internal))
            .collect()
    }

    /// Deletes messages the device has acknowledged by syncing with `since`.
    pub async fn ack_to_device(&self, user: &UserId, device: &DeviceId, since: u64) -> Result<()> {
        let p = prefix(&[user.as_bytes(), device.as_bytes()]);
        let end = key(&[user.as_bytes(), device.as_bytes(), &pos_bytes(since.saturating_add(1))]);
        let rows = self.db.range(trees::TO_DEVICE, Bound::Included(&p), Bound::Excluded(&end), false, 1000)?;
        if rows.is_empty() {
            return Ok(());
        }
        let mut batch = WriteBatch::new();
        for (k, _) in rows {
            batch.remove(trees::TO_DEVICE, k);
        }
        self.db.write(batch).await
    }
}
