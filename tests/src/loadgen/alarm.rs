//! An alarm to thousands of recipients spread over a federation of Tocsin nodes: the time until
//! every recipient's `/sync` holds it, the pushes its recipients' pushers deliver to a gateway,
//! and the time until the status shows all acknowledgements once every recipient has reacted.
//!
//! The nodes run as separate processes (see [`super::alarm_federation`]); everything the
//! benchmark does goes through their Client-Server APIs, and the status through the first
//! node's admin API and the sender's own `/sync`.

use std::{
    path::PathBuf,
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use futures_util::{StreamExt, stream};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::{sync::mpsc, task::JoinSet};

use super::{
    alarm_federation::{self, AlarmFederation, CHIEF, CHIEF_PASSWORD},
    node_metrics, percentile, read_rss,
};
use crate::{
    cs_client::{Homeserver, Session},
    push_gateway::Gateway,
};

/// Requests at once during setup (registration is bounded by password hashing anyway).
const SETUP_CONCURRENCY: usize = 16;
/// Reactions sent at once: recipients answering on their phones, all within seconds.
const REACTION_CONCURRENCY: usize = 64;
/// How long any one phase may take before the run gives up on it.
const PHASE_TIMEOUT: Duration = Duration::from_secs(120);
/// How long the federation may take to settle a phase that every node takes part in (the joins
/// of a node counted by the first, every reaction counted as an acknowledgement): long enough
/// to report a slow figure rather than no figure.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(600);
/// Users who join once the room is full, one after another, each join timed: half on the first
/// node, half on the second.
const LATE_JOINERS: u32 = 10;
/// Lazy-loaded members and a few timeline events: the alarm and the status reply may come in
/// one batch.
const FILTER: &str =
    r#"{"room":{"timeline":{"limit":10},"state":{"lazy_load_members":true}},"presence":{"not_types":["*"]}}"#;

#[derive(Debug, Clone)]
pub struct AlarmBenchConfig {
    pub nodes: usize,
    pub recipients: u32,
    /// Where the nodes keep their data (a fresh folder per run).
    pub dir: PathBuf,
    pub node_binary: PathBuf,
    pub password: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AlarmBenchReport {
    pub nodes: usize,
    pub recipients: u32,
    /// Registering every recipient and their pusher.
    pub setup_s: f64,
    /// Joining every recipient to the room, node after node, until the first node counts them.
    pub joins_s: f64,
    /// From just before the alarm's PUT until each recipient's long-poll answer held it.
    pub delivered: u64,
    pub missing: u64,
    pub sync_p50_ms: f64,
    pub sync_p99_ms: f64,
    /// Until the last recipient's sync held it.
    pub sync_all_ms: f64,
    /// Pushes of the alarm the gateway received, and how many were `prio: high`.
    pub pushes: u64,
    pub pushes_high: u64,
    /// Requests to the gateway that did not follow the Push Gateway API.
    pub pushes_malformed: u64,
    /// From the PUT until the gateway had the last push.
    pub push_all_ms: f64,
    /// Pushes per second between the first and the last arrival.
    pub pushes_per_s: f64,
    /// From the first reaction's PUT until the last was accepted.
    pub reactions_s: f64,
    /// From the last reaction's acceptance until the first node's admin API reported all
    /// acknowledged.
    pub acked_after_last_reaction_ms: f64,
    /// From the last reaction's acceptance until the sender's `/sync` held the status edit that
    /// says all recipients acknowledged.
    pub status_after_last_reaction_ms: f64,
    /// A join into the full room, one at a time after the run (the `/join` call until it
    /// answers), on the first and second nodes.
    pub late_join_p50_ms: f64,
    pub late_join_max_ms: f64,
    /// A late joiner's first `/sync` (timeline limit 10) with lazy-loaded members, and without:
    /// its size and time.
    pub lazy_sync_bytes: u64,
    pub lazy_sync_ms: f64,
    pub full_sync_bytes: u64,
    pub full_sync_ms: f64,
    /// Each node's store commits from the first reaction until the status edit was seen.
    pub reaction_commits: Vec<node_metrics::Commits>,
    /// Each node's RSS at the end.
    pub rss_mib: Vec<f64>,
}

/// One recipient: their node's index and their session.
struct Recipient {
    node: usize,
    session: Session,
}

pub async fn run(cfg: &AlarmBenchConfig) -> Result<AlarmBenchReport> {
    if cfg.nodes < 2 || cfg.recipients < cfg.nodes as u32 {
        bail!("at least 2 nodes and a recipient per node");
    }
    let fed = alarm_federation::start(&cfg.dir, cfg.nodes, &cfg.node_binary).await?;
    let servers: Vec<Homeserver> = fed.urls.iter().map(|u| Homeserver::new(u)).collect::<Result<_>>()?;
    let gateway = Gateway::try_start().await.context("starting the push gateway")?;

    let setup = Instant::now();
    let chief = login_chief(&servers[0]).await?;
    let recipients = register(cfg, &servers, &gateway).await?;
    let mut late = Vec::new();
    for i in 0..LATE_JOINERS {
        late.push(servers[(i % 2) as usize].register_or_login(&format!("late{i}"), &cfg.password).await?);
    }
    let setup_s = setup.elapsed().as_secs_f64();
    eprintln!("alarm: {} recipients with pushers on {} nodes after {setup_s:.1} s", recipients.len(), cfg.nodes);

    let joins = Instant::now();
    let room = chief.create_room(&json!({"preset": "public_chat", "name": "All hands"})).await?;
    join_node_by_node(&fed, &chief, &room, &recipients).await?;
    let joins_s = joins.elapsed().as_secs_f64();
    eprintln!("alarm: all joined {room} after {joins_s:.1} s");

    // Every recipient long-polls, and so does the chief (for the status edits).
    let alarm_id = format!("bench-{:08x}", rand::random::<u32>());
    let (seen_tx, mut seen_rx) = mpsc::unbounded_channel::<Instant>();
    let mut polls = JoinSet::new();
    let tokens: Vec<Result<String>> = stream::iter(&recipients)
        .map(|r| async move { Ok(r.session.sync(None, Some(FILTER), 0).await?.next_batch) })
        .buffered(SETUP_CONCURRENCY)
        .collect()
        .await;
    for (r, token) in recipients.iter().zip(tokens) {
        let (session, token, seen, room, id) =
            (r.session.clone(), token?, seen_tx.clone(), room.clone(), alarm_id.clone());
        polls.spawn(async move {
            let at =
                until_event(&session, token, &room, |e| e["content"]["org.tocsin.alarm"]["id"] == id.as_str()).await?;
            seen.send(at).ok();
            anyhow::Ok(())
        });
    }
    drop(seen_tx);
    let chief_token = chief.sync(None, Some(FILTER), 0).await?.next_batch;
    tokio::time::sleep(Duration::from_millis(1000 + u64::from(cfg.recipients) / 2)).await;

    let sent = Instant::now();
    let content = json!({
        "msgtype": "m.text",
        "body": "All hands: report to your stations",
        "org.tocsin.alarm": {"id": alarm_id, "level": "critical", "ack_required": true, "ack_deadline_s": 3600},
    });
    let event_id = chief.send_event(&room, "m.room.message", &alarm_id, &content).await?;
    let mut arrivals = Vec::new();
    let deadline = tokio::time::Instant::now() + PHASE_TIMEOUT;
    while arrivals.len() < recipients.len() {
        match tokio::time::timeout_at(deadline, seen_rx.recv()).await {
            Ok(Some(at)) => arrivals.push(at.duration_since(sent).as_secs_f64() * 1000.0),
            Ok(None) | Err(_) => break,
        }
    }
    polls.abort_all();
    arrivals.sort_by(f64::total_cmp);
    let missing = (recipients.len() - arrivals.len()) as u64;
    eprintln!("alarm: in {} recipients' syncs, {missing} missing", arrivals.len());

    let push = pushes(&gateway, &event_id, recipients.len(), sent).await;

    let status_text = format!("all {} acknowledged", recipients.len());
    let status_watch = tokio::spawn({
        let (chief, room) = (chief.clone(), room.clone());
        async move {
            until_event(&chief, chief_token, &room, |e| {
                e["content"]["m.new_content"]["body"].as_str().is_some_and(|b| b.contains(&status_text))
            })
            .await
        }
    });
    let http = reqwest::Client::new();
    let mut metrics_before = Vec::new();
    for url in &fed.urls {
        metrics_before.push(node_metrics::scrape(&http, url, &fed.admin_token).await?);
    }
    let reacting = Instant::now();
    let reactions: Vec<Result<String>> = stream::iter(recipients.iter().enumerate())
        .map(|(i, r)| {
            let content = json!({"m.relates_to": {"rel_type": "m.annotation", "event_id": event_id, "key": "👍"}});
            let (room, txn) = (room.clone(), format!("ack-{alarm_id}-{i}"));
            async move { r.session.send_event(&room, "m.reaction", &txn, &content).await }
        })
        .buffer_unordered(REACTION_CONCURRENCY)
        .collect()
        .await;
    reactions.into_iter().collect::<Result<Vec<_>>>().context("reacting to the alarm")?;
    let last_reaction = Instant::now();
    let reactions_s = last_reaction.duration_since(reacting).as_secs_f64();
    let acked = until_acknowledged(&fed, &alarm_id).await?;
    let status_seen = tokio::time::timeout(PHASE_TIMEOUT, status_watch)
        .await
        .context("the sender's sync never held the 'all acknowledged' status edit")???;
    let mut reaction_commits = Vec::new();
    for (url, before) in fed.urls.iter().zip(&metrics_before) {
        let after = node_metrics::scrape(&http, url, &fed.admin_token).await?;
        reaction_commits.push(node_metrics::Commits::between(before, &after));
    }

    let mut late_joins = Vec::new();
    for session in &late {
        let started = Instant::now();
        session.join(&room).await.context("a late join into the full room")?;
        late_joins.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    late_joins.sort_by(f64::total_cmp);
    let first_late = late.first().context("no late joiners")?;
    let (lazy_sync_bytes, lazy_sync_ms) = sync_size(first_late, true).await?;
    let (full_sync_bytes, full_sync_ms) = sync_size(first_late, false).await?;

    let mut rss_mib = Vec::new();
    for node in &fed.nodes {
        if let Some(pid) = node.pid() {
            rss_mib.push(read_rss(pid)?.vm_rss_kb as f64 / 1024.0);
        }
    }
    Ok(AlarmBenchReport {
        nodes: cfg.nodes,
        recipients: cfg.recipients,
        setup_s,
        joins_s,
        delivered: arrivals.len() as u64,
        missing,
        sync_p50_ms: percentile(&arrivals, 50.0),
        sync_p99_ms: percentile(&arrivals, 99.0),
        sync_all_ms: arrivals.last().copied().unwrap_or_default(),
        pushes: push.count,
        pushes_high: push.high,
        pushes_malformed: push.malformed,
        push_all_ms: push.all_ms,
        pushes_per_s: push.per_s,
        reactions_s,
        acked_after_last_reaction_ms: acked.saturating_duration_since(last_reaction).as_secs_f64() * 1000.0,
        status_after_last_reaction_ms: status_seen.saturating_duration_since(last_reaction).as_secs_f64() * 1000.0,
        late_join_p50_ms: percentile(&late_joins, 50.0),
        late_join_max_ms: late_joins.last().copied().unwrap_or_default(),
        lazy_sync_bytes,
        lazy_sync_ms,
        full_sync_bytes,
        full_sync_ms,
        rss_mib,
        reaction_commits,
    })
}

impl AlarmBenchReport {
    /// The figures as the load generator prints them.
    pub fn summary(&self) -> String {
        let mut out = String::new();
        out += &format!("tocsin-loadgen alarm  {} recipients on {} nodes\n", self.recipients, self.nodes);
        out += &format!("  setup {:.1} s (accounts and pushers), joins {:.1} s\n", self.setup_s, self.joins_s);
        out += &format!(
            "  alarm PUT -> each recipient's sync: p50 {:.0} ms, p99 {:.0} ms, all {:.0} ms ({} delivered, {} missing)\n",
            self.sync_p50_ms, self.sync_p99_ms, self.sync_all_ms, self.delivered, self.missing
        );
        out += &format!(
            "  pushes: {} ({} high priority, {} malformed), the last {:.0} ms after the PUT, {:.0} pushes/s\n",
            self.pushes, self.pushes_high, self.pushes_malformed, self.push_all_ms, self.pushes_per_s
        );
        out += &format!(
            "  {} reactions in {:.2} s; all acknowledged {:.0} ms after the last (admin API), status edit in the sender's sync {:.0} ms after it\n",
            self.recipients, self.reactions_s, self.acked_after_last_reaction_ms, self.status_after_last_reaction_ms
        );
        out += &format!(
            "  a join into the full room, one at a time: p50 {:.0} ms, max {:.0} ms\n",
            self.late_join_p50_ms, self.late_join_max_ms
        );
        out += &format!(
            "  a late joiner's first /sync: {} bytes in {:.0} ms with lazy-loaded members, {} bytes in {:.0} ms without\n",
            self.lazy_sync_bytes, self.lazy_sync_ms, self.full_sync_bytes, self.full_sync_ms
        );
        let rss: Vec<String> = self.rss_mib.iter().map(|m| format!("{m:.0}")).collect();
        out += &format!("  RSS per node (MiB): {}\n", rss.join(", "));
        let commits: Vec<String> = self
            .reaction_commits
            .iter()
            .map(|c| format!("{:.0} × {:.1} batches, {:.1} ms", c.groups, c.batches_per_group, c.mean_ms))
            .collect();
        out += &format!("  store commits per node while the reactions were taken in: {}\n", commits.join("; "));
        out
    }
}

/// An initial `/sync` of `session` (timeline limit 10), with lazy-loaded members or without:
/// its size in bytes and its time in ms.
pub(super) async fn sync_size(session: &Session, lazy: bool) -> Result<(u64, f64)> {
    let filter = format!(r#"{{"room":{{"timeline":{{"limit":10}},"state":{{"lazy_load_members":{lazy}}}}}}}"#);
    let started = Instant::now();
    let sync = session.initial_sync_json(&filter).await?;
    let ms = started.elapsed().as_secs_f64() * 1000.0;
    Ok((serde_json::to_vec(&sync)?.len() as u64, ms))
}

/// The chief's account comes from the first node's policy, applied as the node starts.
pub(super) async fn login_chief(hs: &Homeserver) -> Result<Session> {
    let deadline = Instant::now() + PHASE_TIMEOUT;
    loop {
        match hs.login(CHIEF, CHIEF_PASSWORD).await {
            Ok(session) => return Ok(session),
            Err(e) if Instant::now() < deadline => {
                eprintln!("alarm: the chief cannot log in yet ({e:#}); retrying");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(e) => return Err(e.context("logging in the policy's chief")),
        }
    }
}

/// Registers the recipients, spread evenly over the nodes, each with a pusher to `gateway`.
async fn register(cfg: &AlarmBenchConfig, servers: &[Homeserver], gateway: &Gateway) -> Result<Vec<Recipient>> {
    let url = gateway.url();
    let nodes = servers.len() as u32;
    let registered: Vec<Result<Recipient>> = stream::iter(0..cfg.recipients)
        .map(|i| {
            let node = (i % nodes) as usize;
            let (hs, url) = (&servers[node], url.as_str());
            async move {
                let session = hs.register_or_login(&format!("r{i}"), &cfg.password).await?;
                session.set_http_pusher(url, "org.tocsin.loadgen").await?;
                Ok(Recipient { node, session })
            }
        })
        .buffer_unordered(SETUP_CONCURRENCY)
        .collect()
        .await;
    registered.into_iter().collect()
}

/// Joins the first node's recipients, then each other node's: its first recipient through the
/// first node, the rest locally. One node at a time, and each node's joins counted by the first
/// node before the next begins, so that no two nodes extend the room at once.
async fn join_node_by_node(fed: &AlarmFederation, chief: &Session, room: &str, recipients: &[Recipient]) -> Result<()> {
    let mut joined = 1;
    for node in 0..fed.urls.len() {
        let here: Vec<&Recipient> = recipients.iter().filter(|r| r.node == node).collect();
        let Some((first, rest)) = here.split_first() else { continue };
        if node == 0 {
            first.session.join(room).await?;
        } else {
            first.session.join_via(room, &fed.server_names[0]).await?;
        }
        let results: Vec<Result<()>> =
            stream::iter(rest).map(|r| r.session.join(room)).buffer_unordered(SETUP_CONCURRENCY).collect().await;
        results.into_iter().collect::<Result<Vec<()>>>().with_context(|| format!("joining on node {}", node + 1))?;
        joined += here.len();
        let deadline = Instant::now() + SETTLE_TIMEOUT;
        while chief.joined_member_count(room).await? < joined {
            if Instant::now() > deadline {
                // What each node counts, from one of its own members.
                let mut counts = Vec::new();
                for (k, name) in fed.server_names.iter().enumerate() {
                    if let Some(r) = recipients.iter().find(|r| r.node == k) {
                        counts.push(format!("{name}: {}", r.session.joined_member_count(room).await?));
                    }
                }
                bail!(
                    "{} never counted node {}'s joins ({joined} expected; joined members as each node counts them: {})",
                    fed.server_names[0],
                    node + 1,
                    counts.join(", ")
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        eprintln!("alarm: {joined} joined after node {}", node + 1);
    }
    Ok(())
}

/// Long-polls from `token` until an event in `room`'s timeline matches; returns when it was seen.
async fn until_event(
    session: &Session,
    mut token: String,
    room: &str,
    matches: impl Fn(&Value) -> bool,
) -> Result<Instant> {
    loop {
        let next = session.sync(Some(&token), Some(FILTER), 30_000).await?;
        let at = Instant::now();
        let events = next.rooms.join.get(room).map(|r| r.timeline.events.as_slice()).unwrap_or_default();
        if events.iter().any(|e| matches(&json!({"content": e.content}))) {
            return Ok(at);
        }
        token = next.next_batch;
    }
}

struct PushFigures {
    count: u64,
    high: u64,
    malformed: u64,
    all_ms: f64,
    per_s: f64,
}

/// Waits until the gateway holds `expected` pushes of `event_id` (or the phase times out).
async fn pushes(gateway: &Gateway, event_id: &str, expected: usize, sent: Instant) -> PushFigures {
    let deadline = Instant::now() + PHASE_TIMEOUT;
    loop {
        let (received, malformed) = gateway.arrivals();
        let ours: Vec<_> =
            received.iter().filter(|(n, _)| n.event_id.as_ref().is_some_and(|e| e.as_str() == event_id)).collect();
        if ours.len() >= expected || Instant::now() > deadline {
            let first = ours.iter().map(|(_, at)| *at).min();
            let last = ours.iter().map(|(_, at)| *at).max();
            let span = match (first, last) {
                (Some(first), Some(last)) => last.duration_since(first).as_secs_f64(),
                _ => 0.0,
            };
            let high = ours.iter().filter(|(n, _)| n.prio.as_str() == "high").count() as u64;
            return PushFigures {
                count: ours.len() as u64,
                high,
                malformed: malformed.len() as u64,
                all_ms: last.map_or(0.0, |l| l.duration_since(sent).as_secs_f64() * 1000.0),
                per_s: if span > 0.0 { ours.len() as f64 / span } else { 0.0 },
            };
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// How often the admin API is asked: a status at 5,000 recipients is about 600 kB of JSON, and
/// asking 20 times a second took a tenth of the measured node's time.
const STATUS_POLL: Duration = Duration::from_millis(250);

/// Polls the first node's admin API until the alarm is closed as acknowledged (to within
/// [`STATUS_POLL`]; the status edit in the sender's `/sync` is timed exactly).
async fn until_acknowledged(fed: &AlarmFederation, alarm_id: &str) -> Result<Instant> {
    let http = reqwest::Client::new();
    let url = format!("{}/_tocsin/admin/alarms/{alarm_id}", fed.urls[0]);
    let deadline = Instant::now() + SETTLE_TIMEOUT;
    loop {
        let status: Value =
            http.get(&url).bearer_auth(&fed.admin_token).send().await?.error_for_status()?.json().await?;
        if status["closed"] == "acknowledged" {
            return Ok(Instant::now());
        }
        if Instant::now() > deadline {
            let waiting = status["waiting"].as_array().map_or(0, Vec::len);
            bail!("not all acknowledged within {SETTLE_TIMEOUT:?}: {waiting} still waiting");
        }
        tokio::time::sleep(STATUS_POLL).await;
    }
}
