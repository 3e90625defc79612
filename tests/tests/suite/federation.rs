//! Federation scenarios with real matrix-sdk clients: nodes with their own server names, TLS and
//! data dirs, in this process or as child processes killed with SIGKILL.

use std::time::Duration;

use matrix_sdk::{
    Client, RoomState,
    ruma::{
        RoomId,
        api::client::room::create_room::v3::Request as CreateRoom,
        events::{StateEventType, room::message::RoomMessageEventContent},
    },
};
use tocsin_node::NodeHandle;
use tocsin_tests::{cluster::Cluster, proxy::Proxy};

use crate::{
    common,
    fed::{accept_invite, logs, shared_room, texts, topic, until_joined, user_on, wait_for_texts},
};

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_nodes_share_a_room() {
    logs();
    let dir = tempfile::tempdir().unwrap();
    let cluster = Cluster::plan(dir.path(), &["riverton.test", "lakeside.test", "fire.test"]).unwrap();
    let a = cluster.start(0).await.unwrap();
    let b = cluster.start(1).await.unwrap();
    let c = cluster.start(2).await.unwrap();
    let alice = user_on(&a, "alice").await;
    let bob = user_on(&b, "bob").await;
    let carol = user_on(&c, "carol").await;

    let room_id = shared_room(&alice, &[&bob, &carol]).await;
    let mut expected = Vec::new();
    for (client, text) in
        [(&alice, "alice on riverton"), (&bob, "bob on lakeside"), (&carol, "carol at the fire service")]
    {
        common::sync(client).await;
        let room = client.get_room(&room_id).expect("room known to every member");
        room.send(RoomMessageEventContent::text_plain(text)).await.expect("message sent");
        expected.push(text.to_owned());
        // Each message is seen everywhere before the next is sent, so the order is fixed.
        for viewer in [&alice, &bob, &carol] {
            wait_for_texts(viewer, &room_id, &expected, 10).await;
        }
    }

    let carol_room = carol.get_room(&room_id).unwrap();
    carol_room.set_room_topic("Evacuate the river district").await.expect("topic set by a remote member");
    for viewer in [&alice, &bob] {
        let seen = common::eventually(viewer, 10, || async {
            topic(viewer, &room_id).await.filter(|t| t == "Evacuate the river district")
        })
        .await;
        assert_eq!(seen, "Evacuate the river district");
    }
    for node in [a, b, c] {
        node.shutdown().await;
    }
}

/// Waits until `node` holds `event_id` (how a sender knows its peer has an event).
async fn until_known(node: &NodeHandle, event_id: &matrix_sdk::ruma::EventId) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !node.services.rooms.knows(event_id).unwrap_or(false) {
        assert!(tokio::time::Instant::now() < deadline, "{} never received {event_id}", node.server_name);
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

fn test_node_binary() -> &'static std::path::Path {
    std::path::Path::new(env!("CARGO_BIN_EXE_tocsin-test-node"))
}

/// A city goes dark: lakeside is killed with SIGKILL while riverton and the fire service
/// exchange 200 messages and change the topic. Back from its data dir, lakeside shows its user
/// all 200, once each, in order, and the new topic, within 10 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_city_goes_dark_and_catches_up() {
    logs();
    let dir = tempfile::tempdir().unwrap();
    let cluster = Cluster::plan(dir.path(), &["riverton.test", "lakeside.test", "fire.test"]).unwrap();
    let a = cluster.start(0).await.unwrap();
    let c = cluster.start(2).await.unwrap();
    // Lakeside starts in-process to create its user, then runs as a child process to be killed.
    let b = cluster.start(1).await.unwrap();
    let alice = user_on(&a, "alice").await;
    let bob = user_on(&b, "bob").await;
    let carol = user_on(&c, "carol").await;
    let room_id = shared_room(&alice, &[&bob, &carol]).await;
    let mut expected = vec!["before the outage".to_owned()];
    alice.get_room(&room_id).unwrap().send(RoomMessageEventContent::text_plain(&expected[0])).await.unwrap();
    wait_for_texts(&bob, &room_id, &expected, 10).await;
    b.shutdown().await;
    let mut lakeside = cluster.spawn(1, test_node_binary()).await.unwrap();
    wait_for_texts(&bob, &room_id, &expected, 10).await;

    lakeside.kill();
    common::sync(&carol).await;
    let (a_room, c_room) = (alice.get_room(&room_id).unwrap(), carol.get_room(&room_id).unwrap());
    for i in 0..200 {
        let text = format!("status report {i}");
        let (room, other) = if i % 2 == 0 { (&a_room, &c) } else { (&c_room, &a) };
        let sent = room.send(RoomMessageEventContent::text_plain(&text)).await.expect("sent while lakeside is down");
        until_known(other, &sent.response.event_id).await;
        expected.push(text);
    }
    c_room.set_room_topic("Levee breach at km 12").await.expect("topic changed while lakeside is down");

    let _lakeside = cluster.spawn(1, test_node_binary()).await.unwrap();
    // Lakeside is back once its client port answers (opening a store after SIGKILL takes a moment).
    let back = tokio::time::Instant::now();
    wait_for_texts(&bob, &room_id, &expected, 10).await;
    let caught_up = back.elapsed();
    let seen =
        common::eventually(&bob, 10, || async { topic(&bob, &room_id).await.filter(|t| t == "Levee breach at km 12") })
            .await;
    assert_eq!(seen, "Levee breach at km 12");
    assert!(back.elapsed() < Duration::from_secs(10), "catch-up took {:?}", back.elapsed());
    eprintln!("lakeside caught up on 200 messages in {caught_up:?} after its restart");
    a.shutdown().await;
    c.shutdown().await;
}

