//! Leaky bucket **as a meter**: a bucket of `capacity` units leaks `leak_amount` units every
//! `leak_period_ns` (continuously, exact integer arithmetic); a request of cost `c` pours `c` units
//! in and is admitted only if the bucket does not overflow. It starts empty.
//!
//! It is the mirror image of the [token bucket](crate::token_bucket): the water level is the
//! token bucket's missing tokens (`level = capacity - tokens`), leaking is refilling. With the same
//! capacity and rate, both make *identical* decisions (this is property-tested), both admit bursts
//! up to `capacity`, and both have the same guarantee: over any interval `[t1, t2]` (clamped times)
//! the admitted cost is at most `capacity + floor(leak_amount * (t2 - t1) / leak_period_ns)`.
//! The difference is only in the state: an empty (idle) leaky bucket is all zeros, convenient
//! for a store where an absent key means "no usage". This is *not* the leaky bucket as a queue
//! (a traffic shaper that delays requests and emits them at a steady rate with no bursts).
//!
//! **State:** three `u64` (level, partial leak, last instant).

use serde::{Deserialize, Serialize};

use crate::{ConfigError, Decision, Limiter, ceil_div, from_now, nonzero, sat_u64};

/// Validated leaky bucket parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "RawLeakyBucketConfig")]
pub struct LeakyBucketConfig {
    capacity: u64,
    leak_amount: u64,
    leak_period_ns: u64,
}

#[derive(Deserialize)]
struct RawLeakyBucketConfig {
    capacity: u64,
    leak_amount: u64,
    leak_period_ns: u64,
}

impl TryFrom<RawLeakyBucketConfig> for LeakyBucketConfig {
    type Error = ConfigError;
    fn try_from(r: RawLeakyBucketConfig) -> Result<Self, ConfigError> {
        Self::new(r.capacity, r.leak_amount, r.leak_period_ns)
    }
}

impl LeakyBucketConfig {
    /// A bucket of `capacity` units leaking `leak_amount` units per `leak_period_ns`.
    /// Every parameter must be non-zero.
    pub fn new(capacity: u64, leak_amount: u64, leak_period_ns: u64) -> Result<Self, ConfigError> {
        Ok(Self {
            capacity: nonzero("capacity", capacity)?,
            leak_amount: nonzero("leak_amount", leak_amount)?,
            leak_period_ns: nonzero("leak_period_ns", leak_period_ns)?,
        })
    }

    /// The bucket's capacity (the largest burst).
    pub fn capacity(&self) -> u64 {
        self.capacity
    }

    /// Units leaked per `leak_period_ns`.
    pub fn leak_amount(&self) -> u64 {
        self.leak_amount
    }

    /// The leak period in nanoseconds.
    pub fn leak_period_ns(&self) -> u64 {
        self.leak_period_ns
    }

    /// Nanoseconds for a full bucket to drain completely (saturating).
    pub fn full_drain_ns(&self) -> u64 {
        sat_u64(ceil_div(u128::from(self.capacity) * u128::from(self.leak_period_ns), u128::from(self.leak_amount)))
    }

    /// Nanoseconds until the level (`level` minus `partial` leaked) is at most `target`.
    fn time_to(&self, level: u64, partial: u64, target: u64) -> u64 {
        if level <= target {
            return 0;
        }
        let need = u128::from(level - target) * u128::from(self.leak_period_ns) - u128::from(partial);
        sat_u64(ceil_div(need, u128::from(self.leak_amount)))
    }
}

/// The replicated state of a [`LeakyBucket`]; the default is an empty bucket.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct LeakyBucketState {
    /// Whole units in the bucket at `last_ns` (rounded up: the true level is `level - partial/period`).
    pub level: u64,
    /// Leak accrued towards the next whole unit at `last_ns`, in units of 1/`leak_period_ns`
    /// (always below `leak_period_ns`; 0 when the bucket is empty).
    pub partial: u64,
    /// The instant the level was last accounted for (the latest admission, or 0).
    pub last_ns: u64,
}

