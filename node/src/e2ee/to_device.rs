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
    ///
    /// Idempotent per sending device and transaction id, as the spec requires: a client that
    /// retries after a lost response must not deliver its Olm messages twice (the second copy
    /// fails to decrypt and shows up as an error on the receiving side).
    pub async fn send_to_device(
        &self,
        sender: &UserId,
        sender_device: &DeviceId,
        txn_id: &str,
        event_type: &str,
        targets: Vec<(ruma::OwnedUserId, ruma::OwnedDeviceId, Value)>,
    ) -> Result<()> {
        // The room-event transactions use three key parts; the extra `to_device` part keeps
        // these apart (ids are UTF-8, so none can contain the separator byte).
        let txn_key = key(&[sender.as_bytes(), sender_device.as_bytes(), b"to_device", txn_id.as_bytes()]);
        if targets.is_empty() || self.db.get(trees::TXNS, &txn_key)?.is_some() {
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
                batch.insert(trees::TXNS, txn_key, pos_bytes(pos).to_vec());
            })
            .await?;
        Ok(())
    }

    /// All devices of a user, for `*` targets.
    pub fn device_ids(&self, user: &UserId) -> Result<Vec<ruma::OwnedDeviceId>> {
        Ok(self.device_keys(user)?.into_keys().collect())
    }

    /// Messages for a device with position in `(since, upto]`, at most `limit`.
    pub fn to_device_since(
        &self,
        user: &UserId,
        device: &DeviceId,
        since: u64,
        upto: u64,
        limit: usize,
    ) -> Result<Vec<Value>> {
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
