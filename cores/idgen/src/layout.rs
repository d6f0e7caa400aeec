//! The Snowflake bit layout: how a timestamp, a worker id and a sequence number share 63 bits.
//!
//! From the most significant bit down: one sign bit (always 0, so every ID is a positive
//! `i64` for Java and SQL users), `timestamp_bits` of milliseconds since `epoch_ms`,
//! `worker_bits` of worker id, `sequence_bits` of per-millisecond sequence. Putting the
//! timestamp on top makes IDs sort by time; putting the worker above the sequence makes one
//! worker's IDs within a millisecond contiguous, which is what lets `fill` be a plain
//! increment.

use crate::DecodeError;
use serde::{Deserialize, Serialize};

/// Bits available to the three fields: 64 minus the sign bit.
const PAYLOAD_BITS: u32 = 63;
/// Below this the layout would run out of timestamps within weeks (2^32 ms is ~50 days).
const MIN_TIMESTAMP_BITS: u8 = 32;
/// Widest worker or sequence field: beyond this a field would starve the timestamp.
const MAX_FIELD_BITS: u8 = 22;

/// How a Snowflake ID divides its 63 bits. Build it with [`SnowflakeLayout::new`] (or
/// deserialize it, which validates the same way); the fields are public for reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "LayoutFields")]
pub struct SnowflakeLayout {
    /// Unix milliseconds of timestamp 0.
    pub epoch_ms: u64,
    pub timestamp_bits: u8,
    pub worker_bits: u8,
    pub sequence_bits: u8,
}

/// The fields of a decoded Snowflake ID.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnowflakeParts {
    /// Unix milliseconds (the epoch already added back).
    pub timestamp_ms: u64,
    pub worker: u32,
    pub sequence: u32,
}

/// Why a layout (or a worker id for it) is not acceptable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum LayoutError {
    #[error(
        "timestamp_bits + worker_bits + sequence_bits must be exactly 63 (the sign bit stays 0 so \
         IDs are positive i64), but {timestamp_bits} + {worker_bits} + {sequence_bits} = {sum}"
    )]
    BitSum { timestamp_bits: u8, worker_bits: u8, sequence_bits: u8, sum: u32 },
    #[error("worker_bits must be between 1 and 22, got {0}")]
    WorkerBits(u8),
    #[error("sequence_bits must be between 1 and 22, got {0}")]
    SequenceBits(u8),
    #[error("timestamp_bits must be at least 32 (2^32 ms is only ~50 days), got {0}")]
    TimestampBits(u8),
    #[error(
        "epoch {epoch_ms} ms plus the {timestamp_bits}-bit timestamp range overflows a 64-bit \
         Unix millisecond count: choose an earlier epoch"
    )]
    EpochOverflow { epoch_ms: u64, timestamp_bits: u8 },
    #[error("worker id {worker} does not fit the layout: the largest worker id is {max_worker}")]
    WorkerOutOfRange { worker: u32, max_worker: u32 },
}

impl Default for SnowflakeLayout {
    /// Epoch 2024-01-01T00:00:00Z, 41 bits of timestamp (~69 years), 1,024 workers, 4,096 IDs
    /// per millisecond per worker: the classic Twitter split.
    fn default() -> Self {
        Self { epoch_ms: 1_704_067_200_000, timestamp_bits: 41, worker_bits: 10, sequence_bits: 12 }
    }
}

impl SnowflakeLayout {
    /// A validated layout: the bits sum to exactly 63, worker and sequence get 1 to 22 bits
    /// each, the timestamp at least 32, and the last encodable timestamp fits in a `u64`.
    pub fn new(epoch_ms: u64, timestamp_bits: u8, worker_bits: u8, sequence_bits: u8) -> Result<Self, LayoutError> {
        let layout = Self { epoch_ms, timestamp_bits, worker_bits, sequence_bits };
        layout.validate()?;
        Ok(layout)
    }

