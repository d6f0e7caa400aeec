//! Worker-id leases under random interleavings of holders and clocks: one current lease per
//! worker, stale fencing numbers can never renew, successive holders' time ranges never
//! overlap, and Snowflake generators handing a worker over never issue a common ID.

use basalt_idgen::{Lease, LeaseError, LeaseTable, Refusal, Snowflake, SnowflakeLayout};
use proptest::prelude::*;
use std::collections::{BTreeMap, HashSet};

const HOLDERS: [&str; 2] = ["alpha", "beta"];
/// Three worker ids, so the two holders contend.
const MAX_WORKER: u32 = 2;
const T0: u64 = 1_750_000_000_000;

#[derive(Debug, Clone)]
enum Op {
    /// Move holder `h`'s clock (holders' clocks are independent and may go backwards).
    Clock {
        h: usize,
        delta: i64,
    },
    Acquire {
        h: usize,
        count: u32,
        ttl: u64,
    },
    AcquireSpecific {
        h: usize,
        worker: u32,
        ttl: u64,
    },
    /// Renew the `pick`-th lease the holder has ever been given (stale ones included).
    Renew {
        h: usize,
        pick: usize,
        ahead: u64,
        ttl: u64,
    },
    Release {
        h: usize,
        pick: usize,
    },
}

fn op() -> impl Strategy<Value = Op> {
    let h = 0..HOLDERS.len();
    prop_oneof![
        3 => (h.clone(), -500i64..2_000).prop_map(|(h, delta)| Op::Clock { h, delta }),
        2 => (h.clone(), 1u32..=3, 1u64..1_000).prop_map(|(h, count, ttl)| Op::Acquire { h, count, ttl }),
        2 => (h.clone(), 0..=MAX_WORKER, 1u64..1_000).prop_map(|(h, worker, ttl)| Op::AcquireSpecific { h, worker, ttl }),
        4 => (h.clone(), any::<usize>(), 0u64..3_000, 1u64..1_000)
            .prop_map(|(h, pick, ahead, ttl)| Op::Renew { h, pick, ahead, ttl }),
        1 => (h, any::<usize>()).prop_map(|(h, pick)| Op::Release { h, pick }),
    ]
}

/// What the test remembers about every grant: per worker, per fencing number, the holder,
/// the floor, and the highest reservation that fencing number was ever granted.
#[derive(Default)]
struct History {
    grants: BTreeMap<u32, BTreeMap<u64, (String, u64, u64)>>,
}

impl History {
    fn granted(&mut self, lease: &Lease) -> Result<(), TestCaseError> {
        let per_worker = self.grants.entry(lease.worker).or_default();
        let previous_fencing = per_worker.keys().next_back().copied().unwrap_or(0);
        prop_assert_eq!(lease.fencing, previous_fencing + 1, "fencing must go up by one per grant");
        let highest_before = per_worker.values().map(|&(_, _, r)| r).max().unwrap_or(0);
        prop_assert!(
            lease.floor_ms >= highest_before,
            "worker {} handed over with floor {} below an earlier reservation {}",
            lease.worker,
            lease.floor_ms,
            highest_before
        );
        prop_assert_eq!(lease.reserved_until_ms, lease.floor_ms);
        per_worker.insert(lease.fencing, (lease.holder.clone(), lease.floor_ms, lease.reserved_until_ms));
        Ok(())
    }

    fn renewed(&mut self, lease: &Lease) {
        let entry = self.grants.get_mut(&lease.worker).unwrap().get_mut(&lease.fencing).unwrap();
        entry.2 = entry.2.max(lease.reserved_until_ms);
    }

    /// The `(floor, reserved]` ranges of one worker's successive grants are disjoint.
    fn ranges_disjoint(&self) -> Result<(), TestCaseError> {
        for (worker, per_worker) in &self.grants {
            let ranges: Vec<(u64, u64)> = per_worker.values().map(|&(_, f, r)| (f, r)).collect();
            for pair in ranges.windows(2) {
                prop_assert!(pair[1].0 >= pair[0].1, "worker {}: {:?} overlaps {:?}", worker, pair[0], pair[1]);
            }
        }
        Ok(())
    }
}

