//! Push to phones: real matrix-sdk clients set pushers, real nodes push to a gateway that follows
//! the Push Gateway API to the letter, and alarms ring through a room mute where policy says so.

use std::{path::Path, time::Duration};

use matrix_sdk::{
    Client, Room,
    notification_settings::RoomNotificationMode,
    ruma::{
        OwnedEventId,
        api::client::{
            push::{Pusher, PusherIds, PusherInit, PusherKind, get_pushers, get_pushrules_all, set_pushrule},
            room::create_room::v3::Request as CreateRoom,
        },
        api::push_gateway::send_event_notification::v1::NotificationPriority,
        events::room::message::RoomMessageEventContent,
        push::{
            Action, EventMatchConditionData, HighlightTweakValue, HttpPusherData, NewConditionalPushRule, NewPushRule,
            PushFormat, SoundTweakValue, Tweak,
        },
    },
};
use serde_json::json;
use tocsin_events::{AlarmBlock, AlarmLevel};
use tocsin_node::NodeHandle;

use crate::{
    common::{self, eventually, sync},
    push_gateway::Gateway,
};

mod badge;

const APP_ID: &str = "org.tocsin.test.ios";

fn policy(ring_in_muted_rooms: bool) -> String {
    format!(
        r#"
[room_defaults]
encryption = false

[alarms]
ring_in_muted_rooms = {ring_in_muted_rooms}

[[role]]
name = "chief"
power_level = 100
may_send_alarms = true
alarm_levels = ["critical", "urgent", "info"]

[[account]]
localpart = "alice"
display_name = "Alice (fire chief)"
roles = ["chief"]
password = "not used by this test"
"#
    )
}

/// A node whose outbound rules allow loopback (the gateway), with a policy where alice may raise
/// alarms.
pub(crate) async fn node(dir: &Path, ring_in_muted_rooms: bool) -> NodeHandle {
    let policy_path = dir.join("policy.toml");
    std::fs::write(&policy_path, policy(ring_in_muted_rooms)).unwrap();
    common::start(&dir.join("data"), |c| {
        c.policy = Some(policy_path.clone());
        c.encrypt_new_rooms = false;
        c.outbound_ip_allow = vec!["127.0.0.0/8".parse().unwrap()];
    })
    .await
}

/// Alice's room with bob joined.
pub(crate) async fn room_with_bob(alice: &Client, bob: &Client) -> (Room, Room) {
    let room = alice.create_room(CreateRoom::new()).await.unwrap();
    let bob_room = invite_and_join(&room, bob).await;
    (room, bob_room)
}

/// `member` invited to `room`, then joined once their client has seen the invite.
async fn invite_and_join(room: &Room, member: &Client) -> Room {
    room.invite_user_by_id(member.user_id().unwrap()).await.unwrap();
    let room_id = room.room_id().to_owned();
    eventually(member, 5, || async {
        member.get_room(&room_id).filter(|r| r.state() == matrix_sdk::RoomState::Invited)
    })
    .await;
    member.join_room_by_id(&room_id).await.unwrap()
}

/// Gives `client` its own override rule: notify for every event of type `kind`.
async fn notify_on_every(client: &Client, rule_id: &str, kind: &str) {
    let rule = NewConditionalPushRule::new(
        rule_id.to_owned(),
        vec![EventMatchConditionData::new("type".to_owned(), kind.to_owned()).into()],
        vec![Action::Notify],
    );
    client.send(set_pushrule::v3::Request::new(NewPushRule::Override(rule))).await.unwrap();
}

/// Alice and Bob in a room of Alice's, Bob's phone registered with `gateway` as "bob-phone":
/// alice, bob, alice's room, bob's room.
pub(crate) async fn bob_with_a_phone(node: &NodeHandle, gateway: &Gateway) -> (Client, Client, Room, Room) {
    let alice = common::user(node, "alice").await;
    let bob = common::user(node, "bob").await;
    let (room, bob_room) = room_with_bob(&alice, &bob).await;
    bob.pusher().set(pusher(gateway, "bob-phone"), false).await.unwrap();
    (alice, bob, room, bob_room)
}

pub(crate) fn pusher(gateway: &Gateway, pushkey: &str) -> Pusher {
    // The app asks for full content (no `format`): the node sends event_id_only anyway.
    let data = HttpPusherData::new(gateway.url());
    PusherInit {
        ids: PusherIds::new(pushkey.to_owned(), APP_ID.to_owned()),
        kind: PusherKind::Http(data),
        app_display_name: "Tocsin test".to_owned(),
        device_display_name: "phone".to_owned(),
        profile_tag: None,
        lang: "en".to_owned(),
    }
    .into()
}

