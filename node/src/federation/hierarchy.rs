//! `GET /_matrix/federation/v1/hierarchy/{roomId}`: a space and its child rooms, as far as this
//! node knows them, for a peer's space browser (`rooms::summary` decides what a peer may see).

use std::sync::Arc;

use ruma::api::federation::space::{SpaceHierarchyParentSummary, get_hierarchy};

use crate::{
    Services,
    error::{Error, Result},
    http::Ruma,
    rooms::summary::Viewer,
};

pub async fn hierarchy(s: Arc<Services>, req: Ruma<get_hierarchy::v1::Request>) -> Result<get_hierarchy::v1::Response> {
    let origin = req.origin()?.to_owned();
    let viewer = Viewer::Server(&origin);
    let parent =
        s.rooms.describe(&req.room_id, viewer).await?.ok_or_else(|| Error::not_found("no such room visible to you"))?;
    let mut children = Vec::new();
    let mut inaccessible = Vec::new();
    let mut children_state = Vec::new();
    for child in parent.children {
        if req.suggested_only && !child.suggested {
            continue;
        }
        children_state.push(child.event);
        match s.rooms.describe(&child.room_id, viewer).await? {
            Some(found) => children.push(found.summary),
            None => inaccessible.push(child.room_id),
        }
    }
    let mut response =
        get_hierarchy::v1::Response::new(SpaceHierarchyParentSummary::new(parent.summary, children_state));
    response.children = children;
    response.inaccessible_children = inaccessible;
    Ok(response)
}
