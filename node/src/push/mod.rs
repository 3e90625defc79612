//! Push: the push rules (with the node's alarm rules), pushers, and the queue that delivers
//! notifications to HTTP push gateways.
//!
//! The send path only writes one row per live event ([`queue::event_row`]). The push worker
//! ([`spawn`]) evaluates those rows in stream order once they are durable, lists what notifies
//! each user ([`notifications`], for `GET /notifications`) and queues one notification per
//! pusher; one delivery task per pusher with work sends its queue in order,
//! retrying with capped exponential backoff, and removes a pusher whose pushkey the gateway
//! rejects. A notification leaves the queue only once its gateway took it, so a gateway that is
//! down gets everything, in order, when it is back (a crash between the gateway's answer and the
//! queue write could send one notification twice; gateways treat pushes as idempotent pokes).
//!
//! When a user reads on one device, each of their pushers gets a counts-only notification so
//! the other devices' badges drop ([`badge`]).
//!
//! Users are pushed whether or not they are syncing elsewhere (as Synapse does): the phone in a
//! pocket must ring for an alarm even while the same user has a desktop client open.

mod audience;
pub mod badge;
pub mod gateway;
pub mod notifications;
pub mod pushers;
pub mod queue;
pub mod rules;

use std::{
    collections::HashSet,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use ruma::{UserId, api::client::push::PusherIds};
use tocsin_store::WriteBatch;
use tokio::sync::watch;

use crate::{
    Services,
    store::{split, trees, utf8},
};

/// First retry after a failed delivery; doubled per failure up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(500);
/// Alarms matter: a gateway that comes back is tried again within a minute.
const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// The push service: the gateway client and which pushers have a delivery task running.
pub struct Push {
    pub gateways: gateway::Gateways,
    pub badges: badge::Badges,
    /// Users' effective push rules (see [`rules::RulesCache`]).
    pub rules: rules::RulesCache,
    /// Recent events flattened for the push rules (see [`rules::InputCache`]).
    pub inputs: rules::InputCache,
    draining: Mutex<HashSet<Vec<u8>>>,
    sent: AtomicU64,
    /// Every event at or below this position is evaluated, with its notifications recorded
    /// (see [`Push::evaluated`]).
    evaluated: AtomicU64,
}

impl Push {
    pub fn new(config: &crate::Config) -> anyhow::Result<Self> {
        Ok(Self {
            gateways: gateway::Gateways::new(config)?,
            badges: badge::Badges::default(),
            rules: rules::RulesCache::default(),
            inputs: rules::InputCache::default(),
            draining: Mutex::default(),
            sent: AtomicU64::new(0),
            evaluated: AtomicU64::new(0),
        })
    }

    /// Refuses a pusher whose gateway URL is an address literal the node may not connect to
    /// (`outbound_ip_allow`); a name is checked each time it resolves.
    pub fn check_url(&self, pusher: &ruma::api::client::push::Pusher) -> crate::Result<()> {
        let ruma::api::client::push::PusherKind::Http(http) = &pusher.kind else { return Ok(()) };
        let Ok(url) = reqwest::Url::parse(&http.url) else { return Ok(()) };
        self.gateways.literal_allowed(&url).map_err(crate::Error::invalid_param)
    }

    /// Notifications gateways have taken since the node started.
    pub fn sent(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }

    /// The position up to which every live event's notifications are recorded: unread counts
    /// read them from the index up to here, and evaluate the rules only past it. 0 until the
    /// push worker has looked at its queue.
    pub fn evaluated(&self) -> u64 {
        self.evaluated.load(Ordering::Acquire)
    }

    fn set_evaluated(&self, pos: u64) {
        self.evaluated.fetch_max(pos, Ordering::AcqRel);
    }

    fn claim(&self, key: &[u8]) -> bool {
        self.draining.lock().map(|mut d| d.insert(key.to_vec())).unwrap_or(false)
    }

    fn release(&self, key: &[u8]) {
        if let Ok(mut d) = self.draining.lock() {
            d.remove(key);
        }
    }
}

fn backoff(failures: u32) -> Duration {
    FIRST_BACKOFF.saturating_mul(2u32.saturating_pow(failures.saturating_sub(1))).min(MAX_BACKOFF)
}

/// Starts the push worker: it evaluates new events as their positions become visible and
/// starts a delivery task for every pusher with work (also, at start, for what a previous run
/// left queued).
pub fn spawn(node: &Arc<Services>) {
    let services = node.clone();
    node.workers.spawn("push", |stop| run(services, stop));
}

async fn run(services: Arc<Services>, mut shutdown: watch::Receiver<bool>) {
    let mut visible = services.db.streams.subscribe();
    let mut trim_tick = tokio::time::interval(TRIM_EVERY);
    match queue::first_unevaluated(&services.db) {
        Ok(first) => services.push.set_evaluated(first.map_or(services.db.streams.visible(), |p| p.saturating_sub(1))),
        Err(e) => tracing::warn!(error = %e, "cannot read the push rows; unread counts evaluate every event"),
    }
    match queue::pending_pushers(&services.db) {
        Ok(keys) => keys.into_iter().for_each(|k| kick(&services, k)),
        Err(e) => tracing::warn!(error = %e, "cannot read the push queue; queued pushes wait for new events"),
    }
    let mut audiences = audience::Audiences::default();
    loop {
        match queue::evaluate(&services, &mut audiences).await {
            Ok((touched, full)) => {
                touched.into_iter().for_each(|k| kick(&services, k));
                if full {
                    continue;
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "push evaluation failed; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                    _ = shutdown.wait_for(|stop| *stop) => return,
                }
            }
        }
        let trim_due = tokio::select! {
            changed = visible.changed() => if changed.is_err() { return } else { false },
            _ = trim_tick.tick() => true,
            _ = shutdown.wait_for(|stop| *stop) => return,
        };
        if trim_due {
            trim(&services).await;
        }
    }
}

/// How often notifications past their keep time are removed.
const TRIM_EVERY: Duration = Duration::from_secs(60 * 60);

async fn trim(services: &Services) {
    match notifications::trim(&services.db, crate::users::now_ms()).await {
        Ok(0) => {}
        Ok(removed) => tracing::info!(removed, "old notifications removed"),
        Err(e) => tracing::warn!(error = %e, "cannot trim old notifications; trying again later"),
    }
}

fn kick(services: &Arc<Services>, key: Vec<u8>) {
    if services.push.claim(&key) {
        let node = services.clone();
        services.workers.spawn("push-delivery", |stop| drain(node, key, stop));
    }
}

/// Sends one pusher's queue in order until it is empty.
async fn drain(services: Arc<Services>, key: Vec<u8>, mut shutdown: watch::Receiver<bool>) {
    let mut failures = 0u32;
    loop {
        if *shutdown.borrow() {
            return;
        }
        let outcome = step(&services, &key, &mut shutdown).await;
        match outcome {
            Step::Sent => failures = 0,
            Step::Settle(wait) => {
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = shutdown.wait_for(|stop| *stop) => return,
                }
            }
            Step::Empty => {
                services.push.release(&key);
                // Work queued between the read and the release would otherwise wait for the
                // next event: look once more.
                let more = matches!(queue::head(&services.db, &key), Ok(Some(_)));
                if more && services.push.claim(&key) {
                    continue;
                }
                return;
            }
            Step::Gone | Step::Stopped => {
                services.push.release(&key);
                return;
            }
            Step::Retry(why) => {
                failures += 1;
                let wait = backoff(failures);
                tracing::info!(reason = %why, retry_in_ms = wait.as_millis() as u64, "push delivery failed");
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = shutdown.wait_for(|stop| *stop) => return,
                }
            }
        }
    }
}

