//! The PDU: an event in its federation form, hashed and signed, plus the parsed fields that auth
//! and the client format need.

use ruma::{
    CanonicalJsonObject, MilliSecondsSinceUnixEpoch, OwnedEventId, OwnedRoomId, OwnedUserId, RoomId, UInt, UserId,
    events::{StateEventType, TimelineEventType},
};
use std::sync::OnceLock;

use serde::Deserialize;
use serde_json::value::RawValue;

use crate::error::{Error, Result};

#[derive(Debug, Clone)]
pub struct Pdu {
    pub event_id: OwnedEventId,
    /// The room the event belongs to (for a v12 create event, derived from its id).
    pub room_id: OwnedRoomId,
    /// Whether the PDU itself carries `room_id` (a v12 create event does not).
    has_room_id: bool,
    pub sender: OwnedUserId,
    pub origin_server_ts: MilliSecondsSinceUnixEpoch,
    pub kind: TimelineEventType,
    pub content: Box<RawValue>,
    pub state_key: Option<String>,
    pub prev_events: Vec<OwnedEventId>,
    pub auth_events: Vec<OwnedEventId>,
    /// A redaction's top-level `redacts` (room versions up to 10). Other event types never
    /// redact, whatever keys they carry.
    pub redacts: Option<OwnedEventId>,
    /// A redaction's `content.redacts` (room version 11 and later).
    content_redacts: Option<OwnedEventId>,
    pub depth: UInt,
    /// The full signed object as sent over federation, parsed on first use: a sync, a push or
    /// an auth check reads only the fields above, and parsing the whole object was half the
    /// cost of loading a stored event.
    json: OnceLock<CanonicalJsonObject>,
    /// The stored text `json` is parsed from; `None` for an event built or received here (its
    /// object is at hand) and once the object was changed.
    text: Option<Box<RawValue>>,
    /// The local client transaction (device, txn id) that sent it, if any: not part of the PDU,
    /// kept so the sender's device sees its `transaction_id` without another store read.
    pub local_txn: Option<(ruma::OwnedDeviceId, String)>,
    /// `content.membership` of a member event, parsed once: membership is read on every sync.
    membership: Option<String>,
}

#[derive(Deserialize)]
struct Fields {
    room_id: Option<OwnedRoomId>,
    sender: OwnedUserId,
    origin_server_ts: MilliSecondsSinceUnixEpoch,
    #[serde(rename = "type")]
    kind: TimelineEventType,
    content: Box<RawValue>,
    state_key: Option<String>,
    #[serde(default)]
    prev_events: Vec<OwnedEventId>,
    #[serde(default)]
    auth_events: Vec<OwnedEventId>,
    redacts: Option<OwnedEventId>,
    #[serde(default)]
    depth: UInt,
}

#[derive(Deserialize)]
struct MembershipInContent {
    membership: Option<String>,
}

#[derive(Deserialize)]
struct RedactsInContent {
    redacts: Option<OwnedEventId>,
}

impl Pdu {
    /// Parses a signed PDU. `room_id` is needed only for v12 create events, whose room id is
    /// derived from their event id.
    pub fn from_json(event_id: OwnedEventId, json: CanonicalJsonObject) -> Result<Self> {
        let value = serde_json::to_value(&json).map_err(Error::bad_json)?;
        let f: Fields = serde_json::from_value(value).map_err(|e| Error::bad_json(format!("invalid PDU: {e}")))?;
        Self::from_fields(event_id, OnceLock::from(json), None, f)
    }

    /// [`Pdu::from_json`] from the PDU's JSON text: the fields are read straight from it, not
    /// through a copy of the whole object as a `serde_json::Value` (stored events are read on
    /// every sync).
    ///
    /// The text must be what this node stored (canonical JSON it checked on the way in): the
    /// whole object is parsed from it only when [`Pdu::json`] is first asked for.
    pub fn from_text(event_id: OwnedEventId, text: &str) -> Result<Self> {
        let f: Fields = serde_json::from_str(text).map_err(|e| Error::bad_json(format!("invalid PDU: {e}")))?;
        let text = RawValue::from_string(text.to_owned()).map_err(Error::bad_json)?;
        Self::from_fields(event_id, OnceLock::new(), Some(text), f)
    }

    fn from_fields(
        event_id: OwnedEventId,
        json: OnceLock<CanonicalJsonObject>,
        text: Option<Box<RawValue>>,
        f: Fields,
    ) -> Result<Self> {
        let has_room_id = f.room_id.is_some();
        let room_id = match f.room_id {
            Some(r) => r,
            None if f.kind == TimelineEventType::RoomCreate => {
                RoomId::parse(format!("!{}", &event_id.as_str()[1..])).map_err(Error::bad_json)?
            }
            None => return Err(Error::bad_json("PDU has no room_id")),
        };
        let membership = if f.kind == TimelineEventType::RoomMember {
            serde_json::from_str::<MembershipInContent>(f.content.get()).ok().and_then(|c| c.membership)
        } else {
            None
        };
        // Only `m.room.redaction` redacts: a top-level `redacts` on any other event is inert.
        let is_redaction = f.kind == TimelineEventType::RoomRedaction;
        let redacts = f.redacts.filter(|_| is_redaction);
        let content_redacts = if is_redaction {
            serde_json::from_str::<RedactsInContent>(f.content.get()).ok().and_then(|c| c.redacts)
        } else {
            None
        };
        Ok(Self {
            event_id,
            room_id,
            has_room_id,
            sender: f.sender,
            origin_server_ts: f.origin_server_ts,
            kind: f.kind,
            content: f.content,
            state_key: f.state_key,
            prev_events: f.prev_events,
            auth_events: f.auth_events,
            redacts,
            content_redacts,
            depth: f.depth,
            json,
            text,
            local_txn: None,
            membership,
        })
    }

