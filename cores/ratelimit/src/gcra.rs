//! GCRA (generic cell rate algorithm) with redis-cell semantics.
//!
//! Parameters as in `CL.THROTTLE key max_burst count_per_period period [quantity]`: a sustained
//! rate of `count_per_period` per `period`, with bursts of up to `max_burst + 1` (the *limit*).
//! The emission interval is `T = floor(period_ns / count_per_period)` (redis-cell computes it the
//! same way, in `f64`; the two agree for periods below 2^53 ns, about 104 days) and the delay
//! variation tolerance is `τ = T * (max_burst + 1)`. The state is one instant, the theoretical
//! arrival time `tat`. A request of cost `n` computes `new_tat = max(tat, now) + n * T` and is
//! admitted iff `new_tat - τ <= now`, in which case `tat = new_tat`.
//!
//! **Guarantee:** over any interval `[t1, t2]` (clamped times) the admitted cost is at most
//! `max_burst + 1 + floor((t2 - t1) / T)`, which is `max_burst + 1 + count * (t2 - t1) / period`
//! when `count_per_period` divides `period_ns` (the truncation of `T` otherwise makes the rate
//! slightly higher than `count / period`, as in redis-cell).
//!
//! Decision fields, as redis-cell computes them (all relative to the caller's `now`):
//! `limit = max_burst + 1`; `remaining = floor((τ - ttl) / T)` where `ttl = tat - now` after the
//! decision; `reset_after = ttl`; `retry_after = new_tat - τ - now` when refused, `None` when the
//! cost can never be admitted (`n * T > τ`, i.e. `n > max_burst + 1`). redis-cell divides
//! microseconds as `f64` for `remaining`; this crate divides nanoseconds exactly (they can differ
//! only when `τ - ttl` is within a microsecond of a multiple of `T`).
//!
//! Time going backwards needs no special handling: `max(tat, now)` never lowers `tat`, and an
//! earlier `now` only makes `new_tat - τ <= now` harder to meet. When the clock is so far behind
//! that `tat - now > τ`, `remaining` is 0 (a peek is still admitted). A request whose `new_tat` would
//! not fit in `u64` nanoseconds (beyond year 2554 on the Unix epoch) is refused with no retry.
//!
//! **State:** one `u64` (`tat`); 0, or any instant in the past, means a full burst is available.
//! [`cl_throttle_reply`] turns a decision into the five integers of a `CL.THROTTLE` reply.

use serde::{Deserialize, Serialize};

use crate::{ConfigError, Decision, Limiter, nonzero, until};

const NANOS_PER_SEC: u64 = 1_000_000_000;
const NANOS_PER_MILLI: u64 = 1_000_000;

/// Validated GCRA parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "RawGcraConfig")]
pub struct GcraConfig {
    max_burst: u64,
    count_per_period: u64,
    period_ns: u64,
}

#[derive(Deserialize)]
struct RawGcraConfig {
    max_burst: u64,
    count_per_period: u64,
    period_ns: u64,
}

impl TryFrom<RawGcraConfig> for GcraConfig {
    type Error = ConfigError;
    fn try_from(r: RawGcraConfig) -> Result<Self, ConfigError> {
        Self::new(r.max_burst, r.count_per_period, r.period_ns)
    }
}

impl GcraConfig {
    /// `count_per_period` per `period_ns`, bursts of up to `max_burst + 1`. `count_per_period` and
    /// `period_ns` must be non-zero, the emission interval `period_ns / count_per_period` at least
    /// 1 ns, and `(max_burst + 1) * emission interval` must fit in `u64` nanoseconds.
    pub fn new(max_burst: u64, count_per_period: u64, period_ns: u64) -> Result<Self, ConfigError> {
        let count_per_period = nonzero("count_per_period", count_per_period)?;
        let period_ns = nonzero("period_ns", period_ns)?;
        let interval = period_ns / count_per_period;
        if interval == 0 {
            return Err(ConfigError::TooLarge {
                param: "count_per_period",
                value: count_per_period,
                reason: "the emission interval period / count_per_period must be at least 1 ns",
            });
        }
        if max_burst.checked_add(1).and_then(|limit| limit.checked_mul(interval)).is_none() {
            return Err(ConfigError::TooLarge {
                param: "max_burst",
                value: max_burst,
                reason: "(max_burst + 1) * emission interval overflows u64 nanoseconds",
            });
        }
        Ok(Self { max_burst, count_per_period, period_ns })
    }