async fn pushers(client: &Client) -> Vec<Pusher> {
    client.send(get_pushers::v3::Request::new()).await.expect("GET /pushers").pushers
}

pub(crate) async fn text(room: &Room, body: &str) -> OwnedEventId {
    room.send(RoomMessageEventContent::text_plain(body)).await.unwrap().response.event_id
}

async fn alarm(room: &Room, id: &str, level: AlarmLevel) -> OwnedEventId {
    let content = AlarmBlock::new(id, level).message("ALARM: levee breach at km 12", "<b>ALARM</b>: levee breach");
    room.send_raw("m.room.message", content).await.unwrap().response.event_id
}

#[tokio::test]
async fn a_message_pushes_to_the_other_member_with_counts_and_no_content() {
    let dir = tempfile::tempdir().unwrap();
    let node = node(dir.path(), true).await;
    let gateway = Gateway::start().await;
    let (_alice, bob, room, bob_room) = bob_with_a_phone(&node, &gateway).await;
    let listed = pushers(&bob).await;
    assert_eq!(listed.len(), 1);
    assert_eq!((listed[0].ids.app_id.as_str(), listed[0].ids.pushkey.as_str()), (APP_ID, "bob-phone"));

    let first = text(&room, "sandbags to the north dike").await;
    // Bob's own message must not push to bob; the next push is alice's second message.
    text(&bob_room, "on my way").await;
    let second = text(&room, "bring pumps").await;

    let got = gateway.wait_for(2, 10).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let got_after = gateway.received();
    assert_eq!(got_after.len(), 2, "exactly two pushes (none for bob's own message): {got_after:?}");
    assert_eq!(got[0].event_id.as_ref(), Some(&first));
    assert_eq!(got[1].event_id.as_ref(), Some(&second));
    for (n, notification) in got.iter().enumerate() {
        assert_eq!(notification.room_id.as_deref(), Some(room.room_id()));
        assert_eq!(u64::from(notification.counts.unread), n as u64 + 1, "unread count: {notification:?}");
        // event_id_only: nothing about the message leaves the node.
        assert!(notification.content.is_none() && notification.sender.is_none(), "{notification:?}");
        assert!(notification.event_type.is_none() && notification.room_name.is_none(), "{notification:?}");
        let device = &notification.devices[0];
        assert_eq!((device.app_id.as_str(), device.pushkey.as_str()), (APP_ID, "bob-phone"));
        assert_eq!(device.data.format, Some(PushFormat::EventIdOnly));
        assert!(device.pushkey_ts.is_some());
    }
    node.shutdown().await;
}

