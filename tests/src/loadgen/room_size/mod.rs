//! Room size: one room grown through a sweep of sizes, its members spread over two servers whose
//! federation links run through proxies the load generator can cut: two Tocsin nodes (each its
//! own process), or two Synapse servers ([`synapse`]). At each size:
//! - joins into the full room one at a time, alternating between the servers, each timed from
//!   its `/join` until the answer;
//! - a late joiner's first `/sync` (timeline limit 10), with lazy-loaded members and without;
//! - a partition: both links cut, each side changes the topic and the power levels and takes in
//!   new members, then the links come back. Timed from the links' return until both servers
//!   show the same topic, power levels and joined members; and, from each Tocsin node's
//!   metrics, the state resolutions they ran meanwhile and their time (Synapse has no such
//!   figure: `None`).
//!
//! The Tocsin nodes retry a peer at most a second after a failure (`federation_max_backoff_secs
//! = 1`), so the heal time is the resolution's, not a retry delay's (which is up to a minute by
//! default), plus at most that second. The Synapse pair is set to retry within about a second
//! too ([`synapse::EXTRA_CONFIG`]).

mod report;
pub mod synapse;

use std::{
    net::SocketAddr,
    path::PathBuf,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, anyhow, bail};
use futures_util::{StreamExt, stream};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

pub use self::report::{charts, table};
use super::{
    alarm::{login_chief, sync_size},
    alarm_federation::{self, AlarmFederation},
    node_metrics, percentile,
};
use crate::{
    cs_client::{Homeserver, Session},
    proxy::Proxy,
};

/// Joins timed one at a time at each size.
const ONE_AT_A_TIME: u32 = 10;
/// Registrations and joins in flight while the room grows.
const SETUP_CONCURRENCY: usize = 32;
/// How long both servers may take to agree on the members after a growth step or the heal.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(600);
/// How often the servers are asked whether they agree after the heal.
const HEAL_POLL: Duration = Duration::from_millis(25);

/// Which servers the sweep runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Server {
    Tocsin,
    Synapse,
}

impl Server {
    /// The name in the report, the table and the charts.
    pub fn label(self) -> &'static str {
        match self {
            Server::Tocsin => "tocsin",
            Server::Synapse => "synapse",
        }
    }
}

