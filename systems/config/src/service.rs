//! S03 on the consensus engine: the model runs as a replicated state machine; writes are
//! proposed (linearizable, from any node), reads are linearizable by default (read-index) or
//! local (`consistency=stale`), and watches wake on every applied entry.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::http::StatusCode;
use basalt_consensus::{Consensus, StateMachine};
use basalt_runtime::ApiError;
use serde::{Deserialize, Serialize};

use crate::model::rollout::RolloutView;
use crate::model::{Change, Command, ConfigError, GuardCommand, Model};

pub const SYSTEM: &str = "config";

pub use basalt_runtime::http::ErrorReply;

/// A model error as it travels in a Raft reply.
pub fn error_reply(e: &ConfigError) -> ErrorReply {
    ErrorReply { status: e.http_status(), code: e.code().to_string(), message: e.to_string(), field: None }
}

pub fn api_err(e: ConfigError) -> ApiError {
    error_reply(&e).into()
}

/// A config entry in the log: a change, or a rollout decision. Untagged, so a log written
/// before rollouts existed reads the same.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Envelope {
    Config(Command),
    Guard(GuardCommand),
}

/// The replicated state machine: the model behind a lock that is never held across an await.
#[derive(Default)]
pub struct ConfigSm {
    model: RwLock<Model>,
    /// The log index of the last config entry applied (written under the model's write lock).
    last_index: std::sync::atomic::AtomicU64,
    /// A repair waiting for the log to reach its index: (index, the model at that index).
    pending: std::sync::Mutex<Option<(u64, Model)>>,
}

/// What became of a snapshot offered to repair this replica.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Install {
    /// Taken at this replica's own index: it is the state now.
    Now,
    /// Taken ahead of this replica: it replaces the state when the log reaches that index.
    Pending,
    /// Taken behind this replica: useless; ask again.
    Behind,
}

impl ConfigSm {
    pub fn read<T>(&self, f: impl FnOnce(&Model) -> T) -> T {
        let guard = self.model.read().unwrap_or_else(|e| e.into_inner());
        f(&guard)
    }

    pub fn last_index(&self) -> u64 {
        self.last_index.load(std::sync::atomic::Ordering::Acquire)
    }

    /// The snapshot and the index it reflects, as one consistent cut.
    pub fn snapshot_at(&self) -> (u64, Vec<u8>) {
        let guard = self.model.read().unwrap_or_else(|e| e.into_inner());
        (self.last_index(), guard.snapshot())
    }

    /// Repair a member's state with a snapshot another member took at config index `index`.
    /// The state must stay a function of the log, so it is swapped in exactly at `index`.
    pub fn install_at(&self, index: u64, bytes: &[u8]) -> anyhow::Result<Install> {
        let restored = Model::restore(bytes).map_err(|e| anyhow::anyhow!("{e}"))?;
        let mut guard = self.model.write().unwrap_or_else(|e| e.into_inner());
        let last = self.last_index();
        Ok(if index == last {
            *guard = restored;
            Install::Now
        } else if index > last {
            *self.pending.lock().unwrap_or_else(|e| e.into_inner()) = Some((index, restored));
            Install::Pending
        } else {
            Install::Behind
        })
    }

    /// Fault injection: see [`Model::corrupt`].
    pub fn corrupt(&self, ns: &str, key: &str, value: serde_json::Value) -> Result<(), ConfigError> {
        self.model.write().unwrap_or_else(|e| e.into_inner()).corrupt(ns, key, value)
    }

    /// Replace the state with a snapshot taken at `index` (an edge resyncing).
    pub fn restore_at(&self, index: u64, bytes: &[u8]) -> anyhow::Result<()> {
        let restored = Model::restore(bytes).map_err(|e| anyhow::anyhow!("{e}"))?;
        let mut guard = self.model.write().unwrap_or_else(|e| e.into_inner());
        *guard = restored;
        self.last_index.store(index, std::sync::atomic::Ordering::Release);
        Ok(())
    }
}

