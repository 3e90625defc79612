//! Who may change the room directory: create and delete aliases, and list rooms in the public
//! directory (which anyone, unauthenticated, can read, names and topics included).
//!
//! - Deleting an alias needs its creator, a node admin, or a joined member with the power to
//!   send `m.room.canonical_alias`. Re-pointing an alias is a delete then a create, so it
//!   follows the same rule.
//! - Publishing a room (or taking it out) needs a node admin, or a joined member with the power
//!   to send `m.room.canonical_alias` (as Synapse decides it).
//!
//! An alias's creator is kept next to it ([`trees::ALIAS_CREATORS`]). Aliases given at room
//! creation have no recorded creator; the room's creator holds the power to remove them anyway.

use ruma::{OwnedUserId, RoomAliasId, RoomId, UserId, events::StateEventType};
use tocsin_store::WriteBatch;

use crate::{
    Services,
    error::{Error, Result},
    store::trees,
};

/// Gives `alias` to `room`, recording `creator` as the alias's creator.
pub async fn create_alias(s: &Services, alias: &RoomAliasId, room: &RoomId, creator: &UserId) -> Result<()> {
    if alias.server_name() != s.server_name {
        return Err(Error::invalid_param("aliases must be on this node's server name"));
    }
    if s.rooms.resolve_alias(alias)?.is_some() {
        return Err(Error::RoomInUse);
    }
    if s.rooms.membership(room, creator).await?.as_deref() != Some("join") {
        return Err(Error::forbidden("you must be in the room to give it an alias"));
    }
    let mut batch = WriteBatch::new();
    batch.insert(trees::ALIASES, alias.as_bytes().to_vec(), room.as_bytes().to_vec());
    batch.insert(trees::ALIAS_CREATORS, alias.as_bytes().to_vec(), creator.as_bytes().to_vec());
    s.db.write(batch).await
}

/// Removes `alias` if `user` may (see the module docs).
pub async fn delete_alias(s: &Services, alias: &RoomAliasId, user: &UserId) -> Result<()> {
    let room = s.rooms.resolve_alias(alias)?.ok_or_else(|| Error::not_found("no such alias"))?;
    let allowed = alias_creator(s, alias)?.as_deref() == Some(user)
        || s.users.is_admin(user)?
        || may_send_state(s, &room, user, StateEventType::RoomCanonicalAlias).await?;
    if !allowed {
        return Err(Error::forbidden(
            "only the alias's creator, a server admin or a member who may change the room's canonical alias \
             may remove it",
        ));
    }
    let mut batch = WriteBatch::new();
    batch.remove(trees::ALIASES, alias.as_bytes().to_vec());
    batch.remove(trees::ALIAS_CREATORS, alias.as_bytes().to_vec());
    s.db.write(batch).await
}

/// Lists `room` in the public directory, or takes it out, if `user` may (see the module docs).
pub async fn set_published(s: &Services, room: &RoomId, user: &UserId, public: bool) -> Result<()> {
    if !s.rooms.exists(room)? {
        return Err(Error::not_found("unknown room"));
    }
    let allowed = s.users.is_admin(user)? || may_send_state(s, room, user, StateEventType::RoomCanonicalAlias).await?;
    if !allowed {
        return Err(Error::forbidden(
            "only a server admin or a member who may change the room's canonical alias may change whether it is \
             in the public directory",
        ));
    }
    s.rooms.set_public(room, public).await
}

fn alias_creator(s: &Services, alias: &RoomAliasId) -> Result<Option<OwnedUserId>> {
    match s.db.get(trees::ALIAS_CREATORS, alias.as_bytes())? {
        Some(bytes) => Ok(Some(UserId::parse(crate::store::utf8(&bytes)?).map_err(Error::internal)?)),
        None => Ok(None),
    }
}

/// Whether `user` is joined to `room` and has the power to send state of `kind` there (room
/// version 12 creators have unlimited power).
async fn may_send_state(s: &Services, room: &RoomId, user: &UserId, kind: StateEventType) -> Result<bool> {
    let head = match s.rooms.head(room) {
        Ok(head) => head,
        Err(Error::NotFound(_)) => return Ok(false),
        Err(e) => return Err(e),
    };
    let head = head.lock().await;
    if head.membership(user).as_deref() != Some("join") {
        return Ok(false);
    }
    Ok(head.may_send_state(user, kind))
}
