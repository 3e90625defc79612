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
    /// 429 `M_LIMIT_EXCEEDED` answers the run waited out (0: the server's rate limits never bound).
    pub rate_limited: u64,
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
        rate_limited: hs.rate_limited(),
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

pub mod alarm;
pub mod alarm_federation;
pub mod chart;
pub mod fanout;
mod federation;
pub mod node_metrics;
pub mod room_size;
pub mod store_size;
pub mod sync_cost;
pub use federation::*;
