//! Which redactions take effect. The auth rules only ask whether the sender may send an
//! `m.room.redaction` at all; whether it may redact *this* event is decided here, the same way
//! for local sends, received events and backfill.

use std::sync::Arc;

use ruma::{EventId, OwnedEventId, UserId, events::StateEventType, room_version_rules::RoomVersionRules};

use super::{Pdu, Rooms, power::power_levels, read::load_pdu};
use crate::error::{Error, Result};

/// Who vouches for a redaction's sender.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// A local user: their own event, or the room's `redact` power.
    Local,
    /// Another server: from room v3 its server may redact its own users' events (the spec's
    /// rule for event ids without a domain), otherwise the `redact` power is needed.
    Remote,
}

impl Rooms {
    /// The event `redaction` redacts, if it is a redaction that may take effect: the target is
    /// known, in the same room, and the sender may redact it given the power levels in `state`.
    /// An unknown target, or one the sender may not touch, leaves the redaction inert.
    pub(crate) fn redaction_effect(
        &self,
        rules: &RoomVersionRules,
        redaction: &Pdu,
        origin: Origin,
        state: impl Fn(&StateEventType, &str) -> Option<Arc<Pdu>>,
    ) -> Result<Option<OwnedEventId>> {
        let Some(target_id) = redaction.redaction_target(&rules.redaction) else { return Ok(None) };
        let Some(target) = load_pdu(&self.db, target_id)? else { return Ok(None) };
        let allowed =
            target.room_id == redaction.room_id && may_redact(rules, &redaction.sender, &target, origin, state);
        Ok(allowed.then(|| target_id.to_owned()))
    }

    /// The check a local `PUT /redact` (or a redaction sent as a plain event) must pass before
    /// the event is built: 404 for an unknown target or one in another room, 403 without power.
    pub(crate) fn check_local_redaction(
        &self,
        rules: &RoomVersionRules,
        room_id: &ruma::RoomId,
        sender: &UserId,
        target_id: &EventId,
        state: impl Fn(&StateEventType, &str) -> Option<Arc<Pdu>>,
    ) -> Result<()> {
        let target = load_pdu(&self.db, target_id)?
            .filter(|t| t.room_id == room_id)
            .ok_or_else(|| Error::not_found("no such event in this room"))?;
        if may_redact(rules, sender, &target, Origin::Local, &state) {
            return Ok(());
        }
        Err(Error::forbidden(format!(
            "you may redact only your own events here: redacting {}'s needs power level {} (the room's `redact`)",
            target.sender,
            power_levels(&rules.authorization, state).redact
        )))
    }
}

/// Whether `sender` may redact `target` (same room already checked): their own event (for a
/// remote sender, one of their server's), or the room's `redact` power.
fn may_redact(
    rules: &RoomVersionRules,
    sender: &UserId,
    target: &Pdu,
    origin: Origin,
    state: impl Fn(&StateEventType, &str) -> Option<Arc<Pdu>>,
) -> bool {
    let same_party = match origin {
        Origin::Local => target.sender == sender,
        Origin::Remote => target.sender.server_name() == sender.server_name(),
    };
    same_party || power_levels(&rules.authorization, state).user_can_redact_event_of_other(sender)
}

/// A redaction's target read from the content a client gave (`content.redacts`), or the
/// top-level key of older room versions.
pub fn requested_target(content: &serde_json::Value, top_level: Option<&EventId>) -> Option<OwnedEventId> {
    content
        .get("redacts")
        .and_then(|v| v.as_str())
        .and_then(|s| EventId::parse(s).ok())
        .or_else(|| top_level.map(ToOwned::to_owned))
}
