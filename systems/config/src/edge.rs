//! Edge replicas: a region's read replica outside the Raft group, fed by a push stream.
//!
//! A Raft learner learns that an entry is committed only from the next message of its
//! replication stream, so a region `d` ms away sees a change about `2d` after commit (measured:
//! p99 550 ms over a 10–150 ms matrix). An edge instead subscribes to a cluster member, which
//! pushes every config command it applies, as soon as it applies it, over the node-to-node
//! transport: one message, commit + `d`.
//!
//! - The member keeps a registry of its edges; its pusher follows the engine's change feed and
//!   sends `Push { prev, index, payload }` for every config entry, where `prev` is the index of
//!   the config entry before it, so the edge can tell a gap from a duplicate.
//! - The edge applies pushes in order to its own copy of the model (the same deterministic state
//!   machine, so the same versions and hashes). Out-of-order pushes wait in a buffer; a gap that
//!   does not close within a second (a lost push, a restart) is repaired by re-subscribing with
//!   a full snapshot. It re-subscribes every second anyway, so a member that restarted learns of
//!   it again.
//! - An edge serves reads and watches from its copy and refuses writes with the member to send
//!   them to. If its member stops answering it follows the next member it knows of (it learns
//!   the members from `/v1/cluster` each time it re-subscribes).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use basalt_consensus::{Consensus, StateMachine};
use basalt_runtime::node::CancellationToken;
use basalt_runtime::transport::Transport;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::service::ConfigSm;

