//! Room tags (`/user/{userId}/rooms/{roomId}/tags`): favourites, low priority and the user's own,
//! kept as the room's `m.tag` account data.

use std::sync::Arc;

use ruma::api::client::tag::{create_tag, delete_tag, get_tags};

use super::account::own;
use crate::{
    Services,
    error::{Error, Result},
    http::Ruma,
};

/// The spec's limit on a tag's name.
const MAX_TAG_BYTES: usize = 255;

pub async fn get(s: Arc<Services>, req: Ruma<get_tags::v3::Request>) -> Result<get_tags::v3::Response> {
    own(req.user()?, &req.user_id)?;
    Ok(get_tags::v3::Response::new(s.users.room_tags(&req.user_id, &req.room_id)?))
}

pub async fn put(s: Arc<Services>, req: Ruma<create_tag::v3::Request>) -> Result<create_tag::v3::Response> {
    own(req.user()?, &req.user_id)?;
    if req.tag.is_empty() || req.tag.len() > MAX_TAG_BYTES {
        return Err(Error::invalid_param(format!("a tag has 1 to {MAX_TAG_BYTES} bytes")));
    }
    let body = &req.body;
    s.users.set_room_tag(&req.user_id, &req.room_id, &req.tag, Some(body.tag_info.clone())).await?;
    Ok(create_tag::v3::Response::new())
}

pub async fn delete(s: Arc<Services>, req: Ruma<delete_tag::v3::Request>) -> Result<delete_tag::v3::Response> {
    own(req.user()?, &req.user_id)?;
    s.users.set_room_tag(&req.user_id, &req.room_id, &req.tag, None).await?;
    Ok(delete_tag::v3::Response::new())
}
