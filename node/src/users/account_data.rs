//! Account data, global and per room, as a stream that `/sync` reads.

use std::ops::Bound;

use ruma::{OwnedRoomId, RoomId, UserId};
use serde_json::Value;

use super::Users;
use crate::{
    error::{Error, Result},
    store::{Db, key, pos_bytes, prefix, split, trees, utf8},
};

/// One account data entry: the room it belongs to (none for global), its type and content.
pub type AccountDataEntry = (Option<OwnedRoomId>, String, Value);

fn room_part(room: Option<&RoomId>) -> &[u8] {
    room.map(|r| r.as_bytes()).unwrap_or_default()
}

impl Users {
    pub fn account_data(&self, user: &UserId, room: Option<&RoomId>, kind: &str) -> Result<Option<Value>> {
        self.db.get_json(trees::ACCOUNT_DATA, &key(&[user.as_bytes(), room_part(room), kind.as_bytes()]))
    }

    pub async fn set_account_data(
        &self,
        user: &UserId,
        room: Option<&RoomId>,
        kind: &str,
        content: &Value,
    ) -> Result<()> {
        let k = key(&[user.as_bytes(), room_part(room), kind.as_bytes()]);
        let change = key(&[room_part(room), kind.as_bytes()]);
        let value = Db::to_json(content)?;
        self.db
            .write_streamed(|pos, batch| {
                batch.insert(trees::ACCOUNT_DATA, k, value);
                batch.insert(trees::ACCOUNT_DATA_CHANGES, key(&[user.as_bytes(), &pos_bytes(pos)]), change);
            })
            .await?;
        Ok(())
    }

    /// The user's tags on a room (`m.tag` room account data; none when unset).
    pub fn room_tags(&self, user: &UserId, room: &RoomId) -> Result<ruma::events::tag::Tags> {
        let Some(content) = self.account_data(user, Some(room), "m.tag")? else { return Ok(Default::default()) };
        let content: ruma::events::tag::TagEventContent =
            serde_json::from_value(content).map_err(crate::Error::internal)?;
        Ok(content.tags)
    }

    /// Adds or replaces one tag (`None` removes it); sync carries the new `m.tag` to every client.
    pub async fn set_room_tag(
        &self,
        user: &UserId,
        room: &RoomId,
        tag: &str,
        info: Option<ruma::events::tag::TagInfo>,
    ) -> Result<()> {
        let mut tags = self.room_tags(user, room)?;
        let name = ruma::events::tag::TagName::from(tag);
        match info {
            Some(info) => {
                tags.insert(name, info);
            }
            None => {
                tags.remove(&name);
            }
        }
        let content =
            serde_json::to_value(ruma::events::tag::TagEventContent::new(tags)).map_err(crate::Error::internal)?;
        self.set_account_data(user, Some(room), "m.tag", &content).await
    }

    /// Entries changed in `(since, upto]`, or all of them when `since` is 0.
    pub fn account_data_since(&self, user: &UserId, since: u64, upto: u64) -> Result<Vec<AccountDataEntry>> {
        let mut keys: Vec<Vec<u8>> = Vec::new();
        if since == 0 {
            for (k, _) in self.db.scan_prefix(trees::ACCOUNT_DATA, &prefix(&[user.as_bytes()]), usize::MAX)? {
                let parts = split(&k);
                keys.push(parts[1..].join(&crate::store::SEP));
            }
        } else {
            let from = key(&[user.as_bytes(), &pos_bytes(since.saturating_add(1))]);
            let to = key(&[user.as_bytes(), &pos_bytes(upto.saturating_add(1))]);
            for (_, change) in self.db.range(
                trees::ACCOUNT_DATA_CHANGES,
                Bound::Included(&from),
                Bound::Excluded(&to),
                false,
                usize::MAX,
            )? {
                if !keys.contains(&change) {
                    keys.push(change);
                }
            }
        }
        let mut out = Vec::new();
        for change in keys {
            let parts = split(&change);
            let (Some(room), Some(kind)) = (parts.first(), parts.get(1)) else { continue };
            let room = if room.is_empty() { None } else { Some(RoomId::parse(utf8(room)?).map_err(Error::internal)?) };
            let kind = utf8(kind)?.to_owned();
            if let Some(content) = self.account_data(user, room.as_deref(), &kind)? {
                out.push((room, kind, content));
            }
        }
        Ok(out)
    }
}