#[tokio::test]
async fn a_critical_alarm_rings_through_a_room_mute_and_info_does_not() {
    let dir = tempfile::tempdir().unwrap();
    let node = node(dir.path(), true).await;
    let gateway = Gateway::start().await;
    let (_alice, bob, room, _) = bob_with_a_phone(&node, &gateway).await;

    // Bob mutes the room the way Element does (matrix-sdk's notification settings).
    sync(&bob).await;
    let settings = bob.notification_settings().await;
    settings.set_room_notification_mode(room.room_id(), RoomNotificationMode::Mute).await.unwrap();

    // The node's alarm rules are served first among the override rules, above the master rule
    // and bob's mute, as server defaults; this node's policy forbids disabling them.
    let rules = bob.send(get_pushrules_all::v3::Request::new()).await.unwrap().global;
    let ids: Vec<&str> = rules.override_.iter().map(|r| r.rule_id.as_str()).collect();
    let critical = ids.iter().position(|id| *id == ".org.tocsin.rule.alarm_critical").expect("alarm rule served");
    let master = ids.iter().position(|id| *id == ".m.rule.master").unwrap();
    let mute = ids.iter().position(|id| *id == room.room_id().as_str()).expect("bob's mute rule");
    assert!(critical < master && critical < mute, "{ids:?}");
    assert!(rules.override_[critical].default);
    let http = reqwest::Client::new();
    let token = bob.access_token().unwrap();
    let disable = http
        .put(format!(
            "{}/_matrix/client/v3/pushrules/global/override/.org.tocsin.rule.alarm_critical/enabled",
            node.base_url()
        ))
        .bearer_auth(&token)
        .json(&json!({"enabled": false}))
        .send()
        .await
        .unwrap();
    assert_eq!(disable.status(), 403, "policy forces the alarm rule");
    let delete = http
        .delete(format!(
            "{}/_matrix/client/v3/pushrules/global/override/.org.tocsin.rule.alarm_critical",
            node.base_url()
        ))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert!(delete.status().is_client_error(), "a server-default rule cannot be deleted");

    text(&room, "muted chatter").await;
    alarm(&room, "a-info", AlarmLevel::Info).await;
    let critical_id = alarm(&room, "a-crit", AlarmLevel::Critical).await;

    // Delivery is in order, so the first push being the critical alarm means neither the plain
    // message nor the info alarm pushed.
    let got = gateway.wait_for(1, 10).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(gateway.received().len(), 1);
    let ring = &got[0];
    assert_eq!(ring.event_id.as_ref(), Some(&critical_id));
    assert_eq!(ring.prio, NotificationPriority::High);
    let tweaks = &ring.devices[0].tweaks;
    assert!(tweaks.iter().any(|t| matches!(t, Tweak::Sound(SoundTweakValue::Default))), "{tweaks:?}");
    assert!(tweaks.iter().any(|t| matches!(t, Tweak::Highlight(HighlightTweakValue::Yes))), "{tweaks:?}");
    assert_eq!(u64::from(ring.counts.unread), 1);

    // /sync counts the same: one notification, one highlight.
    let bob_room = bob.get_room(room.room_id()).unwrap();
    let counts = eventually(&bob, 5, || async {
        let c = bob_room.unread_notification_counts();
        (c.highlight_count > 0).then_some(c)
    })
    .await;
    assert_eq!((counts.notification_count, counts.highlight_count), (1, 1));
    node.shutdown().await;
}

/// The push worker evaluates an event once for all the members on the default rules whom it
/// does not name. A reaction notifies none of them, but it must still push to a member whose own
/// rule asks for reactions and to a member the reaction mentions.
#[tokio::test]
async fn a_reaction_pushes_to_a_member_whose_rule_asks_and_to_one_it_mentions_only() {
    let dir = tempfile::tempdir().unwrap();
    let node = node(dir.path(), true).await;
    let gateway = Gateway::start().await;
    let alice = common::user(&node, "alice").await;
    let room = alice.create_room(CreateRoom::new()).await.unwrap();
    let mut members = Vec::new();
    for name in ["bob", "carol", "dave", "erin"] {
        let member = common::user(&node, name).await;
        invite_and_join(&room, &member).await;
        members.push(member);
    }
    let (bob, carol) = (&members[0], &members[1]);
    bob.pusher().set(pusher(&gateway, "bob-phone"), false).await.unwrap();
    carol.pusher().set(pusher(&gateway, "carol-phone"), false).await.unwrap();
    notify_on_every(carol, "reactions", "m.reaction").await;

    let message = text(&room, "status check, all units").await;
    let react = |key: &str, mentions: serde_json::Value| {
        json!({
            "m.relates_to": {"rel_type": "m.annotation", "event_id": message, "key": key},
            "m.mentions": mentions,
        })
    };
    let plain = room.send_raw("m.reaction", react("👍", json!({}))).await.unwrap().response.event_id;
    let mentioning = room
        .send_raw("m.reaction", react("👀", json!({"user_ids": [bob.user_id().unwrap()]})))
        .await
        .unwrap()
        .response
        .event_id;

    gateway.wait_for(5, 10).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut got: Vec<(String, OwnedEventId)> = gateway
        .received()
        .into_iter()
        .map(|n| (n.devices[0].pushkey.clone(), n.event_id.expect("event_id_only pushes name the event")))
        .collect();
    got.sort();
    let mut want = vec![
        ("bob-phone".to_owned(), message.clone()),
        ("carol-phone".to_owned(), message),
        ("carol-phone".to_owned(), plain),
        ("bob-phone".to_owned(), mentioning.clone()),
        ("carol-phone".to_owned(), mentioning),
    ];
    want.sort();
    assert_eq!(
        got, want,
        "the message pushes to both; the plain reaction only to carol (her rule); the mention to bob too"
    );
    node.shutdown().await;
}

