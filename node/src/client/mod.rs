//! The Client-Server API: one file per endpoint group, each handler thin over its service.

mod account;
mod appservices;
mod backup;
mod devices;
mod directory;
mod discovery;
mod keys;
mod media;
mod notifications;
mod paging;
mod presence;
mod preview;
mod read;
mod registration;
mod report;
mod rooms;
mod search;
mod send;
mod session;
mod sliding_sync;
mod spaces;
mod sync;
mod tags;
mod threads;
mod voip;

use std::sync::Arc;

use axum::{Router, routing::get};
use ruma::api::client::{
    account::{change_password, deactivate, register, whoami},
    alias::{create_alias, delete_alias, get_alias},
    authenticated_media as media_v1,
    backup::{
        add_backup_keys, add_backup_keys_for_room, add_backup_keys_for_session, create_backup_version,
        delete_backup_keys, delete_backup_keys_for_room, delete_backup_keys_for_session, delete_backup_version,
        get_backup_info, get_backup_keys, get_backup_keys_for_room, get_backup_keys_for_session,
        get_latest_backup_info, update_backup_version,
    },
    config::{get_global_account_data, get_room_account_data, set_global_account_data, set_room_account_data},
    context::get_context,
    device::{delete_device, delete_devices, get_device, get_devices, update_device},
    directory::{get_public_rooms, get_public_rooms_filtered, get_room_visibility, set_room_visibility},
    discovery::{get_capabilities, get_supported_versions},
    filter::{create_filter, get_filter},
    keys::{claim_keys, get_key_changes, get_keys, upload_keys, upload_signatures, upload_signing_keys},
    media as media_v3,
    membership::{
        ban_user, forget_room, get_member_events, invite_user, join_room_by_id, join_room_by_id_or_alias,
        joined_members, joined_rooms, kick_user, leave_room, unban_user,
    },
    message::{get_message_events, send_message_event},
    profile::{delete_profile_field, get_profile, get_profile_field, set_profile_field},
    push::{
        delete_pushrule, get_pushers, get_pushrule, get_pushrule_actions, get_pushrule_enabled, get_pushrules_all,
        set_pusher, set_pushrule, set_pushrule_actions, set_pushrule_enabled,
    },
    read_marker::set_read_marker,
    receipt::create_receipt,
    redact::redact_event,
    relations::{
        get_relating_events, get_relating_events_with_rel_type, get_relating_events_with_rel_type_and_event_type,
    },
    room::report_content,
    room::{aliases, create_room, get_room_event},
    session::{get_login_types, login, logout, logout_all, refresh_token},
    state::{get_state_event_for_key, get_state_events, send_state_event},
    sync::sync_events,
    tag::{create_tag, delete_tag, get_tags},
    to_device::send_event_to_device,
    typing::create_typing_event,
    user_directory::search_users,
};

use crate::{
    Services,
    http::{EndpointRouter, cors, unrecognized},
};

