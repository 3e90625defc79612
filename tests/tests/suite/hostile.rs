//! A hostile server for the trust scenarios: a real node of the test whose signing key signs
//! whatever the test wants, as requests and as PDUs, sent to another node over real TLS.
#![allow(dead_code)]

use serde_json::{Value, json};
use tocsin_node::{
    NodeHandle,
    ruma::{
        CanonicalJsonObject, CanonicalJsonValue, EventId, OwnedEventId, OwnedRoomId,
        api::federation::authentication::{ServerSignaturesInput, XMatrix},
        exports::http,
        room_version_rules::RoomVersionRules,
        signatures::{hash_and_sign_event, reference_hash},
    },
};

pub fn cj(value: Value) -> CanonicalJsonValue {
    value.try_into().expect("canonical JSON")
}

fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_millis() as u64
}

/// Makes PDUs of a room as `node` would, from one of its real stored PDUs.
pub struct Forge<'a> {
    pub node: &'a NodeHandle,
    pub room_id: OwnedRoomId,
    pub rules: RoomVersionRules,
    pub template: CanonicalJsonObject,
}

impl<'a> Forge<'a> {
    /// A forge on `node`'s stored PDU `template` (a message of one of its users).
    pub async fn new(node: &'a NodeHandle, room_id: &OwnedRoomId, template: &EventId) -> Self {
        let version = node.services.rooms.version(room_id).await.expect("room known");
        Self {
            node,
            room_id: room_id.clone(),
            rules: tocsin_node::rooms::version::rules(&version).expect("rules"),
            template: node
                .services
                .rooms
                .pdu(template)
                .expect("store")
                .expect("stored PDU")
                .json()
                .expect("its object")
                .clone(),
        }
    }

    /// The template on top of `node`'s current head, `edit` applied, hashed and signed with the
    /// node's real key.
    pub async fn pdu(&self, edit: impl FnOnce(&mut CanonicalJsonObject)) -> (OwnedEventId, CanonicalJsonObject) {
        let mut object = self.template.clone();
        for field in ["signatures", "hashes", "unsigned"] {
            object.remove(field);
        }
        let (extremities, depth) = {
            let head = self.node.services.rooms.head(&self.room_id).expect("head");
            let head = head.lock().await;
            (head.extremities.clone(), head.depth)
        };
        object.insert("prev_events".into(), cj(json!(extremities)));
        object.insert("depth".into(), cj(json!(depth + 1)));
        object.insert("origin_server_ts".into(), cj(json!(now_ms())));
        edit(&mut object);
        let origin = self.node.server_name.to_string();
        hash_and_sign_event(&origin, self.node.services.keys.pair(), &mut object, &self.rules.redaction)
            .expect("signs");
        let id = EventId::parse(format!("${}", reference_hash(&object, &self.rules).expect("hash"))).expect("event id");
        (id, object)
    }
}

/// A request from `from` to `to`, X-Matrix signed with `from`'s key; `to`'s status and body.
pub async fn request(
    from: &NodeHandle,
    to: &NodeHandle,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let bytes = body.map(|b| serde_json::to_vec(&b).expect("JSON")).unwrap_or_default();
    let mut request = http::Request::builder()
        .method(method)
        .uri(format!("https://{}{path}", to.server_name))
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(bytes)
        .expect("request");
    let input = ServerSignaturesInput::new(from.server_name.clone(), to.server_name.clone(), from.services.keys.pair());
    let x_matrix = XMatrix::try_from_http_request(&request, input).expect("signs the request");
    request.headers_mut().insert(http::header::AUTHORIZATION, http::HeaderValue::from(&x_matrix));
    let response = from.services.federation_client.send_raw(&to.server_name, request).await.expect("answers");
    (response.status().as_u16(), serde_json::from_slice(response.body()).unwrap_or(Value::Null))
}

/// A signed transaction from `from` to `to` carrying `pdus`.
pub async fn transaction(
    from: &NodeHandle,
    to: &NodeHandle,
    txn: &str,
    pdus: Vec<CanonicalJsonObject>,
) -> (u16, Value) {
    let pdus: Vec<Value> = pdus.into_iter().map(|p| serde_json::to_value(p).expect("JSON")).collect();
    let body = json!({ "origin": from.server_name, "origin_server_ts": now_ms(), "pdus": pdus, "edus": [] });
    request(from, to, "PUT", &format!("/_matrix/federation/v1/send/{txn}"), Some(body)).await
}

/// The per-PDU error `to` gave for `id` in a transaction answer, if any.
pub fn pdu_error(body: &Value, id: &EventId) -> Option<String> {
    body["pdus"].get(id.as_str())?.get("error").map(|e| e.as_str().unwrap_or_default().to_owned())
}
