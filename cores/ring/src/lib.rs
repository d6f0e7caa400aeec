//! The pure core of the leaderless ring (S13's engine): no IO, no clock, no randomness.
//!
//! - [`bin`] — byte strings through serde at `memcpy` speed, in the same encoding.
//! - [`hash`] — the one stable 64-bit hash every node agrees on (keys and vnode tokens).
//! - [`ring`] — consistent hashing with virtual nodes; the preference list of a key (its N
//!   distinct replicas, then the fallbacks a sloppy quorum may use); the ranges a node holds.
//! - [`dvv`] — dotted version vectors: a key's concurrent values (siblings) with their causal
//!   context, so concurrent writes are kept, never silently lost.
//! - [`hlc`] — hybrid logical clocks, for namespaces that choose last-writer-wins.
//! - [`merkle`] — a fixed-shape Merkle tree over the key-hash space, kept up to date per write,
//!   that two replicas compare to find the buckets where they differ.

pub mod bin;
pub mod dvv;
pub mod hash;
pub mod hlc;
pub mod merkle;
pub mod ring;

pub use dvv::{Dot, Object, VersionVector};
pub use hlc::Hlc;
pub use merkle::Merkle;
pub use ring::{NodeId, Ring};
