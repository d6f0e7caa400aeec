//! S02 — the consensus engine: Raft (openraft 0.9) with its log and snapshots on the node's
//! store, its RPCs on the node's transport, and a seam for systems' state machines.
//!
//! A system gets the engine with `ctx.engine::<Consensus>()`, registers a [`StateMachine`]
//! while it starts, and then has [`Consensus::propose`] (linearizable write, from any node),
//! [`Consensus::read_barrier`] (read-index, then read local state), local stale reads, and
//! [`Consensus::feed`] / [`Consensus::applied`] to build watches on. See README.md.

// openraft's trait signatures fix the error type (`StorageError`, 224 bytes); boxing it in our
// helpers would only add conversions at every call.
#![allow(clippy::result_large_err)]

mod api;
mod batch;
mod consensus;
mod engine;
mod log_store;
mod network;
mod peer;
mod rounds;
mod state_machine;
mod types;

pub use batch::BATCH;
pub use consensus::{AdminOp, ClusterStatus, Consensus, ConsensusConfig, ConsensusError, Consistency, MemberStatus};
pub use engine::ConsensusEngine;
pub use log_store::{Durability, LogStore};
pub use state_machine::{Applied, SmStore, StateMachine};
pub use types::{Command, Member, NodeId, Reply, TypeConfig};
