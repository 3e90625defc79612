//! The outbound federation sender (DESIGN rule 3: never go quiet on a peer).
//!
//! Everything this node sends to another server goes through `FED_QUEUE`, one row per item and
//! destination, keyed `destination SEP seq`. PDU rows are written in the same batch as the event
//! itself ([`queue_pdu_rows`]); EDU rows by [`Sender::queue_edu`]. A row is deleted only after the
//! destination acknowledged the transaction that carried it, so a crash or restart loses nothing:
//! [`Sender::start`] scans the queue and picks up where the node stopped.
//!
//! Each destination with traffic gets one worker task, spawned on first use and kept for the
//! life of the node (federation lists are short), so at most one transaction is in flight per
//! destination. A worker sends up to 50 PDUs and 100 EDUs per transaction in queue order. On
//! failure it backs off (1 s, doubling, capped at `federation_max_backoff_secs`, a minute by
//! default) and retries on its own timer, without waiting for new traffic. [`Sender::flush`]
//! (called when the peer talks to us) resets the backoff and sends at once.
//!
//! EDUs of every type, typing included, are persisted like PDUs: simpler than a second path, and
//! harmless, since receivers expire typing notifications by their own timeout.

pub mod outbox;
mod queue;
#[cfg(test)]
mod tests;

use std::{
    collections::{BTreeMap, HashMap},
    future::Future,
    sync::{
        Arc, Mutex, MutexGuard,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use ruma::{
    MilliSecondsSinceUnixEpoch, OwnedServerName, OwnedTransactionId, ServerName,
    api::federation::transactions::{edu::Edu, send_transaction_message},
    serde::Raw,
};
use serde_json::value::RawValue as RawJsonValue;
use tocsin_store::WriteBatch;
use tokio::{
    sync::{Notify, watch},
    time::Instant,
};

pub use self::outbox::{Outbox, QueueItem, queue_key, queue_pdu_rows};
pub use self::queue::{MAX_EDUS, MAX_PDUS};
use crate::{
    Services,
    error::{Error, Result},
    store::{Db, trees},
    workers::Workers,
};

/// The default cap on the retry delay (config `federation_max_backoff_secs`).
pub const DEFAULT_MAX_BACKOFF: Duration = Duration::from_secs(60);

/// The first retry delay after a failed transaction; it doubles with each further failure.
pub const BASE_BACKOFF: Duration = Duration::from_secs(1);

/// The delay before the next attempt after `failures` consecutive failures (1 or more): `base`
/// doubled for each failure after the first, never more than `max`.
pub fn backoff_after(failures: u32, base: Duration, max: Duration) -> Duration {
    let doublings = failures.saturating_sub(1).min(31);
    base.saturating_mul(1u32 << doublings).min(max)
}

/// One destination's backlog, for the admin API.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backlog {
    pub destination: OwnedServerName,
    /// Queued PDUs (rows in `FED_QUEUE`).
    pub pdus: usize,
    /// Queued EDUs.
    pub edus: usize,
    /// Consecutive failed transactions since the last success (or flush).
    pub failures: u32,
    /// When the next attempt is due, if the destination is backing off.
    pub next_retry_in: Option<Duration>,
    pub last_error: Option<String>,
    /// Items dropped unsent since the node started, because the destination left the
    /// federation list (or never was on it).
    pub dropped: u64,
}

/// How a transaction reaches a destination. Implemented for [`Services`] over the federation
/// client; unit tests use a recording double.
pub(crate) trait Transport: Send + Sync + 'static {
    fn send_txn(
        &self,
        destination: &ServerName,
        txn_id: OwnedTransactionId,
        pdus: Vec<Box<RawJsonValue>>,
        edus: Vec<Raw<Edu>>,
    ) -> impl Future<Output = Result<()>> + Send;

    /// Whether this node may send to `destination` at all (the federation list). What is queued
    /// for a destination that may not be sent to is dropped and counted, not sent.
    fn allowed(&self, _destination: &ServerName) -> Result<()> {
        Ok(())
    }
}

impl Transport for Services {
    fn allowed(&self, destination: &ServerName) -> Result<()> {
        self.policy.federation.check(destination, "nothing is sent to it")
    }

    async fn send_txn(
        &self,
        destination: &ServerName,
        txn_id: OwnedTransactionId,
        pdus: Vec<Box<RawJsonValue>>,
        edus: Vec<Raw<Edu>>,
    ) -> Result<()> {
        let mut request = send_transaction_message::v1::Request::new(
            txn_id,
            self.server_name.clone(),
            MilliSecondsSinceUnixEpoch::now(),
        );
        request.pdus = pdus;
        request.edus = edus;
        let response = self.federation_client.send(destination, request).await?;
        // A PDU the destination refused is refused for good: retrying the transaction would not
        // change that, so it counts as delivered and is only logged.
        for (event_id, result) in response.pdus {
            if let Err(e) = result {
                tracing::warn!(%destination, %event_id, error = %e, "destination refused a PDU");
            }
        }
        Ok(())
    }
}