enum Step {
    /// Sent, or dropped as superseded (a badge update with newer counts behind it).
    Sent,
    /// A badge update waiting for the rest of a burst of receipts.
    Settle(Duration),
    Empty,
    /// The pusher no longer exists (removed, or rejected by its gateway).
    Gone,
    Stopped,
    Retry(String),
}

async fn step(services: &Services, key: &[u8], shutdown: &mut watch::Receiver<bool>) -> Step {
    let db = &services.db;
    let (row, item, more) = match queue::head_and_more(db, key) {
        Ok(Some(head)) => head,
        Ok(None) => return Step::Empty,
        Err(e) => return Step::Retry(e.to_string()),
    };
    if item.is_badge() {
        match badge::at_head(&item, more, crate::users::now_ms()) {
            badge::AtHead::Send => {}
            badge::AtHead::Settle(wait) => return Step::Settle(wait),
            badge::AtHead::Superseded => {
                let mut batch = WriteBatch::new();
                batch.remove(trees::PUSH_QUEUE, row);
                return match db.write(batch).await {
                    Ok(()) => Step::Sent,
                    Err(e) => Step::Retry(e.to_string()),
                };
            }
        }
    }
    let pusher = match pushers::get(db, key) {
        Ok(Some(p)) => p,
        Ok(None) => {
            let mut batch = WriteBatch::new();
            return match queue::remove_queue_rows(db, key, &mut batch) {
                Ok(()) => match db.write(batch).await {
                    Ok(()) => Step::Gone,
                    Err(e) => Step::Retry(e.to_string()),
                },
                Err(e) => Step::Retry(e.to_string()),
            };
        }
        Err(e) => return Step::Retry(e.to_string()),
    };
    let delivery = tokio::select! {
        d = services.push.gateways.notify(&pusher, &item) => d,
        _ = shutdown.wait_for(|stop| *stop) => return Step::Stopped,
    };
    let mut batch = WriteBatch::new();
    batch.remove(trees::PUSH_QUEUE, row);
    let mut gone = false;
    match delivery {
        gateway::Delivery::Sent { rejected } => {
            services.push.sent.fetch_add(1, Ordering::Relaxed);
            if rejected.contains(&pusher.pusher.ids.pushkey) {
                tracing::info!(app_id = %pusher.pusher.ids.app_id, "the gateway rejected a pushkey; pusher removed");
                if let Err(e) = remove_rejected(services, key, &pusher.pusher.ids, &mut batch) {
                    return Step::Retry(e.to_string());
                }
                gone = true;
            }
        }
        gateway::Delivery::Refused(why) => {
            outcome(services, "refused");
            tracing::warn!(reason = %why, app_id = %pusher.pusher.ids.app_id, "push gateway refused a notification; dropped");
        }
        gateway::Delivery::Failed(why) => {
            outcome(services, "failed");
            return Step::Retry(why);
        }
    }
    if let Err(e) = db.write(batch).await {
        return Step::Retry(e.to_string());
    }
    outcome(services, if gone { "rejected_pushkey" } else { "sent" });
    if gone { Step::Gone } else { Step::Sent }
}

/// Counts one delivery attempt in `/_tocsin/metrics`.
fn outcome(services: &Services, outcome: &str) {
    services
        .metrics
        .counter(
            "tocsin_push_notifications_total",
            "Notifications to push gateways by outcome: sent, rejected_pushkey (pusher removed), refused (dropped), failed (retried).",
            &[("outcome", outcome)],
        )
        .inc();
}

fn remove_rejected(services: &Services, key: &[u8], ids: &PusherIds, batch: &mut WriteBatch) -> crate::Result<()> {
    let user = split(key).first().map(|u| utf8(u)).transpose()?.unwrap_or_default().to_owned();
    let user = UserId::parse(user).map_err(crate::Error::internal)?;
    pushers::remove_into(&services.db, &user, ids, batch)
}
