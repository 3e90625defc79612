//! The CAP bridge (issue 11) as a real client of a real node: CAP files dropped into folders
//! land in the rooms the policy routes them to, encrypted where the room is, and a matrix-sdk
//! client decrypts them; an Update and a Cancel edit the original; a duplicate from a second
//! feed, an expired alert and an alert outside every room are not posted; a malformed file is
//! quarantined with its element and line; the node down for a minute loses nothing (across a
//! bridge restart too); alarms typed in a room come out as CAP 1.2 that xmllint validates
//! against the OASIS schema.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use matrix_sdk::deserialized_responses::EncryptionInfo;
use matrix_sdk::event_handler::RawEvent;
use matrix_sdk::ruma::events::room::message::OriginalSyncRoomMessageEvent;
use matrix_sdk::{Client, Room, RoomState};
use serde_json::{Value, json};
use tocsin_bridge::config::{Source, SourceKind};
use tocsin_node::NodeHandle;

use crate::common;

const BOT_PW: &str = "bridge-secret-pw";

pub(crate) fn policy() -> String {
    r#"
[[role]]
name = "duty"
power_level = 50
may_send_alarms = true

[[role]]
name = "bridge"
power_level = 50
may_send_alarms = true

[[account]]
localpart = "officer"
roles = ["duty"]
password = "officer-pw"

[[account]]
localpart = "cap-bridge"
roles = ["bridge"]
password = "bridge-secret-pw"

[[room]]
alias = "flood-ops"
name = "Flood operations"
members = ["officer", "cap-bridge"]

[[room]]
alias = "hazmat"
name = "Hazardous materials"
members = ["officer", "cap-bridge"]
encrypted = false

[bridge]
bot = "cap-bridge"

[[bridge.route]]
room = "flood-ops"
min_severity = "Moderate"
categories = ["Met", "Geo", "Env"]
polygons = ["52.0,13.0 52.0,13.4 52.2,13.4 52.2,13.0 52.0,13.0"]

[[bridge.route]]
room = "hazmat"
categories = ["CBRNE"]
circles = ["52.1,13.2 8"]
"#
    .to_owned()
}

pub fn testdata() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../bridge/testdata/cap")
}

pub fn schema() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../bridge/schema/CAP-v1.2.xsd")
}

/// A message as the officer's client saw it: room alias-less id, content, and whether it was
/// decrypted.
#[derive(Debug, Clone)]
pub(crate) struct Seen {
    pub room: String,
    pub event_id: String,
    pub content: Value,
    pub encrypted: bool,
}

pub(crate) fn inbox(client: &Client) -> Arc<Mutex<Vec<Seen>>> {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let sink = seen.clone();
    client.add_event_handler(
        move |ev: OriginalSyncRoomMessageEvent, room: Room, raw: RawEvent, enc: Option<EncryptionInfo>| {
            let sink = sink.clone();
            async move {
                let raw: Value = serde_json::from_str(raw.get()).expect("raw event is JSON");
                sink.lock().unwrap().push(Seen {
                    room: room.room_id().to_string(),
                    event_id: ev.event_id.to_string(),
                    content: raw["content"].clone(),
                    encrypted: enc.is_some(),
                });
            }
        },
    );
    seen
}

