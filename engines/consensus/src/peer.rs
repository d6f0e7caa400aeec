//! The engine's routes on the peer listener: Raft's own RPCs, plus forwarding (a follower
//! hands a client write, a read-index request or a membership change to the leader).

use axum::Router;
use axum::extract::State;
use axum::routing::post;
use basalt_runtime::transport::Wire;
use openraft::error::{InstallSnapshotError, RaftError};
use openraft::raft::{AppendEntriesRequest, InstallSnapshotRequest, VoteRequest};

use crate::consensus::{AdminOp, Consensus, ConsensusError, WireError};
use crate::network::{APPEND, SNAPSHOT, VOTE};
use crate::types::{Command, NodeId, TypeConfig};

pub const FORWARD: &str = "/raft/forward";
pub const READ_INDEX: &str = "/raft/read_index";
pub const ADMIN: &str = "/raft/admin";
pub const ELECT: &str = "/raft/elect";

fn not_running<E>() -> RaftError<NodeId, E> {
    RaftError::Fatal(openraft::error::Fatal::Stopped)
}

pub fn routes(c: Consensus) -> Router {
    Router::new()
        .route(
            APPEND,
            post(|State(c): State<Consensus>, Wire(req): Wire<AppendEntriesRequest<TypeConfig>>| async move {
                Wire(match c.raft() {
                    Ok(r) => r.append_entries(req).await,
                    Err(_) => Err(not_running()),
                })
            }),
        )
        .route(
            VOTE,
            post(|State(c): State<Consensus>, Wire(req): Wire<VoteRequest<NodeId>>| async move {
                Wire(match c.raft() {
                    Ok(r) => r.vote(req).await,
                    Err(_) => Err(not_running()),
                })
            }),
        )
        .route(
            SNAPSHOT,
            post(|State(c): State<Consensus>, Wire(req): Wire<InstallSnapshotRequest<TypeConfig>>| async move {
                let r: Result<_, RaftError<NodeId, InstallSnapshotError>> = match c.raft() {
                    Ok(r) => r.install_snapshot(req).await,
                    Err(_) => Err(not_running()),
                };
                Wire(r)
            }),
        )
        .route(
            FORWARD,
            post(|State(c): State<Consensus>, Wire(cmd): Wire<Command>| async move {
                let deadline =
                    tokio::time::Instant::now() + std::time::Duration::from_millis(c.inner.config.request_timeout_ms);
                Wire(c.write_forwarded(cmd, deadline).await.map_err(WireError::from))
            }),
        )
        .route(
            READ_INDEX,
            post(|State(c): State<Consensus>, Wire(()): Wire<()>| async move {
                Wire(c.read_index_local().await.map_err(WireError::from))
            }),
        )
        .route(
            ADMIN,
            post(|State(c): State<Consensus>, Wire(op): Wire<AdminOp>| async move {
                Wire(c.admin_local(op).await.map_err(WireError::from))
            }),
        )
        .route(
            ELECT,
            post(|State(c): State<Consensus>, Wire(()): Wire<()>| async move {
                let r: Result<(), ConsensusError> = match c.raft() {
                    // MongoDB's priority-0 member: never made leader, not even by a transfer.
                    Ok(_) if !c.inner.config.stands_for_election => Err(ConsensusError::Rejected(format!(
                        "node {} does not stand for election (engines.consensus.stands_for_election = false)",
                        c.node_id()
                    ))),
                    Ok(r) => r.trigger().elect().await.map_err(|e| ConsensusError::Unknown(e.to_string())),
                    Err(e) => Err(e),
                };
                Wire(r.map_err(WireError::from))
            }),
        )
        .with_state(c)
}
