//! kill -9 under load, reopen, and every acknowledged write must be there.
//!
//! The test re-executes its own binary, filtered down to `crash_writer_child`, with an
//! environment variable that turns that test into the writer. The writer commits from many
//! tasks at once and prints `ACK <key>` only after `Store::commit` returned. The parent SIGKILLs
//! it mid-load, reopens the store and checks every acknowledged key, over several rounds on the
//! same directory (so recovery of an already-recovered store is covered too).
//!
//! The PostgreSQL engine runs the same rounds against a real server (`postgres/mod.rs`), and
//! after each kill of the writer the server itself is crashed (SIGQUIT, no checkpoint) and
//! restarted before the check: an acknowledged write must have reached PostgreSQL's WAL.

mod postgres;

use std::{
    collections::{BTreeMap, BTreeSet},
    io::{BufRead, BufReader, Write},
    ops::Bound,
    path::PathBuf,
    process::{Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use tocsin_store::{EngineKind, PostgresEngine, Store, WriteBatch};

/// Set in the child: `<engine>:<round>`. Its absence makes `crash_writer_child` a no-op.
const CHILD_ENV: &str = "TOCSIN_CRASH_CHILD";
/// Set in the child: the store's folder, or the PostgreSQL server's connection parameters.
const WHERE_ENV: &str = "TOCSIN_CRASH_WHERE";
const WRITERS: usize = 48;
const ROUNDS: usize = 3;

/// The store the writer writes to and the check reads.
#[derive(Clone)]
enum Target {
    Disk(EngineKind, PathBuf),
    Postgres(String),
}

impl Target {
    fn parse(engine: &str, location: String) -> Self {
        match engine {
            "postgres" => Target::Postgres(location),
            kind => Target::Disk(kind.parse().unwrap(), PathBuf::from(location)),
        }
    }

    fn engine(&self) -> String {
        match self {
            Target::Disk(kind, _) => kind.to_string(),
            Target::Postgres(_) => "postgres".to_owned(),
        }
    }

    fn location(&self) -> String {
        match self {
            Target::Disk(_, dir) => dir.display().to_string(),
            Target::Postgres(conninfo) => conninfo.clone(),
        }
    }

    fn open(&self) -> Store {
        match self {
            Target::Disk(kind, dir) => Store::open(*kind, dir).unwrap(),
            Target::Postgres(conninfo) => Store::new(Arc::new(PostgresEngine::open(conninfo, "tocsin_kv").unwrap())),
        }
    }
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.engine())
    }
}

#[test]
fn sled_survives_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    crash_rounds(&Target::Disk(EngineKind::Sled, dir.path().to_owned()), || {});
}

#[test]
fn redb_survives_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    crash_rounds(&Target::Disk(EngineKind::Redb, dir.path().to_owned()), || {});
}

#[test]
fn postgres_survives_sigkill_of_the_writer_and_a_crash_of_the_server() {
    let mut server = postgres::PgServer::start();
    let target = Target::Postgres(server.conninfo());
    crash_rounds(&target, || {
        server.crash();
        server.restart();
    });
}

/// The writer. Runs only when re-executed by `crash_rounds`; passes trivially otherwise.
#[test]
fn crash_writer_child() {
    let Ok(spec) = std::env::var(CHILD_ENV) else { return };
    let (engine, round) = spec.split_once(':').unwrap();
    let target = Target::parse(engine, std::env::var(WHERE_ENV).unwrap());
    let round: usize = round.parse().unwrap();

    // Should the parent die without killing us, do not linger.
    std::thread::spawn(|| {
        std::thread::sleep(Duration::from_secs(30));
        std::process::exit(3);
    });

    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    rt.block_on(async move {
        let store = target.open();
        let mut tasks = Vec::new();
        for t in 0..WRITERS {
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                for i in 0u64.. {
                    let key = key_for(round, t, i);
                    let mut b = WriteBatch::new();
                    b.insert("events", key.as_bytes(), value_for(&key));
                    b.insert("index", key.as_bytes(), (key.len() as u32).to_be_bytes());
                    b.insert("latest", format!("r{round}-t{t:02}").into_bytes(), key.as_bytes());
                    store.commit(b).await.unwrap();
                    // Only now is the write acknowledged.
                    let mut out = std::io::stdout().lock();
                    writeln!(out, "ACK {key} END").unwrap();
                    out.flush().unwrap();
                }
            }));
        }
        for task in tasks {
            task.await.unwrap();
        }
    });
}

