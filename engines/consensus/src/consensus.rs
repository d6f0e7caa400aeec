//! `Consensus`: what systems get from the engine — propose (a linearizable write, forwarded to
//! the leader from any node), a read barrier (read-index: after it, local state reflects every
//! write acknowledged before the call), stale local reads (just read your state), a change
//! feed, and membership changes.

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::http::StatusCode;
use basalt_runtime::ApiError;
use basalt_runtime::engine::NodeIdentity;
use basalt_runtime::transport::{RpcError, Transport};
use openraft::error::{ClientWriteError, RaftError};
use openraft::{ChangeMembers, ServerState};
use serde::{Deserialize, Serialize};
use tokio::sync::{broadcast, watch};

use crate::batch::{BATCH, Batch, LoneSlot, Push, Waiter, answer};
use crate::state_machine::{Applied, SmStore, StateMachine};
use crate::types::{Command, Member, NodeId, Raft, Reply};

/// `[engines.consensus]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConsensusConfig {
    /// Also the timeout of one append-entries call (openraft 0.9 uses it so): across a WAN it
    /// must exceed the longest round trip to any member, or distant members never catch up.
    pub heartbeat_ms: u64,
    pub election_timeout_min_ms: u64,
    pub election_timeout_max_ms: u64,
    /// Build a snapshot (and allow purging the log before it) after this many entries. A
    /// snapshot serializes every system's whole state (S05's included its retained history), so
    /// its cost grows with the state: 100,000 as etcd's `--snapshot-count`.
    pub snapshot_every_entries: u64,
    /// Entries kept in the log behind the snapshot, for followers that lag a little.
    pub log_kept_behind_snapshot: u64,
    /// How long a write or read barrier may take before the caller gets `timeout`.
    pub request_timeout_ms: u64,
    /// `propose_batched`: batches a node sends into the log at once; commands arriving
    /// meanwhile wait and go together in the next one.
    pub batches_in_flight: usize,
    /// `propose_batched`: how long (µs) a node may hold its next batch for the commands it has
    /// just answered to come back, so that one entry carries them too (0: never wait). A lone
    /// writer never waits; see `batch::Batcher::gather`.
    pub batch_wait_us: u64,
    /// With `--join`: join as a voter (true) or as a learner — a non-voting replica that
    /// receives every entry and serves local reads, e.g. a region's read replica.
    pub join_as_voter: bool,
    /// Whether this member campaigns when it stops hearing from a leader (true), or only votes
    /// and replicates (false: MongoDB's priority-0 member), so leaders come from the other
    /// members, e.g. those in the primary region. A transfer to it is refused.
    pub stands_for_election: bool,
}

impl Default for ConsensusConfig {
    fn default() -> Self {
        Self {
            heartbeat_ms: 100,
            election_timeout_min_ms: 500,
            election_timeout_max_ms: 1_000,
            snapshot_every_entries: 100_000,
            log_kept_behind_snapshot: 1_000,
            request_timeout_ms: 5_000,
            batches_in_flight: crate::batch::IN_FLIGHT,
            batch_wait_us: crate::batch::WAIT_US,
            join_as_voter: true,
            stands_for_election: true,
        }
    }
}

impl ConsensusConfig {
    pub fn raft_config(&self) -> anyhow::Result<openraft::Config> {
        anyhow::ensure!(self.batches_in_flight >= 1, "engines.consensus: batches_in_flight must be at least 1");
        anyhow::ensure!(
            self.batch_wait_us <= 100_000,
            "engines.consensus: batch_wait_us must be at most 100000 (0.1 s); it adds to a write's latency"
        );
        anyhow::ensure!(
            self.snapshot_every_entries >= 1,
            "engines.consensus: snapshot_every_entries must be at least 1 (a snapshot serializes the whole state)"
        );
        anyhow::ensure!(
            self.heartbeat_ms * 2 < self.election_timeout_min_ms,
            "engines.consensus: election_timeout_min_ms must exceed twice heartbeat_ms"
        );
        let c = openraft::Config {
            cluster_name: "basalt".into(),
            heartbeat_interval: self.heartbeat_ms,
            election_timeout_min: self.election_timeout_min_ms,
            election_timeout_max: self.election_timeout_max_ms,
            snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(self.snapshot_every_entries),
            max_in_snapshot_log_to_keep: self.log_kept_behind_snapshot,
            enable_elect: self.stands_for_election,
            ..Default::default()
        };
        Ok(c.validate()?)
    }
}

