//! The consensus engine as the node sees it: prepared before systems (so they can register
//! state machines), started after them.

use std::sync::Arc;
use std::time::Duration;

use basalt_runtime::engine::{BoxFuture, Engine, EngineContext, EngineRoutes};
use prometheus_client::metrics::gauge::Gauge;

use crate::consensus::{Consensus, ConsensusConfig};
use crate::log_store::Durability;
use crate::log_store::LogStore;
use crate::network::Network;
use crate::state_machine::SmStore;
use crate::types::{Member, Raft};

#[derive(Default)]
pub struct ConsensusEngine {
    handle: Option<Consensus>,
    log: Option<LogStore>,
}

impl ConsensusEngine {
    pub fn new() -> Self {
        Self::default()
    }
}

impl Engine for ConsensusEngine {
    fn name(&self) -> &'static str {
        "consensus"
    }

    fn prepare(&mut self, ctx: &mut EngineContext<'_>, config: toml::Table) -> anyhow::Result<()> {
        let config: ConsensusConfig = toml::Value::Table(config).try_into()?;
        config.raft_config()?;
        let log = LogStore::new(ctx.store.namespace("raft_log")?, Some(ctx.identity.node_id));
        let sm = SmStore::new(ctx.store.namespace("raft_sm")?, log.durability());
        self.log = Some(log);
        let c = Consensus::new(ctx.identity.clone(), config, sm, ctx.transport.clone());
        ctx.metrics.register(
            "batch_queued",
            "Commands waiting in this node's batch queue for a Raft entry (on the leader, with those followers forwarded)",
            c.inner.batcher.queued(),
        );
        ctx.extensions.insert(Arc::new(c.clone()));
        self.handle = Some(c);
        Ok(())
    }

    fn start<'a>(&'a mut self, ctx: &'a mut EngineContext<'_>) -> BoxFuture<'a, anyhow::Result<EngineRoutes>> {
        Box::pin(async move {
            let c = self.handle.clone().ok_or_else(|| anyhow::anyhow!("consensus engine not prepared"))?;
            let log = self.log.take().ok_or_else(|| anyhow::anyhow!("consensus engine not prepared"))?;
            let durability = log.durability();
            let restored = c.inner.sm.load_snapshot()?;
            let id = &ctx.identity;
            let raft = Raft::new(
                id.node_id,
                Arc::new(c.inner.config.raft_config()?),
                Network { transport: ctx.transport.clone(), durability: durability.clone() },
                log,
                c.inner.sm.clone(),
            )
            .await?;
            c.inner.raft.set(raft.clone()).map_err(|_| anyhow::anyhow!("consensus engine started twice"))?;
            let me = Member { peer_addr: id.peer_addr.to_string(), http_addr: id.http_addr.to_string() };
            let initialized = raft.is_initialized().await?;
            if !c.inner.config.stands_for_election {
                // Checked before anything is written: a bootstrapping node is the only voter.
                let voters: Vec<u64> = if initialized {
                    raft.with_raft_state(|st| st.membership_state.effective().voter_ids().collect()).await?
                } else if id.join.is_none() {
                    vec![id.node_id]
                } else {
                    Vec::new()
                };
                anyhow::ensure!(
                    voters != [id.node_id],
                    "engines.consensus.stands_for_election = false on node {}, the cluster's only voter: it would \
                     never elect itself after a restart, and the cluster would have no leader; leave it true on \
                     the node that bootstraps (or is the last voter), and set it false on members that join",
                    id.node_id
                );
            }
            if !initialized {
                match &id.join {
                    None => {
                        raft.initialize([(id.node_id, me)].into_iter().collect::<std::collections::BTreeMap<_, _>>())
                            .await?;
                        tracing::info!(node_id = id.node_id, "consensus: initialized a new single-node cluster");
                    }
                    Some(addr) => {
                        let (addr, node_id, stop) = (addr.clone(), id.node_id, ctx.shutdown.clone());
                        let voter = c.inner.config.join_as_voter;
                        ctx.tasks.spawn("consensus/join".into(), async move {
                            tokio::select! {
                                _ = stop.cancelled() => {},
                                _ = join(addr, node_id, me, voter) => {},
                            }
                        });
                    }
                }
            } else {
                tracing::info!(node_id = id.node_id, snapshot_index = ?restored, "consensus: restarted; replaying the committed log");
            }
            spawn_metrics(ctx, &raft);
            spawn_commit_catch_up(ctx, &raft, durability);
            Ok(EngineRoutes { peer: crate::peer::routes(c.clone()), public: crate::api::routes(c) })
        })
    }

    fn stop(&mut self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            if let Some(raft) = self.handle.as_ref().and_then(|c| c.inner.raft.get().cloned())
                && let Err(e) = raft.shutdown().await
            {
                tracing::warn!(error = %e, "consensus: shutdown failed");
            }
        })
    }
}

