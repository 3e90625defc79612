//! `PUT /_matrix/federation/v1/send/{txnId}` bodies: ruma's request parser as the router calls
//! it, the transaction limits, then each PDU through the receive path's checks (as the `pdu`
//! target does) and each EDU through its parser.

use ruma::api::{
    IncomingRequest,
    federation::transactions::{edu::Edu, send_transaction_message},
};

use super::pdu::Context;
use crate::federation::{
    send::{MAX_EDUS, MAX_PDUS},
    user_keys::belongs_to,
};

fn check(context: &Context, body: &[u8]) {
    let request = http::Request::builder()
        .method(http::Method::PUT)
        .uri("/_matrix/federation/v1/send/fuzz-txn")
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(body)
        .expect("a static request builds");
    let Ok(txn) = send_transaction_message::v1::Request::try_from_http_request(request, &["fuzz-txn"]) else {
        return;
    };
    // `send::transaction` refuses larger transactions before looking at their contents.
    if txn.pdus.len() > MAX_PDUS || txn.edus.len() > MAX_EDUS {
        return;
    }
    for raw in &txn.pdus {
        context.check(raw);
    }
    for edu in &txn.edus {
        match serde_json::from_str::<Edu>(edu.json().get()) {
            Ok(Edu::Typing(c)) => _ = belongs_to(&c.user_id, &txn.origin),
            Ok(Edu::DeviceListUpdate(c)) => _ = belongs_to(&c.user_id, &txn.origin),
            Ok(Edu::SigningKeyUpdate(c)) => _ = belongs_to(&c.user_id, &txn.origin),
            Ok(Edu::DirectToDevice(c)) => _ = belongs_to(&c.sender, &txn.origin),
            Ok(Edu::Presence(c)) => {
                for update in &c.push {
                    let _ = belongs_to(&update.user_id, &txn.origin);
                }
            }
            Ok(Edu::Receipt(c)) => {
                for receipts in c.receipts.values() {
                    for user in receipts.read.keys() {
                        let _ = belongs_to(user, &txn.origin);
                    }
                }
            }
            Ok(_) | Err(_) => {}
        }
    }
}

#[test]
fn fuzz_send_transaction() {
    let context = Context::new();
    tocsin_fuzz::run("send_transaction", super::WORDS, |bytes| check(&context, bytes));
}
