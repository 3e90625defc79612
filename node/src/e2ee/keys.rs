//! Device keys, one-time keys, fallback keys, cross-signing keys and the change stream.

use std::{collections::BTreeMap, ops::Bound};

use ruma::{DeviceId, OwnedDeviceId, OwnedUserId, UserId};
use serde_json::Value;
use tocsin_store::WriteBatch;

use super::E2ee;
use crate::{
    error::{Error, Result},
    store::{Db, key, pos_bytes, pos_from, prefix, split, trees, utf8},
};

impl E2ee {
    /// Stores a device's identity keys and records a device-list change.
    pub async fn upload_device_keys(&self, user: &UserId, device: &DeviceId, keys: Value) -> Result<()> {
        let k = key(&[user.as_bytes(), device.as_bytes()]);
        if self.db.get(trees::DEVICE_KEYS, &k)?.as_deref() == Some(&Db::to_json(&keys)?[..]) {
            return Ok(());
        }
        let value = Db::to_json(&keys)?;
        self.db
            .write_streamed(|pos, batch| {
                batch.insert(trees::DEVICE_KEYS, k, value);
                Self::key_change(batch, user, pos);
            })
            .await?;
        Ok(())
    }

    pub(super) fn key_change(batch: &mut WriteBatch, user: &UserId, pos: u64) {
        batch.insert(trees::KEY_CHANGES, pos_bytes(pos).to_vec(), user.as_bytes().to_vec());
        batch.insert(trees::USER_KEY_CHANGE, user.as_bytes().to_vec(), pos_bytes(pos).to_vec());
    }

    /// Records that a user's devices changed (a device was deleted, say).
    pub async fn mark_device_change(&self, user: &UserId) -> Result<()> {
        self.db.write_streamed(|pos, batch| Self::key_change(batch, user, pos)).await?;
        Ok(())
    }

    pub async fn remove_device(&self, user: &UserId, device: &DeviceId) -> Result<()> {
        let dk = key(&[user.as_bytes(), device.as_bytes()]);
        let otk_prefix = prefix(&[user.as_bytes(), device.as_bytes()]);
        let otks = self.db.scan_prefix(trees::ONE_TIME_KEYS, &otk_prefix, usize::MAX)?;
        let fallbacks = self.db.scan_prefix(trees::FALLBACK_KEYS, &otk_prefix, usize::MAX)?;
        let to_device = self.db.scan_prefix(trees::TO_DEVICE, &otk_prefix, usize::MAX)?;
        self.db
            .write_streamed(|pos, batch| {
                batch.remove(trees::DEVICE_KEYS, dk);
                for (k, _) in otks.into_iter().chain(fallbacks).chain(to_device) {
                    batch.remove(trees::ONE_TIME_KEYS, k.clone());
                    batch.remove(trees::FALLBACK_KEYS, k.clone());
                    batch.remove(trees::TO_DEVICE, k);
                }
                Self::key_change(batch, user, pos);
            })
            .await?;
        self.queued.forget(user, device);
        Ok(())
    }

    pub async fn upload_one_time_keys(
        &self,
        user: &UserId,
        device: &DeviceId,
        keys: BTreeMap<String, Value>,
    ) -> Result<()> {
        if keys.is_empty() {
            return Ok(());
        }
        let mut batch = WriteBatch::new();
        for (key_id, value) in keys {
            batch.insert(
                trees::ONE_TIME_KEYS,
                key(&[user.as_bytes(), device.as_bytes(), key_id.as_bytes()]),
                Db::to_json(&value)?,
            );
        }
        self.db.write(batch).await
    }

    pub async fn upload_fallback_keys(
        &self,
        user: &UserId,
        device: &DeviceId,
        keys: BTreeMap<String, Value>,
    ) -> Result<()> {
        if keys.is_empty() {
            return Ok(());
        }
        let mut batch = WriteBatch::new();
        for (key_id, value) in keys {
            let algorithm = key_id.split(':').next().unwrap_or_default().to_owned();
            let record = serde_json::json!({ "key_id": key_id, "key": value, "used": false });
            batch.insert(
                trees::FALLBACK_KEYS,
                key(&[user.as_bytes(), device.as_bytes(), algorithm.as_bytes()]),
                Db::to_json(&record)?,
            );
        }
        self.db.write(batch).await
    }

    /// How many one-time keys the device has left, per algorithm. `signed_curve25519` is always
    /// there, with 0 when none are left: clients (matrix-sdk among them) only replenish when
    /// they see the count, and an absent key reads as "unchanged", not as zero.
    pub fn one_time_key_counts(&self, user: &UserId, device: &DeviceId) -> Result<BTreeMap<String, u64>> {
        let mut counts = BTreeMap::from([("signed_curve25519".to_owned(), 0)]);
        for (k, _) in
            self.db.scan_prefix(trees::ONE_TIME_KEYS, &prefix(&[user.as_bytes(), device.as_bytes()]), usize::MAX)?
        {
            if let Some(key_id) = split(&k).get(2) {
                let algorithm = utf8(key_id)?.split(':').next().unwrap_or_default().to_owned();
                *counts.entry(algorithm).or_insert(0) += 1;
            }
        }
        Ok(counts)
    }