/// Every event id in the room's timeline on `node`.
fn timeline_ids(node: &NodeHandle, room_id: &RoomId) -> std::collections::BTreeSet<String> {
    let rows = node.services.rooms.paginate(room_id, u64::MAX, true, 100_000).expect("timeline readable");
    rows.into_iter().map(|(_, pdu)| pdu.event_id.to_string()).collect()
}

async fn current_state(node: &NodeHandle, room_id: &RoomId) -> tocsin_node::rooms::StateIds {
    let head = node.services.rooms.head(room_id).expect("room known");
    let head = head.lock().await;
    head.state_ids()
}

/// A metric without labels, summed over `nodes`.
fn metric_sum(nodes: &[NodeHandle], name: &str) -> u64 {
    nodes
        .iter()
        .map(|n| {
            let text = tocsin_node::admin::metrics::sources::render_all(&n.services).unwrap();
            text.lines()
                .find_map(|l| l.strip_prefix(name).and_then(|rest| rest.strip_prefix(' ')))
                .map_or(0, |v| v.trim().parse().unwrap())
        })
        .sum()
}

async fn set_power(client: &Client, room_id: &RoomId, extra_user: &str, level: i32) {
    use matrix_sdk::ruma::events::room::power_levels::RoomPowerLevelsEventContent;
    common::sync(client).await;
    let room = client.get_room(room_id).unwrap();
    let raw = room.get_state_event_static::<RoomPowerLevelsEventContent>().await.unwrap().expect("power levels");
    let matrix_sdk::deserialized_responses::SyncOrStrippedState::Sync(event) = raw.deserialize().unwrap() else {
        panic!("power levels are not stripped in a joined room")
    };
    let mut content = event.as_original().expect("not redacted").content.clone();
    content.users.insert(extra_user.try_into().unwrap(), level.into());
    room.send_state_event(content).await.expect("power levels changed");
}

