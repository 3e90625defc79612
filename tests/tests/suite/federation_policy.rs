//! The federation list enforced between nodes: members federate, a non-member's requests get
//! 403 before any handler, local users cannot invite or join through a non-member, and a new
//! signed list that removes a member applies without restart (its queue dropped and counted),
//! while a rollback is refused.

use crate::common;

use std::{
    path::Path,
    time::{Duration, SystemTime},
};

use matrix_sdk::{
    Client, RoomState,
    ruma::{OwnedRoomId, RoomId, api::client::room::create_room::v3::Request as CreateRoom},
};
use tocsin_node::{
    NodeHandle,
    policy::policies::{FederationList, Member, MemberRole, OperatorSecretKey, Timestamp, sign_list},
    ruma::{
        MilliSecondsSinceUnixEpoch, OwnedTransactionId, UserId,
        api::federation::{
            backfill::get_backfill,
            device::get_devices,
            directory::get_public_rooms,
            event::{get_event, get_room_state_ids},
            keys::get_keys,
            membership::prepare_join_event,
            query::get_profile_information,
            transactions::send_transaction_message,
        },
    },
};
use tocsin_tests::{cluster::Cluster, proxy::Proxy};

fn logs() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("tocsin_node=info"));
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_test_writer().try_init();
}

