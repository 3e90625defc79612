//! `tocsin-loadgen`: drives any Matrix homeserver on loopback through the plain Client-Server
//! API and reports sync latency, send throughput, delivery completeness and server RSS.
//!
//! Two federated measurements take two homeservers that federate (A on server 1, B on
//! server 2): `fed-latency` (send on 1 until B's long-poll sync on 2 returns it) and
//! `fed-catchup` (server 2 stopped and restarted by shell commands while A sends; time until B
//! has every event). `tests/bench/federation.sh` runs both for Tocsin and Synapse pairs.
//!
//! The scenarios live in `tocsin_tests::loadgen`; this binary parses arguments and prints.

use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};

#[path = "loadgen/options.rs"]
mod options;
#[path = "loadgen/room.rs"]
mod room;
use options::{OwnNodes, fresh_dir, write_json};
use tocsin_tests::loadgen::{
    self, CatchupConfig, CatchupReport, Config, FedConfig, FedLatencyReport, Report, RssReport,
};

/// See the workspace manifest: the system allocator was a tenth of the CPU under load.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Debug, Parser)]
#[command(name = "tocsin-loadgen", about, args_conflicts_with_subcommands = true)]
struct Args {
    #[command(subcommand)]
    command: Option<Scenario>,
    /// Homeserver base URL; only loopback hosts are accepted.
    #[arg(long, default_value = "http://127.0.0.1:8008")]
    url: String,
    /// Localpart prefix for the users (default: lg<unix seconds>), so reruns don't collide.
    #[arg(long)]
    prefix: Option<String>,
    /// Password for every user this run registers or logs in.
    #[arg(long, default_value = "loadgen-password-0")]
    password: String,
    /// Name of this run in the output (e.g. "synapse", "tocsin").
    #[arg(long, default_value = "homeserver")]
    label: String,
    /// Events sent one at a time in the latency phase.
    #[arg(long, default_value_t = 300, value_parser = clap::value_parser!(u32).range(200..))]
    latency_events: u32,
    /// Seconds to wait for one latency event to reach the sync loop before counting it lost.
    #[arg(long, default_value_t = 30)]
    latency_event_timeout: u64,
    /// Concurrent senders in the throughput phase (each its own user and device).
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=500))]
    senders: u32,
    /// Events each sender sends in the throughput phase.
    #[arg(long, default_value_t = 200, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    per_sender: u32,
    /// Timeline limit in the completeness reader's sync filter (small values force paging).
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=1000))]
    sync_limit: u32,
    /// Seconds the completeness reader may keep syncing after the last sender finished.
    #[arg(long, default_value_t = 120)]
    completeness_timeout: u64,
    /// Homeserver process id: VmRSS/VmHWM are read from /proc/PID/status before and after.
    #[arg(long)]
    pid: Option<u32>,
    /// Also write every figure as one JSON object to this file.
    #[arg(long)]
    json: Option<std::path::PathBuf>,
}