/// A partition: riverton and the fire service cannot reach each other while both send messages,
/// change the topic and power levels and take in a new member. After the heal every node holds
/// the same events and the same current state, with both new members in it. (A fork's first join
/// of a user is added without resolving the forks; debug builds resolve it too and assert the
/// two agree.)
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_partition_heals_and_all_nodes_agree() {
    logs();
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = Cluster::plan(dir.path(), &["riverton.test", "lakeside.test", "fire.test"]).unwrap();
    let localhost = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
    let to_fire = Proxy::start(localhost, cluster.members[2].federation_addr).await.unwrap();
    let to_riverton = Proxy::start(localhost, cluster.members[0].federation_addr).await.unwrap();
    cluster.repin(0, 2, to_fire.addr).unwrap();
    cluster.repin(2, 0, to_riverton.addr).unwrap();
    let nodes = [cluster.start(0).await.unwrap(), cluster.start(1).await.unwrap(), cluster.start(2).await.unwrap()];
    let alice = user_on(&nodes[0], "alice").await;
    let bob = user_on(&nodes[1], "bob").await;
    let carol = user_on(&nodes[2], "carol").await;
    let room_id = shared_room(&alice, &[&bob, &carol]).await;
    // Open to anyone, so a new member joins without an invite.
    let public = matrix_sdk::ruma::events::room::join_rules::RoomJoinRulesEventContent::new(
        matrix_sdk::ruma::events::room::join_rules::JoinRule::Public,
    );
    alice.get_room(&room_id).unwrap().send_state_event(public).await.unwrap();
    let dave = user_on(&nodes[0], "dave").await;
    let erin = user_on(&nodes[2], "erin").await;
    wait_for_texts::<&str>(&carol, &room_id, &[], 5).await;
    // Before the split every node holds the room's history (the joiners backfill it).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while nodes.iter().any(|n| timeline_ids(n, &room_id) != timeline_ids(&nodes[0], &room_id)) {
        assert!(tokio::time::Instant::now() < deadline, "history never reached every node before the split");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    to_fire.set_cut(true);
    to_riverton.set_cut(true);
    let (a_room, c_room) = (alice.get_room(&room_id).unwrap(), carol.get_room(&room_id).unwrap());
    for i in 0..5 {
        a_room.send(RoomMessageEventContent::text_plain(format!("riverton during the split {i}"))).await.unwrap();
        c_room.send(RoomMessageEventContent::text_plain(format!("fire during the split {i}"))).await.unwrap();
    }
    a_room.set_room_topic("Riverton: pumps at the bridge").await.unwrap();
    c_room.set_room_topic("Fire: road closed at the levee").await.unwrap();
    set_power(&alice, &room_id, "@duty-officer:riverton.test", 50).await;
    set_power(&carol, &room_id, "@incident-lead:fire.test", 75).await;
    dave.join_room_by_id(&room_id).await.unwrap();
    erin.join_room_by_id(&room_id).await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;

    to_fire.set_cut(false);
    to_riverton.set_cut(false);
    // One more message from each side merges the forks.
    a_room.send(RoomMessageEventContent::text_plain("riverton after the heal")).await.unwrap();
    c_room.send(RoomMessageEventContent::text_plain("fire after the heal")).await.unwrap();

    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let events: Vec<_> = nodes.iter().map(|n| timeline_ids(n, &room_id)).collect();
        let mut states = Vec::new();
        for node in &nodes {
            states.push(current_state(node, &room_id).await);
        }
        let same_events = events.windows(2).all(|w| w[0] == w[1]);
        let same_state = states.windows(2).all(|w| w[0] == w[1]);
        let newcomers = ["@dave:riverton.test", "@erin:fire.test"]
            .iter()
            .all(|u| states[0].contains_key(&(StateEventType::RoomMember, (*u).to_owned())));
        if same_events && same_state && newcomers && events[0].len() >= 15 {
            eprintln!("converged: {} events, {} state entries", events[0].len(), states[0].len());
            break;
        }
        if tokio::time::Instant::now() > deadline {
            let backlogs: Vec<_> = nodes.iter().map(|n| format!("{:?}", n.services.sender.backlog())).collect();
            for n in &nodes {
                let rows = n.services.rooms.paginate(&room_id, u64::MAX, true, 100_000).unwrap();
                let desc: Vec<String> =
                    rows.iter().rev().map(|(p, e)| format!("{p} {} {} {}", e.kind, e.sender, e.event_id)).collect();
                eprintln!("{}: {desc:#?}", n.server_name);
            }
            panic!(
                "no agreement after the heal: events {:?}, same state {same_state}, backlogs {backlogs:#?}",
                events.iter().map(|e| e.len()).collect::<Vec<_>>()
            );
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The forks were resolved, and the operator sees it in the metrics.
    let resolutions = metric_sum(&nodes, "tocsin_state_resolution_seconds_count");
    assert!(resolutions > 0, "the heal resolved no differing states");
    // Each side's new member reached the other side as a first join on a fork.
    let first_joins = metric_sum(&nodes, "tocsin_state_first_joins_unresolved_total");
    assert!(first_joins >= 2, "the new members were not taken in as first joins: {first_joins}");
    for node in nodes {
        node.shutdown().await;
    }
}

/// The creator's node is lost: the fire service creates the room, both cities join, the fire
/// service goes away. The cities keep talking, and a user of a fourth node still joins through
/// lakeside.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_creators_node_is_lost() {
    logs();
    let dir = tempfile::tempdir().unwrap();
    let cluster = Cluster::plan(dir.path(), &["riverton.test", "lakeside.test", "fire.test", "hospital.test"]).unwrap();
    let a = cluster.start(0).await.unwrap();
    let b = cluster.start(1).await.unwrap();
    let c = cluster.start(2).await.unwrap();
    let d = cluster.start(3).await.unwrap();
    let alice = user_on(&a, "alice").await;
    let bob = user_on(&b, "bob").await;
    let carol = user_on(&c, "carol").await;
    let erin = user_on(&d, "erin").await;
    let room_id = shared_room(&carol, &[&alice, &bob]).await;
    // Fire goes dark once the cities see each other in the room: they learn of each other's
    // join from the joining servers too, not only from fire.
    until_joined(&alice, &room_id, bob.user_id().unwrap()).await;
    until_joined(&bob, &room_id, alice.user_id().unwrap()).await;
    c.shutdown().await;

    let mut expected = Vec::new();
    for (client, text) in [(&alice, "riverton still here"), (&bob, "lakeside too")] {
        client.get_room(&room_id).unwrap().send(RoomMessageEventContent::text_plain(text)).await.unwrap();
        expected.push(text.to_owned());
        for viewer in [&alice, &bob] {
            wait_for_texts(viewer, &room_id, &expected, 10).await;
        }
    }
    bob.get_room(&room_id).unwrap().invite_user_by_id(erin.user_id().unwrap()).await.expect("invite to the hospital");
    accept_invite(&erin, &room_id).await;
    // Alice welcomes erin once she sees erin in the room.
    until_joined(&alice, &room_id, erin.user_id().unwrap()).await;
    alice.get_room(&room_id).unwrap().send(RoomMessageEventContent::text_plain("welcome, hospital")).await.unwrap();
    expected.push("welcome, hospital".to_owned());
    common::sync(&erin).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        common::sync(&erin).await;
        if texts(&erin, &room_id).await.last().map(String::as_str) == Some("welcome, hospital") {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "erin never saw riverton's message");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    for node in [a, b, d] {
        node.shutdown().await;
    }
}

