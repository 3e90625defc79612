//! `PUT /_matrix/federation/v1/send/{txnId}`: a peer's transaction of PDUs and EDUs. The 200
//! goes back only once every accepted PDU is durable.

use std::{collections::BTreeMap, sync::Arc};

use ruma::api::federation::transactions::send_transaction_message;

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
    for raw in &req.pdus {
        let (event_id, result) = super::receive::handle_pdu(&s, &origin, raw).await;
        if let Some(event_id) = event_id {
            results.insert(event_id, result);
        }
    }
    for edu in &req.edus {
        super::edu::handle(&s, &origin, edu.json()).await;
    }
    Ok(send_transaction_message::v1::Response::new(results))
}
