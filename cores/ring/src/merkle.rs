//! A fixed-shape Merkle tree over a partition's keys: `2^depth` leaf buckets (chosen by the
//! key hash's bits below the partition bits), each the wrapping sum of its entries' hashes —
//! so a write updates its leaf in O(1) (`add` the new entry hash, `remove` the old) and the
//! path to the root in O(depth). Two replicas compare roots, then the levels below where they
//! differ, and end with the buckets whose keys they must exchange.

use serde::{Deserialize, Serialize};

use crate::hash::mix;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Merkle {
    depth: u32,
    /// Heap layout: node 1 is the root, the children of i are 2i and 2i+1, leaves are
    /// `2^depth .. 2^(depth+1)`. Index 0 is unused.
    nodes: Vec<u64>,
}

fn combine(a: u64, b: u64) -> u64 {
    if a == 0 && b == 0 { 0 } else { mix(a.rotate_left(17) ^ b.wrapping_mul(0x9e37_79b9_7f4a_7c15)) }
}

impl Merkle {
    pub fn new(depth: u32) -> Self {
        assert!(depth <= 20, "depth at most 20");
        Self { depth, nodes: vec![0; 2usize << depth] }
    }

    pub fn leaves(&self) -> usize {
        1 << self.depth
    }

    /// The bucket of a key hash, for a partition of `partition_bits`.
    pub fn bucket(&self, key_hash: u64, partition_bits: u32) -> usize {
        if self.depth == 0 {
            return 0;
        }
        ((key_hash << partition_bits) >> (64 - self.depth)) as usize
    }

    pub fn add(&mut self, bucket: usize, entry: u64) {
        self.set_leaf(bucket, self.leaf(bucket).wrapping_add(entry));
    }

    pub fn remove(&mut self, bucket: usize, entry: u64) {
        self.set_leaf(bucket, self.leaf(bucket).wrapping_sub(entry));
    }

    pub fn leaf(&self, bucket: usize) -> u64 {
        self.nodes[self.leaves() + bucket]
    }

    fn set_leaf(&mut self, bucket: usize, v: u64) {
        let mut i = self.leaves() + bucket;
        self.nodes[i] = v;
        while i > 1 {
            i /= 2;
            self.nodes[i] = combine(self.nodes[2 * i], self.nodes[2 * i + 1]);
        }
    }

    pub fn root(&self) -> u64 {
        self.nodes[1]
    }

    /// The hashes of level `l` (0 = the root, `depth` = the leaves).
    pub fn level(&self, l: u32) -> &[u64] {
        &self.nodes[1 << l..2 << l]
    }

    /// The leaf buckets where two trees of the same depth differ, found top-down (only the
    /// subtrees whose hashes differ are visited).
    pub fn diff(&self, other: &Merkle) -> Vec<usize> {
        assert_eq!(self.depth, other.depth, "trees of different shapes");
        let mut frontier = vec![1usize];
        for _ in 0..self.depth {
            frontier = frontier
                .into_iter()
                .filter(|i| self.nodes[*i] != other.nodes[*i])
                .flat_map(|i| [2 * i, 2 * i + 1])
                .collect();
        }
        frontier.into_iter().filter(|i| self.nodes[*i] != other.nodes[*i]).map(|i| i - self.leaves()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn differing_buckets_are_found_and_order_does_not_matter() {
        let mut a = Merkle::new(6);
        let mut b = Merkle::new(6);
        for e in 1..200u64 {
            a.add((e % 64) as usize, mix(e));
        }
        for e in (1..200u64).rev() {
            b.add((e % 64) as usize, mix(e));
        }
        assert_eq!(a, b);
        assert!(a.diff(&b).is_empty());
        b.remove(5, mix(5));
        b.add(5, mix(5000));
        b.add(40, mix(7));
        assert_eq!(a.diff(&b), vec![5, 40]);
        b.remove(40, mix(7));
        b.remove(5, mix(5000));
        b.add(5, mix(5));
        assert_eq!(a.root(), b.root());
        assert_eq!(Merkle::new(6).root(), 0, "an empty tree hashes to 0");
    }
}