/// A membership change is evaluated only for the user it changes, and only when someone else
/// made it (as Synapse does): a member whose own rule asks for every membership event is not
/// pushed for another user's join or invite, while the invitee is. Splitting the members anew for
/// every join had made filling a 5,000-member room millions of member look-ups, which an alarm
/// raised next waited behind.
#[tokio::test]
async fn a_membership_change_pushes_only_to_the_user_it_changes() {
    let dir = tempfile::tempdir().unwrap();
    let node = node(dir.path(), true).await;
    let gateway = Gateway::start().await;
    let alice = common::user(&node, "alice").await;
    let carol = common::user(&node, "carol").await;
    let erin = common::user(&node, "erin").await;
    let frank = common::user(&node, "frank").await;
    let (room, _) = room_with_bob(&alice, &carol).await;
    let room_id = room.room_id().to_owned();
    carol.pusher().set(pusher(&gateway, "carol-phone"), false).await.unwrap();
    frank.pusher().set(pusher(&gateway, "frank-phone"), false).await.unwrap();
    notify_on_every(&carol, "memberships", "m.room.member").await;

    // Erin joins a public room of her own accord; frank is invited by alice.
    room.send_state_event(matrix_sdk::ruma::events::room::join_rules::RoomJoinRulesEventContent::new(
        matrix_sdk::ruma::events::room::join_rules::JoinRule::Public,
    ))
    .await
    .unwrap();
    erin.join_room_by_id(&room_id).await.unwrap();
    room.invite_user_by_id(frank.user_id().unwrap()).await.unwrap();
    let message = text(&room, "all units, report").await;

    gateway.wait_for(2, 10).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let got: Vec<(String, String)> = gateway
        .received()
        .into_iter()
        .map(|n| (n.devices[0].pushkey.clone(), n.event_id.map(|e| e.to_string()).unwrap_or_default()))
        .collect();
    let carols: Vec<&String> = got.iter().filter(|(k, _)| k == "carol-phone").map(|(_, e)| e).collect();
    assert_eq!(carols, [&message.to_string()], "carol is pushed for the message only: {got:?}");
    let franks = got.iter().filter(|(k, _)| k == "frank-phone").count();
    assert_eq!(franks, 1, "frank is pushed for his invite: {got:?}");
    node.shutdown().await;
}

#[tokio::test]
async fn where_policy_keeps_mutes_a_muted_room_stays_silent_for_alarms() {
    let dir = tempfile::tempdir().unwrap();
    let node = node(dir.path(), false).await;
    let gateway = Gateway::start().await;
    let alice = common::user(&node, "alice").await;
    let bob = common::user(&node, "bob").await;
    let (room, _) = room_with_bob(&alice, &bob).await;
    let (loud_room, _) = room_with_bob(&alice, &bob).await;
    bob.pusher().set(pusher(&gateway, "bob-phone"), false).await.unwrap();
    sync(&bob).await;
    bob.notification_settings()
        .await
        .set_room_notification_mode(room.room_id(), RoomNotificationMode::Mute)
        .await
        .unwrap();

    alarm(&room, "muted", AlarmLevel::Critical).await;
    let loud = alarm(&loud_room, "loud", AlarmLevel::Urgent).await;
    let got = gateway.wait_for(1, 10).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(gateway.received().len(), 1, "only the unmuted room's alarm pushes");
    assert_eq!(got[0].event_id.as_ref(), Some(&loud));
    assert_eq!(got[0].prio, NotificationPriority::High);
    assert!(got[0].devices[0].tweaks.iter().any(|t| matches!(t, Tweak::Highlight(HighlightTweakValue::Yes))));
    node.shutdown().await;
}

#[tokio::test]
async fn a_gateway_that_was_down_gets_every_notification_once_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let node = node(dir.path(), true).await;
    let mut gateway = Gateway::start().await;
    let (_alice, _bob, room, _) = bob_with_a_phone(&node, &gateway).await;
    let mut sent = vec![text(&room, "before the outage").await];
    gateway.wait_for(1, 10).await;

    gateway.stop().await;
    for i in 0..5 {
        sent.push(text(&room, &format!("during the outage {i}")).await);
    }
    // Let the node fail and back off a few times before the gateway returns.
    tokio::time::sleep(Duration::from_secs(2)).await;
    gateway.restart().await;
    sent.push(text(&room, "after the outage").await);

    let got = gateway.wait_for(sent.len(), 90).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let got_ids: Vec<_> = gateway.received().into_iter().filter_map(|n| n.event_id).collect();
    assert_eq!(got_ids, sent, "every notification exactly once, in order");
    assert_eq!(got.len(), sent.len());
    // The operator sees it in the metrics: every push sent, and the failed attempts retried.
    let text = tocsin_node::admin::metrics::sources::render_all(&node.services).unwrap();
    let count = |outcome: &str| -> u64 {
        let prefix = format!("tocsin_push_notifications_total{{outcome=\"{outcome}\"}} ");
        text.lines().find_map(|l| l.strip_prefix(&prefix)).map_or(0, |v| v.trim().parse().unwrap())
    };
    assert_eq!(count("sent"), sent.len() as u64, "{text}");
    assert!(count("failed") >= 1, "the outage shows as failed attempts: {text}");
    node.shutdown().await;
}