impl StateMachine for ConfigSm {
    fn apply(&self, index: u64, command: &[u8]) -> Vec<u8> {
        let mut model = self.model.write().unwrap_or_else(|e| e.into_inner());
        self.last_index.store(index, std::sync::atomic::Ordering::Release);
        let reply = match serde_json::from_slice::<Envelope>(command) {
            Ok(Envelope::Config(cmd)) => serde_json::to_vec(&model.apply(cmd).map_err(|e| error_reply(&e))),
            Ok(Envelope::Guard(cmd)) => serde_json::to_vec(&model.guard(cmd).map_err(|e| error_reply(&e))),
            Err(e) => serde_json::to_vec(&Err::<(), _>(ErrorReply {
                status: 400,
                code: "bad_command".into(),
                message: e.to_string(),
                field: None,
            })),
        };
        // A repair taken at this index replaces what this replica computed for it.
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        match pending.take() {
            Some((at, repaired)) if at == index => *model = repaired,
            Some((at, repaired)) if at > index => *pending = Some((at, repaired)),
            _ => {}
        }
        drop(pending);
        drop(model);
        reply.unwrap_or_default()
    }

    fn snapshot(&self) -> Vec<u8> {
        self.read(Model::snapshot)
    }

    fn restore(&self, snapshot: &[u8]) -> anyhow::Result<()> {
        let restored = Model::restore(snapshot).map_err(|e| anyhow::anyhow!("{e}"))?;
        *self.model.write().unwrap_or_else(|e| e.into_inner()) = restored;
        Ok(())
    }
}

pub use basalt_consensus::Consistency;

/// Where a node's config comes from: it is a member of the Raft group, or an edge replica.
pub enum Backend {
    Cluster { consensus: Arc<Consensus>, edges: Arc<crate::edge::EdgeRegistry> },
    Edge(Arc<crate::edge::Edge>),
}

pub struct ConfigService {
    pub sm: Arc<ConfigSm>,
    pub backend: Backend,
    pub region: String,
    pub node_id: u64,
    pub repairs: crate::repair::RepairLog,
    /// `POST /v1/config/local/corrupt` works only on a node started with fault injection.
    pub fault_injection: bool,
    /// The deliberate bug `systems.config.unsafe_local_reads` (only with fault injection).
    pub unsafe_local_reads: bool,
}

/// What one replica holds, as `GET /v1/config/local` reports it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LocalView {
    pub node_id: u64,
    pub region: String,
    pub applied_index: u64,
    pub namespaces: Vec<NamespaceVersion>,
    /// Divergence repairs this replica made since it started, and the last one.
    #[serde(default)]
    pub repairs: u64,
    #[serde(default)]
    pub last_repair: Option<crate::repair::RepairRecord>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NamespaceVersion {
    pub name: String,
    pub version: u64,
    pub content_hash: String,
}

impl ConfigService {
    /// Validate locally (to reject early), then propose; the state machine validates again at
    /// apply, which is what decides.
    pub async fn write(&self, cmd: Command) -> Result<Change, ApiError> {
        self.sm.read(|m| m.validate(&cmd)).map_err(api_err)?;
        self.propose(&Envelope::Config(cmd)).await
    }

    /// A rollout decision or a health report (validated when applied).
    pub async fn guard(&self, cmd: GuardCommand) -> Result<Vec<RolloutView>, ApiError> {
        self.propose(&Envelope::Guard(cmd)).await
    }

