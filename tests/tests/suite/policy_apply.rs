//! `policy plan` / `policy apply` on a running node (issue 5 point 7): apply provisions the
//! policy's accounts and rooms, the accounts log in with a real client and find the rooms as
//! the policy describes them, and a second apply changes nothing. The `tocsin-node` CLI does
//! the same against the node's admin API.

use std::{path::Path, time::Duration};

use matrix_sdk::{Client, RoomState};
use serde_json::Value;
use tocsin_node::NodeHandle;

use crate::common;

/// The demo's hash of "tocsin-demo" (policies/examples/riverton.toml), so one account logs in
/// with a `password_hash` and the other with a plaintext `password`.
const DEMO_HASH: &str =
    "$argon2id$v=19$m=19456,t=2,p=1$TLw07Mk2TuV0CvwQG6ez8g$aAj9B+1ne34GZd7Ms+aDcmiky5G4ySuvptIXPgfNALg";

fn policy() -> String {
    format!(
        r#"
[room_defaults]
encryption = true
history_visibility = "shared"
retention_max_age = "7d"

[[role]]
name = "chief"
power_level = 100

[[role]]
name = "staff"
power_level = 50

[[account]]
localpart = "chief"
display_name = "Chief Ann"
roles = ["chief"]
admin = true
password = "chief-pw"

[[account]]
localpart = "officer"
display_name = "Duty officer"
roles = ["staff"]
password_hash = "{DEMO_HASH}"

[[room]]
alias = "ops"
name = "Operations"
kind = "space"
members_by_role = ["chief", "staff"]

[[room]]
alias = "staff"
name = "Crisis staff"
topic = "Internal coordination"
members_by_role = ["chief", "staff"]
parent = "ops"

[[room]]
alias = "press"
name = "Press"
topic = "Approved statements"
members = ["chief"]
encrypted = false
history_visibility = "joined"
parent = "ops"
"#
    )
}

async fn start(dir: &Path) -> NodeHandle {
    let policy_file = dir.join("policy.toml");
    std::fs::write(&policy_file, policy()).unwrap();
    common::start(&dir.join("node"), |c| c.policy = Some(policy_file)).await
}

/// An admin account outside the policy, as `tocsin-node user add root --admin` makes one.
async fn token(node: &NodeHandle, name: &str, password: &str, admin: bool) -> String {
    node.services.users.create_account(name, Some(password), None, admin).await.expect("account created");
    login_token(node, name, password).await
}

