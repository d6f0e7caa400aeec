//! Property tests: per algorithm, random sequences of (time step, cost) — forward, standing still
//! and backwards — checked against the algorithm's promise over every window, the per-decision
//! contract (see `common::check_decision`) and liveness.

mod common;

use basalt_ratelimit_core::*;
use common::*;
use proptest::prelude::*;

const LEN: usize = 120;

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn token_bucket_admits_at_most_capacity_plus_refill(
        capacity in 1u64..=20,
        amount in 1u64..=5,
        period in 1u64..=1_000,
        backwards in any::<bool>(),
        steps in steps(300, 24, true, LEN),
    ) {
        let steps: Vec<Step> = steps.into_iter().filter(|s| backwards || s.dt >= 0).collect();
        let cfg = TokenBucketConfig::new(capacity, amount, period).unwrap();
        let mut l = TokenBucket::new(cfg);
        let (adm, end) = drive(&mut l, &steps, TIME_BASED)?;
        check_interval_bound(&adm, |dt| {
            u128::from(capacity) + u128::from(amount) * u128::from(dt) / u128::from(period)
        })?;
        check_recovers(&l, end, cfg.full_refill_ns())?;
    }

    #[test]
    fn leaky_bucket_admits_at_most_capacity_plus_leak(
        capacity in 1u64..=20,
        amount in 1u64..=5,
        period in 1u64..=1_000,
        steps in steps(300, 24, true, LEN),
    ) {
        let cfg = LeakyBucketConfig::new(capacity, amount, period).unwrap();
        let mut l = LeakyBucket::new(cfg);
        let (adm, end) = drive(&mut l, &steps, TIME_BASED)?;
        check_interval_bound(&adm, |dt| {
            u128::from(capacity) + u128::from(amount) * u128::from(dt) / u128::from(period)
        })?;
        check_recovers(&l, end, cfg.full_drain_ns())?;
    }

    /// The leaky bucket (meter) is the token bucket's mirror image: identical decisions.
    #[test]
    fn leaky_bucket_decides_as_the_token_bucket(
        capacity in 1u64..=20,
        amount in 1u64..=5,
        period in 1u64..=1_000,
        steps in steps(300, 24, true, LEN),
    ) {
        let mut t = TokenBucket::new(TokenBucketConfig::new(capacity, amount, period).unwrap());
        let mut l = LeakyBucket::new(LeakyBucketConfig::new(capacity, amount, period).unwrap());
        let mut now = START;
        for s in &steps {
            now = now.saturating_add_signed(s.dt);
            prop_assert_eq!(t.check(now, s.cost), l.check(now, s.cost));
            prop_assert_eq!(t.state().tokens, capacity - l.state().level);
        }
    }

    #[test]
    fn fixed_window_admits_at_most_limit_per_aligned_window(
        limit in 1u64..=20,
        period in 1u64..=1_000,
        steps in steps(300, 24, true, LEN),
    ) {
        let mut l = FixedWindow::new(FixedWindowConfig::new(limit, period).unwrap());
        let (adm, end) = drive(&mut l, &steps, TIME_BASED)?;
        check_aligned_bound(&adm, period, limit)?;
        check_recovers(&l, end, period)?;
    }

    #[test]
    fn sliding_log_admits_at_most_limit_per_sliding_window(
        limit in 1u64..=20,
        window in 1u64..=1_000,
        steps in steps(300, 24, true, LEN),
    ) {
        let mut l = SlidingLog::new(SlidingLogConfig::new(limit, window).unwrap());
        let (adm, end) = drive(&mut l, &steps, TIME_BASED)?;
        check_sliding_bound(&adm, window, u128::from(limit))?;
        prop_assert!(l.state().entries.len() as u64 <= limit, "more than limit entries");
        check_recovers(&l, end, window)?;
    }

    #[test]
    fn sliding_counter_stays_within_its_documented_bound(
        limit in 1u64..=20,
        window in 1u64..=400,
        steps in steps(150, 24, true, LEN),
    ) {
        let cfg = SlidingCounterConfig::new(limit, window).unwrap();
        let mut l = SlidingCounter::new(cfg);
        let (adm, end) = drive(&mut l, &steps, TIME_BASED)?;
        check_aligned_bound(&adm, window, limit)?;
        let bound = cfg.max_per_sliding_window();
        prop_assert!(bound < 2 * limit);
        check_sliding_bound(&adm, window, u128::from(bound))?;
        check_recovers(&l, end, 2 * window)?;
    }

    /// Requests bunched at the end of a window, then spread over the next: the sliding counter's
    /// worst case, which a uniform random schedule rarely hits.
    #[test]
    fn sliding_counter_bound_under_boundary_bursts(
        limit in 1u64..=20,
        window in 2u64..=400,
        offsets in prop::collection::vec((0u64..3, 1u64..=3), 1..60),
    ) {
        let cfg = SlidingCounterConfig::new(limit, window).unwrap();
        let mut l = SlidingCounter::new(cfg);
        let mut adm = Vec::new();
        // A burst at the last instant of window 1, then requests at increasing offsets in window 2.
        let burst_at = 2 * window - 1;
        if l.check(burst_at, limit).allowed {
            adm.push(Admission { at: burst_at, cost: limit });
        }
        let mut t = 2 * window;
        for (dt, cost) in offsets {
            t += dt * window / 8;
            let before = l.clone();
            let d = l.check(t, cost);
            check_decision(&before, &l, t, cost, &d, TIME_BASED)?;
            if d.allowed {
                adm.push(Admission { at: t, cost });
            }
        }
        check_sliding_bound(&adm, window, u128::from(cfg.max_per_sliding_window()))?;
        check_aligned_bound(&adm, window, limit)?;
    }

    /// Periods a multiple of the count, so `floor(count * dt / period) = floor(dt / T)`.
    #[test]
    fn gcra_admits_at_most_burst_plus_rate(
        max_burst in 0u64..=10,
        count in 1u64..=5,
        interval in 1u64..=200,
        steps in steps(300, 14, true, LEN),
    ) {
        let period = interval * count;
        let cfg = GcraConfig::new(max_burst, count, period).unwrap();
        let mut l = Gcra::new(cfg);
        let (adm, end) = drive(&mut l, &steps, TIME_BASED)?;
        check_interval_bound(&adm, |dt| {
            u128::from(max_burst) + 1 + u128::from(count) * u128::from(dt) / u128::from(period)
        })?;
        check_recovers(&l, end, cfg.delay_variation_tolerance_ns())?;
    }

    /// Any period: the bound holds in terms of the (truncated) emission interval.
    #[test]
    fn gcra_admits_at_most_burst_plus_rate_any_period(
        max_burst in 0u64..=10,
        count in 1u64..=7,
        period in 7u64..=1_000,
        steps in steps(300, 14, false, LEN),
    ) {
        let cfg = GcraConfig::new(max_burst, count, period).unwrap();
        let t = cfg.emission_interval_ns();
        let mut l = Gcra::new(cfg);
        let (adm, end) = drive(&mut l, &steps, TIME_BASED)?;
        check_interval_bound(&adm, |dt| u128::from(max_burst) + 1 + u128::from(dt / t))?;
        check_recovers(&l, end, cfg.delay_variation_tolerance_ns())?;
    }

    #[test]
    fn concurrency_never_exceeds_limit_nor_underflows(
        limit in 1u64..=20,
        ops in prop::collection::vec((any::<bool>(), 0u64..=24), 1..200),
    ) {
        let mut l = ConcurrencyLimiter::new(ConcurrencyConfig::new(limit).unwrap());
        let mut model = 0u64;
        for (acquire, cost) in ops {
            if acquire {
                let before = l.clone();
                let d = l.acquire(START, cost);
                check_decision(&before, &l, START, cost, &d, Checks { exact_retry: false, exact_reset: false })?;
                prop_assert_eq!(d.allowed, model + cost <= limit);
                prop_assert_eq!(d.retry_after_ns, None);
                if d.allowed {
                    model += cost;
                }
            } else {
                let released = l.release(cost);
                prop_assert_eq!(released, cost.min(model));
                model -= released;
            }
            prop_assert_eq!(l.in_flight(), model);
            prop_assert!(l.in_flight() <= limit);
        }
        // Liveness: once everything is released the whole limit is admitted again.
        l.release(model);
        prop_assert!(l.acquire(START, limit).allowed);
    }
}

