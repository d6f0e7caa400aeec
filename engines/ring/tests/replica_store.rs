//! The replica's object cache and batched writes never change what a replica holds: random
//! histories of writes, batches, merges and removals give, at every step, the objects a plain
//! model computes — read through the cache, and again from the store after reopening (the
//! persisted form), with the Merkle trees built from scratch over the model — whatever the cache's size (none, tiny so it
//! evicts all the time, large). Readers racing writers never see a key go back in time.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use basalt_ring::dvv::VersionVector;
use basalt_ring::hash::hash64;
use basalt_ring::merkle::Merkle;
use basalt_ring_engine::Obj;
use basalt_ring_engine::replica::{self, Replica};
use basalt_runtime::Store;
use basalt_runtime::config::FsyncPolicy;
use proptest::prelude::*;

const PARTITION_BITS: u32 = 4;

#[derive(Debug, Clone)]
enum Op {
    Write {
        key: u8,
        actor: u64,
        value: Option<Vec<u8>>,
    },
    Batch(Vec<(u8, u64, Option<Vec<u8>>)>),
    /// Merge in what another replica made of the key: this one's object (or nothing), then a
    /// write by a foreign actor.
    Merge {
        key: u8,
        from_current: bool,
        value: Option<Vec<u8>>,
    },
    /// Remove the key if it holds exactly what it holds now (or, `stale`, something else).
    RemoveIf {
        key: u8,
        stale: bool,
    },
    /// An update that changes nothing (a refused command): nothing is written.
    Noop(u8),
}

fn key(k: u8) -> Vec<u8> {
    format!("key-{k}").into_bytes()
}

fn value() -> impl Strategy<Value = Option<Vec<u8>>> {
    proptest::option::weighted(0.85, proptest::collection::vec(any::<u8>(), 0..200))
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0..6u8, 1..4u64, value()).prop_map(|(key, actor, value)| Op::Write { key, actor, value }),
        3 => proptest::collection::vec((0..6u8, 1..4u64, value()), 1..8).prop_map(Op::Batch),
        2 => (0..6u8, any::<bool>(), value()).prop_map(|(key, from_current, value)| Op::Merge { key, from_current, value }),
        1 => (0..6u8, any::<bool>()).prop_map(|(key, stale)| Op::RemoveIf { key, stale }),
        1 => (0..6u8).prop_map(Op::Noop),
    ]
}

/// The replica on the LSM store, or (`memory`) in memory with an append-only log. A memlog
/// is locked until its last user (the dropped store's fsync thread, briefly) lets go: wait.
fn open(dir: &std::path::Path, cache: usize, memory: bool) -> (Store, Replica) {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let store = Store::open(dir, FsyncPolicy::Always, Duration::from_millis(100)).unwrap();
    let ns = loop {
        match if memory { store.namespace_in_memory("ring") } else { store.namespace("ring") } {
            Ok(ns) => break ns,
            Err(e) if std::time::Instant::now() < deadline && format!("{e:#}").contains("in use") => {
                std::thread::sleep(Duration::from_millis(5))
            }
            Err(e) => panic!("{e:#}"),
        }
    };
    assert_eq!(ns.in_memory(), memory);
    let r = Replica::open(ns, PARTITION_BITS, cache).unwrap();
    (store, r)
}

fn check(r: &Replica, model: &BTreeMap<Vec<u8>, Obj>) {
    for k in 0..6u8 {
        let want = model.get(&key(k)).cloned().unwrap_or_default();
        assert_eq!(r.get(&key(k)).unwrap(), want, "key {k}");
    }
    // The trees (kept lazily: leaves on write, rebuilt when asked) are, at every step, the
    // trees built from scratch over the model's objects.
    let mut want = vec![Merkle::new(replica::MERKLE_DEPTH); 1 << PARTITION_BITS];
    for (k, o) in model {
        let t = &mut want[r.partition_of(k) as usize];
        let b = t.bucket(hash64(k), PARTITION_BITS);
        t.add(b, replica::entry_hash(k, o));
    }
    for (p, t) in want.iter().enumerate() {
        assert_eq!(r.leaves(p as u32), t.level(replica::MERKLE_DEPTH), "leaves of partition {p}");
        assert_eq!(r.root(p as u32), t.root(), "root of partition {p}");
    }
    let held: Vec<u32> = (0..want.len() as u32).filter(|p| want[*p as usize].root() != 0).collect();
    assert_eq!(r.partitions_held(), held);
}

fn trees(r: &Replica) -> Vec<Vec<u64>> {
    (0..1u32 << PARTITION_BITS).map(|p| r.leaves(p)).collect()
}

