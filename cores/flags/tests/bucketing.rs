//! The bucketing hash: pinned outputs, uniformity (chi-square), independence across flags and
//! salts, and rollout proportions. Every key set is seed-free: `user-0` … `user-99999`.

use basalt_flags_core::*;
use serde_json::json;

const USERS: usize = 100_000;

/// Critical values of the chi-square distribution at p = 0.001: a correct hash fails a given test
/// with probability 1/1000 — but the inputs are fixed, so the outcome is fixed too: it either
/// passes forever or flags a real defect.
const CHI2_DF9_P001: f64 = 27.877;
/// df = 99, p = 0.001 (Wilson–Hilferty: 99·(1 − 2/891 + 3.0902·√(2/891))³ ≈ 148.23).
const CHI2_DF99_P001: f64 = 148.23;

fn users() -> impl Iterator<Item = String> {
    (0..USERS).map(|i| format!("user-{i}"))
}

fn chi_square(counts: &[u64]) -> f64 {
    let total: u64 = counts.iter().sum();
    let expected = total as f64 / counts.len() as f64;
    counts.iter().map(|&c| (c as f64 - expected).powi(2) / expected).sum()
}

#[test]
fn pinned_outputs_never_change() {
    // Computed independently (a few lines of Python over the documented algorithm): FNV-1a 64 of
    // `flag_key.salt.value`, SplitMix64 finalizer, (h · 100000) >> 64.
    let pinned = [
        ("new-checkout", "", "user-1", 27294),
        ("new-checkout", "", "user-2", 19505),
        ("new-checkout", "s1", "user-1", 76885),
        ("dark-mode", "2024", "alice", 86688),
        ("", "", "", 80506),
        ("flag", "salt", "ünïcode-ключ", 10002),
        ("flag", "salt", "-42", 65484),
    ];
    for (flag_key, salt, value, expected) in pinned {
        assert_eq!(bucket(flag_key, salt, value), expected, "{flag_key}.{salt}.{value}");
    }
}

#[test]
fn buckets_are_uniform_over_10_and_100_cells() {
    let mut tens = [0u64; 10];
    let mut hundreds = [0u64; 100];
    for u in users() {
        let b = bucket("chi-square", "", &u) as usize;
        assert!(b < 100_000);
        tens[b / 10_000] += 1;
        hundreds[b / 1_000] += 1;
    }
    let chi10 = chi_square(&tens);
    let chi100 = chi_square(&hundreds);
    assert!(chi10 < CHI2_DF9_P001, "10 buckets: chi² = {chi10:.2} ≥ {CHI2_DF9_P001} ({tens:?})");
    assert!(chi100 < CHI2_DF99_P001, "100 buckets: chi² = {chi100:.2} ≥ {CHI2_DF99_P001}");
}

#[test]
fn the_chi_square_test_can_fail() {
    // Sensitivity: moving 4% of one decile's users into another exceeds the threshold.
    let mut skewed = [10_000u64; 10];
    skewed[0] += 400;
    skewed[9] -= 400;
    assert!(chi_square(&skewed) > CHI2_DF9_P001);
    // And a hash of the key alone, ignoring the flag, would be caught by the independence test
    // below: identical buckets for two flags put everything on the diagonal.
    let mut diagonal = [0u64; 100];
    for u in users().take(10_000) {
        let d = bucket("a", "", &u) as usize / 10_000;
        diagonal[d * 10 + d] += 1;
    }
    assert!(chi_square(&diagonal) > CHI2_DF99_P001);
}

#[test]
fn buckets_of_different_flags_and_salts_are_independent() {
    // 10×10 joint deciles of two flags (and of two salts of one flag): uniform over 100 cells.
    for (a, b) in [(("checkout", ""), ("search", "")), (("checkout", "v1"), ("checkout", "v2"))] {
        let mut joint = [0u64; 100];
        for u in users() {
            let x = bucket(a.0, a.1, &u) as usize / 10_000;
            let y = bucket(b.0, b.1, &u) as usize / 10_000;
            joint[x * 10 + y] += 1;
        }
        let chi = chi_square(&joint);
        assert!(chi < CHI2_DF99_P001, "{a:?} vs {b:?}: chi² = {chi:.2}");
    }
}

#[test]
fn rollout_proportions_match_the_weights() {
    let f = compile(
        serde_json::from_value(json!({
            "key": "quarter", "kind": "boolean", "variants": {"on": true, "off": false},
            "enabled": true, "off_variant": "off",
            "fallthrough": {"rollout": {"weights": [["on", 25000], ["off", 75000]]}},
        }))
        .unwrap(),
    )
    .unwrap();
    let on = users().filter(|u| evaluate(&f, &EvalContext::with_key(u.as_str()), &()).value == json!(true)).count();
    // σ = √(100000 · 0.25 · 0.75) ≈ 137; allow 5σ.
    assert!((25_000 - 685..=25_000 + 685).contains(&on), "on = {on}");
}
