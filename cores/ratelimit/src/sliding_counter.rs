//! Sliding window counter (the Cloudflare-style estimate): keeps the counts of the current and the
//! previous fixed window (aligned to multiples of `window_ns` from 0) and estimates the usage of
//! the sliding window ending now as
//!
//! ```text
//! estimate = previous * (window_ns - elapsed) / window_ns + current
//! ```
//!
//! where `elapsed` is the time since the current window started. A request of cost `c` is admitted
//! iff `estimate + c <= limit`. The comparison is done exactly in integers, multiplied out by
//! `window_ns` (`previous * (window_ns - elapsed) + (current + c) * window_ns <= limit * window_ns`,
//! in `u128`): no floating point, no rounding.
//!
//! **Guarantees** (clamped times), both property-tested:
//! - within each aligned window, at most `limit` (as the fixed window);
//! - within any sliding window `(t - window_ns, t]`, at most
//!   `limit + floor(limit * (window_ns - 2) / window_ns)` for `window_ns >= 2` (and `limit` for
//!   `window_ns <= 2`), hence always below `2 * limit`. This over-admission is reached: e.g.
//!   with limit 10 and a 100 ns window, 10 admitted at 99 and 9 more at 198 — 19 in `(98, 198]`.
//!
//!   Proof sketch: a window straddling the boundary `kP` holds `a` from the previous aligned window
//!   (total `C >= a`) and `b` from the current one, the last of which was admitted at elapsed
//!   `e <= P - 2` (the tail `(t - P, kP)` must be non-empty). Its admission required
//!   `C (P - e) / P + b <= limit`, so `a + b <= limit + C e / P <= limit + limit (P - 2) / P`.
//!
//! The estimate assumes the previous window's admissions were spread evenly; when they were
//! bunched at its end, the sliding window can hold more than `limit` (the bound above).
//!
//! **State:** three `u64` (window start, previous count, current count).

use serde::{Deserialize, Serialize};

use crate::{ConfigError, Decision, Limiter, nonzero, until};

/// Validated sliding counter parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "RawSlidingCounterConfig")]
pub struct SlidingCounterConfig {
    limit: u64,
    window_ns: u64,
}

#[derive(Deserialize)]
struct RawSlidingCounterConfig {
    limit: u64,
    window_ns: u64,
}

impl TryFrom<RawSlidingCounterConfig> for SlidingCounterConfig {
    type Error = ConfigError;
    fn try_from(r: RawSlidingCounterConfig) -> Result<Self, ConfigError> {
        Self::new(r.limit, r.window_ns)
    }
}

impl SlidingCounterConfig {
    /// `limit` units per (estimated) sliding window of `window_ns`. Both must be non-zero.
    pub fn new(limit: u64, window_ns: u64) -> Result<Self, ConfigError> {
        Ok(Self { limit: nonzero("limit", limit)?, window_ns: nonzero("window_ns", window_ns)? })
    }

    /// Units admitted per window.
    pub fn limit(&self) -> u64 {
        self.limit
    }

    /// The window length in nanoseconds.
    pub fn window_ns(&self) -> u64 {
        self.window_ns
    }

    /// The most this limiter admits within any sliding window of `window_ns` (see the module docs).
    pub fn max_per_sliding_window(&self) -> u64 {
        if self.window_ns <= 2 {
            return self.limit;
        }
        let p = u128::from(self.window_ns);
        // `limit * (p - 2) / p < limit`, so the sum is below `2 * limit`; it may still exceed u64.
        let extra = u128::from(self.limit) * (p - 2) / p;
        u64::try_from(u128::from(self.limit) + extra).unwrap_or(u64::MAX)
    }

    fn window_start(&self, t: u64) -> u64 {
        t - t % self.window_ns
    }
}

/// The replicated state of a [`SlidingCounter`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct SlidingCounterState {
    /// Start of the current window (a multiple of the window length).
    pub window_start_ns: u64,
    /// Units admitted in the window before it.
    pub previous: u64,
    /// Units admitted in it.
    pub current: u64,
}

/// A sliding window counter limiter: configuration plus state.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct SlidingCounter {
    config: SlidingCounterConfig,
    state: SlidingCounterState,
}

impl SlidingCounter {
    /// An empty limiter.
    pub fn new(config: SlidingCounterConfig) -> Self {
        Self { config, state: SlidingCounterState::default() }
    }

    /// A limiter resumed from a replicated or snapshotted state.
    pub fn with_state(config: SlidingCounterConfig, state: SlidingCounterState) -> Self {
        Self { config, state }
    }

    /// The configuration.
    pub fn config(&self) -> &SlidingCounterConfig {
        &self.config
    }

    /// The current state.
    pub fn state(&self) -> &SlidingCounterState {
        &self.state
    }

