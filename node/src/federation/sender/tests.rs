//! The sender against a real store (redb in a temp dir) and a recording transport that fails on
//! demand. Only the network is faked.

use std::{
    collections::HashMap,
    path::Path,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::Duration,
};

use ruma::{
    OwnedEventId, OwnedServerName, OwnedTransactionId, ServerName, api::federation::transactions::edu::Edu, serde::Raw,
};
use serde_json::{json, value::RawValue as RawJsonValue};
use tocsin_store::{EngineKind, WriteBatch};
use tokio::time::Instant;

use super::{Backlog, Outbox, Sender, Transport, backoff_after, queue, queue_pdu_rows};
use crate::workers::Workers;
use crate::{
    error::{Error, Result},
    store::{Db, trees},
};

/// One attempted transaction, as the transport saw it.
#[derive(Debug, Clone)]
struct Txn {
    dest: OwnedServerName,
    txn_id: OwnedTransactionId,
    /// The `n` of each item (PDU `content.n`, EDU `content.n`), in the order sent.
    pdus: Vec<u64>,
    edus: Vec<u64>,
    at: Instant,
    ok: bool,
}

#[derive(Default)]
struct Recorder {
    fail: AtomicBool,
    /// How long each send takes.
    delay: Mutex<Duration>,
    attempts: Mutex<Vec<Txn>>,
    in_flight: Mutex<HashMap<OwnedServerName, usize>>,
    max_in_flight: AtomicUsize,
}

fn n_of(raw: &RawJsonValue) -> u64 {
    let v: serde_json::Value = serde_json::from_str(raw.get()).expect("valid JSON");
    v["content"]["n"].as_u64().expect("test items carry content.n")
}

impl Recorder {
    fn attempts(&self) -> Vec<Txn> {
        self.attempts.lock().expect("lock").clone()
    }

    fn delivered(&self, dest: &str) -> Vec<Txn> {
        self.attempts().into_iter().filter(|t| t.ok && t.dest.as_str() == dest).collect()
    }
}

impl Transport for Recorder {
    async fn send_txn(
        &self,
        destination: &ServerName,
        txn_id: OwnedTransactionId,
        pdus: Vec<Box<RawJsonValue>>,
        edus: Vec<Raw<Edu>>,
    ) -> Result<()> {
        {
            let mut in_flight = self.in_flight.lock().expect("lock");
            let n = in_flight.entry(destination.to_owned()).or_default();
            *n += 1;
            self.max_in_flight.fetch_max(*n, Ordering::SeqCst);
        }
        let delay = *self.delay.lock().expect("lock");
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        let ok = !self.fail.load(Ordering::SeqCst);
        self.attempts.lock().expect("lock").push(Txn {
            dest: destination.to_owned(),
            txn_id,
            pdus: pdus.iter().map(|p| n_of(p)).collect(),
            edus: edus.iter().map(|e| n_of(e.json())).collect(),
            at: Instant::now(),
            ok,
        });
        *self.in_flight.lock().expect("lock").entry(destination.to_owned()).or_default() -= 1;
        if ok { Ok(()) } else { Err(Error::internal("connection refused (test)")) }
    }
}

fn server(name: &str) -> OwnedServerName {
    OwnedServerName::try_from(name).expect("valid server name")
}

fn open(dir: &Path) -> Db {
    Db::open(EngineKind::Redb, dir).expect("store opens")
}

/// Stores an event whose content is `{"n": n}` and queues it for `dests`, like the room code
/// does: event and queue rows in one batch at the event's position.
async fn queue_pdu(db: &Db, dests: &[OwnedServerName], n: u64) -> OwnedEventId {
    let event_id = OwnedEventId::try_from(format!("$ev{n}:origin.test")).expect("valid event id");
    let ticket = db.allocate().expect("position");
    let pos = ticket.pos();
    // The stored form (`rooms::read::StoredEvent`), written as JSON so new optional fields of
    // that struct do not concern this test.
    let stored = json!({ "pos": pos, "pdu": { "type": "m.test", "content": { "n": n } } });
    let mut batch = WriteBatch::new();
    batch.insert(trees::EVENTS, event_id.as_bytes().to_vec(), stored.to_string().into_bytes());
    queue_pdu_rows(&mut batch, dests, pos, &event_id);
    db.commit_ticket(ticket, batch).await.expect("durable");
    event_id
}