    /// The parameters of `CL.THROTTLE key max_burst count_per_period period_secs`, with the period
    /// in whole seconds as redis-cell takes it. Errors name `period` for the period.
    pub fn from_cl_throttle(max_burst: u64, count_per_period: u64, period_secs: u64) -> Result<Self, ConfigError> {
        let period_secs = nonzero("period", period_secs)?;
        let period_ns = period_secs.checked_mul(NANOS_PER_SEC).ok_or(ConfigError::TooLarge {
            param: "period",
            value: period_secs,
            reason: "the period in nanoseconds overflows u64",
        })?;
        Self::new(max_burst, count_per_period, period_ns)
    }

    /// The burst allowance beyond the first request.
    pub fn max_burst(&self) -> u64 {
        self.max_burst
    }

    /// Requests per period (the sustained rate).
    pub fn count_per_period(&self) -> u64 {
        self.count_per_period
    }

    /// The period in nanoseconds.
    pub fn period_ns(&self) -> u64 {
        self.period_ns
    }

    /// `T = period_ns / count_per_period` (at least 1).
    pub fn emission_interval_ns(&self) -> u64 {
        self.period_ns / self.count_per_period
    }

    /// `max_burst + 1`: the largest cost a request can be admitted with.
    pub fn limit(&self) -> u64 {
        // Checked in `new`.
        self.max_burst + 1
    }

    /// `τ = T * (max_burst + 1)`: how far `tat` may run ahead of now. Also the time an exhausted
    /// limiter takes to recover fully.
    pub fn delay_variation_tolerance_ns(&self) -> u64 {
        // Checked in `new`.
        self.emission_interval_ns() * self.limit()
    }
}

/// The replicated state of a [`Gcra`] limiter.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct GcraState {
    /// The theoretical arrival time: when the limiter will be back to a full burst.
    pub tat_ns: u64,
}

/// A GCRA limiter: configuration plus state.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Gcra {
    config: GcraConfig,
    state: GcraState,
}

impl Gcra {
    /// A limiter with its full burst available (a fresh redis-cell key).
    pub fn new(config: GcraConfig) -> Self {
        Self { config, state: GcraState::default() }
    }

    /// A limiter resumed from a replicated or snapshotted state.
    pub fn with_state(config: GcraConfig, state: GcraState) -> Self {
        Self { config, state }
    }

    /// The configuration.
    pub fn config(&self) -> &GcraConfig {
        &self.config
    }

    /// The current state.
    pub fn state(&self) -> &GcraState {
        &self.state
    }

    /// `CL.THROTTLE` on this limiter: [`Limiter::check`] then [`cl_throttle_reply`].
    pub fn cl_throttle(&mut self, now_ns: u64, quantity: u64) -> [i64; 5] {
        cl_throttle_reply(&self.check(now_ns, quantity))
    }

    fn decide(&self, now: u64, cost: u64) -> (Decision, Option<GcraState>) {
        let c = &self.config;
        let interval = c.emission_interval_ns();
        let tau = c.delay_variation_tolerance_ns();
        let tat = self.state.tat_ns.max(now);
        let remaining = |ttl: u64| tau.saturating_sub(ttl) / interval;
        let new_tat = cost.checked_mul(interval).and_then(|inc| tat.checked_add(inc).map(|new_tat| (inc, new_tat)));
        match new_tat {
            // A peek is always admitted, even when the clock went back so far that `tat - now > τ`.
            Some((_, new_tat)) if cost == 0 || u128::from(new_tat) <= u128::from(now) + u128::from(tau) => {
                let ttl = new_tat.saturating_sub(now);
                let decision = Decision {
                    allowed: true,
                    limit: c.limit(),
                    remaining: remaining(ttl),
                    reset_after_ns: ttl,
                    retry_after_ns: None,
                };
                (decision, (cost > 0).then_some(GcraState { tat_ns: new_tat }))
            }
            refused => {
                let ttl = tat - now;
                // `new_tat - τ > now` here, so the subtraction is positive.
                let retry = refused.filter(|&(inc, _)| inc <= tau).map(|(_, new_tat)| until(now, new_tat - tau));
                let decision = Decision {
                    allowed: false,
                    limit: c.limit(),
                    remaining: remaining(ttl),
                    reset_after_ns: ttl,
                    retry_after_ns: retry,
                };
                (decision, None)
            }
        }
    }
}

