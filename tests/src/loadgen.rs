//! The load scenario behind `tocsin-loadgen`: latency, throughput, completeness and RSS against
//! any homeserver, through [`crate::cs_client`] only.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use futures_util::future::try_join_all;
use serde::Serialize;
use serde_json::json;
use tokio::sync::{mpsc, watch};

use crate::cs_client::{Direction, Homeserver, RoomEvent, Session, room_timeline_filter};

/// Give up on a phase after this many consecutive request errors.
const MAX_CONSECUTIVE_ERRORS: u32 = 10;
/// Upper bound on `/sync` round trips in one reader loop.
const MAX_SYNC_ROUNDS: u32 = 200_000;
/// Upper bound on `/messages` pages fetched to fill one limited sync batch.
const MAX_PAGES_PER_GAP: u32 = 1_000;
/// Hard cap on any sync reader's lifetime.
const READER_HARD_CAP: Duration = Duration::from_secs(30 * 60);

/// What to run.
#[derive(Debug, Clone)]
pub struct Config {
    pub url: String,
    /// Localpart prefix, so reruns against the same database don't collide.
    pub prefix: String,
    pub password: String,
    /// Events in the latency phase.
    pub latency_events: u32,
    /// How long to wait for one latency event to appear in the sync loop before counting it lost.
    pub latency_event_timeout: Duration,
    /// Concurrent senders in the throughput phase.
    pub senders: u32,
    /// Events per sender in the throughput phase.
    pub per_sender: u32,
    /// Timeline limit of the completeness reader's sync filter.
    pub sync_limit: u32,
    /// How long the completeness reader may keep going after the last sender finished.
    pub completeness_timeout: Duration,
}

