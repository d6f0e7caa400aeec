//! S03 — multi-region configuration management, on the consensus engine.
//!
//! Namespaces of keys whose values (JSON, YAML or TOML) are validated on write, optionally
//! against a JSON Schema; every change is a new immutable version with author, message and diff;
//! compare-and-set; history; rollback to any version as a new version; watches by long-poll or
//! SSE that resume from a version with no gap and no duplicate. The pure state machine is
//! [`model`]; this crate runs it on every node through `basalt_consensus`. See README.md.

mod api;
mod bench;
mod edge;
pub mod model;
mod repair;
mod service;

use std::sync::Arc;

use anyhow::Context;
use basalt_consensus::Consensus;
use basalt_runtime::bench::BenchOpts;
use basalt_runtime::system::BenchFuture;
use basalt_runtime::{System, SystemContext};
use serde::{Deserialize, Serialize};

/// Wall-clock milliseconds: the time a command carries (the model never reads a clock).
pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// `[systems.config]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConfigSettings {
    /// The region this node serves (a label; reads here are answered from this replica).
    pub region: String,
    /// Run as an edge replica of the cluster member at this HTTP address (HOST:PORT) instead of
    /// as a Raft member: changes are pushed here as the member applies them; writes are refused.
    /// Start such a node with `engines.consensus.enabled = false`.
    pub edge_of: Option<String>,
    /// How often this replica audits its content against its peers and repairs itself when
    /// they prove it divergent (0 turns the audit off).
    pub audit_ms: u64,
    /// A deliberate bug, for the fault harness to catch: answer linearizable reads from this
    /// replica without a read barrier. Refused unless `fault_injection = true`.
    pub unsafe_local_reads: bool,
}

impl Default for ConfigSettings {
    fn default() -> Self {
        Self { region: "default".into(), edge_of: None, audit_ms: 1000, unsafe_local_reads: false }
    }
}

/// The S03 system, plugged into the node with `plug::<basalt_config::ConfigSystem>()`.
#[derive(Debug)]
pub struct ConfigSystem;

impl System for ConfigSystem {
    const NAME: &'static str = "config";
    type Config = ConfigSettings;

    fn check(config: &ConfigSettings) -> anyhow::Result<()> {
        anyhow::ensure!(
            model::rollout::valid_region(&config.region),
            "systems.config.region must be 1-64 characters of [A-Za-z0-9_-]"
        );
        Ok(())
    }

    fn start(ctx: &mut SystemContext<'_>, config: ConfigSettings) -> anyhow::Result<axum::Router> {
        let identity = ctx.identity.clone().context("the config system needs the node's identity")?;
        anyhow::ensure!(
            !config.unsafe_local_reads || ctx.fault_injection,
            "systems.config.unsafe_local_reads is a deliberate bug for the fault harness; it needs fault_injection = true"
        );
        let sm = Arc::new(service::ConfigSm::default());
        let backend = match config.edge_of {
            Some(edge_of) => {
                let e = Arc::new(edge::Edge::new(
                    sm.clone(),
                    edge_of,
                    identity.node_id,
                    identity.http_addr.to_string(),
                    identity.peer_addr.to_string(),
                ));
                ctx.spawn("edge", e.clone().run(ctx.shutdown.clone()));
                service::Backend::Edge(e)
            }
            None => {
                let consensus: Arc<Consensus> = ctx
                    .engine::<Consensus>()
                    .context("the config system needs the consensus engine (or systems.config.edge_of)")?;
                consensus.register(service::SYSTEM, sm.clone())?;
                let edges = Arc::new(edge::EdgeRegistry::default());
                let transport = ctx.transport.clone().context("the config system needs the transport")?;
                let pusher =
                    edge::push_loop(consensus.clone(), sm.clone(), edges.clone(), transport, ctx.shutdown.clone());
                ctx.spawn("edge-pusher", pusher);
                service::Backend::Cluster { consensus, edges }
            }
        };
        let svc = Arc::new(service::ConfigService {
            sm,
            backend,
            region: config.region,
            node_id: identity.node_id,
            repairs: repair::RepairLog::default(),
            fault_injection: ctx.fault_injection,
            unsafe_local_reads: config.unsafe_local_reads,
        });
        ctx.spawn("rollout-driver", svc.clone().rollout_driver(ctx.shutdown.clone()));
        if config.audit_ms > 0 {
            let audit =
                repair::run(svc.clone(), std::time::Duration::from_millis(config.audit_ms), ctx.shutdown.clone());
            ctx.spawn("repair", audit);
        }
        ctx.serve_to_peers(api::peer_routes(svc.clone()));
        Ok(api::routes(svc))
    }

    fn bench(opts: &BenchOpts) -> Option<BenchFuture> {
        let opts = opts.clone();
        Some(Box::pin(async move { bench::run(&opts).await }))
    }
}