async fn login_token(node: &NodeHandle, name: &str, password: &str) -> String {
    let v: Value = reqwest::Client::new()
        .post(format!("{}/_matrix/client/v3/login", node.base_url()))
        .json(&serde_json::json!({"type": "m.login.password", "identifier": {"type": "m.id.user", "user": name}, "password": password}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    v["access_token"].as_str().unwrap_or_else(|| panic!("login of {name}: {v}")).to_owned()
}

async fn admin(node: &NodeHandle, method: reqwest::Method, what: &str, token: Option<&str>) -> (u16, Value) {
    let mut req = reqwest::Client::new().request(method, format!("{}/_tocsin/admin/policy/{what}", node.base_url()));
    if let Some(token) = token {
        req = req.bearer_auth(token);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap())
}

fn lines(v: &Value, field: &str) -> Vec<String> {
    v[field]
        .as_array()
        .unwrap_or_else(|| panic!("no {field} in {v}"))
        .iter()
        .map(|l| l.as_str().unwrap().to_owned())
        .collect()
}

fn has_account(node: &NodeHandle, localpart: &str) -> bool {
    let user_id = node.services.users.user_id_for(localpart).unwrap();
    node.services.users.account(&user_id).unwrap().is_some()
}

/// The depth of each provisioned room: grows with every event sent in it.
async fn depths(node: &NodeHandle) -> Vec<u64> {
    let mut out = Vec::new();
    for alias in ["ops", "staff", "press"] {
        let alias = tocsin_node::ruma::RoomAliasId::parse(format!("#{alias}:tocsin.test")).unwrap();
        let room_id = node.services.rooms.resolve_alias(&alias).unwrap().expect("provisioned room");
        out.push(node.services.rooms.head(&room_id).unwrap().lock().await.depth);
    }
    out
}

/// Joins every room the client is invited to; returns how many.
async fn join_invites(client: &Client, expected: usize) {
    common::eventually(client, 10, || async {
        (client.rooms().iter().filter(|r| r.state() == RoomState::Invited).count() == expected).then_some(())
    })
    .await;
    for room in client.rooms().into_iter().filter(|r| r.state() == RoomState::Invited) {
        client.join_room_by_id(room.room_id()).await.expect("invitee joins");
    }
    common::sync(client).await;
}

async fn room(client: &Client, alias: &str) -> matrix_sdk::Room {
    let alias = matrix_sdk::ruma::RoomAliasId::parse(format!("#{alias}:tocsin.test")).unwrap();
    let id = client.resolve_room_alias(&alias).await.expect("alias resolves").room_id;
    client.get_room(&id).expect("room known to the client")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policy_apply_provisions_rooms_and_accounts_and_a_second_apply_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let node = start(dir.path()).await;
    let root = token(&node, "root", "root-pw", true).await;
    let visitor = token(&node, "visitor", "visitor-pw", false).await;

    // Only server admins plan or apply.
    let (status, body) = admin(&node, reqwest::Method::GET, "plan", None).await;
    assert_eq!((status, body["errcode"].as_str()), (401, Some("M_MISSING_TOKEN")), "{body}");
    let (status, body) = admin(&node, reqwest::Method::POST, "apply", Some(&visitor)).await;
    assert_eq!((status, body["errcode"].as_str()), (403, Some("M_FORBIDDEN")), "{body}");

    let (status, plan) = admin(&node, reqwest::Method::GET, "plan", Some(&root)).await;
    assert_eq!(status, 200, "{plan}");
    let changes = lines(&plan, "changes");
    for expected in [
        "create account @chief (display name \"Chief Ann\", roles [chief], server admin, password from policy)",
        "create account @officer (display name \"Duty officer\", roles [staff], password hash from policy)",
        "create space #ops \"Operations\"",
        "create room #staff \"Crisis staff\" (encrypted, history shared, restricted, retention 7d)",
        "create room #press \"Press\" (NOT encrypted, history joined",
        "add #staff to space #ops",
        "allow servers in #staff: tocsin.test",
        "invite @officer:tocsin.test to #staff",
        "set power level of @chief:tocsin.test in #staff: 0 -> 100",
        "set power level of @officer:tocsin.test in #staff: 0 -> 50",
    ] {
        assert!(changes.iter().any(|c| c.starts_with(expected)), "plan lacks `{expected}`:\n{}", changes.join("\n"));
    }
    assert!(lines(&plan, "conflicts").is_empty(), "{plan}");
    // Planning changes nothing.
    assert!(!has_account(&node, "chief"));

    // Two applies at once (say, CI and an operator): one does everything, the other nothing.
    let ((s1, first), (s2, second)) = tokio::join!(
        admin(&node, reqwest::Method::POST, "apply", Some(&root)),
        admin(&node, reqwest::Method::POST, "apply", Some(&root)),
    );
    assert_eq!((s1, s2), (200, 200), "{first}\n{second}");
    let (applied, idle) = if lines(&first, "applied").is_empty() { (second, first) } else { (first, second) };
    assert_eq!(applied["failed"], serde_json::json!([]), "{applied}");
    assert_eq!(lines(&applied, "applied"), changes, "apply does what plan showed");
    assert!(
        lines(&idle, "applied").is_empty() && idle["failed"] == serde_json::json!([]),
        "the concurrent apply: {idle}"
    );

    // The accounts log in with their policy credentials (plaintext and argon2 hash).
    let chief = common::login(&node, "chief", "chief-pw").await;
    let officer = common::login(&node, "officer", "tocsin-demo").await;
    join_invites(&chief, 3).await;
    join_invites(&officer, 2).await;

    let chief_id = chief.user_id().unwrap().to_owned();
    let officer_id = officer.user_id().unwrap().to_owned();
    let staff = room(&officer, "staff").await;
    assert_eq!(staff.name().as_deref(), Some("Crisis staff"));
    assert_eq!(staff.topic().as_deref(), Some("Internal coordination"));
    assert!(staff.latest_encryption_state().await.unwrap().is_encrypted(), "the staff room is encrypted");
    let levels = staff.users_with_power_levels().await;
    assert_eq!(levels.get(&chief_id), Some(&100), "{levels:?}");
    assert_eq!(levels.get(&officer_id), Some(&50), "{levels:?}");
    let ops = room(&officer, "ops").await;
    assert!(ops.is_space(), "#ops is a space");
    assert_eq!(ops.name().as_deref(), Some("Operations"));
    let press = room(&chief, "press").await;
    assert!(!press.latest_encryption_state().await.unwrap().is_encrypted(), "#press is not encrypted by policy");
    assert_eq!(press.topic().as_deref(), Some("Approved statements"));

    // The space lists its rooms, and the room's retention is the policy's 7 days.
    let http = reqwest::Client::new();
    let chief_token = login_token(&node, "chief", "chief-pw").await;
    let state = |room_id: String, kind: &'static str, key: String| {
        let url = format!("{}/_matrix/client/v3/rooms/{room_id}/state/{kind}/{key}", node.base_url());
        http.get(url).bearer_auth(&chief_token).send()
    };
    let child: Value = state(ops.room_id().to_string(), "m.space.child", staff.room_id().to_string())
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(child["via"], serde_json::json!(["tocsin.test"]), "{child}");
    let retention: Value =
        state(staff.room_id().to_string(), "m.room.retention", String::new()).await.unwrap().json().await.unwrap();
    assert_eq!(retention["max_lifetime"], 7 * 24 * 3600 * 1000, "{retention}");

    // Plan again, as the chief (an admin by policy now): nothing to do.
    let (_, plan) = admin(&node, reqwest::Method::GET, "plan", Some(&chief_token)).await;
    assert!(lines(&plan, "changes").is_empty(), "plan after apply: {plan}");
    let before = depths(&node).await;
    let accounts = node.services.users.accounts().unwrap().len();
    let (status, again) = admin(&node, reqwest::Method::POST, "apply", Some(&chief_token)).await;
    assert_eq!(status, 200, "{again}");
    assert!(lines(&again, "applied").is_empty(), "second apply: {again}");
    assert_eq!(depths(&node).await, before, "a second apply sends no event");
    assert_eq!(node.services.users.accounts().unwrap().len(), accounts, "a second apply creates no account");

    // A drift is planned and undone: the chief changes the topic, apply sets it back.
    let chief_staff = room(&chief, "staff").await;
    chief_staff.set_room_topic("hijacked").await.expect("the chief may set the topic");
    let (_, plan) = admin(&node, reqwest::Method::GET, "plan", Some(&root)).await;
    assert_eq!(
        lines(&plan, "changes"),
        vec!["set topic of #staff: \"hijacked\" -> \"Internal coordination\"".to_owned()],
        "{plan}"
    );
    let (_, applied) = admin(&node, reqwest::Method::POST, "apply", Some(&root)).await;
    assert_eq!(lines(&applied, "applied").len(), 1, "{applied}");
    common::eventually(&officer, 10, || async {
        (staff.topic().as_deref() == Some("Internal coordination")).then_some(())
    })
    .await;
    node.shutdown().await;
}

/// The policy changes in version control: the node reloads it, plan shows the difference and
/// apply makes it (a new display name and role, so new power levels, and a new room).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edited_policy_is_planned_and_applied() {
    let dir = tempfile::tempdir().unwrap();
    let node = start(dir.path()).await;
    let root = token(&node, "root", "root-pw", true).await;
    let (_, first) = admin(&node, reqwest::Method::POST, "apply", Some(&root)).await;
    assert_eq!(first["failed"], serde_json::json!([]), "{first}");
    let officer = common::login(&node, "officer", "tocsin-demo").await;
    join_invites(&officer, 2).await;

    let edited = policy().replace(
        "display_name = \"Duty officer\"\nroles = [\"staff\"]",
        "display_name = \"Night officer\"\nroles = [\"chief\"]",
    ) + "\n[[room]]\nalias = \"logistics\"\nname = \"Logistics\"\nmembers_by_role = [\"chief\"]\n";
    assert_ne!(edited, policy() + "\n", "the edit applies to the policy text");
    std::fs::write(dir.path().join("policy.toml"), edited).unwrap();
    node.services.policy.reload().expect("the edited policy loads");

    let (_, plan) = admin(&node, reqwest::Method::GET, "plan", Some(&root)).await;
    let changes = lines(&plan, "changes");
    for expected in [
        "set display name of @officer: \"Duty officer\" -> \"Night officer\"",
        "set roles of @officer: [chief]",
        "create room #logistics \"Logistics\"",
        "invite @officer:tocsin.test to #logistics",
        "set power level of @officer:tocsin.test in #staff: 50 -> 100",
    ] {
        assert!(changes.iter().any(|c| c.starts_with(expected)), "plan lacks `{expected}`:\n{}", changes.join("\n"));
    }
    let (_, applied) = admin(&node, reqwest::Method::POST, "apply", Some(&root)).await;
    assert_eq!(applied["failed"], serde_json::json!([]), "{applied}");
    assert_eq!(lines(&applied, "applied"), changes);

    // The officer sees the new level and name in the room they were in, and the new room.
    let officer_id = officer.user_id().unwrap().to_owned();
    let staff = room(&officer, "staff").await;
    common::eventually(&officer, 10, || async {
        let level = staff.users_with_power_levels().await.get(&officer_id).copied();
        let member = staff.get_member_no_sync(&officer_id).await.ok().flatten()?;
        (level == Some(100) && member.display_name() == Some("Night officer")).then_some(())
    })
    .await;
    join_invites(&officer, 1).await;
    assert_eq!(room(&officer, "logistics").await.name().as_deref(), Some("Logistics"));
    let (_, plan) = admin(&node, reqwest::Method::GET, "plan", Some(&root)).await;
    assert!(lines(&plan, "changes").is_empty(), "plan after apply: {plan}");
    node.shutdown().await;
}

