//! S32 — payments with idempotency guarantees. Stripe-shaped payment intents and refunds
//! (served at the node root, `/v1/payment_intents`, `/v1/refunds`, so Stripe's own clients
//! work with `api_base` pointed at a node) with `Idempotency-Key`; a double-entry ledger
//! (`/v1/payments/ledger/…`); all of it one deterministic state machine on the consensus
//! engine. Providers sit behind [`provider::Provider`]; a simulated provider with faults runs
//! as its own process ([`simulator`]). The pure core is `basalt-ledger-core`. See README.md.

mod api;
mod bench;
pub mod model;
pub mod params;
pub mod provider;
pub mod service;
pub mod simulator;
pub mod stripe;

use std::sync::Arc;
use std::time::Duration;

use basalt_consensus::Consensus;
use basalt_ledger_core::{DAY_MS, IdempotencyConfig};
use basalt_runtime::bench::BenchOpts;
use basalt_runtime::system::BenchFuture;
use basalt_runtime::{System, SystemContext};
use serde::{Deserialize, Serialize};

/// `[systems.payments]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PaymentsSettings {
    /// The provider's HTTP API (the simulated provider, `basalt payments-provider`); empty: the
    /// built-in simulated provider in process (no faults, instant answers).
    pub provider_url: String,
    /// How long a provider call may take before its outcome counts as unknown.
    pub provider_timeout_ms: u64,
    /// How long a request waits for its provider outcome before answering the intent as it is
    /// (`processing`) and storing that for its idempotency key.
    pub request_wait_ms: u64,
    /// How long the leader's job runner leaves a fresh job to the request that created it.
    pub inline_grace_ms: u64,
    /// How long an idempotency key is remembered (Stripe: 24 h).
    pub idempotency_ttl_ms: u64,
    /// How long an in-flight key is protected before a retry may take it over.
    pub idempotency_lock_timeout_ms: u64,
    /// The most idempotency keys held.
    pub idempotency_keys_max: usize,
    /// How often the job runner looks for due jobs.
    pub job_tick_ms: u64,
    /// Provider calls the job runner makes at once.
    pub jobs_parallel_max: usize,
    /// How often the leader expires keys and holds.
    pub sweep_interval_ms: u64,
    /// Timeout of one merchant webhook delivery.
    pub webhook_timeout_ms: u64,
    /// How often the leader reconciles with the provider (0: only on request).
    pub reconcile_interval_ms: u64,
    /// The most transfers or accounts in one ledger request.
    pub ledger_batch_max: usize,
    /// The most transfers in one proposal (concurrent requests are packed together).
    pub ledger_proposal_max: usize,
    /// Ledger proposals in flight at once.
    pub ledger_proposals_in_flight: usize,
}

impl Default for PaymentsSettings {
    fn default() -> Self {
        Self {
            provider_url: String::new(),
            provider_timeout_ms: 1_000,
            request_wait_ms: 10_000,
            inline_grace_ms: 3_000,
            idempotency_ttl_ms: DAY_MS,
            idempotency_lock_timeout_ms: 60_000,
            idempotency_keys_max: 1_000_000,
            job_tick_ms: 50,
            jobs_parallel_max: 64,
            sweep_interval_ms: 1_000,
            webhook_timeout_ms: 2_000,
            reconcile_interval_ms: 0,
            ledger_batch_max: 8_190,
            ledger_proposal_max: 32_768,
            ledger_proposals_in_flight: 4,
        }
    }
}

impl PaymentsSettings {
    fn model_config(&self) -> model::ModelConfig {
        model::ModelConfig {
            idempotency: IdempotencyConfig {
                ttl_ms: self.idempotency_ttl_ms,
                lock_timeout_ms: self.idempotency_lock_timeout_ms,
                entries_max: self.idempotency_keys_max,
                response_body_max_bytes: 1 << 20,
            },
            inline_grace_ms: self.inline_grace_ms,
        }
    }
}