crate::limiter_from_decide!(Gcra, |c| c.limit());

/// A duration as redis-cell replies it: whole seconds, plus one if the remainder has at least a
/// whole millisecond (so a sub-millisecond remainder is dropped).
fn redis_cell_seconds(ns: u64) -> i64 {
    let secs = ns / NANOS_PER_SEC + u64::from((ns % NANOS_PER_SEC) / NANOS_PER_MILLI > 0);
    i64::try_from(secs).unwrap_or(i64::MAX)
}

/// The reply of redis-cell's `CL.THROTTLE` for a decision: `[limited (0/1), limit, remaining,
/// retry_after_seconds (-1 unless refused with a possible retry), reset_after_seconds]`, durations
/// rounded as redis-cell rounds them (up to the next second, unless the fraction is below 1 ms).
pub fn cl_throttle_reply(d: &Decision) -> [i64; 5] {
    [
        i64::from(!d.allowed),
        i64::try_from(d.limit).unwrap_or(i64::MAX),
        i64::try_from(d.remaining).unwrap_or(i64::MAX),
        d.retry_after_ns.map_or(-1, redis_cell_seconds),
        redis_cell_seconds(d.reset_after_ns),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounding_matches_redis_cell() {
        assert_eq!(redis_cell_seconds(0), 0);
        assert_eq!(redis_cell_seconds(999_999), 0);
        assert_eq!(redis_cell_seconds(1_000_000), 1);
        assert_eq!(redis_cell_seconds(2 * NANOS_PER_SEC), 2);
        assert_eq!(redis_cell_seconds(2 * NANOS_PER_SEC + 999_999), 2);
        assert_eq!(redis_cell_seconds(2 * NANOS_PER_SEC + 1_000_000), 3);
        assert_eq!(redis_cell_seconds(u64::MAX), 18_446_744_074);
    }

    #[test]
    fn derived_values() {
        let c = GcraConfig::from_cl_throttle(15, 30, 60).unwrap();
        assert_eq!(c.emission_interval_ns(), 2 * NANOS_PER_SEC);
        assert_eq!(c.limit(), 16);
        assert_eq!(c.delay_variation_tolerance_ns(), 32 * NANOS_PER_SEC);
        // 3 per second truncates T to 333_333_333 ns, as redis-cell does.
        assert_eq!(GcraConfig::new(0, 3, NANOS_PER_SEC).unwrap().emission_interval_ns(), 333_333_333);
    }

    #[test]
    fn bad_parameters_name_the_parameter() {
        assert_eq!(GcraConfig::new(1, 0, 1).unwrap_err().param(), "count_per_period");
        assert_eq!(GcraConfig::new(1, 1, 0).unwrap_err().param(), "period_ns");
        assert_eq!(GcraConfig::new(1, 11, 10).unwrap_err().param(), "count_per_period");
        assert_eq!(GcraConfig::new(u64::MAX, 1, 1).unwrap_err().param(), "max_burst");
        assert_eq!(GcraConfig::new(u64::MAX / 2, 1, 2).unwrap_err().param(), "max_burst");
        assert_eq!(GcraConfig::from_cl_throttle(1, 1, 0).unwrap_err().param(), "period");
        assert_eq!(GcraConfig::from_cl_throttle(1, 1, u64::MAX).unwrap_err().param(), "period");
        let msg = GcraConfig::new(1, 11, 10).unwrap_err().to_string();
        assert!(msg.contains("count_per_period") && msg.contains("11"), "{msg}");
    }
}
