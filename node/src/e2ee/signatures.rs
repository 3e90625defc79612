//! Cross-signing signatures uploaded by users (`POST /keys/signatures/upload`): each is checked
//! against the key that may make it before it is stored, since other users' clients trust what
//! `/keys/query` serves.
//!
//! What may be signed, and by what (as the spec's cross-signing module describes):
//! - your own device keys, by your self-signing key;
//! - your own master key, by one of your devices;
//! - another user's master key, by your user-signing key.

use std::collections::BTreeMap;

use ruma::{
    CanonicalJsonObject, UserId,
    serde::Base64,
    signatures::{SigningKeyAlgorithm, to_canonical_json_string_for_signing, verify_canonical_json_bytes},
};
use serde_json::Value;

use super::E2ee;
use crate::{
    error::{Error, Result},
    store::{Db, key, trees},
};

/// Why a signature was not stored; reported per key in the upload's `failures`.
#[derive(Debug, thiserror::Error)]
pub enum SignatureRefusal {
    /// The key may not be signed by this user (`M_FORBIDDEN`).
    #[error("{0}")]
    Forbidden(String),
    /// No such key, or no key to check the signature with (`M_NOT_FOUND`).
    #[error("{0}")]
    NotFound(String),
    /// The signature does not verify, or the signed object is not the stored key
    /// (`M_INVALID_SIGNATURE`).
    #[error("{0}")]
    Invalid(String),
}

impl SignatureRefusal {
    pub fn errcode(&self) -> &'static str {
        match self {
            Self::Forbidden(_) => "M_FORBIDDEN",
            Self::NotFound(_) => "M_NOT_FOUND",
            Self::Invalid(_) => "M_INVALID_SIGNATURE",
        }
    }
}

/// A stored key: its tree, row key, value and kind.
type StoredKey = (&'static str, Vec<u8>, Value, Kind);

/// What kind of key a signed object is.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Device,
    Master,
    /// A self-signing or user-signing key: nobody signs those through this endpoint.
    Subkey,
}

impl E2ee {
    /// Checks the signatures `signer` made on `target`'s key `key_id` (a device id, or the
    /// unpadded base64 public key of a cross-signing key) and stores the new ones. `Ok(Ok(true))`
    /// when something new was stored; `Ok(Err(_))` when the upload is refused (nothing stored).
    pub async fn add_verified_signatures(
        &self,
        signer: &UserId,
        target: &UserId,
        key_id: &str,
        signed: &Value,
    ) -> Result<Result<bool, SignatureRefusal>> {
        let Some((tree, row, stored, kind)) = self.signable_key(target, key_id)? else {
            return Ok(Err(SignatureRefusal::NotFound(format!("{target} has no key {key_id}"))));
        };
        let signing_keys = match (signer == target, kind) {
            (true, Kind::Device) => self.cross_signing_public_keys(signer, "self_signing")?,
            (true, Kind::Master) => self.device_signing_keys(signer)?,
            (false, Kind::Master) => self.cross_signing_public_keys(signer, "user_signing")?,
            (true, Kind::Subkey) => {
                return Ok(Err(SignatureRefusal::Forbidden(
                    "only your devices and your master key can be signed".to_owned(),
                )));
            }
            (false, _) => {
                return Ok(Err(SignatureRefusal::Forbidden(
                    "only another user's master key can be signed, with your user-signing key".to_owned(),
                )));
            }
        };
        if signing_keys.is_empty() {
            return Ok(Err(SignatureRefusal::NotFound("you have no key that may sign this".to_owned())));
        }
        // The object signed must be the stored key, signatures and `unsigned` aside.
        let canonical = |v: &Value| {
            serde_json::from_value::<CanonicalJsonObject>(v.clone())
                .ok()
                .and_then(|o| to_canonical_json_string_for_signing(&o).ok())
        };
        let (Some(signed_json), Some(stored_json)) = (canonical(signed), canonical(&stored)) else {
            return Ok(Err(SignatureRefusal::Invalid("the signed key is not canonical JSON".to_owned())));
        };
        if signed_json != stored_json {
            return Ok(Err(SignatureRefusal::Invalid("the signed object is not the stored key".to_owned())));
        }
        let Some(offered) = signed.get("signatures").and_then(|s| s.get(signer.as_str())).and_then(Value::as_object)
        else {
            return Ok(Err(SignatureRefusal::Invalid(format!("no signature by {signer}"))));
        };
        let known = stored.get("signatures").and_then(|s| s.get(signer.as_str())).and_then(Value::as_object);
        let mut new = serde_json::Map::new();
        for (sig_id, signature) in offered {
            // Signatures already stored (the key's own self-signature among them) stay as they are.
            if known.and_then(|k| k.get(sig_id)) == Some(signature) {
                continue;
            }
            let Some(public) = signing_keys.get(sig_id) else {
                return Ok(Err(SignatureRefusal::Invalid(format!("{sig_id} is not a key that may sign this"))));
            };
            let verified = signature.as_str().and_then(decode).is_some_and(|sig| {
                verify_canonical_json_bytes(
                    &SigningKeyAlgorithm::Ed25519,
                    public.as_bytes(),
                    sig.as_bytes(),
                    signed_json.as_bytes(),
                )
                .is_ok()
            });
            if !verified {
                return Ok(Err(SignatureRefusal::Invalid(format!("the signature by {sig_id} does not verify"))));
            }
            new.insert(sig_id.clone(), signature.clone());
        }
        if new.is_empty() {
            return Ok(Ok(false));
        }
        let mut stored = stored;
        let sigs = stored
            .as_object_mut()
            .ok_or_else(|| Error::internal("stored key is not an object"))?
            .entry("signatures")
            .or_insert_with(|| Value::Object(Default::default()))
            .as_object_mut()
            .ok_or_else(|| Error::internal("stored signatures are not an object"))?
            .entry(signer.as_str())
            .or_insert_with(|| Value::Object(Default::default()));
        if let Some(map) = sigs.as_object_mut() {
            map.extend(new);
        }
        let value = Db::to_json(&stored)?;
        self.db
            .write_streamed(|pos, batch| {
                batch.insert(tree, row, value);
                Self::key_change(batch, target, pos);
            })
            .await?;
        Ok(Ok(true))
    }