async fn run(ops: Vec<Op>, cache: usize, memory: bool) {
    let dir = tempfile::tempdir().unwrap();
    let (store, r) = open(dir.path(), cache, memory);
    let mut model: BTreeMap<Vec<u8>, Obj> = BTreeMap::new();
    let write = |o: &mut Obj, actor: u64, v: &Option<Vec<u8>>| {
        let ctx = o.vv.clone();
        o.write(actor, &ctx, v.clone());
    };
    for op in ops {
        match op {
            Op::Write { key: k, actor, value } => {
                let got = r.write(&key(k), actor, None, value.clone()).await.unwrap();
                let m = model.entry(key(k)).or_default();
                write(m, actor, &value);
                assert_eq!(&got, m);
            }
            Op::Batch(items) => {
                let keys: Vec<Vec<u8>> = items.iter().map(|(k, _, _)| key(*k)).collect();
                let got = r
                    .update_batch(&keys, |i, o| {
                        write(o, items[i].1, &items[i].2);
                        Ok(())
                    })
                    .await
                    .unwrap();
                for (i, (k, actor, v)) in items.iter().enumerate() {
                    write(model.entry(key(*k)).or_default(), *actor, v);
                    // A key named twice answers its last object.
                    if items[i + 1..].iter().all(|(k2, _, _)| k2 != k) {
                        assert_eq!(*got[i], model[&key(*k)]);
                    }
                }
            }
            Op::Merge { key: k, from_current, value } => {
                let mut other =
                    if from_current { model.get(&key(k)).cloned().unwrap_or_default() } else { Obj::default() };
                write(&mut other, 99, &value);
                let (got, _) = r.merge(&key(k), &other).await.unwrap();
                let m = model.entry(key(k)).or_default();
                m.merge(&other);
                assert_eq!(&got, m);
            }
            Op::Noop(k) => {
                let stored_before = r.objects(r.partition_of(&key(k)), None).unwrap();
                let got = r.update(&key(k), |_| Ok(())).await.unwrap();
                assert_eq!(got, model.get(&key(k)).cloned().unwrap_or_default());
                assert_eq!(r.objects(r.partition_of(&key(k)), None).unwrap(), stored_before, "nothing written");
            }
            Op::RemoveIf { key: k, stale } => {
                let mut expected = model.get(&key(k)).cloned().unwrap_or_default();
                if stale {
                    expected.write(7, &VersionVector::default(), Some(b"other".to_vec()));
                }
                let removed = r.remove_if(&key(k), &expected).await.unwrap();
                assert_eq!(removed, !stale && model.contains_key(&key(k)));
                if removed {
                    model.remove(&key(k));
                }
            }
        }
        check(&r, &model);
    }
    let before = trees(&r);
    drop(r);
    drop(store);
    // The persisted form: a fresh replica (empty cache) reads the same objects and rebuilds the
    // same trees from the store.
    let (_store, again) = open(dir.path(), cache, memory);
    check(&again, &model);
    assert_eq!(trees(&again), before);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 32, ..ProptestConfig::default() })]

    #[test]
    fn the_cache_and_batches_keep_what_a_replica_holds(
        ops in proptest::collection::vec(op(), 1..40),
        cache in prop_oneof![Just(0usize), Just(64 * 300), Just(1usize << 24)],
        memory in any::<bool>(),
    ) {
        tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(run(ops, cache, memory));
    }

    /// Objects are stored in postcard's derived encoding, byte for byte (data written before
    /// the fast encoder reads the same).
    #[test]
    fn the_stored_encoding_is_the_derived_one(ops in proptest::collection::vec((1..5u64, value()), 0..10)) {
        let mut o = Obj::default();
        for (actor, v) in ops {
            let ctx = o.vv.clone();
            o.write(actor, &ctx, v);
        }
        let derived = postcard::to_allocvec(&o).unwrap();
        prop_assert_eq!(&replica::encode(&o), &derived);
        prop_assert_eq!(replica::decode(&derived).unwrap(), o);
    }
}

/// Readers racing writers on a few keys: each reader sees every key's version vector only
/// grow, and the store ends holding what the cache holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn readers_racing_writers_never_go_back() {
    readers_racing_writers(false).await;
}

/// The same, with the objects in memory and an append-only log.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn readers_racing_writers_never_go_back_in_memory() {
    readers_racing_writers(true).await;
}

async fn readers_racing_writers(memory: bool) {
    let dir = tempfile::tempdir().unwrap();
    let (store, r) = open(dir.path(), 1 << 20, memory);
    let r = Arc::new(r);
    let mut tasks = Vec::new();
    for w in 0..4u64 {
        let r = r.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0..300u64 {
                let keys = [key((i % 3) as u8), key(((i + w) % 3) as u8)];
                r.update_batch(&keys, |_, o| {
                    let ctx = o.vv.clone();
                    o.write(w + 1, &ctx, Some(i.to_be_bytes().to_vec()));
                    Ok(())
                })
                .await
                .unwrap();
            }
        }));
    }
    for _ in 0..4 {
        let r = r.clone();
        tasks.push(tokio::spawn(async move {
            let mut seen = [0u64; 3];
            for i in 0..3000 {
                let k = i % 3;
                let total: u64 = r.get(&key(k as u8)).unwrap().vv.0.values().sum();
                assert!(total >= seen[k], "key {k} went back from {} to {total}", seen[k]);
                seen[k] = total;
                if i % 64 == 0 {
                    tokio::task::yield_now().await;
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let held: Vec<Obj> = (0..3u8).map(|k| r.get(&key(k)).unwrap()).collect();
    let total: u64 = held.iter().map(|o| o.vv.0.values().sum::<u64>()).sum();
    assert_eq!(total, 4 * 300 * 2, "every write counted once");
    drop(r);
    drop(store);
    let (_store, again) = open(dir.path(), 0, memory);
    let stored: Vec<Obj> = (0..3u8).map(|k| again.get(&key(k)).unwrap()).collect();
    assert_eq!(stored, held);
}