#[derive(Debug, Clone, Serialize)]
pub struct LatencyReport {
    pub events: u32,
    pub received: u32,
    pub lost: u32,
    pub send_errors: u32,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    pub mean_ms: f64,
    /// Time from just before the PUT until its 200, p50.
    pub send_ack_p50_ms: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct ThroughputReport {
    pub senders: u32,
    pub per_sender: u32,
    pub attempted: u32,
    pub acked: u32,
    pub errors: u32,
    pub first_error: Option<String>,
    pub wall_s: f64,
    pub events_per_s: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct CompletenessReport {
    /// Bodies acknowledged with an event id during the throughput phase.
    pub expected: u32,
    pub seen_unique: u32,
    pub missing: u32,
    /// Extra copies of bodies already seen.
    pub duplicates: u32,
    /// Throughput-phase bodies seen that were never acknowledged (the PUT failed).
    pub unacknowledged_seen: u32,
    pub sync_rounds: u32,
    pub limited_batches: u32,
    pub pages_fetched: u32,
    /// From the last sender finishing until the reader had every acknowledged body.
    pub catch_up_ms: Option<f64>,
    pub timed_out: bool,
    pub reader_error: Option<String>,
    pub ok: bool,
}

#[derive(Debug, Clone, Copy, Serialize)]
pub struct RssReport {
    pub pid: u32,
    pub vm_rss_kb: u64,
    pub vm_hwm_kb: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub label: String,
    pub url: String,
    pub prefix: String,
    pub run_id: String,
    pub setup_s: f64,
    pub latency: LatencyReport,
    pub throughput: ThroughputReport,
    pub completeness: CompletenessReport,
    pub rss_before: Option<RssReport>,
    pub rss_after: Option<RssReport>,
}

impl Report {
    /// Did every acknowledged message arrive exactly once?
    pub fn passed(&self) -> bool {
        self.completeness.ok && self.latency.lost == 0
    }
}

/// Reads VmRSS and VmHWM (kB) from `/proc/PID/status`.
pub fn read_rss(pid: u32) -> Result<RssReport> {
    let path = format!("/proc/{pid}/status");
    let status = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    let field = |name: &str| -> Result<u64> {
        let line = status.lines().find(|l| l.starts_with(name)).with_context(|| format!("{path} has no {name}"))?;
        line[name.len()..]
            .split_whitespace()
            .next()
            .and_then(|v| v.parse().ok())
            .with_context(|| format!("{path}: cannot parse {line:?}"))
    };
    Ok(RssReport { pid, vm_rss_kb: field("VmRSS:")?, vm_hwm_kb: field("VmHWM:")? })
}

/// Nearest-rank percentile of sorted `v` (0 when empty).
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Runs the whole scenario. `pid` is the homeserver process for RSS figures.
pub async fn run(cfg: &Config, label: &str, pid: Option<u32>) -> Result<Report> {
    let run_id = format!("{:08x}", rand::random::<u32>());
    let hs = Homeserver::new(&cfg.url)?;
    hs.versions().await.with_context(|| format!("is a homeserver listening at {}?", cfg.url))?;
    let rss_before = pid.map(read_rss).transpose()?;

    let setup_start = Instant::now();
    let user = |suffix: &str| format!("{}-{suffix}", cfg.prefix);
    let a = hs.register_or_login(&user("a"), &cfg.password).await?;
    let b = hs.register_or_login(&user("b"), &cfg.password).await?;
    let senders = try_join_all((0..cfg.senders).map(|i| {
        let (hs, name) = (&hs, user(&format!("s{i}")));
        async move { hs.register_or_login(&name, &cfg.password).await }
    }))
    .await?;

    let lat_room = new_room(&a, &[&b], &format!("loadgen {run_id} latency")).await?;
    let mut members: Vec<&Session> = senders.iter().collect();
    members.push(&b);
    let tp_room = new_room(&a, &members, &format!("loadgen {run_id} throughput")).await?;
    let setup_s = setup_start.elapsed().as_secs_f64();

    let latency = latency_phase(cfg, &a, &b, &lat_room, &run_id).await?;
    let (throughput, completeness) = throughput_phase(cfg, &a, &b, &senders, &tp_room, &run_id).await?;
    let rss_after = pid.map(read_rss).transpose()?;

    Ok(Report {
        label: label.to_owned(),
        url: cfg.url.clone(),
        prefix: cfg.prefix.clone(),
        run_id,
        setup_s,
        latency,
        throughput,
        completeness,
        rss_before,
        rss_after,
    })
}

/// `creator` makes a private_chat room, invites `members`, and they join.
async fn new_room(creator: &Session, members: &[&Session], name: &str) -> Result<String> {
    let room = creator.create_room(&json!({"preset": "private_chat", "name": name})).await?;
    for m in members {
        creator.invite(&room, &m.user_id).await?;
    }
    try_join_all(members.iter().map(|m| m.join(&room))).await?;
    Ok(room)
}

async fn latency_phase(cfg: &Config, a: &Session, b: &Session, room: &str, run_id: &str) -> Result<LatencyReport> {
    let filter = room_timeline_filter(room, 50);
    let since = b.sync(None, Some(&filter), 0).await.context("latency phase: initial sync")?.next_batch;
    let marker = format!("{run_id}-lat-");
    let (tx, mut rx) = mpsc::unbounded_channel::<(String, Instant)>();
    let reader = tokio::spawn(latency_sync_loop(b.clone(), room.to_owned(), filter, since, marker.clone(), tx));

    let mut latencies = Vec::with_capacity(cfg.latency_events as usize);
    let mut acks = Vec::with_capacity(cfg.latency_events as usize);
    let (mut lost, mut send_errors) = (0u32, 0u32);
    for i in 0..cfg.latency_events {
        let body = format!("{marker}{i:06}");
        let t0 = Instant::now();
        if let Err(e) = a.send_text(room, &body, &body).await {
            send_errors += 1;
            eprintln!("latency phase: send {i} failed: {e:#}");
            if send_errors > MAX_CONSECUTIVE_ERRORS {
                reader.abort();
                return Err(e.context("latency phase: too many send errors"));
            }
            continue;
        }
        acks.push(ms(t0.elapsed()));
        let deadline = tokio::time::Instant::from_std(t0 + cfg.latency_event_timeout);
        loop {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some((seen, at))) if seen == body => {
                    latencies.push(ms(at.saturating_duration_since(t0)));
                    break;
                }
                Ok(Some(_)) => continue, // a late copy of an earlier marker
                Ok(None) => {
                    return match reader.await {
                        Ok(Err(e)) => Err(e.context("latency phase: sync loop failed")),
                        _ => bail!("latency phase: sync loop ended unexpectedly"),
                    };
                }
                Err(_) => {
                    lost += 1;
                    eprintln!("latency phase: {body} not seen within the timeout");
                    break;
                }
            }
        }
    }
    reader.abort();

    let mean = latencies.iter().sum::<f64>() / latencies.len().max(1) as f64;
    latencies.sort_by(f64::total_cmp);
    acks.sort_by(f64::total_cmp);
    Ok(LatencyReport {
        events: cfg.latency_events,
        received: latencies.len() as u32,
        lost,
        send_errors,
        p50_ms: percentile(&latencies, 50.0),
        p90_ms: percentile(&latencies, 90.0),
        p99_ms: percentile(&latencies, 99.0),
        max_ms: latencies.last().copied().unwrap_or(0.0),
        mean_ms: mean,
        send_ack_p50_ms: percentile(&acks, 50.0),
    })
}

