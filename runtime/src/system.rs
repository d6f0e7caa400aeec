//! The seam through which a system plugs into the node.
//!
//! A system is one crate that implements [`System`]; the binary lists it with one line,
//! `plug::<basalt_ids::Ids>()`. At start the node hands the system a [`SystemContext`] — its own
//! storage namespace, its own metrics prefix, the clock, a way to spawn background tasks that
//! stop at shutdown — and mounts the router the system returns under `/v1/<NAME>`.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::Router;
use prometheus_client::registry::Registry;
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::bench::{BenchOpts, Report};
use crate::clock::Clock;
use crate::engine::Extensions;
use crate::storage::Namespace;

pub trait System: 'static {
    /// The system's name: its URL prefix `/v1/<NAME>`, storage namespace, metrics prefix
    /// `basalt_<NAME>_`, and config table `[systems.<NAME>]`.
    const NAME: &'static str;
    /// The system's own settings; unknown keys should be rejected (`deny_unknown_fields`).
    type Config: Serialize + DeserializeOwned + Default;

    /// Open state, register metrics, spawn background tasks, and return the routes.
    fn start(ctx: &mut SystemContext<'_>, config: Self::Config) -> anyhow::Result<Router>;

    /// Reject a bad configuration before anything starts (also run by `--print-config`).
    fn check(_config: &Self::Config) -> anyhow::Result<()> {
        Ok(())
    }

    /// `basalt bench <NAME>`: the system's benchmark, if it has one.
    fn bench(_opts: &BenchOpts) -> Option<BenchFuture> {
        None
    }
}

/// What a system's benchmark returns.
pub type BenchFuture = Pin<Box<dyn Future<Output = anyhow::Result<Report>> + Send>>;

/// What a system gets from the node while it starts.
pub struct SystemContext<'a> {
    pub name: &'static str,
    pub namespace: Namespace,
    pub clock: Clock,
    /// Cancelled when the node shuts down; background tasks watch it.
    pub shutdown: CancellationToken,
    /// Who this node is (set by the node; `None` in unit tests that build a context by hand).
    pub identity: Option<crate::engine::NodeIdentity>,
    /// The node-to-node transport, for systems that talk to other nodes themselves.
    pub transport: Option<crate::transport::Transport>,
    /// The node runs with `fault_injection = true`: a system may expose its own fault hooks
    /// (for tests and the chaos harness), never otherwise.
    pub fault_injection: bool,
    /// What systems offer each other at run time (the node's one set).
    pub services: crate::services::Services,
    metrics: &'a mut Registry,
    tasks: &'a mut Tasks,
    extensions: &'a Extensions,
    root_routes: Vec<Router>,
    peer_routes: Vec<Router>,
}

impl<'a> SystemContext<'a> {
    pub fn new(
        name: &'static str,
        namespace: Namespace,
        clock: Clock,
        shutdown: CancellationToken,
        metrics: &'a mut Registry,
        tasks: &'a mut Tasks,
        extensions: &'a Extensions,
    ) -> Self {
        Self {
            name,
            namespace,
            clock,
            shutdown,
            identity: None,
            transport: None,
            fault_injection: false,
            services: Default::default(),
            metrics,
            tasks,
            extensions,
            root_routes: Vec::new(),
            peer_routes: Vec::new(),
        }
    }

    /// Serve `routes` at the root of the node's HTTP address instead of under `/v1/<NAME>`: for
    /// industry protocols whose paths are fixed (OpenFeature's `/ofrep/v1/…`). The paths must not
    /// collide with another system's or the node's own.
    pub fn serve_at_root(&mut self, routes: Router) {
        self.root_routes.push(routes);
    }

    /// The routes given to [`serve_at_root`](Self::serve_at_root) (taken by the node after start).
    pub fn take_root_routes(&mut self) -> Vec<Router> {
        std::mem::take(&mut self.root_routes)
    }

    /// Serve node-to-node routes on the peer listener (the one the transport calls, with its
    /// fault hook), not on the public HTTP address: what other nodes may ask, clients cannot.
    /// Paths should start with `/<NAME>/`.
    pub fn serve_to_peers(&mut self, routes: Router) {
        self.peer_routes.push(routes);
    }