    async fn propose<T: serde::de::DeserializeOwned>(&self, entry: &Envelope) -> Result<T, ApiError> {
        let consensus = match &self.backend {
            Backend::Cluster { consensus, .. } => consensus,
            Backend::Edge(e) => {
                return Err(ApiError::new(
                    StatusCode::FORBIDDEN,
                    "read_only_replica",
                    format!("this node is an edge replica of region `{}`; send writes to {}", self.region, e.target()),
                ));
            }
        };
        let bytes = serde_json::to_vec(entry).map_err(|e| ApiError::internal(e.to_string()))?;
        let reply = consensus.propose(SYSTEM, bytes).await?;
        let r: Result<T, ErrorReply> = serde_json::from_slice(&reply)
            .map_err(|e| ApiError::internal(format!("bad reply from the state machine: {e}")))?;
        r.map_err(ApiError::from)
    }

    pub async fn read<T>(
        &self,
        consistency: Consistency,
        f: impl FnOnce(&Model) -> Result<T, ConfigError>,
    ) -> Result<T, ApiError> {
        // An edge serves its own copy: that is what a region's replica is for.
        if let (Consistency::Linearizable, Backend::Cluster { consensus, .. }) = (consistency, &self.backend)
            && !self.unsafe_local_reads
        {
            consensus.read_barrier().await?;
        }
        self.sm.read(f).map_err(api_err)
    }

    pub fn local_view(&self) -> LocalView {
        let namespaces = self.sm.read(|m| {
            m.namespaces()
                .into_iter()
                .map(|i| NamespaceVersion { name: i.name, version: i.version, content_hash: i.content_hash })
                .collect()
        });
        LocalView {
            node_id: self.node_id,
            region: self.region.clone(),
            applied_index: self.sm.last_index(),
            namespaces,
            repairs: self.repairs.count(),
            last_repair: self.repairs.last(),
        }
    }

    /// This replica's snapshot once it has applied config index `min_index` (waiting up to
    /// `wait`), so a replica repairing from it gets a state it can install.
    pub async fn snapshot_after(&self, min_index: u64, wait: Duration) -> Result<(u64, Vec<u8>), ApiError> {
        let deadline = tokio::time::Instant::now() + wait;
        let mut applied = self.applied_watch();
        loop {
            applied.borrow_and_update();
            let (index, snap) = self.sm.snapshot_at();
            if index >= min_index {
                return Ok((index, snap));
            }
            match tokio::time::timeout_at(deadline, applied.changed()).await {
                Ok(Ok(())) => {}
                _ => {
                    return Err(ApiError::unavailable(
                        "behind",
                        format!("this replica is at config index {index}, not yet {min_index}"),
                    ));
                }
            }
        }
    }

    fn applied_watch(&self) -> tokio::sync::watch::Receiver<u64> {
        match &self.backend {
            Backend::Cluster { consensus, .. } => consensus.applied(),
            Backend::Edge(e) => e.applied.subscribe(),
        }
    }