/// B's long-poll loop: reports every marker body it sees, with the instant it saw it.
async fn latency_sync_loop(
    b: Session,
    room: String,
    filter: String,
    mut since: String,
    marker: String,
    tx: mpsc::UnboundedSender<(String, Instant)>,
) -> Result<()> {
    let start = Instant::now();
    let mut errors = 0;
    for _ in 0..MAX_SYNC_ROUNDS {
        if start.elapsed() > READER_HARD_CAP {
            bail!("latency sync loop: hard time cap reached");
        }
        let resp = match b.sync(Some(&since), Some(&filter), 30_000).await {
            Ok(r) => r,
            Err(e) => {
                errors += 1;
                if errors >= MAX_CONSECUTIVE_ERRORS {
                    return Err(e.context("latency sync loop: too many errors"));
                }
                tokio::time::sleep(Duration::from_millis(250)).await;
                continue;
            }
        };
        let now = Instant::now();
        errors = 0;
        since = resp.next_batch;
        if let Some(joined) = resp.rooms.join.get(&room) {
            for ev in &joined.timeline.events {
                if let Some(body) = ev.body().filter(|b| b.starts_with(&marker))
                    && tx.send((body.to_owned(), now)).is_err()
                {
                    return Ok(()); // the sender side is done
                }
            }
        }
    }
    bail!("latency sync loop: round cap reached")
}

/// What the senders tell the completeness reader once they are done.
#[derive(Clone)]
struct SendersDone {
    at: Instant,
    acked: Arc<HashSet<String>>,
}

struct SenderResult {
    acked: Vec<String>,
    errors: u32,
    first_error: Option<String>,
    last_ack: Option<Instant>,
}

async fn throughput_phase(
    cfg: &Config,
    a: &Session,
    b: &Session,
    senders: &[Session],
    room: &str,
    run_id: &str,
) -> Result<(ThroughputReport, CompletenessReport)> {
    let marker = format!("{run_id}-tp-");
    let sentinel = format!("{run_id}-sentinel");
    a.send_text(room, &sentinel, &sentinel).await.context("throughput phase: sending the sentinel")?;
    let filter = room_timeline_filter(room, cfg.sync_limit);
    let since = b.sync(None, Some(&filter), 0).await.context("throughput phase: reader's initial sync")?.next_batch;

    let (done_tx, done_rx) = watch::channel::<Option<SendersDone>>(None);
    let reader = Reader {
        b: b.clone(),
        room: room.to_owned(),
        filter,
        marker: marker.clone(),
        sentinel,
        timeout: cfg.completeness_timeout,
    };
    let reader = tokio::spawn(reader.run(since, done_rx));

    let start = Instant::now();
    let tasks = senders.iter().enumerate().map(|(i, s)| {
        let (s, room, marker) = (s.clone(), room.to_owned(), marker.clone());
        let per_sender = cfg.per_sender;
        tokio::spawn(async move {
            let mut r = SenderResult {
                acked: Vec::with_capacity(per_sender as usize),
                errors: 0,
                first_error: None,
                last_ack: None,
            };
            for j in 0..per_sender {
                let body = format!("{marker}{i:03}-{j:06}");
                match s.send_text(&room, &body, &body).await {
                    Ok(_) => {
                        r.acked.push(body);
                        r.last_ack = Some(Instant::now());
                    }
                    Err(e) => {
                        r.errors += 1;
                        r.first_error.get_or_insert_with(|| format!("{e:#}"));
                    }
                }
            }
            r
        })
    });
    let results = futures_util::future::join_all(tasks).await;
    let finished = Instant::now();

    let mut acked = HashSet::new();
    let (mut errors, mut first_error, mut last_ack) = (0u32, None, None::<Instant>);
    for r in results {
        let r = r.context("a sender task panicked")?;
        errors += r.errors;
        first_error = first_error.or(r.first_error);
        last_ack = last_ack.max(r.last_ack);
        acked.extend(r.acked);
    }
    let wall = last_ack.unwrap_or(finished).saturating_duration_since(start);
    let throughput = ThroughputReport {
        senders: cfg.senders,
        per_sender: cfg.per_sender,
        attempted: cfg.senders * cfg.per_sender,
        acked: acked.len() as u32,
        errors,
        first_error,
        wall_s: wall.as_secs_f64(),
        events_per_s: acked.len() as f64 / wall.as_secs_f64().max(1e-9),
    };

    let acked = Arc::new(acked);
    // The reader may have finished early (an error); a closed channel is fine then.
    let _ = done_tx.send(Some(SendersDone { at: finished, acked: Arc::clone(&acked) }));
    let outcome = reader.await.context("the completeness reader panicked")?;
    Ok((throughput, outcome.report(&acked, finished)))
}

/// B's completeness reader: syncs the throughput room, filling limited batches from
/// `/messages`, and counts every marker body it sees.
struct Reader {
    b: Session,
    room: String,
    filter: String,
    marker: String,
    sentinel: String,
    timeout: Duration,
}