/// The example a municipal admin copies first (policies/examples/riverton.toml) provisions a
/// node: every local change applies; the invites to Lakeside and the County Fire Service, which
/// are not running here, fail and are what the next plan still shows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_riverton_example_policy_provisions_a_node() {
    let dir = tempfile::tempdir().unwrap();
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../policies/examples/riverton.toml");
    let node = common::start(dir.path(), |c| {
        c.server_name = "riverton:8448".into();
        c.policy = Some(example);
        // The other members are pinned to ports nothing listens on: they are down.
        for peer in ["lakeside:8449", "county-fire:8450"] {
            let closed = std::net::SocketAddr::from(([127, 0, 0, 1], tocsin_tests::cluster::free_port()));
            c.federation_pins.insert(peer.into(), closed);
        }
    })
    .await;
    let root = token(&node, "root", "root-pw", true).await;
    let (_, applied) = admin(&node, reqwest::Method::POST, "apply", Some(&root)).await;
    let mut failed: Vec<String> = applied["failed"]
        .as_array()
        .expect("failed is a list")
        .iter()
        .map(|f| f["change"].as_str().unwrap().to_owned())
        .collect();
    failed.sort();
    let remote_invites = vec![
        "invite @chief:county-fire:8450 to #valley-crisis".to_owned(),
        "invite @emergency.manager:lakeside:8449 to #valley-crisis".to_owned(),
        "invite @mayor:lakeside:8449 to #valley-crisis".to_owned(),
    ];
    assert_eq!(failed, remote_invites, "only the invites to the members that are down fail: {applied}");

    // The example's mayor logs in with the demo password and is invited to the space and its
    // three rooms, where the mayor role gives power level 100.
    let mayor = common::login(&node, "mayor", "tocsin-demo").await;
    join_invites(&mayor, 4).await;
    let crisis = mayor
        .get_room(
            &mayor
                .resolve_room_alias(&matrix_sdk::ruma::RoomAliasId::parse("#crisis-staff:riverton:8448").unwrap())
                .await
                .unwrap()
                .room_id,
        )
        .unwrap();
    assert_eq!(crisis.name().as_deref(), Some("Riverton crisis staff"));
    assert!(crisis.latest_encryption_state().await.unwrap().is_encrypted());
    assert_eq!(crisis.users_with_power_levels().await.get(mayor.user_id().unwrap()), Some(&100));

    let (_, plan) = admin(&node, reqwest::Method::GET, "plan", Some(&root)).await;
    let mut left = lines(&plan, "changes");
    left.sort();
    assert_eq!(left, remote_invites, "{plan}");
    node.shutdown().await;
}

