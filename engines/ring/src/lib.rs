//! The leaderless ring engine (the engine under S13 and the systems built on it).
//!
//! Partitions of the key-hash space are placed on nodes by consistent hashing
//! (`basalt_ring::ring`); each key lives on the first N nodes of its partition's preference
//! list. Membership spreads by gossip with a heartbeat failure detector ([`membership`]);
//! reads and writes take R and W of N replicas, with a sloppy quorum when replicas are down
//! ([`coordinator`]); values carry dotted version vectors, so concurrent writes become
//! siblings instead of being lost; stale replicas are fixed by read repair, hinted handoff and
//! Merkle anti-entropy ([`repair`]); every replica's data is durable on the node's store
//! ([`replica`]). Systems get a [`RingHandle`] from the node's extensions, and may register
//! named read-modify-write [`Updater`]s that run on a home replica of the key.

pub mod coordinator;
pub mod engine;
pub mod membership;
pub mod repair;
pub mod replica;

pub use coordinator::{Quorum, RingError, Updater};
pub use engine::{RingConfig, RingEngine, RingHandle, RingStorage};
pub use replica::{Obj, Value};

/// A random number from the OS (rare uses: actor ids, gossip peers).
pub(crate) fn random_u64() -> u64 {
    use rand::{Rng, SeedableRng};
    rand::rngs::StdRng::from_os_rng().random()
}
