//! A change wakes only the long-polls it concerns. Twenty users wait on `/sync`, each in a room
//! of their own; messages and typing in another room reach that room's member at once and
//! leave the twenty asleep (their requests do not return, and the node's wake-up counter shows
//! it did no work for them). A message in one of their rooms still wakes its user.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::task::JoinHandle;

use crate::{
    api::{Api, enc},
    common,
};

const IDLE: usize = 20;

/// `since` from a `timeout=0` sync.
async fn next_batch(api: &Api, token: &str) -> String {
    let (status, body) = api.get("/_matrix/client/v3/sync?timeout=0", Some(token)).await;
    assert_eq!(status, 200, "{body}");
    body["next_batch"].as_str().expect("next_batch").to_owned()
}

/// A long-poll from `since`, answered when the node has something or after `timeout_ms`.
fn long_poll(api: &Api, token: &str, since: &str, timeout_ms: u64) -> JoinHandle<(Instant, Value)> {
    let (api, token, since) = (api.clone(), token.to_owned(), since.to_owned());
    tokio::spawn(async move {
        let path = format!("/_matrix/client/v3/sync?timeout={timeout_ms}&since={}", enc(&since));
        let (status, body) = api.get(&path, Some(&token)).await;
        assert_eq!(status, 200, "{body}");
        (Instant::now(), body)
    })
}

fn room_events(body: &Value, room: &str) -> usize {
    body["rooms"]["join"][room]["timeline"]["events"].as_array().map_or(0, Vec::len)
}

fn has_typing(body: &Value, room: &str) -> bool {
    body["rooms"]["join"][room]["ephemeral"]["events"]
        .as_array()
        .is_some_and(|events| events.iter().any(|e| e["type"] == "m.typing"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_message_wakes_only_the_long_polls_of_its_room() {
    let dir = tempfile::tempdir().unwrap();
    let node = common::start(dir.path(), |c| {
        c.rate_limits.enabled = false;
        c.encrypt_new_rooms = false;
    })
    .await;
    let api = Api::new(&node);
    let alice = api.user(&node, "alice").await;
    let bob = api.user(&node, "bob").await;
    let ops = api.create_room(&alice, json!({"preset": "public_chat", "name": "Ops"})).await;
    let (status, body) = api.post(&format!("/_matrix/client/v3/join/{}", enc(&ops)), Some(&bob), &json!({})).await;
    assert_eq!(status, 200, "{body}");

    let mut idle = Vec::new();
    for i in 0..IDLE {
        let token = api.user(&node, &format!("idle{i}")).await;
        let room = api.create_room(&token, json!({"name": format!("Own {i}")})).await;
        idle.push((token, room));
    }
    let mut idle_polls = Vec::new();
    for (token, _) in &idle {
        let since = next_batch(&api, token).await;
        idle_polls.push(long_poll(&api, token, &since, 30_000));
    }
    let wakes = &node.services.sync.wakes;
    common::eventually_until(10, || async { wakes.waiting() >= IDLE as u64 }).await;

    // Ten messages and a typing notice in Ops, each waited for by bob's long-poll.
    let woken_before = wakes.woken_total();
    let mut since = next_batch(&api, &bob).await;
    for i in 0..10 {
        let poll = long_poll(&api, &bob, &since, 30_000);
        common::eventually_until(10, || async { wakes.is_waiting(&user_id(&node, "bob")) }).await;
        let (status, body) = api.send_text(&ops, &alice, &format!("t{i}"), "status").await;
        assert_eq!(status, 200, "{body}");
        let (_, body) = tokio::time::timeout(Duration::from_secs(10), poll).await.expect("bob is woken").unwrap();
        assert_eq!(room_events(&body, &ops), 1, "bob's long-poll holds the message: {body}");
        since = body["next_batch"].as_str().unwrap().to_owned();
    }
    let poll = long_poll(&api, &bob, &since, 30_000);
    common::eventually_until(10, || async { wakes.is_waiting(&user_id(&node, "bob")) }).await;
    let path = format!("/_matrix/client/v3/rooms/{}/typing/{}", enc(&ops), enc(user_id(&node, "alice").as_str()));
    let (status, body) = api.put(&path, Some(&alice), &json!({"typing": true, "timeout": 10_000})).await;
    assert_eq!(status, 200, "{body}");
    let (_, body) = tokio::time::timeout(Duration::from_secs(10), poll).await.expect("bob is woken").unwrap();
    assert!(has_typing(&body, &ops), "bob sees alice typing: {body}");
    let woken = wakes.woken_total() - woken_before;
    // Bob's long-poll, once per message and once for the typing notice (a second wake of the
    // same poll, for a change its build already held, is allowed).
    assert!(woken <= 22, "{woken} long-polls woken for 11 changes seen by one user");

    assert!(idle_polls.iter().all(|p| !p.is_finished()), "no idle long-poll returned");

    // The first idle user's own room still wakes its user, promptly.
    let (token, room) = &idle[0];
    let sent = Instant::now();
    let (status, body) = api.send_text(room, token, "own", "hello").await;
    assert_eq!(status, 200, "{body}");
    let first = idle_polls.remove(0);
    let (answered, body) = tokio::time::timeout(Duration::from_secs(10), first).await.expect("woken").unwrap();
    assert_eq!(room_events(&body, room), 1, "{body}");
    assert!(answered.duration_since(sent) < Duration::from_secs(5), "answered at once, not at the timeout");
    assert!(idle_polls.iter().all(|p| !p.is_finished()), "the others still sleep");
    idle_polls.iter().for_each(JoinHandle::abort);
}

fn user_id(node: &tocsin_node::NodeHandle, name: &str) -> matrix_sdk::ruma::OwnedUserId {
    matrix_sdk::ruma::UserId::parse(format!("@{name}:{}", node.services.server_name)).unwrap()
}