#[derive(Default)]
struct ReaderOutcome {
    counts: HashMap<String, u32>,
    sync_rounds: u32,
    limited_batches: u32,
    pages_fetched: u32,
    complete_at: Option<Instant>,
    timed_out: bool,
    error: Option<String>,
}

impl Reader {
    async fn run(self, mut since: String, done: watch::Receiver<Option<SendersDone>>) -> ReaderOutcome {
        let mut out = ReaderOutcome::default();
        let mut ids = HashSet::new();
        let start = Instant::now();
        let mut errors = 0;
        while out.sync_rounds < MAX_SYNC_ROUNDS {
            let finished = done.borrow().clone();
            if let Some(d) = &finished {
                if d.acked.iter().all(|b| out.counts.contains_key(b)) {
                    out.complete_at = Some(Instant::now());
                    return out;
                }
                if d.at.elapsed() > self.timeout {
                    out.timed_out = true;
                    return out;
                }
            }
            if start.elapsed() > READER_HARD_CAP {
                out.timed_out = true;
                return out;
            }
            out.sync_rounds += 1;
            match self.round(&mut since, &mut ids, &mut out).await {
                Ok(()) => errors = 0,
                Err(e) => {
                    errors += 1;
                    if errors >= MAX_CONSECUTIVE_ERRORS {
                        out.error = Some(format!("{e:#}"));
                        return out;
                    }
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
            }
        }
        out.timed_out = true;
        out
    }

    /// One sync; if its timeline is limited, page back until the gap is closed.
    async fn round(&self, since: &mut String, ids: &mut HashSet<String>, out: &mut ReaderOutcome) -> Result<()> {
        let resp = self.b.sync(Some(since), Some(&self.filter), 5_000).await?;
        let Some(joined) = resp.rooms.join.get(&self.room) else {
            *since = resp.next_batch;
            return Ok(());
        };
        let timeline = &joined.timeline;
        if timeline.limited {
            out.limited_batches += 1;
            if let Some(prev) = &timeline.prev_batch {
                self.fill_gap(prev, ids, out).await?;
            }
        }
        for ev in &timeline.events {
            self.record(ev, ids, out);
        }
        *since = resp.next_batch;
        Ok(())
    }

    /// Pages backwards from `from` until it meets an event already seen, the sentinel sent
    /// before the phase, or the start of the room.
    async fn fill_gap(&self, from: &str, ids: &mut HashSet<String>, out: &mut ReaderOutcome) -> Result<()> {
        let mut from = from.to_owned();
        for _ in 0..MAX_PAGES_PER_GAP {
            let page = self.b.messages(&self.room, Some(&from), Direction::Backward, 100, None).await?;
            out.pages_fetched += 1;
            for ev in &page.chunk {
                if ids.contains(&ev.event_id) || ev.body() == Some(self.sentinel.as_str()) {
                    return Ok(());
                }
                self.record(ev, ids, out);
            }
            match page.end {
                Some(end) if !page.chunk.is_empty() && end != from => from = end,
                _ => return Ok(()),
            }
        }
        bail!("a limited sync gap needed more than {MAX_PAGES_PER_GAP} pages")
    }

    fn record(&self, ev: &RoomEvent, ids: &mut HashSet<String>, out: &mut ReaderOutcome) {
        ids.insert(ev.event_id.clone());
        if let Some(body) = ev.body().filter(|b| b.starts_with(&self.marker)) {
            *out.counts.entry(body.to_owned()).or_default() += 1;
        }
    }
}

impl ReaderOutcome {
    fn report(self, acked: &HashSet<String>, senders_done: Instant) -> CompletenessReport {
        let missing = acked.iter().filter(|b| !self.counts.contains_key(*b)).count() as u32;
        let duplicates = self.counts.values().map(|c| c - 1).sum::<u32>();
        let unacknowledged_seen = self.counts.keys().filter(|b| !acked.contains(*b)).count() as u32;
        let ok = missing == 0 && duplicates == 0 && self.error.is_none();
        CompletenessReport {
            expected: acked.len() as u32,
            seen_unique: self.counts.len() as u32,
            missing,
            duplicates,
            unacknowledged_seen,
            sync_rounds: self.sync_rounds,
            limited_batches: self.limited_batches,
            pages_fetched: self.pages_fetched,
            catch_up_ms: self.complete_at.map(|t| ms(t.saturating_duration_since(senders_done))),
            timed_out: self.timed_out,
            reader_error: self.error,
            ok,
        }
    }
}

// ---- Federation: two homeservers, one user on each --------------------------------------------
//
// Both measurements go through the Client-Server API of each server only, so any pair of
// homeservers that federate with each other can be measured (Tocsin-Tocsin, Synapse-Synapse).

/// Give up on federated setup (invite over federation, remote join, first message) after this.
const FED_SETUP_TIMEOUT: Duration = Duration::from_secs(120);
/// How long server 2 may take to answer `/versions` again after its start command.
const RESTART_TIMEOUT: Duration = Duration::from_secs(300);

/// The two servers and the accounts' naming.
#[derive(Debug, Clone)]
pub struct FedConfig {
    /// Server 1: user A, who creates the room and sends.
    pub url1: String,
    /// Server 2: user B, who joins and reads.
    pub url2: String,
    pub prefix: String,
    pub password: String,
}

/// A room shared by A (server 1) and B (server 2), with B's sync position after the room's
/// last setup message.
struct FedPair {
    run_id: String,
    hs2: Homeserver,
    a: Session,
    b: Session,
    room: String,
    /// The body of the last message A sent during setup (B has seen it).
    sentinel: String,
    /// B's `next_batch` after that message.
    since: String,
    setup_s: f64,
}

/// Registers A on server 1 and B on server 2 (`{prefix}-{what}-a`, `-b`), A creates a room and
/// invites B, B joins over federation, and B sees a message from A.
async fn fed_pair(cfg: &FedConfig, what: &str, sync_limit: u32) -> Result<FedPair> {
    let run_id = format!("{:08x}", rand::random::<u32>());
    let hs1 = Homeserver::new(&cfg.url1)?;
    let hs2 = Homeserver::new(&cfg.url2)?;
    hs1.versions().await.with_context(|| format!("is a homeserver listening at {}?", cfg.url1))?;
    hs2.versions().await.with_context(|| format!("is a homeserver listening at {}?", cfg.url2))?;
    let start = Instant::now();
    let a = hs1.register_or_login(&format!("{}-{what}-a", cfg.prefix), &cfg.password).await?;
    let b = hs2.register_or_login(&format!("{}-{what}-b", cfg.prefix), &cfg.password).await?;
    let room = a
        .create_room(&json!({"preset": "private_chat", "name": format!("loadgen {run_id} federation {what}")}))
        .await?;
    a.invite(&room, &b.user_id).await.context("inviting B over federation")?;
    // The invite is synchronous over federation, but give a slow server room to settle.
    let deadline = Instant::now() + FED_SETUP_TIMEOUT;
    loop {
        match b.join(&room).await {
            Ok(()) => break,
            Err(e) if Instant::now() < deadline => {
                eprintln!("loadgen: B's join failed, retrying: {e:#}");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Err(e) => return Err(e.context("B joining over federation")),
        }
    }
    let filter = room_timeline_filter(&room, sync_limit);
    let mut since = b.sync(None, Some(&filter), 0).await.context("B's first sync")?.next_batch;
    let sentinel = format!("{run_id}-setup");
    a.send_text(&room, &sentinel, &sentinel).await.context("A's setup message")?;
    let deadline = Instant::now() + FED_SETUP_TIMEOUT;
    'wait: loop {
        if Instant::now() > deadline {
            bail!("B did not see A's setup message within {FED_SETUP_TIMEOUT:?}: is federation working?");
        }
        let resp = b.sync(Some(&since), Some(&filter), 5_000).await?;
        since = resp.next_batch;
        if let Some(joined) = resp.rooms.join.get(&room)
            && joined.timeline.events.iter().any(|e| e.body() == Some(sentinel.as_str()))
        {
            break 'wait;
        }
    }
    Ok(FedPair { run_id, hs2, a, b, room, sentinel, since, setup_s: start.elapsed().as_secs_f64() })
}

#[derive(Debug, Clone, Serialize)]
pub struct FedLatencyReport {
    pub label: String,
    pub url1: String,
    pub url2: String,
    pub run_id: String,
    pub setup_s: f64,
    pub latency: LatencyReport,
}

impl FedLatencyReport {
    pub fn passed(&self) -> bool {
        self.latency.lost == 0 && self.latency.send_errors == 0
    }
}

/// Federated latency: A (server 1) sends `events` messages one at a time; each is timed from
/// the start of A's PUT until B's long-poll `/sync` on server 2 returns it.
pub async fn fed_latency(
    cfg: &FedConfig,
    label: &str,
    events: u32,
    event_timeout: Duration,
) -> Result<FedLatencyReport> {
    let pair = fed_pair(cfg, "fl", 50).await?;
    let lat_cfg = Config {
        url: cfg.url1.clone(),
        prefix: cfg.prefix.clone(),
        password: cfg.password.clone(),
        latency_events: events,
        latency_event_timeout: event_timeout,
        senders: 0,
        per_sender: 0,
        sync_limit: 50,
        completeness_timeout: Duration::ZERO,
    };
    let latency = latency_phase(&lat_cfg, &pair.a, &pair.b, &pair.room, &pair.run_id).await?;
    Ok(FedLatencyReport {
        label: label.to_owned(),
        url1: cfg.url1.clone(),
        url2: cfg.url2.clone(),
        run_id: pair.run_id,
        setup_s: pair.setup_s,
        latency,
    })
}

/// The catch-up measurement's parameters.
#[derive(Debug, Clone)]
pub struct CatchupConfig {
    /// Events A sends while server 2 is down.
    pub events: u32,
    /// Concurrent sending tasks for A (one device, distinct transaction ids).
    pub senders: u32,
    /// How long server 2 stays down at least (from its stop command returning to its start
    /// command); longer if sending takes longer.
    pub outage: Duration,
    /// How long B may take, from server 2 answering again, to have every event.
    pub timeout: Duration,
    /// Timeline limit of B's sync filter.
    pub sync_limit: u32,
    /// Shell command (`sh -c`) that stops server 2; must return once it is down.
    pub stop_cmd: String,
    /// Shell command that starts server 2 again; may return at once or once it is up.
    pub start_cmd: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct CatchupReport {
    pub label: String,
    pub url1: String,
    pub url2: String,
    pub run_id: String,
    pub setup_s: f64,
    pub events: u32,
    /// Events server 1 acknowledged with an event id while server 2 was down.
    pub acked: u32,
    pub send_errors: u32,
    pub first_send_error: Option<String>,
    /// From the first PUT to the last acknowledgement.
    pub send_s: f64,
    /// From the stop command returning to the start command being run.
    pub outage_s: f64,
    /// From the start command being run to server 2's `/versions` answering.
    pub restart_s: f64,
    /// From server 2's `/versions` answering to B having every acknowledged event.
    pub catch_up_ms: Option<f64>,
    /// From server 2's `/versions` answering to B's first successful `/sync`.
    pub first_sync_ms: Option<f64>,
    /// Distinct acknowledged event ids B saw.
    pub seen_unique: u32,
    pub missing: u32,
    /// Extra copies of an event id in B's sync timelines.
    pub duplicates: u32,
    /// Event ids B got both from a `/messages` gap fill and from a sync timeline (a server
    /// whose `/messages` order differs from its sync stream order, e.g. after backfill).
    pub gap_fill_overlap: u32,
    /// Event ids B got in sync timelines, in `/messages` pages filling a limited timeline's
    /// gap, and in backward sweeps of the room (when sync had gone quiet with events missing).
    pub via_sync: u32,
    pub via_gap_fill: u32,
    pub via_sweep: u32,
    pub sync_rounds: u32,
    pub sync_errors: u32,
    pub limited_batches: u32,
    pub sweeps: u32,
    pub pages_fetched: u32,
    pub timed_out: bool,
    pub reader_error: Option<String>,
    pub ok: bool,
}

async fn run_hook(what: &str, cmd: &str) -> Result<()> {
    let status = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .status()
        .await
        .with_context(|| format!("running the {what} command"))?;
    if !status.success() {
        bail!("the {what} command `{cmd}` failed: {status}");
    }
    Ok(())
}

/// Catch-up: server 2 is stopped, A sends `events` messages, server 2 stays down for at least
/// `outage`, then starts again; measures from its client port answering until B has every
/// acknowledged event (by event id, each once).
pub async fn fed_catchup(cfg: &FedConfig, cu: &CatchupConfig, label: &str) -> Result<CatchupReport> {
    let pair = fed_pair(cfg, "cu", cu.sync_limit).await?;
    let marker = format!("{}-cu-", pair.run_id);

    eprintln!("loadgen: stopping server 2");
    run_hook("stop", &cu.stop_cmd).await?;
    let down_at = Instant::now();

    eprintln!("loadgen: server 2 is down; A sends {} events", cu.events);
    let next = Arc::new(std::sync::atomic::AtomicU32::new(0));
    let send_start = Instant::now();
    let tasks = (0..cu.senders.max(1)).map(|_| {
        let (a, room, marker, next, total) =
            (pair.a.clone(), pair.room.clone(), marker.clone(), next.clone(), cu.events);
        tokio::spawn(async move {
            let mut r = SenderResult { acked: Vec::new(), errors: 0, first_error: None, last_ack: None };
            loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if i >= total {
                    return r;
                }
                let body = format!("{marker}{i:06}");
                match a.send_text(&room, &body, &body).await {
                    Ok(id) => {
                        r.acked.push(id);
                        r.last_ack = Some(Instant::now());
                    }
                    Err(e) => {
                        r.errors += 1;
                        r.first_error.get_or_insert_with(|| format!("{e:#}"));
                    }
                }
            }
        })
    });
    let mut acked = HashSet::new();
    let (mut send_errors, mut first_send_error, mut last_ack) = (0u32, None, None::<Instant>);
    for r in futures_util::future::join_all(tasks).await {
        let r = r.context("a sender task panicked")?;
        send_errors += r.errors;
        first_send_error = first_send_error.or(r.first_error);
        last_ack = last_ack.max(r.last_ack);
        acked.extend(r.acked);
    }
    let send_s = last_ack.unwrap_or_else(Instant::now).saturating_duration_since(send_start).as_secs_f64();
    eprintln!("loadgen: {} of {} acknowledged in {send_s:.1} s ({send_errors} errors)", acked.len(), cu.events);

