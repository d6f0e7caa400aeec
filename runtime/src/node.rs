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

use crate::clock::Clock;
use crate::config::{ConfigSources, NodeConfig};
use crate::http::{HostParts, host_router};
use crate::metrics::{HttpMetrics, MetricsHandle};
use crate::storage::Store;
use crate::system::{Plug, SystemContext, Tasks};

/// Written to `<data_dir>/node.json` once the node listens, and removed at a clean stop, so
/// harnesses (tests, `basalt bench`, `basalt chaos`) learn the bound address without racing.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NodeInfo {
    pub pid: u32,
    pub http_addr: String,
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

/// Run a node until `stop` is cancelled or a signal arrives.
pub async fn run(config: NodeConfig, plugs: Vec<Plug>, stop: CancellationToken) -> anyhow::Result<()> {
    let store = Store::open(&config.data_dir, config.fsync, Duration::from_millis(config.fsync_interval_ms))?;
    let clock = Clock::with_offset_ms(config.clock_offset_ms);
    let mut registry = Registry::default();
    let http_metrics = HttpMetrics::register(&mut registry);
    let mut tasks = Tasks::default();
    let shutdown = CancellationToken::new();

    let mut systems = Vec::new();
    for plug in &plugs {
        if !config.system_enabled(plug.name) {
            tracing::info!(system = plug.name, "disabled by configuration");
            continue;
        }
        let namespace = store.namespace(plug.name)?;
        let sub = registry.sub_registry_with_prefix(format!("basalt_{}", plug.name));
        let mut ctx = SystemContext::new(plug.name, namespace, clock.clone(), shutdown.clone(), sub, &mut tasks);
        let routes = plug
            .start(&mut ctx, config.system_table(plug.name))
            .with_context(|| format!("starting system `{}`", plug.name))?;
        systems.push((plug.name, routes));
    }

    let ready = Arc::new(AtomicBool::new(false));
    let app = host_router(HostParts {
        systems,
        metrics: MetricsHandle::new(registry),
        http_metrics,
        ready: ready.clone(),
        limits: config.http.clone(),
    });
    let listener = tokio::net::TcpListener::bind(config.http_addr)
        .await
        .with_context(|| format!("binding the HTTP listener on {}", config.http_addr))?;
    let addr = listener.local_addr()?;
    write_node_info(&config.data_dir, &addr.to_string())?;
    tracing::info!(http_addr = %addr, data_dir = %config.data_dir.display(), "basalt node listening");

    let drain = CancellationToken::new();
    let server = tokio::spawn({
        let drain = drain.clone();
        async move { axum::serve(listener, app).with_graceful_shutdown(drain.cancelled_owned()).await }
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
    store.flush().context("flushing the store at shutdown")?;
    let _ = std::fs::remove_file(node_info_path(&config.data_dir));
    tracing::info!("stopped cleanly");
    Ok(())
}

fn write_node_info(dir: &Path, http_addr: &str) -> anyhow::Result<()> {
    let info = NodeInfo {
        pid: std::process::id(),
        http_addr: http_addr.to_string(),
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
