//! Consistent hashing with virtual nodes, over a fixed set of partitions.
//!
//! The 64-bit hash space is split into `2^partition_bits` equal partitions (fixed for the life
//! of a cluster). Every node places `vnodes` tokens on the ring (`hash(node, i)`). A
//! partition's **preference list** is the distinct nodes met walking clockwise from the
//! partition's point: the first N are its replicas, the ones after are the fallbacks a sloppy
//! quorum writes to (with a hint) when replicas are down. Every key of a partition has the
//! same replicas, so replicas compare and repair whole partitions (anti-entropy) — Dynamo's
//! "Q equal-sized partitions" strategy, placed by consistent hashing so a join or leave moves
//! only about 1/(nodes) of the partitions.

use std::collections::BTreeSet;

use crate::hash::hash64;

pub type NodeId = u64;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ring {
    partition_bits: u32,
    vnodes: u32,
    nodes: BTreeSet<NodeId>,
    /// (token, node), sorted.
    tokens: Vec<(u64, NodeId)>,
    /// Each partition's whole preference list, computed when the membership changes (a
    /// request looks its key's list up instead of walking the ring).
    lists: Vec<Vec<NodeId>>,
}

impl Ring {
    /// An empty ring. `partition_bits` in 1..=16, `vnodes` at least 1.
    pub fn new(partition_bits: u32, vnodes: u32) -> Self {
        assert!((1..=16).contains(&partition_bits), "partition_bits must be 1..=16");
        assert!(vnodes >= 1, "vnodes must be at least 1");
        Self { partition_bits, vnodes, nodes: BTreeSet::new(), tokens: Vec::new(), lists: Vec::new() }
    }

    pub fn with_nodes(partition_bits: u32, vnodes: u32, nodes: impl IntoIterator<Item = NodeId>) -> Self {
        let mut r = Self::new(partition_bits, vnodes);
        for n in nodes {
            r.add(n);
        }
        r
    }

    pub fn token(node: NodeId, i: u32) -> u64 {
        let mut b = [0u8; 12];
        b[..8].copy_from_slice(&node.to_le_bytes());
        b[8..].copy_from_slice(&i.to_le_bytes());
        hash64(&b)
    }

    pub fn add(&mut self, node: NodeId) {
        if self.nodes.insert(node) {
            self.tokens.extend((0..self.vnodes).map(|i| (Self::token(node, i), node)));
            self.tokens.sort_unstable();
            self.rebuild();
        }
    }

    fn rebuild(&mut self) {
        let n = self.nodes.len();
        self.lists = (0..self.partitions()).map(|p| self.walk_tokens(p).take(n).collect()).collect();
    }

    pub fn remove(&mut self, node: NodeId) {
        if self.nodes.remove(&node) {
            self.tokens.retain(|(_, n)| *n != node);
            self.rebuild();
        }
    }

    pub fn nodes(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.nodes.iter().copied()
    }

    pub fn contains(&self, node: NodeId) -> bool {
        self.nodes.contains(&node)
    }

    pub fn partitions(&self) -> u32 {
        1 << self.partition_bits
    }

    pub fn partition_bits(&self) -> u32 {
        self.partition_bits
    }

    /// The partition a key hash falls in (its top bits).
    pub fn partition_of(&self, key_hash: u64) -> u32 {
        (key_hash >> (64 - self.partition_bits)) as u32
    }

    /// The partition's point on the ring: its last hash value.
    fn point(&self, partition: u32) -> u64 {
        let width = 64 - self.partition_bits;
        (u64::from(partition) << width) | ((1u64 << width) - 1)
    }

    /// Distinct nodes clockwise from the partition's point: its preference list, as long as
    /// there are nodes.
    pub fn walk(&self, partition: u32) -> impl Iterator<Item = NodeId> + '_ {
        self.lists.get(partition as usize).into_iter().flatten().copied()
    }

    fn walk_tokens(&self, partition: u32) -> impl Iterator<Item = NodeId> + '_ {
        let start = self.tokens.partition_point(|(t, _)| *t < self.point(partition));
        let len = self.tokens.len();
        let mut seen = BTreeSet::new();
        (0..len).map(move |i| self.tokens[(start + i) % len].1).filter(move |n| seen.insert(*n))
    }

    /// The first `n` nodes of the partition's preference list: its replicas.
    pub fn replicas(&self, partition: u32, n: usize) -> Vec<NodeId> {
        self.walk(partition).take(n).collect()
    }

    /// The partitions `node` is one of the first `n` replicas of.
    pub fn partitions_of(&self, node: NodeId, n: usize) -> Vec<u32> {
        (0..self.partitions()).filter(|p| self.walk(*p).take(n).any(|x| x == node)).collect()
    }
}

pub fn key_hash(key: &[u8]) -> u64 {
    hash64(key)
}
