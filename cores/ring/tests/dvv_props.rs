//! Dotted version vectors under random histories: replicas that take writes (with contexts
//! read from any replica) and exchange state in any order converge, and a write disappears
//! only if a later write's context covered it.

use std::collections::BTreeSet;

use basalt_ring::dvv::{Dot, Object, VersionVector};
use proptest::prelude::*;

#[derive(Debug, Clone)]
enum Step {
    /// Client reads replica `from`, then writes value through replica `at`.
    Write { from: usize, at: usize, delete: bool },
    /// Replica `to` merges replica `from`'s state.
    Sync { from: usize, to: usize },
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        (0..3usize, 0..3usize, proptest::bool::weighted(0.2)).prop_map(|(from, at, delete)| Step::Write {
            from,
            at,
            delete
        }),
        (0..3usize, 0..3usize).prop_map(|(from, to)| Step::Sync { from, to }),
    ]
}

/// Three replicas of one key after a random history (a dot names one write everywhere, so
/// objects to merge must come from the same history).
fn replicas() -> impl Strategy<Value = Vec<Object<u32>>> {
    proptest::collection::vec(step(), 0..30).prop_map(|steps| run(&steps).0)
}

/// Run the steps on three replicas; answers them and, per write, (dot, the context it carried).
fn run(steps: &[Step]) -> (Vec<Object<u32>>, Vec<(Dot, VersionVector)>) {
    let mut reps: Vec<Object<u32>> = vec![Object::default(); 3];
    let mut writes = Vec::new();
    for (i, s) in steps.iter().enumerate() {
        match *s {
            Step::Write { from, at, delete } => {
                let ctx = reps[from].context().clone();
                let value = (!delete).then_some(i as u32);
                let dot = reps[at].write(at as u64 + 1, &ctx, value);
                writes.push((dot, ctx));
            }
            Step::Sync { from, to } => {
                let f = reps[from].clone();
                reps[to].merge(&f);
            }
        }
    }
    (reps, writes)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn merge_is_commutative_associative_and_idempotent(r in replicas()) {
        let (a, b, c) = (r[0].clone(), r[1].clone(), r[2].clone());
        let mut ab = a.clone(); ab.merge(&b);
        let mut ba = b.clone(); ba.merge(&a);
        prop_assert_eq!(&ab, &ba);
        let mut ab_c = ab.clone(); ab_c.merge(&c);
        let mut bc = b.clone(); bc.merge(&c);
        let mut a_bc = a.clone(); a_bc.merge(&bc);
        prop_assert_eq!(&ab_c, &a_bc);
        let mut aa = a.clone(); aa.merge(&a);
        prop_assert_eq!(&aa, &a);
    }

    #[test]
    fn replicas_converge_and_only_covered_writes_disappear(steps in proptest::collection::vec(step(), 1..40)) {
        let (mut reps, writes) = run(&steps);
        // Full exchange: everyone merges everyone, twice.
        for _ in 0..2 {
            for i in 0..3 {
                for j in 0..3 {
                    let o = reps[j].clone();
                    reps[i].merge(&o);
                }
            }
        }
        prop_assert_eq!(&reps[0], &reps[1]);
        prop_assert_eq!(&reps[1], &reps[2]);
        let kept: BTreeSet<Dot> = reps[0].siblings.iter().map(|(d, _)| *d).collect();
        for (dot, _) in &writes {
            if !kept.contains(dot) {
                let superseded = writes.iter().any(|(_, ctx)| ctx.covers(*dot));
                prop_assert!(superseded, "write {:?} was lost without a write that saw it", dot);
            }
        }
        // Dots are unique: no two writes share one.
        let all: BTreeSet<Dot> = writes.iter().map(|(d, _)| *d).collect();
        prop_assert_eq!(all.len(), writes.len());
    }
}
