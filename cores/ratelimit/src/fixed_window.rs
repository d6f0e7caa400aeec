//! Fixed window: at most `limit` units per window, windows being `[k * period, (k + 1) * period)`
//! aligned to multiples of the period from time 0.
//!
//! **Guarantee:** the admitted cost within each aligned window (clamped times) is at most `limit`.
//! Across a window boundary up to `2 * limit` can be admitted within one period (the known weakness
//! this algorithm trades for its O(1) state).
//!
//! A request whose `now_ns` falls in a window before the current one is counted in the current
//! window (time going backwards never reopens a past window).
//!
//! **State:** two `u64` (window start, count). The default state is an empty window at 0.

use serde::{Deserialize, Serialize};

use crate::{ConfigError, Decision, Limiter, nonzero, until};

/// Validated fixed window parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "RawFixedWindowConfig")]
pub struct FixedWindowConfig {
    limit: u64,
    period_ns: u64,
}

#[derive(Deserialize)]
struct RawFixedWindowConfig {
    limit: u64,
    period_ns: u64,
}

impl TryFrom<RawFixedWindowConfig> for FixedWindowConfig {
    type Error = ConfigError;
    fn try_from(r: RawFixedWindowConfig) -> Result<Self, ConfigError> {
        Self::new(r.limit, r.period_ns)
    }
}

impl FixedWindowConfig {
    /// `limit` units per window of `period_ns`. Both must be non-zero.
    pub fn new(limit: u64, period_ns: u64) -> Result<Self, ConfigError> {
        Ok(Self { limit: nonzero("limit", limit)?, period_ns: nonzero("period_ns", period_ns)? })
    }

    /// Units admitted per window.
    pub fn limit(&self) -> u64 {
        self.limit
    }

    /// The window length in nanoseconds.
    pub fn period_ns(&self) -> u64 {
        self.period_ns
    }

    fn window_start(&self, t: u64) -> u64 {
        t - t % self.period_ns
    }
}

/// The replicated state of a [`FixedWindow`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct FixedWindowState {
    /// Start of the window `count` belongs to (a multiple of the period).
    pub window_start_ns: u64,
    /// Units admitted in that window.
    pub count: u64,
}

/// A fixed window limiter: configuration plus state.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct FixedWindow {
    config: FixedWindowConfig,
    state: FixedWindowState,
}

impl FixedWindow {
    /// An empty limiter.
    pub fn new(config: FixedWindowConfig) -> Self {
        Self { config, state: FixedWindowState::default() }
    }

    /// A limiter resumed from a replicated or snapshotted state.
    pub fn with_state(config: FixedWindowConfig, state: FixedWindowState) -> Self {
        Self { config, state }
    }

    /// The configuration.
    pub fn config(&self) -> &FixedWindowConfig {
        &self.config
    }

    /// The current state.
    pub fn state(&self) -> &FixedWindowState {
        &self.state
    }

    fn decide(&self, now: u64, cost: u64) -> (Decision, Option<FixedWindowState>) {
        let c = &self.config;
        let stored_start = c.window_start(self.state.window_start_ns);
        let start = c.window_start(now.max(stored_start));
        let count = if start == stored_start { self.state.count } else { 0 };
        let end = start.saturating_add(c.period_ns);
        let remaining = c.limit.saturating_sub(count);
        let reset = |count: u64| if count == 0 { 0 } else { until(now, end) };
        if cost > remaining {
            let decision = Decision {
                allowed: false,
                limit: c.limit,
                remaining,
                reset_after_ns: reset(count),
                retry_after_ns: (cost <= c.limit).then(|| until(now, end)),
            };
            return (decision, None);
        }
        let count = count + cost;
        let decision = Decision {
            allowed: true,
            limit: c.limit,
            remaining: remaining - cost,
            reset_after_ns: reset(count),
            retry_after_ns: None,
        };
        (decision, (cost > 0).then_some(FixedWindowState { window_start_ns: start, count }))
    }
}

crate::limiter_from_decide!(FixedWindow, |c| c.limit);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_are_aligned_to_multiples_of_the_period() {
        let mut w = FixedWindow::new(FixedWindowConfig::new(3, 100).unwrap());
        assert!(w.check(150, 3).allowed);
        let d = w.check(199, 1);
        assert!(!d.allowed);
        assert_eq!(d.retry_after_ns, Some(1));
        assert_eq!(d.reset_after_ns, 1);
        // The window [200, 300) is fresh: the boundary burst of 2 * limit in 51 ns.
        assert!(w.check(200, 3).allowed);
        // Time going backwards stays in the current window.
        let d = w.check(120, 1);
        assert!(!d.allowed);
        assert_eq!(d.retry_after_ns, Some(180));
        let d = w.check(300, 4);
        assert_eq!((d.allowed, d.retry_after_ns, d.remaining), (false, None, 3));
    }

    #[test]
    fn zero_parameters_are_rejected_by_name() {
        assert_eq!(FixedWindowConfig::new(0, 1).unwrap_err().param(), "limit");
        assert_eq!(FixedWindowConfig::new(1, 0).unwrap_err().param(), "period_ns");
    }
}
