//! The ring engine as the node sees it: prepared before systems (they find [`RingHandle`] in
//! the extensions and register their updaters), started after them (join, gossip, repair).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::routing::{get, post};
use basalt_runtime::ApiError;
use basalt_runtime::engine::{BoxFuture, Engine, EngineContext, EngineRoutes};
use basalt_runtime::http::extract::Json;
use basalt_runtime::transport::Wire;
use serde::{Deserialize, Serialize};

use crate::coordinator::{
    ACTOR_KEY, Coordinator, MERGE, MergeReq, PUT, PutReq, Quorum, READ, ReadReq, RingError, UPDATE, UpdateReq,
};
use crate::membership::{MemberInfo, Membership};
use crate::repair::{
    AE_EXCHANGE, AE_ROOTS, ExchangeReq, GC_CHECK, GC_PURGE, GcReq, HANDOFF, Objects, RepairStats, Repairer, RootsReq,
};
use crate::replica::Replica;

pub const GOSSIP: &str = "/ring/gossip";

/// `[engines.ring]`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RingConfig {
    /// The hash space is split into 2^partition_bits partitions — fixed for a cluster's life.
    pub partition_bits: u32,
    /// Tokens per node on the ring.
    pub vnodes: u32,
    /// Replicas per key, and the default read and write quorums.
    pub n: usize,
    pub r: usize,
    pub w: usize,
    pub gossip_ms: u64,
    /// Phi-accrual: a member is treated as down once the suspicion passes this…
    pub phi_threshold: f64,
    /// …or, at the latest, once its heartbeat has not risen for this long.
    pub suspect_ms: u64,
    pub handoff_ms: u64,
    /// Anti-entropy round interval.
    pub ae_ms: u64,
    pub request_timeout_ms: u64,
    /// How long the decider must have seen a tombstone unchanged before it may collect it.
    pub tombstone_grace_ms: u64,
    /// Decoded objects kept in memory (write-through; evicted arbitrarily beyond this). 0: none.
    pub cache_bytes_max: usize,
    /// Where the replica's objects live: fjall's LSM tree, or in memory with an append-only log.
    pub storage: RingStorage,
}

/// `engines.ring.storage`: the backend of the `ring` namespace (the objects). Membership,
/// hints and the actor id (`ring_meta`) stay in the LSM store either way.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RingStorage {
    /// fjall's LSM tree (`Store::namespace`).
    #[default]
    Lsm,
    /// An ordered map in memory, every change appended to `<data_dir>/memlog/ring.log`
    /// (`Store::namespace_in_memory`): Redis's AOF model, durable per the node's fsync policy.
    Memory,
}

impl RingStorage {
    pub fn as_str(self) -> &'static str {
        match self {
            RingStorage::Lsm => "lsm",
            RingStorage::Memory => "memory",
        }
    }
}

impl Default for RingConfig {
    fn default() -> Self {
        Self {
            partition_bits: 8,
            vnodes: 64,
            n: 3,
            r: 2,
            w: 2,
            gossip_ms: 200,
            phi_threshold: 5.0,
            suspect_ms: 5000,
            handoff_ms: 1000,
            ae_ms: 5000,
            request_timeout_ms: 2000,
            tombstone_grace_ms: 60_000,
            cache_bytes_max: 256 * 1024 * 1024,
            storage: RingStorage::Lsm,
        }
    }
}

impl RingConfig {
    fn check(&self) -> anyhow::Result<()> {
        anyhow::ensure!((1..=16).contains(&self.partition_bits), "engines.ring.partition_bits must be 1-16");
        anyhow::ensure!((1..=4096).contains(&self.vnodes), "engines.ring.vnodes must be 1-4096");
        Quorum { n: self.n, r: self.r, w: self.w }.check().map_err(|e| anyhow::anyhow!("engines.ring: {e}"))?;
        anyhow::ensure!(
            self.gossip_ms > 0 && self.suspect_ms > self.gossip_ms,
            "engines.ring.suspect_ms must exceed gossip_ms"
        );
        anyhow::ensure!(self.handoff_ms > 0 && self.ae_ms > 0, "engines.ring.handoff_ms and ae_ms must be positive");
        Ok(())
    }
}