    /// Algorithms for which the device has a fallback key that has not been used yet.
    pub fn unused_fallback_key_types(&self, user: &UserId, device: &DeviceId) -> Result<Vec<String>> {
        let mut out = Vec::new();
        for (k, v) in
            self.db.scan_prefix(trees::FALLBACK_KEYS, &prefix(&[user.as_bytes(), device.as_bytes()]), usize::MAX)?
        {
            let record: Value = serde_json::from_slice(&v).map_err(Error::internal)?;
            if record.get("used").and_then(Value::as_bool) == Some(false)
                && let Some(alg) = split(&k).get(2)
            {
                out.push(utf8(alg)?.to_owned());
            }
        }
        Ok(out)
    }

    /// Claims one key per (user, device, algorithm): a one-time key if any is left, else the
    /// fallback key (which stays, marked used).
    pub async fn claim(&self, user: &UserId, device: &DeviceId, algorithm: &str) -> Result<Option<(String, Value)>> {
        let stripe = {
            use std::hash::{BuildHasher, BuildHasherDefault, DefaultHasher};
            let hash = BuildHasherDefault::<DefaultHasher>::default().hash_one((user, device));
            usize::try_from(hash % self.claim_locks.len() as u64).unwrap_or_default()
        };
        let _turn = self.claim_locks[stripe].lock().await;
        let p = key(&[user.as_bytes(), device.as_bytes(), format!("{algorithm}:").as_bytes()]);
        if let Some((k, v)) = self.db.scan_prefix(trees::ONE_TIME_KEYS, &p, 1)?.into_iter().next() {
            let key_id = utf8(split(&k).get(2).copied().unwrap_or_default())?.to_owned();
            let value: Value = serde_json::from_slice(&v).map_err(Error::internal)?;
            let mut batch = WriteBatch::new();
            batch.remove(trees::ONE_TIME_KEYS, k);
            self.db.write(batch).await?;
            return Ok(Some((key_id, value)));
        }
        let fk = key(&[user.as_bytes(), device.as_bytes(), algorithm.as_bytes()]);
        if let Some(mut record) = self.db.get_json::<Value>(trees::FALLBACK_KEYS, &fk)? {
            let key_id = record.get("key_id").and_then(Value::as_str).unwrap_or_default().to_owned();
            let value = record.get("key").cloned().unwrap_or(Value::Null);
            record["used"] = Value::Bool(true);
            let mut batch = WriteBatch::new();
            batch.insert(trees::FALLBACK_KEYS, fk, Db::to_json(&record)?);
            self.db.write(batch).await?;
            return Ok(Some((key_id, value)));
        }
        Ok(None)
    }

    pub fn device_keys(&self, user: &UserId) -> Result<BTreeMap<OwnedDeviceId, Value>> {
        let mut out = BTreeMap::new();
        for (k, v) in self.db.scan_prefix(trees::DEVICE_KEYS, &prefix(&[user.as_bytes()]), usize::MAX)? {
            if let Some(device) = split(&k).get(1) {
                out.insert(OwnedDeviceId::from(utf8(device)?), serde_json::from_slice(&v).map_err(Error::internal)?);
            }
        }
        Ok(out)
    }

    pub fn cross_signing_key(&self, user: &UserId, kind: &str) -> Result<Option<Value>> {
        self.db.get_json(trees::CROSS_SIGNING_KEYS, &key(&[user.as_bytes(), kind.as_bytes()]))
    }

    /// Whether each of `keys` is already stored with the same public key and usage. Signatures
    /// are left out of the comparison: the stored copy gains signatures from
    /// `/keys/signatures/upload` that a re-upload does not carry.
    pub fn cross_signing_keys_unchanged(&self, user: &UserId, keys: &[(&'static str, Value)]) -> Result<bool> {
        for (kind, new) in keys {
            let Some(stored) = self.cross_signing_key(user, kind)? else {
                return Ok(false);
            };
            if stored.get("keys") != new.get("keys") || stored.get("usage") != new.get("usage") {
                return Ok(false);
            }
        }
        Ok(true)
    }

    pub async fn set_cross_signing_keys(&self, user: &UserId, keys: Vec<(&'static str, Value)>) -> Result<()> {
        let mut rows = Vec::new();
        for (kind, value) in keys {
            rows.push((key(&[user.as_bytes(), kind.as_bytes()]), Db::to_json(&value)?));
        }
        self.db
            .write_streamed(|pos, batch| {
                for (k, v) in rows {
                    batch.insert(trees::CROSS_SIGNING_KEYS, k, v);
                }
                Self::key_change(batch, user, pos);
            })
            .await?;
        Ok(())
    }

    /// Users whose keys changed in `(since, upto]`.
    pub fn changed_users(&self, since: u64, upto: u64) -> Result<Vec<OwnedUserId>> {
        let from = pos_bytes(since.saturating_add(1));
        let to = pos_bytes(upto.saturating_add(1));
        let mut out: Vec<OwnedUserId> = Vec::new();
        for (_, user) in self.db.range(
            trees::KEY_CHANGES,
            Bound::Included(&from[..]),
            Bound::Excluded(&to[..]),
            false,
            usize::MAX,
        )? {
            let user = UserId::parse(utf8(&user)?).map_err(Error::internal)?;
            if !out.contains(&user) {
                out.push(user);
            }
        }
        Ok(out)
    }

    pub fn last_key_change(&self, user: &UserId) -> Result<Option<u64>> {
        match self.db.get(trees::USER_KEY_CHANGE, user.as_bytes())? {
            Some(b) => Ok(Some(pos_from(&b)?)),
            None => Ok(None),
        }
    }
}