/// Ask the cluster at `addr` (HTTP) to add this node (as a voter or a learner), until it
/// answers yes.
async fn join(addr: String, node_id: u64, me: Member, voter: bool) {
    let client = reqwest_client();
    let body = serde_json::json!({
        "node_id": node_id, "peer_addr": me.peer_addr, "http_addr": me.http_addr, "voter": voter,
    });
    let mut backoff = Duration::from_millis(100);
    loop {
        match client.post(format!("http://{addr}/v1/cluster/members")).json(&body).send().await {
            Ok(r) if r.status().is_success() => {
                tracing::info!(%addr, "consensus: joined the cluster");
                return;
            }
            Ok(r) => tracing::warn!(%addr, status = %r.status(), "consensus: join refused; retrying"),
            Err(e) => tracing::warn!(%addr, error = %e, "consensus: join failed; retrying"),
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(2));
    }
}

fn reqwest_client() -> basalt_runtime::reqwest::Client {
    basalt_runtime::reqwest::Client::new()
}

/// When followers were told a commit index short of the leader's (its own copy was still being
/// synced), tell them the rest as soon as the sync ends instead of at the next heartbeat.
fn spawn_commit_catch_up(ctx: &mut EngineContext<'_>, raft: &Raft, durability: Durability) {
    let (raft, stop) = (raft.clone(), ctx.shutdown.clone());
    let mut rx = durability.subscribe();
    ctx.tasks.spawn("consensus/commit-catch-up".into(), async move {
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                r = rx.changed() => if r.is_err() { return },
            }
            if durability.take_held_back() && raft.trigger().heartbeat().await.is_err() {
                return;
            }
        }
    });
}

fn spawn_metrics(ctx: &mut EngineContext<'_>, raft: &Raft) {
    let term = Gauge::<i64>::default();
    let applied = Gauge::<i64>::default();
    let last_log = Gauge::<i64>::default();
    let is_leader = Gauge::<i64>::default();
    ctx.metrics.register("term", "Current Raft term", term.clone());
    ctx.metrics.register("applied_index", "Last log index applied to the state machines", applied.clone());
    ctx.metrics.register("last_log_index", "Last log index in this node's log", last_log.clone());
    ctx.metrics.register("is_leader", "1 while this node is the leader", is_leader.clone());
    let mut rx = raft.metrics();
    let stop = ctx.shutdown.clone();
    ctx.tasks.spawn("consensus/metrics".into(), async move {
        loop {
            {
                let m = rx.borrow_and_update();
                term.set(m.current_term as i64);
                applied.set(m.last_applied.map_or(0, |l| l.index as i64));
                last_log.set(m.last_log_index.map_or(0, |i| i as i64));
                is_leader.set(i64::from(m.state == openraft::ServerState::Leader));
            }
            tokio::select! {
                _ = stop.cancelled() => return,
                r = rx.changed() => if r.is_err() { return },
            }
        }
    });
}
