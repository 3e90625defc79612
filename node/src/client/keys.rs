//! End-to-end encryption endpoints: keys, cross-signing, to-device.

use std::{collections::BTreeMap, sync::Arc};

use ruma::api::client::{
    keys::{claim_keys, get_key_changes, get_keys, upload_keys, upload_signatures, upload_signing_keys},
    to_device::send_event_to_device,
};
use serde_json::Value;

use crate::{
    Services,
    e2ee::SignatureRefusal,
    error::{Error, Result},
    federation::user_keys,
    http::Ruma,
    sync::{Token, assemble::raw},
};

fn json_of<T>(raw: &ruma::serde::Raw<T>) -> Result<Value> {
    serde_json::from_str(raw.json().get()).map_err(Error::bad_json)
}

pub async fn upload(s: Arc<Services>, req: Ruma<upload_keys::v3::Request>) -> Result<upload_keys::v3::Response> {
    let auth = req.user()?.clone();
    if let Some(keys) = &req.device_keys {
        let value = json_of(keys)?;
        let user_ok = value.get("user_id").and_then(Value::as_str) == Some(auth.user_id.as_str());
        let device_ok = value.get("device_id").and_then(Value::as_str) == Some(auth.device_id.as_str());
        if !user_ok || !device_ok {
            return Err(Error::bad_json("device_keys must name your own user and device"));
        }
        let prev = crate::federation::edu::key_position(&s, &auth.user_id);
        s.e2ee.upload_device_keys(&auth.user_id, &auth.device_id, value).await?;
        crate::federation::edu::device_list_update(&s, &auth.user_id, &auth.device_id, prev).await;
    }
    let mut otks = BTreeMap::new();
    for (id, key) in &req.one_time_keys {
        otks.insert(id.to_string(), json_of(key)?);
    }
    s.e2ee.upload_one_time_keys(&auth.user_id, &auth.device_id, otks).await?;
    let mut fallbacks = BTreeMap::new();
    for (id, key) in &req.fallback_keys {
        fallbacks.insert(id.to_string(), json_of(key)?);
    }
    s.e2ee.upload_fallback_keys(&auth.user_id, &auth.device_id, fallbacks).await?;
    let counts = s
        .e2ee
        .one_time_key_counts(&auth.user_id, &auth.device_id)?
        .into_iter()
        .map(|(alg, n)| (alg.as_str().into(), ruma::UInt::try_from(n).unwrap_or(ruma::UInt::MAX)))
        .collect();
    Ok(upload_keys::v3::Response::new(counts))
}

pub async fn query(s: Arc<Services>, req: Ruma<get_keys::v3::Request>) -> Result<get_keys::v3::Response> {
    let auth = req.user()?.clone();
    let mut response = get_keys::v3::Response::new();
    for (user, devices) in &req.device_keys {
        if !s.users.is_local(user) {
            continue;
        }
        let mut out = BTreeMap::new();
        for (device_id, keys) in user_keys::local_device_keys(&s, user, devices)? {
            out.insert(device_id, raw(&keys)?);
        }
        response.device_keys.insert(user.clone(), out);
        if let Some(master) = s.e2ee.cross_signing_key(user, "master")? {
            response.master_keys.insert(user.clone(), raw(&visible_signatures(master, user, &auth.user_id))?);
        }
        if let Some(ssk) = s.e2ee.cross_signing_key(user, "self_signing")? {
            response.self_signing_keys.insert(user.clone(), raw(&ssk)?);
        }
        // The user-signing key is private to its owner.
        if *user == auth.user_id
            && let Some(usk) = s.e2ee.cross_signing_key(user, "user_signing")?
        {
            response.user_signing_keys.insert(user.clone(), raw(&usk)?);
        }
    }
    // Users of other servers: asked over federation each time (remote device lists are not
    // cached); a server that cannot be reached is listed in `failures`.
    let remote = user_keys::remote_by_server(&s, &req.device_keys);
    if !remote.is_empty() {
        let timeout = req.timeout.unwrap_or(user_keys::DEFAULT_REMOTE_TIMEOUT);
        let (answers, failures) = user_keys::query_remote(&s, remote, timeout).await;
        for answer in answers {
            response.device_keys.extend(answer.device_keys);
            for (user, master) in answer.master_keys {
                let value = json_of(&master)?;
                response.master_keys.insert(user.clone(), raw(&visible_signatures(value, &user, &auth.user_id))?);
            }
            response.self_signing_keys.extend(answer.self_signing_keys);
        }
        response.failures = failures;
    }
    Ok(response)
}

/// The signatures on a key that `viewer` may see: the owner's and the viewer's own. Which other
/// users verified someone is nobody else's business (Synapse filters the same way).
fn visible_signatures(mut key: Value, owner: &ruma::UserId, viewer: &ruma::UserId) -> Value {
    if let Some(signatures) = key.get_mut("signatures").and_then(Value::as_object_mut) {
        signatures.retain(|signer, _| signer == owner.as_str() || signer == viewer.as_str());
    }
    key
}

pub async fn claim(s: Arc<Services>, req: Ruma<claim_keys::v3::Request>) -> Result<claim_keys::v3::Response> {
    req.user()?;
    let mut claimed = BTreeMap::new();
    for (user, devices) in &req.one_time_keys {
        if s.users.is_local(user) {
            claimed.insert(user.clone(), user_keys::claim_local(&s, user, devices).await?);
        }
    }
    let remote = user_keys::remote_by_server(&s, &req.one_time_keys);
    let mut failures = BTreeMap::new();
    if !remote.is_empty() {
        let timeout = req.timeout.unwrap_or(user_keys::DEFAULT_REMOTE_TIMEOUT);
        let (remote_claimed, remote_failures) = user_keys::claim_remote(&s, remote, timeout).await;
        claimed.extend(remote_claimed);
        failures = remote_failures;
    }
    let mut response = claim_keys::v3::Response::new(claimed);
    response.failures = failures;
    Ok(response)
}