#[tokio::test]
async fn a_rejected_pushkey_removes_the_pusher_and_pushkeys_move_between_users() {
    let dir = tempfile::tempdir().unwrap();
    let node = node(dir.path(), true).await;
    let gateway = Gateway::start().await;
    let alice = common::user(&node, "alice").await;
    let bob = common::user(&node, "bob").await;
    let (room, _) = room_with_bob(&alice, &bob).await;

    // One pushkey belongs to one user unless appended: when carol's app takes it, bob loses it.
    let carol = common::user(&node, "carol").await;
    bob.pusher().set(pusher(&gateway, "shared-phone"), false).await.unwrap();
    carol.pusher().set(pusher(&gateway, "shared-phone"), false).await.unwrap();
    assert!(pushers(&bob).await.is_empty(), "the pushkey moved to carol");
    assert_eq!(pushers(&carol).await.len(), 1);
    carol.pusher().delete(PusherIds::new("shared-phone".to_owned(), APP_ID.to_owned())).await.unwrap();
    assert!(pushers(&carol).await.is_empty(), "removal by kind: null");

    bob.pusher().set(pusher(&gateway, "stale-phone"), false).await.unwrap();
    gateway.reject("stale-phone");
    text(&room, "anyone there?").await;
    gateway.wait_for(1, 10).await;
    common::eventually_until(5, || async { pushers(&bob).await.is_empty() }).await;
    text(&room, "still there?").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(gateway.received().len(), 1, "no push after the gateway rejected the pushkey");
    node.shutdown().await;
}

#[tokio::test]
async fn pushers_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let gateway = Gateway::start().await;
    let node = node(dir.path(), true).await;
    let (_alice, _bob, room, _) = bob_with_a_phone(&node, &gateway).await;
    let room_id = room.room_id().to_owned();
    node.shutdown().await;

    let node = self::node(dir.path(), true).await;
    let alice = common::login(&node, "alice", "correct horse").await;
    let bob = common::login(&node, "bob", "correct horse").await;
    assert_eq!(pushers(&bob).await.len(), 1, "the pusher is still there after the restart");
    sync(&alice).await;
    let room = alice.get_room(&room_id).unwrap();
    let id = text(&room, "after the restart").await;
    let got = gateway.wait_for(1, 10).await;
    assert_eq!(got[0].event_id.as_ref(), Some(&id));
    node.shutdown().await;
}

/// Pushes per second from a node to a loopback gateway: 20 senders' messages to one room, each
/// notifying one member with a pusher. Prints the figure; never fails on it.
#[tokio::test]
async fn push_throughput_to_a_loopback_gateway() {
    let dir = tempfile::tempdir().unwrap();
    let node = node(dir.path(), true).await;
    let gateway = Gateway::start().await;
    let (_alice, _bob, room, _) = bob_with_a_phone(&node, &gateway).await;
    const MESSAGES: usize = 400;
    let started = std::time::Instant::now();
    let mut tasks = Vec::new();
    for sender in 0..8 {
        let room = room.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..MESSAGES / 8 {
                text(&room, &format!("load {sender}/{i}")).await;
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let sent_in = started.elapsed();
    gateway.wait_for(MESSAGES, 120).await;
    let pushed_in = started.elapsed();
    println!(
        "push throughput: {MESSAGES} pushes in {:.2}s = {:.0} pushes/s to a loopback gateway (sends took {:.2}s)",
        pushed_in.as_secs_f64(),
        MESSAGES as f64 / pushed_in.as_secs_f64(),
        sent_in.as_secs_f64()
    );
    node.shutdown().await;
}
