//! Local events: build the PDU, hash and sign it, authorise it against the room's current
//! state with ruma's state-res, and write it durably.

use std::sync::Arc;

use ruma::{
    CanonicalJsonObject, CanonicalJsonValue, EventId, MilliSecondsSinceUnixEpoch, OwnedDeviceId, OwnedEventId,
    OwnedRoomId, RoomId, RoomVersionId, UserId,
    canonical_json::to_canonical_value,
    events::{StateEventType, TimelineEventType},
    signatures::{JsonError, hash_and_sign_event, reference_hash},
    state_res,
};
use tocsin_store::WriteBatch;

use super::{
    Pdu, RoomHead, Rooms,
    read::StoredEvent,
    state::{self, SnapshotId, StateIds},
};
use crate::{
    error::{Error, Result},
    store::{Db, key, pos_bytes, trees},
};

/// The spec's limit on a PDU's canonical size.
pub const MAX_PDU_BYTES: usize = 65_536;

/// An event a local user wants to send.
#[derive(Debug, Clone)]
pub struct NewEvent {
    pub kind: TimelineEventType,
    pub content: serde_json::Value,
    pub state_key: Option<String>,
    pub redacts: Option<OwnedEventId>,
}

impl NewEvent {
    pub fn message(kind: TimelineEventType, content: serde_json::Value) -> Self {
        Self { kind, content, state_key: None, redacts: None }
    }

    pub fn state(kind: impl Into<String>, state_key: impl Into<String>, content: serde_json::Value) -> Self {
        Self { kind: kind.into().into(), content, state_key: Some(state_key.into()), redacts: None }
    }
}

/// The spec's limit on an event's `type` and `state_key`, in bytes.
pub const MAX_ID_BYTES: usize = 255;

/// The client transaction that produced an event, for idempotent sends.
#[derive(Debug, Clone)]
pub struct TxnRef {
    pub device_id: OwnedDeviceId,
    pub txn_id: String,
    /// The endpoint the transaction came in on (`send`, `redact`): a txn id is scoped to one.
    pub endpoint: &'static str,
}

impl TxnRef {
    /// A transaction id is scoped to the device *and* the request path: the same id sent to
    /// another room (or another endpoint) is a new request, not a retry (Complement's
    /// TestTxnIdempotency). Keying on sender + device + txn alone handed back the other room's
    /// event.
    fn key(&self, sender: &UserId, room_id: &RoomId) -> Vec<u8> {
        key(&[
            sender.as_bytes(),
            self.device_id.as_bytes(),
            room_id.as_bytes(),
            self.endpoint.as_bytes(),
            self.txn_id.as_bytes(),
        ])
    }
}

fn json_error(e: JsonError) -> Error {
    match e {
        JsonError::PduTooLarge => Error::TooLarge(format!("event is larger than {MAX_PDU_BYTES} bytes")),
        other => Error::bad_json(other),
    }
}

impl Rooms {
    /// The event a transaction already produced, if any (send is idempotent per device, room,
    /// endpoint and txn id).
    pub fn event_for_txn(&self, room_id: &RoomId, sender: &UserId, txn: &TxnRef) -> Result<Option<OwnedEventId>> {
        match self.db.get(trees::TXNS, &txn.key(sender, room_id))? {
            Some(id) => Ok(Some(EventId::parse(crate::store::utf8(&id)?).map_err(Error::internal)?)),
            None => Ok(None),
        }
    }

