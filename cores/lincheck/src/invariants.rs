//! Invariants that need no search: each returns a `Violation` naming what broke.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt::Debug;
use std::hash::Hash;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{invariant}: {message}")]
pub struct Violation {
    pub invariant: &'static str,
    pub message: String,
}

/// Every acknowledged write `(key, value)` is in the final state.
pub fn no_lost_writes<K: Ord + Clone + Debug, V: Eq + Hash + Clone + Debug>(
    acked: &[(K, V)],
    final_state: &BTreeMap<K, HashSet<V>>,
) -> Result<(), Violation> {
    let lost: Vec<&(K, V)> = acked.iter().filter(|(k, v)| !final_state.get(k).is_some_and(|s| s.contains(v))).collect();
    if lost.is_empty() {
        Ok(())
    } else {
        Err(Violation { invariant: "no lost acknowledged write", message: format!("{} lost: {lost:?}", lost.len()) })
    }
}

/// Within each session (client), the versions read never go backwards.
pub fn monotonic_reads(sessions: &BTreeMap<u64, Vec<u64>>) -> Result<(), Violation> {
    for (client, reads) in sessions {
        if let Some(w) = reads.windows(2).find(|w| w[1] < w[0]) {
            return Err(Violation {
                invariant: "monotonic reads",
                message: format!("client {client} read version {} after {}", w[1], w[0]),
            });
        }
    }
    Ok(())
}

/// No id was issued twice.
pub fn unique_ids<T: Eq + Hash + Debug + Clone>(ids: &[T]) -> Result<(), Violation> {
    let mut seen: HashMap<&T, usize> = HashMap::new();
    for id in ids {
        *seen.entry(id).or_default() += 1;
    }
    let dups: Vec<(&T, usize)> = seen.into_iter().filter(|(_, n)| *n > 1).collect();
    if dups.is_empty() {
        Ok(())
    } else {
        Err(Violation { invariant: "unique ids", message: format!("{} duplicated: {dups:?}", dups.len()) })
    }
}

/// Money moved, never created or destroyed.
pub fn sums_preserved(initial_total: i128, balances: &[i128]) -> Result<(), Violation> {
    let total: i128 = balances.iter().sum();
    if total == initial_total {
        Ok(())
    } else {
        Err(Violation { invariant: "sums preserved", message: format!("total {total}, expected {initial_total}") })
    }
}

/// A limiter admitted at most `limit + bound`.
pub fn bounded_over_admission(admitted: u64, limit: u64, bound: u64) -> Result<(), Violation> {
    if admitted <= limit.saturating_add(bound) {
        Ok(())
    } else {
        Err(Violation {
            invariant: "bounded over-admission",
            message: format!("admitted {admitted}, limit {limit} plus the stated bound {bound}"),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_invariant_passes_and_fails() {
        let state: BTreeMap<&str, HashSet<u32>> = [("a", [1, 2].into())].into();
        assert!(no_lost_writes(&[("a", 1)], &state).is_ok());
        assert!(no_lost_writes(&[("a", 3)], &state).unwrap_err().message.contains('3'));
        assert!(no_lost_writes(&[("b", 1)], &state).is_err());
        assert!(monotonic_reads(&[(1, vec![1, 2, 2, 5])].into()).is_ok());
        assert!(monotonic_reads(&[(1, vec![1, 3, 2])].into()).unwrap_err().message.contains("client 1"));
        assert!(unique_ids(&[1, 2, 3]).is_ok());
        assert!(unique_ids(&[1, 2, 1]).is_err());
        assert!(sums_preserved(100, &[40, 60]).is_ok());
        assert!(sums_preserved(100, &[40, 61]).is_err());
        assert!(bounded_over_admission(105, 100, 5).is_ok());
        assert!(bounded_over_admission(106, 100, 5).is_err());
    }
}