/// A leaky bucket (meter) limiter: configuration plus state.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct LeakyBucket {
    config: LeakyBucketConfig,
    state: LeakyBucketState,
}

impl LeakyBucket {
    /// An empty bucket.
    pub fn new(config: LeakyBucketConfig) -> Self {
        Self { config, state: LeakyBucketState::default() }
    }

    /// A bucket resumed from a replicated or snapshotted state.
    pub fn with_state(config: LeakyBucketConfig, state: LeakyBucketState) -> Self {
        Self { config, state }
    }

    /// The configuration.
    pub fn config(&self) -> &LeakyBucketConfig {
        &self.config
    }

    /// The current state.
    pub fn state(&self) -> &LeakyBucketState {
        &self.state
    }

    /// The bucket's level at the effective instant `max(now, last_ns)`: (eff, level, partial).
    fn leak(&self, now: u64) -> (u64, u64, u64) {
        let c = &self.config;
        let s = &self.state;
        let eff = now.max(s.last_ns);
        let partial = if s.level == 0 { 0 } else { s.partial.min(c.leak_period_ns - 1) };
        let total = u128::from(eff - s.last_ns) * u128::from(c.leak_amount) + u128::from(partial);
        let period = u128::from(c.leak_period_ns);
        let drained = total / period;
        if drained >= u128::from(s.level) {
            (eff, 0, 0)
        } else {
            // `drained < level` fits in u64 and `total % period < period` too.
            (eff, s.level - drained as u64, (total % period) as u64)
        }
    }

    fn decide(&self, now: u64, cost: u64) -> (Decision, Option<LeakyBucketState>) {
        let c = &self.config;
        let (eff, level, partial) = self.leak(now);
        let room = c.capacity.saturating_sub(level);
        if cost > room {
            let retry = (cost <= c.capacity).then(|| from_now(now, eff, c.time_to(level, partial, c.capacity - cost)));
            let decision = Decision {
                allowed: false,
                limit: c.capacity,
                remaining: room,
                reset_after_ns: from_now(now, eff, c.time_to(level, partial, 0)),
                retry_after_ns: retry,
            };
            return (decision, None);
        }
        let level = level + cost;
        let decision = Decision {
            allowed: true,
            limit: c.capacity,
            remaining: room - cost,
            reset_after_ns: from_now(now, eff, c.time_to(level, partial, 0)),
            retry_after_ns: None,
        };
        let commit = (cost > 0).then_some(LeakyBucketState { level, partial, last_ns: eff });
        (decision, commit)
    }
}

crate::limiter_from_decide!(LeakyBucket, |c| c.capacity);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fills_and_drains() {
        // 4 units, leaking 1 per 10 ns.
        let mut b = LeakyBucket::new(LeakyBucketConfig::new(4, 1, 10).unwrap());
        assert_eq!(b.state(), &LeakyBucketState::default());
        let d = b.check(100, 3);
        assert!(d.allowed);
        assert_eq!(d.remaining, 1);
        assert_eq!(d.reset_after_ns, 30);
        let d = b.check(105, 2);
        assert!(!d.allowed);
        assert_eq!(d.retry_after_ns, Some(5));
        assert!(b.check(110, 2).allowed);
        assert_eq!(b.peek(150).remaining, 4);
        let d = b.check(150, 5);
        assert_eq!((d.allowed, d.retry_after_ns), (false, None));
    }

    #[test]
    fn zero_parameters_are_rejected_by_name() {
        assert_eq!(LeakyBucketConfig::new(0, 1, 1).unwrap_err().param(), "capacity");
        assert_eq!(LeakyBucketConfig::new(1, 0, 1).unwrap_err().param(), "leak_amount");
        assert_eq!(LeakyBucketConfig::new(1, 1, 0).unwrap_err().param(), "leak_period_ns");
    }
}
