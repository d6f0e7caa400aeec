//! The model on the consensus engine: writes are proposed from any node; admin reads are
//! linearizable by default (read-index); SDK streams, polling and OFREP evaluations read this
//! node's applied state, and wake on every applied entry.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use basalt_consensus::{Consensus, Consistency, StateMachine};
use basalt_flags_core::{Delta, FlagStore};
use basalt_runtime::transport::Transport;
use basalt_runtime::{ApiError, Clock};

use tokio::sync::{broadcast, watch};

use crate::model::{Command, FlagsError, Model, Op};

pub const SYSTEM: &str = "flags";
/// Where the leader pushes committed deltas to the other members (on their peer listener).
pub const PUSH_PATH: &str = "/flags/push";

pub use basalt_runtime::http::ErrorReply;

/// A model error as it travels in a Raft reply.
pub fn error_reply(e: &FlagsError) -> ErrorReply {
    ErrorReply {
        status: e.http_status(),
        code: e.code().to_owned(),
        message: e.to_string(),
        field: e.field().map(str::to_owned),
    }
}

pub fn api_err(e: FlagsError) -> ApiError {
    error_reply(&e).into()
}

/// Deltas one applied command produced: `(project, environment, delta)`.
pub type Deltas = Vec<(String, String, Delta)>;

/// Deltas kept per environment ahead of this replica's own state (pushed by the leader).
const EARLY_MAX: usize = 1_000;

/// The replicated state machine: the model behind a lock never held across an await, and a
/// watch that ticks on every applied flags entry (and every early delta pushed by the leader).
pub struct FlagsSm {
    model: RwLock<Model>,
    changed: watch::Sender<u64>,
    /// Every applied command's deltas, for the leader's pusher.
    applied: broadcast::Sender<Arc<Deltas>>,
    /// Committed deltas the leader pushed ahead of this replica's log, by environment and version.
    early: Mutex<BTreeMap<(String, String), BTreeMap<u64, Delta>>>,
}

impl Default for FlagsSm {
    fn default() -> Self {
        Self {
            model: RwLock::default(),
            changed: watch::channel(0).0,
            applied: broadcast::channel(1024).0,
            early: Mutex::default(),
        }
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

    /// Keep deltas the leader pushed (committed, so this replica will apply the same ones) and
    /// wake the streams. Deltas this replica already has are dropped.
    pub fn accept_early(&self, deltas: Deltas) {
        {
            let mut early = self.early.lock().unwrap_or_else(|e| e.into_inner());
            for (p, e, d) in deltas {
                let have = self.read(|m| m.env(&p, &e).map(|env| env.version()).unwrap_or(0));
                let buf = early.entry((p, e)).or_default();
                buf.retain(|v, _| *v > have);
                if d.version > have && buf.len() < EARLY_MAX {
                    buf.insert(d.version, d);
                }
            }
        }
        self.changed.send_modify(|_| {});
    }

    /// Pushed deltas that follow version `since` without a gap.
    pub fn early_after(&self, project: &str, environment: &str, since: u64) -> Vec<Delta> {
        let early = self.early.lock().unwrap_or_else(|e| e.into_inner());
        let Some(buf) = early.get(&(project.to_owned(), environment.to_owned())) else { return Vec::new() };
        let mut out = Vec::new();
        let mut next = since + 1;
        while let Some(d) = buf.get(&next) {
            out.push(d.clone());
            next += 1;
        }
        out
    }
}

impl StateMachine for FlagsSm {
    fn apply(&self, index: u64, command: &[u8]) -> Vec<u8> {
        let reply = match serde_json::from_slice::<Command>(command) {
            Ok(cmd) => {
                let mut model = self.model.write().unwrap_or_else(|e| e.into_inner());
                let reply = serde_json::to_vec(&model.apply(index, &cmd).map_err(|e| error_reply(&e)));
                let out = model.take_outbox();
                drop(model);
                if !out.is_empty() {
                    let _ = self.applied.send(Arc::new(out));
                }
                reply
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
    pub transport: Transport,
    pub node_id: u64,
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
        self.consensus.barrier_for(consistency).await?;
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

impl FlagsService {
    /// On the leader: push every applied command's deltas to the other members at once.
    ///
    /// Raft alone tells a follower that an entry is committed only with the leader's next
    /// message after the commit, and openraft 0.9 keeps one message in flight per follower, so
    /// a far follower learns a commit about two one-way delays after it was made. A pushed delta
    /// arrives one one-way delay after the commit; the follower's streams send it at once. It is
    /// safe because only applied (committed) entries are pushed, and the follower's own log
    /// produces the same delta.
    pub async fn pusher(self: Arc<Self>, stop: basalt_runtime::node::CancellationToken) {
        let mut rx = self.sm.applied.subscribe();
        loop {
            let batch = tokio::select! {
                _ = stop.cancelled() => return,
                r = rx.recv() => match r {
                    Ok(b) => b,
                    Err(broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(broadcast::error::RecvError::Closed) => return,
                },
            };
            let Ok(status) = self.consensus.status() else { continue };
            if status.state != "leader" {
                continue;
            }
            let Ok(bytes) = serde_json::to_vec(&*batch) else { continue };
            let bytes = Arc::new(bytes);
            for m in status.members.into_iter().filter(|m| m.node_id != self.node_id) {
                let (transport, bytes) = (self.transport.clone(), bytes.clone());
                tokio::spawn(async move {
                    let r = transport
                        .call::<_, ()>(m.node_id, &m.peer_addr, PUSH_PATH, &*bytes, Some(Duration::from_secs(2)))
                        .await;
                    if let Err(e) = r {
                        tracing::debug!(peer = m.node_id, error = %e, "flags: push not delivered (the log will bring it)");
                    }
                });
            }
        }
    }
}
