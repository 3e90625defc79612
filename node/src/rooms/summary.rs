//! What a room looks like from outside: its summary (name, topic, join rule, members, type) and,
//! for a space, its children. Shared by the client room summary, the client and federation
//! `/hierarchy`, so the three agree on what a viewer may learn.

use ruma::{
    OwnedRoomId, OwnedServerName, RoomId, ServerName, UInt, UserId,
    events::{StateEventType, space::child::HierarchySpaceChildEvent},
    room::{JoinRuleSummary, RoomSummary},
    serde::Raw,
};

use super::{Pdu, Rooms};
use crate::error::Result;

/// Who asks: a peer server (federation `/hierarchy`), a local user, or a client without a token
/// (the room summary takes one optionally).
#[derive(Clone, Copy)]
pub enum Viewer<'a> {
    Server(&'a ServerName),
    User(&'a UserId),
    Anonymous,
}

/// A room's summary as the viewer may see it, and its space children.
pub struct Described {
    pub summary: RoomSummary,
    /// The viewing user's membership (`None` for servers and strangers).
    pub membership: Option<String>,
    pub children: Vec<SpaceChild>,
}

/// One `m.space.child` of a space that is still a child (its `via` is not empty).
pub struct SpaceChild {
    pub room_id: OwnedRoomId,
    pub via: Vec<OwnedServerName>,
    pub suggested: bool,
    /// The stripped state event, as `/hierarchy` lists it.
    pub event: Raw<HierarchySpaceChildEvent>,
}

impl Rooms {
    /// The room described for `viewer`, or `None` when the viewer may not learn about it: it
    /// must be public, knockable or world-readable, or the viewer (a user, or a server with a
    /// member) must be in it. Rooms this node does not have are `None` too.
    pub async fn describe(&self, room_id: &RoomId, viewer: Viewer<'_>) -> Result<Option<Described>> {
        if !self.exists(room_id)? {
            return Ok(None);
        }
        let state = self.current_state(room_id).await?;
        let field = |kind: StateEventType, name: &str| {
            state
                .iter()
                .find(|p| p.state_event_type() == kind && p.state_key.as_deref() == Some(""))
                .and_then(|p| p.content_field(name))
                .and_then(|v| v.as_str().map(str::to_owned))
        };
        let joined: Vec<&str> = state
            .iter()
            .filter(|p| p.state_event_type() == StateEventType::RoomMember && p.membership().as_deref() == Some("join"))
            .filter_map(|p| p.state_key.as_deref())
            .collect();
        let join_rule = match field(StateEventType::RoomJoinRules, "join_rule").as_deref() {
            Some("public") => JoinRuleSummary::Public,
            Some("knock") => JoinRuleSummary::Knock,
            _ => JoinRuleSummary::Invite,
        };
        let world_readable =
            field(StateEventType::RoomHistoryVisibility, "history_visibility").as_deref() == Some("world_readable");
        let membership = match viewer {
            Viewer::User(user) => state
                .iter()
                .find(|p| {
                    p.state_event_type() == StateEventType::RoomMember && p.state_key.as_deref() == Some(user.as_str())
                })
                .and_then(|p| p.membership()),
            Viewer::Server(_) | Viewer::Anonymous => None,
        };
        let inside = match viewer {
            Viewer::Server(server) => {
                joined.iter().any(|m| m.rsplit_once(':').is_some_and(|(_, host)| host == server.as_str()))
            }
            Viewer::User(_) => matches!(membership.as_deref(), Some("join" | "invite" | "knock")),
            Viewer::Anonymous => false,
        };
        let open = matches!(join_rule, JoinRuleSummary::Public | JoinRuleSummary::Knock) || world_readable;
        if !open && !inside {
            return Ok(None);
        }
        let guest_can_join = field(StateEventType::RoomGuestAccess, "guest_access").as_deref() == Some("can_join");
        let mut summary = RoomSummary::new(
            room_id.to_owned(),
            join_rule,
            guest_can_join,
            UInt::try_from(joined.len()).unwrap_or(UInt::MAX),
            world_readable,
        );
        summary.name = field(StateEventType::RoomName, "name");
        summary.topic = field(StateEventType::RoomTopic, "topic");
        summary.avatar_url = field(StateEventType::RoomAvatar, "url").map(Into::into);
        summary.canonical_alias = field(StateEventType::RoomCanonicalAlias, "alias").and_then(|a| a.try_into().ok());
        summary.room_type = field(StateEventType::RoomCreate, "type").map(Into::into);
        summary.encryption = field(StateEventType::RoomEncryption, "algorithm").map(Into::into);
        summary.room_version = Some(self.version(room_id).await?);
        // The spec's order: by `order` (children with a valid one first), then by when the child
        // was added, then by room id.
        let mut children: Vec<(Option<String>, u64, SpaceChild)> = state
            .iter()
            .filter_map(|p| {
                let order = p
                    .content_field("order")
                    .and_then(|o| o.as_str().map(str::to_owned))
                    .filter(|o| o.len() <= 50 && o.bytes().all(|b| (0x20..=0x7e).contains(&b)));
                space_child(p).map(|c| (order, u64::from(p.origin_server_ts.0), c))
            })
            .collect();
        children
            .sort_by(|a, b| (a.0.is_none(), &a.0, a.1, &a.2.room_id).cmp(&(b.0.is_none(), &b.0, b.1, &b.2.room_id)));
        let children = children.into_iter().map(|(_, _, c)| c).collect();
        Ok(Some(Described { summary, membership, children }))
    }
}

impl Rooms {
    /// The rooms a space names as its children now (`m.space.child` with a `via`), without
    /// descending into subspaces.
    pub async fn space_children(&self, space: &RoomId) -> Result<std::collections::BTreeSet<OwnedRoomId>> {
        let state = self.current_state(space).await?;
        Ok(state.iter().filter_map(|pdu| child_link(pdu)).map(|(room_id, _)| room_id).collect())
    }
}

/// The child an `m.space.child` event names and its `via`, unless the event removes the child.
fn child_link(pdu: &Pdu) -> Option<(OwnedRoomId, Vec<OwnedServerName>)> {
    if pdu.kind.to_string() != "m.space.child" {
        return None;
    }
    let room_id = pdu.state_key.as_deref().and_then(|k| RoomId::parse(k).ok())?;
    // A child without `via` is a removed child.
    let via: Vec<OwnedServerName> = pdu
        .content_field("via")?
        .as_array()?
        .iter()
        .filter_map(|v| v.as_str().and_then(|s| ServerName::parse(s).ok()))
        .collect();
    (!via.is_empty()).then_some((room_id, via))
}

fn space_child(pdu: &Pdu) -> Option<SpaceChild> {
    let (room_id, via) = child_link(pdu)?;
    let suggested = pdu.content_field("suggested").and_then(|v| v.as_bool()).unwrap_or(false);
    let stripped = serde_json::json!({
        "type": "m.space.child",
        "state_key": room_id,
        "content": pdu.content_value(),
        "sender": pdu.sender,
        "origin_server_ts": pdu.origin_server_ts,
    });
    // Serialising a `Value` to a raw value cannot fail.
    let event = serde_json::value::to_raw_value(&stripped).ok().map(Raw::from_json)?;
    Some(SpaceChild { room_id, via, suggested, event })
}
