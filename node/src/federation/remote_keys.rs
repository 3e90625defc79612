//! Other servers' signing keys: fetched from their own key server (`/_matrix/key/v2/server`,
//! directly: a crisis federation has no trusted notary), self-signature checked, cached in memory
//! and in the store until `valid_until_ts`. When a server is down (a city gone dark), its keys
//! are asked of the peer that sent its events, as a notary; the server's own self-signature is
//! still checked, so a notary can relay keys but not forge them.

use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, Mutex},
    time::Duration,
};

use ruma::{
    CanonicalJsonObject, CanonicalJsonValue, MilliSecondsSinceUnixEpoch, OwnedServerName, ServerName,
    api::federation::discovery::{get_remote_server_keys, get_server_keys},
    serde::Base64,
    signatures::{PublicKeyMap, verify_json},
};
use tocsin_store::WriteBatch;

use super::client::FederationClient;
use crate::{
    error::{Error, Result},
    keys::ServerKeys,
    store::{Db, trees},
};

/// Keys are trusted for at most this long after a fetch, whatever `valid_until_ts` says (the spec
/// caps it at seven days).
const MAX_VALIDITY: Duration = Duration::from_secs(7 * 24 * 60 * 60);

/// What the store keeps per server: the signed object and how long it is trusted (capped).
#[derive(serde::Serialize, serde::Deserialize)]
struct Stored {
    valid_until: u64,
    object: CanonicalJsonObject,
}

/// One server's keys as fetched.
#[derive(Clone)]
struct Entry {
    /// The key object as the server signed it.
    object: CanonicalJsonObject,
    /// Current and old keys: key id -> public key.
    keys: BTreeMap<String, Base64>,
    /// Milliseconds since the epoch; not valid from then on.
    valid_until: u64,
}

/// Fetches, verifies and caches other servers' keys.
#[derive(Clone)]
pub struct RemoteKeys {
    inner: Arc<Inner>,
}

struct Inner {
    db: Db,
    own: ServerKeys,
    client: FederationClient,
    cache: Mutex<HashMap<OwnedServerName, Entry>>,
    /// One lock per server being fetched, so concurrent callers wait for one fetch.
    fetching: FetchLocks,
}

impl RemoteKeys {
    pub fn new(db: Db, own: ServerKeys, client: FederationClient) -> Self {
        Self { inner: Arc::new(Inner { db, own, client, cache: Mutex::default(), fetching: Mutex::default() }) }
    }

    /// Keys for every listed server, fetching what is missing or expired. Fails if any server's
    /// keys cannot be had.
    pub async fn public_key_map(&self, servers: impl IntoIterator<Item = OwnedServerName>) -> Result<PublicKeyMap> {
        let mut map = PublicKeyMap::new();
        for server in servers {
            if map.contains_key(server.as_str()) {
                continue;
            }
            let keys = self.keys_for(&server).await?;
            map.insert(server.to_string(), keys);
        }
        Ok(map)
    }

    /// Like [`Self::public_key_map`], but a server that cannot be reached directly is looked up
    /// through `notary` (the peer the events came from).
    pub async fn public_key_map_via(
        &self,
        servers: impl IntoIterator<Item = OwnedServerName>,
        notary: &ServerName,
    ) -> Result<PublicKeyMap> {
        let mut map = PublicKeyMap::new();
        for server in servers {
            if map.contains_key(server.as_str()) {
                continue;
            }
            let keys = match self.keys_for(&server).await {
                Ok(keys) => keys,
                Err(direct) if server != notary && notary != self.inner.own.server_name() => {
                    match self.fetch_via(&server, notary).await {
                        Ok(entry) => entry.keys,
                        Err(e) => {
                            tracing::info!(%server, %notary, error = %e, "no keys through the notary either");
                            return Err(direct);
                        }
                    }
                }
                Err(e) => return Err(e),
            };
            map.insert(server.to_string(), keys);
        }
        Ok(map)
    }

