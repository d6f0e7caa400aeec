//! S06 — the rate limiter. Rules (algorithm, parameters, per-key overrides, shadow mode) are
//! replicated on the consensus engine; every node decides locally with the algorithms of
//! `basalt-ratelimit-core` (`/v1/ratelimit/check`), and keeps a limiter's state across rule
//! changes of the same algorithm. redis-cell's `CL.THROTTLE` is served by the kv system's RESP
//! port. See README.md.

mod api;
pub mod rules;
mod service;

use std::sync::Arc;

use anyhow::Context;
use basalt_consensus::Consensus;
use basalt_runtime::{System, SystemContext};
use serde::{Deserialize, Serialize};

/// `[systems.ratelimit]` (nothing to set yet).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RateLimitSettings {}

#[derive(Debug)]
pub struct RateLimitSystem;

impl System for RateLimitSystem {
    const NAME: &'static str = "ratelimit";
    type Config = RateLimitSettings;

    fn start(ctx: &mut SystemContext<'_>, _config: RateLimitSettings) -> anyhow::Result<axum::Router> {
        let consensus: Arc<Consensus> =
            ctx.engine::<Consensus>().context("the ratelimit system needs the consensus engine")?;
        let rules = Arc::new(rules::RulesSm::default());
        consensus.register(service::SYSTEM, rules.clone())?;
        let svc = Arc::new(service::RateLimitService::new(consensus, rules, ctx.clock.clone()));
        ctx.spawn("sweeper", svc.clone().sweeper(ctx.shutdown.clone()));
        Ok(api::routes(svc))
    }
}
