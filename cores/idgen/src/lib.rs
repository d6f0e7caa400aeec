//! `basalt-idgen`: the pure core of S01, a unique ID generator.
//!
//! Three ID kinds share one clock discipline ([`TimeGuard`]):
//!
//! * [`Snowflake`]: 63-bit integers, `timestamp | worker | sequence` ([`SnowflakeLayout`]);
//! * [`UlidGen`]: monotonic 128-bit ULIDs;
//! * [`UuidV7Gen`]: RFC 9562 UUIDv7 with a dedicated monotonic counter.
//!
//! The crate is *pure*: it never does IO, never reads the system clock, never spawns a thread
//! and keeps no global state. Every call that needs the time takes `now_ms` (Unix
//! milliseconds) from the caller, and randomness comes from a caller-supplied
//! [`rand::RngCore`]. That is what makes the guarantees testable under any clock behaviour:
//!
//! * no generator ever issues the same ID twice, and each generator's IDs strictly increase,
//!   whatever sequence of `now_ms` values it is fed (backward jumps included);
//! * no ID carries a timestamp `<=` the durable floor it was built with (the high-water mark
//!   of a previous life) or `>` its durable reservation.
//!
//! When a generator cannot issue it returns a [`Refusal`] telling the driver what to do.
//! Worker ids for Snowflake generators are handed out through a [`LeaseTable`], whose fencing
//! numbers and floors keep two holders of one worker id from ever issuing the same timestamps.

mod decode;
mod layout;
mod lease;
mod snowflake;
mod time_guard;
mod ulid;
mod uuidv7;

pub use crate::decode::{DecodeError, Decoded, Kind, decode};
pub use crate::layout::{LayoutError, SnowflakeLayout, SnowflakeParts};
pub use crate::lease::{Lease, LeaseError, LeaseTable};
pub use crate::snowflake::Snowflake;
pub use crate::time_guard::{Tick, TimeGuard};
pub use crate::ulid::{UlidGen, UlidParts, format_ulid, parse_ulid, ulid_parts};
pub use crate::uuidv7::{UuidV7Gen, UuidV7Parts, format_uuid, parse_uuidv7, uuidv7_parts};

/// Why a generator did not issue an ID, and what the driver must do about it.
///
/// A refusal never changes what the generator will issue later: the driver may retry the
/// same call once it has done what the refusal asks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// Retry once the clock reads at least `until_ms` (counter exhausted within a millisecond,
    /// or the clock is behind the last used timestamp by no more than the tolerance).
    #[error("no ID can be issued before the clock reads {until_ms} ms (Unix): wait until then and retry")]
    Wait { until_ms: u64 },
    /// The clock is behind the last used timestamp (or the durable floor) by more than the
    /// tolerance: refuse, never issue an ID for a timestamp already used.
    #[error(
        "the clock is {behind_ms} ms behind the last timestamp already used, more than the \
         tolerated wait: refusing rather than risk reissuing a used timestamp"
    )]
    ClockBehind { behind_ms: u64 },
    /// `now_ms` is beyond the durable reservation: the caller must durably extend it through
    /// at least `through_ms` (call `set_reserved_until`) and retry.
    #[error(
        "the clock is past the durable reservation: persist a reservation through at least \
         {through_ms} ms (Unix), call set_reserved_until and retry"
    )]
    NeedReservation { through_ms: u64 },
    /// The timestamp cannot be encoded (before the epoch, or past the largest timestamp the
    /// layout holds).
    #[error(
        "the timestamp {now_ms} ms (Unix) cannot be encoded: it is before the ID layout's epoch \
         or past the largest timestamp the layout holds"
    )]
    OutOfRange { now_ms: u64 },
}

impl Refusal {
    /// Whether retrying can succeed after the driver does what the refusal asks (wait, or
    /// extend the reservation). `ClockBehind` and `OutOfRange` must be refused upstream.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Refusal::Wait { .. } | Refusal::NeedReservation { .. })
    }
}