fn any_limiter() -> impl Strategy<Value = AnyLimiter> {
    let n = 1u64..=50;
    let p = 1u64..=1_000;
    prop_oneof![
        (n.clone(), 1u64..=5, p.clone())
            .prop_map(|(c, a, p)| AnyLimiter::TokenBucket(TokenBucket::new(TokenBucketConfig::new(c, a, p).unwrap()))),
        (n.clone(), 1u64..=5, p.clone())
            .prop_map(|(c, a, p)| AnyLimiter::LeakyBucket(LeakyBucket::new(LeakyBucketConfig::new(c, a, p).unwrap()))),
        (n.clone(), p.clone())
            .prop_map(|(l, p)| AnyLimiter::FixedWindow(FixedWindow::new(FixedWindowConfig::new(l, p).unwrap()))),
        (n.clone(), p.clone())
            .prop_map(|(l, p)| AnyLimiter::SlidingLog(SlidingLog::new(SlidingLogConfig::new(l, p).unwrap()))),
        (n.clone(), p.clone()).prop_map(|(l, p)| AnyLimiter::SlidingCounter(SlidingCounter::new(
            SlidingCounterConfig::new(l, p).unwrap()
        ))),
        (0u64..=20, 1u64..=5, 5u64..=1_000)
            .prop_map(|(b, c, p)| AnyLimiter::Gcra(Gcra::new(GcraConfig::new(b, c, p).unwrap()))),
        n.prop_map(|l| AnyLimiter::Concurrency(ConcurrencyLimiter::new(ConcurrencyConfig::new(l).unwrap()))),
    ]
}

