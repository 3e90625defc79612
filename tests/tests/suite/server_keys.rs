//! The node publishes its signing key, self-signed, and the key survives a restart.

use crate::common;

use std::collections::BTreeMap;

use tocsin_node::ruma::{CanonicalJsonObject, serde::Base64, signatures::verify_json};

async fn fetch(node: &tocsin_node::NodeHandle) -> (CanonicalJsonObject, String) {
    let body: serde_json::Value =
        reqwest::get(format!("{}/_matrix/key/v2/server", node.base_url())).await.unwrap().json().await.unwrap();
    assert_eq!(body["server_name"], node.server_name.as_str());
    let keys = body["verify_keys"].as_object().expect("verify_keys");
    assert_eq!(keys.len(), 1);
    let key = keys.values().next().unwrap()["key"].as_str().unwrap().to_owned();
    assert!(body["valid_until_ts"].as_u64().unwrap() > tocsin_node::users::now_ms());
    (serde_json::from_value(body).unwrap(), key)
}

#[tokio::test]
async fn the_key_is_self_signed_and_stable_across_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let node = common::start(dir.path(), |_| {}).await;
    let (object, key) = fetch(&node).await;
    let key_id = object["verify_keys"].as_object().unwrap().keys().next().unwrap().clone();

    let public: BTreeMap<String, Base64> = BTreeMap::from([(key_id.clone(), Base64::parse(&key).unwrap())]);
    let map = BTreeMap::from([(node.server_name.to_string(), public)]);
    verify_json(&map, &object).expect("the response carries a valid signature by the key it lists");

    let mut tampered = object.clone();
    tampered.insert("valid_until_ts".into(), tocsin_node::ruma::CanonicalJsonValue::Integer(u32::MAX.into()));
    assert!(verify_json(&map, &tampered).is_err(), "a changed object no longer verifies");

    node.shutdown().await;
    let node = common::start(dir.path(), |_| {}).await;
    let (_, key_after) = fetch(&node).await;
    assert_eq!(key, key_after, "the signing key persists in the data dir");
    node.shutdown().await;
}