#[derive(Debug, Clone)]
pub struct RoomSizeConfig {
    pub server: Server,
    /// Member counts to measure at, ascending.
    pub sizes: Vec<u32>,
    /// The servers' data, certificates and logs.
    pub dir: PathBuf,
    /// The Tocsin node binary (`tocsin-test-node`).
    pub node_binary: PathBuf,
    /// `tests/interop/synapse-fed.sh`, which runs each Synapse.
    pub synapse_fed: PathBuf,
    pub password: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RoomSizePoint {
    /// Joined members when the joins were timed.
    pub members: u32,
    /// Growing the room to this size (registrations and joins, both servers agreeing).
    pub grow_s: f64,
    pub join_p50_ms: f64,
    pub join_max_ms: f64,
    pub lazy_sync_bytes: u64,
    pub lazy_sync_ms: f64,
    pub full_sync_bytes: u64,
    pub full_sync_ms: f64,
    /// New members on each side during the partition (besides a topic and a power-level change).
    pub partition_joins: u32,
    /// From the links' return until both servers show the same topic, power levels and members.
    pub heal_ms: f64,
    /// State resolutions of differing states both nodes ran from the cut until they agreed
    /// (Tocsin's metrics; `None` for Synapse).
    #[serde(default)]
    pub resolutions: Option<f64>,
    /// Their total time, both nodes together.
    #[serde(default)]
    pub resolution_total_ms: Option<f64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RoomSizeReport {
    /// The servers measured: "tocsin" or "synapse" (reports from before the field: Tocsin).
    #[serde(default = "tocsin_label")]
    pub server: String,
    pub points: Vec<RoomSizePoint>,
}

fn tocsin_label() -> String {
    Server::Tocsin.label().to_owned()
}

/// What runs the two servers; dropping it stops them.
enum Running {
    Tocsin(AlarmFederation),
    /// Held for its drop, which stops both servers.
    Synapse {
        _pair: synapse::SynapsePair,
    },
}

impl Running {
    /// The Tocsin nodes' client URLs and metrics token.
    fn metrics(&self) -> Option<(&[String], &str)> {
        match self {
            Running::Tocsin(fed) => Some((&fed.urls, &fed.admin_token)),
            Running::Synapse { .. } => None,
        }
    }
}

/// The two servers, their links and the room.
struct Setup {
    running: Running,
    /// Server 1's link to server 2, and server 2's to server 1.
    links: [Proxy; 2],
    servers: [Homeserver; 2],
    server_names: [String; 2],
    /// The room's creator on server 1, and a member with the same power on server 2.
    owner: Session,
    deputy: Session,
    room: String,
    /// Joined members (owner and deputy included).
    members: u32,
    /// Accounts made so far, for fresh names.
    accounts: u32,
}

/// Runs the sweep; the servers are stopped when it ends, fails or is interrupted (SIGINT,
/// SIGTERM).
pub async fn run(cfg: &RoomSizeConfig) -> Result<RoomSizeReport> {
    if cfg.sizes.is_empty() || cfg.sizes.windows(2).any(|w| w[0] >= w[1]) {
        bail!("sizes must be given, ascending");
    }
    tokio::select! {
        report = sweep(cfg) => report,
        signal = interrupted() => Err(anyhow!("interrupted by {signal}")),
    }
}

async fn sweep(cfg: &RoomSizeConfig) -> Result<RoomSizeReport> {
    let mut setup = match cfg.server {
        Server::Tocsin => start_tocsin(cfg).await?,
        Server::Synapse => start_synapse(cfg).await?,
    };
    let mut points = Vec::new();
    for &size in &cfg.sizes {
        points.push(measure(cfg, &mut setup, size).await?);
    }
    Ok(RoomSizeReport { server: cfg.server.label().to_owned(), points })
}

/// The first of SIGINT and SIGTERM (never, if they cannot be watched).
async fn interrupted() -> &'static str {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) else {
        return std::future::pending().await;
    };
    tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    }
}

async fn start_tocsin(cfg: &RoomSizeConfig) -> Result<Setup> {
    let mut plan = alarm_federation::plan(&cfg.dir, 2)?;
    let local = SocketAddr::from(([127, 0, 0, 1], 0));
    let to_2 = Proxy::start(local, plan.cluster.members[1].federation_addr).await?;
    let to_1 = Proxy::start(local, plan.cluster.members[0].federation_addr).await?;
    plan.cluster.repin(0, 1, to_2.addr)?;
    plan.cluster.repin(1, 0, to_1.addr)?;
    for member in &mut plan.cluster.members {
        member.config.federation_max_backoff_secs = 1;
    }
    let fed = plan.launch(&cfg.node_binary).await?;
    let servers = [Homeserver::new(&fed.urls[0])?, Homeserver::new(&fed.urls[1])?];
    let server_names = [fed.server_names[0].clone(), fed.server_names[1].clone()];
    let owner = login_chief(&servers[0]).await?;
    let deputy = servers[1].register_or_login("deputy", &cfg.password).await?;
    open_room(Running::Tocsin(fed), [to_2, to_1], servers, server_names, owner, deputy).await
}

async fn start_synapse(cfg: &RoomSizeConfig) -> Result<Setup> {
    let synapse::Launched { pair, urls, server_names, links } = synapse::launch(&cfg.dir, &cfg.synapse_fed).await?;
    let running = Running::Synapse { _pair: pair };
    let servers = [Homeserver::new(&urls[0])?, Homeserver::new(&urls[1])?];
    let owner = servers[0].register_or_login("owner", &cfg.password).await?;
    let deputy = servers[1].register_or_login("deputy", &cfg.password).await?;
    open_room(running, links, servers, server_names, owner, deputy).await
}