fn edu(n: u64) -> serde_json::Value {
    json!({ "edu_type": "m.receipt", "content": { "n": n } })
}

fn rows(db: &Db, dest: &ServerName) -> (usize, usize) {
    queue::counts(db, dest).expect("counts")
}

/// Waits (up to 10 s) until `cond` holds.
async fn until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

struct Running {
    sender: Sender,
    recorder: Arc<Recorder>,
    stop: Workers,
}

fn start(db: &Db, recorder: Arc<Recorder>, base: Duration, max: Duration) -> Running {
    let workers = Workers::new();
    let sender = Sender::with_backoff(db.clone(), Outbox::new(), workers.clone(), base, max);
    sender.clone().run(recorder.clone());
    Running { sender, recorder, stop: workers }
}

#[test]
fn backoff_doubles_from_one_second_and_caps_at_the_maximum() {
    let (base, max) = (Duration::from_secs(1), Duration::from_secs(60));
    let secs: Vec<u64> = (1..=9).map(|f| backoff_after(f, base, max).as_secs()).collect();
    assert_eq!(secs, [1, 2, 4, 8, 16, 32, 60, 60, 60]);
    assert_eq!(backoff_after(u32::MAX, base, max), max, "no overflow after many failures");
}

#[tokio::test]
async fn batches_respect_the_limits_and_keep_queue_order() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = open(dir.path());
    let dest = server("b.test");
    let dests = [dest.clone()];
    // 370 items, numbered in queue order: PDUs 0..100, EDUs 100..300, PDUs 300..320, EDUs 320..370
    // (120 PDUs, 250 EDUs), so both limits cut a transaction short somewhere.
    let run = start(&db, Arc::new(Recorder::default()), Duration::from_millis(10), Duration::from_millis(50));
    // The destination is down while all of it is queued, so everything piles up.
    run.recorder.fail.store(true, Ordering::SeqCst);
    for n in 0..370u64 {
        if n < 100 || (300..320).contains(&n) {
            queue_pdu(&db, &dests, n).await;
            run.sender.outbox().wake(&dests);
        } else {
            run.sender.queue_edu(&dests, edu(n)).await.expect("queued");
        }
    }
    assert_eq!(rows(&db, &dest), (120, 250));
    run.recorder.fail.store(false, Ordering::SeqCst);
    run.sender.flush(&dest);
    until("queue drained", || rows(&db, &dest) == (0, 0)).await;

    let sent = run.recorder.delivered("b.test");
    let mut all = Vec::new();
    for txn in &sent {
        assert!(txn.pdus.len() <= 50 && txn.edus.len() <= 100, "txn too big: {} / {}", txn.pdus.len(), txn.edus.len());
        let mut items: Vec<u64> = txn.pdus.iter().chain(&txn.edus).copied().collect();
        assert!(txn.pdus.windows(2).all(|w| w[0] < w[1]) && txn.edus.windows(2).all(|w| w[0] < w[1]));
        items.sort_unstable();
        // Queue order across transactions: everything in one precedes everything in the next.
        if let (Some(last), Some(first)) = (all.last(), items.first()) {
            assert!(last < first, "transaction out of queue order");
        }
        all.extend(items);
    }
    assert_eq!(all, (0..370).collect::<Vec<_>>(), "each item exactly once");
    let shapes: Vec<(usize, usize)> = sent.iter().map(|t| (t.pdus.len(), t.edus.len())).collect();
    assert_eq!(shapes, [(50, 0), (50, 100), (20, 100), (0, 50)], "each transaction filled up to a limit");
    let ids: std::collections::HashSet<_> = run.recorder.attempts().iter().map(|t| t.txn_id.clone()).collect();
    assert_eq!(ids.len(), run.recorder.attempts().len(), "transaction ids are unique");
    run.stop.signal_stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_most_one_transaction_in_flight_per_destination() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = open(dir.path());
    let recorder = Arc::new(Recorder::default());
    *recorder.delay.lock().expect("lock") = Duration::from_millis(15);
    let run = start(&db, recorder, Duration::from_millis(10), Duration::from_millis(50));
    let dests = [server("b.test"), server("c.test")];
    for n in 0..60u64 {
        // Every call wakes both workers while a transaction may be in flight.
        run.sender.queue_edu(&dests, edu(n)).await.expect("queued");
        if n % 2 == 0 {
            queue_pdu(&db, &dests, 1000 + n).await;
            run.sender.outbox().wake(&dests);
        }
        run.sender.flush(&dests[0]);
    }
    until("both queues drained", || rows(&db, &dests[0]) == (0, 0) && rows(&db, &dests[1]) == (0, 0)).await;
    assert_eq!(run.recorder.max_in_flight.load(Ordering::SeqCst), 1);
    for d in ["b.test", "c.test"] {
        let sent = run.recorder.delivered(d);
        assert_eq!(sent.iter().map(|t| t.pdus.len() + t.edus.len()).sum::<usize>(), 90, "{d} got everything");
        assert!(sent.len() > 1, "traffic arrived while a transaction was in flight");
    }
    run.stop.signal_stop();
}