    /// The event a redaction redacts under the room version's rules: `content.redacts` from
    /// version 11, the top-level key before.
    pub fn redaction_target(&self, rules: &ruma::room_version_rules::RedactionRules) -> Option<&ruma::EventId> {
        if rules.content_field_redacts { self.content_redacts.as_deref() } else { self.redacts.as_deref() }
    }

    pub fn is_state(&self) -> bool {
        self.state_key.is_some()
    }

    pub fn state_event_type(&self) -> StateEventType {
        self.kind.to_string().into()
    }

    /// The content as a JSON value (for reading fields ruma's strict types would refuse).
    pub fn content_value(&self) -> serde_json::Value {
        serde_json::from_str(self.content.get()).unwrap_or(serde_json::Value::Null)
    }

    pub fn content_field(&self, field: &str) -> Option<serde_json::Value> {
        match self.content_value() {
            serde_json::Value::Object(mut m) => m.remove(field),
            _ => None,
        }
    }

    pub fn membership(&self) -> Option<String> {
        self.membership.clone()
    }

    pub fn membership_str(&self) -> Option<&str> {
        self.membership.as_deref()
    }

    /// The event in the Client-Server format, with `unsigned` as given.
    pub fn to_client_value(
        &self,
        unsigned: serde_json::Map<String, serde_json::Value>,
        with_room_id: bool,
    ) -> serde_json::Value {
        let mut obj = serde_json::Map::new();
        obj.insert("event_id".into(), self.event_id.as_str().into());
        obj.insert("type".into(), self.kind.to_string().into());
        obj.insert("sender".into(), self.sender.as_str().into());
        obj.insert("origin_server_ts".into(), serde_json::Value::from(u64::from(self.origin_server_ts.0)));
        obj.insert("content".into(), self.content_value());
        if with_room_id {
            obj.insert("room_id".into(), self.room_id.as_str().into());
        }
        if let Some(sk) = &self.state_key {
            obj.insert("state_key".into(), sk.as_str().into());
        }
        // Clients read the top-level key in every room version (v11 keeps it in content too).
        if let Some(r) = self.redacts.as_ref().or(self.content_redacts.as_ref()) {
            obj.insert("redacts".into(), r.as_str().into());
        }
        if !unsigned.is_empty() {
            obj.insert("unsigned".into(), serde_json::Value::Object(unsigned));
        }
        serde_json::Value::Object(obj)
    }

    /// The stripped form used in invite state.
    pub fn to_stripped_value(&self) -> serde_json::Value {
        serde_json::json!({
            "type": self.kind.to_string(),
            "state_key": self.state_key.clone().unwrap_or_default(),
            "sender": self.sender,
            "content": self.content_value(),
        })
    }

    /// The full signed object (see the field).
    pub fn json(&self) -> Result<&CanonicalJsonObject> {
        if let Some(json) = self.json.get() {
            return Ok(json);
        }
        let text = self.text.as_deref().ok_or_else(|| Error::internal("a PDU without its object or its text"))?;
        let parsed: CanonicalJsonObject = serde_json::from_str(text.get())
            .map_err(|e| Error::internal(format!("stored PDU {} is not canonical JSON: {e}", self.event_id)))?;
        Ok(self.json.get_or_init(|| parsed))
    }

    /// The PDU as sent over federation: the stored text as it is when there is one.
    pub fn to_raw(&self) -> Result<Box<RawValue>> {
        match &self.text {
            Some(text) => Ok(text.clone()),
            None => serde_json::value::to_raw_value(self.json()?).map_err(Error::internal),
        }
    }

    /// The size of the PDU as sent: the stored text's when there is one (the same bytes).
    pub fn byte_len(&self) -> usize {
        match (&self.text, self.json.get()) {
            (Some(text), _) => text.get().len(),
            (None, Some(json)) => serde_json::to_vec(json).map(|v| v.len()).unwrap_or(usize::MAX),
            (None, None) => usize::MAX,
        }
    }
}

impl ruma::state_res::Event for Pdu {
    type Id = OwnedEventId;

    fn event_id(&self) -> &Self::Id {
        &self.event_id
    }

    fn room_id(&self) -> Option<&RoomId> {
        self.has_room_id.then_some(&*self.room_id)
    }

    fn sender(&self) -> &UserId {
        &self.sender
    }

    fn origin_server_ts(&self) -> MilliSecondsSinceUnixEpoch {
        self.origin_server_ts
    }

    fn event_type(&self) -> &TimelineEventType {
        &self.kind
    }

    fn content(&self) -> &RawValue {
        &self.content
    }

    fn state_key(&self) -> Option<&str> {
        self.state_key.as_deref()
    }

    fn prev_events(&self) -> Box<dyn DoubleEndedIterator<Item = &Self::Id> + '_> {
        Box::new(self.prev_events.iter())
    }

    fn auth_events(&self) -> Box<dyn DoubleEndedIterator<Item = &Self::Id> + '_> {
        Box::new(self.auth_events.iter())
    }

    fn redacts(&self) -> Option<&Self::Id> {
        self.redacts.as_ref()
    }

    fn rejected(&self) -> bool {
        false
    }
}