/// The other scenarios: federated measurements between two homeservers and the sync cost sweep
/// (without one: the single-server scenario).
#[derive(Debug, Subcommand)]
enum Scenario {
    /// A on server 1 sends messages one at a time; each is timed until B's long-poll /sync on
    /// server 2 returns it.
    FedLatency {
        #[command(flatten)]
        common: FedArgs,
        /// Messages sent one at a time.
        #[arg(long, default_value_t = 300, value_parser = clap::value_parser!(u32).range(1..=100_000))]
        events: u32,
        /// Seconds to wait for one message at B before counting it lost.
        #[arg(long, default_value_t = 30)]
        event_timeout: u64,
    },
    /// Server 2 is stopped (--stop-cmd), A sends messages, server 2 is started again
    /// (--start-cmd); measures from server 2's client port answering until B has every message.
    FedCatchup {
        #[command(flatten)]
        common: FedArgs,
        /// Messages A sends while server 2 is down.
        #[arg(long, default_value_t = 5000, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
        events: u32,
        /// Concurrent sending tasks for A.
        #[arg(long, default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=64))]
        senders: u32,
        /// Seconds server 2 stays down at least (longer if sending takes longer).
        #[arg(long, default_value_t = 60)]
        outage: u64,
        /// Seconds B may take to have every message once server 2 answers again.
        #[arg(long, default_value_t = 300)]
        timeout: u64,
        /// Timeline limit of B's sync filter.
        #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=1000))]
        sync_limit: u32,
        /// Shell command that stops server 2 and returns once it is down.
        #[arg(long)]
        stop_cmd: String,
        /// Shell command that starts server 2 (may return at once; server 2 counts as back
        /// when its /_matrix/client/versions answers).
        #[arg(long)]
        start_cmd: String,
    },
    /// One user's `/sync` as their room count grows: the initial sync, and the incremental sync
    /// after one message in one room, at each count of the sweep.
    SyncCost {
        /// Base URL of the homeserver; loopback only.
        #[arg(long, default_value = "http://127.0.0.1:8008")]
        url: String,
        /// Room counts to measure at, ascending and comma-separated.
        #[arg(long, value_delimiter = ',', default_value = "10,100,1000")]
        rooms: Vec<u32>,
        /// Incremental syncs measured at each room count.
        #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=10_000))]
        samples: u32,
        /// Localpart prefix for the user (default: lg<unix seconds>).
        #[arg(long)]
        prefix: Option<String>,
        #[arg(long, default_value = "loadgen-password-0")]
        password: String,
        /// Name of this run in the output (e.g. "synapse", "tocsin").
        #[arg(long, default_value = "homeserver")]
        label: String,
        /// Also write the figures as one JSON object to this file.
        #[arg(long)]
        json: Option<std::path::PathBuf>,
    },
    /// All-hands fan-out: USERS users long-poll one room and each message is timed until every
    /// one of their syncs holds it; then IDLE long-polls (one user each, over shared HTTP/2
    /// connections) are held open and the server's RSS is read.
    Fanout {
        /// Base URL of the homeserver; loopback only.
        #[arg(long, default_value = "http://127.0.0.1:8008")]
        url: String,
        #[arg(long, default_value_t = 300, value_parser = clap::value_parser!(u32).range(2..=19_000))]
        users: u32,
        #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..=1000))]
        messages: u32,
        #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u32).range(0..=100_000))]
        idle: u32,
        /// Seconds the idle long-polls are held before RSS is read.
        #[arg(long, default_value_t = 10)]
        idle_hold: u64,
        /// The homeserver's process id, for RSS.
        #[arg(long)]
        pid: Option<u32>,
        /// Localpart prefix for the users (default: lg<unix seconds>).
        #[arg(long)]
        prefix: Option<String>,
        #[arg(long, default_value = "loadgen-password-0")]
        password: String,
        #[arg(long, default_value = "homeserver")]
        label: String,
        /// Also write the figures as one JSON object to this file.
        #[arg(long)]
        json: Option<std::path::PathBuf>,
    },
    /// An alarm to RECIPIENTS users spread over NODES Tocsin nodes (each its own
    /// `tocsin-test-node` process, started here under one signed federation list): the time
    /// until every recipient's sync holds it, the pushes to a gateway, and the time until the
    /// status shows all acknowledged once every recipient has reacted.
    Alarm {
        #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(2..=20))]
        nodes: u32,
        #[arg(long, default_value_t = 250, value_parser = clap::value_parser!(u32).range(2..=19_000))]
        recipients: u32,
        #[command(flatten)]
        own: OwnNodes,
    },
    /// One room grown through SIZES members over two servers (Tocsin nodes, each its own
    /// process, or Synapse servers; their links through proxies): at each size, joins one at a
    /// time, a late joiner's first /sync with lazy-loaded members and without, and a partition
    /// healed (until both servers agree).
    RoomSize(room::RoomSizeArgs),
    /// Prints `room-size --json` reports (one per server) as one table and draws their charts.
    RoomReport(room::RoomReportArgs),
    /// A big store: `rooms` rooms filled with messages up to each checkpoint; at each, the bytes
    /// on disk per event, the node binary's start-up time and RSS on it, and a first /sync.
    StoreSize {
        #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u32).range(1..=100_000))]
        rooms: u32,
        /// Messages in the store at each checkpoint, ascending (comma-separated).
        #[arg(long, value_delimiter = ',', default_value = "100000,1000000,3000000,10000000")]
        checkpoints: Vec<u64>,
        /// The store's folder (a fresh one; default: a new folder under the system's temp dir).
        #[arg(long)]
        dir: Option<std::path::PathBuf>,
        /// The node binary measured (default: `tocsin-node` beside this one).
        #[arg(long)]
        node_binary: Option<std::path::PathBuf>,
        /// Also write the figures as one JSON object to this file.
        #[arg(long)]
        json: Option<std::path::PathBuf>,
        /// Also draw `scale-store-time.svg` and `scale-store-rss.svg` into this folder.
        #[arg(long)]
        chart_dir: Option<std::path::PathBuf>,
    },
    /// Prints a `store-size --json` report as a table again and draws its charts.
    StoreReport {
        #[arg(long)]
        input: std::path::PathBuf,
        #[arg(long)]
        chart_dir: std::path::PathBuf,
    },
    /// Turns `sync-cost` JSON reports (one per server) into a markdown table on stdout and SVG
    /// charts of each curve.
    ScaleReport {
        /// A report written by `sync-cost --json`; give one per server, in column order.
        #[arg(long = "input", required = true)]
        inputs: Vec<std::path::PathBuf>,
        /// Where the charts go.
        #[arg(long)]
        out_dir: std::path::PathBuf,
        /// File name stem of the charts (`<stem>-incremental.svg`, `<stem>-initial.svg`).
        #[arg(long, default_value = "sync-cost")]
        stem: String,
    },
}