/// A policy whose `[node] server_name` names another node is refused: at start (see
/// `policy_safety.rs`) and on a reload, where the node keeps the policy it had.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operator_token_applies_the_policy_on_a_node_with_no_accounts() {
    let dir = tempfile::tempdir().unwrap();
    let (policy_file, token_file) = (dir.path().join("policy.toml"), dir.path().join("admin.token"));
    std::fs::write(&policy_file, policy()).unwrap();
    std::fs::write(&token_file, "operator-secret-0123456789").unwrap();
    let node = common::start(&dir.path().join("node"), |c| {
        c.policy = Some(policy_file);
        c.admin_token_file = Some(token_file);
    })
    .await;
    let (status, body) = admin(&node, reqwest::Method::POST, "apply", Some("operator-secret-0123456789")).await;
    assert_eq!(status, 200, "{body}");
    // The policy's chief exists now, with the policy's password.
    assert!(!login_token(&node, "chief", "chief-pw").await.is_empty());
    let (status, body) = admin(&node, reqwest::Method::POST, "apply", Some("operator-secret-wrong")).await;
    assert_eq!(status, 401, "{body}");
}

#[tokio::test]
async fn a_policy_for_another_node_is_not_applied() {
    let dir = tempfile::tempdir().unwrap();
    let policy_file = dir.path().join("policy.toml");
    std::fs::write(&policy_file, policy()).unwrap();
    let node = common::start(&dir.path().join("node"), |c| c.policy = Some(policy_file.clone())).await;
    std::fs::write(&policy_file, format!("[node]\nserver_name = \"elsewhere.test\"\n{}", policy())).unwrap();
    let error = node.services.policy.reload().expect_err("a policy for elsewhere.test is refused");
    assert!(error.contains("written for server elsewhere.test"), "{error}");
    let root = token(&node, "root", "root-pw", true).await;
    let (_, plan) = admin(&node, reqwest::Method::GET, "plan", Some(&root)).await;
    assert!(
        !lines(&plan, "conflicts").iter().any(|c| c.contains("elsewhere.test")),
        "the node keeps its own policy: {plan}"
    );
    node.shutdown().await;
}

