//! One room of a sliding sync response: what changed since the connection last sent it (or all
//! of it the first time), rendered from the same per-room deltas `/sync` v3 renders.

use std::{collections::BTreeSet, sync::Arc};

use ruma::{
    JsOption, OwnedMxcUri, RoomId, UInt, UserId,
    api::client::sync::sync_events::{
        UnreadNotificationsCount,
        v5::response::{Hero, Room},
    },
    events::{StateEventType, TimelineEventType},
};

use super::connection::{RoomConfig, SentRoom};
use crate::{
    Services,
    error::Result,
    http::Auth,
    rooms::{Pdu, UserRoom, head::MemberSummary},
    sync::{
        assemble::{raw, stripped_room_state},
        room_delta,
    },
};

/// Heroes are at most this many members.
const MAX_HEROES: usize = 5;

pub struct RoomRequest<'a> {
    pub room_id: &'a RoomId,
    pub membership: &'a UserRoom,
    pub bump_stamp: u64,
    pub config: Arc<RoomConfig>,
    pub sent: Option<&'a SentRoom>,
    pub is_dm: bool,
    /// The stream position the connection's previous response was at (`None` on its first).
    pub live_after: Option<u64>,
}

fn count(n: usize) -> UInt {
    UInt::try_from(n).unwrap_or(UInt::MAX)
}

/// The room as it should be sent, with what the connection will then have seen; `None` when
/// nothing changed for it.
pub async fn render(
    services: &Services,
    auth: &Auth,
    r: RoomRequest<'_>,
    upto: u64,
    display_name: &crate::sync::unread::DisplayName<'_>,
) -> Result<Option<(Room, SentRoom)>> {
    let membership = r.membership.membership.as_str();
    let mut sent = SentRoom { membership: membership.to_owned(), upto, config: r.config.clone(), counts: (0, 0) };
    let mut room = Room::new();
    room.bump_stamp = Some(UInt::try_from(r.bump_stamp).unwrap_or(UInt::MAX));
    match membership {
        "invite" | "knock" => {
            if r.sent.is_some_and(|s| s.membership == membership) {
                return Ok(None);
            }
            room.initial = Some(true);
            room.invite_state =
                Some(stripped_room_state(services, &auth.user_id, r.room_id, &r.membership.event_id).await?);
            Ok(Some((room, sent)))
        }
        "join" => joined(services, auth, r, room, sent, upto, display_name).await,
        _ => {
            // Left or banned since last sent: what happened up to the leave, once.
            let Some(before) = r.sent else { return Ok(None) };
            let leave_pos = r.membership.pos.min(upto);
            sent.upto = leave_pos;
            let timeline = room_delta::timeline(
                services,
                &auth.user_id,
                r.room_id,
                before.upto,
                leave_pos,
                r.config.timeline_limit,
            )?;
            render_timeline(services, auth, &mut room, &timeline, leave_pos, r.live_after)?;
            if let Some((_, pdu)) = services.rooms.event_with_pos(&r.membership.event_id)? {
                room.required_state.push(raw(&services.rooms.client_event(&(0, pdu), None, false)?)?);
            }
            Ok(Some((room, sent)))
        }
    }
}

async fn joined(
    services: &Services,
    auth: &Auth,
    r: RoomRequest<'_>,
    mut room: Room,
    mut sent: SentRoom,
    upto: u64,
    display_name: &crate::sync::unread::DisplayName<'_>,
) -> Result<Option<(Room, SentRoom)>> {
    let user = &auth.user_id;
    // Sent whole when new to the connection, newly joined, or asked for with other details.
    let previous = r.sent.filter(|s| s.membership == "join" && *s.config == *r.config);
    let since = previous.map(|s| s.upto).unwrap_or(0);
    let initial = previous.is_none();

    let timeline = room_delta::timeline(services, user, r.room_id, since, upto, r.config.timeline_limit)?;
    render_timeline(services, auth, &mut room, &timeline, upto, r.live_after)?;

    let senders: BTreeSet<String> = timeline.events.iter().map(|(_, p)| p.sender.to_string()).collect();
    let state = room_delta::state_delta(services, r.room_id, since, upto, initial).await?;
    let mut sent_keys = BTreeSet::new();
    for pdu in state.iter().filter(|p| wanted(&r.config.required_state, p, user, &senders)) {
        sent_keys.insert((pdu.kind.to_string(), pdu.state_key.clone().unwrap_or_default()));
        room.required_state.push(raw(&services.rooms.client_event(&(0, (**pdu).clone()), None, false)?)?);
    }
    // `$LAZY`: the members behind new timeline events, even when their membership did not change.
    if !initial && lazy_members(&r.config.required_state) {
        for sender in &senders {
            if sent_keys.contains(&("m.room.member".to_owned(), sender.clone())) {
                continue;
            }
            if let Some(pdu) = services.rooms.state_event(r.room_id, &StateEventType::RoomMember, sender).await? {
                room.required_state.push(raw(&services.rooms.client_event(&(0, (*pdu).clone()), None, false)?)?);
            }
        }
    }

    let members = services.rooms.member_summary(r.room_id).await?;
    let counts = room_delta::unread_counts(services, user, r.room_id, upto, members.joined, display_name, None).await?;
    sent.counts = counts;
    let counts_changed = previous.is_none_or(|p| p.counts != counts);
    if !initial && timeline.events.is_empty() && state.is_empty() && !counts_changed {
        return Ok(None);
    }
    let mut unread = UnreadNotificationsCount::new();
    unread.notification_count = Some(UInt::try_from(counts.0).unwrap_or(UInt::MAX));
    unread.highlight_count = Some(UInt::try_from(counts.1).unwrap_or(UInt::MAX));
    room.unread_notifications = unread;

    let state_changed = |kind: &str| state.iter().any(|p| p.kind.to_string() == kind);
    if initial || state_changed("m.room.member") || state_changed("m.room.name") || state_changed("m.room.avatar") {
        summary(services, user, r.room_id, &members, r.is_dm, initial, &mut room).await?;
    }
    if initial {
        room.initial = Some(true);
        room.is_dm = r.is_dm.then_some(true);
    }
    Ok(Some((room, sent)))
}