/// The owner makes the room on server 1, the deputy joins it from server 2 and gets the
/// owner's power.
async fn open_room(
    running: Running,
    links: [Proxy; 2],
    servers: [Homeserver; 2],
    server_names: [String; 2],
    owner: Session,
    deputy: Session,
) -> Result<Setup> {
    let room = owner.create_room(&json!({"preset": "public_chat", "name": "Room size"})).await?;
    deputy.join_via(&room, &server_names[0]).await.context("server 2's first join")?;
    let mut power = owner.state(&room, "m.room.power_levels", "").await?;
    power["users"][deputy.user_id.as_str()] = json!(100);
    owner.put_state(&room, "m.room.power_levels", "", &power).await?;
    let setup = Setup { running, links, servers, server_names, owner, deputy, room, members: 2, accounts: 0 };
    until_agreed(&setup, 2).await?;
    Ok(setup)
}

async fn measure(cfg: &RoomSizeConfig, s: &mut Setup, size: u32) -> Result<RoomSizePoint> {
    let grown = Instant::now();
    let late = register(cfg, s, ONE_AT_A_TIME).await?;
    let joiners = size.saturating_sub(s.members);
    grow(cfg, s, joiners).await?;
    let grow_s = grown.elapsed().as_secs_f64();
    let label = cfg.server.label();
    eprintln!("room-size ({label}): {} members after {grow_s:.1} s", s.members);

    let members = s.members;
    let mut joins = Vec::new();
    for session in &late {
        let started = Instant::now();
        session.join(&s.room).await.context("a join into the full room")?;
        joins.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    joins.sort_by(f64::total_cmp);
    s.members += late.len() as u32;
    until_agreed(s, s.members).await?;
    let first = late.first().context("no late joiners")?;
    let (lazy_sync_bytes, lazy_sync_ms) = sync_size(first, true).await?;
    let (full_sync_bytes, full_sync_ms) = sync_size(first, false).await?;

    let partition_joins = (size / 100).max(1);
    let (heal_ms, resolutions, resolution_total_ms) = partition(cfg, s, partition_joins).await?;
    eprintln!("room-size ({label}): {members} members measured; the partition healed in {heal_ms:.0} ms");
    Ok(RoomSizePoint {
        members,
        grow_s,
        join_p50_ms: percentile(&joins, 50.0),
        join_max_ms: joins.last().copied().unwrap_or_default(),
        lazy_sync_bytes,
        lazy_sync_ms,
        full_sync_bytes,
        full_sync_ms,
        partition_joins,
        heal_ms,
        resolutions,
        resolution_total_ms,
    })
}

/// Registers `n` accounts, alternating between the servers (server 1 first).
async fn register(cfg: &RoomSizeConfig, s: &mut Setup, n: u32) -> Result<Vec<Session>> {
    let first = s.accounts;
    s.accounts += n;
    let servers = &s.servers;
    let made: Vec<Result<Session>> = stream::iter(first..first + n)
        .map(|i| async move { servers[(i % 2) as usize].register_or_login(&format!("m{i}"), &cfg.password).await })
        .buffered(SETUP_CONCURRENCY)
        .collect()
        .await;
    made.into_iter().collect()
}

/// Adds `n` members: server 1's half joins, then server 2's, so the two never extend the room
/// at once while it grows.
async fn grow(cfg: &RoomSizeConfig, s: &mut Setup, n: u32) -> Result<()> {
    let sessions = register(cfg, s, n).await?;
    for node in [0, 1] {
        let here: Vec<&Session> = sessions.iter().skip(node).step_by(2).collect();
        let room = &s.room;
        let joined: Vec<Result<()>> =
            stream::iter(&here).map(|r| r.join(room)).buffer_unordered(SETUP_CONCURRENCY).collect().await;
        joined.into_iter().collect::<Result<Vec<()>>>().with_context(|| format!("joining on server {}", node + 1))?;
        s.members += here.len() as u32;
        until_agreed(s, s.members).await?;
    }
    Ok(())
}

/// Waits until both servers count `members` joined.
async fn until_agreed(s: &Setup, members: u32) -> Result<()> {
    let deadline = Instant::now() + SETTLE_TIMEOUT;
    loop {
        let counts = [s.owner.joined_member_count(&s.room).await?, s.deputy.joined_member_count(&s.room).await?];
        if counts.iter().all(|c| *c == members as usize) {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("the servers count {counts:?} joined members, not {members}, after {SETTLE_TIMEOUT:?}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Cuts both links, changes the room on both sides, restores the links and waits for
/// agreement: the heal time, and the resolutions both Tocsin nodes ran with their total time.
async fn partition(cfg: &RoomSizeConfig, s: &mut Setup, joins: u32) -> Result<(f64, Option<f64>, Option<f64>)> {
    let newcomers = register(cfg, s, joins * 2).await?;
    let http = reqwest::Client::new();
    let mut before = Vec::new();
    if let Some((urls, token)) = s.running.metrics() {
        for url in urls {
            before.push(node_metrics::scrape(&http, url, token).await?);
        }
    }
    for link in &s.links {
        link.set_cut(true);
    }
    let tag = s.members;
    let sides = [(&s.owner, 0usize, 50), (&s.deputy, 1usize, 60)];
    let changes = sides.map(|(leader, node, level)| {
        let (room, newcomers, name) = (&s.room, &newcomers, &s.server_names[node]);
        async move {
            leader
                .put_state(room, "m.room.topic", "", &json!({"topic": format!("server {} at {tag}", node + 1)}))
                .await?;
            let mut power: Value = leader.state(room, "m.room.power_levels", "").await?;
            power["users"][format!("@duty-{tag}:{name}")] = json!(level);
            leader.put_state(room, "m.room.power_levels", "", &power).await?;
            let here: Vec<&Session> = newcomers.iter().skip(node).step_by(2).collect();
            let joined: Vec<Result<()>> =
                stream::iter(here).map(|r| r.join(room)).buffer_unordered(SETUP_CONCURRENCY).collect().await;
            joined.into_iter().collect::<Result<Vec<()>>>()?;
            Ok::<_, anyhow::Error>(())
        }
    });
    let [a, b] = changes;
    let (a, b) = tokio::join!(a, b);
    a.context("server 1's side of the partition")?;
    b.context("server 2's side of the partition")?;
    // The cut was real: each side sees its own topic.
    let topics = [topic(&s.owner, &s.room).await?, topic(&s.deputy, &s.room).await?];
    if topics[0] == topics[1] {
        bail!("both sides show the topic {:?} during the partition: the links were not cut", topics[0]);
    }

    let healed = Instant::now();
    for link in &s.links {
        link.set_cut(false);
    }
    s.members += joins * 2;
    let deadline = healed + SETTLE_TIMEOUT;
    loop {
        if agree(s).await? {
            break;
        }
        if Instant::now() > deadline {
            bail!("no agreement {SETTLE_TIMEOUT:?} after the partition healed");
        }
        tokio::time::sleep(HEAL_POLL).await;
    }
    let heal_ms = healed.elapsed().as_secs_f64() * 1000.0;
    let Some((urls, token)) = s.running.metrics() else {
        return Ok((heal_ms, None, None));
    };
    let (mut count, mut seconds) = (0.0, 0.0);
    for (url, before) in urls.iter().zip(&before) {
        let after = node_metrics::scrape(&http, url, token).await?;
        let delta = |name: &str| node_metrics::total(&after, name) - node_metrics::total(before, name);
        count += delta("tocsin_state_resolution_seconds_count");
        seconds += delta("tocsin_state_resolution_seconds_sum");
    }
    Ok((heal_ms, Some(count), Some(seconds * 1000.0)))
}

async fn topic(session: &Session, room: &str) -> Result<Value> {
    Ok(session.state(room, "m.room.topic", "").await?["topic"].clone())
}

/// Whether both servers show the same topic and power levels, and every member.
async fn agree(s: &Setup) -> Result<bool> {
    let sessions = [&s.owner, &s.deputy];
    let mut views = Vec::new();
    for session in sessions {
        views.push((topic(session, &s.room).await?, session.state(&s.room, "m.room.power_levels", "").await?));
    }
    if views[0] != views[1] {
        return Ok(false);
    }
    for session in sessions {
        if session.joined_member_count(&s.room).await? != s.members as usize {
            return Ok(false);
        }
    }
    Ok(true)
}
