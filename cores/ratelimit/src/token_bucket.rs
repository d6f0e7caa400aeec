//! Token bucket: the bucket holds up to `capacity` tokens and gains `refill_amount` tokens every
//! `refill_period_ns` (continuously, in exact integer arithmetic); a request of cost `c` is admitted
//! if the bucket holds at least `c` tokens, which it then spends. It starts full.
//!
//! **Guarantee:** for any interval `[t1, t2]` (clamped times), the admitted cost is at most
//! `capacity + floor(refill_amount * (t2 - t1) / refill_period_ns)`. Refill is exact: the state
//! keeps the sub-token remainder (`partial`, in units of 1/`refill_period_ns` token), so no refill
//! is lost or invented by rounding.
//!
//! **State:** three `u64` (tokens, partial, last refill instant).

use serde::{Deserialize, Serialize};

use crate::{ConfigError, Decision, Limiter, ceil_div, from_now, nonzero, sat_u64};

/// Validated token bucket parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "RawTokenBucketConfig")]
pub struct TokenBucketConfig {
    capacity: u64,
    refill_amount: u64,
    refill_period_ns: u64,
}

#[derive(Deserialize)]
struct RawTokenBucketConfig {
    capacity: u64,
    refill_amount: u64,
    refill_period_ns: u64,
}

impl TryFrom<RawTokenBucketConfig> for TokenBucketConfig {
    type Error = ConfigError;
    fn try_from(r: RawTokenBucketConfig) -> Result<Self, ConfigError> {
        Self::new(r.capacity, r.refill_amount, r.refill_period_ns)
    }
}

impl TokenBucketConfig {
    /// A bucket of `capacity` tokens refilled by `refill_amount` tokens per `refill_period_ns`.
    /// Every parameter must be non-zero.
    pub fn new(capacity: u64, refill_amount: u64, refill_period_ns: u64) -> Result<Self, ConfigError> {
        Ok(Self {
            capacity: nonzero("capacity", capacity)?,
            refill_amount: nonzero("refill_amount", refill_amount)?,
            refill_period_ns: nonzero("refill_period_ns", refill_period_ns)?,
        })
    }

    /// The bucket's capacity (the largest burst).
    pub fn capacity(&self) -> u64 {
        self.capacity
    }

    /// Tokens added per `refill_period_ns`.
    pub fn refill_amount(&self) -> u64 {
        self.refill_amount
    }

    /// The refill period in nanoseconds.
    pub fn refill_period_ns(&self) -> u64 {
        self.refill_period_ns
    }

    /// Nanoseconds to refill an empty bucket completely (saturating).
    pub fn full_refill_ns(&self) -> u64 {
        sat_u64(ceil_div(u128::from(self.capacity) * u128::from(self.refill_period_ns), u128::from(self.refill_amount)))
    }

    /// Nanoseconds until `tokens` (+ `partial`) reach `target` tokens; 0 if already there.
    fn time_to(&self, tokens: u64, partial: u64, target: u64) -> u64 {
        if tokens >= target {
            return 0;
        }
        let need = u128::from(target - tokens) * u128::from(self.refill_period_ns) - u128::from(partial);
        sat_u64(ceil_div(need, u128::from(self.refill_amount)))
    }
}

/// The replicated state of a [`TokenBucket`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct TokenBucketState {
    /// Whole tokens in the bucket at `last_ns`.
    pub tokens: u64,
    /// Fraction of the next token accrued at `last_ns`, in units of 1/`refill_period_ns` token
    /// (always below `refill_period_ns`; 0 when the bucket is full).
    pub partial: u64,
    /// The instant the tokens were last accounted for (the latest admission, or 0).
    pub last_ns: u64,
}

impl TokenBucketState {
    /// A full bucket.
    pub fn full(config: &TokenBucketConfig) -> Self {
        Self { tokens: config.capacity, partial: 0, last_ns: 0 }
    }
}

/// A token bucket limiter: configuration plus state.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct TokenBucket {
    config: TokenBucketConfig,
    state: TokenBucketState,
}

impl TokenBucket {
    /// A full bucket.
    pub fn new(config: TokenBucketConfig) -> Self {
        Self { config, state: TokenBucketState::full(&config) }
    }

    /// A bucket resumed from a replicated or snapshotted state.
    pub fn with_state(config: TokenBucketConfig, state: TokenBucketState) -> Self {
        Self { config, state }
    }

    /// The configuration.
    pub fn config(&self) -> &TokenBucketConfig {
        &self.config
    }

    /// The current state.
    pub fn state(&self) -> &TokenBucketState {
        &self.state
    }

