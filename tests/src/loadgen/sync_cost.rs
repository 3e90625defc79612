//! How the cost of `/sync` grows with the rooms a user is in: for each room count of a sweep, the
//! user's initial sync and the incremental sync after one message in one of their rooms. A sync
//! whose cost follows what changed stays flat as the rooms grow.

use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use futures_util::{StreamExt, stream};
use serde::Serialize;
use serde_json::json;

use super::percentile;
use crate::cs_client::Homeserver;

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
#[derive(Debug, Clone, Serialize)]
pub struct SyncCostPoint {
    pub rooms: u32,
    /// The room list grew to this count in this long (createRoom, `CREATE_CONCURRENCY` at once).
    pub setup_s: f64,
    pub initial_ms: f64,
    pub incremental_p50_ms: f64,
    pub incremental_p95_ms: f64,
    /// Rooms in the initial sync's `rooms.join` (a check that the user is in them all).
    pub initial_rooms_seen: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct SyncCostReport {
    pub label: String,
    pub url: String,
    pub points: Vec<SyncCostPoint>,
}

/// A filter that keeps sync bodies small, so the figures measure the server's work per room
/// rather than JSON size: one timeline event, no presence.
const FILTER: &str = r#"{"room":{"timeline":{"limit":1}},"presence":{"not_types":["*"]}}"#;

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
        let initial = user.sync(None, Some(FILTER), 0).await?;
        let initial_ms = started.elapsed().as_secs_f64() * 1000.0;
        let initial_rooms_seen = initial.rooms.join.len();
        let mut token = initial.next_batch;
        let mut took = Vec::with_capacity(cfg.samples as usize);
        for i in 0..cfg.samples {
            let room = &rooms[(i as usize * 7919) % rooms.len()];
            user.send_text(room, &format!("{}-{target}-{i}", cfg.prefix), "one room changed").await?;
            let started = Instant::now();
            let next = user.sync(Some(&token), Some(FILTER), 10_000).await?;
            took.push(started.elapsed().as_secs_f64() * 1000.0);
            if !next.rooms.join.contains_key(room) {
                bail!("the incremental sync at {target} rooms did not carry the changed room");
            }
            token = next.next_batch;
        }
        took.sort_by(f64::total_cmp);
        points.push(SyncCostPoint {
            rooms: target,
            setup_s,
            initial_ms,
            incremental_p50_ms: percentile(&took, 50.0),
            incremental_p95_ms: percentile(&took, 95.0),
            initial_rooms_seen,
        });
        // Let the server's background work from the room creation settle before the next size.
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok(SyncCostReport { label: label.to_owned(), url: cfg.url.clone(), points })
}
