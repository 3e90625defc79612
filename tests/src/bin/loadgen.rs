//! `tocsin-loadgen`: drives any Matrix homeserver on loopback through the plain Client-Server
//! API and reports sync latency, send throughput, delivery completeness and server RSS.
//!
//! The scenario lives in `tocsin_tests::loadgen`; this binary parses arguments and prints.

use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use clap::Parser;
use tocsin_tests::loadgen::{self, Config, Report, RssReport};

#[derive(Debug, Parser)]
#[command(name = "tocsin-loadgen", about)]
struct Args {
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
    let prefix = match args.prefix {
        Some(p) => p,
        None => {
            let secs = SystemTime::now().duration_since(UNIX_EPOCH).context("system clock before 1970")?.as_secs();
            format!("lg{secs}")
        }
    };
    if !valid_prefix(&prefix) {
        bail!("--prefix must be 1-64 characters of a-z 0-9 . _ = -");
    }
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
    if let Some(path) = &args.json {
        let text = serde_json::to_string_pretty(&report).context("encoding the report")?;
        std::fs::write(path, text + "\n").with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(report)
}

#[tokio::main]
async fn main() -> ExitCode {
    match run(Args::parse()).await {
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