#[derive(Debug, clap::Args)]
struct FedArgs {
    /// Server 1 (user A) base URL; loopback only.
    #[arg(long)]
    url1: String,
    /// Server 2 (user B) base URL; loopback only.
    #[arg(long)]
    url2: String,
    /// Localpart prefix for the users (default: lg<unix seconds>).
    #[arg(long)]
    prefix: Option<String>,
    #[arg(long, default_value = "loadgen-password-0")]
    password: String,
    /// Name of this run in the output (e.g. "synapse", "tocsin").
    #[arg(long, default_value = "homeservers")]
    label: String,
    /// Also write the figures as one JSON object to this file.
    #[arg(long)]
    json: Option<std::path::PathBuf>,
}

fn default_prefix(prefix: Option<String>) -> Result<String> {
    let prefix = match prefix {
        Some(p) => p,
        None => {
            let secs = SystemTime::now().duration_since(UNIX_EPOCH).context("system clock before 1970")?.as_secs();
            format!("lg{secs}")
        }
    };
    if !valid_prefix(&prefix) {
        bail!("--prefix must be 1-64 characters of a-z 0-9 . _ = -");
    }
    Ok(prefix)
}

fn print_fed_latency(r: &FedLatencyReport) {
    let l = &r.latency;
    println!("tocsin-loadgen fed-latency  label={}  {} -> {}  run={}", r.label, r.url1, r.url2, r.run_id);
    println!("  setup (register, room, remote join)  {:>8.2} s", r.setup_s);
    println!("latency ({} messages one at a time, A's PUT on 1 -> B's /sync on 2)", l.events);
    println!("  p50                              {:>10.2} ms", l.p50_ms);
    println!("  p90                              {:>10.2} ms", l.p90_ms);
    println!("  p99                              {:>10.2} ms", l.p99_ms);
    println!("  max                              {:>10.2} ms", l.max_ms);
    println!("  mean                             {:>10.2} ms", l.mean_ms);
    println!("  PUT ack p50                      {:>10.2} ms", l.send_ack_p50_ms);
    println!("  received / lost / send errors    {:>4} / {} / {}", l.received, l.lost, l.send_errors);
    println!("result: {}", if r.passed() { "PASS" } else { "FAIL" });
}

