//! Alarms that arrive as history: a node joining a room backfills what was said before, and an
//! alarm in it from someone the federation list does not let raise it is rejected like one
//! that arrives live: never in the timeline, never tracked, never rung.

use serde_json::json;

use super::{send, setup};
use crate::{common, fed};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_backfilled_alarm_from_a_peer_that_may_not_raise_it_stays_out_of_the_timeline() {
    let s = setup().await;
    // Node b has no node policy: its user raises an alarm the list does not allow b (a
    // misconfigured or hostile peer), in a room of b's, before anyone of node a is in it.
    let rogue = fed::user_on(&s.b, "rogue").await;
    let chief = fed::user_on(s.a(), "chief").await;
    let room = fed::shared_room(&rogue, &[]).await;
    let fake =
        json!({"msgtype": "m.text", "body": "FAKE EVACUATION", "org.tocsin.alarm": {"id": "r1", "level": "critical"}});
    let (status, body) = send(&rogue, &s.b.base_url(), &room, fake).await;
    assert_eq!(status, 200, "node b has no policy against it: {body}");
    let fake_id = body["event_id"].as_str().unwrap().to_owned();
    let (status, _) = send(&rogue, &s.b.base_url(), &room, json!({"msgtype": "m.text", "body": "before"})).await;
    assert_eq!(status, 200);

    // The chief joins; node a fetches the room's history from b by /backfill.
    rogue.get_room(&room).unwrap().invite_user_by_id(chief.user_id().unwrap()).await.unwrap();
    fed::accept_invite(&chief, &room).await;
    common::eventually(&chief, 20, || async {
        fed::texts(&chief, &room).await.iter().any(|t| t == "before").then_some(())
    })
    .await;

    // The history is there, the alarm is not: kept as rejected (so it is not fetched again),
    // out of the timeline, not tracked.
    let texts = fed::texts(&chief, &room).await;
    assert!(!texts.iter().any(|t| t.contains("FAKE")), "the chief must not see the alarm: {texts:?}");
    let fake_id = tocsin_node::ruma::OwnedEventId::try_from(fake_id).unwrap();
    let stored = s.a().services.rooms.stored_event(&fake_id).unwrap().expect("the backfilled alarm is known");
    assert!(stored.rejected && stored.outlier, "rejected, out of the timeline");
    assert!(s.a().services.alarms.records().unwrap().is_empty(), "no alarm is tracked");
    // Nor can a client fetch it by id: a rejected event never entered the room.
    let fetched = chief.get_room(&room).unwrap().event(&fake_id, None).await;
    assert!(fetched.is_err(), "a rejected event is not served: {fetched:?}");
}
