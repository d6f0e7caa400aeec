//! S05 — the coordination service: etcd's v3 gRPC API (KV, Watch, Lease, Lock, Election, and
//! enough of Maintenance and Cluster for `etcdctl`) on Basalt's consensus engine, so etcd clients
//! work unchanged. The MVCC model is `basalt-mvcc`; lease time is kept by the Raft leader; locks
//! hand out fencing tokens, and `/v1/coord/fenced/{resource}` is a resource that checks them.
//! See README.md.

mod api;
mod bench;
pub mod convert;
pub mod grpc;
pub mod service;
pub mod state;

/// The etcd v3 messages and services, generated from `proto/` at build time.
#[allow(clippy::all, missing_docs)]
pub mod pb {
    pub mod mvccpb {
        tonic::include_proto!("mvccpb");
    }
    pub mod etcdserverpb {
        tonic::include_proto!("etcdserverpb");
    }
    pub mod v3lockpb {
        tonic::include_proto!("v3lockpb");
    }
    pub mod v3electionpb {
        tonic::include_proto!("v3electionpb");
    }
}

use std::sync::Arc;

use anyhow::Context;
use basalt_consensus::Consensus;
use basalt_runtime::bench::BenchOpts;
use basalt_runtime::system::BenchFuture;
use basalt_runtime::{System, SystemContext};
use serde::{Deserialize, Serialize};

/// `[systems.coord]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CoordSettings {
    /// The etcd gRPC listener (`--etcd-addr`); port 0 picks one.
    pub etcd_addr: String,
}

impl Default for CoordSettings {
    fn default() -> Self {
        Self { etcd_addr: "127.0.0.1:2389".into() }
    }
}

#[derive(Debug)]
pub struct CoordSystem;

impl System for CoordSystem {
    const NAME: &'static str = "coord";
    type Config = CoordSettings;

    fn check(config: &CoordSettings) -> anyhow::Result<()> {
        config
            .etcd_addr
            .parse::<std::net::SocketAddr>()
            .map(drop)
            .map_err(|_| anyhow::anyhow!("systems.coord.etcd_addr must be IP:PORT, not `{}`", config.etcd_addr))
    }

    fn start(ctx: &mut SystemContext<'_>, config: CoordSettings) -> anyhow::Result<axum::Router> {
        let Some(consensus) = ctx.engine::<Consensus>() else {
            tracing::info!("coord: no consensus engine on this node; not serving the etcd API");
            return Ok(axum::Router::new().fallback(|| async {
                basalt_runtime::ApiError::unavailable(
                    "no_consensus",
                    "this node runs without the consensus engine (engines.consensus.enabled = false); the etcd API \
                     is served by cluster members",
                )
            }));
        };
        let transport = ctx.transport.clone().context("the coord system needs the transport")?;
        let node_id = ctx.identity.as_ref().map_or(0, |i| i.node_id);
        let sm = Arc::new(state::CoordSm::default());
        consensus.register(state::SYSTEM, sm.clone())?;
        let coord = Arc::new(service::Coord::new(sm, consensus, node_id, transport));

        let (listener, etcd_addr) = ctx.listen(&config.etcd_addr, "the etcd listener")?;
        let _ = coord.client_url.set(format!("http://{etcd_addr}"));
        ctx.spawn("grpc", grpc::serve(coord.clone(), listener, ctx.shutdown.clone()));
        ctx.spawn("lease-keeper", coord.clone().lease_keeper(ctx.shutdown.clone()));
        ctx.spawn("register", coord.clone().register(format!("http://{etcd_addr}"), ctx.shutdown.clone()));
        tracing::info!(%etcd_addr, "coord: serving the etcd v3 API");
        ctx.serve_to_peers(api::peer_routes(coord.clone()));
        Ok(api::routes(coord, etcd_addr))
    }

    fn bench(opts: &BenchOpts) -> Option<BenchFuture> {
        let opts = opts.clone();
        Some(Box::pin(async move { bench::run(&opts).await }))
    }
}