fn print_fed_catchup(r: &CatchupReport) {
    println!("tocsin-loadgen fed-catchup  label={}  {} -> {}  run={}", r.label, r.url1, r.url2, r.run_id);
    println!("  setup (register, room, remote join)  {:>8.2} s", r.setup_s);
    println!("while server 2 was down");
    println!("  acknowledged                     {:>10} of {}", r.acked, r.events);
    println!("  send errors                      {:>10}", r.send_errors);
    println!("  send time                        {:>10.2} s", r.send_s);
    println!("  outage                           {:>10.2} s", r.outage_s);
    if let Some(e) = &r.first_send_error {
        println!("  first send error: {e}");
    }
    println!("after server 2's return");
    println!("  restart until /versions answers  {:>10.2} s", r.restart_s);
    let opt = |v: Option<f64>| v.map_or_else(|| "never".to_owned(), |v| format!("{v:.1}"));
    println!("  first /sync of B                 {:>10} ms", opt(r.first_sync_ms));
    println!("  catch-up (B has every event)     {:>10} ms", opt(r.catch_up_ms));
    println!("  seen / missing / duplicates      {:>10} / {} / {}", r.seen_unique, r.missing, r.duplicates);
    println!("  via sync / gap fill / sweep      {:>10} / {} / {}", r.via_sync, r.via_gap_fill, r.via_sweep);
    println!("  gap-filled, then also in sync    {:>10}", r.gap_fill_overlap);
    println!(
        "  sync rounds / errors / limited   {:>10} / {} / {}  (sweeps {}, pages {})",
        r.sync_rounds, r.sync_errors, r.limited_batches, r.sweeps, r.pages_fetched
    );
    if let Some(e) = &r.reader_error {
        println!("  reader error: {e}");
    }
    println!("result: {}", if r.passed() { "PASS" } else { "FAIL" });
}

