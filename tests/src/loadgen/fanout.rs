//! All-hands fan-out: `users` users long-poll one room and each message must reach every one of
//! their syncs; then `idle` long-polls are held open with nothing to say, and the server's RSS
//! is read. Long-polls of the fan-out use one HTTP/1.1 connection each, as phones do; the idle
//! ones share HTTP/2 connections, as behind a reverse proxy, because one process here may hold
//! at most 20,000 sockets.

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context, Result, bail};
use futures_util::{StreamExt, stream};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::{sync::mpsc, task::JoinSet};

use super::{percentile, read_rss};
use crate::cs_client::{Homeserver, Session};

/// Registrations (and joins) at once: the server's password hashing bounds them anyway.
const SETUP_CONCURRENCY: usize = 16;
/// Long-polls per HTTP/2 connection, below the common server limit of 100 to 200 streams.
const STREAMS_PER_CONNECTION: usize = 90;
/// A long-poll's timeout; idle ones are renewed when it passes.
const POLL_MS: u64 = 30_000;

#[derive(Debug, Clone)]
pub struct FanoutConfig {
    pub url: String,
    pub prefix: String,
    pub password: String,
    /// Users long-polling the one room.
    pub users: u32,
    /// Messages sent, one at a time, each awaited in every user's sync.
    pub messages: u32,
    /// Idle long-polls held afterwards (one user each).
    pub idle: u32,
    /// The server process, for RSS.
    pub pid: Option<u32>,
    /// How long the idle long-polls are held before RSS is read.
    pub idle_hold: Duration,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FanoutReport {
    pub label: String,
    pub url: String,
    pub users: u32,
    pub messages: u32,
    /// Registering the users and joining them to the room.
    pub setup_s: f64,
    /// Deliveries seen (users × messages when none was lost).
    pub delivered: u64,
    pub missing: u64,
    /// Long-poll loops that ended in an error (their user's later messages count as missing).
    pub poll_errors: u64,
    /// From just before the message's PUT until a user's long-poll answer holds it.
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    /// The last of all users' syncs to hold the message, median over the messages.
    pub all_users_p50_ms: f64,
    pub idle: u32,
    /// Idle long-polls still open when RSS was read (each was renewed on its timeout).
    pub idle_open: u64,
    pub rss_before_mib: Option<f64>,
    pub rss_fanout_mib: Option<f64>,
    pub rss_idle_mib: Option<f64>,
}

/// Lazy-loaded members and one timeline event: a 5,000-member room's sync stays small.
const FILTER: &str =
    r#"{"room":{"timeline":{"limit":1},"state":{"lazy_load_members":true}},"presence":{"not_types":["*"]}}"#;

fn rss_mib(pid: Option<u32>) -> Result<Option<f64>> {
    Ok(pid.map(read_rss).transpose()?.map(|r| r.vm_rss_kb as f64 / 1024.0))
}

async fn register_all(hs: &Homeserver, cfg: &FanoutConfig, role: &str, count: u32) -> Result<Vec<Session>> {
    stream::iter(0..count)
        .map(|i| async move { hs.register_or_login(&format!("{}-{role}{i}", cfg.prefix), &cfg.password).await })
        .buffer_unordered(SETUP_CONCURRENCY)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect()
}

pub async fn run(cfg: &FanoutConfig, label: &str) -> Result<FanoutReport> {
    if cfg.users < 2 {
        bail!("--users must be at least 2 (one sends, all receive)");
    }
    let rss_before_mib = rss_mib(cfg.pid)?;
    let hs = Homeserver::new(&cfg.url)?;
    let setup = Instant::now();
    let users = register_all(&hs, cfg, "fan", cfg.users).await?;
    let room = users[0].create_room(&json!({ "preset": "public_chat", "name": "All hands" })).await?;
    let joins: Vec<Result<()>> =
        stream::iter(&users[1..]).map(|u| u.join(&room)).buffer_unordered(SETUP_CONCURRENCY).collect().await;
    joins.into_iter().collect::<Result<Vec<()>>>().context("joining the room")?;
    let setup_s = setup.elapsed().as_secs_f64();
    eprintln!("fanout: {} users in {room} after {setup_s:.1} s", users.len());

    // Every user's sync position, then their long-poll loops.
    let tokens: Vec<Result<String>> = stream::iter(&users)
        .map(|u| async move { Ok(u.sync(None, Some(FILTER), 0).await?.next_batch) })
        .buffer_unordered(SETUP_CONCURRENCY)
        .collect()
        .await;
    let (seen_tx, mut seen_rx) = mpsc::unbounded_channel::<(u32, Instant)>();
    let mut polls = JoinSet::new();
    for (user, token) in users.iter().zip(tokens) {
        let (user, mut token, seen, room) = (user.clone(), token?, seen_tx.clone(), room.clone());
        let messages = cfg.messages;
        polls.spawn(async move {
            let mut got = 0;
            while got < messages {
                let next = user.sync(Some(&token), Some(FILTER), POLL_MS).await?;
                token = next.next_batch;
                let events = next.rooms.join.get(&room).map(|r| r.timeline.events.as_slice()).unwrap_or_default();
                for event in events {
                    if let Some(k) = event.content["body"].as_str().and_then(|b| b.strip_prefix("fanout ")) {
                        let at = Instant::now();
                        seen.send((k.parse().context("message number")?, at)).ok();
                        got += 1;
                    }
                }
            }
            anyhow::Ok(())
        });
    }
    drop(seen_tx);
    eprintln!("fanout: {} long-polls started", users.len());
    // Let every long-poll reach the server before the first message.
    tokio::time::sleep(Duration::from_millis(1000 + u64::from(cfg.users) / 2)).await;
    let rss_fanout_mib = rss_mib(cfg.pid)?;

    eprintln!("fanout: sending {} messages", cfg.messages);
    let mut latencies = Vec::new();
    let mut last_per_message = Vec::new();
    let mut missing = 0;
    for k in 0..cfg.messages {
        let at = Instant::now();
        users[0].send_text(&room, &format!("{}-fanout-{k}", cfg.prefix), &format!("fanout {k}")).await?;
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        let mut count = 0;
        let mut last = 0.0f64;
        while count < cfg.users {
            match tokio::time::timeout_at(deadline, seen_rx.recv()).await {
                Ok(Some((n, when))) if n == k => {
                    let ms = when.duration_since(at).as_secs_f64() * 1000.0;
                    latencies.push(ms);
                    last = last.max(ms);
                    count += 1;
                }
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => break,
            }
        }
        missing += u64::from(cfg.users - count);
        last_per_message.push(last);
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let mut poll_errors = 0;
    while let Some(done) = polls.try_join_next() {
        if let Ok(Err(e)) = done {
            poll_errors += 1;
            eprintln!("fanout: a long-poll failed: {e:#}");
        }
    }
    polls.abort_all();
    latencies.sort_by(f64::total_cmp);
    last_per_message.sort_by(f64::total_cmp);

    let (idle_open, rss_idle_mib) = if cfg.idle > 0 { idle(&hs, cfg).await? } else { (0, None) };
    Ok(FanoutReport {
        label: label.to_owned(),
        url: cfg.url.clone(),
        users: cfg.users,
        messages: cfg.messages,
        setup_s,
        delivered: latencies.len() as u64,
        missing,
        poll_errors,
        p50_ms: percentile(&latencies, 50.0),
        p90_ms: percentile(&latencies, 90.0),
        p99_ms: percentile(&latencies, 99.0),
        max_ms: latencies.last().copied().unwrap_or_default(),
        all_users_p50_ms: percentile(&last_per_message, 50.0),
        idle: cfg.idle,
        idle_open,
        rss_before_mib,
        rss_fanout_mib,
        rss_idle_mib,
    })
}

/// Holds `cfg.idle` long-polls (one per user, over shared HTTP/2 connections) for
/// `cfg.idle_hold`, then reads RSS; returns how many were open at that moment.
async fn idle(hs: &Homeserver, cfg: &FanoutConfig) -> Result<(u64, Option<f64>)> {
    let started = Instant::now();
    let users = register_all(hs, cfg, "idle", cfg.idle).await?;
    eprintln!("fanout: {} idle users after {:.1} s", users.len(), started.elapsed().as_secs_f64());
    let open = Arc::new(AtomicU64::new(0));
    let mut polls = JoinSet::new();
    for chunk in users.chunks(STREAMS_PER_CONNECTION) {
        let connection = Homeserver::new_http2(&cfg.url)?;
        for user in chunk {
            polls.spawn(hold(user.via(&connection), open.clone()));
        }
    }
    tokio::time::sleep(cfg.idle_hold).await;
    let rss = rss_mib(cfg.pid)?;
    let held = open.load(Ordering::Relaxed);
    polls.abort_all();
    while let Some(done) = polls.join_next().await {
        if let Ok(Err(e)) = done {
            bail!("an idle long-poll failed: {e:#}");
        }
    }
    Ok((held, rss))
}

/// One idle user: a long-poll, renewed each time it times out, counted in `open` while out.
async fn hold(user: Session, open: Arc<AtomicU64>) -> Result<()> {
    let mut token = user.sync(None, Some(FILTER), 0).await?.next_batch;
    loop {
        open.fetch_add(1, Ordering::Relaxed);
        let next = user.sync(Some(&token), Some(FILTER), POLL_MS).await;
        open.fetch_sub(1, Ordering::Relaxed);
        token = next?.next_batch;
    }
}