pub(crate) async fn admin_apply(node: &NodeHandle) {
    node.services.users.create_account("root", Some("root-pw"), None, true).await.expect("admin account");
    let login: Value = reqwest::Client::new()
        .post(format!("{}/_matrix/client/v3/login", node.base_url()))
        .json(&json!({"type": "m.login.password", "identifier": {"type": "m.id.user", "user": "root"}, "password": "root-pw"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = login["access_token"].as_str().expect("admin token");
    let resp = reqwest::Client::new()
        .post(format!("{}/_tocsin/admin/policy/apply", node.base_url()))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success(), "policy apply: {}", resp.text().await.unwrap_or_default());
}

pub(crate) fn bridge_config(dir: &Path, homeserver: &str, policy: &Path) -> tocsin_bridge::Config {
    tocsin_bridge::Config {
        homeserver: homeserver.to_owned(),
        user: None,
        password: Some(BOT_PW.into()),
        password_file: None,
        data_dir: dir.join("bridge-data"),
        policy: policy.to_owned(),
        listen: Some("127.0.0.1:0".parse().unwrap()),
        public_url: None,
        sources: vec![
            Source {
                name: "feed-a".into(),
                template: None,
                require_signature: false,
                trusted_certs: Vec::new(),
                kind: SourceKind::Folder { path: dir.join("in-a"), interval_ms: 100 },
            },
            Source {
                name: "feed-b".into(),
                template: None,
                require_signature: false,
                trusted_certs: Vec::new(),
                kind: SourceKind::Folder { path: dir.join("in-b"), interval_ms: 100 },
            },
            Source {
                name: "push".into(),
                template: None,
                require_signature: false,
                trusted_certs: Vec::new(),
                kind: SourceKind::CapPost { hmac_secret: Some("hmac-key".into()), bearer_secret: None },
            },
        ],
    }
}

/// Drops a file the way the README tells writers to: a dot-name, then a rename.
pub(crate) fn drop_file(dir: &Path, name: &str, text: &str) {
    std::fs::create_dir_all(dir).unwrap();
    let tmp = dir.join(format!(".{name}"));
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(tmp, dir.join(name)).unwrap();
}

pub(crate) fn fixture(name: &str) -> String {
    std::fs::read_to_string(testdata().join(name)).unwrap()
}

/// The officer of the test policy, logged in, with both of the policy's rooms joined and an
/// inbox of what the officer's client sees.
pub(crate) async fn officer_in_rooms(node: &NodeHandle) -> (Client, Arc<Mutex<Vec<Seen>>>) {
    let officer = common::login(node, "officer", "officer-pw").await;
    let seen = inbox(&officer);
    join_policy_rooms(&officer).await;
    (officer, seen)
}

/// Joins the two rooms the test policy invites the officer to, once both invites are in.
pub(crate) async fn join_policy_rooms(officer: &Client) {
    common::eventually(officer, 10, || async {
        (officer.rooms().iter().filter(|r| r.state() == RoomState::Invited).count() == 2).then_some(())
    })
    .await;
    for room in officer.rooms() {
        officer.join_room_by_id(room.room_id()).await.expect("officer joins");
    }
    common::sync(officer).await;
}

/// When the client first saw each alarm, by the CAP identifier it carries.
pub(crate) fn arrivals_by_cap_identifier(client: &Client) -> Arc<Mutex<HashMap<String, Instant>>> {
    let arrivals: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let sink = arrivals.clone();
    client.add_event_handler(move |_: OriginalSyncRoomMessageEvent, raw: RawEvent| {
        let sink = sink.clone();
        async move {
            let raw: Value = serde_json::from_str(raw.get()).unwrap_or_default();
            if let Some(id) = raw["content"]["org.tocsin.alarm"]["cap_identifier"].as_str() {
                sink.lock().unwrap().entry(id.to_owned()).or_insert_with(Instant::now);
            }
        }
    });
    arrivals
}

pub(crate) async fn room_id(client: &Client, alias: &str) -> String {
    let alias = matrix_sdk::ruma::RoomAliasId::parse(format!("#{alias}:tocsin.test")).unwrap();
    client.resolve_room_alias(&alias).await.expect("alias resolves").room_id.to_string()
}

pub(crate) fn alarms_in(inbox: &Mutex<Vec<Seen>>, room: &str) -> Vec<Seen> {
    inbox
        .lock()
        .unwrap()
        .iter()
        .filter(|s| s.room == room && s.content.get("org.tocsin.alarm").is_some())
        .cloned()
        .collect()
}

pub(crate) fn originals(seen: &[Seen]) -> Vec<&Seen> {
    seen.iter().filter(|s| s.content.get("m.relates_to").is_none()).collect()
}

fn edits_of<'a>(seen: &'a [Seen], target: &str) -> Vec<&'a Seen> {
    seen.iter().filter(|s| s.content["m.relates_to"]["event_id"].as_str() == Some(target)).collect()
}

