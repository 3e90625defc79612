//! Group commit: see the crate docs.
//!
//! One OS thread owns all writes. It blocks for the first pending batch, takes every other batch
//! already queued behind it, writes the whole group with one [`KvEngine::write_durable`] call
//! (one fsync) and then answers each waiter. While that fsync runs, new batches queue up and form
//! the next group, so the number of fsyncs per second stays bounded however many callers commit.

use std::{
    collections::HashMap,
    ops::Bound,
    panic::{AssertUnwindSafe, catch_unwind},
    path::Path,
    sync::{
        Arc, Mutex, PoisonError, RwLock,
        atomic::{AtomicU64, Ordering},
        mpsc,
    },
    thread::JoinHandle,
};

use tokio::sync::{oneshot, watch};

use crate::{EngineKind, Entries, KvEngine, Op, Result, StoreError, WriteBatch, open_engine};

/// Staged writes not yet durable, by tree and key: the value (`None` for a removal) and the
/// stage that wrote it. Point reads see them; scans do not.
type Overlay = HashMap<(&'static str, Vec<u8>), (u64, Option<Vec<u8>>)>;

/// Most batches written in one group: bounds the size of one engine transaction.
const MAX_GROUP: usize = 1024;
/// Under load (the last group held several batches), how long the committer waits for more
/// before writing: each write rewrites the touched trees' pages and syncs, so fewer, larger
/// groups cost less. A lone write (the last group held one) is never held back.
const LINGER: std::time::Duration = std::time::Duration::from_millis(1);

/// The handle to a store: reads go straight to the engine, writes go through the group
/// committer. Clones share the same engine and committer thread.
#[derive(Clone)]
pub struct Store {
    shared: Arc<Shared>,
}

struct Shared {
    engine: Arc<dyn KvEngine>,
    /// `None` once closed: later commits fail with [`StoreError::Closed`]. Dropping the only
    /// sender is also what tells the committer thread to drain and stop.
    queue: RwLock<Option<mpsc::Sender<Job>>>,
    thread: Mutex<Option<JoinHandle<()>>>,
    durable: Arc<watch::Sender<u64>>,
    overlay: Arc<Mutex<Overlay>>,
    stages: AtomicU64,
    stats: Arc<CommitStats>,
    /// Held (shared) by the committer around each group write; held exclusively by a backup of
    /// an engine without snapshot reads, so no write lands halfway through the copy.
    pause: Arc<RwLock<()>>,
}

/// Upper bounds, in seconds, of the commit latency buckets in [`CommitStats`].
pub const COMMIT_BUCKETS: &[f64] = &[0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5];

/// What the committer has done since the store opened, for metrics: durable groups, the
/// batches in them, failures, and how long each group's durable write took.
#[derive(Debug)]
pub struct CommitStats {
    /// One slot per bound of [`COMMIT_BUCKETS`] plus one for slower writes; each counts only
    /// its own range.
    slots: Vec<AtomicU64>,
    sum_micros: AtomicU64,
    groups: AtomicU64,
    batches: AtomicU64,
    failures: AtomicU64,
}

impl Default for CommitStats {
    fn default() -> Self {
        Self {
            slots: (0..=COMMIT_BUCKETS.len()).map(|_| AtomicU64::new(0)).collect(),
            sum_micros: AtomicU64::new(0),
            groups: AtomicU64::new(0),
            batches: AtomicU64::new(0),
            failures: AtomicU64::new(0),
        }
    }
}

impl CommitStats {
    fn record(&self, took: std::time::Duration, batches: usize, ok: bool) {
        let secs = took.as_secs_f64();
        let slot = COMMIT_BUCKETS.iter().position(|b| secs <= *b).unwrap_or(COMMIT_BUCKETS.len());
        self.slots[slot].fetch_add(1, Ordering::Relaxed);
        self.sum_micros.fetch_add(u64::try_from(took.as_micros()).unwrap_or(u64::MAX), Ordering::Relaxed);
        self.groups.fetch_add(1, Ordering::Relaxed);
        self.batches.fetch_add(batches as u64, Ordering::Relaxed);
        if !ok {
            self.failures.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Per-bucket counts (not cumulative), the last for writes slower than every bound.
    pub fn bucket_counts(&self) -> Vec<u64> {
        self.slots.iter().map(|s| s.load(Ordering::Relaxed)).collect()
    }

    pub fn sum_seconds(&self) -> f64 {
        self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6
    }

    pub fn groups(&self) -> u64 {
        self.groups.load(Ordering::Relaxed)
    }

    pub fn batches(&self) -> u64 {
        self.batches.load(Ordering::Relaxed)
    }

    pub fn failures(&self) -> u64 {
        self.failures.load(Ordering::Relaxed)
    }
}

struct Job {
    batch: WriteBatch,
    reply: Reply,
    /// Set for a staged batch: its overlay entries are dropped once the write is done.
    stage: Option<u64>,
}

/// A batch handed to the committer and already visible to point reads ([`Store::get`]).
/// [`Staged::durable`] resolves once it is on disk.
#[must_use = "a staged write is only known durable once `durable` resolves"]
pub struct Staged {
    rx: oneshot::Receiver<Result<()>>,
}

impl Staged {
    pub async fn durable(self) -> Result<()> {
        self.rx.await.map_err(|_| committer_gone())?
    }
}

/// Async callers wait on a tokio oneshot; `commit_blocking` on a std channel, so that it never
/// needs (nor conflicts with) a runtime.
enum Reply {
    Async(oneshot::Sender<Result<()>>),
    Blocking(mpsc::SyncSender<Result<()>>),
}

impl Reply {
    fn send(self, result: Result<()>) {
        // A waiter that went away (dropped future) no longer needs the answer.
        match self {
            Reply::Async(tx) => {
                let _ = tx.send(result);
            }
            Reply::Blocking(tx) => {
                let _ = tx.send(result);
            }
        }
    }
}

impl Store {
    /// Opens the engine of the given kind in `dir` and starts its committer.
    pub fn open(kind: EngineKind, dir: &Path) -> Result<Store> {
        let engine = open_engine(kind, dir)?;
        Ok(Store::try_new(engine)?)
    }

    /// Wraps an open engine and starts its committer thread.
    ///
    /// If the OS refuses to start the thread, the error is logged and every commit fails with
    /// [`StoreError::Closed`]; [`Store::open`] reports that error instead.
    pub fn new(engine: Arc<dyn KvEngine>) -> Store {
        let name = engine.name();
        match Store::try_new(engine.clone()) {
            Ok(store) => store,
            Err(e) => {
                tracing::error!(engine = name, error = %e, "cannot start the commit thread");
                let (durable, _) = watch::channel(0);
                Store {
                    shared: Arc::new(Shared {
                        engine,
                        queue: RwLock::new(None),
                        thread: Mutex::new(None),
                        durable: Arc::new(durable),
                        overlay: Arc::default(),
                        stages: AtomicU64::new(1),
                        stats: Arc::default(),
                        pause: Arc::default(),
                    }),
                }
            }
        }
    }

    fn try_new(engine: Arc<dyn KvEngine>) -> std::io::Result<Store> {
        let (tx, rx) = mpsc::channel();
        let (durable, _) = watch::channel(0);
        let durable = Arc::new(durable);
        let overlay: Arc<Mutex<Overlay>> = Arc::default();
        let stats: Arc<CommitStats> = Arc::default();
        let pause: Arc<RwLock<()>> = Arc::default();
        let thread = {
            let engine = engine.clone();
            let durable = durable.clone();
            let overlay = overlay.clone();
            let stats = stats.clone();
            let pause = pause.clone();
            std::thread::Builder::new()
                .name(format!("tocsin-commit-{}", engine.name()))
                .spawn(move || run_committer(&*engine, &rx, &durable, &overlay, &stats, &pause))?
        };
        Ok(Store {
            shared: Arc::new(Shared {
                engine,
                queue: RwLock::new(Some(tx)),
                thread: Mutex::new(Some(thread)),
                durable,
                overlay,
                stages: AtomicU64::new(1),
                stats,
                pause,
            }),
        })
    }

    /// A consistent copy of the whole store as a new store in `dir`, taken while the store is
    /// in use: every write acknowledged before the call is in it, none is half in it. Blocks
    /// the caller (run it off the async runtime); writes pause during the copy only for
    /// engines without snapshot reads (sled).
    pub fn backup(&self, dir: &Path) -> Result<()> {
        std::fs::create_dir_all(dir)?;
        let engine = &self.shared.engine;
        if engine.snapshot_isolated() {
            engine.backup_to(dir)
        } else {
            let _paused = self.shared.pause.write().unwrap_or_else(PoisonError::into_inner);
            engine.backup_to(dir)
        }
    }

    /// Commit counts and latencies since the store opened.
    pub fn commit_stats(&self) -> &CommitStats {
        &self.shared.stats
    }

    pub fn engine_name(&self) -> &'static str {
        self.shared.engine.name()
    }

    pub fn get(&self, tree: &'static str, key: &[u8]) -> Result<Option<Vec<u8>>> {
        {
            let overlay = self.shared.overlay.lock().unwrap_or_else(PoisonError::into_inner);
            if !overlay.is_empty()
                && let Some((_, value)) = overlay.get(&(tree, key.to_vec()))
            {
                return Ok(value.clone());
            }
        }
        self.shared.engine.get(tree, key)
    }

    pub fn range(
        &self,
        tree: &'static str,
        from: Bound<&[u8]>,
        to: Bound<&[u8]>,
        reverse: bool,
        limit: usize,
    ) -> Result<Entries> {
        self.shared.engine.range(tree, from, to, reverse, limit)
    }

    pub fn scan_prefix(&self, tree: &'static str, prefix: &[u8], limit: usize) -> Result<Entries> {
        self.shared.engine.scan_prefix(tree, prefix, limit)
    }

    /// Writes `batch` atomically and returns once it is durable. Concurrent commits share one
    /// fsync. If the future is dropped after it first ran, the batch may still be written.
    pub async fn commit(&self, batch: WriteBatch) -> Result<()> {
        let (tx, rx) = oneshot::channel();
        self.shared.submit(Job { batch, reply: Reply::Async(tx), stage: None })?;
        rx.await.map_err(|_| committer_gone())?
    }

    /// Queues `batch` like [`Store::commit`] but returns at once: its writes are visible to
    /// [`Store::get`] from now on (scans see them once durable), so a caller can build the next
    /// write on this one and wait for several durabilities together (one fsync for a whole
    /// federation transaction). If the write fails, the staged values vanish again.
    pub fn stage(&self, batch: WriteBatch) -> Result<Staged> {
        let stage = self.shared.stages.fetch_add(1, Ordering::Relaxed);
        {
            let mut overlay = self.shared.overlay.lock().unwrap_or_else(PoisonError::into_inner);
            for op in &batch.ops {
                let (tree, key, value) = match op {
                    Op::Insert { tree, key, value } => (*tree, key.clone(), Some(value.clone())),
                    Op::Remove { tree, key } => (*tree, key.clone(), None),
                };
                overlay.insert((tree, key), (stage, value));
            }
        }
        let (tx, rx) = oneshot::channel();
        if let Err(e) = self.shared.submit(Job { batch: batch.clone(), reply: Reply::Async(tx), stage: Some(stage) }) {
            unstage(&self.shared.overlay, &batch, stage);
            return Err(e);
        }
        Ok(Staged { rx })
    }

    /// [`Store::commit`] for code that is not async (CLI tools). Blocks the calling thread.
    pub fn commit_blocking(&self, batch: WriteBatch) -> Result<()> {
        let (tx, rx) = mpsc::sync_channel(1);
        self.shared.submit(Job { batch, reply: Reply::Blocking(tx), stage: None })?;
        rx.recv().map_err(|_| committer_gone())?
    }

    /// A counter bumped after every durable group. Wakes long-polls; the value itself only
    /// matters in that it changes.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.shared.durable.subscribe()
    }

    /// Stops accepting commits (later ones fail with [`StoreError::Closed`]), waits until the
    /// batches already queued are durable, and stops the committer thread. Blocks the caller
    /// for at most one group's write. Idempotent; also happens when the last clone is dropped.
    pub fn close(&self) {
        self.shared.shutdown();
    }
}

impl Shared {
    fn submit(&self, job: Job) -> Result<()> {
        let queue = self.queue.read().unwrap_or_else(PoisonError::into_inner);
        let Some(tx) = queue.as_ref() else {
            return Err(StoreError::Closed);
        };
        tx.send(job).map_err(|_| committer_gone())
    }

    fn shutdown(&self) {
        // Dropping the sender lets the committer drain what is queued, then see the disconnect.
        drop(self.queue.write().unwrap_or_else(PoisonError::into_inner).take());
        let thread = self.thread.lock().unwrap_or_else(PoisonError::into_inner).take();
        if let Some(thread) = thread
            && thread.join().is_err()
        {
            tracing::error!("the commit thread panicked");
        }
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn committer_gone() -> StoreError {
    StoreError::Engine("the commit thread stopped".into())
}

/// Drops a stage's overlay entries (those no later stage overwrote).
fn unstage(overlay: &Mutex<Overlay>, batch: &WriteBatch, stage: u64) {
    let mut overlay = overlay.lock().unwrap_or_else(PoisonError::into_inner);
    for op in &batch.ops {
        let (Op::Insert { tree, key, .. } | Op::Remove { tree, key }) = op;
        let slot = (*tree, key.clone());
        if overlay.get(&slot).is_some_and(|(s, _)| *s == stage) {
            overlay.remove(&slot);
        }
    }
}

fn run_committer(
    engine: &dyn KvEngine,
    rx: &mpsc::Receiver<Job>,
    durable: &watch::Sender<u64>,
    overlay: &Mutex<Overlay>,
    stats: &CommitStats,
    pause: &RwLock<()>,
) {
    let mut loaded = false;
    while let Ok(first) = rx.recv() {
        let mut batches = vec![first.batch];
        let mut replies = vec![first.reply];
        let mut stages = vec![first.stage];
        let until = std::time::Instant::now() + if loaded { LINGER } else { std::time::Duration::ZERO };
        while batches.len() < MAX_GROUP {
            let next = match until.checked_duration_since(std::time::Instant::now()) {
                Some(wait) if !wait.is_zero() => rx.recv_timeout(wait).ok(),
                _ => rx.try_recv().ok(),
            };
            let Some(job) = next else { break };
            batches.push(job.batch);
            replies.push(job.reply);
            stages.push(job.stage);
        }
        loaded = batches.len() > 1;

        // A panicking engine must not kill the thread: every later commit would hang or fail.
        let paused = pause.read().unwrap_or_else(PoisonError::into_inner);
        let started = std::time::Instant::now();
        let result = catch_unwind(AssertUnwindSafe(|| engine.write_durable(&batches)))
            .unwrap_or_else(|panic| Err(StoreError::Engine(panic_message(&*panic))));
        drop(paused);
        stats.record(started.elapsed(), batches.len(), result.is_ok());
        // Written (the engine now answers reads) or failed (the staged values were never true):
        // either way the overlay no longer speaks for these batches.
        for (batch, stage) in batches.iter().zip(&stages) {
            if let Some(stage) = stage {
                unstage(overlay, batch, *stage);
            }
        }

        match result {
            Ok(()) => {
                // Bump before answering, so a caller that sees its commit return also sees it
                // counted.
                durable.send_modify(|n| *n = n.wrapping_add(1));
                for reply in replies {
                    reply.send(Ok(()));
                }
            }
            Err(e) => {
                tracing::error!(engine = engine.name(), batches = batches.len(), error = %e, "group commit failed");
                for reply in replies {
                    reply.send(Err(duplicate(&e)));
                }
            }
        }
    }
}

fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    let msg = panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".to_owned());
    format!("storage engine panicked: {msg}")
}

/// `StoreError` is not `Clone` (`io::Error` is not); every waiter of a failed group gets its own
/// copy.
fn duplicate(e: &StoreError) -> StoreError {
    match e {
        StoreError::Engine(msg) => StoreError::Engine(msg.clone()),
        StoreError::Io(io) => StoreError::Io(std::io::Error::new(io.kind(), io.to_string())),
        StoreError::Closed => StoreError::Closed,
        StoreError::UnknownEngine(name) => StoreError::UnknownEngine(name.clone()),
    }
}
