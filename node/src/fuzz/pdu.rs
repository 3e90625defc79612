//! PDUs as the federation receive path takes them: the room id read first, the canonical JSON
//! object, the event id, the format and signature checks ([`pdu::checked_object`],
//! [`pdu::verify_with_keys`]), [`Pdu::from_json`], then the auth rules against a room's state
//! and the client formats.
//!
//! Each input is checked twice in every supported room version: as it is (its signatures
//! checked against the fuzzing key, so a corpus of signed PDUs goes deep), and as a hostile
//! server would send it, signed anew by every server whose signature is required: such a server
//! can sign anything, so what its signatures let through must not crash the node either.

use std::{
    collections::{BTreeMap, HashMap},
    sync::Arc,
};

use ruma::{
    CanonicalJsonValue, EventId, OwnedEventId,
    events::StateEventType,
    room_version_rules::RoomVersionRules,
    serde::Base64,
    signatures::{Ed25519KeyPair, PublicKeyMap, hash_and_sign_event, required_server_signatures_to_verify_event},
    state_res::{self, Event},
};
use serde_json::value::RawValue;

use crate::{
    federation::pdu::{self, PduError},
    rooms::{Pdu, version},
    sync::assemble::stripped_state_type,
};

/// The key every fuzzed server signs with.
pub(super) struct Signer {
    pair: Ed25519KeyPair,
    public: Base64,
}

impl Signer {
    pub(super) fn new() -> Self {
        let der = Ed25519KeyPair::generate();
        let pair = Ed25519KeyPair::from_der(&der, "fuzz".to_owned()).expect("a generated key parses");
        let public = Base64::new(pair.public_key().to_vec());
        Self { pair, public }
    }

    fn keys_for(&self, servers: impl IntoIterator<Item = ruma::OwnedServerName>) -> PublicKeyMap {
        servers
            .into_iter()
            .map(|server| (server.to_string(), BTreeMap::from([("ed25519:fuzz".to_owned(), self.public.clone())])))
            .collect()
    }
}

/// A room's events by id and its state by (type, state key), for the auth checks.
#[derive(Default)]
pub(super) struct Room {
    events: HashMap<OwnedEventId, Arc<Pdu>>,
    state: HashMap<(StateEventType, String), Arc<Pdu>>,
}

/// Everything a fuzzed PDU is checked against: the key, the room versions' rules, and per room
/// version the room the seed PDUs make.
pub(super) struct Context {
    pub signer: Signer,
    versions: Vec<(RoomVersionRules, Room)>,
}

impl Context {
    /// Builds the rooms from the `pdu` corpus's seeds, re-signed with the fuzzing key.
    pub(super) fn new() -> Self {
        let signer = Signer::new();
        let mut versions: Vec<(RoomVersionRules, Room)> = version::SUPPORTED
            .iter()
            .map(|v| (version::rules(v).expect("a supported version has rules"), Room::default()))
            .collect();
        for seed in tocsin_fuzz::seeds("pdu") {
            let Ok(raw) = serde_json::from_slice::<Box<RawValue>>(&seed.bytes) else { continue };
            for (rules, room) in &mut versions {
                if let Some(pdu) = resigned(&signer, rules, &raw) {
                    let pdu = Arc::new(pdu);
                    if let Some(key) = &pdu.state_key {
                        room.state.insert((pdu.state_event_type(), key.clone()), pdu.clone());
                    }
                    room.events.insert(pdu.event_id.clone(), pdu);
                }
            }
        }
        Self { signer, versions }
    }

    /// The seed events of every room version.
    pub(super) fn events(&self) -> Vec<Pdu> {
        self.versions.iter().flat_map(|(_, room)| room.events.values().map(|p| (**p).clone())).collect()
    }

    /// Every check the receive path makes on one raw PDU, in every room version; returns the
    /// PDUs that passed verification.
    pub(super) fn check(&self, raw: &RawValue) -> Vec<Pdu> {
        let mut accepted = Vec::new();
        let _ = pdu::room_id_of(raw);
        for (rules, room) in &self.versions {
            // The shortcut for known events, as `receive::handle_pdu` takes it.
            if let Ok(object) = pdu::parse_object(raw) {
                let _ = pdu::event_id(&object, rules);
            }
            if let Ok(pdu) = verify(&self.signer, rules, raw) {
                authorise(rules, room, &pdu);
                accepted.push(pdu);
            }
            if let Some(pdu) = resigned(&self.signer, rules, raw) {
                authorise(rules, room, &pdu);
                accepted.push(pdu);
            }
            if let Some(pdu) = content_changed_after_signing(&self.signer, rules, raw) {
                assert!(
                    pdu.content_value().as_object().is_some_and(|c| !c.contains_key("fuzz")),
                    "a PDU whose content hash does not match is kept redacted"
                );
                authorise(rules, room, &pdu);
            }
        }
        for pdu in &accepted {
            client_formats(pdu);
        }
        accepted
    }
}

