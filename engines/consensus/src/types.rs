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
    /// As bytes (`serde_bytes`): postcard writes exactly what it wrote for a `Vec<u8>` (its
    /// length, then the bytes), but in one copy instead of one call per byte.
    #[serde(with = "serde_bytes")]
    pub payload: Vec<u8>,
}

/// What applying an entry produced.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Reply {
    /// The system's answer.
    Data(#[serde(with = "serde_bytes")] Vec<u8>),
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

#[cfg(test)]
mod tests {
    use super::*;

    /// What a `Command` and a `Reply` were before their bytes went through `serde_bytes`.
    #[derive(Serialize, Deserialize, PartialEq, Debug)]
    struct OldCommand {
        system: String,
        payload: Vec<u8>,
    }

    #[derive(Serialize, Deserialize, PartialEq, Debug)]
    enum OldReply {
        Data(Vec<u8>),
    }

    proptest::proptest! {
        /// Logs and snapshots written before read the same, and new ones read in old builds.
        #[test]
        fn byte_payloads_encode_exactly_as_before(system in "[a-z_]{0,12}", payload in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..300)) {
            let new = postcard::to_allocvec(&Command { system: system.clone(), payload: payload.clone() }).unwrap();
            let old = postcard::to_allocvec(&OldCommand { system: system.clone(), payload: payload.clone() }).unwrap();
            proptest::prop_assert_eq!(&new, &old);
            proptest::prop_assert_eq!(postcard::from_bytes::<Command>(&old).unwrap(), Command { system, payload: payload.clone() });
            let new = postcard::to_allocvec(&Reply::Data(payload.clone())).unwrap();
            proptest::prop_assert_eq!(new, postcard::to_allocvec(&OldReply::Data(payload)).unwrap());
        }
    }
}
