//! Threads from a stock client: replies with `rel_type: m.thread` make their root a thread, the
//! root carries its summary (latest reply, count, whether you took part), and `/threads` lists
//! the room's threads by latest activity, all or only yours, page by page.

use matrix_sdk::{
    Client,
    ruma::{
        OwnedEventId, RoomId,
        api::client::{
            room::get_room_event,
            threads::get_threads::v1::{IncludeThreads, Request as Threads},
        },
        events::room::message::RoomMessageEventContent,
    },
};
use serde_json::{Value, json};

use crate::common::{eventually, start, user};

async fn reply(client: &Client, room: &RoomId, root: &OwnedEventId, text: &str) -> OwnedEventId {
    let content = json!({
        "msgtype": "m.text",
        "body": text,
        "m.relates_to": { "rel_type": "m.thread", "event_id": root, "is_falling_back": true, "m.in_reply_to": { "event_id": root } },
    });
    let room = client.get_room(room).expect("joined");
    room.send_raw("m.room.message", content).await.expect("reply sent").response.event_id
}

fn bodies(threads: &[matrix_sdk::ruma::serde::Raw<matrix_sdk::ruma::events::AnyTimelineEvent>]) -> Vec<String> {
    threads
        .iter()
        .map(|t| t.get_field::<Value>("content").unwrap().unwrap()["body"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn threads_are_summarised_and_listed_by_activity() {
    let dir = tempfile::tempdir().unwrap();
    let node = start(dir.path(), |c| c.encrypt_new_rooms = false).await;
    let alice = user(&node, "alice").await;
    let bob = user(&node, "bob").await;
    let carol = user(&node, "carol").await;
    let room = alice.create_room(Default::default()).await.unwrap();
    let room_id = room.room_id().to_owned();
    room.invite_user_by_id(bob.user_id().unwrap()).await.unwrap();
    eventually(&bob, 10, || async { bob.get_room(&room_id).map(|_| ()) }).await;
    bob.join_room_by_id(&room_id).await.unwrap();

    let sandbags = room.send(RoomMessageEventContent::text_plain("Sandbag supply")).await.unwrap().response.event_id;
    let roads = room.send(RoomMessageEventContent::text_plain("Road closures")).await.unwrap().response.event_id;
    reply(&bob, &room_id, &sandbags, "2,000 at the depot").await;
    reply(&alice, &room_id, &roads, "B12 closed at the bridge").await;
    reply(&bob, &room_id, &sandbags, "truck leaves at 10").await;
    let latest = reply(&alice, &room_id, &sandbags, "thanks, confirmed").await;

    // The root as bob fetches it carries the thread summary.
    let root = bob.send(get_room_event::v3::Request::new(room_id.clone(), sandbags.clone())).await.unwrap();
    let summary = &root.event.get_field::<Value>("unsigned").unwrap().unwrap()["m.relations"]["m.thread"];
    assert_eq!(summary["count"], 3, "{summary}");
    assert_eq!(summary["current_user_participated"], true);
    assert_eq!(summary["latest_event"]["event_id"], latest.as_str());
    assert_eq!(summary["latest_event"]["content"]["body"], "thanks, confirmed");
    // A reply is not a root; a message without replies has no summary.
    let plain = room.send(RoomMessageEventContent::text_plain("no thread here")).await.unwrap().response.event_id;
    let plain = bob.send(get_room_event::v3::Request::new(room_id.clone(), plain)).await.unwrap();
    assert!(plain.event.get_field::<Value>("unsigned").unwrap().unwrap().get("m.relations").is_none());

    // All threads, most recently active first; bob took part in one.
    let all = bob.send(Threads::new(room_id.clone())).await.unwrap();
    assert_eq!(bodies(&all.chunk), ["Sandbag supply", "Road closures"]);
    let mut mine = Threads::new(room_id.clone());
    mine.include = IncludeThreads::Participated;
    assert_eq!(bodies(&bob.send(mine).await.unwrap().chunk), ["Sandbag supply"]);
    // Road closures gets a newer reply and moves to the top.
    reply(&bob, &room_id, &roads, "B12 open again").await;
    let all = bob.send(Threads::new(room_id.clone())).await.unwrap();
    assert_eq!(bodies(&all.chunk), ["Road closures", "Sandbag supply"]);

    // Pages of one.
    let mut first = Threads::new(room_id.clone());
    first.limit = Some(1u32.into());
    let page = bob.send(first).await.unwrap();
    assert_eq!(bodies(&page.chunk), ["Road closures"]);
    let mut second = Threads::new(room_id.clone());
    second.limit = Some(1u32.into());
    second.from = page.next_batch;
    assert_eq!(bodies(&bob.send(second).await.unwrap().chunk), ["Sandbag supply"]);

    // Someone outside the room sees no threads.
    let err = carol.send(Threads::new(room_id.clone())).await.expect_err("refused");
    assert_eq!(err.as_client_api_error().map(|e| e.status_code.as_u16()), Some(403));
    node.shutdown().await;
}
