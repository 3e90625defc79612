//! One conformance suite, run against every engine through the real `Store`: sled and redb on
//! a real disk, PostgreSQL on a real server (`postgres/mod.rs`).

mod postgres;

use std::{
    collections::BTreeMap,
    ops::Bound,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
};

use tocsin_store::{EngineKind, Entries, KvEngine, PostgresEngine, Store, StoreError, WriteBatch, open_engine};

/// Opens the engine under test again on the same data.
type Open<'a> = &'a dyn Fn() -> Arc<dyn KvEngine>;

/// Runs `test` with an opener of the engine of `kind` in a fresh folder.
fn on_disk<T>(kind: EngineKind, test: impl FnOnce(Open<'_>) -> T) -> T {
    let dir = tempfile::tempdir().unwrap();
    test(&|| open_engine(kind, dir.path()).unwrap())
}

/// Runs `test` with an opener of the PostgreSQL engine on a fresh server.
fn on_postgres<T>(test: impl FnOnce(Open<'_>) -> T) -> T {
    let server = postgres::PgServer::start();
    let conninfo = server.conninfo();
    test(&|| Arc::new(PostgresEngine::open(&conninfo, "tocsin_kv").unwrap()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sled_conformance() {
    let dir = tempfile::tempdir().unwrap();
    suite(&|| open_engine(EngineKind::Sled, dir.path()).unwrap(), "sled").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redb_conformance() {
    let dir = tempfile::tempdir().unwrap();
    suite(&|| open_engine(EngineKind::Redb, dir.path()).unwrap(), "redb").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn postgres_conformance() {
    let server = postgres::PgServer::start();
    let conninfo = server.conninfo();
    suite(&|| Arc::new(PostgresEngine::open(&conninfo, "tocsin_kv").unwrap()), "postgres").await;
}

#[test]
fn sled_blocking_and_close() {
    on_disk(EngineKind::Sled, blocking_and_close);
}

#[test]
fn redb_blocking_and_close() {
    on_disk(EngineKind::Redb, blocking_and_close);
}

#[test]
fn postgres_blocking_and_close() {
    on_postgres(blocking_and_close);
}

#[test]
fn postgres_rejects_a_table_name_that_is_not_plain() {
    assert!(matches!(PostgresEngine::open("host=/nonexistent", "kv; DROP TABLE x"), Err(StoreError::Engine(_))));
}

#[test]
fn engine_kind_parses() {
    assert_eq!("sled".parse::<EngineKind>().unwrap(), EngineKind::Sled);
    assert_eq!(" ReDB ".parse::<EngineKind>().unwrap(), EngineKind::Redb);
    assert!(matches!("rocks".parse::<EngineKind>(), Err(StoreError::UnknownEngine(_))));
}

async fn suite(open: Open<'_>, name: &str) {
    let store = Store::new(open());
    assert_eq!(store.engine_name(), name);

    get_insert_remove(&store).await;
    batch_last_op_wins(&store).await;
    unknown_and_empty_trees(&store).await;
    ranges_match_a_model(&store).await;
    prefixes_match_a_model(&store).await;
    batches_are_atomic_to_readers(&store).await;
    concurrent_commits(&store).await;
    subscribe_bumps(&store).await;
    staged_writes(&store).await;

    // Reopen: everything written above must still be there, through a fresh engine.
    let before = store.range("ranges", Bound::Unbounded, Bound::Unbounded, false, usize::MAX).unwrap();
    assert!(!before.is_empty());
    store.close();
    drop(store);
    let store = Store::new(open());
    let after = store.range("ranges", Bound::Unbounded, Bound::Unbounded, false, usize::MAX).unwrap();
    assert_eq!(before, after);
    assert_eq!(store.get("basic", b"kept").unwrap().as_deref(), Some(&b"v2"[..]));
    assert_eq!(store.get("concurrent", b"t63-49").unwrap().as_deref(), Some(&b"63/49"[..]));
    assert_eq!(store.get("basic", b"gone").unwrap(), None);
}

/// A staged batch is readable by key before it is durable, stays readable (from the engine)
/// after, and a later stage of the same key wins; removals stage too; scans see it once durable.
async fn staged_writes(store: &Store) {
    let first = store.stage(batch(&[("staged", b"a", Some(b"1")), ("staged", b"b", Some(b"1"))])).unwrap();
    assert_eq!(store.get("staged", b"a").unwrap().as_deref(), Some(&b"1"[..]), "visible before durable");
    let second = store.stage(batch(&[("staged", b"a", Some(b"2")), ("staged", b"b", None)])).unwrap();
    assert_eq!(store.get("staged", b"a").unwrap().as_deref(), Some(&b"2"[..]), "the later stage wins");
    assert_eq!(store.get("staged", b"b").unwrap(), None, "a staged removal hides the value");
    first.durable().await.unwrap();
    second.durable().await.unwrap();
    assert_eq!(store.get("staged", b"a").unwrap().as_deref(), Some(&b"2"[..]), "durable in the engine");
    let rows = store.scan_prefix("staged", b"", usize::MAX).unwrap();
    assert_eq!(rows, vec![(b"a".to_vec(), b"2".to_vec())]);
}

/// `(tree, key, Some(value))` inserts, `(tree, key, None)` removes.
type TestOp<'a> = (&'static str, &'a [u8], Option<&'a [u8]>);

fn batch(ops: &[TestOp<'_>]) -> WriteBatch {
    let mut b = WriteBatch::new();
    for (tree, key, value) in ops {
        match value {
            Some(v) => b.insert(tree, *key, *v),
            None => b.remove(tree, *key),
        }
    }
    b
}

async fn get_insert_remove(store: &Store) {
    assert_eq!(store.get("basic", b"kept").unwrap(), None);
    store.commit(batch(&[("basic", b"kept", Some(b"v1")), ("basic", b"gone", Some(b"x"))])).await.unwrap();
    assert_eq!(store.get("basic", b"kept").unwrap().as_deref(), Some(&b"v1"[..]));
    assert_eq!(store.get("basic", b"gone").unwrap().as_deref(), Some(&b"x"[..]));

    // Overwrite, remove, and removing a key that is not there is fine.
    store
        .commit(batch(&[("basic", b"kept", Some(b"v2")), ("basic", b"gone", None), ("basic", b"never", None)]))
        .await
        .unwrap();
    assert_eq!(store.get("basic", b"kept").unwrap().as_deref(), Some(&b"v2"[..]));
    assert_eq!(store.get("basic", b"gone").unwrap(), None);

    // Empty keys and values are keys and values like any other.
    store.commit(batch(&[("basic", b"", Some(b""))])).await.unwrap();
    assert_eq!(store.get("basic", b"").unwrap().as_deref(), Some(&b""[..]));

    // An empty batch is a no-op that still succeeds.
    store.commit(WriteBatch::new()).await.unwrap();
}

async fn batch_last_op_wins(store: &Store) {
    // Single-tree batch, then a multi-tree one (engines may take different paths for each).
    for other in [None, Some("order_b")] {
        let mut b = batch(&[
            ("order_a", b"ins_then_rm", Some(b"1")),
            ("order_a", b"ins_then_rm", None),
            ("order_a", b"rm_then_ins", None),
            ("order_a", b"rm_then_ins", Some(b"2")),
            ("order_a", b"twice", Some(b"old")),
            ("order_a", b"twice", Some(b"new")),
        ]);
        if let Some(tree) = other {
            b.insert(tree, b"k".to_vec(), b"v".to_vec());
        }
        store.commit(b).await.unwrap();
        assert_eq!(store.get("order_a", b"ins_then_rm").unwrap(), None);
        assert_eq!(store.get("order_a", b"rm_then_ins").unwrap().as_deref(), Some(&b"2"[..]));
        assert_eq!(store.get("order_a", b"twice").unwrap().as_deref(), Some(&b"new"[..]));
        store.commit(batch(&[("order_a", b"rm_then_ins", None), ("order_a", b"twice", None)])).await.unwrap();
    }
    assert_eq!(store.get("order_b", b"k").unwrap().as_deref(), Some(&b"v"[..]));
}

async fn unknown_and_empty_trees(store: &Store) {
    assert_eq!(store.get("no_such_tree", b"k").unwrap(), None);
    assert!(store.range("no_such_tree", Bound::Unbounded, Bound::Unbounded, false, 10).unwrap().is_empty());
    assert!(store.range("no_such_tree", Bound::Unbounded, Bound::Unbounded, true, 10).unwrap().is_empty());
    assert!(store.scan_prefix("no_such_tree", b"", 10).unwrap().is_empty());

    // A tree whose only key was removed reads as empty too.
    store.commit(batch(&[("emptied", b"k", Some(b"v"))])).await.unwrap();
    store.commit(batch(&[("emptied", b"k", None)])).await.unwrap();
    assert!(store.scan_prefix("emptied", b"", 10).unwrap().is_empty());
    assert_eq!(store.get("emptied", b"k").unwrap(), None);
}

/// Keys chosen to exercise byte ordering: empty key, prefixes of each other, 0x00 and 0xFF.
fn model_keys() -> Vec<Vec<u8>> {
    vec![
        vec![],
        vec![0x00],
        vec![0x00, 0x00],
        vec![0x01],
        b"a".to_vec(),
        b"ab".to_vec(),
        b"abc".to_vec(),
        b"b".to_vec(),
        vec![0x7F, 0xFF],
        vec![0x80],
        vec![0xFE, 0xFF],
        vec![0xFF],
        vec![0xFF, 0x00],
        vec![0xFF, 0xFF],
        vec![0xFF, 0xFF, 0x01],
    ]
}

async fn fill(store: &Store, tree: &'static str) -> BTreeMap<Vec<u8>, Vec<u8>> {
    let mut model = BTreeMap::new();
    let mut b = WriteBatch::new();
    for (i, key) in model_keys().into_iter().enumerate() {
        let value = format!("value-{i}").into_bytes();
        b.insert(tree, key.clone(), value.clone());
        model.insert(key, value);
    }
    store.commit(b).await.unwrap();
    model
}

fn in_bounds(key: &[u8], from: Bound<&[u8]>, to: Bound<&[u8]>) -> bool {
    let lower = match from {
        Bound::Included(f) => key >= f,
        Bound::Excluded(f) => key > f,
        Bound::Unbounded => true,
    };
    let upper = match to {
        Bound::Included(t) => key <= t,
        Bound::Excluded(t) => key < t,
        Bound::Unbounded => true,
    };
    lower && upper
}

async fn ranges_match_a_model(store: &Store) {
    let model = fill(store, "ranges").await;
    // Probe with every stored key plus keys that fall between them.
    let mut probes = model_keys();
    probes.extend([b"aa".to_vec(), b"abd".to_vec(), vec![0x00, 0x00, 0x00], vec![0xFF, 0xFF, 0xFF]]);
    let mut bounds: Vec<Bound<&[u8]>> = vec![Bound::Unbounded];
    for p in &probes {
        bounds.push(Bound::Included(p));
        bounds.push(Bound::Excluded(p));
    }
    let mut checked = 0;
    for &from in &bounds {
        for &to in &bounds {
            for reverse in [false, true] {
                for limit in [0, 1, 3, usize::MAX] {
                    let mut want: Entries = model
                        .iter()
                        .filter(|(k, _)| in_bounds(k, from, to))
                        .map(|(k, v)| (k.clone(), v.clone()))
                        .collect();
                    if reverse {
                        want.reverse();
                    }
                    want.truncate(limit);
                    let got = store.range("ranges", from, to, reverse, limit).unwrap();
                    assert_eq!(got, want, "range {from:?}..{to:?} reverse={reverse} limit={limit}");
                    checked += 1;
                }
            }
        }
    }
    assert!(checked > 5000);
}

async fn prefixes_match_a_model(store: &Store) {
    let model = fill(store, "prefixes").await;
    let prefixes: Vec<Vec<u8>> = vec![
        vec![],
        vec![0x00],
        b"a".to_vec(),
        b"ab".to_vec(),
        b"c".to_vec(),
        vec![0xFE],
        vec![0xFF],
        vec![0xFF, 0xFF],
    ];
    for prefix in &prefixes {
        for limit in [0, 1, 2, usize::MAX] {
            let mut want: Entries =
                model.iter().filter(|(k, _)| k.starts_with(prefix)).map(|(k, v)| (k.clone(), v.clone())).collect();
            want.truncate(limit);
            let got = store.scan_prefix("prefixes", prefix, limit).unwrap();
            assert_eq!(got, want, "prefix {prefix:?} limit {limit}");
        }
    }
    // The 0xFF prefixes have no successor key; make sure they really matched something.
    assert_eq!(store.scan_prefix("prefixes", &[0xFF], usize::MAX).unwrap().len(), 4);
    assert_eq!(store.scan_prefix("prefixes", &[0xFF, 0xFF], usize::MAX).unwrap().len(), 2);
}

/// Each batch sets the same counter in two trees. A reader that reads `a` then `b` must never
/// see `b` behind `a`: that would mean it saw half a batch.
async fn batches_are_atomic_to_readers(store: &Store) {
    let stop = Arc::new(AtomicBool::new(false));
    let reader = {
        let (store, stop) = (store.clone(), stop.clone());
        std::thread::spawn(move || {
            let read =
                |tree| store.get(tree, b"counter").unwrap().map_or(0, |v| u64::from_be_bytes(v.try_into().unwrap()));
            let mut reads = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let a = read("atomic_a");
                let b = read("atomic_b");
                assert!(b >= a, "saw atomic_a={a} but atomic_b={b}");
                reads += 1;
            }
            reads
        })
    };
    for i in 1..=300u64 {
        let v = i.to_be_bytes();
        store.commit(batch(&[("atomic_a", b"counter", Some(&v)), ("atomic_b", b"counter", Some(&v))])).await.unwrap();
    }
    stop.store(true, Ordering::Relaxed);
    assert!(reader.join().unwrap() > 0);
    assert_eq!(store.get("atomic_b", b"counter").unwrap().as_deref(), Some(&300u64.to_be_bytes()[..]));
}

async fn concurrent_commits(store: &Store) {
    let groups_before = *store.subscribe().borrow();
    let mut tasks = Vec::new();
    for t in 0..64 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..50 {
                let key = format!("t{t}-{i}");
                let mut b = WriteBatch::new();
                b.insert("concurrent", key.as_bytes(), format!("{t}/{i}").into_bytes());
                b.insert("concurrent_index", format!("{i:04}-{t:02}").into_bytes(), key.clone().into_bytes());
                store.commit(b).await.unwrap();
                // Acknowledged means readable right away, by key and by scan (which the staged
                // values do not serve: the engine must answer with the new data, even when
                // readers were reading the same trees a moment before).
                assert!(store.get("concurrent", key.as_bytes()).unwrap().is_some());
                let index = format!("{i:04}-{t:02}").into_bytes();
                let found = store
                    .range("concurrent_index", Bound::Included(&index), Bound::Included(&index), false, 1)
                    .unwrap();
                assert_eq!(found.len(), 1, "a scan after the commit of {key} misses it");
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let all = store.scan_prefix("concurrent", b"t", usize::MAX).unwrap();
    assert_eq!(all.len(), 64 * 50);
    assert_eq!(store.scan_prefix("concurrent_index", b"", usize::MAX).unwrap().len(), 64 * 50);
    // 3200 commits from 64 tasks must have shared fsyncs: that is the point of the committer.
    let groups = *store.subscribe().borrow() - groups_before;
    assert!((1..64 * 50).contains(&groups), "{groups} groups for {} commits", 64 * 50);
}

async fn subscribe_bumps(store: &Store) {
    let mut rx = store.subscribe();
    assert!(!rx.has_changed().unwrap());
    let before = *rx.borrow_and_update();
    let waiter = tokio::spawn(async move {
        rx.changed().await.unwrap();
        *rx.borrow_and_update()
    });
    store.commit(batch(&[("watch", b"k", Some(b"v"))])).await.unwrap();
    let after = tokio::time::timeout(std::time::Duration::from_secs(5), waiter).await.unwrap().unwrap();
    assert!(after > before);
}

/// `commit_blocking` outside any runtime, `close`, and engines reopened directly.
fn blocking_and_close(open: Open<'_>) {
    let store = Store::new(open());
    let clone = store.clone();
    let rx = store.subscribe();
    for i in 0..20u32 {
        store.commit_blocking(batch(&[("blocking", &i.to_be_bytes(), Some(b"v"))])).unwrap();
    }
    assert!(*rx.borrow() >= 1);
    assert_eq!(store.scan_prefix("blocking", b"", usize::MAX).unwrap().len(), 20);

    store.close();
    store.close(); // idempotent
    // Every clone sees the store closed.
    assert!(matches!(clone.commit_blocking(batch(&[("blocking", b"late", Some(b"v"))])), Err(StoreError::Closed)));
    let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
    let late = rt.block_on(clone.commit(batch(&[("blocking", b"late", Some(b"v"))])));
    assert!(matches!(late, Err(StoreError::Closed)));
    // Reads still work after close.
    assert_eq!(clone.get("blocking", &0u32.to_be_bytes()).unwrap().as_deref(), Some(&b"v"[..]));
    drop((store, clone));

    // The raw engine, reopened, has the data and not the refused write.
    let engine: Arc<dyn KvEngine> = open();
    reopened_engine_has_data(&*engine);
    drop(engine);

    // Dropping the last clone, without close, releases the engine so that it can be reopened.
    let store = Store::new(open());
    store.commit_blocking(batch(&[("blocking", b"after_reopen", Some(b"v"))])).unwrap();
    drop(store);
    let engine = open();
    assert!(engine.get("blocking", b"after_reopen").unwrap().is_some());
}

fn reopened_engine_has_data(engine: &dyn KvEngine) {
    assert_eq!(engine.scan_prefix("blocking", b"", usize::MAX).unwrap().len(), 20);
    assert_eq!(engine.get("blocking", b"late").unwrap(), None);
    // write_durable with several batches applies them in order.
    engine
        .write_durable(&[
            batch(&[("direct", b"k", Some(b"1")), ("direct2", b"k", Some(b"1"))]),
            batch(&[("direct", b"k", Some(b"2"))]),
            WriteBatch::new(),
        ])
        .unwrap();
    assert_eq!(engine.get("direct", b"k").unwrap().as_deref(), Some(&b"2"[..]));
    assert_eq!(engine.get("direct2", b"k").unwrap().as_deref(), Some(&b"1"[..]));
}

#[test]
fn store_is_send_sync_clone() {
    fn is<T: Send + Sync + Clone + 'static>() {}
    is::<Store>();
}

#[test]
fn sled_close_under_load() {
    on_disk(EngineKind::Sled, close_under_load);
}

#[test]
fn redb_close_under_load() {
    on_disk(EngineKind::Redb, close_under_load);
}

#[test]
fn postgres_close_under_load() {
    on_postgres(close_under_load);
}

/// `close` while other threads are committing: each commit either is refused with `Closed` or
/// is acknowledged, and then it is on disk.
fn close_under_load(open: Open<'_>) {
    let store = Store::new(open());
    let writers: Vec<_> = (0..8u32)
        .map(|t| {
            let store = store.clone();
            std::thread::spawn(move || {
                let mut acked = Vec::new();
                for i in 0u32.. {
                    let key = [t.to_be_bytes(), i.to_be_bytes()].concat();
                    match store.commit_blocking(batch(&[("load", &key, Some(b"v"))])) {
                        Ok(()) => acked.push(key),
                        Err(StoreError::Closed) => break,
                        Err(e) => panic!("{e}"),
                    }
                }
                acked
            })
        })
        .collect();
    std::thread::sleep(std::time::Duration::from_millis(200));
    store.close();
    let acked: Vec<Vec<u8>> = writers.into_iter().flat_map(|w| w.join().unwrap()).collect();
    assert!(!acked.is_empty());
    drop(store);
    let engine = open();
    for key in &acked {
        assert!(engine.get("load", key).unwrap().is_some(), "acknowledged key {key:?} lost");
    }
}