    /// The bucket's content at the effective instant `max(now, last_ns)`: (eff, tokens, partial).
    fn refill(&self, now: u64) -> (u64, u64, u64) {
        let c = &self.config;
        let s = &self.state;
        let eff = now.max(s.last_ns);
        let tokens = s.tokens.min(c.capacity);
        let partial = if tokens == c.capacity { 0 } else { s.partial.min(c.refill_period_ns - 1) };
        let total = u128::from(eff - s.last_ns) * u128::from(c.refill_amount) + u128::from(partial);
        let period = u128::from(c.refill_period_ns);
        let refilled = u128::from(tokens) + total / period;
        if refilled >= u128::from(c.capacity) {
            (eff, c.capacity, 0)
        } else {
            // `refilled < capacity` fits in u64 and `total % period < period` too.
            (eff, refilled as u64, (total % period) as u64)
        }
    }

    fn decide(&self, now: u64, cost: u64) -> (Decision, Option<TokenBucketState>) {
        let c = &self.config;
        let (eff, tokens, partial) = self.refill(now);
        if cost > tokens {
            let retry = (cost <= c.capacity).then(|| from_now(now, eff, c.time_to(tokens, partial, cost)));
            let decision = Decision {
                allowed: false,
                limit: c.capacity,
                remaining: tokens,
                reset_after_ns: from_now(now, eff, c.time_to(tokens, partial, c.capacity)),
                retry_after_ns: retry,
            };
            return (decision, None);
        }
        let tokens = tokens - cost;
        let decision = Decision {
            allowed: true,
            limit: c.capacity,
            remaining: tokens,
            reset_after_ns: from_now(now, eff, c.time_to(tokens, partial, c.capacity)),
            retry_after_ns: None,
        };
        let commit = (cost > 0).then_some(TokenBucketState { tokens, partial, last_ns: eff });
        (decision, commit)
    }
}

crate::limiter_from_decide!(TokenBucket, |c| c.capacity);

#[cfg(test)]
mod tests {
    use super::*;

    const S: u64 = 1_000_000_000;

    #[test]
    fn burst_then_refill() {
        // 10 tokens, 1 token per second.
        let mut b = TokenBucket::new(TokenBucketConfig::new(10, 1, S).unwrap());
        let d = b.check(0, 10);
        assert!(d.allowed);
        assert_eq!(d.remaining, 0);
        assert_eq!(d.reset_after_ns, 10 * S);
        let d = b.check(0, 1);
        assert!(!d.allowed);
        assert_eq!(d.retry_after_ns, Some(S));
        // Half a second gives half a token: still refused, retry in the other half.
        let d = b.check(S / 2, 1);
        assert!(!d.allowed);
        assert_eq!(d.retry_after_ns, Some(S / 2));
        assert!(b.check(S, 1).allowed);
        // Costs above the capacity can never be admitted.
        let d = b.check(100 * S, 11);
        assert!(!d.allowed);
        assert_eq!(d.retry_after_ns, None);
        assert_eq!(d.remaining, 10);
    }

    #[test]
    fn fractional_rate_is_exact() {
        // 3 tokens per 10 ns: after 4 ns, 1.2 tokens; after 7 ns, 2.1 tokens.
        let mut b = TokenBucket::new(TokenBucketConfig::new(5, 3, 10).unwrap());
        assert!(b.check(0, 5).allowed);
        assert_eq!(b.peek(3).remaining, 0);
        assert_eq!(b.peek(4).remaining, 1);
        assert!(b.check(4, 1).allowed);
        assert_eq!(b.peek(7).remaining, 1); // 0.2 + 0.9 = 1.1
        assert!(!b.check(6, 2).allowed);
    }

    #[test]
    fn time_going_backwards_does_not_refill() {
        let mut b = TokenBucket::new(TokenBucketConfig::new(2, 1, 100).unwrap());
        assert!(b.check(1_000, 2).allowed);
        let d = b.check(500, 1);
        assert!(!d.allowed);
        // 500 ns of lag plus 100 ns of refill.
        assert_eq!(d.retry_after_ns, Some(600));
        assert!(b.check(1_100, 1).allowed);
    }

    #[test]
    fn zero_parameters_are_rejected_by_name() {
        assert_eq!(TokenBucketConfig::new(0, 1, 1).unwrap_err().param(), "capacity");
        assert_eq!(TokenBucketConfig::new(1, 0, 1).unwrap_err().param(), "refill_amount");
        assert_eq!(TokenBucketConfig::new(1, 1, 0).unwrap_err().param(), "refill_period_ns");
    }
}