/// Files cross nodes: a file uploaded on riverton is downloaded by a lakeside user through
/// lakeside (fetched once over federation, then served from the copy).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn media_crosses_nodes() {
    logs();
    let dir = tempfile::tempdir().unwrap();
    let cluster = Cluster::plan(dir.path(), &["riverton.test", "lakeside.test"]).unwrap();
    let (a, b) = (cluster.start(0).await.unwrap(), cluster.start(1).await.unwrap());
    let alice = user_on(&a, "alice").await;
    let bob = user_on(&b, "bob").await;
    let map = b"flood map: river district, levee at km 12".to_vec();
    let uploaded = alice.media().upload(&"text/plain".parse().unwrap(), map.clone(), None).await.unwrap();
    let request = matrix_sdk::media::MediaRequestParameters {
        source: matrix_sdk::ruma::events::room::MediaSource::Plain(uploaded.content_uri.clone()),
        format: matrix_sdk::media::MediaFormat::File,
    };
    let fetched = bob.media().get_media_content(&request, false).await.expect("remote file through lakeside");
    assert_eq!(fetched, map);
    // The copy on lakeside serves it with riverton gone.
    a.shutdown().await;
    let again = bob.media().get_media_content(&request, false).await.expect("served from lakeside's copy");
    assert_eq!(again, map);
    b.shutdown().await;
}

