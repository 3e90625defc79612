//! Space hierarchies and room summaries for clients. Rooms this node has are described from its
//! store ([`crate::rooms::summary`]); others are asked of the servers their space names (`via`)
//! over federation `/hierarchy`, so a state-wide space can list rooms held by other nodes.

use std::collections::{HashSet, VecDeque};

use ruma::{
    OwnedRoomId, OwnedServerName, RoomId, UserId,
    api::{client::space::SpaceHierarchyRoomsChunk, federation::space::get_hierarchy},
    events::space::child::HierarchySpaceChildEvent,
    room::RoomSummary,
    serde::Raw,
};

use crate::{
    Services,
    error::{Error, Result},
    rooms::summary::{SpaceChild, Viewer},
};

/// The most rooms one walk visits, whatever the page size: bounds the work a request can cause.
const MAX_WALK: usize = 500;

/// What a walk learned about one room.
struct Seen {
    summary: RoomSummary,
    children: Vec<SpaceChild>,
}

/// One page of a space's hierarchy, breadth first from `root`: rooms `skip..skip + limit` of the
/// walk, and the index the next page starts at, if any. `root` must be visible to `user`.
pub async fn hierarchy(
    s: &Services,
    user: &UserId,
    root: &RoomId,
    skip: usize,
    limit: usize,
    max_depth: usize,
    suggested_only: bool,
) -> Result<(Vec<SpaceHierarchyRoomsChunk>, Option<usize>)> {
    let mut queue: VecDeque<(OwnedRoomId, Vec<OwnedServerName>, usize)> =
        VecDeque::from([(root.to_owned(), Vec::new(), 0)]);
    let mut queued: HashSet<OwnedRoomId> = HashSet::from([root.to_owned()]);
    let mut rooms = Vec::new();
    let mut index = 0;
    let mut visited = 0;
    while let Some((room_id, via, depth)) = queue.pop_front() {
        if visited == MAX_WALK {
            break;
        }
        visited += 1;
        let Some(seen) = visit(s, user, &room_id, &via, suggested_only).await? else {
            if index == 0 && room_id == root {
                return Err(Error::forbidden("you cannot see this space"));
            }
            continue;
        };
        if depth < max_depth {
            for child in &seen.children {
                if (!suggested_only || child.suggested) && queued.insert(child.room_id.clone()) {
                    queue.push_back((child.room_id.clone(), child.via.clone(), depth + 1));
                }
            }
        }
        if index >= skip {
            let children_state = seen.children.into_iter().map(|c| c.event).collect();
            rooms.push(SpaceHierarchyRoomsChunk::new(seen.summary, children_state));
            if rooms.len() == limit {
                return Ok((rooms, (!queue.is_empty()).then_some(index + 1)));
            }
        }
        index += 1;
    }
    Ok((rooms, None))
}

/// The room as `user` may see it: from the store when this node has it, else from the first of
/// `via` that answers.
async fn visit(
    s: &Services,
    user: &UserId,
    room_id: &RoomId,
    via: &[OwnedServerName],
    suggested_only: bool,
) -> Result<Option<Seen>> {
    if s.rooms.exists(room_id)? {
        return Ok(s
            .rooms
            .describe(room_id, Viewer::User(user))
            .await?
            .map(|d| Seen { summary: d.summary, children: d.children }));
    }
    Ok(remote(s, room_id, via, suggested_only).await.map(|(summary, children)| Seen { summary, children }))
}

/// A room this node does not have, asked of `via` in turn. A server that fails or refuses is
/// skipped; `None` when none answers (the room is then left out, as the spec allows).
pub async fn remote(
    s: &Services,
    room_id: &RoomId,
    via: &[OwnedServerName],
    suggested_only: bool,
) -> Option<(RoomSummary, Vec<SpaceChild>)> {
    for server in via.iter().filter(|v| **v != s.server_name) {
        let mut request = get_hierarchy::v1::Request::new(room_id.to_owned());
        request.suggested_only = suggested_only;
        match s.federation_client.send(server, request).await {
            Ok(response) => {
                let children = response.room.children_state.iter().filter_map(child_of).collect();
                return Some((response.room.summary, children));
            }
            Err(e) => tracing::debug!(%room_id, %server, error = %e, "a server could not describe a room"),
        }
    }
    None
}

fn child_of(raw: &Raw<HierarchySpaceChildEvent>) -> Option<SpaceChild> {
    let event = raw.deserialize().ok()?;
    if event.content.via.is_empty() {
        return None;
    }
    Some(SpaceChild {
        room_id: event.state_key,
        via: event.content.via,
        suggested: event.content.suggested,
        event: raw.clone(),
    })
}