    tokio::time::sleep_until(tokio::time::Instant::from_std(down_at + cu.outage)).await;
    let outage_s = down_at.elapsed().as_secs_f64();
    eprintln!("loadgen: starting server 2 after {outage_s:.1} s down");
    let start_at = Instant::now();
    let start_cmd = cu.start_cmd.clone();
    let starter = tokio::spawn(async move { run_hook("start", &start_cmd).await });
    let up_at = wait_until_up(&pair.hs2, &starter).await?;
    let restart_s = up_at.saturating_duration_since(start_at).as_secs_f64();
    eprintln!("loadgen: server 2 answers after {restart_s:.1} s; waiting for B to catch up");

    let reader = CatchupReader {
        b: &pair.b,
        room: &pair.room,
        filter: room_timeline_filter(&pair.room, cu.sync_limit),
        sentinel: &pair.sentinel,
        marker: &marker,
        acked: &acked,
    };
    let out = reader.run(pair.since.clone(), up_at, cu.timeout).await;
    match starter.await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => eprintln!("loadgen: {e:#}"),
        Err(e) => eprintln!("loadgen: the start command's task failed: {e}"),
    }

    let seen_unique = out.seen.len() as u32;
    let missing = acked.iter().filter(|id| !out.seen.contains_key(*id)).count() as u32;
    let duplicates = out.sync_counts.values().map(|c| c.saturating_sub(1)).sum::<u32>();
    let gap_fill_overlap = out.gap_filled.iter().filter(|id| out.sync_counts.contains_key(*id)).count() as u32;
    let count = |how: Via| out.seen.values().filter(|v| **v == how).count() as u32;
    let ok = missing == 0 && duplicates == 0 && out.error.is_none() && !out.timed_out;
    Ok(CatchupReport {
        label: label.to_owned(),
        url1: cfg.url1.clone(),
        url2: cfg.url2.clone(),
        run_id: pair.run_id.clone(),
        setup_s: pair.setup_s,
        events: cu.events,
        acked: acked.len() as u32,
        send_errors,
        first_send_error,
        send_s,
        outage_s,
        restart_s,
        catch_up_ms: out.complete_at.map(|t| ms(t.saturating_duration_since(up_at))),
        first_sync_ms: out.first_sync_at.map(|t| ms(t.saturating_duration_since(up_at))),
        seen_unique,
        missing,
        duplicates,
        gap_fill_overlap,
        via_sync: count(Via::Sync),
        via_gap_fill: count(Via::GapFill),
        via_sweep: count(Via::Sweep),
        sync_rounds: out.sync_rounds,
        sync_errors: out.sync_errors,
        limited_batches: out.limited_batches,
        sweeps: out.sweeps,
        pages_fetched: out.pages_fetched,
        timed_out: out.timed_out,
        reader_error: out.error,
        ok,
    })
}

