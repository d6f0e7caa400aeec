//! S03 — multi-region configuration management, on the consensus engine.
//!
//! Namespaces of keys whose values (JSON, YAML or TOML) are validated on write, optionally
//! against a JSON Schema; every change is a new immutable version with author, message and diff;
//! compare-and-set; history; rollback to any version as a new version; watches by long-poll or
//! SSE that resume from a version with no gap and no duplicate. The pure state machine is
//! [`model`]; this crate runs it on every node through `basalt_consensus`. See README.md.

mod api;
mod bench;
pub mod model;
mod service;

use std::sync::Arc;

use anyhow::Context;
use basalt_consensus::Consensus;
use basalt_runtime::bench::BenchOpts;
use basalt_runtime::system::BenchFuture;
use basalt_runtime::{System, SystemContext};
use serde::{Deserialize, Serialize};

/// `[systems.config]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConfigSettings {
    /// The region this node serves (a label; reads here are answered from this replica).
    pub region: String,
}

impl Default for ConfigSettings {
    fn default() -> Self {
        Self { region: "default".into() }
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
            (1..=64).contains(&config.region.len())
                && config.region.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
            "systems.config.region must be 1-64 characters of [A-Za-z0-9_-]"
        );
        Ok(())
    }

    fn start(ctx: &mut SystemContext<'_>, config: ConfigSettings) -> anyhow::Result<axum::Router> {
        let consensus: Arc<Consensus> =
            ctx.engine::<Consensus>().context("the config system needs the consensus engine")?;
        let sm = Arc::new(service::ConfigSm::default());
        consensus.register(service::SYSTEM, sm.clone())?;
        Ok(api::routes(Arc::new(service::ConfigService { sm, consensus, region: config.region })))
    }

    fn bench(opts: &BenchOpts) -> Option<BenchFuture> {
        let opts = opts.clone();
        Some(Box::pin(async move { bench::run(&opts).await }))
    }
}