    /// `target`'s key named `key_id`: its tree, row key, stored value and kind.
    fn signable_key(&self, target: &UserId, key_id: &str) -> Result<Option<StoredKey>> {
        let row = key(&[target.as_bytes(), key_id.as_bytes()]);
        if let Some(v) = self.db.get_json::<Value>(trees::DEVICE_KEYS, &row)? {
            return Ok(Some((trees::DEVICE_KEYS, row, v, Kind::Device)));
        }
        let id = format!("ed25519:{key_id}");
        for (kind, k) in [("master", Kind::Master), ("self_signing", Kind::Subkey), ("user_signing", Kind::Subkey)] {
            if let Some(v) = self.cross_signing_key(target, kind)?
                && v.get("keys").and_then(Value::as_object).is_some_and(|keys| keys.contains_key(&id))
            {
                return Ok(Some((trees::CROSS_SIGNING_KEYS, key(&[target.as_bytes(), kind.as_bytes()]), v, k)));
            }
        }
        Ok(None)
    }

    /// The public keys of `user`'s cross-signing key `kind`, by key id.
    fn cross_signing_public_keys(&self, user: &UserId, kind: &str) -> Result<BTreeMap<String, Base64>> {
        let Some(v) = self.cross_signing_key(user, kind)? else { return Ok(BTreeMap::new()) };
        Ok(ed25519_keys(&v))
    }

    /// The ed25519 keys of all of `user`'s devices, by key id (`ed25519:<device id>`).
    fn device_signing_keys(&self, user: &UserId) -> Result<BTreeMap<String, Base64>> {
        Ok(self.device_keys(user)?.values().flat_map(ed25519_keys).collect())
    }
}

/// The `ed25519:` entries of a key object's `keys`, decoded.
fn ed25519_keys(key: &Value) -> BTreeMap<String, Base64> {
    key.get("keys")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
        .filter(|(id, _)| id.starts_with("ed25519:"))
        .filter_map(|(id, k)| Some((id.clone(), decode(k.as_str()?)?)))
        .collect()
}

fn decode(s: &str) -> Option<Base64> {
    Base64::parse(s).ok()
}