/// How fresh a read must be (the `?consistency=` of systems' read APIs).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Consistency {
    /// Read-index through the leader: sees every write acknowledged before the read.
    #[default]
    Linearizable,
    /// This node's applied state, possibly behind; never a write that was not committed.
    Stale,
}

/// Why a consensus operation failed, as a caller needs to know it.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ConsensusError {
    /// No leader is known (an election is under way, or this node is cut off). Nothing was
    /// written.
    #[error("no leader is known right now{}", hint(.leader_http))]
    NoLeader { leader_http: Option<String> },
    /// The write may or may not have been applied (a timeout or a lost answer). Retry only if
    /// the write is idempotent or guarded (compare-and-set).
    #[error("outcome unknown: {0}")]
    Unknown(String),
    /// The engine has not started yet, or is shutting down.
    #[error("the consensus engine is not running")]
    NotRunning,
    /// The request itself is wrong (an unknown member, a membership change in progress …).
    #[error("{0}")]
    Rejected(String),
    /// This node's build has no state machine for the system.
    #[error("no state machine `{0}` on the node that applied the write")]
    NoSuchSystem(String),
}

fn hint(leader: &Option<String>) -> String {
    leader.as_ref().map(|l| format!("; the leader was last seen at {l}")).unwrap_or_default()
}

impl From<ConsensusError> for ApiError {
    fn from(e: ConsensusError) -> Self {
        let msg = e.to_string();
        match e {
            ConsensusError::NoLeader { .. } => ApiError::unavailable("no_leader", msg).with_retry_after(1),
            ConsensusError::Unknown(_) => ApiError::unavailable("unknown_outcome", msg),
            ConsensusError::NotRunning => ApiError::unavailable("not_running", msg),
            ConsensusError::Rejected(_) => ApiError::new(StatusCode::CONFLICT, "rejected", msg),
            ConsensusError::NoSuchSystem(_) => ApiError::internal(msg),
        }
    }
}

/// A membership change, run on the leader.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum AdminOp {
    /// Add as a learner and wait until it has caught up; with `voter`, then promote it.
    Add {
        node_id: NodeId,
        member: Member,
        voter: bool,
    },
    Promote {
        node_id: NodeId,
    },
    Remove {
        node_id: NodeId,
    },
    Transfer {
        node_id: NodeId,
    },
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MemberStatus {
    pub node_id: NodeId,
    pub peer_addr: String,
    pub http_addr: String,
    pub voter: bool,
    /// Leader only: the highest log index known replicated to this member.
    pub matched_index: Option<u64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClusterStatus {
    pub node_id: NodeId,
    pub state: String,
    pub term: u64,
    pub leader_id: Option<NodeId>,
    pub leader_http_addr: Option<String>,
    pub last_log_index: Option<u64>,
    pub applied_index: Option<u64>,
    pub snapshot_index: Option<u64>,
    pub members: Vec<MemberStatus>,
}

pub(crate) struct Inner {
    pub identity: NodeIdentity,
    pub config: ConsensusConfig,
    pub sm: SmStore,
    pub transport: Transport,
    pub raft: OnceLock<Raft>,
    /// Read-index rounds through this node (local on the leader, else an RPC to it).
    reads: Arc<crate::rounds::Rounds>,
    /// Read-index rounds this node runs as leader (for itself and for followers).
    local_reads: Arc<crate::rounds::Rounds>,
    /// Commands waiting to go to the log together (`propose_batched`).
    pub(crate) batcher: crate::batch::Shared,
}

/// The engine handle systems get through `ctx.engine::<Consensus>()`.
#[derive(Clone)]
pub struct Consensus {
    pub(crate) inner: Arc<Inner>,
}

impl std::fmt::Debug for Consensus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Consensus").field("node_id", &self.inner.identity.node_id).finish_non_exhaustive()
    }
}

impl Consensus {
    pub(crate) fn new(identity: NodeIdentity, config: ConsensusConfig, sm: SmStore, transport: Transport) -> Self {
        let batcher = Arc::new(crate::batch::Batcher::new(config.batches_in_flight));
        Self {
            inner: Arc::new(Inner {
                identity,
                config,
                sm,
                transport,
                raft: OnceLock::new(),
                reads: Arc::default(),
                local_reads: Arc::default(),
                batcher,
            }),
        }
    }

