//! Server-side key backup (`/room_keys`): versions and the encrypted session keys in them.

use ruma::{RoomId, UserId};
use serde_json::Value;
use tocsin_store::WriteBatch;

use super::E2ee;
use crate::{
    error::{Error, Result},
    store::{Db, key, prefix, split, trees, utf8},
};

impl E2ee {
    /// The newest backup version (highest number), with its record.
    pub fn latest_backup(&self, user: &UserId) -> Result<Option<(String, Value)>> {
        let mut best: Option<(u64, Value)> = None;
        for (k, v) in self.db.scan_prefix(trees::BACKUP_VERSIONS, &prefix(&[user.as_bytes()]), usize::MAX)? {
            let Some(version) = split(&k).get(1).and_then(|v| utf8(v).ok()?.parse::<u64>().ok()) else {
                continue;
            };
            let record: Value = serde_json::from_slice(&v).map_err(Error::internal)?;
            if record.get("deleted").and_then(Value::as_bool) == Some(true) {
                continue;
            }
            if best.as_ref().is_none_or(|(b, _)| version > *b) {
                best = Some((version, record));
            }
        }
        Ok(best.map(|(v, r)| (v.to_string(), r)))
    }

    pub fn backup(&self, user: &UserId, version: &str) -> Result<Option<Value>> {
        let record: Option<Value> =
            self.db.get_json(trees::BACKUP_VERSIONS, &key(&[user.as_bytes(), version.as_bytes()]))?;
        Ok(record.filter(|r| r.get("deleted").and_then(Value::as_bool) != Some(true)))
    }

    pub async fn create_backup(&self, user: &UserId, algorithm: Value) -> Result<String> {
        let mut next = 1u64;
        for (k, _) in self.db.scan_prefix(trees::BACKUP_VERSIONS, &prefix(&[user.as_bytes()]), usize::MAX)? {
            if let Some(v) = split(&k).get(1).and_then(|v| utf8(v).ok()?.parse::<u64>().ok()) {
                next = next.max(v + 1);
            }
        }
        let version = next.to_string();
        let record = serde_json::json!({ "algorithm": algorithm, "etag": "0" });
        let mut batch = WriteBatch::new();
        batch.insert(trees::BACKUP_VERSIONS, key(&[user.as_bytes(), version.as_bytes()]), Db::to_json(&record)?);
        self.db.write(batch).await?;
        Ok(version)
    }

    pub async fn update_backup(&self, user: &UserId, version: &str, algorithm: Value) -> Result<()> {
        let mut record = self.backup(user, version)?.ok_or_else(|| Error::not_found("unknown backup version"))?;
        record["algorithm"] = algorithm;
        let mut batch = WriteBatch::new();
        batch.insert(trees::BACKUP_VERSIONS, key(&[user.as_bytes(), version.as_bytes()]), Db::to_json(&record)?);
        self.db.write(batch).await
    }

    pub async fn delete_backup(&self, user: &UserId, version: &str) -> Result<()> {
        let mut record = self.backup(user, version)?.ok_or_else(|| Error::not_found("unknown backup version"))?;
        record["deleted"] = Value::Bool(true);
        let mut batch = WriteBatch::new();
        batch.insert(trees::BACKUP_VERSIONS, key(&[user.as_bytes(), version.as_bytes()]), Db::to_json(&record)?);
        for (k, _) in
            self.db.scan_prefix(trees::BACKUP_KEYS, &prefix(&[user.as_bytes(), version.as_bytes()]), usize::MAX)?
        {
            batch.remove(trees::BACKUP_KEYS, k);
        }
        self.db.write(batch).await
    }

    /// Checks that `version` is the current backup, as the spec requires for writes.
    pub fn require_current_backup(&self, user: &UserId, version: &str) -> Result<()> {
        match self.latest_backup(user)? {
            Some((current, _)) if current == version => Ok(()),
            Some((current, _)) => Err(Error::WrongRoomKeysVersion(Some(current))),
            None => Err(Error::not_found("no backup exists")),
        }
    }

    /// Stores session keys in the current backup. A key already there is only replaced by a
    /// better one (spec: verified beats unverified, then the lower first message index, then
    /// the lower forward count), so a client with a partial copy cannot degrade the backup.
    pub async fn put_backup_keys(
        &self,
        user: &UserId,
        version: &str,
        keys: Vec<(ruma::OwnedRoomId, String, Value)>,
    ) -> Result<()> {
        self.require_current_backup(user, version)?;
        let mut batch = WriteBatch::new();
        for (room, session, data) in keys {
            let k = key(&[user.as_bytes(), version.as_bytes(), room.as_bytes(), session.as_bytes()]);
            if let Some(existing) = self.db.get_json::<Value>(trees::BACKUP_KEYS, &k)?
                && !is_better_backup_key(&data, &existing)
            {
                continue;
            }
            batch.insert(trees::BACKUP_KEYS, k, Db::to_json(&data)?);
        }
        let count = batch.len();
        self.db.write(batch).await?;
        self.bump_etag(user, version, count).await
    }

