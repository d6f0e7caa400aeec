//! Starting and stopping a node: open the store, start every enabled system, serve HTTP, and on
//! SIGINT/SIGTERM stop accepting, drain in-flight requests, stop background tasks and flush.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context;
use prometheus_client::registry::Registry;
use serde::{Deserialize, Serialize};
pub use tokio_util::sync::CancellationToken;

use std::collections::BTreeMap;

use axum::Router;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::routing::{get, put};

use crate::clock::Clock;
use crate::config::{ConfigSources, NodeConfig};
use crate::engine::{Engine, EngineContext, Extensions, NodeIdentity};
use crate::http::ApiError;
use crate::http::extract::Json;
use crate::http::{HostParts, host_router};
use crate::metrics::{HttpMetrics, MetricsHandle};
use crate::storage::Store;
use crate::system::{Plug, SystemContext, Tasks};
use crate::transport::{FaultRule, Faults, Transport, inbound_faults};

/// Written to `<data_dir>/node.json` once the node listens, and removed at a clean stop, so
/// harnesses (tests, `basalt bench`, `basalt chaos`) learn the bound address without racing.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NodeInfo {
    pub pid: u32,
    pub node_id: u64,
    pub http_addr: String,
    pub peer_addr: String,
    pub version: String,
}

pub const NODE_INFO_FILE: &str = "node.json";

pub fn node_info_path(data_dir: &Path) -> PathBuf {
    data_dir.join(NODE_INFO_FILE)
}

/// The config sources the plugs contribute defaults to.
pub fn sources_for(plugs: &[Plug]) -> anyhow::Result<ConfigSources> {
    let mut s = ConfigSources::default();
    for p in plugs {
        s.system_defaults.insert(p.name.to_string(), p.default_config()?);
    }
    Ok(s)
}

/// Load the configuration and check every enabled system's table against its schema.
pub fn load_config(plugs: &[Plug], sources: &ConfigSources) -> anyhow::Result<NodeConfig> {
    let config = NodeConfig::load(sources)?;
    for p in plugs {
        if config.system_enabled(p.name) {
            p.check_config(config.system_table(p.name))?;
        }
    }
    if let Some(unknown) = config.systems.keys().find(|k| !plugs.iter().any(|p| p.name == k.as_str())) {
        let names: Vec<&str> = plugs.iter().map(|p| p.name).collect();
        anyhow::bail!("[systems.{unknown}]: no such system; systems: {}", names.join(", "));
    }
    Ok(config)
}

/// Process-wide settings, applied before the node's threads start.
pub fn prepare_process(config: &NodeConfig) -> anyhow::Result<()> {
    nix::sys::prctl::set_thp_disable(!config.transparent_huge_pages)
        .context("setting the process's transparent huge pages (prctl PR_SET_THP_DISABLE)")?;
    Ok(())
}

