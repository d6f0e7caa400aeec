//! Hand-computed cases: redis-cell's `CL.THROTTLE` replies, parameter errors, serde of states.

use basalt_ratelimit_core::*;

const S: u64 = 1_000_000_000;
const MS: u64 = 1_000_000;
/// Some wall-clock instant (2023-11-14), as a Redis server would see it.
const T0: u64 = 1_700_000_000 * S;

#[test]
fn cl_throttle_readme_example_on_a_fresh_key() {
    // CL.THROTTLE user123 15 30 60 1: 30 per minute (one per 2 s), burst 15 + 1.
    let mut g = Gcra::new(GcraConfig::from_cl_throttle(15, 30, 60).unwrap());
    assert_eq!(g.cl_throttle(T0, 1), [0, 16, 15, -1, 2]);
}

#[test]
fn cl_throttle_until_exhausted() {
    let mut g = Gcra::new(GcraConfig::from_cl_throttle(15, 30, 60).unwrap());
    for i in 1..=16 {
        // Each request moves tat 2 s further: remaining 16 - i, reset 2 * i seconds.
        assert_eq!(g.cl_throttle(T0, 1), [0, 16, 16 - i, -1, 2 * i]);
    }
    // Limited: tat is 32 s ahead, the next request needs it back to 30 s: retry in 2 s.
    assert_eq!(g.cl_throttle(T0, 1), [1, 16, 0, 2, 32]);
    // 1.5 s later: retry 0.5 s rounds up to 1, reset 30.5 s to 31.
    assert_eq!(g.cl_throttle(T0 + 1500 * MS, 1), [1, 16, 0, 1, 31]);
    assert_eq!(g.cl_throttle(T0 + 2 * S, 1), [0, 16, 0, -1, 32]);
    // A quantity above max_burst + 1 can never succeed: retry -1.
    assert_eq!(g.cl_throttle(T0 + 2 * S, 17), [1, 16, 0, -1, 32]);
    // After the whole 34 s drain, a fresh burst.
    assert_eq!(g.cl_throttle(T0 + 34 * S, 0), [0, 16, 16, -1, 0]);
}

/// The sequence of redis-cell's own limiter test (limit 5, one per second), worked out by hand
/// from the algorithm: (offset ms, quantity, reply).
#[test]
fn cl_throttle_sub_second_sequence() {
    let mut g = Gcra::new(GcraConfig::from_cl_throttle(4, 1, 1).unwrap());
    let cases: [(u64, u64, [i64; 5]); 15] = [
        (0, 6, [1, 5, 5, -1, 0]),
        (0, 1, [0, 5, 4, -1, 1]),
        (0, 1, [0, 5, 3, -1, 2]),
        (0, 1, [0, 5, 2, -1, 3]),
        (0, 1, [0, 5, 1, -1, 4]),
        (0, 1, [0, 5, 0, -1, 5]),
        (0, 1, [1, 5, 0, 1, 5]),
        (3000, 1, [0, 5, 2, -1, 3]),
        // reset_after 3.9 s rounds up to 4.
        (3100, 1, [0, 5, 1, -1, 4]),
        (4000, 1, [0, 5, 1, -1, 4]),
        (8000, 1, [0, 5, 4, -1, 1]),
        (9500, 1, [0, 5, 4, -1, 1]),
        // A zero quantity peeks.
        (9500, 0, [0, 5, 4, -1, 1]),
        (9500, 2, [0, 5, 2, -1, 3]),
        (9500, 5, [1, 5, 2, 3, 3]),
    ];
    for (i, (offset_ms, quantity, reply)) in cases.into_iter().enumerate() {
        assert_eq!(g.cl_throttle(T0 + offset_ms * MS, quantity), reply, "case {i}");
    }
}

#[test]
fn cl_throttle_rounding_drops_sub_millisecond_remainders() {
    // max_burst 0, one per 2 s.
    let mut g = Gcra::new(GcraConfig::from_cl_throttle(0, 1, 2).unwrap());
    assert_eq!(g.cl_throttle(T0, 1), [0, 1, 0, -1, 2]);
    // 0.5 ms later: retry 1.9995 s and reset 1.9995 s both round *up* to 2 (999.5 ms >= 1 ms).
    assert_eq!(g.cl_throttle(T0 + MS / 2, 1), [1, 1, 0, 2, 2]);
    // 1.9995 s later: 0.5 ms left — under a millisecond, so redis-cell replies 0.
    let d = g.check(T0 + 2 * S - MS / 2, 1);
    assert_eq!(d.retry_after_ns, Some(MS / 2));
    assert_eq!(cl_throttle_reply(&d), [1, 1, 0, 0, 0]);
    // 1.2 s later: 0.8 s left rounds to 1.
    assert_eq!(g.cl_throttle(T0 + 1200 * MS, 1), [1, 1, 0, 1, 1]);
}

