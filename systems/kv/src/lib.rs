//! S13 — a Dynamo-style key-value store on the ring engine, with a Redis-compatible front.
//!
//! Every key lives on N replicas chosen by consistent hashing; reads and writes take R and W
//! of them (`basalt_ring_engine`). Redis clients connect to `systems.kv.resp_addr` (RESP2 and
//! RESP3: strings, keys with expiry, hashes, sorted sets, and the connection commands clients
//! need); the HTTP API under `/v1/kv` shows the versions underneath (siblings and causal
//! contexts). See README.md.

mod api;
mod bench;
mod commands;
pub mod model;
mod resp;
mod service;

use std::sync::Arc;

use anyhow::Context;
use basalt_ring_engine::RingHandle;
use basalt_runtime::bench::BenchOpts;
use basalt_runtime::system::BenchFuture;
use basalt_runtime::{System, SystemContext};
use serde::{Deserialize, Serialize};

/// `[systems.kv]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KvSettings {
    /// The Redis-protocol listener (port 0: any free port, published in `GET /v1/kv`).
    pub resp_addr: String,
    /// The largest bulk string a request may carry (Redis's `proto-max-bulk-len`).
    pub max_bulk_len: usize,
    /// The most arguments one command may have.
    pub max_args: usize,
    /// Read and write quorums per namespace (keys named `<namespace>:…`), e.g.
    /// `[systems.kv.namespaces.cache] r = 1, w = 1`. N is the ring's for every namespace.
    pub namespaces: std::collections::BTreeMap<String, service::NamespaceQuorum>,
    /// Memory for big hashes and sorted sets kept decoded between writes (so a write changes
    /// them in place); 0 turns it off.
    pub decoded_bytes_max: usize,
}

impl Default for KvSettings {
    fn default() -> Self {
        Self {
            resp_addr: "127.0.0.1:6380".into(),
            max_bulk_len: 512 * 1024 * 1024,
            max_args: 1024 * 1024,
            namespaces: Default::default(),
            decoded_bytes_max: 64 * 1024 * 1024,
        }
    }
}

#[derive(Debug)]
pub struct KvSystem;

impl System for KvSystem {
    const NAME: &'static str = "kv";
    type Config = KvSettings;

    fn check(config: &KvSettings) -> anyhow::Result<()> {
        config
            .resp_addr
            .parse::<std::net::SocketAddr>()
            .map_err(|_| anyhow::anyhow!("systems.kv.resp_addr must be IP:PORT, not `{}`", config.resp_addr))?;
        anyhow::ensure!(config.max_bulk_len >= 1 && config.max_args >= 1, "systems.kv limits must be at least 1");
        for (name, q) in &config.namespaces {
            anyhow::ensure!(
                !name.is_empty() && !name.contains(':') && q.r >= 1 && q.w >= 1,
                "systems.kv.namespaces.{name}: a name without `:`, and r and w of at least 1"
            );
        }
        Ok(())
    }

    fn start(ctx: &mut SystemContext<'_>, config: KvSettings) -> anyhow::Result<axum::Router> {
        let ring: Arc<RingHandle> = ctx.engine::<RingHandle>().context("the kv system needs the ring engine")?;
        let identity = ctx.identity.clone().context("the kv system needs the node's identity")?;
        for (name, q) in &config.namespaces {
            let n = ring.config.n;
            anyhow::ensure!(q.r <= n && q.w <= n, "systems.kv.namespaces.{name}: r and w must be at most n = {n}");
        }
        let svc = service::KvService::new(
            (*ring).clone(),
            identity.node_id,
            ctx.clock.clone(),
            config.namespaces,
            config.decoded_bytes_max,
        );
        let (listener, resp_addr) = ctx.listen(&config.resp_addr, "the RESP listener")?;
        ring.membership().publish("resp", resp_addr.clone());
        let limits =
            basalt_resp::Limits { max_bulk_len: config.max_bulk_len, max_args: config.max_args, ..Default::default() };
        ctx.spawn("resp", resp::serve(listener, svc.clone(), limits, ctx.services.clone(), ctx.shutdown.clone()));
        tracing::info!(%resp_addr, "kv: serving the Redis protocol");
        let status = axum::routing::get(move || {
            let resp_addr = resp_addr.clone();
            async move { axum::Json(serde_json::json!({ "resp_addr": resp_addr })) }
        });
        Ok(axum::Router::new().route("/", status).merge(api::routes(svc)))
    }

    fn bench(opts: &BenchOpts) -> Option<BenchFuture> {
        let opts = opts.clone();
        Some(Box::pin(async move { bench::run(&opts).await }))
    }
}
