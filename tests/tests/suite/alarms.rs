//! Alarms across three federated nodes, with real clients: acknowledgements by reaction from
//! users of other nodes take the status message (edited in place) to "all acknowledged";
//! those who do not acknowledge are reminded, then escalated (escalation room, signed webhook),
//! on time and exactly once across a restart; alarms from people who may not raise them are
//! refused, at their own node (403) and on receipt from a peer (by the federation list).
//! `escalation`: the escalation room per room and per role; `backfill`: alarms that arrive as
//! history are held to the same rule as those that arrive live.

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::{Duration, SystemTime},
};

use hmac::{Hmac, Mac};
use matrix_sdk::{
    Client,
    room::MessagesOptions,
    ruma::{OwnedEventId, RoomId},
};
use serde_json::{Value, json};
use sha2::Sha256;
use tocsin_node::{
    NodeHandle,
    policy::policies::{
        AlarmLevel, FederationList, Member, MemberRole, OperatorSecretKey, Timestamp, generate_operator_key, sign_list,
    },
};
use tocsin_tests::cluster::Cluster;

use crate::{common, fed};

mod backfill;
mod escalation;

const HOOK_SECRET: &str = "webhook-secret-for-tests";

/// A webhook receiver on loopback: every call's signature header, delivery header and body.
struct Hook {
    addr: SocketAddr,
    calls: Arc<Mutex<Vec<(String, String, String)>>>,
}