    /// Builds, authorises and durably appends a local event. Returns once it is on disk.
    pub async fn send(
        &self,
        room_id: &RoomId,
        sender: &UserId,
        event: NewEvent,
        txn: Option<TxnRef>,
    ) -> Result<Arc<Pdu>> {
        let head_lock = self.head(room_id)?;
        let mut head = head_lock.lock().await;
        if let Some(txn) = &txn
            && let Some(existing) = self.event_for_txn(room_id, sender, txn)?
        {
            drop(head);
            return super::read::load_pdu(&self.db, &existing)?
                .map(Arc::new)
                .ok_or_else(|| Error::internal("transaction maps to a missing event"));
        }
        if self.is_shut_down(room_id)?
            && !(event.kind == TimelineEventType::RoomMember
                && event.content.get("membership").and_then(|m| m.as_str()) == Some("leave"))
        {
            return Err(Error::forbidden("this room was shut down by the server's administrator"));
        }
        // Policy first (rule 2 of the design): a refused event is never built or stored.
        self.policy.check_event(&head, sender, &event)?;
        if event.kind == TimelineEventType::RoomRedaction
            && let Some(target) = super::redaction::requested_target(&event.content, event.redacts.as_deref())
        {
            self.check_local_redaction(&head.rules, room_id, sender, &target, |k, key| head.get(k, key).cloned())?;
        }
        let pdu = Arc::new(self.build(&head, sender, event)?);
        self.authorize(&head, &pdu)?;
        let ticket = self.db.allocate()?;
        let (batch, snapshot) = self.event_batch(&mut head, &pdu, ticket.pos(), txn.as_ref())?;
        let destinations = self.destinations(&mut head, &pdu);
        head.apply(&pdu, snapshot);
        // Staged while the head is still held: the next event to take it (a received one on
        // another fork, above all) reads this event's rows, its state among them, at once
        // rather than only once they are durable.
        let durable = self.db.stage_ticket(ticket, batch);
        drop(head);
        if let Err(e) = durable.await {
            self.evict(room_id);
            return Err(e);
        }
        self.outbox.wake(&destinations);
        Ok(pdu)
    }

    /// Creates a room's `m.room.create` event and head. The room exists once this returns.
    pub async fn create(
        &self,
        version: RoomVersionId,
        creator: &UserId,
        content: serde_json::Value,
    ) -> Result<OwnedRoomId> {
        let rules = super::version::rules(&version)?;
        let v12 = rules.authorization.room_create_event_id_as_room_id;
        // For v12 the room id is the create event's hash and the event carries none; the scratch
        // head only gives the builder an empty state to work from.
        let scratch = RoomHead::new(RoomId::new_v1(&self.server_name), version.clone())?;
        let event = NewEvent::state(TimelineEventType::RoomCreate.to_string(), "", content);
        // Two creates by one user in the same millisecond are the same event, so the same v12
        // room: the second would take over the first's head. It waits for the next millisecond.
        let (pdu, head_lock) = loop {
            let pdu = Arc::new(self.build_inner(&scratch, creator, event.clone(), !v12)?);
            let head = RoomHead::new(pdu.room_id.clone(), version.clone())?;
            if let Some(claimed) = self.claim_new_head(head)? {
                break (pdu, claimed);
            }
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        };
        let room_id = pdu.room_id.clone();
        let mut head = head_lock.lock().await;
        let prepared = self.authorize(&head, &pdu).and_then(|()| {
            let ticket = self.db.allocate()?;
            let (batch, snapshot) = self.event_batch(&mut head, &pdu, ticket.pos(), None)?;
            Ok((ticket, batch, snapshot))
        });
        let (ticket, batch, snapshot) = match prepared {
            Ok(p) => p,
            Err(e) => {
                drop(head);
                self.evict(&room_id);
                return Err(e);
            }
        };
        head.apply(&pdu, snapshot);
        let durable = self.db.stage_ticket(ticket, batch);
        drop(head);
        if let Err(e) = durable.await {
            self.evict(&room_id);
            return Err(e);
        }
        Ok(room_id)
    }

    fn build(&self, head: &RoomHead, sender: &UserId, event: NewEvent) -> Result<Pdu> {
        self.build_inner(head, sender, event, true)
    }

