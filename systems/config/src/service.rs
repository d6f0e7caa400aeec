//! S03 on the consensus engine: the model runs as a replicated state machine; writes are
//! proposed (linearizable, from any node), reads are linearizable by default (read-index) or
//! local (`consistency=stale`), and watches wake on every applied entry.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::http::StatusCode;
use basalt_consensus::{Consensus, StateMachine};
use basalt_runtime::ApiError;
use serde::{Deserialize, Serialize};

use crate::model::{Change, Command, ConfigError, Model};

pub const SYSTEM: &str = "config";

/// An error as it travels in a Raft reply.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ErrorReply {
    pub status: u16,
    pub code: String,
    pub message: String,
}

impl From<&ConfigError> for ErrorReply {
    fn from(e: &ConfigError) -> Self {
        Self { status: e.http_status(), code: e.code().to_string(), message: e.to_string() }
    }
}

impl From<ErrorReply> for ApiError {
    fn from(e: ErrorReply) -> Self {
        ApiError::new(StatusCode::from_u16(e.status).unwrap_or(StatusCode::BAD_REQUEST), e.code, e.message)
    }
}

pub fn api_err(e: ConfigError) -> ApiError {
    ErrorReply::from(&e).into()
}

/// The replicated state machine: the model behind a lock that is never held across an await.
#[derive(Default)]
pub struct ConfigSm {
    model: RwLock<Model>,
}

impl ConfigSm {
    pub fn read<T>(&self, f: impl FnOnce(&Model) -> T) -> T {
        let guard = self.model.read().unwrap_or_else(|e| e.into_inner());
        f(&guard)
    }
}

impl StateMachine for ConfigSm {
    fn apply(&self, _index: u64, command: &[u8]) -> Vec<u8> {
        let reply: Result<Change, ErrorReply> = match serde_json::from_slice::<Command>(command) {
            Ok(cmd) => {
                let mut model = self.model.write().unwrap_or_else(|e| e.into_inner());
                model.apply(cmd).map_err(|e| ErrorReply::from(&e))
            }
            Err(e) => Err(ErrorReply { status: 400, code: "bad_command".into(), message: e.to_string() }),
        };
        serde_json::to_vec(&reply).unwrap_or_default()
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

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Consistency {
    /// Read-index through the leader: sees every write acknowledged before the read.
    #[default]
    Linearizable,
    /// This node's applied state, possibly behind; never a write that was not committed.
    Stale,
}

pub struct ConfigService {
    pub sm: Arc<ConfigSm>,
    pub consensus: Arc<Consensus>,
    pub region: String,
}

/// What one replica holds, as `GET /v1/config/local` reports it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LocalView {
    pub node_id: u64,
    pub region: String,
    pub applied_index: u64,
    pub namespaces: Vec<NamespaceVersion>,
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
        let bytes = serde_json::to_vec(&cmd).map_err(|e| ApiError::internal(e.to_string()))?;
        let reply = self.consensus.propose(SYSTEM, bytes).await?;
        let r: Result<Change, ErrorReply> = serde_json::from_slice(&reply)
            .map_err(|e| ApiError::internal(format!("bad reply from the state machine: {e}")))?;
        r.map_err(ApiError::from)
    }

    pub async fn read<T>(
        &self,
        consistency: Consistency,
        f: impl FnOnce(&Model) -> Result<T, ConfigError>,
    ) -> Result<T, ApiError> {
        if consistency == Consistency::Linearizable {
            self.consensus.read_barrier().await?;
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
            node_id: self.consensus.node_id(),
            region: self.region.clone(),
            applied_index: *self.consensus.applied().borrow(),
            namespaces,
        }
    }

    /// Every member's view, compared: a replica is `in_sync`, `lagging` (some namespace behind
    /// the newest version any replica has), `divergent` (the same version with a different
    /// content hash — never expected under Raft, reported loudly), or `unreachable`. A lagging
    /// replica needs no action: the leader keeps sending it the log (or a snapshot).
    pub async fn regions(&self) -> Result<serde_json::Value, ApiError> {
        let status = self.consensus.status()?;
        let client = basalt_runtime::reqwest::Client::builder()
            .timeout(Duration::from_secs(2))
            .build()
            .map_err(|e| ApiError::internal(e.to_string()))?;
        let mut views = Vec::new();
        for m in &status.members {
            let view = if m.node_id == self.consensus.node_id() {
                Ok(self.local_view())
            } else {
                match client.get(format!("http://{}/v1/config/local", m.http_addr)).send().await {
                    Ok(r) if r.status().is_success() => r.json::<LocalView>().await.map_err(|e| e.to_string()),
                    Ok(r) => Err(format!("answered {}", r.status())),
                    Err(e) => Err(e.to_string()),
                }
            };
            views.push((m.node_id, m.voter, view));
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
        let mut applied = self.consensus.applied();
        loop {
            applied.borrow_and_update();
            let changes = self.sm.read(|m| m.history(ns, since, limit)).map_err(api_err)?;
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