#[tokio::test]
async fn failures_back_off_doubling_up_to_the_cap_and_retry_on_their_own() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = open(dir.path());
    let recorder = Arc::new(Recorder::default());
    recorder.fail.store(true, Ordering::SeqCst);
    let (base, max) = (Duration::from_millis(40), Duration::from_millis(160));
    let run = start(&db, recorder, base, max);
    let dest = server("b.test");
    run.sender.queue_edu(std::slice::from_ref(&dest), edu(1)).await.expect("queued");
    // No further traffic: only the retry timer can cause the later attempts.
    until("six attempts", || run.recorder.attempts().len() >= 6).await;
    let at: Vec<Instant> = run.recorder.attempts().iter().map(|t| t.at).collect();
    let gaps: Vec<Duration> = at.windows(2).map(|w| w[1] - w[0]).collect();
    let expected = [40, 80, 160, 160, 160].map(Duration::from_millis);
    for (gap, want) in gaps.iter().zip(expected) {
        assert!(*gap >= want, "gap {gap:?} shorter than the backoff {want:?}");
        assert!(*gap < want + Duration::from_millis(120), "gap {gap:?} much longer than {want:?}: cap not applied");
    }
    let backlog = run.sender.backlog().expect("backlog");
    let b: &Backlog = backlog.first().expect("one destination");
    assert_eq!((b.destination.as_str(), b.pdus, b.edus), ("b.test", 0, 1));
    assert!(b.failures >= 6);
    assert!(b.next_retry_in.is_some_and(|d| d <= max));
    assert!(b.last_error.as_deref().is_some_and(|e| e.contains("connection refused")));
    assert_eq!(rows(&db, &dest), (0, 1), "nothing deleted while sends fail");
    run.stop.signal_stop();
}

#[tokio::test]
async fn flush_resets_the_backoff_and_sends_at_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = open(dir.path());
    let recorder = Arc::new(Recorder::default());
    recorder.fail.store(true, Ordering::SeqCst);
    // A long backoff: without the flush, the second attempt would come after 30 s.
    let run = start(&db, recorder, Duration::from_secs(30), Duration::from_secs(60));
    let dest = server("b.test");
    let dests = [dest.clone()];
    queue_pdu(&db, &dests, 7).await;
    run.sender.outbox().wake(&dests);
    until("first attempt", || run.recorder.attempts().len() == 1).await;
    let backlog = run.sender.backlog().expect("backlog");
    assert_eq!(backlog[0].failures, 1);
    assert!(backlog[0].next_retry_in.is_some_and(|d| d > Duration::from_secs(20)));
    // New traffic alone does not cut the backoff short.
    run.sender.queue_edu(&dests, edu(8)).await.expect("queued");
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(run.recorder.attempts().len(), 1);

    run.recorder.fail.store(false, Ordering::SeqCst);
    let flushed = Instant::now();
    run.sender.flush(&dest);
    until("delivered after flush", || rows(&db, &dest) == (0, 0)).await;
    assert!(flushed.elapsed() < Duration::from_secs(2));
    let sent = run.recorder.delivered("b.test");
    assert_eq!((sent.len(), sent[0].pdus.clone(), sent[0].edus.clone()), (1, vec![7], vec![8]));
    let backlog = run.sender.backlog().expect("backlog");
    assert!(backlog.is_empty(), "no backlog and no failures left: {backlog:?}");
    run.stop.signal_stop();
}