    /// Asks `notary` for `server`'s keys; keeps them if `server`'s self-signature holds.
    async fn fetch_via(&self, server: &ServerName, notary: &ServerName) -> Result<Entry> {
        let request = get_remote_server_keys::v2::Request::new(server.to_owned(), MilliSecondsSinceUnixEpoch::now());
        let response = self.inner.client.send_unauth(notary, request).await?;
        let now = crate::users::now_ms();
        let cap = now.saturating_add(u64::try_from(MAX_VALIDITY.as_millis()).unwrap_or(u64::MAX));
        for raw in &response.server_keys {
            let Ok(mut object) = serde_json::from_str::<CanonicalJsonObject>(raw.json().get()) else { continue };
            // Only the server's own signature counts; the notary's is dropped before checking.
            if let Some(CanonicalJsonValue::Object(signatures)) = object.get_mut("signatures") {
                signatures.retain(|entity, _| entity == server.as_str());
            }
            let Ok(entry) = parse_and_verify(server, object, cap) else { continue };
            if entry.valid_until > now {
                tracing::info!(%server, %notary, "got keys through a notary");
                self.remember(server, entry.clone());
                return Ok(entry);
            }
        }
        Err(Error::Unreachable(format!("{notary} has no valid keys of {server}")))
    }

    /// `server`'s current and old keys (key id -> public key). Our own come without a request.
    pub async fn keys_for(&self, server: &ServerName) -> Result<BTreeMap<String, Base64>> {
        if server == self.inner.own.server_name() {
            let key = Base64::new(self.inner.own.pair().public_key().to_vec());
            return Ok(BTreeMap::from([(self.inner.own.key_id(), key)]));
        }
        Ok(self.entry(server).await?.keys)
    }

    /// `server`'s key object as it signed it (fetched if needed), for the notary.
    pub async fn key_object(&self, server: &ServerName) -> Result<CanonicalJsonObject> {
        Ok(self.entry(server).await?.object)
    }

    /// Drops `server`'s cached keys, so the next call fetches them (after a key rotation).
    pub async fn forget(&self, server: &ServerName) -> Result<()> {
        self.inner.cache.lock().unwrap_or_else(|e| e.into_inner()).remove(server);
        let mut batch = WriteBatch::new();
        batch.remove(trees::SERVER_KEYS, server.as_bytes().to_vec());
        self.inner.db.write(batch).await
    }

    fn cached(&self, server: &ServerName) -> Option<Entry> {
        let now = crate::users::now_ms();
        self.inner.cache.lock().unwrap_or_else(|e| e.into_inner()).get(server).filter(|e| e.valid_until > now).cloned()
    }

    async fn entry(&self, server: &ServerName) -> Result<Entry> {
        if let Some(entry) = self.cached(server) {
            return Ok(entry);
        }
        let fetching = Fetching::join(&self.inner.fetching, server);
        let _guard = fetching.lock.lock().await;
        // Someone else may have fetched while we waited.
        if let Some(entry) = self.cached(server) {
            return Ok(entry);
        }
        let now = crate::users::now_ms();
        if let Some(stored) = self.inner.db.get_json::<Stored>(trees::SERVER_KEYS, server.as_bytes()).ok().flatten()
            && let Ok(entry) = parse_and_verify(server, stored.object, stored.valid_until)
            && entry.valid_until > now
        {
            self.remember(server, entry.clone());
            return Ok(entry);
        }
        let entry = self.fetch(server).await?;
        let mut batch = WriteBatch::new();
        let stored = Stored { valid_until: entry.valid_until, object: entry.object.clone() };
        batch.insert(trees::SERVER_KEYS, server.as_bytes().to_vec(), Db::to_json(&stored)?);
        self.inner.db.write(batch).await?;
        self.remember(server, entry.clone());
        Ok(entry)
    }

    fn remember(&self, server: &ServerName, entry: Entry) {
        self.inner.cache.lock().unwrap_or_else(|e| e.into_inner()).insert(server.to_owned(), entry);
    }

    async fn fetch(&self, server: &ServerName) -> Result<Entry> {
        let response = self.inner.client.send_unauth(server, get_server_keys::v2::Request::new()).await?;
        let object: CanonicalJsonObject = serde_json::from_str(response.server_key.json().get())
            .map_err(|e| Error::Unreachable(format!("{server}: its key response is not canonical JSON: {e}")))?;
        let now = crate::users::now_ms();
        let cap = now.saturating_add(u64::try_from(MAX_VALIDITY.as_millis()).unwrap_or(u64::MAX));
        let entry = parse_and_verify(server, object, cap)?;
        if entry.valid_until <= now {
            return Err(Error::Unreachable(format!("{server}: its published keys have already expired")));
        }
        tracing::debug!(%server, keys = entry.keys.len(), "fetched server keys");
        Ok(entry)
    }
}