    /// The etag and key count of a backup version, for the responses that report them.
    pub fn backup_etag_and_count(&self, user: &UserId, version: &str) -> Result<(String, usize)> {
        let record = self.backup(user, version)?.ok_or_else(|| Error::not_found("unknown backup version"))?;
        let etag = record.get("etag").and_then(Value::as_str).unwrap_or("0").to_owned();
        Ok((etag, self.backup_count(user, version)?))
    }

    async fn bump_etag(&self, user: &UserId, version: &str, changed: usize) -> Result<()> {
        if changed == 0 {
            return Ok(());
        }
        let Some(mut record) = self.backup(user, version)? else {
            return Ok(());
        };
        let etag = record.get("etag").and_then(Value::as_str).and_then(|e| e.parse::<u64>().ok()).unwrap_or(0) + 1;
        record["etag"] = Value::String(etag.to_string());
        let mut batch = WriteBatch::new();
        batch.insert(trees::BACKUP_VERSIONS, key(&[user.as_bytes(), version.as_bytes()]), Db::to_json(&record)?);
        self.db.write(batch).await
    }

    /// Keys in a backup, optionally only one room or one session: (room, session, data).
    pub fn backup_keys(
        &self,
        user: &UserId,
        version: &str,
        room: Option<&RoomId>,
        session: Option<&str>,
    ) -> Result<Vec<(String, String, Value)>> {
        let mut parts: Vec<&[u8]> = vec![user.as_bytes(), version.as_bytes()];
        if let Some(room) = room {
            parts.push(room.as_bytes());
            if let Some(session) = session {
                parts.push(session.as_bytes());
                return Ok(match self.db.get(trees::BACKUP_KEYS, &key(&parts))? {
                    Some(v) => vec![(
                        room.to_string(),
                        session.to_owned(),
                        serde_json::from_slice(&v).map_err(Error::internal)?,
                    )],
                    None => Vec::new(),
                });
            }
        }
        let mut out = Vec::new();
        for (k, v) in self.db.scan_prefix(trees::BACKUP_KEYS, &prefix(&parts), usize::MAX)? {
            let p = split(&k);
            if let (Some(r), Some(s)) = (p.get(2), p.get(3)) {
                out.push((
                    utf8(r)?.to_owned(),
                    utf8(s)?.to_owned(),
                    serde_json::from_slice(&v).map_err(Error::internal)?,
                ));
            }
        }
        Ok(out)
    }

    /// Deletes keys from a backup. Unlike uploads this works on any existing version (as in
    /// Synapse): removing keys from an old backup cannot make it worse than deleting it.
    pub async fn delete_backup_keys(
        &self,
        user: &UserId,
        version: &str,
        room: Option<&RoomId>,
        session: Option<&str>,
    ) -> Result<usize> {
        if self.backup(user, version)?.is_none() {
            return Err(Error::not_found("unknown backup version"));
        }
        let rows = self.backup_keys(user, version, room, session)?;
        let mut batch = WriteBatch::new();
        for (r, s, _) in &rows {
            batch.remove(trees::BACKUP_KEYS, key(&[user.as_bytes(), version.as_bytes(), r.as_bytes(), s.as_bytes()]));
        }
        self.db.write(batch).await?;
        self.bump_etag(user, version, rows.len()).await?;
        Ok(rows.len())
    }

    pub fn backup_count(&self, user: &UserId, version: &str) -> Result<usize> {
        Ok(self.db.scan_prefix(trees::BACKUP_KEYS, &prefix(&[user.as_bytes(), version.as_bytes()]), usize::MAX)?.len())
    }
}

/// Whether `new` should replace `old` in a backup, by the spec's order: `is_verified`, then
/// the lower `first_message_index`, then the lower `forwarded_count`. Missing fields rank lowest.
fn is_better_backup_key(new: &Value, old: &Value) -> bool {
    let verified = |v: &Value| v.get("is_verified").and_then(Value::as_bool).unwrap_or(false);
    let number = |v: &Value, field: &str| v.get(field).and_then(Value::as_u64).unwrap_or(u64::MAX);
    if verified(new) != verified(old) {
        return verified(new);
    }
    let (new_index, old_index) = (number(new, "first_message_index"), number(old, "first_message_index"));
    if new_index != old_index {
        return new_index < old_index;
    }
    number(new, "forwarded_count") < number(old, "forwarded_count")
}
