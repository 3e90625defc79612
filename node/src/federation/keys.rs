//! The key server and notary: `GET /_matrix/key/v2/server` publishes the node's signing key,
//! self-signed, so peers can verify its events and requests; `/_matrix/key/v2/query` answers for
//! this node and, as a notary, for the peers whose keys it has fetched, adding its own signature.

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use ruma::{
    CanonicalJsonObject, CanonicalJsonValue, MilliSecondsSinceUnixEpoch, OwnedServerName, ServerName,
    api::federation::discovery::{
        ServerSigningKeys, get_remote_server_keys, get_remote_server_keys_batch, get_server_keys,
    },
    canonical_json::to_canonical_value,
    serde::Raw,
    signatures::sign_json,
};

use crate::{
    Services,
    error::{Error, Result},
    http::Ruma,
    keys::ServerKeys,
};

/// How long peers may cache the key before asking again. A day keeps a key rotation visible
/// quickly without making every peer refetch on every event.
const VALID_FOR: Duration = Duration::from_secs(24 * 60 * 60);

/// This node's key object, self-signed, valid for [`VALID_FOR`] from now.
pub fn own_keys_object(keys: &ServerKeys) -> Result<CanonicalJsonObject> {
    let valid_until = MilliSecondsSinceUnixEpoch::from_system_time(std::time::SystemTime::now() + VALID_FOR)
        .ok_or_else(|| Error::internal("clock out of range"))?;
    let value = serde_json::json!({
        "server_name": keys.server_name(),
        "verify_keys": { keys.key_id(): { "key": keys.public_key_base64() } },
        "old_verify_keys": {},
        "valid_until_ts": valid_until,
    });
    let mut object = object_of(&value)?;
    sign_json(keys.server_name().as_str(), keys.pair(), &mut object).map_err(Error::internal)?;
    Ok(object)
}

pub(crate) fn object_of(value: &impl serde::Serialize) -> Result<CanonicalJsonObject> {
    match to_canonical_value(value).map_err(Error::internal)? {
        CanonicalJsonValue::Object(o) => Ok(o),
        _ => Err(Error::internal("server keys are not an object")),
    }
}

fn raw(object: &CanonicalJsonObject) -> Result<Raw<ServerSigningKeys>> {
    serde_json::value::to_raw_value(object).map(Raw::from_json).map_err(Error::internal)
}

pub async fn server_keys(
    s: Arc<Services>,
    _: Ruma<get_server_keys::v2::Request>,
) -> Result<get_server_keys::v2::Response> {
    Ok(get_server_keys::v2::Response::new(raw(&own_keys_object(&s.keys)?)?))
}

/// The key object for `server` as this node vouches for it: our own, or a peer's (fetched or
/// cached) with our signature added. `None` when the peer cannot be reached or its keys do not
/// verify: a notary leaves such servers out of its answer.
async fn notarised(s: &Services, server: &ServerName) -> Result<Option<CanonicalJsonObject>> {
    if server == s.server_name {
        return own_keys_object(&s.keys).map(Some);
    }
    let mut object = match s.remote_keys.key_object(server).await {
        Ok(object) => object,
        Err(e) => {
            tracing::debug!(%server, error = %e, "notary: no keys for server");
            return Ok(None);
        }
    };
    sign_json(s.server_name.as_str(), s.keys.pair(), &mut object).map_err(Error::internal)?;
    Ok(Some(object))
}

async fn notarise_all(
    s: &Services,
    servers: impl IntoIterator<Item = OwnedServerName>,
) -> Result<Vec<Raw<ServerSigningKeys>>> {
    let mut out = Vec::new();
    for server in servers {
        if let Some(object) = notarised(s, &server).await? {
            out.push(raw(&object)?);
        }
    }
    Ok(out)
}

/// Servers asked for at once in one batch query; more is refused.
const MAX_BATCH: usize = 100;

/// `POST /_matrix/key/v2/query`.
pub async fn query_batch(
    s: Arc<Services>,
    req: Ruma<get_remote_server_keys_batch::v2::Request>,
) -> Result<get_remote_server_keys_batch::v2::Response> {
    if req.server_keys.len() > MAX_BATCH {
        return Err(Error::invalid_param(format!("at most {MAX_BATCH} servers per key query")));
    }
    let servers: BTreeMap<OwnedServerName, _> = req.body.server_keys;
    Ok(get_remote_server_keys_batch::v2::Response::new(notarise_all(&s, servers.into_keys()).await?))
}

/// `GET /_matrix/key/v2/query/{serverName}`.
pub async fn query_one(
    s: Arc<Services>,
    req: Ruma<get_remote_server_keys::v2::Request>,
) -> Result<get_remote_server_keys::v2::Response> {
    let server = req.body.server_name;
    Ok(get_remote_server_keys::v2::Response::new(notarise_all(&s, [server]).await?))
}