/// Runs `f` on a runtime of its own and drops the runtime (and with it every task holding the
/// store) before returning, like a node process ending.
fn in_process<T>(f: impl std::future::Future<Output = T>) -> T {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let out = rt.block_on(f);
    drop(rt);
    out
}

#[test]
fn queued_rows_survive_a_restart_and_are_sent_after_it() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (b, c) = (server("b.test"), server("c.test"));
    // First life: the peers are down; every attempt fails, nothing may be deleted.
    in_process(async {
        let db = open(dir.path());
        let recorder = Arc::new(Recorder::default());
        recorder.fail.store(true, Ordering::SeqCst);
        let run = start(&db, recorder, Duration::from_millis(10), Duration::from_millis(20));
        let both = [b.clone(), c.clone()];
        for n in 0..30u64 {
            if n % 2 == 0 {
                queue_pdu(&db, &both, n).await;
                run.sender.outbox().wake(&both);
            } else {
                run.sender.queue_edu(&both, edu(n)).await.expect("queued");
            }
        }
        until("a few failed attempts", || run.recorder.attempts().len() >= 4).await;
        assert!(run.recorder.attempts().iter().all(|t| !t.ok));
        assert_eq!((rows(&db, &b), rows(&db, &c)), ((15, 15), (15, 15)));
        run.stop.signal_stop();
    });
    // Second life: a fresh store handle and sender; the queue is found and sent without any
    // new traffic.
    in_process(async {
        let db = open(dir.path());
        assert_eq!(queue::destinations(&db).expect("scan"), vec![b.clone(), c.clone()]);
        let run = start(&db, Arc::new(Recorder::default()), Duration::from_millis(10), Duration::from_millis(20));
        until("both queues drained", || rows(&db, &b) == (0, 0) && rows(&db, &c) == (0, 0)).await;
        for d in ["b.test", "c.test"] {
            let items: Vec<u64> =
                run.recorder.delivered(d).iter().flat_map(|t| t.pdus.iter().chain(&t.edus).copied()).collect();
            let mut sorted = items.clone();
            sorted.sort_unstable();
            assert_eq!(sorted, (0..30).collect::<Vec<_>>(), "{d} got every item once");
        }
        run.stop.signal_stop();
    });
}

#[tokio::test]
async fn dropping_a_destination_deletes_its_rows_and_counts_them() {
    let dir = tempfile::tempdir().expect("tempdir");
    let db = open(dir.path());
    let (gone, kept) = (server("gone.test"), server("kept.test"));
    for n in 0..3 {
        queue_pdu(&db, &[gone.clone(), kept.clone()], n).await;
    }
    let sender = Sender::new(db.clone(), Outbox::new(), Workers::new(), super::DEFAULT_MAX_BACKOFF);
    sender.queue_edu(std::slice::from_ref(&gone), edu(9)).await.expect("queued");
    assert_eq!(sender.drop_destination(&gone).await.expect("dropped"), 4);
    assert_eq!(rows(&db, &gone), (0, 0));
    assert_eq!(rows(&db, &kept), (3, 0), "other destinations keep their queue");
    let backlog = sender.backlog().expect("backlog");
    let entry = backlog.iter().find(|b| b.destination == gone).expect("the dropped count stays visible");
    assert_eq!((entry.pdus, entry.edus, entry.dropped), (0, 0, 4));
    assert_eq!(backlog.iter().find(|b| b.destination == kept).map(|b| b.dropped), Some(0));
    // Dropping again adds nothing and keeps the count.
    assert_eq!(sender.drop_destination(&gone).await.expect("dropped"), 0);
    assert_eq!(sender.backlog().expect("backlog").iter().find(|b| b.destination == gone).map(|b| b.dropped), Some(4));
}