struct Output {
    ok: bool,
    stdout: String,
    stderr: String,
}

async fn cli(binary: &Path, config: &Path, args: &[&str], token: Option<&str>) -> Output {
    let mut cmd = tokio::process::Command::new(binary);
    cmd.arg("--config").arg(config).args(args).env_remove("TOCSIN_ADMIN_TOKEN").env("TOCSIN_LOG", "error");
    if let Some(token) = token {
        cmd.env("TOCSIN_ADMIN_TOKEN", token);
    }
    let out = tokio::time::timeout(Duration::from_secs(60), cmd.output()).await.expect("cli finishes").unwrap();
    Output {
        ok: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policy_cli_plans_and_applies_on_the_running_node() {
    let binary = tokio::task::spawn_blocking(common::tocsin_node_binary).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let node = start(dir.path()).await;
    let root = token(&node, "root", "root-pw", true).await;
    let visitor = token(&node, "visitor", "visitor-pw", false).await;
    // The operator's config: the CLI finds the node by its `listen` address.
    let config = dir.path().join("tocsin.toml");
    std::fs::write(&config, format!("server_name = \"tocsin.test\"\nlisten = \"{}\"\n", node.addr)).unwrap();

    let out = cli(&binary, &config, &["policy", "plan"], None).await;
    assert!(!out.ok && out.stderr.contains("TOCSIN_ADMIN_TOKEN"), "no token: {}", out.stderr);
    let out = cli(&binary, &config, &["policy", "plan"], Some(&visitor)).await;
    assert!(!out.ok && out.stderr.contains("needs the access token of a server admin"), "{}", out.stderr);
    assert!(out.stderr.contains("M_FORBIDDEN"), "{}", out.stderr);

    let out = cli(&binary, &config, &["policy", "plan"], Some(&root)).await;
    assert!(out.ok, "plan: {}", out.stderr);
    assert!(out.stdout.contains("change(s) on tocsin.test"), "{}", out.stdout);
    assert!(out.stdout.contains("\n  create account @chief (display name \"Chief Ann\""), "{}", out.stdout);
    assert!(out.stdout.contains("\n  invite @officer:tocsin.test to #staff\n"), "{}", out.stdout);
    let planned = out.stdout.lines().filter(|l| l.starts_with("  ")).count();
    assert!(!has_account(&node, "chief"));

    let out = cli(&binary, &config, &["policy", "apply", "--token", &root], None).await;
    assert!(out.ok, "apply: {}\n{}", out.stdout, out.stderr);
    assert!(out.stdout.contains(&format!("applied {planned} change(s) on tocsin.test")), "{}", out.stdout);
    // What apply printed happened: the chief logs in and is invited to the three rooms.
    let chief = common::login(&node, "chief", "chief-pw").await;
    join_invites(&chief, 3).await;

    let out = cli(&binary, &config, &["policy", "plan"], Some(&root)).await;
    assert!(out.ok && out.stdout.contains("tocsin.test matches its policy: nothing to change"), "{}", out.stdout);
    let out = cli(&binary, &config, &["policy", "apply"], Some(&root)).await;
    assert!(out.ok && out.stdout.contains("nothing changed"), "{}", out.stdout);

    node.shutdown().await;
    let out = cli(&binary, &config, &["policy", "plan"], Some(&root)).await;
    assert!(!out.ok && out.stderr.contains("is it running?"), "node stopped: {}", out.stderr);
}

/// A room shared with two other federation members, one of them down: apply invites the
/// policy's `remote_members` over federation; the invite to the server that is down fails and
/// is reported while everything else is done (the reachable user joins from their own node and
/// sees the room); once that server is up, the next apply invites its user and the plan is empty.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policy_apply_invites_remote_members_over_federation() {
    let dir = tempfile::tempdir().unwrap();
    let names = ["riverton.test", "lakeside.test", "fire.test"];
    let mut cluster = tocsin_tests::cluster::Cluster::plan(dir.path(), &names).unwrap();
    let policy_file = dir.path().join("riverton-policy.toml");
    std::fs::write(
        &policy_file,
        r#"
[[role]]
name = "chief"
power_level = 100

[[account]]
localpart = "chief"
roles = ["chief"]
password = "chief-pw"

[[room]]
alias = "valley"
name = "Valley joint crisis room"
topic = "Riverton, Lakeside and the fire service"
members_by_role = ["chief"]
shared_with = ["lakeside.test", "fire.test"]
remote_members = ["@chief:fire.test", "@mayor:lakeside.test"]
"#,
    )
    .unwrap();
    cluster.members[0].config.policy = Some(policy_file);
    let riverton = cluster.start(0).await.unwrap();
    let lakeside = cluster.start(1).await.unwrap();
    let mayor = common::user(&lakeside, "mayor").await;
    let root = token(&riverton, "root", "root-pw", true).await;

    let (_, plan) = admin(&riverton, reqwest::Method::GET, "plan", Some(&root)).await;
    let changes = lines(&plan, "changes");
    assert!(changes.contains(&"invite @mayor:lakeside.test to #valley".to_owned()), "{plan}");
    assert!(
        changes.contains(&"allow servers in #valley: fire.test, lakeside.test, riverton.test".to_owned()),
        "{plan}"
    );
    let (_, applied) = admin(&riverton, reqwest::Method::POST, "apply", Some(&root)).await;
    let failed = applied["failed"].as_array().expect("failed is a list");
    assert_eq!(failed.len(), 1, "only the invite to the server that is down fails: {applied}");
    assert_eq!(failed[0]["change"], "invite @chief:fire.test to #valley", "{applied}");
    let done = lines(&applied, "applied");
    assert_eq!(done.len(), changes.len() - 1, "everything else is applied: {applied}");
    assert!(done.iter().any(|c| c.starts_with("set power level of @chief:riverton.test in #valley")), "{applied}");

    join_invites(&mayor, 1).await;
    let valley = common::eventually(&mayor, 10, || async {
        mayor.rooms().into_iter().find(|r| r.state() == RoomState::Joined && r.name().is_some())
    })
    .await;
    assert_eq!(valley.name().as_deref(), Some("Valley joint crisis room"));
    assert_eq!(valley.topic().as_deref(), Some("Riverton, Lakeside and the fire service"));

    let (_, plan) = admin(&riverton, reqwest::Method::GET, "plan", Some(&root)).await;
    assert_eq!(lines(&plan, "changes"), vec!["invite @chief:fire.test to #valley".to_owned()], "{plan}");

    // The fire service comes up: the next apply invites its chief, then nothing is left.
    let fire = cluster.start(2).await.unwrap();
    let fire_chief = common::user(&fire, "chief").await;
    let (_, applied) = admin(&riverton, reqwest::Method::POST, "apply", Some(&root)).await;
    assert_eq!(lines(&applied, "applied"), vec!["invite @chief:fire.test to #valley".to_owned()], "{applied}");
    join_invites(&fire_chief, 1).await;
    let (_, plan) = admin(&riverton, reqwest::Method::GET, "plan", Some(&root)).await;
    assert!(lines(&plan, "changes").is_empty(), "plan after apply: {plan}");
    let (_, again) = admin(&riverton, reqwest::Method::POST, "apply", Some(&root)).await;
    assert!(lines(&again, "applied").is_empty(), "second apply: {again}");
    fire.shutdown().await;
    lakeside.shutdown().await;
    riverton.shutdown().await;
}
