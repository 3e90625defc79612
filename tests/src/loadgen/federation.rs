//! Federation: two homeservers, one user on each. Both measurements go through the Client-Server
//! API of each server only, so any pair of homeservers that federate with each other can be
//! measured (Tocsin-Tocsin, Synapse-Synapse).

use super::*;

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
