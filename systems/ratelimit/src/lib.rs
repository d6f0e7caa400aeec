//! S06 — the rate limiter. Rules (algorithm, parameters, per-key overrides, shadow mode) are
//! replicated on the consensus engine; every node decides locally with the algorithms of
//! `basalt-ratelimit-core` (`/v1/ratelimit/check`), and keeps a limiter's state across rule
//! changes of the same algorithm. redis-cell's `CL.THROTTLE` is served by the kv system's RESP
//! port. See README.md.

mod api;
mod bench;
mod resp;
pub mod rls;
pub mod rules;
mod service;

use std::sync::Arc;

use basalt_consensus::Consensus;
use basalt_runtime::bench::BenchOpts;
use basalt_runtime::system::BenchFuture;
use basalt_runtime::{System, SystemContext};
use serde::{Deserialize, Serialize};

/// `[systems.ratelimit]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RateLimitSettings {
    /// Envoy's rate limit service (gRPC `ShouldRateLimit`); port 0 picks one (published in
    /// `GET /v1/ratelimit`).
    pub grpc_addr: String,
}

impl Default for RateLimitSettings {
    fn default() -> Self {
        Self { grpc_addr: "127.0.0.1:8081".into() }
    }
}

#[derive(Debug)]
pub struct RateLimitSystem;

impl System for RateLimitSystem {
    const NAME: &'static str = "ratelimit";
    type Config = RateLimitSettings;

    fn check(config: &RateLimitSettings) -> anyhow::Result<()> {
        config
            .grpc_addr
            .parse::<std::net::SocketAddr>()
            .map_err(|_| anyhow::anyhow!("systems.ratelimit.grpc_addr must be IP:PORT, not `{}`", config.grpc_addr))?;
        Ok(())
    }

    fn start(ctx: &mut SystemContext<'_>, config: RateLimitSettings) -> anyhow::Result<axum::Router> {
        let Some(consensus) = ctx.engine::<Consensus>() else {
            // An edge replica or a ring-only node: the rules live on the consensus engine, so
            // every request here says where to go instead.
            tracing::info!("ratelimit: no consensus engine on this node; answering 503");
            return Ok(axum::Router::new().fallback(|| async {
                basalt_runtime::ApiError::unavailable(
                    "no_consensus",
                    "this node runs without the consensus engine (engines.consensus.enabled = false), where rate-limit \
                     rules live; send rate-limit requests to a cluster member",
                )
            }));
        };
        let consensus: Arc<Consensus> = consensus;
        let rules = Arc::new(rules::RulesSm::default());
        consensus.register(service::SYSTEM, rules.clone())?;
        let transport =
            ctx.transport.clone().ok_or_else(|| anyhow::anyhow!("the ratelimit system needs the transport"))?;
        let node_id = ctx.identity.as_ref().map_or(0, |i| i.node_id);
        let svc = Arc::new(service::RateLimitService::new(consensus, rules, ctx.clock.clone(), transport, node_id));
        ctx.spawn("sweeper", svc.clone().sweeper(ctx.shutdown.clone()));
        ctx.services.offer_limiter(svc.clone());
        ctx.services.offer_resp_command("CL.THROTTLE", resp::cl_throttle(svc.clone()));
        ctx.serve_to_peers(api::peer_routes(svc.clone()));
        let (listener, grpc_addr) = ctx.listen(&config.grpc_addr, "the RLS gRPC listener")?;
        ctx.spawn("rls", rls::serve(listener, svc.clone(), ctx.shutdown.clone()));
        tracing::info!(%grpc_addr, "ratelimit: serving Envoy's rate limit service (gRPC)");
        let status = axum::routing::get(move || {
            let grpc_addr = grpc_addr.clone();
            async move { axum::Json(serde_json::json!({ "grpc_addr": grpc_addr })) }
        });
        Ok(axum::Router::new().route("/", status).merge(api::routes(svc)))
    }

    fn bench(opts: &BenchOpts) -> Option<BenchFuture> {
        let opts = opts.clone();
        Some(Box::pin(async move { bench::run(&opts).await }))
    }
}
