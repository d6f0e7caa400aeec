//! The in-memory namespace backend (`storage::memlog`): the same answers as a plain ordered
//! map through random writes, batches, deletes and reopens; a torn tail is cut off and damage
//! before it refuses to open; a rewrite under concurrent writers keeps exactly the live data;
//! a namespace is never opened in both backends.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use basalt_runtime::config::FsyncPolicy;
use basalt_runtime::storage::{MemLogOptions, Namespace, Store};
use proptest::prelude::*;

const NS: &str = "mem";

/// Open the store and the namespace, waiting while a dropped instance (its fsync or rewrite
/// thread) still holds the directory.
fn open(dir: &Path, opts: MemLogOptions) -> (Store, Namespace) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let r = Store::open(dir, FsyncPolicy::Never, Duration::from_millis(100))
            .and_then(|s| s.namespace_in_memory_with(NS, opts).map(|ns| (s, ns)));
        match r {
            Ok(x) => return x,
            Err(e) if Instant::now() < deadline && format!("{e:#}").contains("in use") => {
                std::thread::sleep(Duration::from_millis(5))
            }
            Err(e) if Instant::now() < deadline && format!("{e:#}").contains("another node") => {
                std::thread::sleep(Duration::from_millis(5))
            }
            Err(e) => panic!("reopen failed: {e:#}"),
        }
    }
}

fn try_open(dir: &Path) -> anyhow::Result<Namespace> {
    let s = Store::open(dir, FsyncPolicy::Never, Duration::from_millis(100))?;
    s.namespace_in_memory(NS)
}

fn log_path(dir: &Path) -> std::path::PathBuf {
    dir.join("memlog").join(format!("{NS}.log"))
}

type Model = BTreeMap<Vec<u8>, Vec<u8>>;

/// Every reader of the namespace agrees with the model: point reads, scans, ranges, key lists
/// (in key order, after any mix of overwrites and deletes), and the key count and live bytes
/// the rewrite decision uses.
fn check(ns: &Namespace, model: &Model, probes: &[Vec<u8>]) {
    let all: Vec<(Vec<u8>, Vec<u8>)> = model.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
    assert_eq!(ns.scan_prefix([]).unwrap(), all);
    let stats = ns.memlog_stats().unwrap();
    assert_eq!(stats.keys, model.len(), "key count");
    let live: u64 = model.iter().map(|(k, v)| 9 + k.len() as u64 + v.len() as u64).sum();
    assert_eq!(stats.live_bytes, live, "live bytes");
    for p in probes {
        assert_eq!(ns.get(p).unwrap(), model.get(p).cloned(), "get {p:?}");
        let want: Vec<_> = all.iter().filter(|(k, _)| k.starts_with(p)).cloned().collect();
        assert_eq!(ns.scan_prefix(p).unwrap(), want, "scan_prefix {p:?}");
        assert_eq!(ns.last_with_prefix(p).unwrap(), want.last().cloned(), "last_with_prefix {p:?}");
        for q in probes {
            let want: Vec<_> = all.iter().filter(|(k, _)| k >= p && k < q).cloned().collect();
            assert_eq!(ns.range(p, q, 3).unwrap(), want.iter().take(3).cloned().collect::<Vec<_>>());
            let keys: Vec<_> = want.iter().map(|(k, _)| k.clone()).collect();
            assert_eq!(ns.keys_in(p, q).unwrap(), keys, "keys_in {p:?}..{q:?}");
        }
    }
}

#[derive(Debug, Clone)]
enum Op {
    Put(Vec<u8>, Vec<u8>),
    Delete(Vec<u8>),
    Batch(Vec<(Vec<u8>, Vec<u8>)>, Vec<Vec<u8>>),
    Reopen,
}