/// Run a node until `stop` is cancelled or a signal arrives.
pub async fn run(
    config: NodeConfig,
    mut engines: Vec<Box<dyn Engine>>,
    plugs: Vec<Plug>,
    stop: CancellationToken,
) -> anyhow::Result<()> {
    let store = Store::open(&config.data_dir, config.fsync, Duration::from_millis(config.fsync_interval_ms))?;
    let clock = Clock::with_offset_ms(config.clock_offset_ms);
    let mut registry = Registry::default();
    let http_metrics = HttpMetrics::register(&mut registry);
    let mut tasks = Tasks::default();
    let shutdown = CancellationToken::new();

    // Bind both listeners first: engines advertise the real addresses (the config may say port 0).
    let listener = tokio::net::TcpListener::bind(config.http_addr)
        .await
        .with_context(|| format!("binding the HTTP listener on {}", config.http_addr))?;
    let peer_listener = tokio::net::TcpListener::bind(config.peer_addr)
        .await
        .with_context(|| format!("binding the peer listener on {}", config.peer_addr))?;
    let identity = NodeIdentity {
        node_id: config.node_id,
        http_addr: listener.local_addr()?,
        peer_addr: peer_listener.local_addr()?,
        join: config.join.clone(),
    };
    let faults = Faults::default();
    let transport = Transport::new(config.node_id, config.transport.clone(), faults.clone())?;
    let mut extensions = Extensions::default();
    // `[engines.<name>] enabled = false` leaves an engine out (e.g. on an edge replica).
    let mut engine_tables = BTreeMap::new();
    engines.retain(|e| {
        let mut table = config.engine_table(e.name());
        let enabled = table.remove("enabled").and_then(|v| v.as_bool()).unwrap_or(true);
        engine_tables.insert(e.name(), table);
        enabled
    });
    let shared = Shared {
        identity: identity.clone(),
        store: store.clone(),
        clock: clock.clone(),
        transport: transport.clone(),
        shutdown: shutdown.clone(),
    };

    for engine in &mut engines {
        let name = engine.name();
        let mut ctx = shared.engine_context(name, &mut extensions, &mut registry, &mut tasks);
        let table = engine_tables.remove(name).unwrap_or_default();
        engine.prepare(&mut ctx, table).with_context(|| format!("preparing engine `{name}`"))?;
    }

    let services = crate::services::Services::default();
    let mut systems = Vec::new();
    let mut root_routes = Vec::new();
    let mut system_peer_routes = Vec::new();
    for plug in &plugs {
        if !config.system_enabled(plug.name) {
            tracing::info!(system = plug.name, "disabled by configuration");
            continue;
        }
        let namespace = store.namespace(plug.name)?;
        let sub = registry.sub_registry_with_prefix(format!("basalt_{}", plug.name));
        let mut ctx =
            SystemContext::new(plug.name, namespace, clock.clone(), shutdown.clone(), sub, &mut tasks, &extensions);
        ctx.identity = Some(identity.clone());
        ctx.transport = Some(transport.clone());
        ctx.fault_injection = config.fault_injection;
        ctx.services = services.clone();
        let routes = plug
            .start(&mut ctx, config.system_table(plug.name))
            .with_context(|| format!("starting system `{}`", plug.name))?;
        root_routes.extend(ctx.take_root_routes());
        system_peer_routes.extend(ctx.take_peer_routes());
        systems.push((plug.name, routes));
    }

    let mut peer_routes = Router::new();
    for routes in system_peer_routes {
        peer_routes = peer_routes.merge(routes);
    }
    let mut public_routes = vec![node_routes(&config, &faults, &clock, &store)];
    public_routes.append(&mut root_routes);
    for engine in &mut engines {
        let name = engine.name();
        let mut ctx = shared.engine_context(name, &mut extensions, &mut registry, &mut tasks);
        let routes = engine.start(&mut ctx).await.with_context(|| format!("starting engine `{name}`"))?;
        peer_routes = peer_routes.merge(routes.peer);
        public_routes.push(routes.public);
    }

    let ready = Arc::new(AtomicBool::new(false));
    let app = host_router(HostParts {
        systems,
        extra: public_routes,
        metrics: MetricsHandle::new(registry),
        http_metrics,
        ready: ready.clone(),
        limits: config.http.clone(),
        services,
    });
    write_node_info(&config.data_dir, &identity)?;
    tracing::info!(
        node_id = identity.node_id,
        http_addr = %identity.http_addr,
        peer_addr = %identity.peer_addr,
        data_dir = %config.data_dir.display(),
        "basalt node listening"
    );

    let drain = CancellationToken::new();
    let server = tokio::spawn({
        let drain = drain.clone();
        async move {
            axum::serve(listener, app.into_make_service_with_connect_info::<std::net::SocketAddr>())
                .with_graceful_shutdown(drain.cancelled_owned())
                .await
        }
    });
    let peer_stop = CancellationToken::new();
    let peer_app = peer_routes
        .layer(axum::middleware::from_fn_with_state(faults.clone(), inbound_faults))
        .layer(DefaultBodyLimit::max(config.transport.body_limit_bytes));
    // The same routes over the multiplexed stream (`transport::stream`).
    let peer_app =
        crate::transport::stream::routes(peer_app.clone(), config.transport.body_limit_bytes, peer_stop.clone())
            .merge(peer_app);
    let peer_server = tokio::spawn({
        let peer_stop = peer_stop.clone();
        // No Nagle: answers on a peer stream are small writes that must not wait for an ACK.
        let peer_listener = axum::serve::ListenerExt::tap_io(peer_listener, |tcp| {
            let _ = tcp.set_nodelay(true);
        });
        async move { axum::serve(peer_listener, peer_app).with_graceful_shutdown(peer_stop.cancelled_owned()).await }
    });
    ready.store(true, Ordering::Release);

    tokio::select! {
        _ = stop.cancelled() => {},
        s = shutdown_signal() => tracing::info!(signal = s, "shutting down"),
    }
    ready.store(false, Ordering::Release);
    let grace = Duration::from_millis(config.shutdown_grace_ms);
    drain.cancel();
    match tokio::time::timeout(grace, server).await {
        Ok(Ok(Ok(()))) => {}
        Ok(Ok(Err(e))) => tracing::error!(error = %e, "HTTP server failed"),
        Ok(Err(e)) => tracing::error!(error = %e, "HTTP server task failed"),
        Err(_) => tracing::warn!("in-flight requests did not finish within the grace period"),
    }
    shutdown.cancel();
    tasks.join(grace).await;
    for engine in &mut engines {
        if tokio::time::timeout(grace, engine.stop()).await.is_err() {
            tracing::warn!(engine = engine.name(), "engine did not stop within the grace period");
        }
    }
    peer_stop.cancel();
    let _ = tokio::time::timeout(grace, peer_server).await;
    store.flush().context("flushing the store at shutdown")?;
    let _ = std::fs::remove_file(node_info_path(&config.data_dir));
    tracing::info!("stopped cleanly");
    Ok(())
}

