//! `PUT /_matrix/federation/v1/send/{txnId}`: a peer's transaction of PDUs and EDUs. The 200
//! goes back only once every accepted PDU is durable.

use std::{collections::BTreeMap, sync::Arc};

use ruma::{OwnedEventId, api::federation::transactions::send_transaction_message};
use serde_json::value::RawValue;

use crate::{
    Services,
    error::{Error, Result},
    http::Ruma,
};

/// The spec's limits on one transaction.
pub const MAX_PDUS: usize = 50;
pub const MAX_EDUS: usize = 100;

pub async fn transaction(
    s: Arc<Services>,
    req: Ruma<send_transaction_message::v1::Request>,
) -> Result<send_transaction_message::v1::Response> {
    let origin = req.origin()?.to_owned();
    if req.body.origin != origin {
        return Err(Error::Forbidden("the transaction's origin is not the signing server".into()));
    }
    if req.pdus.len() > MAX_PDUS || req.edus.len() > MAX_EDUS {
        return Err(Error::bad_json(format!(
            "a transaction carries at most {MAX_PDUS} PDUs and {MAX_EDUS} EDUs (got {} and {})",
            req.pdus.len(),
            req.edus.len()
        )));
    }
    let mut results = BTreeMap::new();
    let mut durables = Vec::new();
    for raw in &req.pdus {
        let (event_id, result, durable) = super::receive::handle_pdu(&s, &origin, raw).await;
        let event_id = match event_id {
            Some(id) => Some(id),
            None => event_id_of(&s, raw).await,
        };
        if let Some(event_id) = event_id {
            results.insert(event_id, result);
        }
        durables.extend(durable);
    }
    // Rule 1: the 200 goes back only once every accepted event is on disk (one shared fsync
    // for the whole transaction, usually). A failure here fails the transaction: it is retried.
    for durable in durables {
        durable.await?;
    }
    for edu in &req.edus {
        super::edu::handle(&s, &origin, edu.json()).await;
    }
    Ok(send_transaction_message::v1::Response::new(results))
}

/// The event id of a PDU dropped before its id was computed (a bad signature, a bad format), so
/// that the response still lists its error under its id, as the spec's `pdus` map is keyed by
/// event id. `None` when the room or its version is not known here, or the PDU has no reference
/// hash.
async fn event_id_of(s: &Services, raw: &RawValue) -> Option<OwnedEventId> {
    let room_id = super::pdu::room_id_of(raw).ok()?;
    let version = s.rooms.version(&room_id).await.ok()?;
    let rules = crate::rooms::version::rules(&version).ok()?;
    let mut object = super::pdu::parse_object(raw).ok()?;
    object.remove("unsigned");
    super::pdu::event_id(&object, &rules).ok()
}