/// Knocking with a real client: a user of another server knocks through the client API (the
/// node runs make_knock / send_knock), a local user knocks too, the room's members see both
/// knocks, and the invited knocker joins. A knock on a room that does not take knocks fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn users_knock_from_their_clients_and_are_let_in() {
    use matrix_sdk::ruma::{OwnedServerName, RoomOrAliasId};
    logs();
    let dir = tempfile::tempdir().unwrap();
    let cluster = Cluster::plan(dir.path(), &["riverton.test", "lakeside.test"]).unwrap();
    let (a, b) = (cluster.start(0).await.unwrap(), cluster.start(1).await.unwrap());
    let alice = user_on(&a, "alice").await;
    let carol = user_on(&a, "carol").await;
    let bob = user_on(&b, "bob").await;
    let mut request = CreateRoom::new();
    request.name = Some("County coordination".into());
    request.initial_state = vec![
        matrix_sdk::ruma::serde::Raw::from_json_string(
            r#"{"type":"m.room.join_rules","state_key":"","content":{"join_rule":"knock"}}"#.to_owned(),
        )
        .unwrap(),
    ];
    let room_id = alice.create_room(request).await.unwrap().room_id().to_owned();
    let closed_room = alice.create_room(CreateRoom::new()).await.unwrap().room_id().to_owned();
    let riverton = OwnedServerName::try_from("riverton.test").unwrap();
    let bob_id = bob.user_id().unwrap().to_owned();
    let carol_id = carol.user_id().unwrap().to_owned();

    let knocked = bob
        .knock(
            RoomOrAliasId::parse(room_id.as_str()).unwrap(),
            Some("Lakeside pumps team".into()),
            vec![riverton.clone()],
        )
        .await
        .expect("a knock through the client API");
    assert_eq!(knocked.room_id(), room_id);
    carol.knock(RoomOrAliasId::parse(room_id.as_str()).unwrap(), None, vec![]).await.expect("a local knock");
    // Bob's client shows the room as knocked, named from the state riverton returned.
    let room =
        common::eventually(&bob, 10, || async { bob.get_room(&room_id).filter(|r| r.state() == RoomState::Knocked) })
            .await;
    assert_eq!(room.name().as_deref(), Some("County coordination"));
    for user in [&bob_id, &carol_id] {
        assert_eq!(a.services.rooms.membership(&room_id, user).await.unwrap().as_deref(), Some("knock"));
    }
    let knock = a.services.rooms.state_event(&room_id, &StateEventType::RoomMember, bob_id.as_str()).await.unwrap();
    let reason = knock.and_then(|p| serde_json::from_str::<serde_json::Value>(p.content.get()).ok());
    assert_eq!(reason.as_ref().and_then(|c| c["reason"].as_str()), Some("Lakeside pumps team"));

    let refused = bob.knock(RoomOrAliasId::parse(closed_room.as_str()).unwrap(), None, vec![riverton.clone()]).await;
    assert!(refused.is_err(), "a knock on an invite-only room must fail");
    assert_eq!(a.services.rooms.membership(&closed_room, &bob_id).await.unwrap(), None);

    alice.get_room(&room_id).unwrap().invite_user_by_id(&bob_id).await.expect("invite the knocker");
    accept_invite(&bob, &room_id).await;
    assert_eq!(a.services.rooms.membership(&room_id, &bob_id).await.unwrap().as_deref(), Some("join"));
    a.shutdown().await;
    b.shutdown().await;
}

/// A peer browses a space: the space's summary and its public child room come back; a private
/// child the peer has no member in stays inaccessible.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_peer_browses_a_space() {
    use matrix_sdk::ruma::{
        OwnedServerName, api::client::room::create_room::v3::RoomPreset, api::federation::space::get_hierarchy,
        serde::Raw,
    };
    logs();
    let dir = tempfile::tempdir().unwrap();
    let cluster = Cluster::plan(dir.path(), &["riverton.test", "lakeside.test"]).unwrap();
    let (a, b) = (cluster.start(0).await.unwrap(), cluster.start(1).await.unwrap());
    let alice = user_on(&a, "alice").await;
    let room = |name: &str, public: bool| {
        let mut request = CreateRoom::new();
        request.name = Some(name.to_owned());
        request.preset = Some(if public { RoomPreset::PublicChat } else { RoomPreset::PrivateChat });
        request
    };
    let shelters = alice.create_room(room("Shelters", true)).await.unwrap().room_id().to_owned();
    let staff = alice.create_room(room("Staff only", false)).await.unwrap().room_id().to_owned();
    let mut space = room("River district", true);
    space.creation_content = Some(Raw::from_json_string(r#"{"type":"m.space"}"#.to_owned()).unwrap());
    let mut initial = Vec::new();
    for child in [&shelters, &staff] {
        initial.push(
            Raw::from_json_string(format!(
                r#"{{"type":"m.space.child","state_key":"{child}","content":{{"via":["riverton.test"]}}}}"#
            ))
            .unwrap(),
        );
    }
    space.initial_state = initial;
    let space_id = alice.create_room(space).await.unwrap().room_id().to_owned();

    let riverton = OwnedServerName::try_from("riverton.test").unwrap();
    let response = b
        .services
        .federation_client
        .send(&riverton, get_hierarchy::v1::Request::new(space_id.clone()))
        .await
        .expect("hierarchy over federation");
    assert_eq!(response.room.summary.name.as_deref(), Some("River district"));
    assert_eq!(response.room.children_state.len(), 2);
    let names: Vec<_> = response.children.iter().filter_map(|c| c.name.clone()).collect();
    assert_eq!(names, vec!["Shelters".to_owned()]);
    assert_eq!(response.inaccessible_children, vec![staff]);
    a.shutdown().await;
    b.shutdown().await;
}

/// A third party checks an OpenID token with the user's node (how widgets and call services
/// learn who a user is); a made-up token is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_openid_token_names_its_user() {
    use matrix_sdk::ruma::{
        OwnedServerName, api::client::account::request_openid_token, api::federation::openid::get_openid_userinfo,
    };
    logs();
    let dir = tempfile::tempdir().unwrap();
    let cluster = Cluster::plan(dir.path(), &["riverton.test", "lakeside.test"]).unwrap();
    let (a, b) = (cluster.start(0).await.unwrap(), cluster.start(1).await.unwrap());
    let alice = user_on(&a, "alice").await;
    let token = alice
        .send(request_openid_token::v3::Request::new(alice.user_id().unwrap().to_owned()))
        .await
        .expect("openid token")
        .access_token;
    let riverton = OwnedServerName::try_from("riverton.test").unwrap();
    let info = b
        .services
        .federation_client
        .send_unauth(&riverton, get_openid_userinfo::v1::Request::new(token))
        .await
        .expect("userinfo");
    assert_eq!(info.sub, alice.user_id().unwrap());
    let refused = b
        .services
        .federation_client
        .send_unauth(&riverton, get_openid_userinfo::v1::Request::new("made-up".into()))
        .await;
    assert!(refused.is_err(), "a made-up token must not name anyone");
    a.shutdown().await;
    b.shutdown().await;
}

