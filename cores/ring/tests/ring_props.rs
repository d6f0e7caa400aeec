use basalt_ring::ring::{Ring, key_hash};
use proptest::prelude::*;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// A preference list has min(n, nodes) distinct members, all in the ring, and is a prefix
    /// of every longer one.
    #[test]
    fn preference_lists_are_distinct_prefixes(nodes in proptest::collection::btree_set(1u64..1000, 1..12),
                                              key in any::<Vec<u8>>(), n in 1usize..6) {
        let r = Ring::with_nodes(8, 16, nodes.iter().copied());
        let p = r.partition_of(key_hash(&key));
        let short = r.replicas(p, n);
        let long = r.replicas(p, n + 3);
        prop_assert_eq!(short.len(), n.min(nodes.len()));
        prop_assert_eq!(&long[..short.len()], &short[..]);
        let set: std::collections::BTreeSet<_> = long.iter().collect();
        prop_assert_eq!(set.len(), long.len());
        prop_assert!(long.iter().all(|x| nodes.contains(x)));
    }

    /// Adding a node moves a partition's replica set only by bringing the new node in: every
    /// replica set either stays the same or gains the new node in place of one old member.
    #[test]
    fn a_join_only_moves_data_to_the_new_node(nodes in proptest::collection::btree_set(1u64..1000, 3..10),
                                              new in 1000u64..2000) {
        let before = Ring::with_nodes(8, 32, nodes.iter().copied());
        let mut after = before.clone();
        after.add(new);
        let mut moved = 0;
        for p in 0..before.partitions() {
            let (a, b) = (before.replicas(p, 3), after.replicas(p, 3));
            if a != b {
                moved += 1;
                prop_assert!(b.contains(&new), "partition {p}: {a:?} -> {b:?} without the new node");
                let kept = a.iter().filter(|x| b.contains(x)).count();
                prop_assert_eq!(kept, 2, "partition {}: only one replica may change", p);
            }
        }
        // About 3/(k+1) of the partitions gain the new node; never all of them.
        prop_assert!(moved < before.partitions() as usize);
        // Removing it again restores exactly the old placement.
        after.remove(new);
        prop_assert_eq!(after, before);
    }
}

#[test]
fn load_is_balanced_across_nodes() {
    let r = Ring::with_nodes(10, 128, 1..=5);
    let mut load = [0usize; 5];
    for p in 0..r.partitions() {
        for x in r.replicas(p, 3) {
            load[(x - 1) as usize] += 1;
        }
    }
    let ideal = (r.partitions() * 3 / 5) as f64;
    for l in load {
        assert!((l as f64 - ideal).abs() / ideal < 0.2, "load {load:?} vs ideal {ideal}");
    }
}

#[test]
fn a_node_holds_the_partitions_it_replicates() {
    let r = Ring::with_nodes(6, 16, [7, 8, 9, 10]);
    for node in [7, 8, 9, 10] {
        for p in r.partitions_of(node, 2) {
            assert!(r.replicas(p, 2).contains(&node));
        }
    }
    let total: usize = [7, 8, 9, 10].iter().map(|n| r.partitions_of(*n, 2).len()).sum();
    assert_eq!(total, r.partitions() as usize * 2);
}
