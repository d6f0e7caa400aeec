//! S01 — unique ID generator.
//!
//! Globally unique, roughly time-sortable IDs with no coordination on the request path:
//! Snowflake (64-bit), ULID and UUIDv7. The algorithms live in the pure `basalt_idgen` crate;
//! this crate is the service around them: durable worker-id leases and high-water marks in the
//! node's store, the HTTP API, metrics, and `basalt bench ids`. See README.md for the design.

mod api;
pub mod bench;
pub mod config;
mod leases;
mod metrics;
mod service;

use std::sync::Arc;
use std::time::Duration;

use basalt_runtime::bench::BenchOpts;
use basalt_runtime::system::BenchFuture;
use basalt_runtime::{System, SystemContext};

pub use config::IdsConfig;

/// The S01 system, plugged into the node with `plug::<basalt_ids::Ids>()`.
#[derive(Debug)]
pub struct Ids;

impl System for Ids {
    const NAME: &'static str = "ids";
    type Config = IdsConfig;

    fn start(ctx: &mut SystemContext<'_>, config: IdsConfig) -> anyhow::Result<axum::Router> {
        let metrics = metrics::IdsMetrics::register(ctx.metrics());
        let registry = leases::LocalRegistry::open(ctx.namespace.clone())?;
        let period = Duration::from_millis((config.reservation_ms / 4).max(5));
        let svc = Arc::new(service::IdService::start(config, ctx.clock.clone(), registry, metrics)?);
        let (bg, stop) = (svc.clone(), ctx.shutdown.clone());
        ctx.spawn("reservation", async move {
            let mut tick = tokio::time::interval(period);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tick.tick() => bg.keep_reserved().await,
                }
            }
        });
        Ok(api::routes(svc))
    }

    fn check(config: &IdsConfig) -> anyhow::Result<()> {
        config.validate().map(|_| ())
    }

    fn bench(opts: &BenchOpts) -> Option<BenchFuture> {
        let opts = opts.clone();
        Some(Box::pin(async move { bench::run(&opts).await }))
    }
}
