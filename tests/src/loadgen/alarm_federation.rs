//! The federation the alarm and room-size benchmarks run on: `nodes` Tocsin nodes, each its own
//! `tocsin-test-node` process, under one signed federation list in which only the first node's
//! `chief` role may raise alarms. Every node takes open registration without rate limits (the
//! benchmark registers thousands of users) and may push to a gateway on loopback.

use std::{
    path::{Path, PathBuf},
    time::{SystemTime, UNIX_EPOCH},
};

use anyhow::{Context, Result};
use tocsin_node::{
    Registration,
    policy::policies::{
        AlarmLevel, FederationList, Member, MemberRole, OperatorSecretKey, Timestamp, generate_operator_key, sign_list,
    },
};

use crate::cluster::{ChildNode, Cluster};

/// The account that raises the alarm, on the first node; its password is in that node's policy.
pub const CHIEF: &str = "chief";
pub const CHIEF_PASSWORD: &str = "alarm-bench-chief-0";

/// Running nodes, their client URLs and the operator token of the first one.
pub struct AlarmFederation {
    pub nodes: Vec<ChildNode>,
    pub urls: Vec<String>,
    pub server_names: Vec<String>,
    pub admin_token: String,
}

fn first_node_policy(server_name: &str) -> String {
    format!(
        r#"
[node]
server_name = "{server_name}"

[room_defaults]
encryption = false

[[role]]
name = "chief"
power_level = 100
may_send_alarms = true

[[account]]
localpart = "{CHIEF}"
roles = ["chief"]
password = "{CHIEF_PASSWORD}"
"#
    )
}

/// Plans and starts the federation under `dir`, running `binary` for each node.
pub async fn start(dir: &Path, nodes: usize, binary: &Path) -> Result<AlarmFederation> {
    plan(dir, nodes)?.launch(binary).await
}

/// A planned federation, its nodes' settings still open to change (links through a proxy, a
/// shorter retry delay) before [`Plan::launch`].
pub struct Plan {
    pub cluster: Cluster,
    names: Vec<String>,
    admin_token: String,
}

/// Writes the federation list, the first node's policy and the operator token under `dir`,
/// and plans `nodes` nodes on them.
pub fn plan(dir: &Path, nodes: usize) -> Result<Plan> {
    let names: Vec<String> = (1..=nodes).map(|i| format!("city{i}.test")).collect();
    let name_refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let mut cluster = Cluster::plan(dir, &name_refs)?;

    let (secret, public) = generate_operator_key();
    let key = OperatorSecretKey::from_text(&secret).context("the operator key just made")?;
    let now = i64::try_from(SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs())?;
    let mut members: Vec<Member> =
        names.iter().map(|n| Member::new(n, &format!("City {n}"), MemberRole::Municipality)).collect();
    for (_, level) in AlarmLevel::ALL {
        members[0].alarm_senders.insert(*level, vec![CHIEF.into()]);
    }
    let list = FederationList {
        name: "Alarm benchmark federation".into(),
        version: 1,
        issued: Timestamp(now - 3600),
        expires: Timestamp(now + 24 * 3600),
        members,
    };
    let (list_path, key_path) = (dir.join("federation.toml"), dir.join("operator.pub"));
    std::fs::write(&list_path, sign_list(&list, &key)?.to_toml())?;
    std::fs::write(&key_path, public)?;
    let policy_path = dir.join("city1-policy.toml");
    std::fs::write(&policy_path, first_node_policy(&names[0]))?;
    let admin_token = format!("alarm-bench-{:016x}", rand::random::<u64>());
    let token_path = dir.join("admin.token");
    std::fs::write(&token_path, &admin_token)?;

    for (i, member) in cluster.members.iter_mut().enumerate() {
        let c = &mut member.config;
        c.federation_list = Some(list_path.clone());
        c.federation_operator_keys = vec![key_path.clone()];
        c.registration = Registration::Open;
        c.rate_limits.enabled = false;
        // The push gateway listens on loopback.
        c.outbound_ip_allow = vec!["127.0.0.0/8".parse()?];
        // The benchmark reads each node's own figures (store commits) from its metrics.
        c.metrics.token = Some(admin_token.clone());
        if i == 0 {
            c.policy = Some(policy_path.clone());
            c.admin_token_file = Some(token_path.clone());
        }
    }
    Ok(Plan { cluster, names, admin_token })
}

impl Plan {
    /// Starts every node, running `binary`, and provisions the first node's policy.
    pub async fn launch(self, binary: &Path) -> Result<AlarmFederation> {
        let Plan { cluster, names, admin_token } = self;
        launch(cluster, names, admin_token, binary).await
    }
}

async fn launch(cluster: Cluster, names: Vec<String>, admin_token: String, binary: &Path) -> Result<AlarmFederation> {
    for i in 0..cluster.members.len() {
        cluster.write_config(i)?;
    }
    let mut running = Vec::new();
    for (i, name) in names.iter().enumerate() {
        running.push(cluster.spawn(i, binary).await.with_context(|| format!("starting {name}"))?);
    }
    let urls: Vec<String> = cluster.members.iter().map(|m| m.base_url()).collect();
    // The chief's account and role come from the policy, provisioned as an operator would.
    reqwest::Client::new()
        .post(format!("{}/_tocsin/admin/policy/apply", urls[0]))
        .bearer_auth(&admin_token)
        .send()
        .await?
        .error_for_status()
        .context("applying the first node's policy")?;
    Ok(AlarmFederation { nodes: running, urls, server_names: names, admin_token })
}

/// `tocsin-test-node` beside this executable (both are built by the same `cargo build`).
pub fn default_node_binary() -> Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let dir = exe.parent().context("this executable has no folder")?;
    Ok(dir.join("tocsin-test-node"))
}