// The legacy media endpoints are deprecated but still used by older clients.
#[allow(deprecated)]
pub fn router(services: Arc<Services>) -> Router {
    let endpoints = EndpointRouter::new()
        .ruma::<get_supported_versions::Request, _, _>(discovery::versions)
        .ruma::<get_capabilities::v3::Request, _, _>(discovery::capabilities)
        .raw("/.well-known/matrix/client", get(discovery::well_known_client))
        .ruma::<get_login_types::v3::Request, _, _>(session::login_types)
        .ruma_prepared::<login::v3::Request, _, _>(session::login_body, session::login)
        .ruma::<register::v3::Request, _, _>(registration::register)
        .ruma::<ruma::api::client::account::get_username_availability::v3::Request, _, _>(registration::available)
        .ruma::<ruma::api::client::account::check_registration_token_validity::v1::Request, _, _>(
            registration::token_validity,
        )
        .ruma::<refresh_token::v3::Request, _, _>(session::refresh)
        .ruma::<whoami::v3::Request, _, _>(session::whoami)
        .ruma::<ruma::api::client::account::request_openid_token::v3::Request, _, _>(account::openid_token)
        .ruma::<logout::v3::Request, _, _>(session::logout)
        .ruma::<logout_all::v3::Request, _, _>(session::logout_all)
        .ruma::<change_password::v3::Request, _, _>(session::change_password)
        .ruma::<deactivate::v3::Request, _, _>(session::deactivate)
        .ruma::<create_room::v3::Request, _, _>(rooms::create)
        .ruma::<ruma::api::client::room::upgrade_room::v3::Request, _, _>(rooms::upgrade)
        .ruma::<join_room_by_id::v3::Request, _, _>(rooms::join_by_id)
        .ruma::<join_room_by_id_or_alias::v3::Request, _, _>(rooms::join_by_id_or_alias)
        .ruma::<invite_user::v3::Request, _, _>(rooms::invite)
        .ruma::<leave_room::v3::Request, _, _>(rooms::leave)
        .ruma::<ruma::api::client::knock::knock_room::v3::Request, _, _>(rooms::knock)
        .ruma::<forget_room::v3::Request, _, _>(rooms::forget)
        .ruma::<kick_user::v3::Request, _, _>(rooms::kick)
        .ruma::<ban_user::v3::Request, _, _>(rooms::ban)
        .ruma::<unban_user::v3::Request, _, _>(rooms::unban)
        .ruma::<joined_rooms::v3::Request, _, _>(rooms::joined)
        .ruma::<send_message_event::v3::Request, _, _>(send::message)
        .ruma::<send_state_event::v3::Request, _, _>(send::state)
        .ruma::<redact_event::v3::Request, _, _>(send::redact)
        .ruma::<get_message_events::v3::Request, _, _>(read::messages)
        .ruma::<get_room_event::v3::Request, _, _>(read::event)
        .ruma::<ruma::api::client::space::get_hierarchy::v1::Request, _, _>(spaces::hierarchy)
        .ruma::<ruma::api::client::room::get_summary::v1::Request, _, _>(spaces::summary)
        .ruma::<report_content::v3::Request, _, _>(report::event)
        .ruma::<ruma::api::client::room::report_room::v3::Request, _, _>(report::room)
        .ruma::<ruma::api::client::reporting::report_user::v3::Request, _, _>(report::user)
        .ruma::<get_context::v3::Request, _, _>(read::context)
        .ruma_prepared::<ruma::api::client::threads::get_threads::v1::Request, _, _>(
            threads::default_include,
            threads::list,
        )
        .ruma::<ruma::api::client::room::get_event_by_timestamp::v1::Request, _, _>(read::event_at_ts)
        .ruma::<get_state_events::v3::Request, _, _>(read::state_all)
        .ruma::<get_state_event_for_key::v3::Request, _, _>(read::state_for_key)
        .ruma::<get_member_events::v3::Request, _, _>(read::members)
        .ruma::<joined_members::v3::Request, _, _>(read::joined_members)
        .ruma::<get_relating_events::v1::Request, _, _>(read::relations)
        .ruma::<get_relating_events_with_rel_type::v1::Request, _, _>(read::relations_of_type)
        .ruma::<get_relating_events_with_rel_type_and_event_type::v1::Request, _, _>(
            read::relations_of_type_and_event_type,
        )
        .ruma_as::<sync_events::v3::Request, _, _, _>(sync::sync)
        .ruma::<sync_events::v5::Request, _, _>(sliding_sync::sync)
        .ruma_prepared::<create_typing_event::v3::Request, _, _>(sync::typing_body, sync::typing)
        .ruma::<ruma::api::client::presence::set_presence::v3::Request, _, _>(presence::set)
        .ruma::<ruma::api::client::presence::get_presence::v3::Request, _, _>(presence::get)
        .ruma::<create_receipt::v3::Request, _, _>(sync::create_receipt)
        .ruma::<set_read_marker::v3::Request, _, _>(sync::read_markers)
        .ruma::<get_profile::v3::Request, _, _>(account::profile)
        .ruma::<get_profile_field::v3::Request, _, _>(account::profile_field)
        .ruma::<set_profile_field::v3::Request, _, _>(account::set_field)
        .ruma::<delete_profile_field::v3::Request, _, _>(account::delete_field)
        .ruma::<get_global_account_data::v3::Request, _, _>(account::get_global)
        .ruma::<set_global_account_data::v3::Request, _, _>(account::set_global)
        .ruma::<get_room_account_data::v3::Request, _, _>(account::get_room)
        .ruma::<set_room_account_data::v3::Request, _, _>(account::set_room)
        .ruma::<get_tags::v3::Request, _, _>(tags::get)
        .ruma::<create_tag::v3::Request, _, _>(tags::put)
        .ruma::<delete_tag::v3::Request, _, _>(tags::delete)
        .ruma::<create_filter::v3::Request, _, _>(account::create_filter)
        .ruma::<get_filter::v3::Request, _, _>(account::get_filter)
        .ruma::<get_pushrules_all::v3::Request, _, _>(account::pushrules_all)
        .ruma::<ruma::api::client::push::get_pushrules_global_scope::v3::Request, _, _>(account::pushrules_global)
        .ruma::<get_pushrule::v3::Request, _, _>(account::pushrule)
        .ruma::<set_pushrule::v3::Request, _, _>(account::set_pushrule)
        .ruma::<delete_pushrule::v3::Request, _, _>(account::delete_pushrule)
        .ruma::<get_pushrule_enabled::v3::Request, _, _>(account::pushrule_enabled)
        .ruma::<set_pushrule_enabled::v3::Request, _, _>(account::set_pushrule_enabled)
        .ruma::<get_pushrule_actions::v3::Request, _, _>(account::pushrule_actions)
        .ruma::<set_pushrule_actions::v3::Request, _, _>(account::set_pushrule_actions)
        .ruma::<get_pushers::v3::Request, _, _>(account::pushers)
        .ruma::<ruma::api::client::push::get_notifications::v3::Request, _, _>(notifications::list)
        .ruma::<ruma::api::client::search::search_events::v3::Request, _, _>(search::search)
        .ruma::<ruma::api::client::voip::get_turn_server_info::v3::Request, _, _>(voip::turn_server)
        .ruma::<ruma::api::client::account::get_3pids::v3::Request, _, _>(account::threepids)
        .ruma::<set_pusher::v3::Request, _, _>(account::set_pusher)
        .ruma::<search_users::v3::Request, _, _>(account::search_users)
        .ruma::<upload_keys::v3::Request, _, _>(keys::upload)
        .ruma::<get_keys::v3::Request, _, _>(keys::query)
        .ruma::<claim_keys::v3::Request, _, _>(keys::claim)
        .ruma::<get_key_changes::v3::Request, _, _>(keys::changes)
        .ruma::<upload_signing_keys::v3::Request, _, _>(keys::upload_signing)
        .ruma::<upload_signatures::v3::Request, _, _>(keys::upload_signatures)
        .ruma::<send_event_to_device::v3::Request, _, _>(keys::send_to_device)
        .ruma::<create_backup_version::v3::Request, _, _>(backup::create_version)
        .ruma::<get_latest_backup_info::v3::Request, _, _>(backup::latest_version)
        .ruma::<get_backup_info::v3::Request, _, _>(backup::version)
        .ruma::<update_backup_version::v3::Request, _, _>(backup::update_version)
        .ruma::<delete_backup_version::v3::Request, _, _>(backup::delete_version)
        .ruma::<add_backup_keys::v3::Request, _, _>(backup::put_keys)
        .ruma::<add_backup_keys_for_room::v3::Request, _, _>(backup::put_room_keys)
        .ruma::<add_backup_keys_for_session::v3::Request, _, _>(backup::put_session_key)
        .ruma::<get_backup_keys::v3::Request, _, _>(backup::get_keys)
        .ruma::<get_backup_keys_for_room::v3::Request, _, _>(backup::get_room_keys)
        .ruma::<get_backup_keys_for_session::v3::Request, _, _>(backup::get_session_key)
        .ruma::<delete_backup_keys::v3::Request, _, _>(backup::delete_keys)
        .ruma::<delete_backup_keys_for_room::v3::Request, _, _>(backup::delete_room_keys)
        .ruma::<delete_backup_keys_for_session::v3::Request, _, _>(backup::delete_session_key)
        .ruma_as::<get_devices::v3::Request, _, _, _>(devices::devices)
        .ruma_as::<get_device::v3::Request, _, _, _>(devices::device)
        .ruma::<update_device::v3::Request, _, _>(devices::update)
        .ruma::<delete_device::v3::Request, _, _>(devices::delete)
        .ruma::<delete_devices::v3::Request, _, _>(devices::delete_many)
        .ruma_as::<ruma::api::client::admin::get_user_info::v3::Request, _, _, _>(devices::whois)
        .ruma::<ruma::api::client::thirdparty::get_protocols::v3::Request, _, _>(appservices::protocols)
        .ruma::<ruma::api::client::appservice::request_ping::v1::Request, _, _>(appservices::ping)
        .ruma::<ruma::api::client::appservice::set_room_visibility::v3::Request, _, _>(
            appservices::set_directory_visibility,
        )
        .ruma::<media_v3::create_content::v3::Request, _, _>(media::upload)
        .ruma_as::<media_v1::get_content::v1::Request, _, _, _>(media::download)
        .ruma_as::<media_v1::get_content_as_filename::v1::Request, _, _, _>(media::download_named)
        .ruma_as::<media_v1::get_content_thumbnail::v1::Request, _, _, _>(media::thumbnail)
        .ruma::<media_v1::get_media_config::v1::Request, _, _>(media::config)
        .ruma_as::<media_v3::get_content::v3::Request, _, _, _>(media::legacy_download)
        .ruma_as::<media_v3::get_content_as_filename::v3::Request, _, _, _>(media::legacy_download_named)
        .ruma_as::<media_v3::get_content_thumbnail::v3::Request, _, _, _>(media::legacy_thumbnail)
        .ruma::<media_v3::get_media_config::v3::Request, _, _>(media::legacy_config)
        .ruma::<media_v1::get_media_preview::v1::Request, _, _>(preview::preview)
        .ruma::<media_v3::get_media_preview::v3::Request, _, _>(preview::legacy_preview)
        .ruma::<create_alias::v3::Request, _, _>(directory::create)
        .ruma::<delete_alias::v3::Request, _, _>(directory::delete)
        .ruma::<get_alias::v3::Request, _, _>(directory::get)
        .ruma::<aliases::v3::Request, _, _>(directory::room_aliases)
        .ruma::<get_room_visibility::v3::Request, _, _>(directory::visibility)
        .ruma_prepared::<set_room_visibility::v3::Request, _, _>(directory::visibility_body, directory::set_visibility)
        .ruma::<get_public_rooms::v3::Request, _, _>(directory::public_rooms)
        .ruma::<get_public_rooms_filtered::v3::Request, _, _>(directory::public_rooms_filtered)
        // Synapse serves its key on the client port too; peers and tools may ask either.
        .ruma::<ruma::api::federation::discovery::get_server_keys::v2::Request, _, _>(
            crate::federation::keys::server_keys,
        )
        .raw("/_tocsin/admin/federation/backlog", get(crate::admin::federation::backlog))
        .raw("/_tocsin/metrics", get(crate::admin::metrics::metrics))
        .raw("/health", get(crate::admin::health::health))
        .raw("/_tocsin/admin/policy/plan", get(crate::admin::policy::plan))
        .raw("/_tocsin/admin/policy/apply", axum::routing::post(crate::admin::policy::apply))
        .raw("/.well-known/matrix/server", get(crate::federation::well_known::server));
    let endpoints = crate::admin::routes(endpoints);
    let metrics = crate::metrics::requests::RequestMetrics::new("client", services.metrics.clone());
    endpoints
        .into_router()
        .fallback(unrecognized)
        .layer(axum::middleware::from_fn(cors))
        .layer(axum::middleware::from_fn_with_state(metrics, crate::metrics::requests::track))
        .with_state(services)
}