/// What every engine gets, cloned into each `EngineContext`.
struct Shared {
    identity: NodeIdentity,
    store: Store,
    clock: Clock,
    transport: Transport,
    shutdown: CancellationToken,
}

impl Shared {
    fn engine_context<'a>(
        &self,
        name: &str,
        extensions: &'a mut Extensions,
        registry: &'a mut Registry,
        tasks: &'a mut Tasks,
    ) -> EngineContext<'a> {
        EngineContext {
            identity: self.identity.clone(),
            store: self.store.clone(),
            clock: self.clock.clone(),
            transport: self.transport.clone(),
            shutdown: self.shutdown.clone(),
            extensions,
            metrics: registry.sub_registry_with_prefix(format!("basalt_{name}")),
            tasks,
        }
    }
}

/// `/v1/node/…`: this node's own controls. The fault hook, clock skew and disk stall answer only when
/// `fault_injection = true`.
fn node_routes(config: &NodeConfig, faults: &Faults, clock: &Clock, store: &Store) -> Router {
    #[derive(Clone)]
    struct NodeState {
        enabled: bool,
        faults: Faults,
        clock: Clock,
        store: Store,
    }
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct DiskBody {
        fsync_stalled: bool,
    }
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct FaultsBody {
        peers: BTreeMap<u64, FaultRule>,
    }
    #[derive(Deserialize)]
    #[serde(deny_unknown_fields)]
    struct ClockBody {
        offset_ms: i64,
    }
    fn guard(s: &NodeState) -> Result<(), ApiError> {
        if s.enabled {
            Ok(())
        } else {
            Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "fault_injection_disabled",
                "fault injection is off on this node; start it with fault_injection = true",
            ))
        }
    }
    let state = NodeState {
        enabled: config.fault_injection,
        faults: faults.clone(),
        clock: clock.clone(),
        store: store.clone(),
    };
    Router::new()
        .route(
            "/v1/node/faults",
            get(|State(s): State<NodeState>| async move {
                guard(&s)?;
                Ok::<_, ApiError>(axum::Json(serde_json::json!({ "peers": s.faults.all() })))
            })
            .put(|State(s): State<NodeState>, Json(body): Json<FaultsBody>| async move {
                guard(&s)?;
                s.faults.set_all(body.peers);
                Ok::<_, ApiError>(axum::Json(serde_json::json!({ "peers": s.faults.all() })))
            }),
        )
        .route(
            "/v1/node/disk",
            get(|State(s): State<NodeState>| async move {
                guard(&s)?;
                Ok::<_, ApiError>(axum::Json(disk_status(&s.store)))
            })
            .put(|State(s): State<NodeState>, Json(body): Json<DiskBody>| async move {
                guard(&s)?;
                s.store.stall_fsync(body.fsync_stalled);
                Ok::<_, ApiError>(axum::Json(disk_status(&s.store)))
            }),
        )
        .route(
            "/v1/node/clock",
            put(|State(s): State<NodeState>, Json(body): Json<ClockBody>| async move {
                guard(&s)?;
                s.clock.skew(body.offset_ms - s.clock.offset_ms());
                Ok::<_, ApiError>(axum::Json(
                    serde_json::json!({ "offset_ms": s.clock.offset_ms(), "now_ms": s.clock.now_ms() }),
                ))
            }),
        )
        .with_state(state)
}

/// `/v1/node/disk`'s answer: whether syncs are stalled and how many writers wait for one.
fn disk_status(store: &Store) -> serde_json::Value {
    serde_json::json!({ "fsync_stalled": store.fsync_stalled(), "syncs_waiting": store.syncs_waiting() })
}

fn write_node_info(dir: &Path, id: &NodeIdentity) -> anyhow::Result<()> {
    let info = NodeInfo {
        pid: std::process::id(),
        node_id: id.node_id,
        http_addr: id.http_addr.to_string(),
        peer_addr: id.peer_addr.to_string(),
        version: env!("CARGO_PKG_VERSION").into(),
    };
    let tmp = dir.join("node.json.tmp");
    std::fs::write(&tmp, serde_json::to_vec(&info)?)?;
    std::fs::rename(&tmp, node_info_path(dir))?;
    Ok(())
}

async fn shutdown_signal() -> &'static str {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) else {
        std::future::pending::<()>().await;
        return "none";
    };
    tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    }
}
