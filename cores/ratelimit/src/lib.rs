//! The pure core of Basalt's rate limiter (S06): the algorithms only — no IO, no threads, no clock.
//!
//! Every limiter is clock-injected: the caller passes `now_ns`, an instant in **nanoseconds as
//! `u64`** on whatever monotonic or wall clock it uses (the limiter only ever compares and
//! subtracts instants). All decisions use integer arithmetic; nothing panics for any `u64` input.
//!
//! - [`token_bucket`] — tokens refill at a rate up to a capacity; a request spends tokens.
//! - [`leaky_bucket`] — the leaky bucket *as a meter*: the mirror image of the token bucket.
//! - [`fixed_window`] — at most `limit` per window aligned to multiples of the period from time 0.
//! - [`sliding_log`] — exact sliding window, keeping one entry per admission (state O(limit)).
//! - [`sliding_counter`] — the weighted estimate over two adjacent fixed windows (state O(1)).
//! - [`gcra`] — the generic cell rate algorithm with redis-cell's `CL.THROTTLE` semantics.
//! - [`concurrency`] — an in-flight limiter (acquire / release), no time dependence.
//!
//! # Common rules
//!
//! - [`Limiter::check`] either admits the request and consumes `cost`, or refuses it and leaves
//!   the state exactly as it was. `cost == 0` is a *peek*: always admitted, never changes state.
//! - A cost larger than the limiter can ever admit (above its capacity/limit) is refused with
//!   `retry_after_ns == None`: retrying cannot help. It is not a configuration error.
//! - **Time going backwards** (a `now_ns` below the time of an earlier admission) never panics.
//!   Each limiter evaluates such a request as if it came at the latest time it has accounted for
//!   (or more strictly), so every guarantee holds on the timeline of *clamped* times, where an
//!   admission's time is the maximum of its `now_ns` and all earlier admissions' times. Durations
//!   in a [`Decision`] are always measured from the `now_ns` the caller passed, so when the caller
//!   is behind they include the lag.
//! - States are plain `Serialize + Deserialize` data (for replication and snapshots). Any state,
//!   even one that did not come from this crate, is accepted without panicking; the guarantees are
//!   stated for states produced by the limiter itself.

pub mod concurrency;
pub mod fixed_window;
pub mod gcra;
pub mod leaky_bucket;
pub mod sliding_counter;
pub mod sliding_log;
pub mod token_bucket;

use serde::{Deserialize, Serialize};

pub use concurrency::{ConcurrencyConfig, ConcurrencyLimiter, ConcurrencyState};
pub use fixed_window::{FixedWindow, FixedWindowConfig, FixedWindowState};
pub use gcra::{Gcra, GcraConfig, GcraState, cl_throttle_reply};
pub use leaky_bucket::{LeakyBucket, LeakyBucketConfig, LeakyBucketState};
pub use sliding_counter::{SlidingCounter, SlidingCounterConfig, SlidingCounterState};
pub use sliding_log::{LogEntry, SlidingLog, SlidingLogConfig, SlidingLogState};
pub use token_bucket::{TokenBucket, TokenBucketConfig, TokenBucketState};

/// The outcome of one [`Limiter::check`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Decision {
    /// Whether the request was admitted (and its cost consumed).
    pub allowed: bool,
    /// The most a single request may cost (capacity / limit; `max_burst + 1` for GCRA).
    pub limit: u64,
    /// The largest cost that would be admitted right now, after this decision.
    pub remaining: u64,
    /// Nanoseconds from `now_ns` until the limiter is back to `remaining == limit` if nothing else
    /// is admitted meanwhile (0 if it already is; always 0 for the concurrency limiter).
    pub reset_after_ns: u64,
    /// When refused: `Some(d)` if the same request is admitted at `now_ns + d` (and not earlier)
    /// provided nothing else is admitted meanwhile. `None` when admitted, when the cost exceeds
    /// what the limiter can ever admit, and for the concurrency limiter (it waits on releases).
    pub retry_after_ns: Option<u64>,
}

/// A rate limiting algorithm driven by the caller's clock.
pub trait Limiter {
    /// Admits the request and consumes `cost` units, or refuses it and consumes nothing (the
    /// state is left unchanged). `cost == 0` is a peek: admitted, state unchanged.
    fn check(&mut self, now_ns: u64, cost: u64) -> Decision;

    /// What `check(now_ns, 0)` returns, without needing `&mut`.
    fn peek(&self, now_ns: u64) -> Decision;

    /// The largest cost a single request can ever be admitted with.
    fn limit(&self) -> u64;
}