#[test]
fn cl_throttle_reply_of_other_decisions() {
    let d = Decision { allowed: true, limit: u64::MAX, remaining: 3, reset_after_ns: 1, retry_after_ns: None };
    assert_eq!(cl_throttle_reply(&d), [0, i64::MAX, 3, -1, 0]);
    let d = Decision { allowed: false, limit: 5, remaining: 0, reset_after_ns: 1_001 * MS, retry_after_ns: Some(1) };
    assert_eq!(cl_throttle_reply(&d), [1, 5, 0, 0, 2]);
}

#[test]
fn gcra_time_going_backwards_admits_no_more() {
    let mut g = Gcra::new(GcraConfig::new(2, 1, 100).unwrap());
    assert!(g.check(1_000, 3).allowed);
    // The clock steps back 500 ns: refused, and the wait includes the lag.
    let d = g.check(500, 1);
    assert!(!d.allowed);
    assert_eq!(d.retry_after_ns, Some(600));
    assert_eq!(d.reset_after_ns, 800);
    assert!(g.check(1_100, 1).allowed);
}

#[test]
fn bad_parameters_give_errors_naming_them() {
    let cases: [(Result<(), ConfigError>, &str); 14] = [
        (TokenBucketConfig::new(0, 1, 1).map(drop), "capacity"),
        (TokenBucketConfig::new(1, 0, 1).map(drop), "refill_amount"),
        (TokenBucketConfig::new(1, 1, 0).map(drop), "refill_period_ns"),
        (LeakyBucketConfig::new(0, 1, 1).map(drop), "capacity"),
        (LeakyBucketConfig::new(1, 0, 1).map(drop), "leak_amount"),
        (LeakyBucketConfig::new(1, 1, 0).map(drop), "leak_period_ns"),
        (FixedWindowConfig::new(0, 1).map(drop), "limit"),
        (FixedWindowConfig::new(1, 0).map(drop), "period_ns"),
        (SlidingLogConfig::new(0, 1).map(drop), "limit"),
        (SlidingCounterConfig::new(1, 0).map(drop), "window_ns"),
        (GcraConfig::new(1, 0, 1).map(drop), "count_per_period"),
        (GcraConfig::new(1, 2, 1).map(drop), "count_per_period"),
        (GcraConfig::from_cl_throttle(1, 1, 0).map(drop), "period"),
        (ConcurrencyConfig::new(0).map(drop), "limit"),
    ];
    for (result, param) in cases {
        let err = result.unwrap_err();
        assert_eq!(err.param(), param);
        assert!(err.to_string().contains(&format!("`{param}`")), "{err}");
    }
}

#[test]
fn deserializing_a_bad_config_fails_with_the_parameter_name() {
    let err = serde_json::from_str::<TokenBucketConfig>(r#"{"capacity":0,"refill_amount":1,"refill_period_ns":1}"#)
        .unwrap_err()
        .to_string();
    assert!(err.contains("`capacity` must be greater than zero"), "{err}");
    let err = serde_json::from_str::<AnyLimiter>(
        r#"{"algorithm":"gcra","config":{"max_burst":1,"count_per_period":5,"period_ns":4},"state":{"tat_ns":0}}"#,
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("count_per_period"), "{err}");
    let ok: GcraConfig =
        serde_json::from_str(r#"{"max_burst":15,"count_per_period":30,"period_ns":60000000000}"#).unwrap();
    assert_eq!(ok, GcraConfig::from_cl_throttle(15, 30, 60).unwrap());
}

#[test]
fn state_alone_round_trips_through_serde() {
    let cfg = SlidingLogConfig::new(4, 100).unwrap();
    let mut a = SlidingLog::new(cfg);
    assert!(a.check(10, 1).allowed);
    assert!(a.check(20, 2).allowed);
    let json = serde_json::to_string(a.state()).unwrap();
    assert_eq!(json, r#"{"entries":[{"at_ns":10,"cost":1},{"at_ns":20,"cost":2}]}"#);
    let mut b = SlidingLog::with_state(cfg, serde_json::from_str(&json).unwrap());
    for (now, cost) in [(30, 2), (109, 1), (110, 1), (119, 3), (120, 3)] {
        assert_eq!(a.check(now, cost), b.check(now, cost), "at {now}");
    }

    let cfg = TokenBucketConfig::new(5, 2, 7).unwrap();
    let mut a = TokenBucket::new(cfg);
    assert!(a.check(3, 5).allowed);
    assert!(!a.check(9, 2).allowed);
    let json = serde_json::to_string(a.state()).unwrap();
    let mut b = TokenBucket::with_state(cfg, serde_json::from_str(&json).unwrap());
    for now in [9, 10, 11, 12, 20] {
        assert_eq!(a.check(now, 2), b.check(now, 2), "at {now}");
    }
}

#[test]
fn any_limiter_dispatches() {
    let mut l = AnyLimiter::FixedWindow(FixedWindow::new(FixedWindowConfig::new(2, 10).unwrap()));
    assert_eq!(l.limit(), 2);
    assert!(l.check(0, 2).allowed);
    assert_eq!(l.peek(5).remaining, 0);
    assert!(!l.check(9, 1).allowed);
    assert!(l.check(10, 1).allowed);
    let json = serde_json::to_string(&l).unwrap();
    assert!(json.starts_with(r#"{"algorithm":"fixed_window""#), "{json}");
}