    /// The unsigned event object for `event` on top of the room's current head: what
    /// `make_join` hands a remote server to sign, and what local events are signed from.
    pub(crate) fn template(
        &self,
        head: &RoomHead,
        sender: &UserId,
        event: &NewEvent,
        with_room_id: bool,
    ) -> Result<CanonicalJsonObject> {
        // The spec caps `type` and `state_key` at 255 bytes; other servers reject a PDU that
        // exceeds them, so it must not enter the room here either (413 as for an oversized PDU).
        let type_len = event.kind.to_string().len();
        let key_len = event.state_key.as_deref().map_or(0, str::len);
        if type_len > MAX_ID_BYTES || key_len > MAX_ID_BYTES {
            return Err(Error::TooLarge(format!(
                "event type ({type_len} bytes) and state key ({key_len} bytes) may be at most {MAX_ID_BYTES} bytes"
            )));
        }
        let content_raw = serde_json::value::to_raw_value(&event.content).map_err(Error::bad_json)?;
        let auth_types = state_res::auth_types_for_event(
            &event.kind,
            sender,
            event.state_key.as_deref(),
            &content_raw,
            &head.rules.authorization,
        )
        .map_err(Error::BadJson)?;
        let mut auth_events: Vec<OwnedEventId> =
            auth_types.iter().filter_map(|(kind, key)| head.get(kind, key).map(|p| p.event_id.clone())).collect();
        auth_events.sort();
        auth_events.dedup();
        if event.kind == TimelineEventType::RoomCreate {
            auth_events.clear();
        }

        let mut obj = CanonicalJsonObject::new();
        let ids = |ids: &[OwnedEventId]| {
            CanonicalJsonValue::Array(ids.iter().map(|id| CanonicalJsonValue::String(id.to_string())).collect())
        };
        obj.insert("auth_events".into(), ids(&auth_events));
        obj.insert("prev_events".into(), ids(&head.extremities));
        let content = to_canonical_value(&event.content)
            .map_err(|e| Error::bad_json(format!("content is not canonical JSON: {e}")))?;
        obj.insert("content".into(), content);
        let depth = ruma::Int::try_from(head.depth + 1).map_err(|_| Error::internal("room depth overflow"))?;
        obj.insert("depth".into(), CanonicalJsonValue::Integer(depth));
        obj.insert("origin_server_ts".into(), CanonicalJsonValue::Integer(MilliSecondsSinceUnixEpoch::now().0.into()));
        if with_room_id {
            obj.insert("room_id".into(), CanonicalJsonValue::String(head.room_id.to_string()));
        }
        obj.insert("sender".into(), CanonicalJsonValue::String(sender.to_string()));
        obj.insert("type".into(), CanonicalJsonValue::String(event.kind.to_string()));
        if let Some(sk) = &event.state_key {
            obj.insert("state_key".into(), CanonicalJsonValue::String(sk.clone()));
        }
        if let Some(redacts) = &event.redacts
            && !head.rules.redaction.content_field_redacts
        {
            obj.insert("redacts".into(), CanonicalJsonValue::String(redacts.to_string()));
        }
        Ok(obj)
    }

    pub(crate) fn build_inner(
        &self,
        head: &RoomHead,
        sender: &UserId,
        event: NewEvent,
        with_room_id: bool,
    ) -> Result<Pdu> {
        let mut obj = self.template(head, sender, &event, with_room_id)?;
        hash_and_sign_event(self.server_name.as_str(), self.keys.pair(), &mut obj, &head.rules.redaction)
            .map_err(json_error)?;
        let size = serde_json::to_vec(&obj).map_err(Error::internal)?.len();
        if size > MAX_PDU_BYTES {
            return Err(Error::TooLarge(format!("event is {size} bytes; the limit is {MAX_PDU_BYTES}")));
        }
        let hash = reference_hash(&obj, &head.rules).map_err(json_error)?;
        let event_id = EventId::parse(format!("${hash}")).map_err(Error::internal)?;
        Pdu::from_json(event_id, obj)
    }

