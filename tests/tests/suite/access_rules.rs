//! Tchap-style access rules from the node policy, enforced across federation: a `restricted`
//! room refuses users of servers whose role in the federation list is `external` (local invite,
//! remote `make_join`, `send_join`, and the join arriving in a transaction), and a `direct` room
//! takes no third member. Every refusal names the rule.

use crate::common;

use std::{
    path::Path,
    time::{Duration, SystemTime},
};

use matrix_sdk::{Client, RoomState, ruma::RoomId};
use serde_json::{Value, json};
use tocsin_node::{
    NodeHandle,
    federation::pdu,
    policy::policies::{FederationList, Member, MemberRole, OperatorSecretKey, Timestamp, sign_list},
    ruma::{
        CanonicalJsonValue, MilliSecondsSinceUnixEpoch, RoomVersionId, UserId,
        api::federation::membership::{create_join_event, prepare_join_event},
        signatures::hash_and_sign_event,
    },
};
use tocsin_tests::cluster::Cluster;

fn now() -> i64 {
    SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

fn write_list(path: &Path, key: &OperatorSecretKey, members: &[(&str, MemberRole)]) {
    let list = FederationList {
        name: "Access valley".into(),
        version: 1,
        issued: Timestamp(now() - 3600),
        expires: Timestamp(now() + 30 * 24 * 3600),
        members: members.iter().map(|(name, role)| Member::new(name, "Agency", *role)).collect(),
    };
    std::fs::write(path, sign_list(&list, key).expect("signs").to_toml()).expect("list written");
}

/// Sends a Client-Server request as `client`; status and JSON body.
async fn call(client: &Client, base: &str, method: reqwest::Method, path: &str, body: Value) -> (u16, Value) {
    let response = reqwest::Client::new()
        .request(method, format!("{base}{path}"))
        .bearer_auth(client.access_token().expect("logged in"))
        .json(&body)
        .send()
        .await
        .expect("request sent");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or_default())
}

async fn invite(client: &Client, node: &NodeHandle, room: &RoomId, user: &UserId) -> (u16, Value) {
    let path = format!("/_matrix/client/v3/rooms/{room}/invite");
    call(client, &node.base_url(), reqwest::Method::POST, &path, json!({ "user_id": user })).await
}

/// A 403 M_FORBIDDEN whose message names the access rule and which of its values refused.
fn assert_rule_refusal(what: &str, (status, body): &(u16, Value), value: &str) {
    assert_eq!(*status, 403, "{what}: {body}");
    assert_eq!(body["errcode"], "M_FORBIDDEN", "{what}: {body}");
    let error = body["error"].as_str().unwrap_or("");
    assert!(error.contains("`access_rule`") && error.contains(&format!("\"{value}\"")), "{what}: {body}");
}

async fn accept_invite(client: &Client, room_id: &RoomId) {
    common::eventually(client, 10, || async { client.get_room(room_id).filter(|r| r.state() == RoomState::Invited) })
        .await;
    client.join_room_by_id(room_id).await.expect("joins");
}

/// A join event for `user` of node `from`, from a template of `template_from`, hashed and
/// signed by `from`: what `send_join` carries.
async fn signed_join(from: &NodeHandle, template_from: &NodeHandle, room: &RoomId, user: &UserId) -> (String, Value) {
    let mut make = prepare_join_event::v1::Request::new(room.to_owned(), user.to_owned());
    make.ver = vec![RoomVersionId::V10, RoomVersionId::V11, RoomVersionId::V12];
    let made = from.services.federation_client.send(&template_from.server_name, make).await.expect("template");
    let version = made.room_version.expect("room version");
    let rules = tocsin_node::rooms::version::rules(&version).expect("rules");
    let mut object = pdu::parse_object(&made.event).expect("object");
    object.insert("origin_server_ts".into(), CanonicalJsonValue::Integer(MilliSecondsSinceUnixEpoch::now().0.into()));
    hash_and_sign_event(from.server_name.as_str(), from.services.keys.pair(), &mut object, &rules.redaction)
        .expect("signs");
    let event_id = pdu::event_id(&object, &rules).expect("event id").to_string();
    (event_id, serde_json::to_value(&object).expect("json"))
}

