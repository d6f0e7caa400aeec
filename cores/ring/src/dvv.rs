//! Dotted version vectors: a key's concurrent values (siblings), each tagged with the event
//! (dot) that wrote it, and the causal context the replica has seen.
//!
//! - A write at replica `r` carries the context the client read (`ctx`). It gets the dot
//!   `(r, vv[r] + 1)`, replaces exactly the siblings `ctx` covers (what the client saw), and
//!   keeps the others: two writers who read the same version both survive, as siblings, until
//!   someone writes with a context covering both. Nothing is lost silently.
//! - Merging two replicas' objects keeps a sibling if both have it, or if the other side has
//!   not seen its dot; a sibling one side has seen but no longer holds was superseded, and is
//!   dropped. Merge is commutative, associative and idempotent (property-tested), so replicas
//!   converge whatever order repairs arrive in.
//! - A delete is a write of a tombstone (`None`): it supersedes what its context covers like
//!   any write, so a concurrent write survives it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::ring::NodeId;

/// One write event: the `counter`-th write coordinated by `node` for this key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Dot {
    pub node: NodeId,
    pub counter: u64,
}

/// For each node, how many of its write events have been seen.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct VersionVector(pub BTreeMap<NodeId, u64>);

impl VersionVector {
    pub fn get(&self, node: NodeId) -> u64 {
        self.0.get(&node).copied().unwrap_or(0)
    }

    pub fn covers(&self, d: Dot) -> bool {
        self.get(d.node) >= d.counter
    }

    pub fn merge(&mut self, other: &VersionVector) {
        for (n, c) in &other.0 {
            let e = self.0.entry(*n).or_insert(0);
            *e = (*e).max(*c);
        }
    }

    /// Every event `other` has seen, this has seen.
    pub fn descends(&self, other: &VersionVector) -> bool {
        other.0.iter().all(|(n, c)| self.get(*n) >= *c)
    }

    pub fn is_empty(&self) -> bool {
        self.0.values().all(|c| *c == 0)
    }
}

/// A key's state on one replica: its siblings (value, or `None` for a tombstone), sorted by
/// dot, and the causal context seen.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Object<V> {
    pub vv: VersionVector,
    pub siblings: Vec<(Dot, Option<V>)>,
}

impl<V> Default for Object<V> {
    fn default() -> Self {
        Self { vv: VersionVector::default(), siblings: Vec::new() }
    }
}

impl<V: Clone + PartialEq> Object<V> {
    /// The context a client gets with a read, and sends back with its next write.
    pub fn context(&self) -> &VersionVector {
        &self.vv
    }

    /// The live values (tombstones left out).
    pub fn values(&self) -> impl Iterator<Item = &V> {
        self.siblings.iter().filter_map(|(_, v)| v.as_ref())
    }

    /// Nothing live: no siblings, or only tombstones.
    pub fn is_deleted(&self) -> bool {
        self.siblings.iter().all(|(_, v)| v.is_none())
    }

    /// Write `value` (None deletes) at replica `node`, superseding what `ctx` covers.
    pub fn write(&mut self, node: NodeId, ctx: &VersionVector, value: Option<V>) -> Dot {
        // What the client saw, this replica has now seen too (it may have read elsewhere).
        self.vv.merge(ctx);
        let dot = Dot { node, counter: self.vv.get(node) + 1 };
        self.siblings.retain(|(d, _)| !ctx.covers(*d));
        self.siblings.push((dot, value));
        self.siblings.sort_by_key(|(d, _)| *d);
        self.vv.0.insert(node, dot.counter);
        dot
    }

    /// Merge another replica's state of the same key into this one.
    pub fn merge(&mut self, other: &Object<V>) {
        let mut out: Vec<(Dot, Option<V>)> = Vec::with_capacity(self.siblings.len() + other.siblings.len());
        for (d, v) in &self.siblings {
            let theirs = other.siblings.iter().any(|(od, _)| od == d);
            if theirs || !other.vv.covers(*d) {
                out.push((*d, v.clone()));
            }
        }
        for (d, v) in &other.siblings {
            let mine = self.siblings.iter().any(|(md, _)| md == d);
            if !mine && !self.vv.covers(*d) {
                out.push((*d, v.clone()));
            }
        }
        out.sort_by_key(|(d, _)| *d);
        self.siblings = out;
        self.vv.merge(&other.vv);
    }

    /// Whether merging `other` in would change nothing.
    pub fn contains(&self, other: &Object<V>) -> bool {
        let mut m = self.clone();
        m.merge(other);
        &m == self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn concurrent_writers_become_siblings_and_a_later_write_resolves_them() {
        let mut a: Object<&str> = Object::default();
        a.write(1, &VersionVector::default(), Some("v1"));
        let seen = a.context().clone();
        // Two clients read v1 and write concurrently, through different replicas.
        let mut b = a.clone();
        a.write(1, &seen, Some("left"));
        b.write(2, &seen, Some("right"));
        a.merge(&b);
        let mut vals: Vec<_> = a.values().copied().collect();
        vals.sort();
        assert_eq!(vals, ["left", "right"], "neither write is lost");
        // A client that read both resolves them.
        let ctx = a.context().clone();
        a.write(2, &ctx, Some("merged"));
        assert_eq!(a.values().copied().collect::<Vec<_>>(), ["merged"]);
        // The older replica, merged in again, brings nothing back.
        a.merge(&b);
        assert_eq!(a.values().copied().collect::<Vec<_>>(), ["merged"]);
    }

    #[test]
    fn a_delete_supersedes_what_it_saw_and_not_a_concurrent_write() {
        let mut a: Object<u8> = Object::default();
        a.write(1, &VersionVector::default(), Some(1));
        let ctx = a.context().clone();
        let mut b = a.clone();
        a.write(1, &ctx, None);
        assert!(a.is_deleted());
        b.write(2, &ctx, Some(2));
        a.merge(&b);
        assert_eq!(a.values().copied().collect::<Vec<_>>(), [2]);
    }

    #[test]
    fn a_write_with_a_context_from_another_replica_supersedes_what_it_saw_there() {
        let mut x: Object<u8> = Object::default();
        let mut y: Object<u8> = Object::default();
        y.write(2, &VersionVector::default(), Some(9));
        // The client read y, then writes through x, which has never seen y's value.
        let ctx = y.context().clone();
        x.write(1, &ctx, Some(10));
        x.merge(&y);
        y.merge(&x);
        assert_eq!(x.values().copied().collect::<Vec<_>>(), [10]);
        assert_eq!(x, y);
    }
}