    /// Runs the spec's authorization rules (via state-res) against the room's current state.
    pub(crate) fn authorize(&self, head: &RoomHead, pdu: &Arc<Pdu>) -> Result<()> {
        let rules = &head.rules.authorization;
        // Auth events of a local event are current state, found by their keys (a scan of a
        // 5,000-member state per auth event made every send grow with the room); anything else
        // is read up front, so a store error is an error and not a missing event.
        let keys =
            state_res::auth_types_for_event(&pdu.kind, &pdu.sender, pdu.state_key.as_deref(), &pdu.content, rules)
                .map_err(|e| Error::bad_json(format!("malformed content: {e}")))?;
        let mut auth: Vec<Arc<Pdu>> = keys
            .iter()
            .filter_map(|(kind, key)| head.get(kind, key))
            .filter(|p| pdu.auth_events.contains(&p.event_id))
            .cloned()
            .collect();
        // From v12 the create event is not listed but is fetched by the id the room id names.
        auth.extend(head.get(&StateEventType::RoomCreate, "").cloned());
        for id in &pdu.auth_events {
            if !auth.iter().any(|p| p.event_id == *id)
                && let Some(found) = super::read::load_pdu(&self.db, id)?
            {
                auth.push(Arc::new(found));
            }
        }
        let fetch_event = |id: &EventId| {
            auth.iter().find(|p| p.event_id == id).cloned().or_else(|| (pdu.event_id == id).then(|| pdu.clone()))
        };
        state_res::check_state_independent_auth_rules(rules, pdu, fetch_event)
            .map_err(|e| Error::Forbidden(format!("event not allowed: {e}")))?;
        state_res::check_state_dependent_auth_rules(rules, pdu, |kind: &StateEventType, key: &str| {
            head.get(kind, key).cloned()
        })
        .map_err(|e| Error::Forbidden(format!("event not allowed: {e}")))?;
        Ok(())
    }

    /// Every write an accepted local event makes, as one atomic batch, and the snapshot id of
    /// the state after it.
    fn event_batch(
        &self,
        head: &mut RoomHead,
        pdu: &Pdu,
        pos: u64,
        txn: Option<&TxnRef>,
    ) -> Result<(WriteBatch, SnapshotId)> {
        let mut batch = WriteBatch::new();
        let redacts = self
            .redaction_effect(&head.rules, pdu, super::redaction::Origin::Local, |k, key| head.get(k, key).cloned())?;
        self.timeline_rows(head, pdu, pos, txn, Some(head.snapshot), redacts.as_deref(), &mut batch)?;
        let mut snapshot = head.snapshot;
        if pdu.is_state() {
            let current = head.shared_state_ids();
            let after = Arc::new(state::apply(StateIds::clone(&current), pdu));
            snapshot = self.snapshots.write(&after, Some((head.snapshot, &current)), &mut batch)?;
            current_state_rows(pdu, pos, &mut batch)?;
        }
        let destinations = self.destinations(head, pdu);
        if !destinations.is_empty() {
            crate::federation::sender::queue_pdu_rows(&mut batch, &destinations, pos, &pdu.event_id);
        }
        let mut meta = head.meta();
        meta.extremities = vec![pdu.event_id.clone()];
        meta.depth = meta.depth.max(u64::from(pdu.depth));
        meta.snapshot = snapshot;
        batch.insert(trees::ROOMS, pdu.room_id.as_bytes().to_vec(), Db::to_json(&meta)?);
        Ok((batch, snapshot))
    }

    /// The other servers a local event goes to: those with a joined member (before or after the
    /// event), and a member event's target server, so a kicked or invited server learns of it.
    pub(crate) fn destinations(&self, head: &mut RoomHead, pdu: &Pdu) -> Vec<ruma::OwnedServerName> {
        let mut servers: Vec<ruma::OwnedServerName> = head.joined_servers().as_ref().clone();
        servers.push(pdu.sender.server_name().to_owned());
        if pdu.kind == TimelineEventType::RoomMember
            && let Some(target) = pdu.state_key.as_deref().and_then(|k| UserId::parse(k).ok())
        {
            servers.push(target.server_name().to_owned());
        }
        servers.sort();
        servers.dedup();
        servers.retain(|s| s != &self.server_name);
        servers
    }