/// What systems use: reads, writes and updates through the ring, and its defaults.
#[derive(Clone)]
pub struct RingHandle {
    pub coord: Arc<Coordinator>,
    pub repairer: Arc<Repairer>,
    pub config: RingConfig,
}

impl RingHandle {
    pub fn quorum(&self) -> Quorum {
        Quorum { n: self.config.n, r: self.config.r, w: self.config.w }
    }

    pub fn membership(&self) -> &Arc<Membership> {
        &self.coord.membership
    }
}

#[derive(Default)]
pub struct RingEngine {
    handle: Option<RingHandle>,
}

impl RingEngine {
    pub fn new() -> Self {
        Self::default()
    }
}

impl Engine for RingEngine {
    fn name(&self) -> &'static str {
        "ring"
    }

    fn prepare(&mut self, ctx: &mut EngineContext<'_>, config: toml::Table) -> anyhow::Result<()> {
        let config: RingConfig =
            toml::Value::Table(config).try_into().map_err(|e| anyhow::anyhow!("engines.ring: {e}"))?;
        config.check()?;
        let meta = ctx.store.namespace("ring_meta")?;
        // A namespace's data is never moved between backends: opening `ring` the other way while
        // the other backend holds data is refused by the store, naming both.
        let objects = match config.storage {
            RingStorage::Lsm => ctx.store.namespace("ring"),
            RingStorage::Memory => ctx.store.namespace_in_memory("ring"),
        }
        .map_err(|e| anyhow::anyhow!("engines.ring.storage = \"{}\": {e:#}", config.storage.as_str()))?;
        let replica = Arc::new(Replica::open(objects, config.partition_bits, config.cache_bytes_max)?);
        let actor = match meta.get(ACTOR_KEY)? {
            Some(b) if b.len() == 8 => u64::from_be_bytes(b.try_into().unwrap_or([0; 8])),
            _ => {
                // A new data directory: a new actor, so no dot is ever reused after a wipe.
                let a = crate::random_u64();
                meta.put(ACTOR_KEY, a.to_be_bytes())?;
                ctx.store.sync_blocking()?;
                a
            }
        };
        let id = &ctx.identity;
        let me = MemberInfo {
            node_id: id.node_id,
            peer_addr: id.peer_addr.to_string(),
            http_addr: id.http_addr.to_string(),
            endpoints: Default::default(),
            heartbeat: 0,
            left: false,
        };
        let membership = Arc::new(Membership::open(
            me,
            meta.clone(),
            config.partition_bits,
            config.vnodes,
            (Duration::from_millis(config.suspect_ms), config.phi_threshold, Duration::from_millis(config.gossip_ms)),
        )?);
        let coord = Arc::new(Coordinator {
            membership,
            replica,
            transport: ctx.transport.clone(),
            actor: Mutex::new(actor),
            timeout: Duration::from_millis(config.request_timeout_ms),
            updaters: Default::default(),
            meta,
            combiners: (0..crate::coordinator::COMBINE_LANES).map(|_| Default::default()).collect(),
        });
        let repairer = Arc::new(Repairer {
            coord: coord.clone(),
            n: config.n,
            stats: Mutex::new(RepairStats::default()),
            tombstone_grace: Duration::from_millis(config.tombstone_grace_ms),
            tombstones: Mutex::default(),
        });
        let handle = RingHandle { coord, repairer, config };
        ctx.extensions.insert(Arc::new(handle.clone()));
        self.handle = Some(handle);
        Ok(())
    }

    fn start<'a>(&'a mut self, ctx: &'a mut EngineContext<'_>) -> BoxFuture<'a, anyhow::Result<EngineRoutes>> {
        Box::pin(async move {
            let h = self.handle.clone().ok_or_else(|| anyhow::anyhow!("ring engine not prepared"))?;
            if let Some(addr) = ctx.identity.join.clone() {
                let (h2, stop) = (h.clone(), ctx.shutdown.clone());
                ctx.tasks.spawn("ring/join".into(), async move {
                    tokio::select! { _ = stop.cancelled() => {}, _ = join(h2, addr) => {} }
                });
            }
            let (h2, stop) = (h.clone(), ctx.shutdown.clone());
            ctx.tasks.spawn("ring/gossip".into(), gossip_loop(h2, stop));
            let (r, cfg, stop) = (h.repairer.clone(), h.config.clone(), ctx.shutdown.clone());
            ctx.tasks.spawn(
                "ring/repair".into(),
                r.run(Duration::from_millis(cfg.handoff_ms), Duration::from_millis(cfg.ae_ms), stop),
            );
            Ok(EngineRoutes { peer: peer_routes(h.clone()), public: public_routes(h) })
        })
    }

    fn stop(&mut self) -> BoxFuture<'_, ()> {
        Box::pin(async {})
    }
}