/// What the sender remembers about a destination between attempts (not persisted: after a
/// restart every destination is tried at once).
#[derive(Default)]
struct Peer {
    failures: u32,
    retry_at: Option<Instant>,
    last_error: Option<String>,
    /// Wakes the destination's worker: new rows, a flush, or shutdown.
    poke: Arc<Notify>,
    has_worker: bool,
    /// Items dropped unsent (see [`Backlog::dropped`]).
    dropped: u64,
    sent_total: u64,
    failed_total: u64,
}

struct Inner {
    db: Db,
    outbox: Outbox,
    /// The node's registry: the dispatcher and every destination's worker run under it.
    workers: Workers,
    base_backoff: Duration,
    max_backoff: Duration,
    /// Makes transaction ids unique across restarts of this node.
    nonce: String,
    txn_counter: AtomicU64,
    peers: Mutex<HashMap<OwnedServerName, Peer>>,
}

/// The outbound federation sender. Cheap to clone.
#[derive(Clone)]
pub struct Sender {
    inner: Arc<Inner>,
}

impl Sender {
    pub fn new(db: Db, outbox: Outbox, workers: Workers, max_backoff: Duration) -> Self {
        Self::with_backoff(db, outbox, workers, BASE_BACKOFF, max_backoff)
    }

    /// Like [`Sender::new`] with a different first retry delay (tests use milliseconds).
    pub fn with_backoff(
        db: Db,
        outbox: Outbox,
        workers: Workers,
        base_backoff: Duration,
        max_backoff: Duration,
    ) -> Self {
        let max_backoff = max_backoff.max(base_backoff);
        Self {
            inner: Arc::new(Inner {
                db,
                outbox,
                workers,
                base_backoff,
                max_backoff,
                nonce: crate::users::random_string(8),
                txn_counter: AtomicU64::new(0),
                peers: Mutex::new(HashMap::new()),
            }),
        }
    }

    /// The wake-up handle the room service uses after committing queued PDUs.
    pub fn outbox(&self) -> &Outbox {
        &self.inner.outbox
    }

    /// Starts the sender for a running node: picks up every destination left in the queue,
    /// flushes a peer's queue whenever it reaches us (`Services::peer_seen`), and sends until
    /// the node stops. Every task runs under the node's worker registry.
    pub fn start(services: &Arc<Services>) {
        let sender = services.sender.clone();
        let mut seen = services.peer_seen.subscribe();
        services.workers.spawn("federation-flush", |mut stop| async move {
            loop {
                tokio::select! {
                    peer = seen.recv() => match peer {
                        Ok(peer) => sender.flush(&peer),
                        // Missed some notices: harmless, the next one from that peer flushes it.
                        Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
                        Err(tokio::sync::broadcast::error::RecvError::Closed) => break,
                    },
                    _ = stop.wait_for(|stop| *stop) => break,
                }
            }
        });
        services.sender.clone().run(services.clone());
    }

    /// Runs the dispatcher (and through it one worker per destination) over `transport`.
    pub(crate) fn run<T: Transport>(self, transport: Arc<T>) {
        let workers = self.inner.workers.clone();
        workers.spawn("federation-sender", |mut stop| async move {
            match queue::destinations(&self.inner.db) {
                Ok(dests) => {
                    if !dests.is_empty() {
                        tracing::info!(destinations = dests.len(), "resuming the federation queue");
                    }
                    self.inner.outbox.wake(&dests);
                }
                Err(e) => tracing::error!(error = %e, "cannot scan the federation queue"),
            }
            loop {
                tokio::select! {
                    dests = self.inner.outbox.next() => {
                        for dest in dests {
                            self.dispatch(&dest, &transport);
                        }
                    }
                    _ = stop.wait_for(|stop| *stop) => break,
                }
            }
        });
    }

    /// Makes sure `dest` has a worker and pokes it.
    fn dispatch<T: Transport>(&self, dest: &ServerName, transport: &Arc<T>) {
        let Ok(mut peers) = self.peers() else { return };
        let peer = peers.entry(dest.to_owned()).or_default();
        if !peer.has_worker {
            peer.has_worker = true;
            let (sender, dest, poke, transport) = (self.clone(), dest.to_owned(), peer.poke.clone(), transport.clone());
            self.inner.workers.spawn("federation-destination", move |shutdown| {
                Worker { sender, dest, poke, transport, shutdown }.run()
            });
        }
        peer.poke.notify_one();
    }

