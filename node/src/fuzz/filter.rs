//! Filters from clients: inline in `/sync?filter=` and `/messages?filter=`, and uploaded with
//! `POST /user/{userId}/filter` to be stored and loaded on every later `/sync`. Parsed by ruma's
//! request types as the router calls them, then applied to events as `/sync` and `/messages`
//! apply them. A filter the server accepted must load back from its stored form: otherwise every
//! `/sync` naming it would fail.

use ruma::api::{
    IncomingRequest,
    client::{
        filter::{FilterDefinition, create_filter},
        message::get_message_events,
        sync::sync_events::{self, v3::Filter},
    },
};

use super::pdu::Context;
use crate::{
    rooms::Pdu,
    sync::{Token, assemble::filter_matches, parse_pagination_token},
};

/// Percent-encodes a query parameter value.
fn encode(value: &[u8]) -> String {
    value
        .iter()
        .map(|&b| if b.is_ascii_alphanumeric() { char::from(b).to_string() } else { format!("%{b:02X}") })
        .collect()
}

/// A GET request, or none when the URI is too long for `http` (the HTTP server refuses those
/// before any handler runs).
fn get(uri: &str) -> Option<http::Request<&'static [u8]>> {
    http::Request::builder().method(http::Method::GET).uri(uri).body(&b""[..]).ok()
}

fn apply(filter: &FilterDefinition, events: &[Pdu]) {
    for pdu in events {
        let _ = filter_matches(&filter.room.timeline, pdu);
        let _ = filter_matches(&filter.room.state, pdu);
    }
}

fn check(events: &[Pdu], input: &[u8]) {
    if let Ok(text) = std::str::from_utf8(input) {
        // `since` and `from` tokens come from clients too.
        let _ = Token::parse(text);
        let _ = parse_pagination_token(text);
    }

    let encoded = encode(input);
    if let Some(sync) = get(&format!("/_matrix/client/v3/sync?filter={encoded}&timeout=0"))
        && let Ok(request) = sync_events::v3::Request::try_from_http_request(sync, &[] as &[&str])
        && let Some(Filter::FilterDefinition(filter)) = &request.filter
    {
        apply(filter, events);
    }

    let messages = get(&format!("/_matrix/client/v3/rooms/!room:riverton.test/messages?dir=b&filter={encoded}"));
    if let Some(messages) = messages
        && let Ok(request) = get_message_events::v3::Request::try_from_http_request(messages, &["!room:riverton.test"])
    {
        for pdu in events {
            let _ = filter_matches(&request.filter, pdu);
        }
    }

    let upload = http::Request::builder()
        .method(http::Method::POST)
        .uri("/_matrix/client/v3/user/@alice:riverton.test/filter")
        .body(input)
        .expect("a static request builds");
    if let Ok(request) = create_filter::v3::Request::try_from_http_request(upload, &["@alice:riverton.test"]) {
        // As `users::create_filter` stores it and `users::filter` loads it.
        let stored = serde_json::to_vec(&request.filter).expect("a parsed filter serialises");
        let loaded: FilterDefinition = match serde_json::from_slice(&stored) {
            Ok(f) => f,
            Err(e) => panic!("an accepted filter does not load back: {e}\n{}", String::from_utf8_lossy(&stored)),
        };
        apply(&loaded, events);
    }
}

#[test]
fn fuzz_sync_filter() {
    let events = Context::new().events();
    assert!(!events.is_empty(), "the pdu seeds give events to filter");
    tocsin_fuzz::run("sync_filter", super::WORDS, |bytes| check(&events, bytes));
}