    pub fn node_id(&self) -> NodeId {
        self.inner.identity.node_id
    }

    /// Register a system's state machine; only while systems start (before the engine
    /// replays the log).
    pub fn register(&self, system: &str, sm: Arc<dyn StateMachine>) -> anyhow::Result<()> {
        anyhow::ensure!(self.inner.raft.get().is_none(), "state machines must be registered before the engine starts");
        self.inner.sm.register(system, sm)
    }

    pub(crate) fn raft(&self) -> Result<&Raft, ConsensusError> {
        self.inner.raft.get().ok_or(ConsensusError::NotRunning)
    }

    fn timeout(&self) -> Duration {
        Duration::from_millis(self.inner.config.request_timeout_ms)
    }

    /// The index of the last entry applied locally, and its changes.
    pub fn applied(&self) -> watch::Receiver<u64> {
        self.inner.sm.applied()
    }

    /// Every applied entry, as it is applied (lagging receivers see `Lagged` and should
    /// re-read their state).
    pub fn feed(&self) -> broadcast::Receiver<Applied> {
        self.inner.sm.feed()
    }

    fn member(&self, id: NodeId) -> Option<Member> {
        let raft = self.inner.raft.get()?;
        let m = raft.metrics().borrow().membership_config.clone();
        m.membership().get_node(&id).cloned()
    }

    fn leader(&self) -> Option<(NodeId, Member)> {
        let raft = self.inner.raft.get()?;
        let id = raft.metrics().borrow().current_leader?;
        Some((id, self.member(id)?))
    }

    /// Wait until some leader is known, up to `deadline`.
    async fn wait_leader(&self, deadline: tokio::time::Instant) -> Result<(NodeId, Member), ConsensusError> {
        let raft = self.raft()?;
        let mut rx = raft.metrics();
        loop {
            if let Some(l) = self.leader() {
                return Ok(l);
            }
            if tokio::time::timeout_at(deadline, rx.changed()).await.is_err() {
                return Err(ConsensusError::NoLeader { leader_http: None });
            }
        }
    }

    /// A linearizable write: apply `payload` to `system`'s state machine on every node, and
    /// return its reply once a quorum has it on disk and the leader has applied it.
    pub async fn propose(&self, system: &str, payload: Vec<u8>) -> Result<Vec<u8>, ConsensusError> {
        let cmd = Command { system: system.to_string(), payload };
        let deadline = tokio::time::Instant::now() + self.timeout();
        loop {
            let (leader, member) = self.wait_leader(deadline).await?;
            let result = if leader == self.node_id() {
                self.write_local(cmd.clone(), deadline).await
            } else {
                self.forward(leader, &member, &cmd, deadline).await
            };
            match result {
                Err(ConsensusError::NoLeader { .. }) if tokio::time::Instant::now() < deadline => {
                    // The leader moved between our look and our call; nothing was written.
                    tokio::time::sleep(Duration::from_millis(self.inner.config.heartbeat_ms)).await;
                }
                other => return other,
            }
        }
    }