    fn peers(&self) -> Result<MutexGuard<'_, HashMap<OwnedServerName, Peer>>> {
        self.inner.peers.lock().map_err(|_| Error::internal("federation sender state poisoned"))
    }

    /// Queues `edu` (a full EDU object, `{"edu_type", "content"}`) for every destination and
    /// wakes their workers. Returns once the rows are durable.
    pub async fn queue_edu(&self, destinations: &[OwnedServerName], edu: serde_json::Value) -> Result<()> {
        if destinations.is_empty() {
            return Ok(());
        }
        let value = Db::to_json(&QueueItem::Edu { edu })?;
        let db = &self.inner.db;
        let ticket = db.allocate()?;
        let seq = ticket.pos();
        let mut batch = WriteBatch::new();
        for dest in destinations {
            batch.insert(trees::FED_QUEUE, queue_key(dest, seq), value.clone());
        }
        db.commit_ticket(ticket, batch).await?;
        self.inner.outbox.wake(destinations);
        Ok(())
    }

    /// Forgets `dest`'s backoff and sends its queue now. Call on any inbound traffic from it.
    pub fn flush(&self, dest: &ServerName) {
        if let Ok(mut peers) = self.peers() {
            let peer = peers.entry(dest.to_owned()).or_default();
            peer.failures = 0;
            peer.retry_at = None;
            peer.poke.notify_one();
        }
        // Spawns a worker if the destination has none yet (no-op for an empty queue but cheap).
        self.inner.outbox.wake(&[dest.to_owned()]);
    }

    /// Deletes everything queued for `dest` (a server removed from the federation list) and
    /// returns how many items that was; the count adds up in [`Backlog::dropped`].
    pub async fn drop_destination(&self, dest: &ServerName) -> Result<usize> {
        let rows =
            self.inner.db.scan_prefix(trees::FED_QUEUE, &crate::store::prefix(&[dest.as_bytes()]), usize::MAX)?;
        let count = rows.len();
        let mut batch = WriteBatch::new();
        for (key, _) in rows {
            batch.remove(trees::FED_QUEUE, key);
        }
        if count > 0 {
            self.inner.db.write(batch).await?;
        }
        let mut peers = self.peers()?;
        let peer = peers.entry(dest.to_owned()).or_default();
        peer.dropped = peer.dropped.saturating_add(u64::try_from(count).unwrap_or(u64::MAX));
        peer.failures = 0;
        peer.retry_at = None;
        peer.poke.notify_one();
        Ok(count)
    }

    /// The backlog of every destination with queued rows or recent failures, by name.
    pub fn backlog(&self) -> Result<Vec<Backlog>> {
        let mut out: BTreeMap<OwnedServerName, Backlog> = BTreeMap::new();
        for dest in queue::destinations(&self.inner.db)? {
            let (pdus, edus) = queue::counts(&self.inner.db, &dest)?;
            out.insert(
                dest.clone(),
                Backlog {
                    destination: dest,
                    pdus,
                    edus,
                    failures: 0,
                    next_retry_in: None,
                    last_error: None,
                    dropped: 0,
                },
            );
        }
        let now = Instant::now();
        for (dest, peer) in self.peers()?.iter() {
            if peer.failures == 0 && peer.dropped == 0 && !out.contains_key(dest) {
                continue;
            }
            let entry = out.entry(dest.clone()).or_insert_with(|| Backlog {
                destination: dest.clone(),
                pdus: 0,
                edus: 0,
                failures: 0,
                next_retry_in: None,
                last_error: None,
                dropped: 0,
            });
            entry.dropped = peer.dropped;
            entry.failures = peer.failures;
            entry.next_retry_in = peer.retry_at.map(|at| at.saturating_duration_since(now));
            entry.last_error = peer.last_error.clone();
        }
        Ok(out.into_values().collect())
    }

    /// Transactions delivered and failed per destination since the node started (metrics).
    pub fn totals(&self) -> Result<Vec<(OwnedServerName, u64, u64)>> {
        let mut out: Vec<_> = self
            .peers()?
            .iter()
            .filter(|(_, p)| p.sent_total > 0 || p.failed_total > 0)
            .map(|(dest, p)| (dest.clone(), p.sent_total, p.failed_total))
            .collect();
        out.sort();
        Ok(out)
    }

    fn record_success(&self, dest: &ServerName) {
        if let Ok(mut peers) = self.peers() {
            let peer = peers.entry(dest.to_owned()).or_default();
            peer.sent_total = peer.sent_total.saturating_add(1);
            peer.failures = 0;
            peer.retry_at = None;
            peer.last_error = None;
        }
    }

    fn record_failure(&self, dest: &ServerName, error: &Error) {
        let Ok(mut peers) = self.peers() else { return };
        let peer = peers.entry(dest.to_owned()).or_default();
        peer.failures = peer.failures.saturating_add(1);
        peer.failed_total = peer.failed_total.saturating_add(1);
        let delay = backoff_after(peer.failures, self.inner.base_backoff, self.inner.max_backoff);
        peer.retry_at = Some(Instant::now() + delay);
        peer.last_error = Some(error.to_string());
        tracing::warn!(%dest, failures = peer.failures, retry_in = ?delay, %error, "federation transaction failed");
    }

    /// When `dest` may be tried next (`None`: now).
    fn retry_at(&self, dest: &ServerName) -> Option<Instant> {
        self.peers().ok().and_then(|peers| peers.get(dest).and_then(|p| p.retry_at))
    }

    fn next_txn_id(&self) -> OwnedTransactionId {
        let n = self.inner.txn_counter.fetch_add(1, Ordering::Relaxed);
        OwnedTransactionId::from(format!("{}.{n}", self.inner.nonce))
    }
}