/// On the edge's peer listener (`serve_to_peers`): only nodes push, never clients.
pub const PUSH_PATH: &str = "/config/edge/push";

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Push {
    pub prev: u64,
    pub index: u64,
    pub payload: Vec<u8>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Subscribe {
    pub node_id: u64,
    /// Where the regions view reads the edge's state.
    pub http_addr: String,
    /// Where pushes go (the edge's peer listener).
    pub peer_addr: String,
    pub snapshot: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Subscribed {
    pub index: u64,
    /// The model's snapshot (JSON text) at `index`, when asked for.
    pub snapshot: Option<String>,
}

/// The member side: which edges to push to, by node id: (HTTP address, peer address).
#[derive(Default)]
pub struct EdgeRegistry {
    edges: Mutex<BTreeMap<u64, (String, String)>>,
}

impl EdgeRegistry {
    pub fn subscribe(&self, sm: &ConfigSm, s: Subscribe) -> Subscribed {
        self.edges.lock().unwrap_or_else(|e| e.into_inner()).insert(s.node_id, (s.http_addr, s.peer_addr));
        // Registered first, then the snapshot: every entry after it will be pushed.
        let (index, snap) = sm.snapshot_at();
        Subscribed { index, snapshot: s.snapshot.then(|| String::from_utf8_lossy(&snap).into_owned()) }
    }

    /// The edges' HTTP addresses.
    pub fn edges(&self) -> BTreeMap<u64, String> {
        self.edges.lock().unwrap_or_else(|e| e.into_inner()).iter().map(|(id, (h, _))| (*id, h.clone())).collect()
    }

    /// The edges' peer addresses (where pushes go).
    fn peers(&self) -> BTreeMap<u64, String> {
        self.edges.lock().unwrap_or_else(|e| e.into_inner()).iter().map(|(id, (_, p))| (*id, p.clone())).collect()
    }
}

/// Follow the change feed and push every config entry to every registered edge.
pub async fn push_loop(
    consensus: Arc<Consensus>,
    sm: Arc<ConfigSm>,
    registry: Arc<EdgeRegistry>,
    transport: Transport,
    stop: CancellationToken,
) {
    let mut feed = consensus.feed();
    let mut prev = sm.last_index();
    loop {
        let applied = tokio::select! {
            _ = stop.cancelled() => return,
            r = feed.recv() => r,
        };
        let applied = match applied {
            Ok(a) => a,
            // Too far behind: the edges will see a gap and resync from a snapshot.
            Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => continue,
            Err(_) => return,
        };
        let (Some(system), Some(payload)) = (applied.system.as_deref(), applied.payload) else { continue };
        if system != crate::service::SYSTEM || applied.index <= prev {
            continue;
        }
        let push = Arc::new(Push { prev, index: applied.index, payload: payload.to_vec() });
        prev = applied.index;
        for (id, addr) in registry.peers() {
            let (t, push) = (transport.clone(), push.clone());
            // One task per push: a slow edge never delays another, nor the next push.
            tokio::spawn(async move {
                let _: Result<(), _> = t.call(id, &addr, PUSH_PATH, &*push, Some(Duration::from_secs(5))).await;
            });
        }
    }
}

/// The edge side.
pub struct Edge {
    pub sm: Arc<ConfigSm>,
    pub applied: watch::Sender<u64>,
    buffer: Mutex<(BTreeMap<u64, Push>, Option<Instant>)>,
    /// The member followed now (starts as `edge_of`; moves when that member stops answering).
    target: Mutex<String>,
    /// The cluster's members' HTTP addresses, as last seen: where to go if the target dies.
    members: Mutex<Vec<String>>,
    node_id: u64,
    http_addr: String,
    peer_addr: String,
}

impl Edge {
    pub fn new(sm: Arc<ConfigSm>, edge_of: String, node_id: u64, http_addr: String, peer_addr: String) -> Self {
        let (applied, _) = watch::channel(0);
        Self {
            sm,
            applied,
            buffer: Mutex::default(),
            members: Mutex::new(vec![edge_of.clone()]),
            target: Mutex::new(edge_of),
            node_id,
            http_addr,
            peer_addr,
        }
    }

    /// The member this edge follows (where writes should go).
    pub fn target(&self) -> String {
        self.target.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Learn the members from the target, so there is somewhere to go if it dies.
    async fn refresh_members(&self, http: &basalt_runtime::reqwest::Client) {
        let Ok(r) = http.get(format!("http://{}/v1/cluster", self.target())).send().await else { return };
        let Ok(v) = r.json::<serde_json::Value>().await else { return };
        let addrs: Vec<String> = v["members"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|m| m["http_addr"].as_str().map(str::to_string))
            .collect();
        if !addrs.is_empty() {
            *self.members.lock().unwrap_or_else(|e| e.into_inner()) = addrs;
        }
    }

    /// Move to the next known member after the current target.
    fn fail_over(&self) {
        let members = self.members.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let mut target = self.target.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(next) = members.iter().skip_while(|m| **m != *target).nth(1).or_else(|| members.first()) {
            tracing::warn!(from = %target, to = %next, "config edge: member unreachable; following another");
            *target = next.clone();
        }
    }

    pub fn receive(&self, push: Push) {
        let mut b = self.buffer.lock().unwrap_or_else(|e| e.into_inner());
        if push.index > self.sm.last_index() {
            b.0.insert(push.index, push);
        }
        self.drain(&mut b);
    }

    fn drain(&self, b: &mut (BTreeMap<u64, Push>, Option<Instant>)) {
        while let Some((&index, p)) = b.0.iter().next() {
            let last = self.sm.last_index();
            if index <= last {
                b.0.remove(&index);
            } else if p.prev <= last {
                let p = b.0.remove(&index).expect("present");
                self.sm.apply(p.index, &p.payload);
                self.applied.send_replace(p.index);
            } else {
                break;
            }
        }
        b.1 = if b.0.is_empty() { None } else { b.1.or(Some(Instant::now())) };
    }

    fn stuck(&self) -> bool {
        let b = self.buffer.lock().unwrap_or_else(|e| e.into_inner());
        b.1.is_some_and(|t| t.elapsed() > Duration::from_secs(1))
    }

    async fn subscribe(&self, http: &basalt_runtime::reqwest::Client, snapshot: bool) -> anyhow::Result<()> {
        let body = Subscribe {
            node_id: self.node_id,
            http_addr: self.http_addr.clone(),
            peer_addr: self.peer_addr.clone(),
            snapshot,
        };
        let r = http.post(format!("http://{}/v1/config/edge/subscribe", self.target())).json(&body).send().await?;
        anyhow::ensure!(r.status().is_success(), "subscribe answered {}", r.status());
        let s: Subscribed = r.json().await?;
        if let Some(snap) = s.snapshot {
            self.install(s.index, snap.as_bytes())?;
        }
        Ok(())
    }

    /// Replace this edge's state with a snapshot its member took at `index`, unless the edge
    /// is already past it. Answers whether it was taken.
    pub fn install(&self, index: u64, snapshot: &[u8]) -> anyhow::Result<bool> {
        let mut b = self.buffer.lock().unwrap_or_else(|e| e.into_inner());
        if index < self.sm.last_index() {
            return Ok(false);
        }
        self.sm.restore_at(index, snapshot)?;
        self.applied.send_replace(index);
        self.drain(&mut b);
        Ok(true)
    }

    /// Subscribe (with a snapshot) until it works, then keep the subscription alive and
    /// resync whenever a gap does not close. A member that stops answering is replaced by the
    /// next member this edge knows of (a new member's pushes start with a snapshot).
    pub async fn run(self: Arc<Self>, stop: CancellationToken) {
        let http =
            basalt_runtime::reqwest::Client::builder().timeout(Duration::from_secs(2)).build().unwrap_or_default();
        let mut synced = false;
        loop {
            let want_snapshot = !synced || self.stuck();
            match self.subscribe(&http, want_snapshot).await {
                Ok(()) => {
                    synced = true;
                    self.refresh_members(&http).await;
                }
                Err(e) => {
                    tracing::warn!(member = %self.target(), error = %e, "config edge: subscribing failed");
                    self.fail_over();
                    synced = false;
                }
            }
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        }
    }
}