    /// Like [`propose`](Self::propose), but the command may share a Raft entry (and so its log
    /// index) with others proposed meanwhile on this node — and, through the leader, on every
    /// node: for state machines that do not use the index as a per-command identity. Much
    /// higher write throughput under load.
    pub async fn propose_batched(&self, system: &str, payload: Vec<u8>) -> Result<Vec<u8>, ConsensusError> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        match self.inner.batcher.push(Command { system: system.to_string(), payload }, tx) {
            Push::Alone((cmd, waiter)) => {
                // Alone: proposed from this task, sparing the hand-off to a driver (a write at a
                // time is latency-bound). The slot is released, or passed to a new driver for
                // what queued meanwhile, however this ends — even if the caller drops this
                // future.
                let _slot = LoneSlot::new(&self.inner.batcher, || self.spawn_driver());
                if self.leads() {
                    return self.propose(&cmd.system, cmd.payload).await;
                }
                self.propose_own(vec![(cmd, waiter)]).await;
                rx.await.map_err(|_| ConsensusError::NotRunning)?
            }
            Push::StartDriver => {
                self.spawn_driver();
                rx.await.map_err(|_| ConsensusError::NotRunning)?
            }
            Push::Queued => rx.await.map_err(|_| ConsensusError::NotRunning)?,
        }
    }

    /// Whether this node is the leader, as far as it knows.
    fn leads(&self) -> bool {
        self.inner.raft.get().is_some_and(|r| r.metrics().borrow().current_leader == Some(self.node_id()))
    }

    /// A task that proposes queued commands, a batch at a time, until the queue is empty.
    fn spawn_driver(&self) {
        let me = self.clone();
        let Ok(rt) = tokio::runtime::Handle::try_current() else { return };
        let wait = Duration::from_micros(self.inner.config.batch_wait_us);
        rt.spawn(async move {
            let mut answered = 0;
            loop {
                me.inner.batcher.gather(answered, wait).await;
                let Some(batch) = me.inner.batcher.next() else { break };
                answered = batch.items.len();
                me.propose_queued(batch).await;
            }
        });
    }

    /// Propose a batch from the queue as one entry and answer each command. One that holds
    /// commands a follower forwarded is proposed here only: if this node no longer leads,
    /// those are answered "not the leader" (their follower resends them to the new leader —
    /// nothing was written) and this node's own are proposed again the usual way. Forwarding
    /// them on could send them back to that follower, whose batch slot is held by the forward
    /// waiting for them.
    async fn propose_queued(&self, batch: Batch) {
        if !batch.forwarded.contains(&true) {
            return self.propose_own(batch.items).await;
        }
        let deadline = tokio::time::Instant::now() + self.timeout();
        let cmds: Vec<&Command> = batch.items.iter().map(|(c, _)| c).collect();
        let result = match postcard::to_allocvec(&cmds) {
            Ok(payload) => self.write_local(Command { system: BATCH.to_string(), payload }, deadline).await,
            Err(e) => Err(ConsensusError::Unknown(e.to_string())),
        };
        if !matches!(result, Err(ConsensusError::NoLeader { .. })) {
            return answer(batch.items, result);
        }
        let (mut own, mut forwarded) = (Vec::new(), Vec::new());
        for (item, f) in batch.items.into_iter().zip(batch.forwarded) {
            if f { forwarded.push(item) } else { own.push(item) }
        }
        answer(forwarded, result);
        if !own.is_empty() {
            self.propose_own(own).await;
        }
    }

    /// Propose this node's own commands as one entry and answer each. On the leader a single
    /// command goes as itself; anything else goes as a batch entry — from a follower even a
    /// single command, so the leader can add it to its own next batch
    /// ([`Consensus::write_forwarded`]).
    async fn propose_own(&self, mut batch: Vec<(Command, Waiter)>) {
        if batch.len() == 1
            && self.leads()
            && let Some((cmd, waiter)) = batch.pop()
        {
            let _ = waiter.send(self.propose(&cmd.system, cmd.payload).await);
            return;
        }
        let cmds: Vec<&Command> = batch.iter().map(|(c, _)| c).collect();
        let result = match postcard::to_allocvec(&cmds) {
            Ok(bytes) => self.propose(BATCH, bytes).await,
            Err(e) => Err(ConsensusError::Unknown(e.to_string())),
        };
        answer(batch, result);
    }

    /// A write a follower forwarded to this node. A batch joins this node's own queue as one
    /// group (never split, so its commands share one fate) when this node leads, and shares an
    /// entry with whatever else is proposed meanwhile; anything else is proposed as it came.
    pub(crate) async fn write_forwarded(
        &self,
        cmd: Command,
        deadline: tokio::time::Instant,
    ) -> Result<Vec<u8>, ConsensusError> {
        if cmd.system != BATCH || !self.leads() {
            return self.write_local(cmd, deadline).await;
        }
        let Ok(cmds) = postcard::from_bytes::<Vec<Command>>(&cmd.payload) else {
            return self.write_local(cmd, deadline).await;
        };
        let mut replies = Vec::with_capacity(cmds.len());
        let group: Vec<(Command, Waiter)> = cmds
            .into_iter()
            .map(|c| {
                let (tx, rx) = tokio::sync::oneshot::channel();
                replies.push(rx);
                (c, tx)
            })
            .collect();
        match self.inner.batcher.push_group(group, true) {
            Push::Alone(_group) => {
                // Nothing else queued: the batch goes as it came, from this task.
                let _slot = LoneSlot::new(&self.inner.batcher, || self.spawn_driver());
                return self.write_local(cmd, deadline).await;
            }
            Push::StartDriver => self.spawn_driver(),
            Push::Queued => {}
        }
        // One fate for the group: every reply, or the first error (which all of them share).
        let mut out = Vec::with_capacity(replies.len());
        for rx in replies {
            out.push(match rx.await.map_err(|_| ConsensusError::NotRunning)? {
                Ok(d) => Reply::Data(d),
                Err(ConsensusError::NoSuchSystem(s)) => Reply::NoSuchSystem(s),
                Err(e) => return Err(e),
            });
        }
        postcard::to_allocvec(&out).map_err(|e| ConsensusError::Unknown(e.to_string()))
    }

    pub(crate) async fn write_local(
        &self,
        cmd: Command,
        deadline: tokio::time::Instant,
    ) -> Result<Vec<u8>, ConsensusError> {
        let raft = self.raft()?;
        let resp = tokio::time::timeout_at(deadline, raft.client_write(cmd))
            .await
            .map_err(|_| ConsensusError::Unknown("the write did not commit in time".into()))?;
        match resp {
            Ok(r) => match r.data {
                Reply::Data(d) => Ok(d),
                Reply::NoSuchSystem(s) => Err(ConsensusError::NoSuchSystem(s)),
                Reply::None => Ok(Vec::new()),
            },
            Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => {
                Err(ConsensusError::NoLeader { leader_http: f.leader_node.map(|m| m.http_addr) })
            }
            Err(e) => Err(ConsensusError::Unknown(e.to_string())),
        }
    }

    async fn forward(
        &self,
        leader: NodeId,
        member: &Member,
        cmd: &Command,
        deadline: tokio::time::Instant,
    ) -> Result<Vec<u8>, ConsensusError> {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let r: Result<Result<Vec<u8>, WireError>, RpcError> =
            self.inner.transport.call(leader, &member.peer_addr, crate::peer::FORWARD, cmd, Some(left)).await;
        match r {
            Ok(Ok(d)) => Ok(d),
            Ok(Err(e)) => Err(e.into()),
            Err(RpcError::Unreachable { reason, .. }) => Err(ConsensusError::Unknown(format!(
                "forwarding to the leader (node {leader} at {}) failed: {reason}",
                member.http_addr
            ))),
            Err(e) => Err(ConsensusError::Unknown(e.to_string())),
        }
    }

    /// A read barrier when `consistency` asks for one (then local reads are linearizable).
    pub async fn barrier_for(&self, consistency: Consistency) -> Result<(), ConsensusError> {
        if consistency == Consistency::Linearizable {
            self.read_barrier().await?;
        }
        Ok(())
    }

    /// Read-index: returns once this node has applied every entry committed before the call,
    /// so reading local state afterwards is linearizable.
    pub async fn read_barrier(&self) -> Result<u64, ConsensusError> {
        let me = self.clone();
        let index = self.inner.reads.join(move || {
            let me = me.clone();
            async move { me.read_index_round().await }
        });
        let index = index.await?;
        let deadline = tokio::time::Instant::now() + self.timeout();
        let mut applied = self.applied();
        tokio::time::timeout_at(deadline, applied.wait_for(|a| *a >= index))
            .await
            .map_err(|_| ConsensusError::NoLeader { leader_http: None })?
            .map_err(|_| ConsensusError::NotRunning)?;
        Ok(index)
    }

    /// One read-index round: the leader's commit index, once it has confirmed it still leads.
    async fn read_index_round(&self) -> Result<u64, ConsensusError> {
        let deadline = tokio::time::Instant::now() + self.timeout();
        let (leader, member) = self.wait_leader(deadline).await?;
        if leader == self.node_id() {
            return self.read_index_local().await;
        }
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let r: Result<Result<u64, WireError>, RpcError> =
            self.inner.transport.call(leader, &member.peer_addr, crate::peer::READ_INDEX, &(), Some(left)).await;
        match r {
            Ok(Ok(i)) => Ok(i),
            Ok(Err(e)) => Err(e.into()),
            Err(e) => Err(ConsensusError::NoLeader { leader_http: Some(format!("{} ({e})", member.http_addr)) }),
        }
    }

    /// A read-index round on this node as leader, shared by every reader that arrives before
    /// it starts (this node's and followers').
    pub(crate) async fn read_index_local(&self) -> Result<u64, ConsensusError> {
        let me = self.clone();
        self.inner
            .local_reads
            .join(move || {
                let me = me.clone();
                async move {
                    let deadline = tokio::time::Instant::now() + me.timeout();
                    let raft = me.raft()?;
                    let r = tokio::time::timeout_at(deadline, raft.ensure_linearizable())
                        .await
                        .map_err(|_| ConsensusError::NoLeader { leader_http: None })?;
                    match r {
                        Ok(log_id) => Ok(log_id.map_or(0, |l| l.index)),
                        Err(e) => Err(ConsensusError::NoLeader { leader_http: Some(e.to_string()) }),
                    }
                }
            })
            .await
    }

    /// Run a membership change on the leader (forwarded there from any node).
    pub async fn admin(&self, op: AdminOp) -> Result<ClusterStatus, ConsensusError> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        let (leader, member) = self.wait_leader(deadline).await?;
        if leader == self.node_id() {
            self.admin_local(op).await?;
        } else {
            let r: Result<Result<(), WireError>, RpcError> = self
                .inner
                .transport
                .call(leader, &member.peer_addr, crate::peer::ADMIN, &op, Some(Duration::from_secs(60)))
                .await;
            match r {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return Err(e.into()),
                Err(e) => return Err(ConsensusError::Unknown(e.to_string())),
            }
        }
        self.status()
    }

    pub(crate) async fn admin_local(&self, op: AdminOp) -> Result<(), ConsensusError> {
        let raft = self.raft()?;
        let reject = |e: String| ConsensusError::Rejected(e);
        match op {
            AdminOp::Add { node_id, member, voter } => {
                if self.member(node_id).is_none() {
                    raft.add_learner(node_id, member, true).await.map_err(|e| reject(e.to_string()))?;
                }
                if voter {
                    self.change(ChangeMembers::AddVoterIds([node_id].into())).await?;
                }
            }
            AdminOp::Promote { node_id } => {
                if self.member(node_id).is_none() {
                    return Err(reject(format!("node {node_id} is not a member; add it first")));
                }
                self.change(ChangeMembers::AddVoterIds([node_id].into())).await?;
            }
            AdminOp::Remove { node_id } => {
                let m = raft.metrics().borrow().membership_config.clone();
                if m.voter_ids().any(|v| v == node_id) {
                    self.change(ChangeMembers::RemoveVoters([node_id].into())).await?;
                }
                if self.member(node_id).is_some() {
                    self.change(ChangeMembers::RemoveNodes([node_id].into())).await?;
                }
            }
            AdminOp::Transfer { node_id } => self.transfer_local(node_id).await?,
        }
        Ok(())
    }

    async fn change(&self, change: ChangeMembers<NodeId, Member>) -> Result<(), ConsensusError> {
        let raft = self.raft()?;
        raft.change_membership(change, false).await.map_err(|e| ConsensusError::Rejected(e.to_string()))?;
        Ok(())
    }

    /// openraft 0.9 has no leadership transfer: wait until the target has every entry, then
    /// ask it to campaign; its higher term makes this leader step down, and its log wins.
    async fn transfer_local(&self, target: NodeId) -> Result<(), ConsensusError> {
        let raft = self.raft()?;
        if target == self.node_id() {
            return Ok(());
        }
        let m = raft.metrics().borrow().membership_config.clone();
        if !m.voter_ids().any(|v| v == target) {
            return Err(ConsensusError::Rejected(format!("node {target} is not a voter")));
        }
        let member = self.member(target).ok_or_else(|| ConsensusError::Rejected(format!("node {target} unknown")))?;
        let deadline = tokio::time::Instant::now() + self.timeout();
        let mut rx = raft.metrics();
        loop {
            let caught_up = {
                let mm = rx.borrow();
                let last = mm.last_log_index;
                mm.replication.as_ref().and_then(|r| r.get(&target).cloned()).flatten().map(|l| Some(l.index))
                    == Some(last)
            };
            if caught_up {
                break;
            }
            if tokio::time::timeout_at(deadline, rx.changed()).await.is_err() {
                return Err(ConsensusError::Rejected(format!("node {target} did not catch up in time")));
            }
        }
        // A campaign can lose (a follower still hearing from this leader may refuse its vote
        // for a while), so ask again until the target leads or the deadline passes.
        let deadline = tokio::time::Instant::now() + Duration::from_millis(self.inner.config.request_timeout_ms * 3);
        let round = Duration::from_millis(self.inner.config.election_timeout_max_ms * 2);
        loop {
            let r: Result<Result<(), WireError>, RpcError> =
                self.inner.transport.call(target, &member.peer_addr, crate::peer::ELECT, &(), None).await;
            r.map_err(|e| ConsensusError::Unknown(e.to_string()))?.map_err(ConsensusError::from)?;
            let round_end = (tokio::time::Instant::now() + round).min(deadline);
            loop {
                if rx.borrow().current_leader == Some(target) {
                    return Ok(());
                }
                if tokio::time::timeout_at(round_end, rx.changed()).await.is_err() {
                    break;
                }
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(ConsensusError::Unknown(format!("node {target} did not take over in time")));
            }
        }
    }

    pub fn status(&self) -> Result<ClusterStatus, ConsensusError> {
        let raft = self.raft()?;
        let m = raft.metrics().borrow().clone();
        let voters: Vec<NodeId> = m.membership_config.voter_ids().collect();
        let matched: BTreeMap<NodeId, Option<u64>> = m
            .replication
            .as_ref()
            .map(|r| r.iter().map(|(id, l)| (*id, l.map(|l| l.index))).collect())
            .unwrap_or_default();
        let members = m
            .membership_config
            .nodes()
            .map(|(id, n)| MemberStatus {
                node_id: *id,
                peer_addr: n.peer_addr.clone(),
                http_addr: n.http_addr.clone(),
                voter: voters.contains(id),
                matched_index: matched.get(id).copied().flatten(),
            })
            .collect();
        let leader_http_addr = m.current_leader.and_then(|l| self.member(l)).map(|n| n.http_addr);
        Ok(ClusterStatus {
            node_id: self.node_id(),
            state: match m.state {
                ServerState::Leader => "leader",
                ServerState::Follower => "follower",
                ServerState::Candidate => "candidate",
                ServerState::Learner => "learner",
                ServerState::Shutdown => "shutdown",
            }
            .to_string(),
            term: m.current_term,
            leader_id: m.current_leader,
            leader_http_addr,
            last_log_index: m.last_log_index,
            applied_index: m.last_applied.map(|l| l.index),
            snapshot_index: m.snapshot.map(|l| l.index),
            members,
        })
    }
}

