//! The running ID service: the pure generators from `basalt_idgen`, driven by the node's clock,
//! with reservations made durable before any ID under them is handed out.
//!
//! The refusal protocol (see `basalt_idgen::Refusal`):
//! - `Wait` — the sequence of this millisecond is used up, or the clock is a little behind: try
//!   the other Snowflake shards, then sleep until the named millisecond.
//! - `NeedReservation` — the clock has passed the durable high-water mark: write a new one
//!   (`now + reservation_ms`), fsync it, raise every generator's limit, retry.
//! - `ClockBehind` / `OutOfRange` — refuse with 503 and count it; never issue.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use axum::http::StatusCode;
use basalt_idgen::{Kind, Lease, Refusal, Snowflake, SnowflakeLayout, UlidGen, UuidV7Gen};
use basalt_runtime::{ApiError, Clock};
use rand::SeedableRng;
use rand::rngs::SmallRng;

use crate::config::IdsConfig;
use crate::leases::LocalRegistry;
use crate::metrics::IdsMetrics;

pub const COUNT_MAX: usize = 100_000;

pub struct IdService {
    pub layout: SnowflakeLayout,
    config: IdsConfig,
    clock: Clock,
    shards: Vec<Mutex<Snowflake>>,
    ulid: Mutex<(UlidGen, SmallRng)>,
    uuid: Mutex<(UuidV7Gen, SmallRng)>,
    next_shard: AtomicUsize,
    leases: Mutex<Vec<Lease>>,
    registry: LocalRegistry,
    renew: tokio::sync::Mutex<()>,
    reserved_until_ms: AtomicU64,
    pub metrics: IdsMetrics,
}

/// IDs of one kind, as the integers they are.
pub enum Batch {
    Snowflake(Vec<u64>),
    Ulid(Vec<u128>),
    UuidV7(Vec<u128>),
}

fn lock<T>(m: &Mutex<T>) -> Result<MutexGuard<'_, T>, ApiError> {
    m.lock().map_err(|_| ApiError::internal("an ID generator failed earlier; restart the node"))
}

impl IdService {
    /// Open the lease table, take worker ids, and make the first reservation — all durable
    /// before the node reports ready. Blocking: call at startup.
    pub fn start(
        config: IdsConfig,
        clock: Clock,
        registry: LocalRegistry,
        metrics: IdsMetrics,
    ) -> anyhow::Result<Self> {
        let layout = config.validate()?;
        let now = clock.now_ms();
        let node_floor = registry.reserved_until_ms()?;
        let leases = registry.acquire(
            config.generators,
            config.worker_id_base,
            layout.max_worker(),
            now,
            config.lease_ttl_ms,
        )?;
        let shards = leases
            .iter()
            .map(|l| {
                Snowflake::new(layout, l.worker, l.floor_ms.max(node_floor), 0, config.max_clock_wait_ms)
                    .map(Mutex::new)
            })
            .collect::<Result<Vec<_>, _>>()?;
        let mut seed = SmallRng::from_os_rng();
        let ulid = UlidGen::new(node_floor, 0, config.max_clock_wait_ms);
        let uuid = UuidV7Gen::new(node_floor, 0, config.max_clock_wait_ms);
        let svc = Self {
            layout,
            shards,
            ulid: Mutex::new((ulid, SmallRng::from_rng(&mut seed))),
            uuid: Mutex::new((uuid, SmallRng::from_rng(&mut seed))),
            next_shard: AtomicUsize::new(0),
            leases: Mutex::new(Vec::new()),
            registry,
            renew: tokio::sync::Mutex::new(()),
            reserved_until_ms: AtomicU64::new(0),
            metrics,
            clock,
            config,
        };
        *svc.leases.lock().map_err(|_| anyhow::anyhow!("lease lock"))? = leases;
        let target = svc.reserve(now)?;
        svc.registry.namespace().store().sync_blocking()?;
        svc.publish(target)?;
        let workers: Vec<u32> =
            svc.leases.lock().map_err(|_| anyhow::anyhow!("lease lock"))?.iter().map(|l| l.worker).collect();
        tracing::info!(holder = svc.registry.holder(), ?workers, floor_ms = node_floor, "ids: worker ids leased");
        Ok(svc)
    }

    /// Write (not yet fsync) leases and high-water mark reserved through `now + reservation_ms`.
    fn reserve(&self, now: u64) -> anyhow::Result<u64> {
        let target = now.max(self.reserved_until_ms.load(Ordering::Acquire)) + self.config.reservation_ms;
        let leases = self.leases.lock().map_err(|_| anyhow::anyhow!("lease lock"))?.clone();
        let renewed = self.registry.renew_all(&leases, target, now, self.config.lease_ttl_ms)?;
        *self.leases.lock().map_err(|_| anyhow::anyhow!("lease lock"))? = renewed;
        self.metrics.renewals.inc();
        Ok(target)
    }

    /// Let the generators issue up to `target` — only after it is durable.
    fn publish(&self, target: u64) -> anyhow::Result<()> {
        for s in &self.shards {
            s.lock().map_err(|_| anyhow::anyhow!("generator lock"))?.set_reserved_until(target);
        }
        self.ulid.lock().map_err(|_| anyhow::anyhow!("generator lock"))?.0.set_reserved_until(target);
        self.uuid.lock().map_err(|_| anyhow::anyhow!("generator lock"))?.0.set_reserved_until(target);
        self.reserved_until_ms.fetch_max(target, Ordering::AcqRel);
        Ok(())
    }

