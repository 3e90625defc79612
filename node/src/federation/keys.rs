//! `GET /_matrix/key/v2/server`: the node's signing key, self-signed, so peers can verify its
//! events and requests.

use std::{sync::Arc, time::Duration};

use ruma::{
    CanonicalJsonObject, MilliSecondsSinceUnixEpoch, api::federation::discovery::get_server_keys,
    canonical_json::to_canonical_value, serde::Raw, signatures::sign_json,
};

use crate::{
    Services,
    error::{Error, Result},
    http::Ruma,
};

/// How long peers may cache the key before asking again. A day keeps a key rotation visible
/// quickly without making every peer refetch on every event.
const VALID_FOR: Duration = Duration::from_secs(24 * 60 * 60);

pub async fn server_keys(
    s: Arc<Services>,
    _: Ruma<get_server_keys::v2::Request>,
) -> Result<get_server_keys::v2::Response> {
    let valid_until = MilliSecondsSinceUnixEpoch::from_system_time(std::time::SystemTime::now() + VALID_FOR)
        .ok_or_else(|| Error::internal("clock out of range"))?;
    let keys = serde_json::json!({
        "server_name": s.server_name,
        "verify_keys": { s.keys.key_id(): { "key": s.keys.public_key_base64() } },
        "old_verify_keys": {},
        "valid_until_ts": valid_until,
    });
    let mut object: CanonicalJsonObject = match to_canonical_value(&keys).map_err(Error::internal)? {
        ruma::CanonicalJsonValue::Object(o) => o,
        _ => return Err(Error::internal("server keys are not an object")),
    };
    sign_json(s.server_name.as_str(), s.keys.pair(), &mut object).map_err(Error::internal)?;
    let raw = serde_json::value::to_raw_value(&object).map(Raw::from_json).map_err(Error::internal)?;
    Ok(get_server_keys::v2::Response::new(raw))
}
