//! Retention (MSC1763, as Synapse implements it): a room's `m.room.retention` state event gives
//! `max_lifetime` in milliseconds. Message events older than that (by `origin_server_ts`) are
//! never served, to clients or to other servers, and the purge ([`purge`]) deletes their bodies.
//!
//! What stays, as in Synapse's purge: state events (auth and the room's state need them) and the
//! room's forward extremities (new events are built on them). A purged event keeps only its
//! redacted skeleton in the store (ids, hashes, signatures, `prev_events`, `auth_events`, depth),
//! so the DAG stays walkable and a server offering it again is not taken for news; the skeleton
//! is never served either.

pub mod purge;

use ruma::{EventId, OwnedEventId, RoomId};

use super::{Pdu, Rooms, head::RoomMeta, read::load_pdu};
use crate::{
    error::{Error, Result},
    store::{key, trees, utf8},
};

/// MSC1763's state event type.
pub const RETENTION_EVENT: &str = "m.room.retention";

/// A room's retention as it stands now: what may be served.
#[derive(Debug, Clone, Default)]
pub struct Retention {
    /// `max_lifetime` in ms, if the room has one.
    pub max_lifetime_ms: Option<u64>,
    /// Message events sent before this (ms since the epoch) have expired.
    pub cutoff_ts: u64,
    /// The forward extremities: kept whatever their age.
    pub extremities: Vec<OwnedEventId>,
}

impl Retention {
    /// Whether the room's retention lets `pdu` expire: a message event (not state), older than
    /// `max_lifetime`, and not a forward extremity.
    pub fn expired(&self, pdu: &Pdu) -> bool {
        self.max_lifetime_ms.is_some()
            && !pdu.is_state()
            && u64::from(pdu.origin_server_ts.0) < self.cutoff_ts
            && !self.extremities.contains(&pdu.event_id)
    }
}

/// The `m.room.retention` content for a maximum age in seconds.
pub fn content(max_age_secs: u64) -> serde_json::Value {
    serde_json::json!({ "max_lifetime": max_age_secs.saturating_mul(1000) })
}

/// `max_lifetime` from an `m.room.retention` content: a positive integer of milliseconds.
/// Anything else (absent, zero, negative, not a number) means no limit, as in Synapse.
pub fn max_lifetime(pdu: &Pdu) -> Option<u64> {
    pdu.content_field("max_lifetime").and_then(|v| v.as_u64()).filter(|ms| *ms > 0)
}

/// Whether a JSON text is `{}` (whitespace allowed).
fn is_empty_object(json: &str) -> bool {
    let mut chars = json.chars().filter(|c| !c.is_whitespace());
    chars.next() == Some('{') && chars.next() == Some('}') && chars.next().is_none()
}

impl Rooms {
    /// The room's retention now, read from the store (no room lock, so sync readers can ask).
    pub fn retention(&self, room_id: &RoomId) -> Result<Retention> {
        let state_key = key(&[room_id.as_bytes(), RETENTION_EVENT.as_bytes(), b""]);
        let Some(id) = self.db.get(trees::ROOM_STATE, &state_key)? else { return Ok(Retention::default()) };
        let id = EventId::parse(utf8(&id)?).map_err(Error::internal)?;
        let Some(max_lifetime_ms) = load_pdu(&self.db, &id)?.as_ref().and_then(max_lifetime) else {
            return Ok(Retention::default());
        };
        let now = u64::from(ruma::MilliSecondsSinceUnixEpoch::now().0);
        let extremities = self
            .db
            .get_json::<RoomMeta>(trees::ROOMS, room_id.as_bytes())?
            .map(|meta| meta.extremities)
            .unwrap_or_default();
        Ok(Retention {
            max_lifetime_ms: Some(max_lifetime_ms),
            cutoff_ts: now.saturating_sub(max_lifetime_ms),
            extremities,
        })
    }

