//! S04 — feature flags. Projects and environments of flags and segments live on the consensus
//! engine (every change is one Raft entry: validated against the whole environment, versioned,
//! audited with a field diff). SDKs get a snapshot and then deltas over Server-Sent Events and
//! evaluate locally (`basalt-flags-sdk`); OpenFeature's OFREP is served at `/ofrep/v1/…` for
//! OpenFeature's own providers. Evaluation is `basalt-flags-core`. See README.md.

mod api;
mod bench;
pub mod diff;
pub mod model;
mod ofrep;
pub mod service;

use std::sync::Arc;
use std::time::Duration;

use basalt_consensus::Consensus;
use basalt_runtime::bench::BenchOpts;
use basalt_runtime::system::BenchFuture;
use basalt_runtime::{System, SystemContext};
use serde::{Deserialize, Serialize};

/// `[systems.flags]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FlagsSettings {
    /// `project/environment` that OFREP requests without an SDK key evaluate in; empty: such
    /// requests get 401.
    pub default_environment: String,
    /// How often an idle SDK stream gets a keep-alive comment (SDKs treat 3 missed ones as a
    /// dead connection).
    pub keepalive_ms: u64,
    /// How often the leader looks for due scheduled changes.
    pub scheduler_tick_ms: u64,
}

impl Default for FlagsSettings {
    fn default() -> Self {
        Self { default_environment: String::new(), keepalive_ms: 5_000, scheduler_tick_ms: 100 }
    }
}

impl FlagsSettings {
    fn default_environment(&self) -> anyhow::Result<Option<(String, String)>> {
        if self.default_environment.is_empty() {
            return Ok(None);
        }
        match self.default_environment.split_once('/') {
            Some((p, e)) if !p.is_empty() && !e.is_empty() && !e.contains('/') => {
                Ok(Some((p.to_owned(), e.to_owned())))
            }
            _ => anyhow::bail!(
                "systems.flags.default_environment = {:?}: expected `project/environment`",
                self.default_environment
            ),
        }
    }
}

#[derive(Debug)]
pub struct FlagsSystem;

impl System for FlagsSystem {
    const NAME: &'static str = "flags";
    type Config = FlagsSettings;

    fn check(config: &FlagsSettings) -> anyhow::Result<()> {
        config.default_environment()?;
        anyhow::ensure!(config.keepalive_ms >= 100, "systems.flags.keepalive_ms must be at least 100");
        anyhow::ensure!(config.scheduler_tick_ms >= 10, "systems.flags.scheduler_tick_ms must be at least 10");
        Ok(())
    }

    fn start(ctx: &mut SystemContext<'_>, config: FlagsSettings) -> anyhow::Result<axum::Router> {
        let Some(consensus) = ctx.engine::<Consensus>() else {
            tracing::info!("flags: no consensus engine on this node; answering 503");
            return Ok(axum::Router::new().fallback(|| async {
                basalt_runtime::ApiError::unavailable(
                    "no_consensus",
                    "this node runs without the consensus engine (engines.consensus.enabled = false), where flags live; \
                     send flag requests to a cluster member",
                )
            }));
        };
        let transport = ctx.transport.clone().ok_or_else(|| anyhow::anyhow!("the flags system needs the transport"))?;
        let sm = Arc::new(service::FlagsSm::default());
        consensus.register(service::SYSTEM, sm.clone())?;
        let svc = Arc::new(service::FlagsService {
            sm,
            consensus,
            clock: ctx.clock.clone(),
            default_environment: config.default_environment()?,
            keepalive: Duration::from_millis(config.keepalive_ms),
            shutdown: ctx.shutdown.clone(),
            transport,
            node_id: ctx.identity.as_ref().map_or(0, |i| i.node_id),
        });
        ctx.spawn("pusher", svc.clone().pusher(ctx.shutdown.clone()));
        ctx.spawn(
            "scheduler",
            svc.clone().scheduler(Duration::from_millis(config.scheduler_tick_ms), ctx.shutdown.clone()),
        );
        ctx.serve_at_root(ofrep::routes(svc.clone()));
        ctx.serve_to_peers(api::peer_routes(svc.clone()));
        Ok(api::routes(svc))
    }

    fn bench(opts: &BenchOpts) -> Option<BenchFuture> {
        let opts = opts.clone();
        Some(Box::pin(async move { bench::run(&opts).await }))
    }
}