    /// The routes given to [`serve_to_peers`](Self::serve_to_peers).
    pub fn take_peer_routes(&mut self) -> Vec<Router> {
        std::mem::take(&mut self.peer_routes)
    }

    /// Bind a protocol listener beside HTTP (`what` names it in errors: "the RESP listener"):
    /// the listener and its real address (the config may say port 0).
    pub fn listen(&self, addr: &str, what: &str) -> anyhow::Result<(tokio::net::TcpListener, String)> {
        let std_listener = std::net::TcpListener::bind(addr).with_context(|| format!("binding {what} on {addr}"))?;
        std_listener.set_nonblocking(true)?;
        let bound = std_listener.local_addr()?.to_string();
        Ok((tokio::net::TcpListener::from_std(std_listener)?, bound))
    }

    /// A handle an engine shared, e.g. `ctx.engine::<Consensus>()`.
    pub fn engine<T: std::any::Any + Send + Sync>(&self) -> Option<Arc<T>> {
        self.extensions.get::<T>()
    }

    /// Register metrics here; they are exported as `basalt_<system>_<name>`.
    pub fn metrics(&mut self) -> &mut Registry {
        self.metrics
    }

    /// Run a background task until it returns; it should return soon after `shutdown` fires.
    pub fn spawn(&mut self, task: &'static str, fut: impl Future<Output = ()> + Send + 'static) {
        self.tasks.spawn(format!("{}/{task}", self.name), fut);
    }
}

/// The node's background tasks, awaited at shutdown.
#[derive(Default)]
pub struct Tasks {
    handles: Vec<(String, JoinHandle<()>)>,
}

impl Tasks {
    pub fn spawn(&mut self, name: String, fut: impl Future<Output = ()> + Send + 'static) {
        self.handles.push((name, tokio::spawn(fut)));
    }

    /// Wait for every task, giving up (and aborting) after `grace`.
    pub async fn join(self, grace: Duration) {
        let deadline = tokio::time::Instant::now() + grace;
        for (name, mut handle) in self.handles {
            match tokio::time::timeout_at(deadline, &mut handle).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::error!(task = %name, error = %e, "background task failed"),
                Err(_) => {
                    tracing::warn!(task = %name, "background task did not stop in time; aborting it");
                    handle.abort();
                }
            }
        }
    }
}

/// A system, type-erased so the binary can keep a list of them.
pub struct Plug {
    pub name: &'static str,
    default_config: fn() -> anyhow::Result<toml::Table>,
    start: fn(&mut SystemContext<'_>, toml::Table) -> anyhow::Result<Router>,
    check: fn(toml::Table) -> anyhow::Result<()>,
    bench: fn(&BenchOpts) -> Option<BenchFuture>,
}

impl std::fmt::Debug for Plug {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Plug").field("name", &self.name).finish()
    }
}

pub fn plug<S: System>() -> Plug {
    Plug {
        name: S::NAME,
        default_config: || toml::Table::try_from(S::Config::default()).context("rendering default config"),
        start: |ctx, table| S::start(ctx, parse_config::<S>(table)?),
        check: |table| {
            S::check(&parse_config::<S>(table)?).with_context(|| format!("invalid [systems.{}] configuration", S::NAME))
        },
        bench: S::bench,
    }
}

fn parse_config<S: System>(mut table: toml::Table) -> anyhow::Result<S::Config> {
    table.remove("enabled");
    toml::Value::Table(table).try_into().with_context(|| format!("invalid [systems.{}] configuration", S::NAME))
}

impl Plug {
    /// Parse and check the system's table without starting anything.
    pub fn check_config(&self, table: toml::Table) -> anyhow::Result<()> {
        (self.check)(table)
    }

    pub fn default_config(&self) -> anyhow::Result<toml::Table> {
        (self.default_config)()
    }

    pub fn start(&self, ctx: &mut SystemContext<'_>, table: toml::Table) -> anyhow::Result<Router> {
        (self.start)(ctx, table)
    }

    pub fn bench(&self, opts: &BenchOpts) -> Option<BenchFuture> {
        (self.bench)(opts)
    }
}
