//! The Raft type configuration: what a log entry carries and what applying one returns.

use std::io::Cursor;

use serde::{Deserialize, Serialize};

/// How to reach a member: its peer listener (Raft traffic) and its HTTP API (clients are told
/// where the leader is).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    pub peer_addr: String,
    pub http_addr: String,
}

/// One entry's payload: a command for one system's state machine. Several systems share one
/// Raft group; `system` routes the command.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Command {
    pub system: String,
    pub payload: Vec<u8>,
}

/// What applying an entry produced.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Reply {
    /// The system's answer.
    Data(Vec<u8>),
    /// No state machine is registered under this name on this node (a node running an older
    /// build, or a system turned off): the command is skipped deterministically everywhere.
    NoSuchSystem(String),
    /// A blank or membership entry.
    None,
}

openraft::declare_raft_types!(
    /// Basalt's Raft types.
    pub TypeConfig:
        D = Command,
        R = Reply,
        NodeId = u64,
        Node = Member,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = Cursor<Vec<u8>>,
        AsyncRuntime = openraft::TokioRuntime,
);

pub type NodeId = u64;
pub type LogId = openraft::LogId<NodeId>;
pub type Entry = openraft::Entry<TypeConfig>;
pub type Vote = openraft::Vote<NodeId>;
pub type StorageError = openraft::StorageError<NodeId>;
pub type StoredMembership = openraft::StoredMembership<NodeId, Member>;
pub type SnapshotMeta = openraft::SnapshotMeta<NodeId, Member>;
pub type Snapshot = openraft::Snapshot<TypeConfig>;
pub type Raft = openraft::Raft<TypeConfig>;