/// A DNS server on loopback for one test: SRV for `_matrix-fed._tcp.<host>` pointing at
/// `target:port`, and an A record for the target (127.0.0.1). Uses hickory's message codec.
async fn srv_dns_server(host: &str, target: &str, port: u16) -> std::net::SocketAddr {
    use hickory_resolver::proto::{
        op::{Message, MessageType, OpCode},
        rr::{
            Name, RData, Record, RecordType,
            rdata::{A, SRV},
        },
    };
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = socket.local_addr().unwrap();
    let srv_name = format!("_matrix-fed._tcp.{host}.");
    let target = format!("{target}.");
    tokio::spawn(async move {
        let mut buf = vec![0u8; 1500];
        while let Ok((len, from)) = socket.recv_from(&mut buf).await {
            let Ok(query) = Message::from_vec(&buf[..len]) else { continue };
            let mut reply = Message::new(query.metadata.id, MessageType::Response, OpCode::Query);
            for q in &query.queries {
                reply.add_query(q.clone());
                let name = q.name().to_ascii();
                if q.query_type() == RecordType::SRV && name == srv_name {
                    let rdata = RData::SRV(SRV::new(10, 5, port, Name::from_ascii(&target).unwrap()));
                    reply.add_answer(Record::from_rdata(q.name().clone(), 60, rdata));
                } else if q.query_type() == RecordType::A && name == target {
                    reply.add_answer(Record::from_rdata(q.name().clone(), 60, RData::A(A::new(127, 0, 0, 1))));
                }
            }
            if let Ok(bytes) = reply.to_vec() {
                let _ = socket.send_to(&bytes, from).await;
            }
        }
    });
    addr
}

/// Discovery without a pin: riverton finds lakeside through its `_matrix-fed._tcp` SRV record,
/// connects to the SRV target and still checks lakeside's own certificate name.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_peer_is_found_by_srv() {
    use matrix_sdk::ruma::{OwnedServerName, api::federation::discovery::get_server_version};
    logs();
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = Cluster::plan(dir.path(), &["riverton.test", "lakeside.test"]).unwrap();
    let lakeside_port = cluster.members[1].federation_addr.port();
    let dns = srv_dns_server("lakeside.test", "federation.lakeside.test", lakeside_port).await;
    cluster.members[0].config.federation_pins.remove("lakeside.test");
    cluster.members[0].config.federation_dns = Some(dns);
    // The SRV target is on loopback and not pinned: a lab allows that range explicitly.
    cluster.members[0].config.outbound_ip_allow = vec!["127.0.0.0/8".parse().unwrap()];
    let (a, b) = (cluster.start(0).await.unwrap(), cluster.start(1).await.unwrap());
    let lakeside = OwnedServerName::try_from("lakeside.test").unwrap();
    let version = a
        .services
        .federation_client
        .send_unauth(&lakeside, get_server_version::v1::Request::new())
        .await
        .expect("lakeside found by SRV");
    assert_eq!(version.server.and_then(|s| s.name).as_deref(), Some("Tocsin"));
    let keys = a.services.remote_keys.public_key_map([lakeside.clone()]).await.expect("keys over the SRV route");
    assert!(keys.contains_key("lakeside.test"));
    a.shutdown().await;
    b.shutdown().await;
}
