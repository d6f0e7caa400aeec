//! `[systems.ids]` settings.

use basalt_idgen::SnowflakeLayout;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IdsConfig {
    /// Snowflake epoch, Unix milliseconds (default 2024-01-01T00:00:00Z).
    pub epoch_ms: u64,
    /// Snowflake layout; the three must sum to 63 (the sign bit stays 0).
    pub timestamp_bits: u8,
    pub worker_bits: u8,
    pub sequence_bits: u8,
    /// How many Snowflake generators (each with its own worker id) this node runs. Each one
    /// issues at most 2^sequence_bits IDs per millisecond (4,096 by default), so a node's
    /// capacity is `generators × 4.096M IDs/s`.
    pub generators: u32,
    /// Use worker ids `worker_id_base .. worker_id_base + generators` instead of taking free ones
    /// from the lease table. Needed while each node keeps its own table (single-node mode):
    /// give every node a disjoint range.
    pub worker_id_base: Option<u32>,
    /// A clock that is behind the last issued timestamp by at most this much is waited out; by
    /// more, the request is refused (503 `clock_behind`).
    pub max_clock_wait_ms: u64,
    /// How far ahead of the clock the durable high-water mark is reserved. IDs are issued only
    /// below a reservation that is already fsync'd, so a restart never reissues a timestamp; a
    /// restarted node waits out at most this long.
    pub reservation_ms: u64,
    /// How long a worker-id lease lives without renewal before another holder may take it.
    pub lease_ttl_ms: u64,
}

impl Default for IdsConfig {
    fn default() -> Self {
        let l = SnowflakeLayout::default();
        Self {
            epoch_ms: l.epoch_ms,
            timestamp_bits: l.timestamp_bits,
            worker_bits: l.worker_bits,
            sequence_bits: l.sequence_bits,
            generators: 8,
            worker_id_base: None,
            max_clock_wait_ms: 1_000,
            reservation_ms: 500,
            lease_ttl_ms: 30_000,
        }
    }
}

impl IdsConfig {
    pub fn layout(&self) -> anyhow::Result<SnowflakeLayout> {
        Ok(SnowflakeLayout::new(self.epoch_ms, self.timestamp_bits, self.worker_bits, self.sequence_bits)?)
    }

    pub fn validate(&self) -> anyhow::Result<SnowflakeLayout> {
        let layout = self.layout()?;
        anyhow::ensure!(self.generators >= 1, "systems.ids.generators must be at least 1");
        anyhow::ensure!(
            u64::from(self.generators) <= u64::from(layout.max_worker()) + 1,
            "systems.ids.generators = {} exceeds the {} worker ids that {} worker bits hold",
            self.generators,
            u64::from(layout.max_worker()) + 1,
            self.worker_bits
        );
        if let Some(base) = self.worker_id_base {
            anyhow::ensure!(
                u64::from(base) + u64::from(self.generators) - 1 <= u64::from(layout.max_worker()),
                "systems.ids.worker_id_base = {base} with {} generators passes the largest worker id {}",
                self.generators,
                layout.max_worker()
            );
        }
        anyhow::ensure!(self.reservation_ms >= 10, "systems.ids.reservation_ms must be at least 10");
        anyhow::ensure!(
            self.lease_ttl_ms > self.reservation_ms,
            "systems.ids.lease_ttl_ms must be longer than reservation_ms"
        );
        Ok(layout)
    }
}