pub(crate) async fn wait_for<T>(client: &Client, secs: u64, mut check: impl FnMut() -> Option<T>) -> T {
    common::eventually(client, secs, || {
        let v = check();
        async move { v }
    })
    .await
}

pub(crate) fn metric(text: &str, name: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("tocsin_bridge_{name} ")))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("metric {name} in {text}"))
}

pub(crate) async fn metrics(bridge: &tocsin_bridge::BridgeHandle) -> String {
    let addr = bridge.http_addr.expect("bridge listens");
    reqwest::get(format!("http://{addr}/metrics")).await.unwrap().text().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cap_alerts_become_alarms_in_the_right_rooms_and_nothing_is_lost() {
    let dir = tempfile::tempdir().unwrap();
    let policy_file = dir.path().join("policy.toml");
    std::fs::write(&policy_file, policy()).unwrap();
    let node_dir = dir.path().join("node");
    let node = common::start(&node_dir, |c| c.policy = Some(policy_file.clone())).await;
    let addr = node.addr;
    admin_apply(&node).await;

    let (officer, seen) = officer_in_rooms(&node).await;
    let flood = room_id(&officer, "flood-ops").await;
    let hazmat = room_id(&officer, "hazmat").await;

    let bridge =
        tocsin_bridge::start(bridge_config(dir.path(), &node.base_url(), &policy_file)).await.expect("bridge starts");
    let in_a = dir.path().join("in-a");
    let in_b = dir.path().join("in-b");
    for name in [
        "01-oasis-a1-homeland-security.xml",
        "02-oasis-a2-severe-thunderstorm.xml",
        "03-oasis-a3-earthquake-update.xml",
        "04-oasis-a4-amber-multilingual.xml",
        "10-flood-alert.xml",
        "20-storm-bilingual.xml",
        "30-chemical-release.xml",
        "40-exercise-flood-drill.xml",
        "60-outside-every-room.xml",
        "90-malformed.xml",
    ] {
        drop_file(&in_a, name, &fixture(name));
    }

    // Flood, storm and the drill in #flood-ops (encrypted), the chemical release in #hazmat.
    wait_for(&officer, 30, || {
        (originals(&alarms_in(&seen, &flood)).len() >= 3 && !alarms_in(&seen, &hazmat).is_empty()).then_some(())
    })
    .await;
    // The same flood alert from a second feed, after the first is in.
    drop_file(&in_b, "50-flood-duplicate-second-feed.xml", &fixture("50-flood-duplicate-second-feed.xml"));
    common::eventually_until(10, || async { !in_b.join("50-flood-duplicate-second-feed.xml").exists() }).await;

    let flood_alarms = alarms_in(&seen, &flood);
    assert!(
        flood_alarms.iter().all(|s| s.encrypted),
        "#flood-ops is encrypted and the officer decrypted: {flood_alarms:#?}"
    );
    let hazmat_alarms = alarms_in(&seen, &hazmat);
    assert!(hazmat_alarms.iter().all(|s| !s.encrypted), "#hazmat is not encrypted");
    let body = |s: &Seen| s.content["body"].as_str().unwrap_or("").to_owned();
    let flood_msg = flood_alarms
        .iter()
        .find(|s| body(s).contains("River Aller above 4.2 m"))
        .unwrap_or_else(|| panic!("flood alarm in #flood-ops: {flood_alarms:#?}"))
        .clone();
    let block = &flood_msg.content["org.tocsin.alarm"];
    assert_eq!(block["level"], "critical", "Severe + Immediate is critical: {block}");
    assert_eq!(block["cap_identifier"], "RIV-FLOOD-2026-0042");
    for part in ["Riverton lower valley", "Leave the lower valley", "Expires: 2099-12-31T23:00:00+01:00", "Severe"] {
        assert!(body(&flood_msg).contains(part), "body shows {part:?}: {}", body(&flood_msg));
    }
    assert!(flood_msg.content["formatted_body"].as_str().unwrap().contains("<strong>"), "HTML for rich clients");
    let storm = flood_alarms.iter().find(|s| body(s).contains("Gale-force")).expect("storm alarm");
    assert!(body(storm).contains("(de-DE) Orkanartige Böen"), "both languages: {}", body(storm));
    let drill = flood_alarms.iter().find(|s| body(s).contains("Flood drill")).expect("exercise alarm");
    assert!(body(drill).starts_with("EXERCISE — NOT A REAL ALERT"), "{}", body(drill));
    assert_eq!(drill.content["org.tocsin.alarm"]["level"], "info", "an exercise never rings");
    assert_eq!(drill.content["org.tocsin.alarm"]["ack_required"], false);
    assert!(body(&hazmat_alarms[0]).contains("Chlorine leak"), "{hazmat_alarms:#?}");
    // Not posted: the duplicate, the expired and unrouted standard examples, the North Sea surge.
    assert_eq!(originals(&flood_alarms).len(), 3, "{flood_alarms:#?}");
    assert_eq!(hazmat_alarms.len(), 1);

    // The malformed file is in quarantine, with the element and line.
    let quarantined = in_a.join("quarantine/90-malformed.xml");
    assert!(quarantined.exists(), "quarantined file");
    let why = std::fs::read_to_string(in_a.join("quarantine/90-malformed.xml.error.txt")).unwrap();
    assert!(why.contains("line 13") && why.contains("alert/info[1]/severity"), "error names element and line: {why}");
    assert!(in_a.join("done/10-flood-alert.xml").exists(), "taken files move to done/");
    let m = metrics(&bridge).await;
    assert_eq!(metric(&m, "alerts_quarantined_total"), 1, "{m}");
    assert_eq!(metric(&m, "alerts_deduplicated_total"), 1, "{m}");
    assert_eq!(metric(&m, "alerts_posted_total"), 4, "{m}");
    assert_eq!(metric(&m, "alerts_expired_total"), 1, "the thunderstorm example expired in 2003: {m}");

    // Update, then Cancel: both edit the original, following references.
    drop_file(&in_a, "11-flood-update.xml", &fixture("11-flood-update.xml"));
    let update = wait_for(&officer, 20, || {
        edits_of(&alarms_in(&seen, &flood), &flood_msg.event_id).first().map(|s| (*s).clone())
    })
    .await;
    assert_eq!(update.content["m.relates_to"]["rel_type"], "m.replace");
    let new_body = update.content["m.new_content"]["body"].as_str().unwrap();
    assert!(new_body.starts_with("UPDATE — "), "{new_body}");
    assert!(new_body.contains("severity: Severe → Extreme"), "says what changed: {new_body}");
    assert!(new_body.contains("area: Riverton lower valley → Riverton lower valley and Old Town"), "{new_body}");
    drop_file(&in_a, "12-flood-cancel.xml", &fixture("12-flood-cancel.xml"));
    let cancel = wait_for(&officer, 20, || {
        edits_of(&alarms_in(&seen, &flood), &flood_msg.event_id)
            .into_iter()
            .find(|s| s.content["m.new_content"]["org.tocsin.alarm"]["cancelled"] == true)
            .cloned()
    })
    .await;
    assert!(cancel.content["m.new_content"]["body"].as_str().unwrap().starts_with("CANCELLED — The Aller is falling"));
    assert_eq!(cancel.content["m.new_content"]["org.tocsin.alarm"]["ack_required"], false);

    // The homeserver goes away for a minute. An alert arrives meanwhile, the bridge restarts
    // (outbox and posted alerts are on disk), then the homeserver comes back.
    node.shutdown().await;
    let storm2 = fixture("20-storm-bilingual.xml")
        .replace("DWD-STORM-2026-7731", "DWD-STORM-2026-7799")
        .replace("Gale-force gusts up to 110", "Gale-force gusts up to 130");
    drop_file(&in_a, "70-storm-during-outage.xml", &storm2);
    common::eventually_until(10, || async { !in_a.join("70-storm-during-outage.xml").exists() }).await;
    assert_eq!(bridge.store.outbox_len().unwrap(), 1, "the alert waits in the outbox");
    bridge.stop().await;
    let bridge = tocsin_bridge::start(bridge_config(dir.path(), &format!("http://{addr}"), &policy_file))
        .await
        .expect("bridge restarts without the homeserver");
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert_eq!(bridge.store.outbox_len().unwrap(), 1, "still waiting, not dropped");
    let node = common::start(&node_dir, |c| {
        c.policy = Some(policy_file.clone());
        c.listen = addr;
    })
    .await;
    let back = Instant::now();
    let storm2_seen =
        wait_for(&officer, 60, || alarms_in(&seen, &flood).into_iter().find(|s| body(s).contains("gusts up to 130")))
            .await;
    assert!(storm2_seen.encrypted);
    eprintln!("outbox delivered {:?} after the node came back", back.elapsed());
    // Nothing was posted twice by the restarted bridge.
    common::sync(&officer).await;
    assert_eq!(originals(&alarms_in(&seen, &flood)).len(), 4);

    // CAP out: an alarm typed in the room, then cancelled by an edit.
    let room = officer.get_room(&matrix_sdk::ruma::RoomId::parse(&flood).unwrap()).unwrap();
    let typed = room
        .send_raw(
            "m.room.message",
            json!({"msgtype": "m.text", "body": "!alarm critical 10m Evacuate sector 4 & close the weir"}),
        )
        .await
        .expect("officer sends an alarm");
    let typed_id = typed.response.event_id.to_string();
    let mut block = tocsin_events::AlarmBlock::new("a-1", tocsin_events::AlarmLevel::Critical);
    block.cancelled = true;
    let new_content = block.message("Sector 4 is safe again", "Sector 4 is safe again");
    let mut edit = new_content.clone();
    edit["body"] = "* Sector 4 is safe again".into();
    edit["m.new_content"] = new_content;
    edit["m.relates_to"] = json!({"rel_type": "m.replace", "event_id": typed_id});
    room.send_raw("m.room.message", edit).await.expect("officer cancels it");

    let base = format!("http://{}", bridge.http_addr.unwrap());
    let feed = {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let feed = reqwest::get(format!("{base}/cap/feed.atom")).await.unwrap().text().await.unwrap();
            if feed.matches("<entry>").count() >= 2 {
                break feed;
            }
            assert!(Instant::now() < deadline, "two alarms in the CAP feed: {feed}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    let work = dir.path().join("capout");
    std::fs::create_dir_all(&work).unwrap();
    std::fs::write(work.join("feed.atom"), &feed).unwrap();
    xmllint(&["--noout", work.join("feed.atom").to_str().unwrap()]);
    let links: Vec<String> = feed
        .split("type=\"application/cap+xml\" href=\"")
        .skip(1)
        .filter_map(|s| s.split('"').next().map(str::to_owned))
        .collect();
    assert_eq!(links.len(), 2, "{feed}");
    let mut docs = Vec::new();
    for (i, link) in links.iter().enumerate() {
        let doc = reqwest::get(link).await.unwrap().text().await.unwrap();
        let file = work.join(format!("alert-{i}.xml"));
        std::fs::write(&file, &doc).unwrap();
        xmllint(&["--noout", "--schema", schema().to_str().unwrap(), file.to_str().unwrap()]);
        docs.push(doc);
    }
    let alert = docs.iter().find(|d| d.contains("<msgType>Alert</msgType>")).expect("the typed alarm as a CAP Alert");
    assert!(
        alert.contains("Evacuate sector 4 &amp; close the weir") && alert.contains("<severity>Extreme</severity>"),
        "{alert}"
    );
    let cancel = docs.iter().find(|d| d.contains("<msgType>Cancel</msgType>")).expect("the cancel as a CAP Cancel");
    let original_id = alert.split("<identifier>").nth(1).and_then(|s| s.split('<').next()).unwrap();
    assert!(cancel.contains(&format!(",{original_id},")), "the Cancel references the Alert: {cancel}");

    bridge.stop().await;
    node.shutdown().await;
}

pub fn xmllint(args: &[&str]) {
    let out = std::process::Command::new("xmllint").args(args).output().expect("xmllint is installed (libxml2-utils)");
    assert!(out.status.success(), "xmllint {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}