    fn decide(&self, now: u64, cost: u64) -> (Decision, Option<SlidingCounterState>) {
        let c = &self.config;
        let p = c.window_ns;
        let s = &self.state;
        let stored = c.window_start(s.window_start_ns);
        let eff = now.max(stored);
        let start = c.window_start(eff);
        let (previous, current) = if start == stored {
            (s.previous, s.current)
        } else if start - stored == p {
            (s.current, 0)
        } else {
            (0, 0)
        };
        let elapsed = eff - start;
        let p128 = u128::from(p);
        let used = u128::from(previous) * u128::from(p - elapsed) + u128::from(current) * p128;
        let cap = u128::from(c.limit) * p128;
        // At most `limit`, so it fits.
        let remaining = (cap.saturating_sub(used) / p128) as u64;
        let reset = |current: u64| {
            if current > 0 {
                until(now, start.saturating_add(p).saturating_add(p))
            } else if previous > 0 {
                until(now, start.saturating_add(p))
            } else {
                0
            }
        };
        if cost > remaining {
            let retry = (cost <= c.limit).then(|| {
                let at = match c.limit.checked_sub(current).and_then(|x| x.checked_sub(cost)) {
                    // Wait in this window until the previous window's weight has decayed enough.
                    Some(room) => start.saturating_add(wait_for_decay(previous, room, p)),
                    // Wait for the next window, where the current count becomes the previous one.
                    None => start.saturating_add(p).saturating_add(wait_for_decay(current, c.limit - cost, p)),
                };
                until(now, at)
            });
            let decision = Decision {
                allowed: false,
                limit: c.limit,
                remaining,
                reset_after_ns: reset(current),
                retry_after_ns: retry,
            };
            return (decision, None);
        }
        // `cost <= remaining <= limit - current`: no overflow.
        let current = current + cost;
        let decision = Decision {
            allowed: true,
            limit: c.limit,
            remaining: remaining - cost,
            reset_after_ns: reset(current),
            retry_after_ns: None,
        };
        let commit = (cost > 0).then_some(SlidingCounterState { window_start_ns: start, previous, current });
        (decision, commit)
    }
}

/// The smallest elapsed time `e` in a window at which `weight * (p - e) <= room * p`.
fn wait_for_decay(weight: u64, room: u64, p: u64) -> u64 {
    if weight == 0 {
        return 0;
    }
    let k = u128::from(room) * u128::from(p) / u128::from(weight);
    p - u64::try_from(k).unwrap_or(u64::MAX).min(p)
}

crate::limiter_from_decide!(SlidingCounter, |c| c.limit);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_over_admission_bound_is_reached() {
        let cfg = SlidingCounterConfig::new(10, 100).unwrap();
        assert_eq!(cfg.max_per_sliding_window(), 19);
        let mut l = SlidingCounter::new(cfg);
        assert!(l.check(99, 10).allowed);
        // At 150 the previous window weighs 10 * 50/100 = 5.
        assert_eq!(l.peek(150).remaining, 5);
        // At 198 it weighs 0.2: 9 more fit, 10 do not.
        let d = l.check(198, 10);
        assert!(!d.allowed);
        assert_eq!(d.retry_after_ns, Some(2));
        assert!(l.check(198, 9).allowed);
        // 19 admitted within (98, 198]; the window is full until the next one starts.
        let d = l.check(199, 1);
        assert!(!d.allowed);
        assert_eq!(d.retry_after_ns, Some(1));
        // At 200: previous = 9 at full weight, so 1 more fits.
        assert!(l.check(200, 1).allowed);
        // Then 9 * (100 - e) + 2 * 100 <= 1000 needs e >= 12.
        let d = l.check(200, 1);
        assert_eq!(d.retry_after_ns, Some(12));
        assert!(!l.check(211, 1).allowed);
        assert!(l.check(212, 1).allowed);
    }

    #[test]
    fn bound_for_tiny_windows() {
        assert_eq!(SlidingCounterConfig::new(7, 1).unwrap().max_per_sliding_window(), 7);
        assert_eq!(SlidingCounterConfig::new(7, 2).unwrap().max_per_sliding_window(), 7);
        assert_eq!(SlidingCounterConfig::new(7, 3).unwrap().max_per_sliding_window(), 9);
        assert_eq!(SlidingCounterConfig::new(u64::MAX, u64::MAX).unwrap().max_per_sliding_window(), u64::MAX);
    }

    #[test]
    fn zero_parameters_are_rejected_by_name() {
        assert_eq!(SlidingCounterConfig::new(0, 1).unwrap_err().param(), "limit");
        assert_eq!(SlidingCounterConfig::new(1, 0).unwrap_err().param(), "window_ns");
    }
}
