//! Concurrency (in-flight) limiter: at most `limit` units held at once. [`acquire`] takes `cost`
//! units if they fit, [`release`] gives units back.
//!
//! **Guarantee:** the units in flight never exceed `limit`, and releasing never underflows:
//! releasing more than is in flight releases only what is in flight (and says how much).
//!
//! There is no time dependence and no lease timeout: a holder that never releases keeps its units
//! (a caller wanting leases must expire them itself and call [`release`]). In decisions,
//! `reset_after_ns` is 0 and `retry_after_ns` is `None` (admission waits on releases, not on time).
//!
//! **State:** one `u64` (units in flight).
//!
//! [`acquire`]: ConcurrencyLimiter::acquire
//! [`release`]: ConcurrencyLimiter::release

use serde::{Deserialize, Serialize};

use crate::{ConfigError, Decision, Limiter, nonzero};

/// Validated concurrency limiter parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "RawConcurrencyConfig")]
pub struct ConcurrencyConfig {
    limit: u64,
}

#[derive(Deserialize)]
struct RawConcurrencyConfig {
    limit: u64,
}

impl TryFrom<RawConcurrencyConfig> for ConcurrencyConfig {
    type Error = ConfigError;
    fn try_from(r: RawConcurrencyConfig) -> Result<Self, ConfigError> {
        Self::new(r.limit)
    }
}

impl ConcurrencyConfig {
    /// At most `limit` units in flight; `limit` must be non-zero.
    pub fn new(limit: u64) -> Result<Self, ConfigError> {
        Ok(Self { limit: nonzero("limit", limit)? })
    }

    /// The most units in flight.
    pub fn limit(&self) -> u64 {
        self.limit
    }
}

/// The replicated state of a [`ConcurrencyLimiter`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ConcurrencyState {
    /// Units currently held.
    pub in_flight: u64,
}

/// A concurrency limiter: configuration plus state.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct ConcurrencyLimiter {
    config: ConcurrencyConfig,
    state: ConcurrencyState,
}

impl ConcurrencyLimiter {
    /// A limiter with nothing in flight.
    pub fn new(config: ConcurrencyConfig) -> Self {
        Self { config, state: ConcurrencyState::default() }
    }

    /// A limiter resumed from a replicated or snapshotted state.
    pub fn with_state(config: ConcurrencyConfig, state: ConcurrencyState) -> Self {
        Self { config, state }
    }

    /// The configuration.
    pub fn config(&self) -> &ConcurrencyConfig {
        &self.config
    }

    /// The current state.
    pub fn state(&self) -> &ConcurrencyState {
        &self.state
    }

    /// Units currently held.
    pub fn in_flight(&self) -> u64 {
        self.state.in_flight
    }

    /// Takes `cost` units if `in_flight + cost <= limit`; otherwise takes nothing. `now_ns` is
    /// not used (it is there for the common [`Limiter`] shape). `cost == 0` is a peek.
    pub fn acquire(&mut self, now_ns: u64, cost: u64) -> Decision {
        let d = self.peek(now_ns);
        if cost > d.remaining {
            return Decision { allowed: false, ..d };
        }
        self.state.in_flight += cost;
        Decision { remaining: d.remaining - cost, ..d }
    }

    /// Gives back up to `cost` units and returns how many were released: `min(cost, in_flight)`.
    /// A return below `cost` means the caller released more than it held.
    pub fn release(&mut self, cost: u64) -> u64 {
        let released = cost.min(self.state.in_flight);
        self.state.in_flight -= released;
        released
    }
}

impl Limiter for ConcurrencyLimiter {
    fn check(&mut self, now_ns: u64, cost: u64) -> Decision {
        self.acquire(now_ns, cost)
    }

    fn peek(&self, _now_ns: u64) -> Decision {
        Decision {
            allowed: true,
            limit: self.config.limit,
            remaining: self.config.limit.saturating_sub(self.state.in_flight),
            reset_after_ns: 0,
            retry_after_ns: None,
        }
    }

    fn limit(&self) -> u64 {
        self.config.limit
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn acquire_and_release() {
        let mut c = ConcurrencyLimiter::new(ConcurrencyConfig::new(3).unwrap());
        assert!(c.acquire(0, 2).allowed);
        let d = c.acquire(0, 2);
        assert_eq!((d.allowed, d.remaining, d.retry_after_ns), (false, 1, None));
        assert!(c.acquire(0, 1).allowed);
        assert_eq!(c.in_flight(), 3);
        assert_eq!(c.release(1), 1);
        assert_eq!(c.release(5), 2);
        assert_eq!(c.release(1), 0);
        assert_eq!(c.in_flight(), 0);
        assert!(c.acquire(0, 3).allowed);
    }

    #[test]
    fn zero_limit_is_rejected_by_name() {
        assert_eq!(ConcurrencyConfig::new(0).unwrap_err().param(), "limit");
    }
}