fn key_for(round: usize, t: usize, i: u64) -> String {
    format!("r{round}-t{t:02}-{i:08}")
}

fn value_for(key: &str) -> Vec<u8> {
    let mut v = key.as_bytes().to_vec();
    while v.len() < 300 {
        v.extend_from_slice(b"|padding");
    }
    v.truncate(300);
    v
}

/// Rounds of writing, killing the writer, `after_kill`, and checking.
fn crash_rounds(target: &Target, mut after_kill: impl FnMut()) {
    let kind = target;
    let mut acked: BTreeSet<String> = BTreeSet::new();
    for round in 0..ROUNDS {
        // Vary how long the writer runs so the kill lands at different points.
        let run_for = Duration::from_millis(900 + 400 * round as u64);
        let new = run_and_kill(target, round, run_for);
        assert!(new.len() >= 50, "{kind} round {round}: only {} writes acknowledged", new.len());
        acked.extend(new);
        after_kill();
        verify(target, &acked);
        eprintln!("{kind} round {round}: {} acknowledged writes so far, all present", acked.len());
    }
}

/// Runs the writer for `run_for`, SIGKILLs it, and returns the keys it acknowledged.
fn run_and_kill(kind: &Target, round: usize, run_for: Duration) -> Vec<String> {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "crash_writer_child", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, format!("{}:{round}", kind.engine()))
        .env(WHERE_ENV, kind.location())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let count = Arc::new(AtomicUsize::new(0));
    let reader = {
        let count = count.clone();
        std::thread::spawn(move || {
            let mut keys = Vec::new();
            // Reads until EOF, i.e. past the kill: lines already in the pipe are acknowledged too.
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                // A line cut short by the kill has no `END`; it is simply not counted.
                if let Some(key) = line.strip_prefix("ACK ").and_then(|l| l.strip_suffix(" END")) {
                    keys.push(key.to_owned());
                    count.fetch_add(1, Ordering::Relaxed);
                }
            }
            keys
        })
    };

    let start = Instant::now();
    loop {
        std::thread::sleep(Duration::from_millis(10));
        if let Some(status) = child.try_wait().unwrap() {
            panic!("{kind} writer exited on its own: {status}");
        }
        if start.elapsed() >= run_for && count.load(Ordering::Relaxed) >= 50 {
            break;
        }
        if start.elapsed() > Duration::from_secs(15) {
            let _ = child.kill();
            panic!("{kind} writer acknowledged only {} writes in 15 s", count.load(Ordering::Relaxed));
        }
    }
    // `Child::kill` is SIGKILL on Unix: no destructor, no flush, no chance to finish a commit.
    child.kill().unwrap();
    child.wait().unwrap();
    reader.join().unwrap()
}

fn verify(kind: &Target, acked: &BTreeSet<String>) {
    let store = kind.open();
    for key in acked {
        let got = store.get("events", key.as_bytes()).unwrap();
        assert_eq!(got, Some(value_for(key)), "{kind}: acknowledged key {key} lost or wrong after SIGKILL");
    }

    // Batches are atomic across trees even when cut by a crash: `events` and `index` hold
    // exactly the same keys, acknowledged or not.
    let all = |tree| {
        store
            .range(tree, Bound::Unbounded, Bound::Unbounded, false, usize::MAX)
            .unwrap()
            .into_iter()
            .map(|(k, _)| String::from_utf8(k).unwrap())
            .collect::<BTreeSet<_>>()
    };
    let events = all("events");
    assert_eq!(events, all("index"), "{kind}: a batch was torn by the crash");
    assert!(events.is_superset(acked));

    // Overwrites survive too: each writer's `latest` is at least its last acknowledged key.
    let mut last_acked: BTreeMap<String, &String> = BTreeMap::new();
    for key in acked {
        let writer = key.rsplit_once('-').unwrap().0.to_owned();
        last_acked.insert(writer, key); // keys sort by sequence number within a writer
    }
    for (writer, last) in last_acked {
        let latest = store.get("latest", writer.as_bytes()).unwrap().unwrap();
        let latest = String::from_utf8(latest).unwrap();
        assert!(&latest >= last, "{kind}: latest for {writer} is {latest}, but {last} was acknowledged");
        assert!(events.contains(&latest), "{kind}: latest {latest} points at a missing event");
    }
    store.close();
}