/// The task that sends one destination's queue, one transaction at a time.
struct Worker<T> {
    sender: Sender,
    dest: OwnedServerName,
    poke: Arc<Notify>,
    transport: Arc<T>,
    shutdown: watch::Receiver<bool>,
}

impl<T: Transport> Worker<T> {
    async fn run(mut self) {
        loop {
            if *self.shutdown.borrow() || !self.wait_until_due().await {
                return;
            }
            let batch = match queue::next_batch(&self.sender.inner.db, &self.dest) {
                Ok(batch) => batch,
                Err(e) => {
                    self.sender.record_failure(&self.dest, &e);
                    continue;
                }
            };
            if !batch.is_empty()
                && let Err(refused) = self.transport.allowed(&self.dest)
            {
                match self.sender.drop_destination(&self.dest).await {
                    Ok(dropped) => tracing::warn!(dest = %self.dest, dropped, %refused, "queued items dropped unsent"),
                    Err(e) => self.sender.record_failure(&self.dest, &e),
                }
                continue;
            }
            if batch.is_empty() {
                tokio::select! {
                    _ = self.poke.notified() => continue,
                    _ = self.shutdown.wait_for(|stop| *stop) => return,
                }
            }
            let mut stop = self.shutdown.clone();
            let result = tokio::select! {
                result = self.send(&batch) => result,
                // An unfinished transaction is simply sent again after the restart.
                _ = stop.wait_for(|stop| *stop) => return,
            };
            match result {
                Ok(()) => self.sender.record_success(&self.dest),
                Err(e) => self.sender.record_failure(&self.dest, &e),
            }
        }
    }

    /// Waits out the destination's backoff. A poke re-reads it (a flush clears it); new rows
    /// alone do not cut a backoff short. False on shutdown.
    async fn wait_until_due(&mut self) -> bool {
        loop {
            let Some(at) = self.sender.retry_at(&self.dest) else { return true };
            if at <= Instant::now() {
                return true;
            }
            tokio::select! {
                _ = tokio::time::sleep_until(at) => return true,
                _ = self.poke.notified() => continue,
                _ = self.shutdown.wait_for(|stop| *stop) => return false,
            }
        }
    }

    /// Sends one transaction and, once the destination accepted it, deletes its rows.
    async fn send(&self, batch: &queue::Batch) -> Result<()> {
        let db = &self.sender.inner.db;
        let mut pdus = Vec::with_capacity(batch.pdus.len());
        for event_id in &batch.pdus {
            // The stored form, as `Rooms::stored_event` reads it.
            match db.get_json::<crate::rooms::StoredEvent>(trees::EVENTS, event_id.as_bytes())? {
                Some(stored) => pdus.push(serde_json::value::to_raw_value(&stored.pdu).map_err(Error::internal)?),
                None => tracing::warn!(dest = %self.dest, %event_id, "queued event is not in the store; skipped"),
            }
        }
        let mut edus = Vec::with_capacity(batch.edus.len());
        for edu in &batch.edus {
            edus.push(Raw::from_json(serde_json::value::to_raw_value(edu).map_err(Error::internal)?));
        }
        if !pdus.is_empty() || !edus.is_empty() {
            let txn_id = self.sender.next_txn_id();
            tracing::debug!(dest = %self.dest, %txn_id, pdus = pdus.len(), edus = edus.len(), "sending transaction");
            self.transport.send_txn(&self.dest, txn_id, pdus, edus).await?;
        }
        db.write(batch.removal()).await
    }
}