fn render_timeline(
    services: &Services,
    auth: &Auth,
    room: &mut Room,
    timeline: &room_delta::Timeline,
    upto: u64,
    live_after: Option<u64>,
) -> Result<()> {
    let viewer = Some((&*auth.user_id, &*auth.device_id));
    for e in &timeline.events {
        room.timeline.push(raw(&services.rooms.client_event(e, viewer, false)?)?);
    }
    room.limited = timeline.limited;
    room.prev_batch = Some(timeline.prev_batch(upto));
    // Live events arrived after the connection's previous response; the rest is history.
    let live = live_after.map_or(0, |after| timeline.events.iter().filter(|(p, _)| *p > after).count());
    room.num_live = Some(count(live));
    Ok(())
}

/// Whether `required_state` asks for this state event. `*` matches any type or key, `$ME` the
/// user's own key, `$LAZY` the members behind the timeline's events.
fn wanted(required: &[(StateEventType, String)], pdu: &Pdu, user: &UserId, senders: &BTreeSet<String>) -> bool {
    let kind = pdu.kind.to_string();
    let key = pdu.state_key.as_deref().unwrap_or_default();
    required.iter().any(|(t, k)| {
        let type_ok = t.to_string() == "*" || t.to_string() == kind;
        let key_ok = match k.as_str() {
            "*" => true,
            "$ME" => key == user.as_str(),
            "$LAZY" => pdu.kind == TimelineEventType::RoomMember && senders.contains(key),
            other => other == key,
        };
        type_ok && key_ok
    })
}

fn lazy_members(required: &[(StateEventType, String)]) -> bool {
    required.iter().any(|(t, k)| *t == StateEventType::RoomMember && k == "$LAZY")
}

/// Name, avatar, member counts and heroes, as the spec computes a room's display name: the
/// `m.room.name`, else the canonical alias, else the names of up to five other members.
async fn summary(
    services: &Services,
    user: &UserId,
    room_id: &RoomId,
    members: &MemberSummary,
    is_dm: bool,
    initial: bool,
    room: &mut Room,
) -> Result<()> {
    room.joined_count = Some(count(members.joined));
    room.invited_count = Some(count(members.invited));
    let state =
        |kind: StateEventType, key: String| async move { services.rooms.state_event(room_id, &kind, &key).await };
    let text = |pdu: Option<Arc<Pdu>>, field: &str| {
        pdu.and_then(|p| p.content_field(field)).and_then(|v| v.as_str().map(str::to_owned)).filter(|s| !s.is_empty())
    };
    room.name = text(state(StateEventType::RoomName, String::new()).await?, "name");
    let alias = text(state(StateEventType::RoomCanonicalAlias, String::new()).await?, "alias");
    let mut heroes = Vec::new();
    if room.name.is_none() && alias.is_none() {
        for member in members.heroes(user, MAX_HEROES) {
            let event = state(StateEventType::RoomMember, member.to_string()).await?;
            let mut hero = Hero::new(member);
            hero.name = text(event.clone(), "displayname");
            hero.avatar = text(event, "avatar_url").map(OwnedMxcUri::from);
            heroes.push(hero);
        }
        room.heroes = Some(heroes.clone());
    }
    let avatar = text(state(StateEventType::RoomAvatar, String::new()).await?, "url").map(OwnedMxcUri::from);
    // A direct chat without its own avatar shows the other person's.
    let avatar = avatar.or_else(|| if is_dm { heroes.first().and_then(|h| h.avatar.clone()) } else { None });
    room.avatar = match avatar {
        Some(url) => JsOption::Some(url),
        None if initial => JsOption::Undefined,
        None => JsOption::Null,
    };
    Ok(())
}