    /// Check the rules of [`new`](Self::new). Generators call this again, because the fields
    /// are public and a hand-built layout could skip them.
    pub fn validate(&self) -> Result<(), LayoutError> {
        let (t, w, s) = (self.timestamp_bits, self.worker_bits, self.sequence_bits);
        if !(1..=MAX_FIELD_BITS).contains(&w) {
            return Err(LayoutError::WorkerBits(w));
        }
        if !(1..=MAX_FIELD_BITS).contains(&s) {
            return Err(LayoutError::SequenceBits(s));
        }
        let sum = u32::from(t) + u32::from(w) + u32::from(s);
        if sum != PAYLOAD_BITS {
            return Err(LayoutError::BitSum { timestamp_bits: t, worker_bits: w, sequence_bits: s, sum });
        }
        if t < MIN_TIMESTAMP_BITS {
            return Err(LayoutError::TimestampBits(t));
        }
        if self.epoch_ms.checked_add(mask(t)).is_none() {
            return Err(LayoutError::EpochOverflow { epoch_ms: self.epoch_ms, timestamp_bits: t });
        }
        Ok(())
    }

    /// Pack the fields into an ID. The caller guarantees the ranges
    /// (`epoch_ms <= unix_ms <= max_timestamp_ms()`, `worker <= max_worker()`,
    /// `sequence <= max_sequence()`); they are checked in debug builds only because this sits
    /// on the hot path.
    pub fn compose(&self, unix_ms: u64, worker: u32, sequence: u32) -> u64 {
        debug_assert!(
            (self.epoch_ms..=self.max_timestamp_ms()).contains(&unix_ms),
            "timestamp {unix_ms} outside the layout"
        );
        debug_assert!(worker <= self.max_worker(), "worker {worker} outside the layout");
        debug_assert!(sequence <= self.max_sequence(), "sequence {sequence} outside the layout");
        let offset = unix_ms.wrapping_sub(self.epoch_ms);
        (offset << self.timestamp_shift()) | (u64::from(worker) << self.sequence_bits) | u64::from(sequence)
    }

    /// Split an ID into its fields, ignoring the sign bit. For IDs this crate issued; use
    /// [`decode`](Self::decode) for IDs from outside.
    pub fn decompose(&self, id: u64) -> SnowflakeParts {
        let offset = (id >> self.timestamp_shift()) & mask(self.timestamp_bits);
        SnowflakeParts {
            timestamp_ms: self.epoch_ms + offset,
            worker: ((id >> self.sequence_bits) & mask(self.worker_bits)) as u32,
            sequence: (id & mask(self.sequence_bits)) as u32,
        }
    }

    /// Split an ID from outside into its fields, rejecting one with the sign bit set (no
    /// generator issues those, and they are negative as `i64`).
    pub fn decode(&self, id: u64) -> Result<SnowflakeParts, DecodeError> {
        if id >> PAYLOAD_BITS != 0 {
            return Err(DecodeError::SignBit { id });
        }
        Ok(self.decompose(id))
    }

    /// The largest worker id.
    pub fn max_worker(&self) -> u32 {
        mask(self.worker_bits) as u32
    }

    /// The largest sequence number within one millisecond.
    pub fn max_sequence(&self) -> u32 {
        mask(self.sequence_bits) as u32
    }

    /// Unix milliseconds of the last millisecond the layout can encode.
    pub fn max_timestamp_ms(&self) -> u64 {
        self.epoch_ms + mask(self.timestamp_bits)
    }

    /// How many IDs one worker can issue in one millisecond.
    pub fn ids_per_ms_per_worker(&self) -> u64 {
        1 << self.sequence_bits
    }

    fn timestamp_shift(&self) -> u32 {
        u32::from(self.worker_bits) + u32::from(self.sequence_bits)
    }
}

/// The low `bits` bits set (`bits <= 63`).
fn mask(bits: u8) -> u64 {
    (1u64 << bits) - 1
}

/// The serialized shape of a layout; deserializing goes through [`SnowflakeLayout::new`] so
/// a config file cannot smuggle in an invalid layout.
#[derive(Deserialize)]
struct LayoutFields {
    epoch_ms: u64,
    timestamp_bits: u8,
    worker_bits: u8,
    sequence_bits: u8,
}

impl TryFrom<LayoutFields> for SnowflakeLayout {
    type Error = LayoutError;

    fn try_from(f: LayoutFields) -> Result<Self, LayoutError> {
        Self::new(f.epoch_ms, f.timestamp_bits, f.worker_bits, f.sequence_bits)
    }
}