/// Polls server 2's `/_matrix/client/versions` every 20 ms until it answers 200; returns when.
async fn wait_until_up(hs: &Homeserver, starter: &tokio::task::JoinHandle<Result<()>>) -> Result<Instant> {
    let mut url = hs.base().clone();
    url.set_path("/_matrix/client/versions");
    let http = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(1))
        .build()
        .context("building the HTTP client")?;
    let deadline = Instant::now() + RESTART_TIMEOUT;
    let mut starter_done = None::<Instant>;
    loop {
        if let Ok(resp) = http.get(url.clone()).send().await
            && resp.status().is_success()
        {
            return Ok(Instant::now());
        }
        if starter.is_finished() {
            let done = *starter_done.get_or_insert_with(Instant::now);
            if done.elapsed() > Duration::from_secs(60) {
                bail!("server 2 did not answer {url} within 60 s of its start command returning");
            }
        }
        if Instant::now() > deadline {
            bail!("server 2 did not answer {url} within {RESTART_TIMEOUT:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Via {
    Sync,
    GapFill,
    Sweep,
}

/// B after server 2's return: syncs (filling limited timelines from `/messages`), and when a
/// sync round brings nothing new while events are missing, sweeps the room backwards from the
/// newest position down to the setup message (which makes a server backfill over federation).
struct CatchupReader<'a> {
    b: &'a Session,
    room: &'a str,
    filter: String,
    sentinel: &'a str,
    marker: &'a str,
    acked: &'a HashSet<String>,
}

#[derive(Default)]
struct CatchupOutcome {
    /// Every acknowledged event id seen, and how it first came.
    seen: HashMap<String, Via>,
    /// Copies of each acknowledged event id delivered by sync timelines.
    sync_counts: HashMap<String, u32>,
    /// Acknowledged event ids delivered by gap fills.
    gap_filled: HashSet<String>,
    sync_rounds: u32,
    sync_errors: u32,
    limited_batches: u32,
    sweeps: u32,
    pages_fetched: u32,
    first_sync_at: Option<Instant>,
    complete_at: Option<Instant>,
    timed_out: bool,
    error: Option<String>,
}

impl CatchupReader<'_> {
    async fn run(&self, mut since: String, up_at: Instant, timeout: Duration) -> CatchupOutcome {
        let mut out = CatchupOutcome::default();
        let deadline = up_at + timeout;
        let mut last_report = Instant::now();
        while out.seen.len() < self.acked.len() {
            if Instant::now() > deadline {
                out.timed_out = true;
                return out;
            }
            if last_report.elapsed() > Duration::from_secs(5) {
                eprintln!("loadgen: B has {} of {} events", out.seen.len(), self.acked.len());
                last_report = Instant::now();
            }
            out.sync_rounds += 1;
            let before = out.seen.len();
            let resp = match self.b.sync(Some(&since), Some(&self.filter), 1_000).await {
                Ok(r) => r,
                Err(e) => {
                    // Server 2 may answer /versions before it serves /sync; keep trying.
                    out.sync_errors += 1;
                    if out.sync_errors % 50 == 1 {
                        eprintln!("loadgen: B's sync failed ({} so far): {e:#}", out.sync_errors);
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            out.first_sync_at.get_or_insert_with(Instant::now);
            since = resp.next_batch;
            if let Some(joined) = resp.rooms.join.get(self.room) {
                let timeline = &joined.timeline;
                if timeline.limited {
                    out.limited_batches += 1;
                    if let Some(prev) = &timeline.prev_batch
                        && let Err(e) = self.page_back(prev, Via::GapFill, &mut out).await
                    {
                        out.error = Some(format!("{e:#}"));
                        return out;
                    }
                }
                for ev in &timeline.events {
                    self.record(ev, Via::Sync, &mut out);
                }
            }
            if out.seen.len() == before && out.seen.len() < self.acked.len() {
                out.sweeps += 1;
                if let Err(e) = self.page_back(&since, Via::Sweep, &mut out).await {
                    out.error = Some(format!("{e:#}"));
                    return out;
                }
            }
        }
        out.complete_at = Some(Instant::now());
        out
    }

    /// Pages backwards from `from`. A gap fill stops at the first event already seen; a sweep
    /// goes on to the setup message (or the room's start), or until every event is seen.
    async fn page_back(&self, from: &str, how: Via, out: &mut CatchupOutcome) -> Result<()> {
        let mut from = from.to_owned();
        for _ in 0..MAX_PAGES_PER_GAP {
            let page = self.b.messages(self.room, Some(&from), Direction::Backward, 100, None).await?;
            out.pages_fetched += 1;
            for ev in &page.chunk {
                if ev.body() == Some(self.sentinel) {
                    return Ok(());
                }
                if how == Via::GapFill && out.seen.contains_key(&ev.event_id) {
                    return Ok(());
                }
                self.record(ev, how, out);
            }
            if how == Via::Sweep && out.seen.len() == self.acked.len() {
                return Ok(());
            }
            match page.end {
                Some(end) if !page.chunk.is_empty() && end != from => from = end,
                _ => return Ok(()),
            }
        }
        bail!("paging back needed more than {MAX_PAGES_PER_GAP} pages")
    }

    fn record(&self, ev: &RoomEvent, how: Via, out: &mut CatchupOutcome) {
        if !self.acked.contains(&ev.event_id) {
            if ev.body().is_some_and(|b| b.starts_with(self.marker)) {
                // Sent during the outage but never acknowledged to A: not counted.
                eprintln!("loadgen: B saw {} which A never got an id for", ev.event_id);
            }
            return;
        }
        match how {
            Via::Sync => *out.sync_counts.entry(ev.event_id.clone()).or_default() += 1,
            Via::GapFill => {
                out.gap_filled.insert(ev.event_id.clone());
            }
            Via::Sweep => {}
        }
        out.seen.entry(ev.event_id.clone()).or_insert(how);
    }
}

impl CatchupReport {
    pub fn passed(&self) -> bool {
        self.ok && self.send_errors == 0
    }
}
