//! To-device messages: queued per device, delivered by `/sync` at most [`MAX_PER_SYNC`] at a
//! time, deleted once the client syncs past them.
//!
//! Bounds, so that no sender can grow the store without limit:
//! - only devices that exist get messages (nobody could ever collect the others);
//! - a device holds at most [`MAX_QUEUED`] messages. Beyond that, new messages for it are
//!   dropped with a warning, and the sender still gets its 200 (the spec has no error for a full
//!   queue). The oldest are kept because they come first in Olm session setup; a device that
//!   stayed away that long sets up new sessions on its return anyway.

use std::{
    collections::{BTreeMap, HashMap},
    ops::Bound,
    sync::Mutex,
};

use ruma::{
    DeviceId, OwnedDeviceId, OwnedUserId, UserId, events::AnyToDeviceEventContent, serde::Raw,
    to_device::DeviceIdOrAllDevices,
};
use serde_json::Value;
use tocsin_store::WriteBatch;

use super::E2ee;
use crate::{
    Services,
    error::{Error, Result},
    store::{Db, key, pos_bytes, pos_suffix, prefix, trees},
};

/// Messages one `/sync` response carries at most; the rest come with the next.
pub const MAX_PER_SYNC: usize = 100;
/// Messages one device may have queued; new ones beyond it are dropped.
pub const MAX_QUEUED: usize = 10_000;
/// Rows deleted per write when a device acknowledges its messages.
const ACK_CHUNK: usize = 1000;

/// One message to queue: the receiving user and device, and the content.
pub type Target = (OwnedUserId, OwnedDeviceId, Value);

/// To-device messages by user and device, as both the client API and federation carry them.
pub type Messages = BTreeMap<OwnedUserId, BTreeMap<DeviceIdOrAllDevices, Raw<AnyToDeviceEventContent>>>;

/// The messages for this node's users, one target per existing device (`*` expanded). Messages
/// for other servers' users are left out (they go over federation), and so are messages for
/// devices that do not exist.
pub fn local_targets(s: &Services, messages: &Messages) -> Result<Vec<Target>> {
    let mut targets = Vec::new();
    for (user, devices) in messages {
        if !s.users.is_local(user) {
            continue;
        }
        for (device, content) in devices {
            let content: Value = serde_json::from_str(content.json().get()).map_err(Error::bad_json)?;
            match device {
                DeviceIdOrAllDevices::DeviceId(d) => {
                    if s.users.device(user, d)?.is_some() {
                        targets.push((user.clone(), d.clone(), content));
                    } else {
                        tracing::debug!(%user, device = %d, "to-device message for an unknown device dropped");
                    }
                }
                DeviceIdOrAllDevices::AllDevices => {
                    for (d, _) in s.users.devices(user)? {
                        targets.push((user.clone(), d, content.clone()));
                    }
                }
            }
        }
    }
    Ok(targets)
}

/// How many messages each device has queued, counted from the store on first use and kept up
/// to date by sends and acknowledgements. Concurrent acknowledgements of the same rows may
/// undercount a little; the cap is a safety bound, not an exact quota.
pub struct QueueCounts {
    counts: Mutex<HashMap<(OwnedUserId, OwnedDeviceId), usize>>,
    /// [`MAX_QUEUED`], lower in tests.
    cap: usize,
}

impl Default for QueueCounts {
    fn default() -> Self {
        Self { counts: Mutex::default(), cap: MAX_QUEUED }
    }
}

impl QueueCounts {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(OwnedUserId, OwnedDeviceId), usize>> {
        self.counts.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The device's count, counted from the store (at most `cap`) if not known yet.
    fn count(&self, db: &Db, user: &UserId, device: &DeviceId) -> Result<usize> {
        if let Some(n) = self.lock().get(&(user.to_owned(), device.to_owned())) {
            return Ok(*n);
        }
        let n = db.scan_prefix(trees::TO_DEVICE, &prefix(&[user.as_bytes(), device.as_bytes()]), self.cap)?.len();
        Ok(*self.lock().entry((user.to_owned(), device.to_owned())).or_insert(n))
    }

    fn subtract(&self, user: &UserId, device: &DeviceId, n: usize) {
        if let Some(count) = self.lock().get_mut(&(user.to_owned(), device.to_owned())) {
            *count = count.saturating_sub(n);
        }
    }

    /// Forgets a deleted device.
    pub fn forget(&self, user: &UserId, device: &DeviceId) {
        self.lock().remove(&(user.to_owned(), device.to_owned()));
    }
}

impl E2ee {
    /// Queues messages; each target is (user, device, event) and shares one position. Targets
    /// whose queue is full are dropped (see the module docs).
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
        targets: Vec<Target>,
    ) -> Result<()> {
        // The room-event transactions use three key parts; the extra `to_device` part keeps
        // these apart (ids are UTF-8, so none can contain the separator byte).
        let txn_key = key(&[sender.as_bytes(), sender_device.as_bytes(), b"to_device", txn_id.as_bytes()]);
        if targets.is_empty() || self.db.get(trees::TXNS, &txn_key)?.is_some() {
            return Ok(());
        }
        // One message per device: they share a position, so a second would overwrite the
        // first in the store while counting twice against the cap.
        let targets: BTreeMap<(OwnedUserId, OwnedDeviceId), Value> =
            targets.into_iter().map(|(user, device, content)| ((user, device), content)).collect();
        let cap = self.queued.cap;
        // Counted from the store before the counts are locked.
        for (user, device) in targets.keys() {
            self.queued.count(&self.db, user, device)?;
        }
        let mut rows = Vec::new();
        let mut dropped: BTreeMap<(OwnedUserId, OwnedDeviceId), usize> = BTreeMap::new();
        {
            let mut counts = self.queued.lock();
            for ((user, device), content) in targets {
                let count = counts.entry((user.clone(), device.clone())).or_insert(0);
                if *count >= cap {
                    *dropped.entry((user, device)).or_insert(0) += 1;
                    continue;
                }
                *count += 1;
                let event = serde_json::json!({ "type": event_type, "sender": sender, "content": content });
                rows.push((user, device, serde_json::to_vec(&event).map_err(Error::internal)?));
            }
        }
        for ((user, device), n) in dropped {
            tracing::warn!(%sender, %user, %device, dropped = n, max = cap, "to-device queue full: messages dropped");
        }
        let reserved: Vec<_> = rows.iter().map(|(u, d, _)| (u.clone(), d.clone())).collect();
        let written = self
            .db
            .write_streamed(|pos, batch| {
                for (user, device, event) in rows {
                    batch.insert(trees::TO_DEVICE, key(&[user.as_bytes(), device.as_bytes(), &pos_bytes(pos)]), event);
                }
                batch.insert(trees::TXNS, txn_key, pos_bytes(pos).to_vec());
            })
            .await;
        if written.is_err() {
            for (user, device) in &reserved {
                self.queued.subtract(user, device, 1);
            }
        }
        written.map(|_| ())
    }