    /// The writes of an event entering the timeline at `pos`, with the state before it: the one
    /// place local, received, joined and backfilled events are stored and indexed.
    /// `redacts` is the event it redacts, once [`Rooms::redaction_effect`] allowed it.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn timeline_rows(
        &self,
        head: &RoomHead,
        pdu: &Pdu,
        pos: u64,
        txn: Option<&TxnRef>,
        state_before: Option<SnapshotId>,
        redacts: Option<&EventId>,
        batch: &mut WriteBatch,
    ) -> Result<()> {
        let room = pdu.room_id.as_bytes();
        let id = pdu.event_id.as_bytes();
        let stored = StoredEvent {
            pos,
            pdu: pdu.json()?.clone(),
            txn_id: txn.map(|t| t.txn_id.clone()),
            device_id: txn.map(|t| t.device_id.clone()),
            outlier: false,
            rejected: false,
        };
        batch.insert(trees::EVENTS, id.to_vec(), Db::to_json(&stored)?);
        // Backfilled history has no known state before it.
        if let Some(state_before) = state_before {
            batch.insert(trees::EVENT_STATE, id.to_vec(), state_before.to_vec());
        }
        batch.insert(trees::TIMELINE, key(&[room, &pos_bytes(pos)]), id.to_vec());
        // Live events only: backfilled history is old news and must not ring anyone.
        if pos >= crate::store::LIVE_BASE {
            crate::push::queue::event_row(batch, pos, &pdu.room_id, &pdu.event_id);
        }
        if let Some(txn) = txn {
            batch.insert(trees::TXNS, txn.key(&pdu.sender, &pdu.room_id), id.to_vec());
        }
        if let Some(target) = relates_to(pdu) {
            batch.insert(trees::RELATIONS, key(&[room, target.as_bytes(), &pos_bytes(pos)]), id.to_vec());
            super::threads::index_reply(pdu, pos, batch);
        }
        if let Some(target) = redacts {
            self.redaction_writes(head, pdu, target, batch)?;
        }
        self.alarms.event_rows(&self.db, head, pdu, pos, redacts, batch)?;
        crate::search::queue_rows(pdu, pos, redacts, batch);
        Ok(())
    }

    /// Redacts the target in place (the server keeps only what the redaction algorithm keeps).
    pub(crate) fn redaction_writes(
        &self,
        head: &RoomHead,
        redaction: &Pdu,
        target: &EventId,
        batch: &mut WriteBatch,
    ) -> Result<()> {
        batch.insert(trees::REDACTIONS, target.as_bytes().to_vec(), redaction.event_id.as_bytes().to_vec());
        let Some(mut stored) = self.db.get_json::<StoredEvent>(trees::EVENTS, target.as_bytes())? else {
            return Ok(());
        };
        if let Ok(redacted) = ruma::canonical_json::redact(stored.pdu.clone(), &head.rules.redaction, None) {
            stored.pdu = redacted;
            batch.insert(trees::EVENTS, target.as_bytes().to_vec(), Db::to_json(&stored)?);
        }
        Ok(())
    }
}

/// The writes that make `pdu` the current state for its key, changed at `pos`.
pub(crate) fn current_state_rows(pdu: &Pdu, pos: u64, batch: &mut WriteBatch) -> Result<()> {
    let Some(state_key) = &pdu.state_key else { return Ok(()) };
    let room = pdu.room_id.as_bytes();
    let id = pdu.event_id.as_bytes();
    let kind = pdu.kind.to_string();
    batch.insert(trees::ROOM_STATE, key(&[room, kind.as_bytes(), state_key.as_bytes()]), id.to_vec());
    batch.insert(trees::STATE_CHANGES, key(&[room, &pos_bytes(pos)]), id.to_vec());
    super::visibility::history_rows(pdu, pos, batch);
    if pdu.kind == TimelineEventType::RoomMember
        && let Ok(user) = UserId::parse(state_key.as_str())
    {
        let membership = pdu.membership().unwrap_or_default();
        let user_room = super::UserRoom { membership, pos, event_id: pdu.event_id.clone() };
        batch.insert(trees::USER_ROOMS, key(&[user.as_bytes(), room]), Db::to_json(&user_room)?);
        batch.insert(trees::MEMBERSHIP_CHANGES, key(&[user.as_bytes(), &pos_bytes(pos)]), room.to_vec());
        batch.remove(trees::INVITE_STATE, key(&[user.as_bytes(), room]));
    }
    Ok(())
}

/// The event an event relates to (`m.relates_to.event_id`, or a reply's `m.in_reply_to`).
pub fn relates_to(pdu: &Pdu) -> Option<OwnedEventId> {
    let rel = pdu.content_field("m.relates_to")?;
    let id = rel.get("event_id").or_else(|| rel.get("m.in_reply_to").and_then(|r| r.get("event_id")))?.as_str()?;
    EventId::parse(id).ok()
}
