//! Simplified sliding sync (MSC4186), the sync Element X runs: lists of the user's rooms by
//! recency cut to ranges, room subscriptions, and extensions, sent as changes since the
//! connection's last position. Rooms are rendered from the per-room deltas `/sync` v3 uses.

mod connection;
mod extensions;
mod filters;
mod index;
mod lists;
mod room;

use std::{
    collections::{BTreeMap, BTreeSet},
    sync::Arc,
    time::Duration,
};

pub use connection::Connections;
pub use filters::list_spaces;
use ruma::{
    OwnedRoomId, RoomId, UInt,
    api::client::sync::sync_events::v5::{Request, Response, response},
};

use self::{
    connection::PosState,
    filters::{FilterContext, ListFilter},
    room::RoomRequest,
};
use crate::{Services, error::Result, http::Auth, sync::Token};

const MAX_TIMEOUT: Duration = Duration::from_secs(60);

/// `spaces`: each list's `spaces` filter, which ruma's `Request` does not carry (see
/// [`list_spaces`]).
pub async fn sync(
    services: &Services,
    auth: &Auth,
    req: Request,
    spaces: BTreeMap<String, BTreeSet<OwnedRoomId>>,
) -> Result<Response> {
    let filters = filters::of_lists(&req.lists, &spaces);
    let conn_id = req.conn_id.clone().unwrap_or_default();
    let connections = &services.sync.sliding;
    let base = connections.resume(&auth.user_id, &auth.device_id, &conn_id, req.pos.as_deref())?;
    if req.extensions.to_device.enabled == Some(true) {
        // The client has everything up to its `since`: older to-device messages can go.
        let since = extensions::to_device_since(&req.extensions.to_device)?;
        services.e2ee.ack_to_device(&auth.user_id, &auth.device_id, since).await?;
    }
    if let Some(status) = services.sync.presence.synced(&auth.user_id, &req.set_presence) {
        crate::federation::edu::presence(services, &auth.user_id, &status).await;
    }
    // A first request answers at once, whatever its timeout.
    let timeout = if base.token.is_some() { req.timeout.unwrap_or_default().min(MAX_TIMEOUT) } else { Duration::ZERO };
    let deadline = tokio::time::Instant::now() + timeout;
    // Made before the first build, so no change after that build's position can be missed.
    let mut waiter = services.sync.wakes.waiter(&auth.user_id);
    loop {
        waiter.mark_seen();
        let now = services.sync.current_token();
        let (mut response, state, changed) = build(services, auth, &req, &filters, &base, now).await?;
        if changed || tokio::time::Instant::now() >= deadline {
            response.pos = connections.record(&auth.user_id, &auth.device_id, &conn_id, state)?;
            response.txn_id = req.txn_id.clone();
            return Ok(response);
        }
        let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
        services.sync.wait_for_change(&mut waiter, remaining).await;
    }
}

async fn build(
    services: &Services,
    auth: &Auth,
    req: &Request,
    filters: &BTreeMap<String, ListFilter>,
    base: &Arc<PosState>,
    now: Token,
) -> Result<(Response, PosState, bool)> {
    let user = &auth.user_id;
    // One index per connection, shared by its positions and brought up to date here.
    let mut index = base.index.lock().await;
    index.refresh(services, user, now.pos, filters::needs_facts(filters)).await?;
    index.set_context(FilterContext::load(services, user, filters.values()).await?);
    let mut window = lists::window(&req.lists, filters, &mut index, base);
    let ctx = index.context();
    let listed =
        |room_id: &RoomId| index.rooms.get(room_id).filter(|known| known.listed(lists::sent_membership(base, room_id)));

    for (room_id, subscription) in &req.room_subscriptions {
        // Only rooms the user is in (or invited to) can be subscribed to.
        if listed(room_id).is_some() {
            window
                .rooms
                .entry(room_id.clone())
                .or_default()
                .merge(&subscription.required_state, lists::timeline_limit(subscription.timeline_limit));
        }
    }

    let mut response = Response::new(String::new());
    let mut state = PosState {
        token: Some(now),
        rooms: base.rooms.clone(),
        list_counts: window.counts.clone(),
        index: base.index.clone(),
    };
    let mut changed = base.token.is_none() || base.list_counts != window.counts;
    for (name, count) in &window.counts {
        let mut list = response::List::default();
        list.count = UInt::try_from(*count).unwrap_or(UInt::MAX);
        response.lists.insert(name.clone(), list);
    }

    let display_name = crate::sync::unread::DisplayName::new(services, user);
    let mut in_view = BTreeSet::new();
    let mut initial = BTreeSet::new();
    for (room_id, config) in window.rooms {
        let Some(candidate) = listed(&room_id) else { continue };
        let request = RoomRequest {
            room_id: &room_id,
            membership: &candidate.membership,
            bump_stamp: candidate.bump_stamp,
            config: Arc::new(config),
            sent: base.rooms.get(&room_id),
            is_dm: ctx.direct_rooms.contains(&room_id),
            live_after: base.token.map(|t| t.pos),
        };
        if let Some((rendered, sent)) = room::render(services, auth, request, now.pos, &display_name).await? {
            if rendered.initial == Some(true) {
                initial.insert(room_id.clone());
            }
            response.rooms.insert(room_id.clone(), rendered);
            state.rooms.insert(room_id.clone(), sent);
            changed = true;
        }
        if candidate.membership.membership == "join" {
            in_view.insert(room_id);
        }
    }

    let view = extensions::InView { rooms: &in_view, initial: &initial };
    let (extensions, extensions_changed) = extensions::build(services, auth, &req.extensions, base, now, &view).await?;
    response.extensions = extensions;
    Ok((response, state, changed || extensions_changed))
}