fn key() -> impl Strategy<Value = Vec<u8>> {
    // Few keys, sharing prefixes (and 0xff bytes, for prefix ends); some 28-32 bytes long, on
    // either side of the longest key the map holds inline (30), sorting among the short ones.
    let short = prop::collection::vec(prop::sample::select(vec![0u8, 1, 2, 0xff]), 0..4);
    prop_oneof![
        4 => short.clone(),
        1 => short.prop_map(|tail| {
            let mut k = vec![1u8; 28];
            k.extend(tail);
            k
        }),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    // Mostly small values, some big (an overwrite by a much smaller value gives its memory back).
    let value = prop_oneof![
        4 => prop::collection::vec(any::<u8>(), 0..48),
        1 => prop::collection::vec(any::<u8>(), 100..400),
    ];
    prop_oneof![
        5 => (key(), value.clone()).prop_map(|(k, v)| Op::Put(k, v)),
        2 => key().prop_map(Op::Delete),
        2 => (prop::collection::vec((key(), value), 0..5), prop::collection::vec(key(), 0..3))
            .prop_map(|(p, d)| Op::Batch(p, d)),
        1 => Just(Op::Reopen),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    /// Random writes, batches and deletes, reopened (replayed) at random points, with rewrites
    /// (tiny thresholds) happening along the way: every read answers as the model does.
    #[test]
    fn memlog_matches_a_btreemap_through_reopens(ops in prop::collection::vec(op(), 1..80)) {
        let dir = tempfile::tempdir().unwrap();
        let opts = MemLogOptions { rewrite_min_bytes: 600, rewrite_ratio: 2 };
        let (mut store, mut ns) = open(dir.path(), opts);
        let mut model = Model::new();
        let probes: Vec<Vec<u8>> =
            vec![vec![], vec![0], vec![1], vec![1, 2], vec![0xff], vec![2, 0xff, 0xff], vec![0, 0], vec![1, 0xff, 2]];
        for op in ops {
            match op {
                Op::Put(k, v) => {
                    ns.put(&k, &v).unwrap();
                    model.insert(k, v);
                }
                Op::Delete(k) => {
                    ns.delete(&k).unwrap();
                    model.remove(&k);
                }
                Op::Batch(puts, dels) => {
                    ns.write_batch(&puts, &dels).unwrap();
                    for (k, v) in puts {
                        model.insert(k, v);
                    }
                    for k in dels {
                        model.remove(&k);
                    }
                }
                Op::Reopen => {
                    drop(ns);
                    drop(store);
                    (store, ns) = open(dir.path(), opts);
                }
            }
            check(&ns, &model, &probes);
        }
        drop(ns);
        drop(store);
        let (_store, ns) = open(dir.path(), opts);
        check(&ns, &model, &probes);
    }
}

/// Writes `n` single puts; answers the log length after each.
fn write_puts(ns: &Namespace, n: u32) -> Vec<u64> {
    (0..n)
        .map(|i| {
            ns.put(format!("k{i:03}"), format!("value-{i}-{}", "x".repeat(i as usize % 20))).unwrap();
            ns.memlog_stats().unwrap().log_bytes
        })
        .collect()
}

fn value(i: u32) -> Vec<u8> {
    format!("value-{i}-{}", "x".repeat(i as usize % 20)).into_bytes()
}

#[test]
fn a_torn_last_record_is_cut_off_and_every_earlier_record_kept() {
    let dir = tempfile::tempdir().unwrap();
    let ends = {
        let (_s, ns) = open(dir.path(), MemLogOptions::default());
        // The last record is a batch: it must vanish whole.
        let mut ends = write_puts(&ns, 10);
        ns.write_batch(&[(b"b1".to_vec(), b"1".to_vec()), (b"b2".to_vec(), b"2".to_vec())], &[b"k000".to_vec()])
            .unwrap();
        ends.push(ns.memlog_stats().unwrap().log_bytes);
        ends
    };
    let full = std::fs::read(log_path(dir.path())).unwrap();
    let (start, end) = (ends[9] as usize, ends[10] as usize);
    assert_eq!(full.len(), end);
    for cut in [start + 1, start + 5, start + 11, start + 12, start + 13, end - 1] {
        std::fs::write(log_path(dir.path()), &full[..cut]).unwrap();
        let ns = try_open(dir.path()).unwrap();
        for i in 0..10 {
            assert_eq!(ns.get(format!("k{i:03}")).unwrap(), Some(value(i)), "cut at {cut}: k{i:03}");
        }
        assert_eq!(ns.get("b1").unwrap(), None, "cut at {cut}: the torn batch is gone whole");
        assert_eq!(ns.get("b2").unwrap(), None);
        assert_eq!(ns.memlog_stats().unwrap().log_bytes, start as u64, "the tail was truncated");
        // The log goes on cleanly after the cut.
        ns.put("after", "cut").unwrap();
        drop(ns);
        let ns = try_open(dir.path()).unwrap();
        assert_eq!(ns.get("after").unwrap().as_deref(), Some(&b"cut"[..]));
        assert_eq!(ns.get("k009").unwrap(), Some(value(9)));
    }
    // A last record whose checksum fails (its bytes damaged, its length whole) is torn too.
    let mut bad = full.clone();
    bad[end - 2] ^= 0x55;
    std::fs::write(log_path(dir.path()), &bad).unwrap();
    let ns = try_open(dir.path()).unwrap();
    assert_eq!(ns.get("k009").unwrap(), Some(value(9)));
    assert_eq!(ns.get("b1").unwrap(), None);
    drop(ns);
    // And so is a zero-filled tail (what a crash can leave past the last write).
    let mut zeros = full[..end].to_vec();
    zeros.extend_from_slice(&[0u8; 100]);
    std::fs::write(log_path(dir.path()), &zeros).unwrap();
    let ns = try_open(dir.path()).unwrap();
    assert_eq!(ns.get("b1").unwrap().as_deref(), Some(&b"1"[..]));
    assert_eq!(ns.memlog_stats().unwrap().log_bytes, end as u64);
}

#[test]
fn damage_before_the_tail_refuses_to_open_naming_the_file_and_offset() {
    let dir = tempfile::tempdir().unwrap();
    let ends = {
        let (_s, ns) = open(dir.path(), MemLogOptions::default());
        write_puts(&ns, 10)
    };
    let full = std::fs::read(log_path(dir.path())).unwrap();
    let rec3 = ends[2] as usize; // the 4th record starts here
    // A flipped byte in a record's payload, with records after it.
    let mut bad = full.clone();
    bad[rec3 + 14] ^= 0x01;
    std::fs::write(log_path(dir.path()), &bad).unwrap();
    let err = format!("{:#}", try_open(dir.path()).unwrap_err());
    assert!(err.contains(&format!("offset {rec3}")), "{err}");
    assert!(err.contains(&log_path(dir.path()).display().to_string()), "{err}");
    assert!(err.contains("checksum"), "{err}");
    // A damaged length (header) in the middle.
    let mut bad = full.clone();
    bad[rec3 + 1] ^= 0x40;
    std::fs::write(log_path(dir.path()), &bad).unwrap();
    let err = format!("{:#}", try_open(dir.path()).unwrap_err());
    assert!(err.contains(&format!("offset {rec3}")) && err.contains("header"), "{err}");
    // Not a memlog at all.
    std::fs::write(log_path(dir.path()), b"definitely not a log").unwrap();
    let err = format!("{:#}", try_open(dir.path()).unwrap_err());
    assert!(err.contains("not a memlog file"), "{err}");
    // The file is left as it was: nothing was truncated by the refusals.
    assert_eq!(std::fs::read(log_path(dir.path())).unwrap(), b"definitely not a log");
}

#[test]
fn a_rewrite_under_concurrent_writers_keeps_exactly_the_live_data() {
    let dir = tempfile::tempdir().unwrap();
    let opts = MemLogOptions { rewrite_min_bytes: 256 * 1024, rewrite_ratio: 2 };
    let (store, ns) = open(dir.path(), opts);
    const WRITERS: u32 = 4;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let threads: Vec<_> = (0..WRITERS)
        .map(|w| {
            let (ns, stop) = (ns.clone(), stop.clone());
            std::thread::spawn(move || {
                // Each writer owns its keys: overwrites, deletes and batches over 1,500 of them (the
                // rewrite copies the map in chunks of 1,024 keys while they change).
                let mut model = Model::new();
                let mut i = 0u64;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) || i < 2_000 {
                    let k = format!("w{w}/{:04}", i % 1500).into_bytes();
                    let v = format!("{i}-{}", "v".repeat((i % 50) as usize)).into_bytes();
                    match i % 7 {
                        3 => {
                            ns.delete(&k).unwrap();
                            model.remove(&k);
                        }
                        5 => {
                            let k2 = format!("w{w}/{:04}", (i * 7) % 1500).into_bytes();
                            ns.write_batch(&[(k.clone(), v.clone())], std::slice::from_ref(&k2)).unwrap();
                            model.insert(k, v);
                            model.remove(&k2);
                        }
                        _ => {
                            ns.put(&k, &v).unwrap();
                            model.insert(k, v);
                        }
                    }
                    i += 1;
                }
                model
            })
        })
        .collect();
    // Wait (on the condition) for several rewrites to complete while the writers run.
    let deadline = Instant::now() + Duration::from_secs(120);
    while ns.memlog_stats().unwrap().rewrites < 3 {
        assert!(Instant::now() < deadline, "no rewrites: {:?}", ns.memlog_stats());
        std::thread::sleep(Duration::from_millis(2));
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut model = Model::new();
    for t in threads {
        model.extend(t.join().unwrap());
    }
    check(&ns, &model, &[]);
    let stats = ns.memlog_stats().unwrap();
    assert!(stats.log_bytes < 4 * 256 * 1024 + stats.live_bytes * 4, "the log was rewritten: {stats:?}");
    drop(ns);
    drop(store);
    let (_store, ns) = open(dir.path(), opts);
    check(&ns, &model, &[]);
    assert!(!log_path(dir.path()).with_extension("log.tmp").exists());
}

#[test]
fn a_namespace_lives_in_one_backend_only() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = Store::open(dir.path(), FsyncPolicy::Never, Duration::from_millis(100)).unwrap();
        let lsm = store.namespace("on_disk").unwrap();
        lsm.put("k", "v").unwrap();
        let err = format!("{:#}", store.namespace_in_memory("on_disk").unwrap_err());
        assert!(err.contains("open in the LSM store"), "{err}");
        let mem = store.namespace_in_memory("in_mem").unwrap();
        mem.put("k", "v").unwrap();
        let err = format!("{:#}", store.namespace("in_mem").unwrap_err());
        assert!(err.contains("open in memory"), "{err}");
        // Opening the same name in memory twice shares one map.
        assert_eq!(store.namespace_in_memory("in_mem").unwrap().get("k").unwrap().as_deref(), Some(&b"v"[..]));
        store.flush().unwrap();
    }
    let store = Store::open(dir.path(), FsyncPolicy::Never, Duration::from_millis(100)).unwrap();
    let err = format!("{:#}", store.namespace_in_memory("on_disk").unwrap_err());
    assert!(err.contains("holds data in the LSM store"), "{err}");
    let err = format!("{:#}", store.namespace("in_mem").unwrap_err());
    assert!(err.contains("holds data in the in-memory store") && err.contains("in_mem.log"), "{err}");
    // Each still opens its own way, with its data.
    assert_eq!(store.namespace("on_disk").unwrap().get("k").unwrap().as_deref(), Some(&b"v"[..]));
    assert_eq!(store.namespace_in_memory("in_mem").unwrap().get("k").unwrap().as_deref(), Some(&b"v"[..]));
}