/// Any `u64`, biased towards the edges.
fn wide_u64() -> impl Strategy<Value = u64> {
    prop_oneof![any::<u64>(), 0u64..=3, (u64::MAX - 3)..=u64::MAX, Just(u64::MAX / 2), Just(1u64 << 32),]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    /// A limiter serialized mid-way and restored behaves exactly like the original.
    #[test]
    fn serde_round_trip_preserves_behaviour(
        limiter in any_limiter(),
        first in steps(300, 30, true, 60),
        second in steps(300, 30, true, 60),
    ) {
        let mut a = limiter;
        let mut now = START;
        for s in &first {
            now = now.saturating_add_signed(s.dt);
            a.check(now, s.cost);
        }
        let json = serde_json::to_string(&a).unwrap();
        let mut b: AnyLimiter = serde_json::from_str(&json).unwrap();
        prop_assert_eq!(&a, &b);
        for s in &second {
            now = now.saturating_add_signed(s.dt);
            prop_assert_eq!(a.check(now, s.cost), b.check(now, s.cost));
        }
    }

    /// No input panics: extreme parameters, instants and costs, in any order.
    #[test]
    fn extreme_inputs_never_panic(
        a in wide_u64(),
        b in wide_u64(),
        c in wide_u64(),
        calls in prop::collection::vec((wide_u64(), wide_u64()), 1..20),
    ) {
        let mut limiters: Vec<AnyLimiter> = Vec::new();
        if let Ok(cfg) = TokenBucketConfig::new(a, b, c) {
            limiters.push(AnyLimiter::TokenBucket(TokenBucket::new(cfg)));
        }
        if let Ok(cfg) = LeakyBucketConfig::new(a, b, c) {
            limiters.push(AnyLimiter::LeakyBucket(LeakyBucket::new(cfg)));
        }
        if let Ok(cfg) = FixedWindowConfig::new(a, b) {
            limiters.push(AnyLimiter::FixedWindow(FixedWindow::new(cfg)));
        }
        if let Ok(cfg) = SlidingLogConfig::new(a, b) {
            limiters.push(AnyLimiter::SlidingLog(SlidingLog::new(cfg)));
        }
        if let Ok(cfg) = SlidingCounterConfig::new(a, b) {
            limiters.push(AnyLimiter::SlidingCounter(SlidingCounter::new(cfg)));
        }
        if let Ok(cfg) = GcraConfig::new(a, b, c) {
            limiters.push(AnyLimiter::Gcra(Gcra::new(cfg)));
        }
        if let Ok(cfg) = ConcurrencyConfig::new(a) {
            let mut l = ConcurrencyLimiter::new(cfg);
            l.release(b);
            limiters.push(AnyLimiter::Concurrency(l));
        }
        for l in &mut limiters {
            for &(now, cost) in &calls {
                let before = l.clone();
                let d = l.check(now, cost);
                prop_assert!(d.remaining <= d.limit);
                if !d.allowed {
                    prop_assert_eq!(&before, &*l);
                }
                let _ = l.peek(now);
                if let AnyLimiter::Gcra(_) = l {
                    let _ = cl_throttle_reply(&d);
                }
            }
        }
    }

    /// States that did not come from this crate (e.g. a corrupted replica) never panic.
    #[test]
    fn arbitrary_states_never_panic(
        s in prop::array::uniform4(wide_u64()),
        calls in prop::collection::vec((wide_u64(), 0u64..=40), 1..10),
    ) {
        let tb = TokenBucketConfig::new(10, 3, 7).unwrap();
        let lb = LeakyBucketConfig::new(10, 3, 7).unwrap();
        let fw = FixedWindowConfig::new(10, 7).unwrap();
        let sl = SlidingLogConfig::new(10, 7).unwrap();
        let sc = SlidingCounterConfig::new(10, 7).unwrap();
        let gc = GcraConfig::new(9, 1, 7).unwrap();
        let log = [s[0], s[1], s[2], s[3]].iter().map(|&at_ns| LogEntry { at_ns, cost: s[1] }).collect();
        let mut limiters = vec![
            AnyLimiter::TokenBucket(TokenBucket::with_state(tb, TokenBucketState { tokens: s[0], partial: s[1], last_ns: s[2] })),
            AnyLimiter::LeakyBucket(LeakyBucket::with_state(lb, LeakyBucketState { level: s[0], partial: s[1], last_ns: s[2] })),
            AnyLimiter::FixedWindow(FixedWindow::with_state(fw, FixedWindowState { window_start_ns: s[0], count: s[1] })),
            AnyLimiter::SlidingLog(SlidingLog::with_state(sl, SlidingLogState { entries: log })),
            AnyLimiter::SlidingCounter(SlidingCounter::with_state(sc, SlidingCounterState {
                window_start_ns: s[0], previous: s[1], current: s[2],
            })),
            AnyLimiter::Gcra(Gcra::with_state(gc, GcraState { tat_ns: s[0] })),
            AnyLimiter::Concurrency(ConcurrencyLimiter::with_state(
                ConcurrencyConfig::new(10).unwrap(),
                ConcurrencyState { in_flight: s[0] },
            )),
        ];
        for l in &mut limiters {
            for &(now, cost) in &calls {
                let d = l.check(now, cost);
                prop_assert!(d.remaining <= d.limit);
            }
        }
    }
}