async fn send_join(from: &NodeHandle, to: &NodeHandle, room: &RoomId, event_id: &str, event: &Value) -> (u16, Value) {
    let raw = serde_json::value::to_raw_value(event).expect("raw");
    let event_id = tocsin_node::ruma::EventId::parse(event_id).expect("event id");
    let request = create_join_event::v2::Request::new(room.to_owned(), event_id, raw);
    match from.services.federation_client.send(&to.server_name, request).await {
        Ok(_) => (200, Value::Null),
        Err(tocsin_node::Error::Remote(e)) => {
            let forbidden = matches!(e.error_kind(), Some(tocsin_node::ruma::api::error::ErrorKind::Forbidden));
            let errcode = if forbidden { "M_FORBIDDEN" } else { "another errcode" };
            (e.status_code.as_u16(), json!({ "errcode": errcode, "error": e.to_string() }))
        }
        Err(other) => panic!("send_join failed another way: {other}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn access_rules_keep_external_users_out_and_direct_rooms_to_two() {
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = Cluster::plan(dir.path(), &["a.test", "b.test", "e.test"]).unwrap();
    let (secret, public) = tocsin_node::policy::policies::generate_operator_key();
    let key = OperatorSecretKey::from_text(&secret).unwrap();
    let pub_path = dir.path().join("operator.pub");
    std::fs::write(&pub_path, &public).unwrap();
    // A and E hold the list in which E is `external`; B still holds one in which E is a fire
    // service, so B lets E's user in and A's checks on receipt are what keep them out.
    let strict = dir.path().join("strict.toml");
    let lax = dir.path().join("lax.toml");
    write_list(
        &strict,
        &key,
        &[("a.test", MemberRole::Municipality), ("b.test", MemberRole::Fire), ("e.test", MemberRole::External)],
    );
    write_list(
        &lax,
        &key,
        &[("a.test", MemberRole::Municipality), ("b.test", MemberRole::Fire), ("e.test", MemberRole::Fire)],
    );
    let policy = dir.path().join("a-policy.toml");
    // External users are welcome where the room's rule lets them in (the limits of
    // `[external_users]` are tested below).
    std::fs::write(
        &policy,
        "[room_defaults]\nencryption = false\naccess_rule = \"restricted\"\n\n[external_users]\nallowed = true\nmay_invite = true\n",
    )
    .unwrap();
    for (i, list) in [(0, &strict), (1, &lax), (2, &strict)] {
        cluster.members[i].config.federation_list = Some(list.clone());
        cluster.members[i].config.federation_operator_keys = vec![pub_path.clone()];
    }
    cluster.members[0].config.policy = Some(policy);
    let a = cluster.start(0).await.unwrap();
    let b = cluster.start(1).await.unwrap();
    let e = cluster.start(2).await.unwrap();
    let alice = common::user(&a, "alice").await;
    let carol = common::user(&a, "carol").await;
    let dave = common::user(&a, "dave").await;
    let bob = common::user(&b, "bob").await;
    let eve = common::user(&e, "eve").await;
    let eve_id = eve.user_id().unwrap().to_owned();

    // A public room on A gets the policy's default rule, `restricted`, as room state.
    let (status, created) = call(
        &alice,
        &a.base_url(),
        reqwest::Method::POST,
        "/_matrix/client/v3/createRoom",
        json!({ "preset": "public_chat", "name": "Crisis staff", "invite": [bob.user_id().unwrap()] }),
    )
    .await;
    assert_eq!(status, 200, "{created}");
    let room = RoomId::parse(created["room_id"].as_str().unwrap()).unwrap();
    let path = format!("/_matrix/client/v3/rooms/{room}/state/org.tocsin.access_rule/");
    let (status, rule) = call(&alice, &a.base_url(), reqwest::Method::GET, &path, Value::Null).await;
    assert_eq!((status, rule["rule"].as_str()), (200, Some("restricted")), "{rule}");
    accept_invite(&bob, &room).await;

    // A local invite of E's user: refused, naming the rule.
    assert_rule_refusal("alice invites eve", &invite(&alice, &a, &room, &eve_id).await, "restricted");

    // E's user joins through A: A refuses at make_join, and E's client sees why.
    let path = format!("/_matrix/client/v3/join/{room}?server_name=a.test");
    let joined = call(&eve, &e.base_url(), reqwest::Method::POST, &path, json!({})).await;
    assert_rule_refusal("eve joins through A", &joined, "restricted");

    // E builds a join on B's template (B lets it through) and sends it to A: refused at
    // send_join. B accepts another such join and passes it on to A in a transaction, where it
    // is rejected on receipt: A never counts eve as a member.
    let (event_id, join) = signed_join(&e, &b, &room, &eve_id).await;
    assert_rule_refusal("eve's send_join to A", &send_join(&e, &a, &room, &event_id, &join).await, "restricted");
    tokio::time::sleep(Duration::from_millis(5)).await;
    let (event_id, join) = signed_join(&e, &b, &room, &eve_id).await;
    assert_eq!(send_join(&e, &b, &room, &event_id, &join).await.0, 200, "B (lax list) accepts the join");
    let parsed = tocsin_node::ruma::EventId::parse(&event_id).unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !a.services.rooms.knows(&parsed).unwrap_or(false) {
        assert!(tokio::time::Instant::now() < deadline, "A never received the join from B");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(b.services.rooms.membership(&room, &eve_id).await.unwrap().as_deref(), Some("join"));
    assert_eq!(a.services.rooms.membership(&room, &eve_id).await.unwrap(), None, "A rejected eve's join");
    let (_, members) = call(
        &alice,
        &a.base_url(),
        reqwest::Method::GET,
        &format!("/_matrix/client/v3/rooms/{room}/joined_members"),
        Value::Null,
    )
    .await;
    assert!(members["joined"].get(eve_id.as_str()).is_none(), "{members}");

    // A room that was unrestricted and becomes restricted: E's user who joined before stays,
    // but E, asked by B (lax list) to countersign an invite of another of its users, refuses
    // by its own list and the room's rule, and bob sees why.
    let eve2 = common::user(&e, "eve2").await;
    let (status, created) = call(
        &alice,
        &a.base_url(),
        reqwest::Method::POST,
        "/_matrix/client/v3/createRoom",
        json!({
            "preset": "public_chat",
            "invite": [bob.user_id().unwrap()],
            "initial_state": [{ "type": "org.tocsin.access_rule", "state_key": "", "content": { "rule": "unrestricted" } }],
        }),
    )
    .await;
    assert_eq!(status, 200, "{created}");
    let open = RoomId::parse(created["room_id"].as_str().unwrap()).unwrap();
    accept_invite(&bob, &open).await;
    let path = format!("/_matrix/client/v3/join/{open}?server_name=a.test");
    let (status, body) = call(&eve, &e.base_url(), reqwest::Method::POST, &path, json!({})).await;
    assert_eq!(status, 200, "eve joins the unrestricted room: {body}");
    let path = format!("/_matrix/client/v3/rooms/{open}/state/org.tocsin.access_rule/");
    let (status, body) =
        call(&alice, &a.base_url(), reqwest::Method::PUT, &path, json!({ "rule": "restricted" })).await;
    assert_eq!(status, 200, "{body}");
    let kind = tocsin_node::ruma::events::StateEventType::from("org.tocsin.access_rule");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let rule = e.services.rooms.state_event(&open, &kind, "").await.unwrap().map(|p| p.content_value());
        if rule.is_some_and(|r| r["rule"] == "restricted") {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "E never saw the rule change");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let refused = invite(&bob, &b, &open, eve2.user_id().unwrap()).await;
    assert_rule_refusal("B's invite of eve2, refused by E", &refused, "restricted");
    assert!(refused.1["error"].as_str().unwrap_or("").contains("remote server"), "{refused:?}");

    // A DM on A: `direct`. Two members, then no third, local or remote, by invite or rule change.
    let (status, created) = call(
        &alice,
        &a.base_url(),
        reqwest::Method::POST,
        "/_matrix/client/v3/createRoom",
        json!({ "preset": "trusted_private_chat", "is_direct": true, "invite": [carol.user_id().unwrap()] }),
    )
    .await;
    assert_eq!(status, 200, "{created}");
    let dm = RoomId::parse(created["room_id"].as_str().unwrap()).unwrap();
    let path = format!("/_matrix/client/v3/rooms/{dm}/state/org.tocsin.access_rule/");
    let (_, rule) = call(&alice, &a.base_url(), reqwest::Method::GET, &path, Value::Null).await;
    assert_eq!(rule["rule"], "direct", "{rule}");
    accept_invite(&carol, &dm).await;
    let third = invite(&alice, &a, &dm, dave.user_id().unwrap()).await;
    assert_rule_refusal("a third member invited", &third, "direct");
    assert_rule_refusal("a remote third member", &invite(&carol, &a, &dm, bob.user_id().unwrap()).await, "direct");
    let lift = call(&alice, &a.base_url(), reqwest::Method::PUT, &path, json!({ "rule": "unrestricted" })).await;
    assert_rule_refusal("lifting the direct rule", &lift, "direct");
    // Leaving frees the place: the two-member limit counts who is in the room now.
    carol.get_room(&dm).expect("carol's dm").leave().await.expect("carol leaves");
    let (status, body) = invite(&alice, &a, &dm, dave.user_id().unwrap()).await;
    assert_eq!(status, 200, "{body}");

    for node in [a, b, e] {
        node.shutdown().await;
    }
}

/// A 403 M_FORBIDDEN whose message names `rule`.
fn assert_refused_by(what: &str, (status, body): &(u16, Value), rule: &str) {
    assert_eq!(*status, 403, "{what}: {body}");
    assert_eq!(body["errcode"], "M_FORBIDDEN", "{what}: {body}");
    assert!(body["error"].as_str().unwrap_or("").contains(&format!("`{rule}`")), "{what}: {body}");
}

/// `[external_users]` in an unrestricted room: at most `max_per_room` external users, external
/// users may not invite when `may_invite` is off, and none at all once `allowed` is off (the
/// policy reloaded from disk).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn external_users_limits_hold_in_unrestricted_rooms() {
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = Cluster::plan(dir.path(), &["a.test", "e.test", "f.test"]).unwrap();
    let (secret, public) = tocsin_node::policy::policies::generate_operator_key();
    let key = OperatorSecretKey::from_text(&secret).unwrap();
    let pub_path = dir.path().join("operator.pub");
    std::fs::write(&pub_path, &public).unwrap();
    let list = dir.path().join("list.toml");
    write_list(
        &list,
        &key,
        &[("a.test", MemberRole::Municipality), ("e.test", MemberRole::External), ("f.test", MemberRole::External)],
    );
    let policy = dir.path().join("a-policy.toml");
    let write_policy = |external: &str| {
        let text = format!(
            "[room_defaults]\nencryption = false\naccess_rule = \"unrestricted\"\n\n[external_users]\n{external}\n"
        );
        std::fs::write(&policy, text).unwrap();
    };
    write_policy("allowed = true\nmay_invite = false\nmax_per_room = 1");
    for member in &mut cluster.members {
        member.config.federation_list = Some(list.clone());
        member.config.federation_operator_keys = vec![pub_path.clone()];
    }
    cluster.members[0].config.policy = Some(policy.clone());
    let a = cluster.start(0).await.unwrap();
    let e = cluster.start(1).await.unwrap();
    let f = cluster.start(2).await.unwrap();
    let alice = common::user(&a, "alice").await;
    let carol = common::user(&a, "carol").await;
    let eve = common::user(&e, "eve").await;
    let frank = common::user(&f, "frank").await;
    let (eve_id, frank_id, carol_id) =
        (eve.user_id().unwrap().to_owned(), frank.user_id().unwrap().to_owned(), carol.user_id().unwrap().to_owned());

    let (status, created) = call(
        &alice,
        &a.base_url(),
        reqwest::Method::POST,
        "/_matrix/client/v3/createRoom",
        json!({ "preset": "private_chat", "name": "Contractors" }),
    )
    .await;
    assert_eq!(status, 200, "{created}");
    let room = RoomId::parse(created["room_id"].as_str().unwrap()).unwrap();

    // One external user may come in.
    assert_eq!(invite(&alice, &a, &room, &eve_id).await.0, 200, "the first external user is invited");
    accept_invite(&eve, &room).await;
    // A second would pass max_per_room = 1.
    assert_refused_by(
        "alice invites frank",
        &invite(&alice, &a, &room, &frank_id).await,
        "external_users.max_per_room",
    );
    // Eve may not invite anyone: A refuses to countersign, and eve's client sees why.
    assert_refused_by("eve invites carol", &invite(&eve, &e, &room, &carol_id).await, "external_users.may_invite");
    // Local users still may.
    assert_eq!(invite(&alice, &a, &room, &carol_id).await.0, 200, "alice invites carol");

    // allowed = false, picked up from disk: no external user may be invited at all.
    write_policy("allowed = false");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let refused = invite(&alice, &a, &room, &frank_id).await;
        let error = refused.1["error"].as_str().unwrap_or("").to_owned();
        if error.contains("`external_users.allowed`") {
            assert_refused_by("alice invites frank", &refused, "external_users.allowed");
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "the reloaded policy never refused frank: {refused:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    for node in [a, e, f] {
        node.shutdown().await;
    }
}