    /// All devices of a user, for `*` targets.
    pub fn device_ids(&self, user: &UserId) -> Result<Vec<ruma::OwnedDeviceId>> {
        Ok(self.device_keys(user)?.into_keys().collect())
    }

    /// Messages for a device with position in `(since, upto]`, at most `limit`, each with its
    /// position (a sync that stops early resumes after the last one it delivered).
    pub fn to_device_since(
        &self,
        user: &UserId,
        device: &DeviceId,
        since: u64,
        upto: u64,
        limit: usize,
    ) -> Result<Vec<(u64, Value)>> {
        let from = key(&[user.as_bytes(), device.as_bytes(), &pos_bytes(since.saturating_add(1))]);
        let to = key(&[user.as_bytes(), device.as_bytes(), &pos_bytes(upto.saturating_add(1))]);
        self.db
            .range(trees::TO_DEVICE, Bound::Included(&from), Bound::Excluded(&to), false, limit)?
            .into_iter()
            .map(|(k, v)| Ok((pos_suffix(&k)?, serde_json::from_slice(&v).map_err(Error::internal)?)))
            .collect()
    }

    /// Deletes messages the device has acknowledged by syncing with `since`.
    pub async fn ack_to_device(&self, user: &UserId, device: &DeviceId, since: u64) -> Result<()> {
        // Every sync acknowledges; most devices have nothing queued. (An undercount only leaves
        // delivered rows until the device's next message is acknowledged.)
        if self.queued.count(&self.db, user, device)? == 0 {
            return Ok(());
        }
        let p = prefix(&[user.as_bytes(), device.as_bytes()]);
        let end = key(&[user.as_bytes(), device.as_bytes(), &pos_bytes(since.saturating_add(1))]);
        loop {
            let rows = self.db.range(trees::TO_DEVICE, Bound::Included(&p), Bound::Excluded(&end), false, ACK_CHUNK)?;
            if rows.is_empty() {
                return Ok(());
            }
            let n = rows.len();
            let mut batch = WriteBatch::new();
            for (k, _) in rows {
                batch.remove(trees::TO_DEVICE, k);
            }
            self.db.write(batch).await?;
            self.queued.subtract(user, device, n);
            if n < ACK_CHUNK {
                return Ok(());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Db;

    #[tokio::test]
    async fn a_full_queue_drops_new_messages_until_the_device_catches_up() {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(tocsin_store::EngineKind::Redb, dir.path()).unwrap();
        let e2ee = E2ee { queued: QueueCounts { counts: Mutex::default(), cap: 3 }, ..E2ee::new(db) };
        let (alice, bob) = (ruma::user_id!("@alice:a.test"), ruma::user_id!("@bob:a.test"));
        let (phone, laptop) = (ruma::device_id!("PHONE"), ruma::device_id!("LAPTOP"));
        let send = |n: u64, targets: Vec<Target>| {
            let e2ee = &e2ee;
            async move { e2ee.send_to_device(alice, phone, &format!("t{n}"), "m.test", targets).await.unwrap() }
        };
        let to = |device: &DeviceId, n: u64| (bob.to_owned(), device.to_owned(), serde_json::json!({ "n": n }));
        for n in 0..5 {
            // The same device twice in one send is one message.
            send(n, vec![to(phone, n), to(phone, n), to(laptop, n)]).await;
        }
        let queued = |device| e2ee.to_device_since(bob, device, 0, u64::MAX - 1, usize::MAX).unwrap();
        let numbers =
            |device| queued(device).iter().map(|(_, v)| v["content"]["n"].as_u64().unwrap()).collect::<Vec<_>>();
        assert_eq!(numbers(phone), [0, 1, 2], "the oldest three kept, the rest dropped");
        assert_eq!(numbers(laptop), [0, 1, 2], "each device has its own bound");
        // The phone syncs past what it got: room for new messages again.
        let last = queued(phone).last().unwrap().0;
        e2ee.ack_to_device(bob, phone, last).await.unwrap();
        send(5, vec![to(phone, 5), to(laptop, 5)]).await;
        assert_eq!(numbers(phone), [5]);
        assert_eq!(numbers(laptop), [0, 1, 2], "still full");
        // A restarted node counts what is in the store.
        let fresh = E2ee { queued: QueueCounts { counts: Mutex::default(), cap: 3 }, ..E2ee::new(e2ee.db.clone()) };
        fresh.send_to_device(alice, phone, "t6", "m.test", vec![to(laptop, 6)]).await.unwrap();
        assert_eq!(numbers(laptop), [0, 1, 2]);
    }
}
