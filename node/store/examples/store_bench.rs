//! Durable commit and point-read throughput of each engine, through the real group committer.
//!
//! `cargo run --release -p tocsin-store --example store_bench [-- <dir>]`
//!
//! With `TOCSIN_BENCH_POSTGRES` set to libpq connection parameters (`host=/run/postgresql
//! dbname=bench`), the PostgreSQL engine runs too, in a table `store_bench` it empties first.
//!
//! `<dir>` is where the databases go (default: a temp dir); put it on the disk the node will use,
//! since fsync cost is what this measures. Each commit is one batch shaped like an event write:
//! a 300-byte value in one tree plus a small index entry in another.

use std::{
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use tocsin_store::{EngineKind, PostgresEngine, Store, WriteBatch};

const VALUE_LEN: usize = 300;

struct Commits {
    per_sec: f64,
    per_group: f64,
    total: u64,
}

struct Row {
    engine: String,
    one: Commits,
    many: Commits,
    reads_per_sec: f64,
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let base = std::env::args().nth(1).map(PathBuf::from);
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let mut rows = Vec::new();
    let postgres = std::env::var("TOCSIN_BENCH_POSTGRES").ok();
    let mut engines = vec![Some(EngineKind::Sled), Some(EngineKind::Redb)];
    if postgres.is_some() {
        engines.push(None);
    }
    for kind in engines {
        let dir = match &base {
            Some(base) => {
                std::fs::create_dir_all(base)?;
                tempfile::tempdir_in(base)?
            }
            None => tempfile::tempdir()?,
        };
        let (engine, store) = match kind {
            Some(kind) => (kind.to_string(), Store::open(kind, dir.path())?),
            None => {
                let conninfo = postgres.as_deref().ok_or("no PostgreSQL connection parameters")?;
                let engine = PostgresEngine::open(conninfo, "store_bench")?;
                engine.clear()?;
                ("postgres".to_owned(), Store::new(Arc::new(engine)))
            }
        };
        let next_key = Arc::new(AtomicU64::new(0));
        let one = rt.block_on(commits(&store, &next_key, 1, 2_000, Duration::from_secs(6)))?;
        eprintln!("{engine}: 1 committer: {:.0} commits/s ({} commits)", one.per_sec, one.total);
        let many = rt.block_on(commits(&store, &next_key, 32, 10_000, Duration::from_secs(8)))?;
        eprintln!(
            "{engine}: 32 committers: {:.0} commits/s ({} commits, {:.1} per fsync)",
            many.per_sec, many.total, many.per_group
        );
        let reads_per_sec = point_reads(&store, Duration::from_secs(3))?;
        eprintln!("{engine}: {reads_per_sec:.0} point reads/s");
        store.close();
        rows.push(Row { engine, one, many, reads_per_sec });
    }

    println!(
        "| engine | durable commits/s, 1 committer | durable commits/s, 32 committers | commits per fsync (32) | point reads/s (1 thread) |"
    );
    println!("|---|---:|---:|---:|---:|");
    for r in &rows {
        println!(
            "| {} | {:.0} | {:.0} | {:.1} | {:.0} |",
            r.engine, r.one.per_sec, r.many.per_sec, r.many.per_group, r.reads_per_sec
        );
    }
    Ok(())
}

fn key(n: u64) -> [u8; 8] {
    n.to_be_bytes()
}

/// `committers` tasks commit until `max` commits in total or `limit` elapsed.
async fn commits(
    store: &Store,
    next_key: &Arc<AtomicU64>,
    committers: usize,
    max: u64,
    limit: Duration,
) -> Result<Commits, Box<dyn std::error::Error>> {
    let groups_before = *store.subscribe().borrow();
    let first = next_key.load(Ordering::Relaxed);
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..committers {
        let (store, next_key) = (store.clone(), next_key.clone());
        tasks.push(tokio::spawn(async move {
            let mut done = 0u64;
            loop {
                let n = next_key.fetch_add(1, Ordering::Relaxed);
                if n - first >= max || start.elapsed() >= limit {
                    return Ok::<_, tocsin_store::StoreError>(done);
                }
                let mut b = WriteBatch::new();
                let mut value = vec![0u8; VALUE_LEN];
                value[..8].copy_from_slice(&key(n));
                b.insert("bench_events", key(n), value);
                b.insert("bench_index", [&b"ix"[..], &key(n)].concat(), key(n));
                store.commit(b).await?;
                done += 1;
            }
        }));
    }
    let mut total = 0;
    for task in tasks {
        total += task.await??;
    }
    let elapsed = start.elapsed().as_secs_f64();
    let groups = (*store.subscribe().borrow() - groups_before).max(1);
    Ok(Commits { per_sec: total as f64 / elapsed, per_group: total as f64 / groups as f64, total })
}

/// Random point reads of keys known to exist, from one thread.
fn point_reads(store: &Store, limit: Duration) -> Result<f64, Box<dyn std::error::Error>> {
    // Stopped committers leave holes in the key sequence: read back the keys actually written.
    let keys: Vec<Vec<u8>> = store.scan_prefix("bench_index", b"ix", usize::MAX)?.into_iter().map(|(_, k)| k).collect();
    if keys.is_empty() {
        return Err("nothing was written".into());
    }
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15; // xorshift: cheap, no dependency
    let start = Instant::now();
    let mut reads = 0u64;
    let mut found = 0u64;
    while start.elapsed() < limit {
        for _ in 0..1_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            if store.get("bench_events", &keys[(x % keys.len() as u64) as usize])?.is_some() {
                found += 1;
            }
            reads += 1;
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    if found != reads {
        eprintln!("warning: {} of {reads} reads missed", reads - found);
    }
    Ok(reads as f64 / elapsed)
}
