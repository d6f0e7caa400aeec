//! The harness every property test drives its limiter with.
#![allow(dead_code)]

use std::fmt::Debug;

use basalt_ratelimit_core::{Decision, Limiter};
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;

/// One request: advance the clock by `dt` (negative: the clock goes backwards), then check `cost`.
#[derive(Debug, Clone, Copy)]
pub struct Step {
    pub dt: i64,
    pub cost: u64,
}

/// Requests with forward steps in `0..=max_dt`, occasionally a backward one when `backwards`,
/// costs in `0..=max_cost` (so peeks and over-limit costs both occur).
pub fn steps(max_dt: u64, max_cost: u64, backwards: bool, len: usize) -> impl Strategy<Value = Vec<Step>> {
    let max_dt = i64::try_from(max_dt).unwrap();
    let back = if backwards { 1u32 } else { 0 };
    let dt = prop_oneof![
        6 => 0..=max_dt,
        3 => Just(0i64),
        back => -3 * max_dt..0,
    ];
    prop::collection::vec((dt, 0..=max_cost).prop_map(|(dt, cost)| Step { dt, cost }), 1..len)
}

/// An admission, at its clamped time (the maximum of its `now` and every earlier admission's).
#[derive(Debug, Clone, Copy)]
pub struct Admission {
    pub at: u64,
    pub cost: u64,
}

/// What the harness may rely on for this limiter.
#[derive(Debug, Clone, Copy)]
pub struct Checks {
    /// Refusals of admissible costs come with an exact `retry_after`.
    pub exact_retry: bool,
    /// `reset_after` is exact: full at `now + reset`, not full one nanosecond earlier.
    pub exact_reset: bool,
}

pub const TIME_BASED: Checks = Checks { exact_retry: true, exact_reset: true };

/// The time the clock starts at (room for backward steps).
pub const START: u64 = 1_000_000;

/// Runs `steps` against `l`, checking the per-decision contract, and returns the admissions and
/// the final clamped time.
pub fn drive<L>(l: &mut L, steps: &[Step], checks: Checks) -> Result<(Vec<Admission>, u64), TestCaseError>
where
    L: Limiter + Clone + PartialEq + Debug,
{
    let mut now = START;
    let mut hwm = 0;
    let mut admitted = Vec::new();
    for step in steps {
        now = now.saturating_add_signed(step.dt);
        let before = l.clone();
        let d = l.check(now, step.cost);
        check_decision(&before, l, now, step.cost, &d, checks)?;
        if d.allowed && step.cost > 0 {
            hwm = hwm.max(now);
            admitted.push(Admission { at: hwm, cost: step.cost });
        }
    }
    Ok((admitted, hwm.max(now)))
}

/// The contract of one decision `d = after.check(now, cost)` made on `before`.
pub fn check_decision<L>(
    before: &L,
    after: &L,
    now: u64,
    cost: u64,
    d: &Decision,
    checks: Checks,
) -> Result<(), TestCaseError>
where
    L: Limiter + Clone + PartialEq + Debug,
{
    let limit = after.limit();
    prop_assert_eq!(d.limit, limit);
    prop_assert!(d.remaining <= limit, "remaining {} above limit {}", d.remaining, limit);
    if cost == 0 {
        prop_assert!(d.allowed, "a peek must be admitted");
    }
    if !d.allowed || cost == 0 {
        prop_assert_eq!(before, after, "a refusal or a peek changed the state");
    } else {
        prop_assert_eq!(d.retry_after_ns, None);
    }
    // `peek` agrees with the decision just made.
    let p = after.peek(now);
    prop_assert_eq!((p.remaining, p.reset_after_ns), (d.remaining, d.reset_after_ns));
    // `remaining` is exact: that much is admitted now, one more is not.
    let mut c = after.clone();
    prop_assert!(c.check(now, d.remaining).allowed, "remaining {} refused", d.remaining);
    if d.remaining < limit {
        let mut c = after.clone();
        prop_assert!(!c.check(now, d.remaining + 1).allowed, "remaining + 1 admitted");
    }
    if !d.allowed && cost > limit {
        prop_assert_eq!(d.retry_after_ns, None, "a cost above the limit can never be admitted");
    }
    if !d.allowed && cost <= limit && checks.exact_retry {
        let r = d.retry_after_ns;
        prop_assert!(r.is_some(), "an admissible cost refused without retry_after: {:?}", d);
        let r = r.unwrap_or_default();
        prop_assert!(r > 0);
        if let Some(at) = now.checked_add(r) {
            let mut c = after.clone();
            prop_assert!(c.check(at, cost).allowed, "refused again at now + retry_after ({})", r);
            let mut c = after.clone();
            prop_assert!(!c.check(at - 1, cost).allowed, "admitted before now + retry_after ({})", r);
        }
    }
    if checks.exact_reset
        && let Some(at) = now.checked_add(d.reset_after_ns)
    {
        prop_assert_eq!(after.peek(at).remaining, limit, "not full after reset_after");
        if d.reset_after_ns > 0 {
            prop_assert!(after.peek(at - 1).remaining < limit, "full before reset_after");
        }
    }
    Ok(())
}

/// For every pair of admissions `i <= j`: the cost admitted in `[at_i, at_j]` is within
/// `bound(at_j - at_i)`.
pub fn check_interval_bound(adm: &[Admission], bound: impl Fn(u64) -> u128) -> Result<(), TestCaseError> {
    for i in 0..adm.len() {
        let mut sum = 0u128;
        for j in i..adm.len() {
            sum += u128::from(adm[j].cost);
            let b = bound(adm[j].at - adm[i].at);
            prop_assert!(sum <= b, "admitted {} in [{}, {}], bound {}", sum, adm[i].at, adm[j].at, b);
        }
    }
    Ok(())
}

/// For every admission at `t`: the cost admitted in `(t - window, t]` is within `bound`.
pub fn check_sliding_bound(adm: &[Admission], window: u64, bound: u128) -> Result<(), TestCaseError> {
    for j in 0..adm.len() {
        let t = adm[j].at;
        let sum: u128 = adm.iter().filter(|a| a.at <= t && t - a.at < window).map(|a| u128::from(a.cost)).sum();
        prop_assert!(sum <= bound, "admitted {} in ({}, {}], bound {}", sum, t.saturating_sub(window), t, bound);
    }
    Ok(())
}

/// For every window `[k * period, (k + 1) * period)`: the cost admitted in it is within `limit`.
pub fn check_aligned_bound(adm: &[Admission], period: u64, limit: u64) -> Result<(), TestCaseError> {
    let mut window = None;
    let mut sum = 0u128;
    for a in adm {
        let k = a.at / period;
        if window != Some(k) {
            window = Some(k);
            sum = 0;
        }
        sum += u128::from(a.cost);
        prop_assert!(sum <= u128::from(limit), "admitted {} in window {} of {} ns", sum, k, period);
    }
    Ok(())
}

/// After `idle` more nanoseconds the limiter is full again and admits its whole limit.
pub fn check_recovers<L: Limiter + Clone>(l: &L, end: u64, idle: u64) -> Result<(), TestCaseError> {
    let at = end + idle;
    let limit = l.limit();
    prop_assert_eq!(l.peek(at).remaining, limit, "not full {} ns after the last request", idle);
    prop_assert_eq!(l.peek(at).reset_after_ns, 0);
    let mut c = l.clone();
    prop_assert!(c.check(at, limit).allowed, "the full limit refused after {} idle ns", idle);
    Ok(())
}