type FetchLocks = Mutex<HashMap<OwnedServerName, Arc<tokio::sync::Mutex<()>>>>;

/// A caller's share of the per-server fetch lock. The last one to leave removes the map entry,
/// so the map holds only servers being fetched right now, not every server ever asked.
struct Fetching<'a> {
    map: &'a FetchLocks,
    server: OwnedServerName,
    lock: Arc<tokio::sync::Mutex<()>>,
}

impl<'a> Fetching<'a> {
    fn join(map: &'a FetchLocks, server: &ServerName) -> Self {
        let lock = map.lock().unwrap_or_else(|e| e.into_inner()).entry(server.to_owned()).or_default().clone();
        Self { map, server: server.to_owned(), lock }
    }
}

impl Drop for Fetching<'_> {
    fn drop(&mut self) {
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        // Clones are only made under the map's lock, so the count cannot rise meanwhile: two
        // (the map's and ours) means nobody else is waiting on this lock.
        if map.get(&self.server).is_some_and(|l| Arc::ptr_eq(l, &self.lock) && Arc::strong_count(l) == 2) {
            map.remove(&self.server);
        }
    }
}

/// Checks that `object` is `server`'s key object, self-signed by one of its current keys.
fn parse_and_verify(server: &ServerName, object: CanonicalJsonObject, cap: u64) -> Result<Entry> {
    let bad = |why: &str| Error::Unreachable(format!("{server}: bad key response: {why}"));
    match object.get("server_name") {
        Some(CanonicalJsonValue::String(name)) if name == server.as_str() => {}
        _ => return Err(bad("server_name does not match")),
    }
    let key_of = |value: &CanonicalJsonValue| match value {
        CanonicalJsonValue::Object(o) => match o.get("key") {
            Some(CanonicalJsonValue::String(k)) => Base64::parse(k).ok(),
            _ => None,
        },
        _ => None,
    };
    let keys_in = |field: &str| -> Result<BTreeMap<String, Base64>> {
        match object.get(field) {
            None => Ok(BTreeMap::new()),
            Some(CanonicalJsonValue::Object(o)) => o
                .iter()
                .map(|(id, v)| key_of(v).map(|k| (id.clone(), k)).ok_or_else(|| bad("a key is malformed")))
                .collect(),
            Some(_) => Err(bad("keys are not an object")),
        }
    };
    let current = keys_in("verify_keys")?;
    if current.is_empty() {
        return Err(bad("no verify_keys"));
    }
    let self_signed = PublicKeyMap::from([(server.to_string(), current.clone())]);
    verify_json(&self_signed, &object).map_err(|e| bad(&format!("self-signature does not verify: {e}")))?;
    let valid_until = match object.get("valid_until_ts") {
        Some(CanonicalJsonValue::Integer(ts)) => u64::try_from(i64::from(*ts)).unwrap_or(0),
        _ => return Err(bad("no valid_until_ts")),
    };
    let mut keys = keys_in("old_verify_keys")?;
    keys.extend(current);
    Ok(Entry { object, keys, valid_until: valid_until.min(cap) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn concurrent_fetches_share_one_lock_and_the_last_one_out_removes_it() {
        let map = FetchLocks::default();
        let server = ServerName::parse("a.test").unwrap();
        let first = Fetching::join(&map, &server);
        let guard = first.lock.lock().await;
        let second = Fetching::join(&map, &server);
        assert!(Arc::ptr_eq(&first.lock, &second.lock), "a second caller waits on the same lock");
        assert!(second.lock.try_lock().is_err(), "and cannot fetch while the first does");
        drop(guard);
        drop(first);
        assert_eq!(map.lock().unwrap().len(), 1, "kept while someone still waits");
        let third = Fetching::join(&map, &server);
        assert!(Arc::ptr_eq(&second.lock, &third.lock), "a late caller still joins the waiting one");
        drop(second);
        drop(third);
        assert!(map.lock().unwrap().is_empty(), "gone once every caller is done");
        for i in 0..100 {
            let name = ServerName::parse(format!("s{i}.test")).unwrap();
            drop(Fetching::join(&map, &name));
        }
        assert!(map.lock().unwrap().is_empty(), "one entry per server ever asked would be 100");
    }
}