fn now() -> i64 {
    SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

/// Writes a list of `members` (name, pinned address) as `version`, signed with `key`.
fn write_list(path: &Path, key: &OperatorSecretKey, version: u64, members: &[(&str, Option<String>)]) {
    let list = FederationList {
        name: "Test valley".into(),
        version,
        issued: Timestamp(now() - 3600),
        expires: Timestamp(now() + 30 * 24 * 3600),
        members: members
            .iter()
            .map(|(name, address)| {
                let mut m = Member::new(name, "Agency", MemberRole::Municipality);
                m.address = address.clone();
                m
            })
            .collect(),
    };
    let signed = sign_list(&list, key).expect("the list signs");
    std::fs::write(path, signed.to_toml()).expect("list written");
}

/// A transaction with nothing in it, signed by `from`, to `to`.
async fn empty_txn(from: &NodeHandle, to: &NodeHandle) -> tocsin_node::Result<()> {
    let request = send_transaction_message::v1::Request::new(
        OwnedTransactionId::from(format!("policy-test-{}", now())),
        from.server_name.clone(),
        MilliSecondsSinceUnixEpoch::now(),
    );
    from.services.federation_client.send(&to.server_name, request).await.map(|_| ())
}

fn assert_policy_403(result: tocsin_node::Result<impl std::fmt::Debug>, what: &str) {
    match result {
        Err(tocsin_node::Error::Remote(e)) => {
            assert_eq!(e.status_code.as_u16(), 403, "{what}: {e:?}");
            assert!(format!("{e:?}").contains("federation_list"), "{what}: the refusal names the rule: {e:?}");
        }
        other => panic!("{what}: expected 403 M_FORBIDDEN, got {other:?}"),
    }
}

async fn accept_invite(client: &Client, room_id: &RoomId) {
    common::eventually(client, 10, || async { client.get_room(room_id).filter(|r| r.state() == RoomState::Invited) })
        .await;
    client.join_room_by_id(room_id).await.expect("join over federation");
}

/// POSTs to the client API as `client` and returns status and JSON body.
async fn post(client: &Client, base: &str, path: &str, body: serde_json::Value) -> (u16, serde_json::Value) {
    call(reqwest::Method::POST, client, base, path, body).await
}

async fn put(client: &Client, base: &str, path: &str, body: serde_json::Value) -> (u16, serde_json::Value) {
    call(reqwest::Method::PUT, client, base, path, body).await
}

async fn call(
    method: reqwest::Method,
    client: &Client,
    base: &str,
    path: &str,
    body: serde_json::Value,
) -> (u16, serde_json::Value) {
    let token = client.access_token().expect("logged in");
    let response = reqwest::Client::new()
        .request(method, format!("{base}{path}"))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .expect("request sent");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or_default())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_federation_list_decides_who_federates() {
    logs();
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = Cluster::plan(dir.path(), &["a.test", "b.test", "c.test"]).unwrap();
    let (secret, public) = tocsin_node::policy::policies::generate_operator_key();
    let key = OperatorSecretKey::from_text(&secret).unwrap();
    let pub_path = dir.path().join("operator.pub");
    std::fs::write(&pub_path, &public).unwrap();

    // A reaches B only through the list's pinned address (a proxy the test can cut): the
    // config pin for B is removed, so the list's pin is the one in force.
    let proxy = Proxy::start("127.0.0.1:0".parse().unwrap(), cluster.members[1].federation_addr).await.unwrap();
    let a_list = dir.path().join("a-federation.toml");
    let b_list = dir.path().join("b-federation.toml");
    write_list(&a_list, &key, 1, &[("a.test", None), ("b.test", Some(proxy.addr.to_string()))]);
    write_list(&b_list, &key, 1, &[("a.test", None), ("b.test", None)]);
    cluster.members[0].config.federation_pins.remove("b.test");
    for (i, list) in [(0, &a_list), (1, &b_list)] {
        cluster.members[i].config.federation_list = Some(list.clone());
        cluster.members[i].config.federation_operator_keys = vec![pub_path.clone()];
    }
    // C has no list: it would federate with anyone.
    let a = cluster.start(0).await.unwrap();
    let b = cluster.start(1).await.unwrap();
    let c = cluster.start(2).await.unwrap();
    let alice = common::user(&a, "alice").await;
    let bob = common::user(&b, "bob").await;
    let carol = common::user(&c, "carol").await;

    // A <-> B: a shared room works.
    let mut request = CreateRoom::new();
    request.invite = vec![bob.user_id().unwrap().to_owned()];
    let room_id: OwnedRoomId = alice.create_room(request).await.expect("room created").room_id().to_owned();
    accept_invite(&bob, &room_id).await;
    let sent = put(
        &alice,
        &a.base_url(),
        &format!("/_matrix/client/v3/rooms/{room_id}/send/m.room.message/t1"),
        serde_json::json!({"msgtype": "m.text", "body": "hello lakeside"}),
    )
    .await;
    assert_eq!(sent.0, 200, "{sent:?}");
    let event_id = sent.1["event_id"].as_str().unwrap().to_owned();
    let event_id = tocsin_node::ruma::EventId::parse(&event_id).unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !b.services.rooms.knows(&event_id).unwrap_or(false) {
        assert!(tokio::time::Instant::now() < deadline, "B never got A's message");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // C -> A: refused with 403 before any handler, whatever the endpoint.
    let alice_id = alice.user_id().unwrap().to_owned();
    let profile = get_profile_information::v1::Request::new(alice_id.clone());
    assert_policy_403(c.services.federation_client.send(&a.server_name, profile).await, "C's profile query");
    assert_policy_403(empty_txn(&c, &a).await, "C's transaction");
    let fed = &c.services.federation_client;
    let dest = &a.server_name;
    let make_join = prepare_join_event::v1::Request::new(room_id.clone(), carol.user_id().unwrap().to_owned());
    assert_policy_403(fed.send(dest, make_join).await, "C's make_join");
    assert_policy_403(fed.send(dest, get_event::v1::Request::new(event_id.clone())).await, "C's event fetch");
    let state_ids = get_room_state_ids::v1::Request::new(event_id.clone(), room_id.clone());
    assert_policy_403(fed.send(dest, state_ids).await, "C's state_ids");
    let backfill = get_backfill::v1::Request::new(room_id.clone(), vec![event_id.clone()], 10u32.into());
    assert_policy_403(fed.send(dest, backfill).await, "C's backfill");
    assert_policy_403(fed.send(dest, get_devices::v1::Request::new(alice_id.clone())).await, "C's device query");
    let keys = get_keys::v1::Request::new([(alice_id.clone(), Vec::new())].into());
    assert_policy_403(fed.send(dest, keys).await, "C's key query");
    assert_policy_403(fed.send(dest, get_public_rooms::v1::Request::new()).await, "C's publicRooms");

    // A's user cannot invite C's user: 403 naming the rule.
    let carol_id = carol.user_id().unwrap().to_owned();
    let (status, body) = post(
        &alice,
        &a.base_url(),
        &format!("/_matrix/client/v3/rooms/{room_id}/invite"),
        serde_json::json!({"user_id": carol_id}),
    )
    .await;
    assert_eq!(status, 403, "{body}");
    assert_eq!(body["errcode"], "M_FORBIDDEN");
    assert!(body["error"].as_str().unwrap_or("").contains("`federation_list`"), "{body}");

    // ... nor join a room through C.
    let carol_room = carol.create_room(CreateRoom::new()).await.expect("room on C").room_id().to_owned();
    let (status, body) = post(
        &alice,
        &a.base_url(),
        &format!("/_matrix/client/v3/join/{carol_room}?server_name=c.test"),
        serde_json::json!({}),
    )
    .await;
    assert_eq!(status, 403, "{body}");
    assert!(body["error"].as_str().unwrap_or("").contains("`federation_list`"), "{body}");

    // A backlog for B on A: the link A -> B is cut, alice keeps talking.
    proxy.set_cut(true);
    for i in 0..3 {
        let (status, body) = put(
            &alice,
            &a.base_url(),
            &format!("/_matrix/client/v3/rooms/{room_id}/send/m.room.message/cut{i}"),
            serde_json::json!({"msgtype": "m.text", "body": format!("while cut {i}")}),
        )
        .await;
        assert_eq!(status, 200, "{body}");
    }
    let queued = a.services.sender.backlog().unwrap().into_iter().find(|d| d.destination == "b.test");
    let queued = queued.expect("B has a backlog on A");
    assert!(queued.pdus >= 3, "{queued:?}");

    // A new list without B: applied from disk, no restart, no signal.
    let b_server: &UserId = bob.user_id().unwrap();
    assert_eq!(b_server.server_name(), "b.test");
    write_list(&a_list, &key, 2, &[("a.test", None)]);
    let written = tokio::time::Instant::now();
    loop {
        match empty_txn(&b, &a).await {
            Err(tocsin_node::Error::Remote(e)) if e.status_code.as_u16() == 403 => break,
            other => {
                assert!(written.elapsed() < Duration::from_secs(6), "B still accepted after 6 s: {other:?}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    assert_policy_403(empty_txn(&b, &a).await, "B's transaction after its removal");
    // The list is swapped first (refusing B at once), then B's queue is dropped: wait for that.
    let backlog_of_b = || a.services.sender.backlog().unwrap().into_iter().find(|d| d.destination == "b.test");
    let dropped_by = tokio::time::Instant::now() + Duration::from_secs(5);
    while backlog_of_b().is_some_and(|d| d.pdus > 0) && tokio::time::Instant::now() < dropped_by {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let dropped = backlog_of_b().expect("the dropped count stays visible");
    assert_eq!(dropped.pdus, 0, "{dropped:?}");
    assert!(dropped.dropped >= 3, "{dropped:?}");
    assert_eq!(a.services.policy.federation.list().unwrap().version, 2);

    // A rollback to version 1 (validly signed) is refused; version 2 stays in force.
    write_list(&a_list, &key, 1, &[("a.test", None), ("b.test", Some(proxy.addr.to_string()))]);
    tokio::time::sleep(tocsin_node::policy::watch::POLL_INTERVAL * 3).await;
    assert_eq!(a.services.policy.federation.list().unwrap().version, 2);
    let state = a.services.policy.federation.state().unwrap();
    assert!(state.last_reload_error.as_deref().unwrap_or("").contains("rollback"), "{state:?}");
    assert_policy_403(empty_txn(&b, &a).await, "B's transaction after the refused rollback");

    for node in [a, b, c] {
        node.shutdown().await;
    }
}

/// A node refuses to start on a list whose signature does not verify, and says why.
#[tokio::test]
async fn a_forged_list_stops_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let (secret, public) = tocsin_node::policy::policies::generate_operator_key();
    let key = OperatorSecretKey::from_text(&secret).unwrap();
    let pub_path = dir.path().join("operator.pub");
    std::fs::write(&pub_path, &public).unwrap();
    let list = dir.path().join("federation.toml");
    write_list(&list, &key, 1, &[("tocsin.test", None)]);
    let text = std::fs::read_to_string(&list).unwrap().replace("version = 1", "version = 9");
    std::fs::write(&list, text).unwrap();
    let mut config = common::config(&dir.path().join("node"), "tocsin.test");
    config.federation_list = Some(list);
    config.federation_operator_keys = vec![pub_path];
    let err = tocsin_node::Node::start(config).await.err().expect("the node must not start");
    let err = format!("{err:#}");
    assert!(err.contains("does not match its content"), "{err}");
}