async fn webhook_receiver() -> Hook {
    let calls: Arc<Mutex<Vec<(String, String, String)>>> = Arc::default();
    let seen = calls.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |headers: axum::http::HeaderMap, body: String| {
            let seen = seen.clone();
            async move {
                let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
                seen.lock().unwrap().push((header("x-tocsin-signature"), header("x-tocsin-delivery"), body));
                "ok"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    Hook { addr, calls }
}

fn hmac_hex(secret: &str, body: &str) -> String {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(body.as_bytes());
    mac.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect()
}

fn node_policy(hook: SocketAddr) -> String {
    format!(
        r#"
[node]
server_name = "a.test"

[room_defaults]
encryption = false

[alarms]
ack_deadline = "2s"
escalate_after = "3s"
escalation_room = "escalation"

[[alarms.webhook]]
url = "http://{hook}/hook"
secret = "{HOOK_SECRET}"

[[role]]
name = "chief"
power_level = 100
may_send_alarms = true

[[role]]
name = "clerk"
power_level = 0

[[role]]
name = "lead"
power_level = 50
may_send_alarms = true
escalation_room = "lead-escalation"

[[account]]
localpart = "chief"
roles = ["chief"]

[[account]]
localpart = "clerk"
roles = ["clerk"]

[[account]]
localpart = "lead"
roles = ["lead"]

[[room]]
alias = "escalation"
name = "Escalation"
members = ["chief"]
encrypted = false

[[room]]
alias = "levee"
name = "Levee watch"
members = ["chief", "clerk", "lead"]
encrypted = false
escalation_room = "levee-escalation"

[[room]]
alias = "levee-escalation"
name = "Levee escalation"
members = ["chief"]
encrypted = false

[[room]]
alias = "lead-escalation"
name = "Leads' escalation"
members = ["chief"]
encrypted = false
"#
    )
}

/// Three nodes under one signed list in which only a.test's chief may raise alarms; a.test
/// runs the policy above (webhook receiver on loopback, which its outbound rules allow).
pub(crate) struct Setup {
    _dir: tempfile::TempDir,
    cluster: Cluster,
    a: Option<NodeHandle>,
    pub(crate) b: NodeHandle,
    pub(crate) c: NodeHandle,
    hook: Hook,
}

pub(crate) async fn setup() -> Setup {
    fed::logs();
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = Cluster::plan(dir.path(), &["a.test", "b.test", "c.test"]).unwrap();
    let (secret, public) = generate_operator_key();
    let key = OperatorSecretKey::from_text(&secret).unwrap();
    let now = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs() as i64;
    let mut a = Member::new("a.test", "City A", MemberRole::Municipality);
    for (_, level) in AlarmLevel::ALL {
        a.alarm_senders.insert(*level, vec!["chief".into(), "lead".into()]);
    }
    let list = FederationList {
        name: "Alarm test federation".into(),
        version: 1,
        issued: Timestamp(now - 3600),
        expires: Timestamp(now + 24 * 3600),
        members: vec![
            a,
            Member::new("b.test", "City B", MemberRole::Fire),
            Member::new("c.test", "City C", MemberRole::Police),
        ],
    };
    let (list_path, pub_path) = (dir.path().join("federation.toml"), dir.path().join("operator.pub"));
    std::fs::write(&list_path, sign_list(&list, &key).unwrap().to_toml()).unwrap();
    std::fs::write(&pub_path, public).unwrap();
    let hook = webhook_receiver().await;
    let policy_path = dir.path().join("a-policy.toml");
    std::fs::write(&policy_path, node_policy(hook.addr)).unwrap();
    for m in &mut cluster.members {
        m.config.federation_list = Some(list_path.clone());
        m.config.federation_operator_keys = vec![pub_path.clone()];
    }
    cluster.members[0].config.policy = Some(policy_path);
    cluster.members[0].config.outbound_ip_allow = vec!["127.0.0.0/8".parse().unwrap()];
    let a = cluster.start(0).await.unwrap();
    let b = cluster.start(1).await.unwrap();
    let c = cluster.start(2).await.unwrap();
    Setup { _dir: dir, cluster, a: Some(a), b, c, hook }
}

impl Setup {
    pub(crate) fn a(&self) -> &NodeHandle {
        self.a.as_ref().unwrap()
    }

    /// Restarts node a on the same data dir.
    async fn restart_a(&mut self) {
        self.a.take().unwrap().shutdown().await;
        self.a = Some(self.cluster.start(0).await.unwrap());
    }
}

/// Sends `content` as an `m.room.message` over the plain Client-Server API.
pub(crate) async fn send(client: &Client, base: &str, room: &RoomId, content: Value) -> (u16, Value) {
    let txn = format!("t{}", rand::random::<u64>());
    let url = format!("{base}/_matrix/client/v3/rooms/{room}/send/m.room.message/{txn}");
    let token = client.access_token().unwrap();
    let response = reqwest::Client::new().put(url).bearer_auth(token).json(&content).send().await.unwrap();
    (response.status().as_u16(), response.json().await.unwrap_or_default())
}

async fn react(client: &Client, room: &RoomId, target: &OwnedEventId) {
    let content = json!({"m.relates_to": {"rel_type": "m.annotation", "event_id": target, "key": "👍"}});
    client.get_room(room).unwrap().send_raw("m.reaction", content).await.expect("reaction sent");
}

/// Every event of the room as raw JSON, newest first.
pub(crate) async fn raw_events(client: &Client, room: &RoomId) -> Vec<Value> {
    let Some(room) = client.get_room(room) else { return Vec::new() };
    let mut options = MessagesOptions::backward();
    options.limit = 500u32.into();
    let Ok(messages) = room.messages(options).await else { return Vec::new() };
    messages.chunk.iter().filter_map(|e| serde_json::from_str(e.raw().json().get()).ok()).collect()
}

/// The status message's current text as a client sees it: the newest edit of the notice that
/// replies to the alarm, or the notice itself.
async fn status_text(client: &Client, room: &RoomId, alarm: &OwnedEventId) -> Option<String> {
    let events = raw_events(client, room).await;
    let status = events.iter().find(|e| {
        e["content"]["msgtype"] == "m.notice"
            && e["content"]["m.relates_to"]["m.in_reply_to"]["event_id"] == alarm.as_str()
    })?;
    let status_id = status["event_id"].as_str()?;
    let newest_edit = events.iter().find(|e| {
        e["content"]["m.relates_to"]["rel_type"] == "m.replace" && e["content"]["m.relates_to"]["event_id"] == status_id
    });
    match newest_edit {
        Some(edit) => edit["content"]["m.new_content"]["body"].as_str().map(str::to_owned),
        None => status["content"]["body"].as_str().map(str::to_owned),
    }
}

/// The admin API's status of an alarm on `node`.
pub(crate) async fn admin_status(node: &NodeHandle, token: &str, id: &str) -> Value {
    let url = format!("{}/_tocsin/admin/alarms/{id}", node.base_url());
    let response = reqwest::Client::new().get(url).bearer_auth(token).send().await.unwrap();
    assert_eq!(response.status(), 200);
    response.json().await.unwrap()
}

pub(crate) fn step_names(status: &Value) -> Vec<String> {
    status["steps"].as_array().unwrap().iter().map(|s| s["step"].as_str().unwrap().to_owned()).collect()
}

/// Makes `name` a server admin of `node` and returns an access token for it.
pub(crate) async fn admin_token(node: &NodeHandle, name: &str) -> String {
    node.services.users.create_account(name, Some(fed::PASSWORD), None, true).await.unwrap();
    fed::client_for(&node.base_url(), name).await.access_token().unwrap()
}

/// The alarm the chief's `!alarm` produced: its event id and block id, from the chief's view.
async fn find_alarm(client: &Client, room: &RoomId) -> (OwnedEventId, String) {
    common::eventually(client, 10, || async {
        let events = raw_events(client, room).await;
        let alarm = events.iter().find(|e| e["content"]["org.tocsin.alarm"].is_object())?;
        let id = alarm["content"]["org.tocsin.alarm"]["id"].as_str()?.to_owned();
        Some((OwnedEventId::try_from(alarm["event_id"].as_str()?).ok()?, id))
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn acknowledgements_from_other_nodes_take_the_status_to_all_acknowledged() {
    let s = setup().await;
    let chief = fed::user_on(s.a(), "chief").await;
    let bob = fed::user_on(&s.b, "bob").await;
    let carol = fed::user_on(&s.c, "carol").await;
    let room = fed::shared_room(&chief, &[&bob, &carol]).await;
    fed::until_joined(&chief, &room, carol.user_id().unwrap()).await;

    // Typed as text in any client; the node turns it into an alarm sent by the chief.
    let (status, body) = send(
        &chief,
        &s.a().base_url(),
        &room,
        json!({"msgtype": "m.text", "body": "!alarm critical 30s Evacuate sector 4"}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let (alarm, id) = find_alarm(&chief, &room).await;
    let events = raw_events(&chief, &room).await;
    let raised = events.iter().find(|e| e["event_id"] == alarm.as_str()).unwrap();
    assert_eq!(raised["content"]["org.tocsin.alarm"]["level"], "critical");
    assert_eq!(raised["content"]["org.tocsin.alarm"]["ack_deadline_s"], 30);
    assert!(raised["content"]["body"].as_str().unwrap().contains("Evacuate sector 4"));
    assert!(raised["content"]["formatted_body"].as_str().unwrap().contains("Evacuate sector 4"));

    // The status appears at once, in every client, as a reply to the alarm.
    let initial = common::eventually(&carol, 10, || status_text(&carol, &room, &alarm)).await;
    assert!(initial.contains("0 of 2 acknowledged"), "{initial}");

    // Bob (node b) and Carol (node c) react; the edited status says so, on node c too.
    common::eventually(&bob, 10, || async { bob.get_room(&room).and(Some(())) }).await;
    react(&bob, &room, &alarm).await;
    react(&carol, &room, &alarm).await;
    let done = common::eventually(&carol, 15, || async {
        status_text(&carol, &room, &alarm).await.filter(|t| t.contains("all 2 acknowledged"))
    })
    .await;
    assert!(!done.contains("waiting"), "{done}");

    let token = admin_token(s.a(), "admin").await;
    let json = admin_status(s.a(), &token, &id).await;
    assert_eq!(json["closed"], "acknowledged");
    let acked: Vec<&str> =
        json["acknowledged"].as_array().unwrap().iter().map(|m| m["user_id"].as_str().unwrap()).collect();
    assert_eq!(acked.len(), 2);
    assert!(acked.contains(&"@bob:b.test") && acked.contains(&"@carol:c.test"), "{json}");
    assert!(step_names(&json).is_empty(), "no escalation for a fully acknowledged alarm: {json}");
    // The open list no longer holds it.
    let url = format!("{}/_tocsin/admin/alarms", s.a().base_url());
    let list: Value = reqwest::Client::new().get(url).bearer_auth(&token).send().await.unwrap().json().await.unwrap();
    assert_eq!(list["alarms"], json!([]), "{list}");

    // The CLI asks the running node's admin API and prints the same JSON.
    let cli = |args: &[&str]| {
        let out = std::process::Command::new(common::tocsin_node_binary())
            .args(["alarm"])
            .args(args)
            .args(["--url", &s.a().base_url(), "--token", &token])
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    };
    let printed: Value = serde_json::from_str(&cli(&["status", &id])).unwrap();
    assert_eq!(printed, admin_status(s.a(), &token, &id).await);
    assert_eq!(cli(&["list"]), "no open alarms\n");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_unacknowledged_are_reminded_then_escalated_once_across_a_restart() {
    let mut s = setup().await;
    let chief = fed::user_on(s.a(), "chief").await;
    let bob = fed::user_on(&s.b, "bob").await;
    let carol = fed::user_on(&s.c, "carol").await;
    // The escalation room comes from the policy; the chief is a member.
    let policy = s.a().services.policy.policy().unwrap();
    let applied = tocsin_node::policy::provision::apply(&s.a().services, &policy).await.unwrap();
    assert!(applied.failed.is_empty(), "{:?}", applied.failed);
    let escalation = s
        .a()
        .services
        .rooms
        .resolve_alias(&tocsin_node::ruma::RoomAliasId::parse("#escalation:a.test").unwrap())
        .unwrap()
        .unwrap();
    let escalation = matrix_sdk::ruma::OwnedRoomId::try_from(escalation.as_str()).unwrap();
    fed::accept_invite(&chief, &escalation).await;
    let room = fed::shared_room(&chief, &[&bob, &carol]).await;
    fed::until_joined(&chief, &room, carol.user_id().unwrap()).await;

    let (status, body) = send(
        &chief,
        &s.a().base_url(),
        &room,
        json!({"msgtype": "m.text", "body": "!alarm urgent 2s Levee breach at km 12"}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let (alarm, id) = find_alarm(&chief, &room).await;
    let raised_at = tokio::time::Instant::now();
    // Bob acknowledges with a reaction; Carol only reads (a receipt is not an acknowledgement).
    common::eventually(&bob, 10, || async { bob.get_room(&room).and(Some(())) }).await;
    react(&bob, &room, &alarm).await;
    common::eventually(&carol, 10, || async {
        raw_events(&carol, &room).await.iter().any(|e| e["event_id"] == alarm.as_str()).then_some(())
    })
    .await;
    carol
        .get_room(&room)
        .unwrap()
        .send_single_receipt(
            matrix_sdk::ruma::api::client::receipt::create_receipt::v3::ReceiptType::Read,
            matrix_sdk::ruma::events::receipt::ReceiptThread::Unthreaded,
            alarm.clone(),
        )
        .await
        .unwrap();

    // The reminder, after the 2 s deadline, mentions exactly Carol, and her client sees it.
    let reminder = common::eventually(&carol, 10, || async {
        raw_events(&carol, &room)
            .await
            .into_iter()
            .find(|e| e["content"]["body"].as_str().is_some_and(|b| b.starts_with("⏰")))
    })
    .await;
    assert!(raised_at.elapsed() >= Duration::from_millis(1500), "reminded too early: {:?}", raised_at.elapsed());
    assert_eq!(reminder["content"]["m.mentions"]["user_ids"], json!(["@carol:c.test"]), "{reminder}");
    assert_eq!(reminder["sender"], "@chief:a.test");
    let token = admin_token(s.a(), "admin").await;
    let json = admin_status(s.a(), &token, &id).await;
    assert_eq!(step_names(&json), ["reminder"], "{json}");
    assert_eq!(json["waiting"], json!(["@carol:c.test"]));
    let read: Vec<&str> = json["read"].as_array().unwrap().iter().map(|m| m["user_id"].as_str().unwrap()).collect();
    assert!(read.contains(&"@carol:c.test"), "carol's receipt counts as read: {json}");
    assert!(json["closed"].is_null());

    // Node a restarts between the reminder and the escalation.
    s.restart_a().await;

    // Escalation (3 s after the reminder): the escalation room hears of it, the webhook is
    // called once with a valid signature.
    let chief = fed::client_for(&s.a().base_url(), "chief").await;
    let escalated = common::eventually(&chief, 15, || async {
        raw_events(&chief, &escalation)
            .await
            .into_iter()
            .find(|e| e["content"]["body"].as_str().is_some_and(|b| b.starts_with("🚨 Escalation")))
    })
    .await;
    let text = escalated["content"]["body"].as_str().unwrap();
    assert!(text.contains("1 of 2") && text.contains("@carol:c.test") && text.contains("Levee breach"), "{text}");
    common::eventually_until(10, || async { !s.hook.calls.lock().unwrap().is_empty() }).await;
    let json = common::eventually(&chief, 10, || async {
        let json = admin_status(s.a(), &token, &id).await;
        (step_names(&json).len() == 3).then_some(json)
    })
    .await;
    assert_eq!(step_names(&json), ["reminder", "escalation_room", "webhook"], "{json}");
    let calls = s.hook.calls.lock().unwrap().clone();
    assert_eq!(calls.len(), 1, "one call: {calls:?}");
    let (signature, delivery, body) = &calls[0];
    assert_eq!(signature, &format!("sha256={}", hmac_hex(HOOK_SECRET, body)), "the signature verifies");
    assert_eq!(delivery, &format!("{alarm}/0"));
    let payload: Value = serde_json::from_str(body).unwrap();
    assert_eq!(payload["alarm_id"], id.as_str());
    assert_eq!(payload["waiting"], json!(["@carol:c.test"]));

    // Nothing repeats: one reminder, one escalation message, one call; the status lists the steps.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let reminders = raw_events(&carol, &room).await;
    let reminders =
        reminders.iter().filter(|e| e["content"]["body"].as_str().is_some_and(|b| b.starts_with("⏰"))).count();
    assert_eq!(reminders, 1);
    let escalations = raw_events(&chief, &escalation).await;
    let escalations = escalations
        .iter()
        .filter(|e| e["content"]["body"].as_str().is_some_and(|b| b.starts_with("🚨 Escalation")))
        .count();
    assert_eq!(escalations, 1);
    assert_eq!(s.hook.calls.lock().unwrap().len(), 1);
    let shown = common::eventually(&carol, 10, || async {
        status_text(&carol, &room, &alarm).await.filter(|t| t.contains("webhook"))
    })
    .await;
    assert!(shown.contains("1 of 2 acknowledged") && shown.contains("waiting for: @carol:c.test"), "{shown}");

    // Carol's late reply closes the alarm.
    let reply = json!({"msgtype": "m.text", "body": "on it", "m.relates_to": {"m.in_reply_to": {"event_id": alarm}}});
    carol.get_room(&room).unwrap().send_raw("m.room.message", reply).await.unwrap();
    common::eventually(&carol, 10, || async {
        status_text(&carol, &room, &alarm).await.filter(|t| t.contains("all 2 acknowledged"))
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn alarms_from_those_who_may_not_raise_them_are_refused_here_and_on_receipt() {
    let s = setup().await;
    let chief = fed::user_on(s.a(), "chief").await;
    let clerk = fed::user_on(s.a(), "clerk").await;
    // Node b has no node policy: it lets its user raise an alarm (a misconfigured peer).
    let rogue = fed::user_on(&s.b, "rogue").await;
    let carol = fed::user_on(&s.c, "carol").await;
    let room = fed::shared_room(&chief, &[&clerk, &rogue, &carol]).await;
    fed::until_joined(&chief, &room, rogue.user_id().unwrap()).await;
    fed::until_joined(&rogue, &room, carol.user_id().unwrap()).await;

    // Locally: the clerk's role may not send alarms (403, naming the rule), in either form.
    let block = json!({"msgtype": "m.text", "body": "ALARM", "org.tocsin.alarm": {"id": "x1", "level": "critical"}});
    let (status, body) = send(&clerk, &s.a().base_url(), &room, block).await;
    assert_eq!((status, body["errcode"].as_str()), (403, Some("M_FORBIDDEN")), "{body}");
    assert!(body["error"].as_str().unwrap().contains("policy rule `alarms`"), "{body}");
    let (status, body) =
        send(&clerk, &s.a().base_url(), &room, json!({"msgtype": "m.text", "body": "!alarm info 5m Coffee"})).await;
    assert_eq!(status, 403, "{body}");
    // A malformed command is 400 with the parser's words, not a plain message.
    let (status, body) =
        send(&chief, &s.a().base_url(), &room, json!({"msgtype": "m.text", "body": "!alarm loud Fire"})).await;
    assert_eq!((status, body["errcode"].as_str()), (400, Some("M_BAD_JSON")), "{body}");
    assert!(body["error"].as_str().unwrap().contains("alarm level must be"), "{body}");

    // On receipt: b signs and sends the rogue's alarm; a and c reject it (the list gives b no
    // alarm senders), while b's ordinary messages still arrive.
    let rogue_alarm =
        json!({"msgtype": "m.text", "body": "FAKE EVACUATION", "org.tocsin.alarm": {"id": "r1", "level": "critical"}});
    let (status, body) = send(&rogue, &s.b.base_url(), &room, rogue_alarm).await;
    assert_eq!(status, 200, "node b has no policy against it: {body}");
    let (status, _) = send(&rogue, &s.b.base_url(), &room, json!({"msgtype": "m.text", "body": "after"})).await;
    assert_eq!(status, 200);
    for client in [&chief, &carol] {
        common::eventually(client, 15, || async {
            let texts = fed::texts(client, &room).await;
            texts.iter().any(|t| t == "after").then_some(())
        })
        .await;
        let texts = fed::texts(client, &room).await;
        assert!(!texts.iter().any(|t| t.contains("FAKE")), "{:?} must not see the alarm: {texts:?}", client.user_id());
    }
    assert!(s.a().services.alarms.records().unwrap().is_empty(), "no alarm is tracked");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_cancel_or_a_redaction_stops_escalation_and_a_burst_of_acks_makes_few_edits() {
    let s = setup().await;
    let chief = fed::user_on(s.a(), "chief").await;
    let mut crew = Vec::new();
    for i in 0..10 {
        crew.push(fed::user_on(s.a(), &format!("crew{i}")).await);
    }
    let crew_refs: Vec<&Client> = crew.iter().collect();
    let room = fed::shared_room(&chief, &crew_refs).await;
    let base = s.a().base_url();
    let token = admin_token(s.a(), "admin").await;
    let alarm_with = |id: &str, deadline: u64| {
        json!({"msgtype": "m.text", "body": format!("Alarm {id}"),
               "org.tocsin.alarm": {"id": id, "level": "urgent", "ack_required": true, "ack_deadline_s": deadline}})
    };

    // A burst: ten acknowledgements at once make a handful of edits, and the last says all.
    let (status, body) = send(&chief, &base, &room, alarm_with("burst", 60)).await;
    assert_eq!(status, 200, "{body}");
    let burst: OwnedEventId = body["event_id"].as_str().unwrap().try_into().unwrap();
    common::eventually(&chief, 10, || status_text(&chief, &room, &burst)).await;
    let reactions = crew.iter().map(|c| react(c, &room, &burst));
    futures_util::future::join_all(reactions).await;
    common::eventually(&chief, 10, || async {
        status_text(&chief, &room, &burst).await.filter(|t| t.contains("all 10 acknowledged"))
    })
    .await;
    let events = raw_events(&chief, &room).await;
    let status_id = events
        .iter()
        .find(|e| e["content"]["m.relates_to"]["m.in_reply_to"]["event_id"] == burst.as_str())
        .and_then(|e| e["event_id"].as_str())
        .unwrap()
        .to_owned();
    let edits = events
        .iter()
        .filter(|e| {
            e["content"]["m.relates_to"]["rel_type"] == "m.replace"
                && e["content"]["m.relates_to"]["event_id"] == status_id
        })
        .count();
    assert!((1..=4).contains(&edits), "10 acknowledgements made {edits} edits");

    // A cancel (an edit setting `cancelled`) and a redaction stop escalation before the deadline.
    let (_, body) = send(&chief, &base, &room, alarm_with("to-cancel", 2)).await;
    let cancelled: OwnedEventId = body["event_id"].as_str().unwrap().try_into().unwrap();
    let (_, body) = send(&chief, &base, &room, alarm_with("to-redact", 2)).await;
    let redacted: OwnedEventId = body["event_id"].as_str().unwrap().try_into().unwrap();
    let cancel = json!({
        "msgtype": "m.text", "body": "* Alarm to-cancel (cancelled)",
        "m.new_content": {"msgtype": "m.text", "body": "Alarm to-cancel (cancelled)",
                          "org.tocsin.alarm": {"id": "to-cancel", "level": "urgent", "cancelled": true}},
        "m.relates_to": {"rel_type": "m.replace", "event_id": cancelled},
    });
    let (status, body) = send(&chief, &base, &room, cancel).await;
    assert_eq!(status, 200, "{body}");
    chief.get_room(&room).unwrap().redact(&redacted, Some("sent by mistake"), None).await.unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    for (id, reason) in [("to-cancel", "cancelled"), ("to-redact", "redacted")] {
        let json = admin_status(s.a(), &token, id).await;
        assert_eq!(json["closed"], reason, "{json}");
        assert!(step_names(&json).is_empty(), "no reminder after a {reason}: {json}");
    }
    let cancelled_text = status_text(&chief, &room, &cancelled).await.unwrap();
    assert!(cancelled_text.contains("cancelled"), "{cancelled_text}");
    let reminders = raw_events(&chief, &room).await;
    assert!(!reminders.iter().any(|e| e["content"]["body"].as_str().is_some_and(|b| b.starts_with("⏰"))));
}