/// `pdu::verify` with the fuzzing key standing in for every signer's published key.
fn verify(signer: &Signer, rules: &RoomVersionRules, raw: &RawValue) -> Result<Pdu, PduError> {
    let object = pdu::checked_object(rules, raw)?;
    let servers = required_server_signatures_to_verify_event(&object, &rules.signatures)
        .map_err(|e| PduError::Signature(e.to_string()))?;
    pdu::verify_with_keys(rules, object, &signer.keys_for(servers))
}

/// The PDU signed by every server whose signature it needs, then verified.
fn resigned(signer: &Signer, rules: &RoomVersionRules, raw: &RawValue) -> Option<Pdu> {
    let raw = sign(signer, rules, raw, false)?;
    verify(signer, rules, &raw).ok()
}

/// The PDU signed, then its content changed: its signatures hold but its hash does not.
fn content_changed_after_signing(signer: &Signer, rules: &RoomVersionRules, raw: &RawValue) -> Option<Pdu> {
    let raw = sign(signer, rules, raw, true)?;
    verify(signer, rules, &raw).ok()
}

fn sign(signer: &Signer, rules: &RoomVersionRules, raw: &RawValue, tamper: bool) -> Option<Box<RawValue>> {
    let mut object = pdu::parse_object(raw).ok()?;
    object.remove("unsigned");
    let servers = required_server_signatures_to_verify_event(&object, &rules.signatures).ok()?;
    for server in &servers {
        hash_and_sign_event(server.as_str(), &signer.pair, &mut object, &rules.redaction).ok()?;
    }
    if tamper {
        match object.get_mut("content") {
            Some(CanonicalJsonValue::Object(content)) => {
                content.insert("fuzz".to_owned(), CanonicalJsonValue::Bool(true));
            }
            _ => return None,
        }
    }
    pdu::to_raw(&object).ok()
}

/// The auth rules, as `rooms::incoming` applies them, against the seed room's state.
fn authorise(rules: &RoomVersionRules, room: &Room, pdu: &Pdu) {
    let pdu = Arc::new(pdu.clone());
    let fetch = |id: &EventId| room.events.get(id).cloned().or_else(|| (pdu.event_id == id).then(|| pdu.clone()));
    let _ = state_res::check_state_independent_auth_rules(&rules.authorization, &pdu, fetch);
    let _ =
        state_res::check_state_dependent_auth_rules(&rules.authorization, &pdu, |kind: &StateEventType, key: &str| {
            room.state.get(&(kind.clone(), key.to_owned())).cloned()
        });
    let _ = state_res::auth_types_for_event(
        pdu.event_type(),
        pdu.sender(),
        pdu.state_key(),
        pdu.content(),
        &rules.authorization,
    );
}

/// What clients get to see of an accepted PDU.
fn client_formats(pdu: &Pdu) {
    let unsigned = serde_json::Map::from_iter([("age".to_owned(), serde_json::Value::from(1))]);
    let _ = pdu.to_client_value(unsigned, true);
    let _ = pdu.to_client_value(serde_json::Map::new(), false);
    let _ = pdu.to_stripped_value();
    let _ = (pdu.membership(), pdu.state_event_type(), pdu.byte_len(), pdu.is_state(), stripped_state_type(pdu));
    let _ = (pdu.room_id(), pdu.redacts(), pdu.prev_events().count(), pdu.auth_events().count());
}

#[test]
fn fuzz_pdu() {
    let context = Context::new();
    assert!(
        context.versions.iter().all(|(_, room)| room.state.len() >= 4),
        "the seeds make a room with create, member, power levels and join rules events in every version"
    );
    tocsin_fuzz::run("pdu", super::WORDS, |bytes| {
        // The transaction parser hands each PDU over as raw JSON; anything else never gets here.
        if let Ok(raw) = serde_json::from_slice::<Box<RawValue>>(bytes) {
            context.check(&raw);
        }
    });
}