async fn run_fed(fed: Scenario) -> Result<bool> {
    match fed {
        Scenario::FedLatency { common, events, event_timeout } => {
            let cfg = fed_config(&common)?;
            let r = loadgen::fed_latency(&cfg, &common.label, events, Duration::from_secs(event_timeout)).await?;
            write_json(common.json.as_deref(), &r)?;
            print_fed_latency(&r);
            Ok(r.passed())
        }
        Scenario::FedCatchup { common, events, senders, outage, timeout, sync_limit, stop_cmd, start_cmd } => {
            let cfg = fed_config(&common)?;
            let cu = CatchupConfig {
                events,
                senders,
                outage: Duration::from_secs(outage),
                timeout: Duration::from_secs(timeout),
                sync_limit,
                stop_cmd,
                start_cmd,
            };
            let r = loadgen::fed_catchup(&cfg, &cu, &common.label).await?;
            write_json(common.json.as_deref(), &r)?;
            print_fed_catchup(&r);
            Ok(r.passed())
        }
        Scenario::SyncCost { url, rooms, samples, prefix, password, label, json } => {
            let cfg =
                loadgen::sync_cost::SyncCostConfig { url, prefix: default_prefix(prefix)?, password, rooms, samples };
            let r = loadgen::sync_cost::run(&cfg, &label).await?;
            write_json(json.as_deref(), &r)?;
            println!("tocsin-loadgen sync-cost  label={}  url={}", r.label, r.url);
            println!(
                "{:>8} {:>10} {:>12} {:>12} {:>12}",
                "rooms", "setup s", "initial ms", "incr p50 ms", "incr p95 ms"
            );
            for p in &r.points {
                println!(
                    "{:>8} {:>10.1} {:>12.1} {:>12.2} {:>12.2}",
                    p.rooms, p.setup_s, p.initial_ms, p.incremental_p50_ms, p.incremental_p95_ms
                );
            }
            Ok(r.points.iter().all(|p| p.initial_rooms_seen >= p.rooms as usize))
        }
        Scenario::Fanout { url, users, messages, idle, idle_hold, pid, prefix, password, label, json } => {
            let cfg = loadgen::fanout::FanoutConfig {
                url,
                prefix: default_prefix(prefix)?,
                password,
                users,
                messages,
                idle,
                pid,
                idle_hold: Duration::from_secs(idle_hold),
            };
            let r = loadgen::fanout::run(&cfg, &label).await?;
            write_json(json.as_deref(), &r)?;
            let mib = |v: Option<f64>| v.map_or("-".to_owned(), |v| format!("{v:.1} MiB"));
            println!("tocsin-loadgen fanout  label={}  url={}", r.label, r.url);
            println!("  {} users in one room, {} messages; setup {:.1} s", r.users, r.messages, r.setup_s);
            println!("  delivered {} (missing {}, failed long-polls {})", r.delivered, r.missing, r.poll_errors);
            println!(
                "  PUT start -> each sync: p50 {:.1} ms, p90 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
                r.p50_ms, r.p90_ms, r.p99_ms, r.max_ms
            );
            println!("  PUT start -> the last user's sync, median over messages: {:.1} ms", r.all_users_p50_ms);
            println!("  idle long-polls {} (open at the RSS read: {})", r.idle, r.idle_open);
            println!(
                "  RSS before {}, with the fan-out's long-polls {}, with the idle ones {}",
                mib(r.rss_before_mib),
                mib(r.rss_fanout_mib),
                mib(r.rss_idle_mib)
            );
            Ok(r.missing == 0 && r.poll_errors == 0 && r.idle_open == u64::from(r.idle))
        }
        Scenario::RoomSize(args) => room::room_size(args).await,
        Scenario::RoomReport(args) => room::room_report(args),
        Scenario::Alarm { nodes, recipients, own } => {
            let (dir, node_binary) = own.resolve("alarm")?;
            let cfg = loadgen::alarm::AlarmBenchConfig {
                nodes: nodes as usize,
                recipients,
                dir: dir.clone(),
                node_binary,
                password: own.password.clone(),
            };
            let r = loadgen::alarm::run(&cfg)
                .await
                .with_context(|| format!("the nodes' data and logs are kept in {}", dir.display()))?;
            // The nodes were killed when the run ended; their data is of no further use.
            std::fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))?;
            write_json(own.json.as_deref(), &r)?;
            print!("{}", r.summary());
            Ok(r.missing == 0 && r.pushes == u64::from(r.recipients) && r.pushes_malformed == 0)
        }
        Scenario::StoreSize { rooms, checkpoints, dir, node_binary, json, chart_dir } => {
            let dir = fresh_dir(dir, "store")?;
            let node_binary = match node_binary {
                Some(path) => path,
                None => std::env::current_exe()?.parent().context("this executable has no folder")?.join("tocsin-node"),
            };
            let cfg = loadgen::store_size::StoreSizeConfig { dir, node_binary, rooms, checkpoints };
            let report = loadgen::store_size::run(&cfg).await?;
            print!("{}", loadgen::store_size::table(&report));
            if let Some(dir) = chart_dir {
                for path in loadgen::store_size::charts(&report, &dir, "scale-store")? {
                    eprintln!("chart written to {}", path.display());
                }
            }
            write_json(json.as_deref(), &report)?;
            Ok(true)
        }
        Scenario::StoreReport { input, chart_dir } => {
            let text = std::fs::read_to_string(&input).with_context(|| format!("reading {}", input.display()))?;
            let report: loadgen::store_size::StoreSizeReport =
                serde_json::from_str(&text).with_context(|| format!("parsing {}", input.display()))?;
            print!("{}", loadgen::store_size::table(&report));
            for path in loadgen::store_size::charts(&report, &chart_dir, "scale-store")? {
                eprintln!("chart written to {}", path.display());
            }
            Ok(true)
        }
        Scenario::ScaleReport { inputs, out_dir, stem } => {
            let mut reports = Vec::new();
            for input in &inputs {
                let text = std::fs::read_to_string(input).with_context(|| format!("reading {}", input.display()))?;
                let report: loadgen::sync_cost::SyncCostReport =
                    serde_json::from_str(&text).with_context(|| format!("parsing {}", input.display()))?;
                reports.push(report);
            }
            print!("{}", loadgen::chart::table(&reports));
            for path in loadgen::chart::charts(&reports, &out_dir, &stem)? {
                eprintln!("chart written to {}", path.display());
            }
            Ok(true)
        }
    }
}

fn fed_config(a: &FedArgs) -> Result<FedConfig> {
    Ok(FedConfig {
        url1: a.url1.clone(),
        url2: a.url2.clone(),
        prefix: default_prefix(a.prefix.clone())?,
        password: a.password.clone(),
    })
}

fn valid_prefix(p: &str) -> bool {
    !p.is_empty()
        && p.len() <= 64
        && p.bytes().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || b"._=-".contains(&c))
}