/// `Limiter` for an algorithm written as `fn decide(&self, now_ns, cost) -> (Decision,
/// Option<State>)` (the decision, and the state to commit when admitted): `check` commits,
/// `peek` decides a zero cost. `$limit` is the limit from the config `c`. The module must have
/// `Limiter` in scope.
macro_rules! limiter_from_decide {
    ($t:ty, |$c:ident| $limit:expr) => {
        impl Limiter for $t {
            fn check(&mut self, now_ns: u64, cost: u64) -> $crate::Decision {
                let (decision, commit) = self.decide(now_ns, cost);
                if let Some(state) = commit {
                    self.state = state;
                }
                decision
            }

            fn peek(&self, now_ns: u64) -> $crate::Decision {
                self.decide(now_ns, 0).0
            }

            fn limit(&self) -> u64 {
                let $c = &self.config;
                $limit
            }
        }
    };
}
pub(crate) use limiter_from_decide;

/// A parameter that a configuration constructor rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// The parameter must be at least 1.
    #[error("`{param}` must be greater than zero")]
    Zero {
        /// The parameter's name, e.g. `"capacity"`.
        param: &'static str,
    },
    /// The parameter is so large that the algorithm cannot represent it.
    #[error("`{param}` = {value} is too large: {reason}")]
    TooLarge {
        /// The parameter's name.
        param: &'static str,
        /// The rejected value.
        value: u64,
        /// Why it cannot be used.
        reason: &'static str,
    },
}

impl ConfigError {
    /// The name of the offending parameter.
    pub fn param(&self) -> &'static str {
        match self {
            ConfigError::Zero { param } | ConfigError::TooLarge { param, .. } => param,
        }
    }
}

pub(crate) fn nonzero(param: &'static str, value: u64) -> Result<u64, ConfigError> {
    if value == 0 { Err(ConfigError::Zero { param }) } else { Ok(value) }
}

/// `ceil(a / b)` for `b > 0`.
pub(crate) fn ceil_div(a: u128, b: u128) -> u128 {
    if a == 0 { 0 } else { (a - 1) / b + 1 }
}

/// Saturating conversion to `u64`.
pub(crate) fn sat_u64(x: u128) -> u64 {
    u64::try_from(x).unwrap_or(u64::MAX)
}

/// The duration from the caller's `now` to the instant `eff + d` (with `eff >= now` the instant
/// the limiter evaluated at), saturating.
pub(crate) fn from_now(now: u64, eff: u64, d: u64) -> u64 {
    eff.saturating_sub(now).saturating_add(d)
}

/// The duration from `now` to the absolute instant `at`, 0 if it has passed.
pub(crate) fn until(now: u64, at: u64) -> u64 {
    at.saturating_sub(now)
}

/// Any of the limiters, for callers that choose the algorithm per rule at run time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "algorithm", rename_all = "snake_case")]
pub enum AnyLimiter {
    /// [`TokenBucket`].
    TokenBucket(TokenBucket),
    /// [`LeakyBucket`].
    LeakyBucket(LeakyBucket),
    /// [`FixedWindow`].
    FixedWindow(FixedWindow),
    /// [`SlidingLog`].
    SlidingLog(SlidingLog),
    /// [`SlidingCounter`].
    SlidingCounter(SlidingCounter),
    /// [`Gcra`].
    Gcra(Gcra),
    /// [`ConcurrencyLimiter`]; `check` is `acquire`.
    Concurrency(ConcurrencyLimiter),
}

macro_rules! dispatch {
    ($self:expr, $l:ident => $e:expr) => {
        match $self {
            AnyLimiter::TokenBucket($l) => $e,
            AnyLimiter::LeakyBucket($l) => $e,
            AnyLimiter::FixedWindow($l) => $e,
            AnyLimiter::SlidingLog($l) => $e,
            AnyLimiter::SlidingCounter($l) => $e,
            AnyLimiter::Gcra($l) => $e,
            AnyLimiter::Concurrency($l) => $e,
        }
    };
}

impl Limiter for AnyLimiter {
    fn check(&mut self, now_ns: u64, cost: u64) -> Decision {
        dispatch!(self, l => l.check(now_ns, cost))
    }

    fn peek(&self, now_ns: u64) -> Decision {
        dispatch!(self, l => l.peek(now_ns))
    }

    fn limit(&self) -> u64 {
        dispatch!(self, l => l.limit())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ceil_div_rounds_up() {
        assert_eq!(ceil_div(0, 3), 0);
        assert_eq!(ceil_div(1, 3), 1);
        assert_eq!(ceil_div(3, 3), 1);
        assert_eq!(ceil_div(4, 3), 2);
        assert_eq!(ceil_div(u128::MAX, 1), u128::MAX);
    }

    #[test]
    fn from_now_includes_lag_and_saturates() {
        assert_eq!(from_now(10, 10, 5), 5);
        assert_eq!(from_now(7, 10, 5), 8);
        assert_eq!(from_now(0, u64::MAX, 5), u64::MAX);
    }

    #[test]
    fn error_names_parameter() {
        let e = nonzero("capacity", 0).unwrap_err();
        assert_eq!(e.param(), "capacity");
        assert_eq!(e.to_string(), "`capacity` must be greater than zero");
    }
}