/// Ask a member (HTTP) for the member table until it answers.
async fn join(h: RingHandle, addr: String) {
    let client = basalt_runtime::reqwest::Client::new();
    let mut backoff = Duration::from_millis(100);
    loop {
        let me = h.membership().table();
        match client.post(format!("http://{addr}/v1/ring/join")).json(&me).send().await {
            Ok(r) if r.status().is_success() => {
                if let Ok(table) = r.json::<Vec<MemberInfo>>().await {
                    h.membership().merge(table);
                    tracing::info!(%addr, "ring: joined");
                    return;
                }
            }
            Ok(r) => tracing::warn!(%addr, status = %r.status(), "ring: join refused; retrying"),
            Err(e) => tracing::warn!(%addr, error = %e, "ring: join failed; retrying"),
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(2));
    }
}

/// Each round: bump the heartbeat, exchange tables with one random peer.
async fn gossip_loop(h: RingHandle, stop: basalt_runtime::node::CancellationToken) {
    let mut tick = tokio::time::interval(Duration::from_millis(h.config.gossip_ms));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let m = h.membership();
        m.tick();
        let peers = m.peers();
        if peers.is_empty() {
            continue;
        }
        let peer = &peers[(crate::random_u64() % peers.len() as u64) as usize];
        let t = h.coord.transport.clone();
        let (m, peer) = (m.clone(), peer.clone());
        // One round never waits for a slow peer before the next.
        tokio::spawn(async move {
            let timeout = Some(Duration::from_millis(1000));
            let r = t.call::<_, Vec<MemberInfo>>(peer.node_id, &peer.peer_addr, GOSSIP, &m.table(), timeout).await;
            if let Ok(theirs) = r
                && m.merge(theirs)
            {
                tracing::info!("ring: membership changed");
            }
        });
    }
}

fn wire_err(e: anyhow::Error) -> ApiError {
    ApiError::internal(format!("{e:#}"))
}

