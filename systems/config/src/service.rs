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