fn print_table(r: &Report) {
    let l = &r.latency;
    let t = &r.throughput;
    let c = &r.completeness;
    println!("tocsin-loadgen  label={}  url={}  run={}", r.label, r.url, r.run_id);
    println!("  setup (register, rooms, joins)   {:>10.2} s", r.setup_s);
    println!("latency ({} events, one at a time, PUT -> seen in /sync)", l.events);
    println!("  p50                              {:>10.2} ms", l.p50_ms);
    println!("  p90                              {:>10.2} ms", l.p90_ms);
    println!("  p99                              {:>10.2} ms", l.p99_ms);
    println!("  max                              {:>10.2} ms", l.max_ms);
    println!("  mean                             {:>10.2} ms", l.mean_ms);
    println!("  PUT ack p50                      {:>10.2} ms", l.send_ack_p50_ms);
    println!("  received / lost / send errors    {:>4} / {} / {}", l.received, l.lost, l.send_errors);
    println!("throughput ({} senders x {} events)", t.senders, t.per_sender);
    println!("  acknowledged                     {:>10} of {}", t.acked, t.attempted);
    println!("  errors                           {:>10}", t.errors);
    println!("  wall time                        {:>10.2} s", t.wall_s);
    println!("  events/s                         {:>10.1}", t.events_per_s);
    if let Some(e) = &t.first_error {
        println!("  first error: {e}");
    }
    println!("  rate-limited answers (429)       {:>10}", r.rate_limited);
    println!("completeness (reader B via /sync + /messages)");
    println!("  expected / seen                  {:>10} / {}", c.expected, c.seen_unique);
    println!("  missing                          {:>10}", c.missing);
    println!("  duplicates                       {:>10}", c.duplicates);
    println!("  unacknowledged but seen          {:>10}", c.unacknowledged_seen);
    println!("  sync rounds / limited / pages    {:>10} / {} / {}", c.sync_rounds, c.limited_batches, c.pages_fetched);
    match c.catch_up_ms {
        Some(ms) => println!("  catch-up after last send         {ms:>10.2} ms"),
        None => println!("  catch-up after last send         {:>10}", "never"),
    }
    if let Some(e) = &c.reader_error {
        println!("  reader error: {e}");
    }
    let rss = |x: &Option<RssReport>| x.map(|x| (x.vm_rss_kb as f64 / 1024.0, x.vm_hwm_kb as f64 / 1024.0));
    if let (Some((before, _)), Some((after, hwm))) = (rss(&r.rss_before), rss(&r.rss_after)) {
        println!("memory (pid {})", r.rss_after.map_or(0, |x| x.pid));
        println!("  VmRSS before                     {before:>10.1} MiB");
        println!("  VmRSS after                      {after:>10.1} MiB");
        println!("  VmHWM (peak)                     {hwm:>10.1} MiB");
    }
    println!("result: {}", if r.passed() { "PASS" } else { "FAIL" });
}

async fn run(args: Args) -> Result<Report> {
    let prefix = default_prefix(args.prefix)?;
    let cfg = Config {
        url: args.url,
        prefix,
        password: args.password,
        latency_events: args.latency_events,
        latency_event_timeout: Duration::from_secs(args.latency_event_timeout),
        senders: args.senders,
        per_sender: args.per_sender,
        sync_limit: args.sync_limit,
        completeness_timeout: Duration::from_secs(args.completeness_timeout),
    };
    let report = loadgen::run(&cfg, &args.label, args.pid).await?;
    write_json(args.json.as_deref(), &report)?;
    Ok(report)
}

#[tokio::main]
async fn main() -> ExitCode {
    let mut args = Args::parse();
    if let Some(fed) = args.command.take() {
        return match run_fed(fed).await {
            Ok(true) => ExitCode::SUCCESS,
            Ok(false) => ExitCode::FAILURE,
            Err(e) => {
                eprintln!("tocsin-loadgen: {e:#}");
                ExitCode::from(2)
            }
        };
    }
    match run(args).await {
        Ok(report) => {
            print_table(&report);
            if report.passed() { ExitCode::SUCCESS } else { ExitCode::FAILURE }
        }
        Err(e) => {
            eprintln!("tocsin-loadgen: {e:#}");
            ExitCode::from(2)
        }
    }
}
