//! The seam between the node runtime and the engines (consensus, ring, log).
//!
//! An engine is built by the binary and handed to `node::run`. It is prepared before the
//! systems start (it opens its storage and puts a handle into the [`Extensions`], where systems
//! find it), and started after them (so every system has registered its part — a state
//! machine, a namespace — before the engine replays anything). It contributes routes to the
//! peer listener (engine-to-engine RPC) and to the public HTTP API (`/v1/<engine>/…`).

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

use axum::Router;
use prometheus_client::registry::Registry;
use tokio_util::sync::CancellationToken;

use crate::clock::Clock;
use crate::storage::Store;
use crate::system::Tasks;
use crate::transport::Transport;

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Handles shared between engines and systems, by type.
#[derive(Default)]
pub struct Extensions {
    map: HashMap<TypeId, Arc<dyn Any + Send + Sync>>,
}

impl Extensions {
    pub fn insert<T: Any + Send + Sync>(&mut self, value: Arc<T>) {
        self.map.insert(TypeId::of::<T>(), value);
    }

    pub fn get<T: Any + Send + Sync>(&self) -> Option<Arc<T>> {
        self.map.get(&TypeId::of::<T>()).cloned().and_then(|a| a.downcast::<T>().ok())
    }
}

/// Who this node is and how to reach it.
#[derive(Debug, Clone)]
pub struct NodeIdentity {
    pub node_id: u64,
    /// The bound HTTP address (the real port when the config said 0).
    pub http_addr: SocketAddr,
    /// The bound peer-listener address.
    pub peer_addr: SocketAddr,
    /// `--join`: the HTTP address of a member of an existing cluster.
    pub join: Option<String>,
}

/// What an engine gets from the node.
pub struct EngineContext<'a> {
    pub identity: NodeIdentity,
    pub store: Store,
    pub clock: Clock,
    pub transport: Transport,
    pub shutdown: CancellationToken,
    pub extensions: &'a mut Extensions,
    pub metrics: &'a mut Registry,
    pub tasks: &'a mut Tasks,
}

/// The routes an engine serves.
#[derive(Default)]
pub struct EngineRoutes {
    /// Merged into the peer listener (engine-to-engine RPC), e.g. `/raft/append`.
    pub peer: Router,
    /// Mounted on the public HTTP API, e.g. `/v1/cluster/…`.
    pub public: Router,
}

pub trait Engine: Send + 'static {
    fn name(&self) -> &'static str;

    /// Before systems start: open storage, register metrics, put handles into `extensions`.
    fn prepare(&mut self, ctx: &mut EngineContext<'_>, config: toml::Table) -> anyhow::Result<()>;

    /// After systems started: begin work (replay, elections, joining a cluster).
    fn start<'a>(&'a mut self, ctx: &'a mut EngineContext<'_>) -> BoxFuture<'a, anyhow::Result<EngineRoutes>>;

    /// At shutdown, after HTTP has drained.
    fn stop(&mut self) -> BoxFuture<'_, ()>;
}
