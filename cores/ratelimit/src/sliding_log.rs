//! Sliding window log: exact. It keeps one entry (instant, cost) per admission still inside the
//! window and admits a request if the cost admitted in the last `window_ns` plus its own cost is
//! at most `limit`. An admission at `a` counts at `t` while `t - a < window_ns`.
//!
//! **Guarantee:** for every window `(t - window_ns, t]` (clamped times), the admitted cost is at
//! most `limit` — no boundary burst, unlike the fixed window and the sliding counter.
//!
//! **State:** O(limit): one 16-byte entry per admission within the last window (costs are at
//! least 1 and sum to at most `limit`, so there are at most `limit` entries; admissions at the same
//! instant share one). Each check is O(entries) time. Use it for small limits; for large ones
//! prefer [`gcra`](crate::gcra) or [`sliding_counter`](crate::sliding_counter).

use std::collections::VecDeque;

use serde::{Deserialize, Serialize};

use crate::{ConfigError, Decision, Limiter, nonzero, until};

/// Validated sliding log parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "RawSlidingLogConfig")]
pub struct SlidingLogConfig {
    limit: u64,
    window_ns: u64,
}

#[derive(Deserialize)]
struct RawSlidingLogConfig {
    limit: u64,
    window_ns: u64,
}

impl TryFrom<RawSlidingLogConfig> for SlidingLogConfig {
    type Error = ConfigError;
    fn try_from(r: RawSlidingLogConfig) -> Result<Self, ConfigError> {
        Self::new(r.limit, r.window_ns)
    }
}

impl SlidingLogConfig {
    /// `limit` units per any window of `window_ns`. Both must be non-zero.
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
}

/// One admission in the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct LogEntry {
    /// When it was admitted (clamped time).
    pub at_ns: u64,
    /// Its cost (at least 1).
    pub cost: u64,
}

/// The replicated state of a [`SlidingLog`]: admissions oldest first.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct SlidingLogState {
    /// Admissions of the last window, in increasing `at_ns` order (may hold expired ones).
    pub entries: VecDeque<LogEntry>,
}

/// A sliding window log limiter: configuration plus state.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct SlidingLog {
    config: SlidingLogConfig,
    state: SlidingLogState,
}

impl SlidingLog {
    /// An empty log.
    pub fn new(config: SlidingLogConfig) -> Self {
        Self { config, state: SlidingLogState::default() }
    }

    /// A log resumed from a replicated or snapshotted state.
    pub fn with_state(config: SlidingLogConfig, state: SlidingLogState) -> Self {
        Self { config, state }
    }

    /// The configuration.
    pub fn config(&self) -> &SlidingLogConfig {
        &self.config
    }

    /// The current state.
    pub fn state(&self) -> &SlidingLogState {
        &self.state
    }

    /// Whether an entry still counts at `eff` (entries from the future count, conservatively).
    fn live(&self, e: &LogEntry, eff: u64) -> bool {
        eff.saturating_sub(e.at_ns) < self.config.window_ns
    }

    fn decide(&self, now: u64) -> (u64, u64, Decision) {
        let c = &self.config;
        let eff = self.state.entries.back().map_or(now, |e| now.max(e.at_ns));
        let mut used = 0u64;
        let mut last_expiry = None;
        for e in self.state.entries.iter().filter(|e| self.live(e, eff)) {
            used = used.saturating_add(e.cost);
            last_expiry = last_expiry.max(Some(e.at_ns.saturating_add(c.window_ns)));
        }
        let remaining = c.limit.saturating_sub(used);
        let decision = Decision {
            allowed: true,
            limit: c.limit,
            remaining,
            reset_after_ns: last_expiry.map_or(0, |at| until(now, at)),
            retry_after_ns: None,
        };
        (eff, used, decision)
    }

    /// When a request of `cost` could be admitted: once enough of the oldest entries expired.
    fn retry_after(&self, now: u64, eff: u64, used: u64, cost: u64) -> Option<u64> {
        let c = &self.config;
        if cost > c.limit {
            return None;
        }
        let need = used.saturating_add(cost) - c.limit;
        let mut freed = 0u64;
        for e in self.state.entries.iter().filter(|e| self.live(e, eff)) {
            freed = freed.saturating_add(e.cost);
            if freed >= need {
                return Some(until(now, e.at_ns.saturating_add(c.window_ns)));
            }
        }
        None
    }
}

impl Limiter for SlidingLog {
    fn check(&mut self, now_ns: u64, cost: u64) -> Decision {
        let (eff, used, mut decision) = self.decide(now_ns);
        if cost > decision.remaining {
            decision.allowed = false;
            decision.retry_after_ns = self.retry_after(now_ns, eff, used, cost);
            return decision;
        }
        decision.remaining -= cost;
        if cost == 0 {
            return decision;
        }
        let window = self.config.window_ns;
        let entries = &mut self.state.entries;
        while entries.front().is_some_and(|e| eff.saturating_sub(e.at_ns) >= window) {
            entries.pop_front();
        }
        match entries.back_mut() {
            Some(last) if last.at_ns == eff => last.cost = last.cost.saturating_add(cost),
            _ => entries.push_back(LogEntry { at_ns: eff, cost }),
        }
        decision.reset_after_ns = decision.reset_after_ns.max(until(now_ns, eff.saturating_add(window)));
        decision
    }

    fn peek(&self, now_ns: u64) -> Decision {
        self.decide(now_ns).2
    }

    fn limit(&self) -> u64 {
        self.config.limit
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exact_window() {
        let mut l = SlidingLog::new(SlidingLogConfig::new(3, 100).unwrap());
        assert!(l.check(10, 1).allowed);
        assert!(l.check(50, 2).allowed);
        let d = l.check(60, 1);
        assert!(!d.allowed);
        // The entry at 10 leaves the window at 110.
        assert_eq!(d.retry_after_ns, Some(50));
        assert_eq!(d.reset_after_ns, 90);
        let d = l.check(60, 3);
        assert_eq!(d.retry_after_ns, Some(90));
        assert!(!l.check(109, 1).allowed);
        assert!(l.check(110, 1).allowed);
        assert_eq!(l.state().entries.len(), 2);
        assert_eq!(l.check(200, 4).retry_after_ns, None);
    }

    #[test]
    fn same_instant_admissions_share_an_entry() {
        let mut l = SlidingLog::new(SlidingLogConfig::new(5, 100).unwrap());
        for _ in 0..5 {
            assert!(l.check(7, 1).allowed);
        }
        assert_eq!(l.state().entries.len(), 1);
        // Backwards time is accounted at the latest instant.
        assert!(!l.check(3, 1).allowed);
        assert_eq!(l.check(3, 1).retry_after_ns, Some(104));
    }

    #[test]
    fn zero_parameters_are_rejected_by_name() {
        assert_eq!(SlidingLogConfig::new(0, 1).unwrap_err().param(), "limit");
        assert_eq!(SlidingLogConfig::new(1, 0).unwrap_err().param(), "window_ns");
    }
}