pub async fn changes(
    s: Arc<Services>,
    req: Ruma<get_key_changes::v3::Request>,
) -> Result<get_key_changes::v3::Response> {
    let auth = req.user()?;
    let from = Token::parse(&req.from).map(|t| t.pos).or_else(|_| crate::sync::parse_pagination_token(&req.from))?;
    let to = Token::parse(&req.to).map(|t| t.pos).or_else(|_| crate::sync::parse_pagination_token(&req.to))?;
    // The same answer `/sync` gives in `device_lists` for this window.
    let updates = crate::e2ee::device_lists::device_list_updates(&s, &auth.user_id, from, to).await?;
    Ok(get_key_changes::v3::Response::new(updates.changed, updates.left))
}

pub async fn upload_signing(
    s: Arc<Services>,
    req: Ruma<upload_signing_keys::v3::Request>,
) -> Result<upload_signing_keys::v3::Response> {
    let auth = req.user()?.clone();
    let mut keys = Vec::new();
    if let Some(k) = &req.master_key {
        keys.push(("master", json_of(k)?));
    }
    if let Some(k) = &req.self_signing_key {
        keys.push(("self_signing", json_of(k)?));
    }
    if let Some(k) = &req.user_signing_key {
        keys.push(("user_signing", json_of(k)?));
    }
    for (_, key) in &keys {
        if key.get("user_id").and_then(Value::as_str) != Some(auth.user_id.as_str()) {
            return Err(Error::bad_json("cross-signing keys must name your own user"));
        }
    }
    // Replacing an existing master key needs the password; the first upload does not (as in
    // Synapse), so clients can bootstrap cross-signing right after login. Re-sending the keys
    // already stored is a no-op without a password, so a client retrying after a lost
    // response is not asked to authenticate for a change that already happened.
    if s.e2ee.cross_signing_key(&auth.user_id, "master")?.is_some() {
        if s.e2ee.cross_signing_keys_unchanged(&auth.user_id, &keys)? {
            return Ok(upload_signing_keys::v3::Response::new());
        }
        super::session::require_password(&s, &auth.user_id, req.auth.as_ref()).await?;
    }
    s.e2ee.set_cross_signing_keys(&auth.user_id, keys).await?;
    crate::federation::edu::signing_key_update(&s, &auth.user_id).await;
    Ok(upload_signing_keys::v3::Response::new())
}

/// Signed keys one `/keys/signatures/upload` may carry: a client signs its own device and
/// master key, or one other user's master key, so a handful is normal.
const MAX_SIGNED_KEYS: usize = 100;

pub async fn upload_signatures(
    s: Arc<Services>,
    req: Ruma<upload_signatures::v3::Request>,
) -> Result<upload_signatures::v3::Response> {
    let auth = req.user()?.clone();
    let count: usize = req.signed_keys.values().map(|keys| keys.iter().count()).sum();
    if count > MAX_SIGNED_KEYS {
        return Err(Error::invalid_param(format!("at most {MAX_SIGNED_KEYS} signed keys per upload, not {count}")));
    }
    let mut response = upload_signatures::v3::Response::new();
    for (target, signed) in &req.signed_keys {
        for (key_id, raw_key) in signed.iter() {
            let value: Value = serde_json::from_str(raw_key.get()).map_err(Error::bad_json)?;
            let prev = crate::federation::edu::key_position(&s, target);
            let outcome = if s.users.is_local(target) {
                s.e2ee.add_verified_signatures(&auth.user_id, target, key_id, &value).await?
            } else {
                Err(SignatureRefusal::NotFound(format!("{target}'s keys are not kept on this server")))
            };
            match outcome {
                // A user signing their own device or master key changes what other servers see.
                Ok(true) if *target == auth.user_id => {
                    let device = ruma::OwnedDeviceId::from(key_id.to_string().as_str());
                    if s.e2ee.device_keys(target)?.contains_key(&device) {
                        crate::federation::edu::device_list_update(&s, target, &device, prev).await;
                    } else {
                        crate::federation::edu::signing_key_update(&s, target).await;
                    }
                }
                Ok(_) => {}
                Err(refusal) => {
                    tracing::info!(signer = %auth.user_id, %target, %key_id, error = %refusal, "signature refused");
                    let failure = serde_json::from_value(serde_json::json!({
                        "errcode": refusal.errcode(),
                        "error": refusal.to_string(),
                    }))
                    .map_err(Error::internal)?;
                    response.failures.entry(target.clone()).or_default().insert(key_id.to_string(), failure);
                }
            }
        }
    }
    Ok(response)
}

pub async fn send_to_device(
    s: Arc<Services>,
    req: Ruma<send_event_to_device::v3::Request>,
) -> Result<send_event_to_device::v3::Response> {
    let auth = req.user()?.clone();
    let targets = crate::e2ee::local_targets(&s, &req.messages)?;
    s.e2ee
        .send_to_device(&auth.user_id, &auth.device_id, req.txn_id.as_str(), &req.event_type.to_string(), targets)
        .await?;
    let (txn_id, event_type) = (req.txn_id.to_string(), req.event_type.to_string());
    crate::federation::edu::to_device(&s, &auth.user_id, &auth.device_id, &txn_id, &event_type, req.body.messages)
        .await;
    Ok(send_event_to_device::v3::Response::new())
}