fn is_current(table: &LeaseTable, lease: &Lease) -> bool {
    table.get(lease.worker).is_some_and(|r| r.fencing == lease.fencing && r.holder == lease.holder)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn lease_table_fences_and_never_overlaps(ops in prop::collection::vec(op(), 1..120)) {
        let mut table = LeaseTable::new();
        let mut history = History::default();
        let mut clocks = [T0; 2];
        // Every lease each holder was ever given, newest version of each.
        let mut held: [Vec<Lease>; 2] = [Vec::new(), Vec::new()];

        for op in ops {
            match op {
                Op::Clock { h, delta } => clocks[h] = clocks[h].saturating_add_signed(delta),
                Op::Acquire { h, count, ttl } => {
                    let before = table.clone();
                    match table.acquire(HOLDERS[h], count, MAX_WORKER, clocks[h], ttl) {
                        Ok(leases) => {
                            prop_assert_eq!(leases.len(), count as usize);
                            for l in &leases {
                                prop_assert!(l.worker <= MAX_WORKER);
                                history.granted(l)?;
                            }
                            held[h].extend(leases);
                        }
                        Err(LeaseError::Exhausted { wanted, available }) => {
                            prop_assert_eq!(wanted, count);
                            prop_assert!(available < count);
                            prop_assert_eq!(&table, &before, "a failed acquire must change nothing");
                        }
                        Err(e) => prop_assert!(false, "unexpected {:?}", e),
                    }
                }
                Op::AcquireSpecific { h, worker, ttl } => {
                    let now = clocks[h];
                    let blocked = table
                        .get(worker)
                        .is_some_and(|r| r.holder != HOLDERS[h] && r.expires_at_ms > now);
                    match table.acquire_specific(HOLDERS[h], worker, now, ttl) {
                        Ok(lease) => {
                            prop_assert!(!blocked);
                            history.granted(&lease)?;
                            held[h].push(lease);
                        }
                        Err(LeaseError::Held { .. }) => prop_assert!(blocked),
                        Err(e) => prop_assert!(false, "unexpected {:?}", e),
                    }
                }
                Op::Renew { h, pick, ahead, ttl } => {
                    if held[h].is_empty() {
                        continue;
                    }
                    let i = pick % held[h].len();
                    let lease = held[h][i].clone();
                    let current = is_current(&table, &lease);
                    let now = clocks[h];
                    match table.renew(&lease, now + ahead, now, ttl) {
                        Ok(renewed) => {
                            prop_assert!(current, "a stale lease renewed: {:?}", lease);
                            prop_assert_eq!(renewed.fencing, lease.fencing);
                            prop_assert!(renewed.reserved_until_ms >= lease.reserved_until_ms.max(now + ahead));
                            history.renewed(&renewed);
                            held[h][i] = renewed;
                        }
                        Err(LeaseError::Fenced { presented, current: at, .. }) => {
                            prop_assert!(!current);
                            prop_assert_eq!(presented, lease.fencing);
                            prop_assert_ne!(at, presented);
                        }
                        Err(e) => prop_assert!(false, "unexpected {:?}", e),
                    }
                }
                Op::Release { h, pick } => {
                    if held[h].is_empty() {
                        continue;
                    }
                    let lease = held[h][pick % held[h].len()].clone();
                    let current = is_current(&table, &lease);
                    prop_assert_eq!(table.release(&lease).is_ok(), current);
                }
            }

            // At most one lease per worker, across both holders, is the current one.
            for worker in 0..=MAX_WORKER {
                let current = held.iter().flatten().filter(|l| l.worker == worker && is_current(&table, l)).count();
                prop_assert!(current <= 1, "worker {} has {} current leases", worker, current);
            }
            history.ranges_disjoint()?;
        }
    }
}

/// One holder's generators: every generator it ever built, stale ones included, because a
/// paused or partitioned holder may keep issuing from a lease it no longer has.
struct Node {
    name: &'static str,
    clock: u64,
    generators: Vec<(Lease, Snowflake)>,
}

#[derive(Debug, Clone)]
enum NodeOp {
    Clock(i64),
    Acquire,
    Release,
    /// Issue up to `n` IDs from the `pick`-th generator.
    Issue {
        pick: usize,
        n: usize,
    },
}

fn node_op() -> impl Strategy<Value = (usize, NodeOp)> {
    let op = prop_oneof![
        3 => (-300i64..600).prop_map(NodeOp::Clock),
        1 => Just(NodeOp::Acquire),
        1 => Just(NodeOp::Release),
        6 => (any::<usize>(), 1usize..3_000).prop_map(|(pick, n)| NodeOp::Issue { pick, n }),
    ];
    (0..2usize, op)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn snowflakes_handing_a_worker_over_never_share_an_id(
        ops in prop::collection::vec(node_op(), 1..150),
        start_skew in -1_000i64..1_000,
    ) {
        const TTL: u64 = 200;
        const RESERVE_AHEAD: u64 = 50;
        let layout = SnowflakeLayout::default();
        let mut table = LeaseTable::new();
        let mut nodes = [
            Node { name: "alpha", clock: T0, generators: Vec::new() },
            Node { name: "beta", clock: T0.saturating_add_signed(start_skew), generators: Vec::new() },
        ];
        let mut seen = HashSet::new();
        let mut buf = vec![0u64; 3_000];

        for (who, op) in ops {
            let node = &mut nodes[who];
            match op {
                NodeOp::Clock(d) => node.clock = node.clock.saturating_add_signed(d),
                NodeOp::Acquire => {
                    // A single worker id (max_worker 0): every acquisition is a hand-over.
                    if let Ok(mut leases) = table.acquire(node.name, 1, 0, node.clock, TTL) {
                        let lease = leases.pop().unwrap();
                        let g = Snowflake::new(layout, lease.worker, lease.floor_ms, lease.reserved_until_ms, 20).unwrap();
                        node.generators.push((lease, g));
                    }
                }
                NodeOp::Release => {
                    if let Some((lease, _)) = node.generators.last() {
                        let _ = table.release(lease);
                    }
                }
                NodeOp::Issue { pick, n } => {
                    if node.generators.is_empty() {
                        continue;
                    }
                    let i = pick % node.generators.len();
                    let now = node.clock;
                    let (lease, g) = &mut node.generators[i];
                    let mut result = g.fill(now, &mut buf[..n]);
                    if let Err(Refusal::NeedReservation { through_ms }) = result {
                        // The driver's protocol: durably renew, then raise the generator's bound.
                        if let Ok(renewed) = table.renew(lease, through_ms + RESERVE_AHEAD, now, TTL) {
                            g.set_reserved_until(renewed.reserved_until_ms);
                            *lease = renewed;
                            result = g.fill(now, &mut buf[..n]);
                        }
                    }
                    if let Ok(k) = result {
                        for &id in &buf[..k] {
                            let ts = layout.decompose(id).timestamp_ms;
                            prop_assert!(ts > lease.floor_ms && ts <= lease.reserved_until_ms);
                            prop_assert!(seen.insert(id), "{} issued twice (by {} among others)", id, node.name);
                        }
                    }
                }
            }
        }
    }
}
