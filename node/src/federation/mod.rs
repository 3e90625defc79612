//! The Server-Server API: the TLS transport (listener, outbound client, server discovery),
//! X-Matrix request signatures, the key server and notary, and remote key fetching. Transactions,
//! joins, backfill and the sender queue build on these.

pub mod announce;
pub mod client;
pub mod directory;
pub mod edu;
pub mod events;
pub mod hierarchy;
pub mod join;
pub mod keys;
pub mod media;
pub mod membership;
pub mod openid;
pub mod outbound;
pub mod pdu;
pub mod receive;
pub mod remote_keys;
pub mod send;
pub mod sender;
pub mod srv;
pub mod tls;
pub mod tls_reload;
pub mod trust;
pub mod user_keys;
pub mod well_known;

use std::sync::Arc;

use axum::Router;
use ruma::{
    OwnedServerName,
    api::federation::{
        authenticated_media::{get_content, get_content_thumbnail},
        authorization::get_event_authorization,
        backfill::get_backfill,
        device::get_devices,
        directory::get_public_rooms,
        discovery::{get_remote_server_keys, get_remote_server_keys_batch, get_server_keys, get_server_version},
        event::{get_event, get_missing_events, get_room_state, get_room_state_ids},
        keys::{claim_keys, get_keys},
        membership::{
            create_invite, create_join_event, create_knock_event, create_leave_event, prepare_join_event,
            prepare_knock_event, prepare_leave_event,
        },
        openid::get_openid_userinfo,
        query::{get_profile_information, get_room_information},
        space::get_hierarchy,
        transactions::send_transaction_message,
    },
};
use tokio::sync::broadcast;

use crate::{
    Services,
    error::Result,
    http::{EndpointRouter, Ruma, unrecognized},
};

/// How many "peer seen" notices may queue up for a slow subscriber before it misses some.
const PEER_SEEN_CAPACITY: usize = 1024;

/// A fresh notifier for [`Services::peer_seen`]: every inbound request whose X-Matrix signature
/// checks out sends its origin, so the outbound sender can flush that peer's queue at once.
pub fn peer_seen_channel() -> broadcast::Sender<OwnedServerName> {
    broadcast::channel(PEER_SEEN_CAPACITY).0
}

/// The federation router, served over TLS on `federation_listen`.
pub fn router(services: Arc<Services>) -> Router {
    let endpoints = EndpointRouter::new()
        .ruma::<get_server_version::v1::Request, _, _>(version)
        .ruma::<get_server_keys::v2::Request, _, _>(keys::server_keys)
        .ruma::<get_remote_server_keys_batch::v2::Request, _, _>(keys::query_batch)
        .ruma::<get_remote_server_keys::v2::Request, _, _>(keys::query_one)
        .ruma::<get_public_rooms::v1::Request, _, _>(directory::public_rooms)
        .ruma::<send_transaction_message::v1::Request, _, _>(send::transaction)
        .ruma::<get_event::v1::Request, _, _>(events::event)
        .ruma::<ruma::api::federation::event::get_event_by_timestamp::v1::Request, _, _>(events::event_at_ts)
        .ruma::<get_room_state::v1::Request, _, _>(events::state)
        .ruma::<get_room_state_ids::v1::Request, _, _>(events::state_ids)
        .ruma::<get_event_authorization::v1::Request, _, _>(events::event_auth)
        .ruma::<get_backfill::v1::Request, _, _>(events::backfill)
        .ruma::<get_missing_events::v1::Request, _, _>(events::missing_events)
        .ruma::<prepare_join_event::v1::Request, _, _>(membership::make_join)
        .ruma::<create_join_event::v2::Request, _, _>(membership::send_join)
        .ruma::<prepare_leave_event::v1::Request, _, _>(membership::make_leave)
        .ruma::<create_leave_event::v2::Request, _, _>(membership::send_leave)
        .ruma::<create_invite::v2::Request, _, _>(membership::invite)
        .ruma::<prepare_knock_event::v1::Request, _, _>(membership::make_knock)
        .ruma::<create_knock_event::v1::Request, _, _>(membership::send_knock)
        .ruma::<get_hierarchy::v1::Request, _, _>(hierarchy::hierarchy)
        .ruma::<get_openid_userinfo::v1::Request, _, _>(openid::userinfo)
        .ruma::<get_content::v1::Request, _, _>(media::download)
        .ruma::<get_content_thumbnail::v1::Request, _, _>(media::thumbnail)
        .ruma::<get_devices::v1::Request, _, _>(user_keys::devices)
        .ruma::<get_keys::v1::Request, _, _>(user_keys::query)
        .ruma::<claim_keys::v1::Request, _, _>(user_keys::claim)
        .ruma::<get_profile_information::v1::Request, _, _>(user_keys::profile)
        .ruma::<get_room_information::v1::Request, _, _>(user_keys::directory);
    let metrics = crate::metrics::requests::RequestMetrics::new("federation", services.metrics.clone());
    endpoints
        .into_router()
        .fallback(unrecognized)
        .layer(axum::middleware::from_fn_with_state(metrics, crate::metrics::requests::track))
        .with_state(services)
}

/// `GET /_matrix/federation/v1/version`.
pub async fn version(
    _: Arc<Services>,
    _: Ruma<get_server_version::v1::Request>,
) -> Result<get_server_version::v1::Response> {
    let mut server = get_server_version::v1::Server::new();
    server.name = Some("Tocsin".to_owned());
    server.version = Some(env!("CARGO_PKG_VERSION").to_owned());
    let mut response = get_server_version::v1::Response::new();
    response.server = Some(server);
    Ok(response)
}