fn peer_routes(h: RingHandle) -> Router {
    Router::new()
        .route(
            GOSSIP,
            post(|State(h): State<RingHandle>, Wire(t): Wire<Vec<MemberInfo>>| async move {
                h.membership().merge(t);
                Wire(h.membership().table())
            }),
        )
        .route(
            READ,
            post(|State(h): State<RingHandle>, Wire(r): Wire<ReadReq>| async move {
                h.coord.replica.get(&r.key).map(|o| Wire(crate::replica::WireObj(o))).map_err(wire_err)
            }),
        )
        .route(
            MERGE,
            post(|State(h): State<RingHandle>, Wire(r): Wire<MergeReq>| async move {
                h.coord.replica.merge(&r.key, &r.obj).await.map(|_| Wire(())).map_err(wire_err)
            }),
        )
        .route(
            PUT,
            post(|State(h): State<RingHandle>, Wire(r): Wire<PutReq>| async move {
                Wire(h.coord.coordinate_put(&r.key, r.ctx, r.value, r.quorum).await)
            }),
        )
        .route(
            UPDATE,
            post(|State(h): State<RingHandle>, Wire(r): Wire<UpdateReq>| async move {
                let res: Result<Vec<u8>, RingError> =
                    h.coord.coordinate_update(&r.updater, &r.key, &r.arg, r.quorum).await;
                Wire(res)
            }),
        )
        .route(
            HANDOFF,
            post(|State(h): State<RingHandle>, Wire(objs): Wire<Objects>| async move {
                for (k, o) in &objs.0 {
                    h.coord.replica.merge(k, o).await.map_err(wire_err)?;
                }
                Ok::<_, ApiError>(Wire(()))
            }),
        )
        .route(
            GC_CHECK,
            post(|State(h): State<RingHandle>, Wire(r): Wire<GcReq>| async move { Wire(h.repairer.gc_check(&r)) }),
        )
        .route(
            GC_PURGE,
            post(|State(h): State<RingHandle>, Wire(r): Wire<GcReq>| async move { Wire(h.repairer.purge(&r).await) }),
        )
        .route(
            AE_ROOTS,
            post(|State(h): State<RingHandle>, Wire(r): Wire<RootsReq>| async move { Wire(h.repairer.roots(r)) }),
        )
        .route(
            AE_EXCHANGE,
            post(|State(h): State<RingHandle>, Wire(r): Wire<ExchangeReq>| async move {
                h.repairer.exchange(r).await.map(Wire).map_err(wire_err)
            }),
        )
        .with_state(h)
}

#[derive(Serialize)]
struct MemberView {
    #[serde(flatten)]
    info: MemberInfo,
    alive: bool,
}

fn public_routes(h: RingHandle) -> Router {
    Router::new()
        .route(
            "/v1/ring",
            get(|State(h): State<RingHandle>| async move {
                let m = h.membership();
                let members: Vec<MemberView> =
                    m.table().into_iter().map(|info| MemberView { alive: m.alive(info.node_id), info }).collect();
                let ring = m.ring();
                let stats = h.repairer.stats.lock().unwrap_or_else(|e| e.into_inner()).clone();
                axum::Json(serde_json::json!({
                    "node_id": m.me, "actor": format!("{:016x}", h.coord.actor()), "members": members,
                    "partitions": ring.partitions(), "n": h.config.n, "r": h.config.r, "w": h.config.w,
                    "partitions_held": h.coord.replica.partitions_held().len(), "repair": stats,
                    "stored_objects": h.coord.replica.all().map(|a| a.len()).unwrap_or(0),
                    "storage": h.config.storage.as_str(), "memlog": h.coord.replica.memlog_stats(),
                }))
            }),
        )
        .route(
            "/v1/ring/placement/{*key}",
            get(|State(h): State<RingHandle>, axum::extract::Path(key): axum::extract::Path<String>| async move {
                let ring = h.membership().ring();
                let p = ring.partition_of(basalt_ring::hash::hash64(key.as_bytes()));
                let list: Vec<u64> = ring.walk(p).collect();
                axum::Json(serde_json::json!({
                    "key": key, "partition": p, "home": &list[..list.len().min(h.config.n)], "preference_list": list,
                }))
            }),
        )
        .route(
            "/v1/ring/join",
            post(|State(h): State<RingHandle>, Json(t): Json<Vec<MemberInfo>>| async move {
                h.membership().merge(t);
                axum::Json(h.membership().table())
            }),
        )
        .route(
            "/v1/ring/leave",
            post(|State(h): State<RingHandle>| async move {
                h.membership().set_left(true).map_err(wire_err)?;
                Ok::<_, ApiError>(axum::Json(serde_json::json!({"left": true})))
            }),
        )
        .route(
            "/v1/ring/rejoin",
            post(|State(h): State<RingHandle>| async move {
                h.membership().set_left(false).map_err(wire_err)?;
                Ok::<_, ApiError>(axum::Json(serde_json::json!({"left": false})))
            }),
        )
        .with_state(h)
}
