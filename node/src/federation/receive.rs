//! Taking in PDUs from other servers: verify, fetch what is missing (auth chain, prev events, or
//! the state before the event), then hand the event to the room.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use ruma::{
    EventId, OwnedEventId, OwnedRoomId, RoomId, ServerName, UInt,
    api::federation::{
        authorization::get_event_authorization,
        event::{get_missing_events, get_room_state},
    },
    room_version_rules::RoomVersionRules,
};
use serde_json::value::RawValue;

use super::pdu::{self, PduError};
use crate::{
    Services,
    error::{Error, Result},
    rooms::{Durable, Incoming, Outcome, Pdu, StateIds},
};

/// How many missing prev events one `get_missing_events` call asks for.
const MISSING_EVENTS_LIMIT: u32 = 100;
/// How many `get_missing_events` rounds one gap may take before the state is fetched instead.
const MAX_GAP_ROUNDS: usize = 50;

/// Serialises inbound processing per room: two transactions carrying events of one room must not
/// both fetch and append the same missing events.
#[derive(Default)]
pub struct Inbound {
    rooms: Mutex<HashMap<OwnedRoomId, Arc<tokio::sync::Mutex<()>>>>,
}

impl Inbound {
    fn lock_for(&self, room_id: &RoomId) -> Arc<tokio::sync::Mutex<()>> {
        let mut rooms = self.rooms.lock().unwrap_or_else(|e| e.into_inner());
        rooms.entry(room_id.to_owned()).or_default().clone()
    }
}

/// Handles one PDU of a transaction. Returns its event id (when it could be computed), the
/// per-PDU result the transaction response carries, and, for an accepted event, the future that
/// resolves once it is durable (the transaction awaits them all before answering).
pub async fn handle_pdu(
    s: &Arc<Services>,
    origin: &ServerName,
    raw: &RawValue,
) -> (Option<OwnedEventId>, std::result::Result<(), String>, Option<Durable>) {
    let room_id = match pdu::room_id_of(raw) {
        Ok(r) => r,
        Err(e) => return (None, Err(e.to_string()), None),
    };
    let version = match s.rooms.version(&room_id).await {
        Ok(v) => v,
        Err(Error::NotFound(_)) => return (None, Err(format!("this server is not in room {room_id}")), None),
        Err(e) => return (None, Err(e.to_string()), None),
    };
    let rules = match crate::rooms::version::rules(&version) {
        Ok(r) => r,
        Err(e) => return (None, Err(e.to_string()), None),
    };
    // Known already (a gap fill or another server brought it): no need to check it again.
    if let Ok(object) = pdu::parse_object(raw)
        && let Ok(event_id) = pdu::event_id(&object, &rules)
        && s.rooms.has_state_at(&event_id).unwrap_or(false)
    {
        return (Some(event_id), Ok(()), None);
    }
    let pdu = match pdu::verify(s, &rules, raw, origin).await {
        Ok(p) => p,
        Err(e) => {
            tracing::info!(%origin, %room_id, error = %e, "dropped PDU");
            return (None, Err(e.to_string()), None);
        }
    };
    let event_id = pdu.event_id.clone();
    // Checked again on receipt (DESIGN rule 2): a new event whose sender's server is not in the
    // federation list is rejected, even when a member relays it.
    if let Err(refused) = s.policy.federation.check(pdu.sender.server_name(), "its events are rejected") {
        tracing::info!(%origin, %event_id, %refused, "PDU rejected");
        return (Some(event_id), Err(refused.to_string()), None);
    }
    // A remote user joining through another server: this server's members' statuses go to it.
    let joiner = (s.sync.presence.enabled()
        && pdu.kind == ruma::events::TimelineEventType::RoomMember
        && pdu.membership().as_deref() == Some("join"))
    .then(|| pdu.sender.clone());
    let lock = s.inbound.lock_for(&room_id);
    let _guard = lock.lock().await;
    let (result, durable) = match process(s, origin, &rules, pdu, true).await {
        Ok((Outcome::Accepted, durable)) => {
            if let Some(joiner) = joiner {
                let (s, room_id) = (s.clone(), room_id.clone());
                s.clone().workers.spawn("presence-on-join", |_stop| async move {
                    super::edu::presence_on_join(&s, &room_id, &joiner).await
                });
            }
            (Ok(()), durable)
        }
        Ok((Outcome::Known | Outcome::SoftFailed, durable)) => (Ok(()), durable),
        Ok((Outcome::Rejected(reason), _)) => (Err(format!("rejected: {reason}")), None),
        Err(e) => (Err(e.to_string()), None),
    };
    if let Err(reason) = &result {
        tracing::info!(%origin, %event_id, %reason, "PDU not accepted");
    }
    (Some(event_id), result, durable)
}

