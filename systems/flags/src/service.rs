//! The model on the consensus engine: writes are proposed from any node; admin reads are
//! linearizable by default (read-index); SDK streams, polling and OFREP evaluations read this
//! node's applied state, and wake on every applied entry.

use std::sync::{Arc, RwLock};
use std::time::Duration;

use axum::http::StatusCode;
use basalt_consensus::{Consensus, StateMachine};
use basalt_flags_core::FlagStore;
use basalt_runtime::{ApiError, Clock};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::model::{Command, FlagsError, Model, Op};

pub const SYSTEM: &str = "flags";

/// An error as it travels in a Raft reply.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ErrorReply {
    pub status: u16,
    pub code: String,
    pub message: String,
    #[serde(default)]
    pub field: Option<String>,
}

impl From<&FlagsError> for ErrorReply {
    fn from(e: &FlagsError) -> Self {
        Self {
            status: e.http_status(),
            code: e.code().to_owned(),
            message: e.to_string(),
            field: e.field().map(str::to_owned),
        }
    }
}

impl From<ErrorReply> for ApiError {
    fn from(e: ErrorReply) -> Self {
        let err = ApiError::new(StatusCode::from_u16(e.status).unwrap_or(StatusCode::BAD_REQUEST), e.code, e.message);
        match e.field {
            Some(f) => err.with_field(f),
            None => err,
        }
    }
}

pub fn api_err(e: FlagsError) -> ApiError {
    ErrorReply::from(&e).into()
}

/// The replicated state machine: the model behind a lock never held across an await, and a
/// watch that ticks on every applied flags entry.
pub struct FlagsSm {
    model: RwLock<Model>,
    changed: watch::Sender<u64>,
}

impl Default for FlagsSm {
    fn default() -> Self {
        Self { model: RwLock::default(), changed: watch::channel(0).0 }
    }
}

impl FlagsSm {
    pub fn read<T>(&self, f: impl FnOnce(&Model) -> T) -> T {
        f(&self.model.read().unwrap_or_else(|e| e.into_inner()))
    }

    /// Ticks (with the log index) after every applied flags entry and every restore.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }
}

impl StateMachine for FlagsSm {
    fn apply(&self, index: u64, command: &[u8]) -> Vec<u8> {
        let reply = match serde_json::from_slice::<Command>(command) {
            Ok(cmd) => {
                let mut model = self.model.write().unwrap_or_else(|e| e.into_inner());
                serde_json::to_vec(&model.apply(index, &cmd).map_err(|e| ErrorReply::from(&e)))
            }
            Err(e) => serde_json::to_vec(&Err::<(), _>(ErrorReply {
                status: 400,
                code: "bad_command".into(),
                message: e.to_string(),
                field: None,
            })),
        };
        self.changed.send_replace(index);
        reply.unwrap_or_default()
    }

    fn snapshot(&self) -> Vec<u8> {
        self.read(Model::snapshot)
    }

    fn restore(&self, snapshot: &[u8]) -> anyhow::Result<()> {
        let restored = Model::restore(snapshot)?;
        *self.model.write().unwrap_or_else(|e| e.into_inner()) = restored;
        self.changed.send_modify(|_| {});
        Ok(())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Consistency {
    /// Read-index through the leader: sees every write acknowledged before the read.
    #[default]
    Linearizable,
    /// This node's applied state, possibly behind.
    Stale,
}

pub struct FlagsService {
    pub sm: Arc<FlagsSm>,
    pub consensus: Arc<Consensus>,
    pub clock: Clock,
    /// The environment OFREP requests without an SDK key evaluate in (`project/environment`).
    pub default_environment: Option<(String, String)>,
    /// How often an idle stream sends a keep-alive comment.
    pub keepalive: Duration,
    /// Streams end when the node shuts down.
    pub shutdown: basalt_runtime::node::CancellationToken,
}

impl FlagsService {
    /// Propose a command stamped with this node's clock and the author.
    pub async fn write<T: serde::de::DeserializeOwned>(
        &self,
        author: String,
        message: String,
        op: Op,
    ) -> Result<T, ApiError> {
        let cmd = Command { at_ms: self.clock.now_ms(), author, message, op };
        let bytes = serde_json::to_vec(&cmd).map_err(|e| ApiError::internal(e.to_string()))?;
        let reply = self.consensus.propose(SYSTEM, bytes).await?;
        let r: Result<T, ErrorReply> = serde_json::from_slice(&reply)
            .map_err(|e| ApiError::internal(format!("bad reply from the state machine: {e}")))?;
        r.map_err(ApiError::from)
    }

    pub async fn read<T>(
        &self,
        consistency: Consistency,
        f: impl FnOnce(&Model) -> Result<T, FlagsError>,
    ) -> Result<T, ApiError> {
        if consistency == Consistency::Linearizable {
            self.consensus.read_barrier().await?;
        }
        self.sm.read(f).map_err(api_err)
    }

    /// The compiled environment and its version, from this node's applied state.
    pub fn compiled(&self, project: &str, environment: &str) -> Result<(u64, Arc<FlagStore>), ApiError> {
        self.sm.read(|m| m.env(project, environment).map(|e| (e.version(), e.compiled().clone()))).map_err(api_err)
    }

    /// On the leader, propose `RunDue` whenever a scheduled change is due.
    pub async fn scheduler(self: Arc<Self>, tick: Duration, stop: basalt_runtime::node::CancellationToken) {
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(tick) => {}
            }
            let now = self.clock.now_ms();
            if !self.sm.read(|m| m.next_due().is_some_and(|due| due <= now)) {
                continue;
            }
            if !self.consensus.status().is_ok_and(|s| s.state == "leader") {
                continue;
            }
            match self.write::<serde_json::Value>("basalt-scheduler".into(), String::new(), Op::RunDue).await {
                Ok(ran) => tracing::info!(%ran, "flags: scheduled changes ran"),
                Err(e) => tracing::debug!(error = %e, "flags: scheduled changes not run yet"),
            }
        }
    }
}