    /// Whether `pdu` may be served under `retention`: not expired, and not purged already (a
    /// purged skeleton stays hidden even if the room's retention is lifted later).
    pub fn serves(&self, retention: &Retention, pdu: &Pdu) -> Result<bool> {
        if retention.expired(pdu) {
            return Ok(false);
        }
        // A purged skeleton has lost its content (a redaction keeps `redacts`): only those need
        // the store asked.
        let maybe_purged = !pdu.is_state()
            && (is_empty_object(pdu.content.get()) || pdu.kind == ruma::events::TimelineEventType::RoomRedaction);
        Ok(!maybe_purged || self.db.get(trees::PURGED, pdu.event_id.as_bytes())?.is_none())
    }

    /// Keeps the events that may be served, in order.
    pub fn retain_served<T>(&self, room_id: &RoomId, events: &mut Vec<T>, pdu_of: impl Fn(&T) -> &Pdu) -> Result<()> {
        let retention = self.retention(room_id)?;
        let mut keep = Vec::with_capacity(events.len());
        for e in events.iter() {
            keep.push(self.serves(&retention, pdu_of(e))?);
        }
        let mut flags = keep.into_iter();
        events.retain(|_| flags.next().unwrap_or(false));
        Ok(())
    }

    /// The event and its position, if it is known and may be served (what `/event`, `/context`
    /// and federation `/event` answer); `None` for an unknown, expired or purged event.
    pub fn served_event(&self, event_id: &EventId) -> Result<Option<(u64, Pdu)>> {
        let Some(stored) = crate::rooms::read::load_stored(&self.db, event_id)? else { return Ok(None) };
        // A rejected event never entered the room: it is kept only so it is not fetched again.
        if stored.rejected {
            return Ok(None);
        }
        let (pos, pdu) = (stored.pos, stored.into_pdu(event_id)?);
        let retention = self.retention(&pdu.room_id)?;
        Ok(self.serves(&retention, &pdu)?.then_some((pos, pdu)))
    }
}

#[cfg(test)]
mod tests {
    use ruma::{CanonicalJsonObject, OwnedEventId};
    use serde_json::json;

    use super::*;

    fn pdu(id: &str, ts: u64, state_key: Option<&str>, content: serde_json::Value) -> Pdu {
        let mut value = json!({
            "room_id": "!r:x",
            "sender": "@a:x",
            "origin_server_ts": ts,
            "type": if state_key.is_some() { "m.room.retention" } else { "m.room.message" },
            "content": content,
            "depth": 1,
        });
        if let Some(key) = state_key {
            value["state_key"] = json!(key);
        }
        let object: CanonicalJsonObject = serde_json::from_value(value).expect("canonical json");
        Pdu::from_json(OwnedEventId::try_from(id).expect("event id"), object).expect("pdu")
    }

    #[test]
    fn only_old_messages_that_are_not_extremities_expire() {
        let extremity = OwnedEventId::try_from("$tip").expect("event id");
        let retention =
            Retention { max_lifetime_ms: Some(1_000), cutoff_ts: 10_000, extremities: vec![extremity.clone()] };
        assert!(retention.expired(&pdu("$old", 9_999, None, json!({"body": "x"}))));
        assert!(!retention.expired(&pdu("$new", 10_000, None, json!({"body": "x"}))));
        assert!(!retention.expired(&pdu("$state", 1, Some(""), json!({"max_lifetime": 1_000}))));
        assert!(!retention.expired(&pdu(extremity.as_str(), 1, None, json!({"body": "x"}))));
        assert!(!Retention::default().expired(&pdu("$old", 1, None, json!({}))));
    }

    #[test]
    fn max_lifetime_is_a_positive_integer_of_ms() {
        let of = |content| max_lifetime(&pdu("$r", 1, Some(""), content));
        assert_eq!(of(json!({"max_lifetime": 2_000})), Some(2_000));
        assert_eq!(of(json!({"max_lifetime": 0})), None);
        assert_eq!(of(json!({"max_lifetime": -5})), None);
        assert_eq!(of(json!({"max_lifetime": "2000"})), None);
        assert_eq!(of(json!({})), None);
    }

    #[test]
    fn empty_objects_are_recognised() {
        assert!(is_empty_object("{}"));
        assert!(is_empty_object(" { } "));
        assert!(!is_empty_object(r#"{"body":"x"}"#));
        assert!(!is_empty_object("[]"));
    }
}