    /// Every member's view, compared: a replica is `in_sync`, `lagging` (some namespace behind
    /// the newest version any replica has), `divergent` (the same version with a different
    /// content hash — never expected under Raft, reported loudly), or `unreachable`. A lagging
    /// replica needs no action: the leader keeps sending it the log (or a snapshot).
    pub async fn regions(&self) -> Result<serde_json::Value, ApiError> {
        let (consensus, edges) = match &self.backend {
            Backend::Cluster { consensus, edges } => (consensus, edges),
            Backend::Edge(e) => {
                return Err(ApiError::new(
                    StatusCode::MISDIRECTED_REQUEST,
                    "ask_a_member",
                    format!("an edge replica has no view of the others; ask {}", e.target()),
                ));
            }
        };
        let status = consensus.status()?;
        let mut targets: Vec<(u64, bool, String)> =
            status.members.iter().map(|m| (m.node_id, m.voter, m.http_addr.clone())).collect();
        targets.extend(edges.edges().into_iter().map(|(id, addr)| (id, false, addr)));
        let client = basalt_runtime::reqwest::Client::builder()
            .timeout(Duration::from_secs(2))
            .build()
            .map_err(|e| ApiError::internal(e.to_string()))?;
        let mut views = Vec::new();
        for (node_id, voter, http_addr) in targets {
            let view = if node_id == self.node_id {
                Ok(self.local_view())
            } else {
                match client.get(format!("http://{http_addr}/v1/config/local")).send().await {
                    Ok(r) if r.status().is_success() => r.json::<LocalView>().await.map_err(|e| e.to_string()),
                    Ok(r) => Err(format!("answered {}", r.status())),
                    Err(e) => Err(e.to_string()),
                }
            };
            views.push((node_id, voter, view));
        }
        let mut newest: std::collections::BTreeMap<String, (u64, String)> = Default::default();
        for (_, _, v) in &views {
            for ns in v.iter().flat_map(|v| &v.namespaces) {
                let e = newest.entry(ns.name.clone()).or_insert((0, String::new()));
                if ns.version > e.0 {
                    *e = (ns.version, ns.content_hash.clone());
                }
            }
        }
        let replicas: Vec<serde_json::Value> = views
            .into_iter()
            .map(|(node_id, voter, v)| match v {
                Err(e) => serde_json::json!({"node_id": node_id, "voter": voter, "state": "unreachable", "error": e}),
                Ok(v) => {
                    let mut state = "in_sync";
                    let mut behind = Vec::new();
                    for (name, (version, hash)) in &newest {
                        match v.namespaces.iter().find(|n| &n.name == name) {
                            Some(n) if n.version == *version && &n.content_hash != hash => state = "divergent",
                            Some(n) if n.version == *version => {}
                            other => {
                                if state != "divergent" {
                                    state = "lagging";
                                }
                                behind.push(serde_json::json!({"namespace": name, "version": other.map_or(0, |n| n.version), "newest": version}));
                            }
                        }
                    }
                    serde_json::json!({"node_id": node_id, "voter": voter, "region": v.region, "state": state,
                        "applied_index": v.applied_index, "namespaces": v.namespaces, "behind": behind})
                }
            })
            .collect();
        Ok(serde_json::json!({ "newest": newest, "replicas": replicas }))
    }

    /// Changes to `ns` after version `since`, waiting up to `wait` for the first one.
    pub async fn changes_after(
        &self,
        ns: &str,
        since: u64,
        limit: usize,
        wait: Duration,
    ) -> Result<Vec<Change>, ApiError> {
        let deadline = tokio::time::Instant::now() + wait;
        let mut applied = self.applied_watch();
        loop {
            applied.borrow_and_update();
            let changes = self.sm.read(|m| m.history_for(ns, since, limit, &self.region)).map_err(api_err)?;
            if !changes.is_empty() {
                return Ok(changes);
            }
            match tokio::time::timeout_at(deadline, applied.changed()).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => return Err(ApiError::unavailable("shutting_down", "the node is stopping")),
                Err(_) => return Ok(Vec::new()),
            }
        }
    }
}

impl ConfigService {
    /// On the leader, promote every rollout whose bake time has passed with evidence. (Rolling
    /// back needs no driver: the health report that breaches the limit does it as it is applied.)
    pub async fn rollout_driver(self: Arc<Self>, stop: basalt_runtime::node::CancellationToken) {
        let Backend::Cluster { consensus, .. } = &self.backend else { return };
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(Duration::from_millis(100)) => {}
            }
            if !consensus.status().is_ok_and(|s| s.state == "leader") {
                continue;
            }
            let now = crate::now_ms();
            for (namespace, version) in self.sm.read(|m| m.due_rollouts(now)) {
                let cmd = GuardCommand::Promote {
                    namespace: namespace.clone(),
                    version: Some(version),
                    force: false,
                    author: "basalt-guard".into(),
                    at_ms: now,
                };
                match self.guard(cmd).await {
                    Ok(_) => tracing::info!(%namespace, version, "config rollout promoted"),
                    Err(e) => tracing::debug!(%namespace, version, error = %e.message, "config rollout not promoted"),
                }
            }
        }
    }
}
