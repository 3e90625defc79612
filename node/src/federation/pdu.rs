//! The first checks on a PDU from another server: its format, its event id, and its signatures
//! (an event whose signatures hold but whose content hash does not is redacted, not dropped).

use ruma::{
    CanonicalJsonObject, CanonicalJsonValue, EventId,
    room_version_rules::RoomVersionRules,
    signatures::{PublicKeyMap, Verified, reference_hash, required_server_signatures_to_verify_event, verify_event},
    state_res,
};
use serde_json::value::RawValue;

use crate::{Services, error::Error, rooms::Pdu};

/// Why a PDU was dropped before it reached the room.
#[derive(Debug, thiserror::Error)]
pub enum PduError {
    #[error("malformed PDU: {0}")]
    Format(String),
    #[error("signature check failed: {0}")]
    Signature(String),
    #[error("{0}")]
    Node(#[from] Error),
}

/// The room id a raw PDU names, read before anything else so its room version can be looked up.
pub fn room_id_of(raw: &RawValue) -> Result<ruma::OwnedRoomId, PduError> {
    #[derive(serde::Deserialize)]
    struct RoomOnly {
        room_id: ruma::OwnedRoomId,
    }
    serde_json::from_str::<RoomOnly>(raw.get()).map(|r| r.room_id).map_err(|e| PduError::Format(e.to_string()))
}

pub fn parse_object(raw: &RawValue) -> Result<CanonicalJsonObject, PduError> {
    serde_json::from_str(raw.get()).map_err(|e| PduError::Format(format!("not a canonical JSON object: {e}")))
}

/// Checks format and signatures and computes the event id. A content hash mismatch gives back
/// the redacted event, as the spec requires.
/// `via` is the server the PDU came from: it is asked for the signers' keys when they cannot be
/// fetched directly.
pub async fn verify(
    s: &Services,
    rules: &RoomVersionRules,
    raw: &RawValue,
    via: &ruma::ServerName,
) -> Result<Pdu, PduError> {
    let object = checked_object(rules, raw)?;
    let servers = required_server_signatures_to_verify_event(&object, &rules.signatures)
        .map_err(|e| PduError::Signature(e.to_string()))?;
    let keys = s.remote_keys.public_key_map_via(servers, via).await?;
    verify_with_keys(rules, object, &keys)
}

/// A raw PDU as a canonical JSON object in the room version's format, without `unsigned`
/// (which is not covered by the signatures).
pub fn checked_object(rules: &RoomVersionRules, raw: &RawValue) -> Result<CanonicalJsonObject, PduError> {
    let mut object = parse_object(raw)?;
    object.remove("unsigned");
    state_res::check_pdu_format(&object, &rules.event_format).map_err(PduError::Format)?;
    Ok(object)
}

/// The rest of [`verify`] once the signers' keys are known (kept apart so it can be tested
/// without a network).
pub fn verify_with_keys(
    rules: &RoomVersionRules,
    object: CanonicalJsonObject,
    keys: &PublicKeyMap,
) -> Result<Pdu, PduError> {
    let object = match verify_event(keys, &object, rules) {
        Ok(Verified::All) => object,
        Ok(Verified::Signatures) => {
            tracing::warn!("content hash mismatch: keeping the redacted event");
            ruma::canonical_json::redact(object, &rules.redaction, None).map_err(|e| PduError::Format(e.to_string()))?
        }
        Err(e) => return Err(PduError::Signature(e.to_string())),
    };
    let event_id = event_id(&object, rules)?;
    Ok(Pdu::from_json(event_id, object)?)
}

/// The event id of a PDU: the reference hash, from room version 3 on.
pub fn event_id(object: &CanonicalJsonObject, rules: &RoomVersionRules) -> Result<ruma::OwnedEventId, PduError> {
    let hash = reference_hash(object, rules).map_err(|e| PduError::Format(e.to_string()))?;
    EventId::parse(format!("${hash}")).map_err(|e| PduError::Format(e.to_string()))
}

/// A stored PDU as sent over federation (the store keeps it in that form already).
pub fn to_raw(object: &CanonicalJsonObject) -> crate::error::Result<Box<RawValue>> {
    serde_json::value::to_raw_value(object).map_err(Error::internal)
}

/// A string field of a canonical JSON object.
pub fn str_field<'a>(object: &'a CanonicalJsonObject, field: &str) -> Option<&'a str> {
    match object.get(field) {
        Some(CanonicalJsonValue::String(s)) => Some(s),
        _ => None,
    }
}