#[derive(Debug)]
pub struct PaymentsSystem;

impl System for PaymentsSystem {
    const NAME: &'static str = "payments";
    type Config = PaymentsSettings;

    fn check(c: &PaymentsSettings) -> anyhow::Result<()> {
        basalt_ledger_core::IdempotencyTable::new(c.model_config().idempotency)
            .map_err(|e| anyhow::anyhow!("systems.payments: {e}"))?;
        anyhow::ensure!(c.provider_timeout_ms >= 10, "systems.payments.provider_timeout_ms must be at least 10");
        anyhow::ensure!(c.job_tick_ms >= 1, "systems.payments.job_tick_ms must be at least 1");
        anyhow::ensure!(c.jobs_parallel_max >= 1, "systems.payments.jobs_parallel_max must be at least 1");
        anyhow::ensure!(c.sweep_interval_ms >= 10, "systems.payments.sweep_interval_ms must be at least 10");
        anyhow::ensure!(
            (1..=basalt_ledger_core::QUERY_LIMIT_MAX).contains(&c.ledger_batch_max),
            "systems.payments.ledger_batch_max must be 1 to {}",
            basalt_ledger_core::QUERY_LIMIT_MAX
        );
        anyhow::ensure!(c.ledger_proposal_max >= 1, "systems.payments.ledger_proposal_max must be at least 1");
        anyhow::ensure!(
            c.ledger_proposals_in_flight >= 1,
            "systems.payments.ledger_proposals_in_flight must be at least 1"
        );
        if !c.provider_url.is_empty() {
            anyhow::ensure!(
                c.provider_url.starts_with("http://") || c.provider_url.starts_with("https://"),
                "systems.payments.provider_url must be an http(s) URL"
            );
        }
        Ok(())
    }

    fn start(ctx: &mut SystemContext<'_>, config: PaymentsSettings) -> anyhow::Result<axum::Router> {
        let Some(consensus) = ctx.engine::<Consensus>() else {
            tracing::info!("payments: no consensus engine on this node; answering 503");
            return Ok(axum::Router::new().fallback(|| async {
                basalt_runtime::ApiError::unavailable(
                    "no_consensus",
                    "this node runs without the consensus engine, where payments live; send requests to a cluster member",
                )
            }));
        };
        let sm = Arc::new(service::PaymentsSm::new(config.model_config())?);
        consensus.register(service::SYSTEM, sm.clone())?;
        let provider: Arc<dyn provider::Provider> = if config.provider_url.is_empty() {
            Arc::new(provider::BuiltinProvider::default())
        } else {
            Arc::new(provider::HttpProvider::new(
                &config.provider_url,
                Duration::from_millis(config.provider_timeout_ms),
            )?)
        };
        let svc = Arc::new(service::PaymentsService::new(sm, consensus, ctx.clock.clone(), provider, config));
        ctx.spawn("jobs", svc.clone().job_runner(ctx.shutdown.clone()));
        ctx.spawn("sweeper", svc.clone().sweeper(ctx.shutdown.clone()));
        ctx.spawn("webhooks", svc.clone().dispatcher(ctx.shutdown.clone()));
        ctx.spawn("reconciler", svc.clone().reconciler(ctx.shutdown.clone()));
        ctx.spawn("ledger-batcher", svc.clone().ledger_batcher(ctx.shutdown.clone()));
        ctx.serve_at_root(api::stripe_routes(svc.clone()));
        Ok(api::routes(svc))
    }

    fn bench(opts: &BenchOpts) -> Option<BenchFuture> {
        let opts = opts.clone();
        Some(Box::pin(async move { bench::run(&opts).await }))
    }
}

/// `basalt payments-provider`: run the simulated provider (see [`simulator`]).
pub fn run_simulated_provider(addr: &str, data: Option<std::path::PathBuf>) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    runtime.block_on(simulator::serve(addr, data))
}