    /// Make sure the durable reservation covers `through_ms`.
    pub async fn extend(&self, through_ms: u64) -> Result<(), ApiError> {
        let _one_at_a_time = self.renew.lock().await;
        if self.reserved_until_ms.load(Ordering::Acquire) >= through_ms {
            return Ok(());
        }
        let now = self.clock.now_ms();
        let target = self
            .reserve(now.max(through_ms))
            .map_err(|e| ApiError::unavailable("lease_lost", format!("cannot extend the worker-id lease: {e:#}")))?;
        self.registry
            .namespace()
            .sync()
            .await
            .map_err(|e| ApiError::unavailable("storage_unavailable", e.to_string()))?;
        self.publish(target).map_err(|e| ApiError::internal(e.to_string()))
    }

    /// Called periodically: keep the reservation ahead of the clock so requests never wait
    /// for an fsync.
    pub async fn keep_reserved(&self) {
        let now = self.clock.now_ms();
        if self.reserved_until_ms.load(Ordering::Acquire) < now + self.config.reservation_ms / 2
            && let Err(e) = self.extend(now).await
        {
            tracing::warn!(error = %e, "ids: renewing the reservation failed");
        }
    }

    /// Handle a refusal: Ok(()) means "retry now".
    async fn settle(&self, refusal: Refusal, now: u64) -> Result<(), ApiError> {
        match refusal {
            Refusal::Wait { until_ms } => {
                self.metrics.waits.inc();
                if until_ms <= now + 1 {
                    // The next millisecond is less than one away: the timer wheel's 1 ms
                    // granularity would sleep up to 2 ms, so yield and re-read the clock.
                    tokio::task::yield_now().await;
                } else {
                    tokio::time::sleep(Duration::from_millis(until_ms - now)).await;
                }
                Ok(())
            }
            Refusal::NeedReservation { through_ms } => self.extend(through_ms).await,
            Refusal::ClockBehind { behind_ms } => {
                self.metrics.refused("clock_behind");
                tracing::warn!(behind_ms, "ids: clock behind the last issued timestamp; refusing");
                Err(ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "clock_behind",
                    format!(
                        "the clock is {behind_ms} ms behind the last timestamp this node issued or reserved; \
                         refusing to issue IDs that could repeat (the limit for waiting is {} ms)",
                        self.config.max_clock_wait_ms
                    ),
                )
                .with_retry_after(behind_ms.div_ceil(1000).max(1)))
            }
            Refusal::OutOfRange { now_ms } => {
                self.metrics.refused("out_of_range");
                Err(ApiError::unavailable(
                    "clock_out_of_range",
                    format!("the clock reads {now_ms} ms, which the ID layout cannot encode"),
                ))
            }
        }
    }

    pub async fn issue(&self, kind: Kind, count: usize) -> Result<Batch, ApiError> {
        debug_assert!((1..=COUNT_MAX).contains(&count));
        let batch = match kind {
            Kind::Snowflake => {
                let mut out = vec![0u64; count];
                self.fill_snowflake(&mut out).await?;
                Batch::Snowflake(out)
            }
            Kind::Ulid => {
                Batch::Ulid(self.fill_random(&self.ulid, count, |(g, r), now, out| g.fill(now, r, out)).await?)
            }
            Kind::UuidV7 => {
                Batch::UuidV7(self.fill_random(&self.uuid, count, |(g, r), now, out| g.fill(now, r, out)).await?)
            }
        };
        self.metrics.issued(kind.as_str(), count as u64);
        Ok(batch)
    }

    /// Fill from the shards, starting at a rotating one; a shard out of sequence for this
    /// millisecond hands over to the next before anyone waits.
    async fn fill_snowflake(&self, out: &mut [u64]) -> Result<(), ApiError> {
        let n = self.shards.len();
        let start = self.next_shard.fetch_add(1, Ordering::Relaxed);
        let mut filled = 0;
        loop {
            let now = self.clock.now_ms();
            let mut first_refusal = None;
            for i in 0..n {
                if filled == out.len() {
                    return Ok(());
                }
                match lock(&self.shards[(start + i) % n])?.fill(now, &mut out[filled..]) {
                    Ok(k) => filled += k,
                    Err(Refusal::Wait { until_ms }) => {
                        first_refusal = Some(match first_refusal {
                            Some(Refusal::Wait { until_ms: u }) => Refusal::Wait { until_ms: u.min(until_ms) },
                            other => other.unwrap_or(Refusal::Wait { until_ms }),
                        })
                    }
                    Err(other) => {
                        first_refusal = Some(other);
                        break;
                    }
                }
            }
            if filled == out.len() {
                return Ok(());
            }
            if let Some(r) = first_refusal {
                self.settle(r, now).await?;
            }
        }
    }

    async fn fill_random<G>(
        &self,
        gen_lock: &Mutex<G>,
        count: usize,
        fill: impl Fn(&mut G, u64, &mut [u128]) -> Result<usize, Refusal>,
    ) -> Result<Vec<u128>, ApiError> {
        let mut out = vec![0u128; count];
        let mut filled = 0;
        while filled < count {
            let now = self.clock.now_ms();
            let r = fill(&mut *lock(gen_lock)?, now, &mut out[filled..]);
            match r {
                Ok(k) => filled += k,
                Err(refusal) => self.settle(refusal, now).await?,
            }
        }
        Ok(out)
    }

    pub fn status(&self) -> serde_json::Value {
        let leases = self.leases.lock().map(|l| l.clone()).unwrap_or_default();
        serde_json::json!({
            "holder": self.registry.holder(),
            "now_ms": self.clock.now_ms(),
            "reserved_until_ms": self.reserved_until_ms.load(Ordering::Acquire),
            "layout": {
                "epoch_ms": self.layout.epoch_ms,
                "timestamp_bits": self.layout.timestamp_bits,
                "worker_bits": self.layout.worker_bits,
                "sequence_bits": self.layout.sequence_bits,
            },
            "leases": leases,
        })
    }
}