/// A `ConsensusError` as it crosses the transport.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) enum WireError {
    NoLeader(Option<String>),
    Unknown(String),
    NotRunning,
    Rejected(String),
    NoSuchSystem(String),
}

impl From<ConsensusError> for WireError {
    fn from(e: ConsensusError) -> Self {
        match e {
            ConsensusError::NoLeader { leader_http } => WireError::NoLeader(leader_http),
            ConsensusError::Unknown(s) => WireError::Unknown(s),
            ConsensusError::NotRunning => WireError::NotRunning,
            ConsensusError::Rejected(s) => WireError::Rejected(s),
            ConsensusError::NoSuchSystem(s) => WireError::NoSuchSystem(s),
        }
    }
}

impl From<WireError> for ConsensusError {
    fn from(e: WireError) -> Self {
        match e {
            WireError::NoLeader(leader_http) => ConsensusError::NoLeader { leader_http },
            WireError::Unknown(s) => ConsensusError::Unknown(s),
            WireError::NotRunning => ConsensusError::NotRunning,
            WireError::Rejected(s) => ConsensusError::Rejected(s),
            WireError::NoSuchSystem(s) => ConsensusError::NoSuchSystem(s),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_settings_are_refused_with_the_key_named() {
        assert!(ConsensusConfig::default().raft_config().is_ok());
        let e = ConsensusConfig { batches_in_flight: 0, ..Default::default() }.raft_config().unwrap_err();
        assert!(e.to_string().contains("batches_in_flight"), "{e}");
        let e = ConsensusConfig { batch_wait_us: 1_000_000, ..Default::default() }.raft_config().unwrap_err();
        assert!(e.to_string().contains("batch_wait_us"), "{e}");
        let e = ConsensusConfig { snapshot_every_entries: 0, ..Default::default() }.raft_config().unwrap_err();
        assert!(e.to_string().contains("snapshot_every_entries"), "{e}");
        let e = ConsensusConfig { heartbeat_ms: 300, ..Default::default() }.raft_config().unwrap_err();
        assert!(e.to_string().contains("election_timeout_min_ms"), "{e}");
    }
}