/// Brings a verified event into its room: its auth chain first, then its prev events (or the
/// state before it, when the gap cannot be filled).
async fn process(
    s: &Arc<Services>,
    origin: &ServerName,
    rules: &RoomVersionRules,
    pdu: Pdu,
    fill_gaps: bool,
) -> Result<(Outcome, Option<Durable>)> {
    if s.rooms.knows(&pdu.event_id)? && s.rooms.has_state_at(&pdu.event_id)? {
        return Ok((Outcome::Known, None));
    }
    ensure_auth_chain(s, origin, rules, &pdu).await?;
    let mut missing = missing_prevs(s, &pdu)?;
    if !missing.is_empty() {
        // Asking the origin for the gap hands it this node's newest event ids: only for an
        // event that passes its own auth events, from a server still in the room (or joining
        // with this very event).
        if let Some(reason) = s.rooms.precheck_remote(&rules.authorization, &pdu)? {
            return Ok((Outcome::Rejected(reason), None));
        }
        let joining = pdu.kind == ruma::events::TimelineEventType::RoomMember
            && pdu.sender.server_name() == origin
            && pdu.state_key.as_deref() == Some(pdu.sender.as_str())
            && pdu.membership().as_deref() == Some("join");
        if !joining && !s.rooms.server_read_access(&pdu.room_id, origin)?.joined_now() {
            return Err(Error::Forbidden(format!(
                "{origin} has no joined member in {}: its events with unknown parents are not taken",
                pdu.room_id
            )));
        }
    }
    let mut rounds = 0;
    while !missing.is_empty() && fill_gaps && rounds < MAX_GAP_ROUNDS {
        rounds += 1;
        let mut progress = false;
        for earlier in fetch_missing_events(s, origin, rules, &pdu.room_id, vec![pdu.event_id.clone()]).await? {
            // Only events never seen here fill the gap. One held as an outlier (the state at
            // this node's join, an auth chain) is older than this node's view of the room, or
            // was only needed to authorise others: taken into the timeline it would fork the
            // room from a stale state. The origin walks back to the room's start when it does
            // not know this node's newest events, so such events do come.
            if s.rooms.knows(&earlier.event_id)? {
                continue;
            }
            let (outcome, durable) = Box::pin(process(s, origin, rules, earlier, false)).await?;
            if let Some(durable) = durable {
                durable.await?;
            }
            progress |= outcome == Outcome::Accepted;
        }
        missing = missing_prevs(s, &pdu)?;
        if !progress {
            break;
        }
    }
    let state_before = if missing.is_empty() {
        None
    } else {
        tracing::info!(event_id = %pdu.event_id, missing = missing.len(), "asking for the state before an event");
        Some(fetch_state_before(s, origin, rules, &pdu.room_id, &pdu.event_id).await?)
    };
    s.rooms.append_remote_staged(Incoming { pdu, state_before }).await
}

fn missing_prevs(s: &Services, pdu: &Pdu) -> Result<Vec<OwnedEventId>> {
    let mut out = Vec::new();
    for prev in &pdu.prev_events {
        if !s.rooms.has_state_at(prev)? {
            out.push(prev.clone());
        }
    }
    Ok(out)
}

/// Verifies a list of raw PDUs of one room, dropping (and logging) those that fail.
pub async fn verify_all(s: &Services, rules: &RoomVersionRules, raws: &[Box<RawValue>], via: &ServerName) -> Vec<Pdu> {
    let mut out = Vec::with_capacity(raws.len());
    for raw in raws {
        match pdu::verify(s, rules, raw, via).await {
            Ok(p) => out.push(p),
            Err(e) => tracing::info!(error = %e, "dropped a fetched PDU"),
        }
    }
    out
}

pub(crate) async fn ensure_auth_chain(
    s: &Arc<Services>,
    origin: &ServerName,
    rules: &RoomVersionRules,
    pdu: &Pdu,
) -> Result<()> {
    let mut missing = false;
    for id in &pdu.auth_events {
        missing |= !s.rooms.knows(id)?;
    }
    if !missing {
        return Ok(());
    }
    let request = get_event_authorization::v1::Request::new(pdu.room_id.clone(), pdu.event_id.clone());
    let response = s.federation_client.send(origin, request).await?;
    let chain = verify_all(s, rules, &response.auth_chain, origin).await;
    s.rooms.store_outliers(&rules.authorization, chain).await?;
    Ok(())
}

async fn fetch_missing_events(
    s: &Arc<Services>,
    origin: &ServerName,
    rules: &RoomVersionRules,
    room_id: &RoomId,
    latest: Vec<OwnedEventId>,
) -> Result<Vec<Pdu>> {
    let earliest = {
        let head = s.rooms.head(room_id)?;
        head.lock().await.extremities.clone()
    };
    let mut request = get_missing_events::v1::Request::new(room_id.to_owned(), earliest, latest);
    request.limit = UInt::from(MISSING_EVENTS_LIMIT);
    let response = match s.federation_client.send(origin, request).await {
        Ok(r) => r,
        Err(e) => {
            tracing::info!(%origin, error = %e, "get_missing_events failed");
            return Ok(Vec::new());
        }
    };
    let mut events = verify_all(s, rules, &response.events, origin).await;
    events.retain(|e| e.room_id == room_id);
    events.sort_by_key(|e| e.depth);
    for event in &events {
        ensure_auth_chain(s, origin, rules, event).await?;
    }
    Ok(events)
}

/// The state before `event_id`, from `origin`'s `/state`; the events are stored as outliers.
pub async fn fetch_state_before(
    s: &Arc<Services>,
    origin: &ServerName,
    rules: &RoomVersionRules,
    room_id: &RoomId,
    event_id: &EventId,
) -> Result<StateIds> {
    let request = get_room_state::v1::Request::new(event_id.to_owned(), room_id.to_owned());
    let response = s.federation_client.send(origin, request).await?;
    let mut all = verify_all(s, rules, &response.auth_chain, origin).await;
    let state = verify_all(s, rules, &response.pdus, origin).await;
    let ids: StateIds = state
        .iter()
        .filter_map(|p| p.state_key.as_ref().map(|k| ((p.state_event_type(), k.clone()), p.event_id.clone())))
        .collect();
    all.extend(state);
    s.rooms.store_outliers(&rules.authorization, all).await?;
    Ok(ids)
}

impl From<PduError> for Error {
    fn from(e: PduError) -> Self {
        match e {
            PduError::Node(e) => e,
            other => Error::BadJson(other.to_string()),
        }
    }
}
