//! openraft's network over the node's one transport: Raft RPCs are `POST /raft/…` on the peer
//! listener, and the transport's fault hook applies to them like to any other traffic.

use basalt_runtime::transport::{RpcError, Transport};
use openraft::error::{InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse, VoteRequest,
    VoteResponse,
};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::log_store::Durability;
use crate::types::{Member, NodeId, TypeConfig};

pub const APPEND: &str = "/raft/append";
pub const VOTE: &str = "/raft/vote";
pub const SNAPSHOT: &str = "/raft/snapshot";

pub struct Network {
    pub transport: Transport,
    /// The leader's log on disk: followers are told no commit index beyond it.
    pub durability: Durability,
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = PeerClient;

    async fn new_client(&mut self, target: NodeId, node: &Member) -> PeerClient {
        PeerClient {
            target,
            addr: node.peer_addr.clone(),
            transport: self.transport.clone(),
            durability: self.durability.clone(),
        }
    }
}

pub struct PeerClient {
    target: NodeId,
    addr: String,
    transport: Transport,
    durability: Durability,
}

impl PeerClient {
    async fn rpc<Req, Resp, E>(
        &self,
        path: &str,
        req: &Req,
        option: &RPCOption,
    ) -> Result<Resp, RPCError<NodeId, Member, RaftError<NodeId, E>>>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    {
        let reply = self
            .transport
            .call::<_, Result<Resp, RaftError<NodeId, E>>>(self.target, &self.addr, path, req, Some(option.hard_ttl()))
            .await;
        match reply {
            Ok(Ok(r)) => Ok(r),
            Ok(Err(e)) => Err(RPCError::RemoteError(RemoteError::new(self.target, e))),
            Err(e @ RpcError::Unreachable { .. }) => Err(RPCError::Unreachable(Unreachable::new(&e))),
            Err(e @ RpcError::Remote { status: 503, .. }) => Err(RPCError::Unreachable(Unreachable::new(&e))),
            Err(e) => Err(RPCError::Network(NetworkError::new(&e))),
        }
    }
}

impl RaftNetwork<TypeConfig> for PeerClient {
    async fn append_entries(
        &mut self,
        mut rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, Member, RaftError<NodeId>>> {
        rpc.leader_commit = self.durability.cap_commit(rpc.leader_commit);
        self.rpc(APPEND, &rpc, &option).await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<InstallSnapshotResponse<NodeId>, RPCError<NodeId, Member, RaftError<NodeId, InstallSnapshotError>>>
    {
        self.rpc(SNAPSHOT, &rpc, &option).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, Member, RaftError<NodeId>>> {
        self.rpc(VOTE, &rpc, &option).await
    }
}
