//! `timestamp_to_event` (jump to a date): over the client API the answer is the nearest event
//! the caller may see in the direction asked; over federation only servers in the room ask.

use std::time::Duration;

use matrix_sdk::ruma::{
    MilliSecondsSinceUnixEpoch, UInt,
    api::{Direction, federation::event::get_event_by_timestamp},
};
use serde_json::{Value, json};

use crate::{
    api::{Api, enc},
    common::start,
    fed::{shared_room, two_nodes, user_on},
};

async fn nearest(api: &Api, token: &str, room: &str, ts: u64, dir: &str) -> Reply {
    api.get(&format!("/_matrix/client/v1/rooms/{}/timestamp_to_event?ts={ts}&dir={dir}", enc(room)), Some(token)).await
}

type Reply = (u16, Value);

/// The room's events as `token` sees them, oldest first: (ts, event id).
async fn timeline(api: &Api, token: &str, room: &str) -> Vec<(u64, String)> {
    let mut events: Vec<(u64, String)> = api
        .messages(room, token)
        .await
        .iter()
        .map(|e| (e["origin_server_ts"].as_u64().unwrap(), e["event_id"].as_str().unwrap().to_owned()))
        .collect();
    events.reverse();
    events
}

#[tokio::test]
async fn jump_to_date_finds_the_nearest_visible_event() {
    let dir = tempfile::tempdir().unwrap();
    let node = start(dir.path(), |c| c.encrypt_new_rooms = false).await;
    let api = Api::new(&node);
    let alice = api.user(&node, "alice").await;
    let bob = api.user(&node, "bob").await;
    let room = api
        .create_room(&alice, json!({ "initial_state": [{ "type": "m.room.history_visibility", "state_key": "", "content": { "history_visibility": "joined" } }] }))
        .await;
    for i in 0..40 {
        api.send_text(&room, &alice, &format!("t{i}"), &format!("water level report {i}")).await;
        tokio::time::sleep(Duration::from_millis(3)).await;
    }
    let events = timeline(&api, &alice, &room).await;
    let (first, last) = (events[0].0, events[events.len() - 1].0);

    let mut probes = vec![first - 1, last + 1];
    for (ts, _) in events.iter().step_by(3) {
        probes.extend([ts - 1, *ts, ts + 1]);
    }
    for t in probes {
        let forward = events.iter().find(|(ts, _)| *ts >= t).map(|(_, id)| id.clone());
        let backward = events.iter().rev().find(|(ts, _)| *ts <= t).map(|(_, id)| id.clone());
        for (dir, want) in [("f", forward), ("b", backward)] {
            let (status, body) = nearest(&api, &alice, &room, t, dir).await;
            match want {
                Some(id) => {
                    assert_eq!(status, 200, "{dir} from {t}: {body}");
                    assert_eq!(body["event_id"].as_str(), Some(id.as_str()), "{dir} from {t}");
                    let ts = body["origin_server_ts"].as_u64().unwrap();
                    assert!(if dir == "f" { ts >= t } else { ts <= t });
                }
                None => {
                    assert_eq!((status, body["errcode"].as_str()), (404, Some("M_NOT_FOUND")), "{dir} from {t}: {body}")
                }
            }
        }
    }

    // Bob joins later under `joined` history visibility: nothing before his join is his to find.
    api.invite_and_join(&room, &alice, "@bob:tocsin.test", &bob).await;
    let before_join = events[10].0;
    let (status, body) = nearest(&api, &bob, &room, before_join, "b").await;
    assert_eq!((status, body["errcode"].as_str()), (404, Some("M_NOT_FOUND")), "{body}");
    let (status, body) = nearest(&api, &bob, &room, before_join, "f").await;
    assert_eq!(status, 200, "{body}");
    let found = body["event_id"].as_str().unwrap();
    assert!(!events.iter().any(|(_, id)| id == found), "bob found a message from before his join");
    // Someone outside the room is refused.
    let carol = api.user(&node, "carol").await;
    let (status, _) = nearest(&api, &carol, &room, last, "b").await;
    assert_eq!(status, 403);
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_in_the_room_asks_for_the_event_nearest_a_time() {
    let (_dir, city, county) = two_nodes("city.test", "county.test").await;
    let alice = user_on(&city, "alice").await;
    let bob = user_on(&county, "bob").await;
    let shared = shared_room(&alice, &[&bob]).await;
    let private = alice.create_room(Default::default()).await.unwrap().room_id().to_owned();
    let now = MilliSecondsSinceUnixEpoch(UInt::try_from(u64::MAX >> 12).unwrap());

    let request = get_event_by_timestamp::v1::Request::new(shared.clone(), now, Direction::Backward);
    let found =
        county.services.federation_client.send("city.test".try_into().unwrap(), request).await.expect("answered");
    // The newest event of the room as alice's node serves it (bob's join).
    let api = Api::new(&city);
    let token = alice.access_token().unwrap();
    let newest = timeline(&api, &token, shared.as_str()).await.pop().unwrap();
    assert_eq!(found.event_id.as_str(), newest.1);

    let request = get_event_by_timestamp::v1::Request::new(private, now, Direction::Backward);
    let refused = county.services.federation_client.send("city.test".try_into().unwrap(), request).await;
    assert!(refused.is_err(), "a server with nobody in the room is refused");
    city.shutdown().await;
    county.shutdown().await;
}
