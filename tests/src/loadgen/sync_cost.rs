//! How the cost of `/sync` grows with the rooms a user is in: for each room count of a sweep, the
//! user's initial sync and the incremental sync after one message in one of their rooms. A sync
//! whose cost follows what changed stays flat as the rooms grow.

use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use futures_util::{StreamExt, stream};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::percentile;
use crate::cs_client::Homeserver;

/// Syncs one sample may take before the changed room shows up.
const MAX_ROUNDS: u32 = 20;
/// Rooms created at once while the sweep grows the user's room list.
const CREATE_CONCURRENCY: usize = 8;

#[derive(Debug, Clone)]
pub struct SyncCostConfig {
    pub url: String,
    pub prefix: String,
    pub password: String,
    /// The room counts to measure at, ascending.
    pub rooms: Vec<u32>,
    /// Incremental syncs measured at each room count.
    pub samples: u32,
}

/// The figures at one room count.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SyncCostPoint {
    pub rooms: u32,
    /// The room list grew to this count in this long (createRoom, `CREATE_CONCURRENCY` at once).
    pub setup_s: f64,
    pub initial_ms: f64,
    pub incremental_p50_ms: f64,
    pub incremental_p95_ms: f64,
    /// Rooms in the initial sync's `rooms.join` (a check that the user is in them all).
    pub initial_rooms_seen: usize,
    /// Simplified sliding sync (one list of the 20 newest rooms): the first request, and the
    /// request after one message in one room, which moves that room to the top.
    pub sliding_first_ms: f64,
    pub sliding_incremental_p50_ms: f64,
    pub sliding_incremental_p95_ms: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SyncCostReport {
    pub label: String,
    pub url: String,
    pub points: Vec<SyncCostPoint>,
}

/// A filter that keeps sync bodies small, so the figures measure the server's work per room
/// rather than JSON size: one timeline event, no presence. It names the room count so that no
/// two sizes send the same request: Synapse answers a repeated initial sync from a cache.
fn filter(rooms: u32) -> String {
    format!(
        r#"{{"room":{{"timeline":{{"limit":1}}}},"presence":{{"not_types":["*"]}},"account_data":{{"not_types":["org.tocsin.sweep.{rooms}"]}}}}"#
    )
}

pub async fn run(cfg: &SyncCostConfig, label: &str) -> Result<SyncCostReport> {
    if cfg.rooms.windows(2).any(|w| w[0] > w[1]) {
        bail!("--rooms must be ascending");
    }
    let hs = Homeserver::new(&cfg.url)?;
    let user = hs.register_or_login(&format!("{}-sync", cfg.prefix), &cfg.password).await?;
    let mut rooms: Vec<String> = Vec::new();
    let mut points = Vec::new();
    for &target in &cfg.rooms {
        let grow = Instant::now();
        let missing = (target as usize).saturating_sub(rooms.len());
        let body = json!({ "preset": "private_chat" });
        let created: Vec<Result<String>> = stream::iter(0..missing)
            .map(|_| user.create_room(&body))
            .buffer_unordered(CREATE_CONCURRENCY)
            .collect()
            .await;
        for room in created {
            rooms.push(room?);
        }
        let setup_s = grow.elapsed().as_secs_f64();
        let started = Instant::now();
        let filter = filter(target);
        let initial = user.sync(None, Some(&filter), 0).await?;
        let initial_ms = started.elapsed().as_secs_f64() * 1000.0;
        let initial_rooms_seen = initial.rooms.join.len();
        let mut token = initial.next_batch;
        let mut took = Vec::with_capacity(cfg.samples as usize);
        for i in 0..cfg.samples {
            let room = &rooms[(i as usize * 7919) % rooms.len()];
            user.send_text(room, &format!("{}-{target}-{i}", cfg.prefix), "one room changed").await?;
            // A server may answer first with other news (Synapse sometimes does, right after
            // the rooms were made): the time counts until a response carries the room.
            let started = Instant::now();
            let mut rounds = 0;
            loop {
                let next = user.sync(Some(&token), Some(&filter), 10_000).await?;
                token = next.next_batch;
                if next.rooms.join.contains_key(room) {
                    break;
                }
                rounds += 1;
                if rounds == MAX_ROUNDS {
                    bail!("{MAX_ROUNDS} incremental syncs at {target} rooms did not carry the changed room");
                }
            }
            took.push(started.elapsed().as_secs_f64() * 1000.0);
        }
        took.sort_by(f64::total_cmp);
        let (sliding_first_ms, mut sliding) = sliding_samples(&user, &rooms, cfg, target).await?;
        sliding.sort_by(f64::total_cmp);
        points.push(SyncCostPoint {
            rooms: target,
            setup_s,
            initial_ms,
            incremental_p50_ms: percentile(&took, 50.0),
            incremental_p95_ms: percentile(&took, 95.0),
            initial_rooms_seen,
            sliding_first_ms,
            sliding_incremental_p50_ms: percentile(&sliding, 50.0),
            sliding_incremental_p95_ms: percentile(&sliding, 95.0),
        });
        // Let the server's background work from the room creation settle before the next size.
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok(SyncCostReport { label: label.to_owned(), url: cfg.url.clone(), points })
}

/// The sliding sync figures at one room count: the first request's time, and each request
/// after a message until an answer carries the changed room.
async fn sliding_samples(
    user: &crate::cs_client::Session,
    rooms: &[String],
    cfg: &SyncCostConfig,
    target: u32,
) -> Result<(f64, Vec<f64>)> {
    let body = json!({
        "conn_id": format!("sweep-{target}"),
        "lists": { "all": { "ranges": [[0, 19]], "timeline_limit": 1, "required_state": [["m.room.name", ""]] } },
    });
    let started = Instant::now();
    let first = user.sliding_sync(&body, None, 0).await?;
    let first_ms = started.elapsed().as_secs_f64() * 1000.0;
    let mut pos = first["pos"].as_str().map(str::to_owned);
    let mut took = Vec::with_capacity(cfg.samples as usize);
    for i in 0..cfg.samples {
        let room = &rooms[(i as usize * 104_729 + 13) % rooms.len()];
        user.send_text(room, &format!("{}-sliding-{target}-{i}", cfg.prefix), "one room changed").await?;
        let started = Instant::now();
        let mut rounds = 0;
        loop {
            let next = user.sliding_sync(&body, pos.as_deref(), 10_000).await?;
            pos = next["pos"].as_str().map(str::to_owned);
            if next["rooms"].get(room.as_str()).is_some() {
                break;
            }
            rounds += 1;
            if rounds == MAX_ROUNDS {
                bail!("{MAX_ROUNDS} sliding syncs at {target} rooms did not carry the changed room");
            }
        }
        took.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    Ok((first_ms, took))
}
