//! Discovery: versions, well-known and capabilities.

use std::{collections::BTreeMap, sync::Arc};

use axum::{extract::State, response::IntoResponse};
use ruma::{
    RoomVersionId,
    api::client::discovery::{
        get_capabilities::{
            self,
            v3::{Capabilities, RoomVersionStability, RoomVersionsCapability, ThirdPartyIdChangesCapability},
        },
        get_supported_versions,
    },
};

use crate::{Services, error::Result, http::Ruma, rooms::version};

pub async fn versions(
    _: Arc<Services>,
    _: Ruma<get_supported_versions::Request>,
) -> Result<get_supported_versions::Response> {
    let versions =
        ["r0.6.1", "v1.1", "v1.2", "v1.3", "v1.4", "v1.5", "v1.6", "v1.7", "v1.8", "v1.9", "v1.10", "v1.11", "v1.12"];
    let mut response = get_supported_versions::Response::new(versions.iter().map(|v| (*v).to_owned()).collect());
    response.unstable_features = BTreeMap::from([
        ("org.matrix.msc3916.stable".to_owned(), true),
        // Simplified sliding sync (MSC4186): what matrix-sdk (Element X) looks for.
        ("org.matrix.simplified_msc3575".to_owned(), true),
    ]);
    Ok(response)
}

pub async fn capabilities(
    s: Arc<Services>,
    _: Ruma<get_capabilities::v3::Request>,
) -> Result<get_capabilities::v3::Response> {
    let default = RoomVersionId::try_from(s.config.default_room_version.as_str()).unwrap_or(RoomVersionId::V12);
    let available = version::SUPPORTED.iter().map(|v| (v.clone(), RoomVersionStability::Stable)).collect();
    let mut caps = Capabilities::new();
    caps.room_versions = RoomVersionsCapability::new(default, available);
    // No e-mail addresses or phone numbers are bound to accounts (see `account::threepids`).
    caps.thirdparty_id_changes = ThirdPartyIdChangesCapability::new(false);
    Ok(get_capabilities::v3::Response::new(caps))
}

/// `/.well-known/matrix/client`: tells clients where this node's Client-Server API is.
pub async fn well_known_client(State(s): State<Arc<Services>>) -> impl IntoResponse {
    let body = serde_json::json!({ "m.homeserver": { "base_url": s.config.base_url() } }).to_string();
    ([(http::header::CONTENT_TYPE, "application/json")], body)
}
