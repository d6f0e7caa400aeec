//! The linearizability checker on known-good and known-bad register histories, a property
//! test over histories produced by a real register, and the budget.

use basalt_lincheck::{Budget, Op, Outcome, Register, RegisterOp, RegisterRet, Verdict, check};
use proptest::prelude::*;

type H = Vec<Op<RegisterOp, RegisterRet>>;

fn ok(client: u64, input: RegisterOp, output: RegisterRet, invoke: u64, complete: u64) -> Op<RegisterOp, RegisterRet> {
    Op { client, key: "k".into(), input, invoke_ns: invoke, outcome: Outcome::Ok { output, complete_ns: complete } }
}

fn info(client: u64, input: RegisterOp, invoke: u64) -> Op<RegisterOp, RegisterRet> {
    Op { client, key: "k".into(), input, invoke_ns: invoke, outcome: Outcome::Info }
}

fn w(v: &str) -> RegisterOp {
    RegisterOp::Write(v.into())
}

fn read(v: Option<&str>) -> RegisterRet {
    RegisterRet::Value(v.map(str::to_string))
}

fn verdict(h: &H) -> Verdict {
    check(&Register, h, Budget::default()).valid
}

#[test]
fn good_histories_pass() {
    let cases: Vec<(&str, H)> = vec![
        (
            "sequential",
            vec![ok(1, w("1"), RegisterRet::Written, 0, 10), ok(2, RegisterOp::Read, read(Some("1")), 20, 30)],
        ),
        (
            "a read overlapping a write may see either value",
            vec![
                ok(1, w("1"), RegisterRet::Written, 0, 10),
                ok(2, RegisterOp::Read, read(None), 1, 3),
                ok(3, RegisterOp::Read, read(Some("1")), 5, 15),
            ],
        ),
        (
            "compare-and-set chain",
            vec![
                ok(1, w("a"), RegisterRet::Written, 0, 1),
                ok(1, RegisterOp::Cas { expect: Some("a".into()), new: "b".into() }, RegisterRet::CasOk, 2, 3),
                ok(2, RegisterOp::Cas { expect: Some("a".into()), new: "c".into() }, RegisterRet::CasFailed, 4, 5),
                ok(2, RegisterOp::Read, read(Some("b")), 6, 7),
            ],
        ),
        ("an unknown write that happened", vec![info(1, w("1"), 0), ok(2, RegisterOp::Read, read(Some("1")), 10, 20)]),
        ("an unknown write that never happened", vec![info(1, w("1"), 0), ok(2, RegisterOp::Read, read(None), 10, 20)]),
        (
            "a failed write is ignored",
            vec![
                Op {
                    client: 1,
                    key: "k".into(),
                    input: w("1"),
                    invoke_ns: 0,
                    outcome: Outcome::Fail { complete_ns: 5 },
                },
                ok(2, RegisterOp::Read, read(None), 10, 20),
            ],
        ),
        (
            "concurrent writes, reads agree on one order",
            vec![
                ok(1, w("1"), RegisterRet::Written, 0, 10),
                ok(2, w("2"), RegisterRet::Written, 0, 10),
                ok(3, RegisterOp::Read, read(Some("1")), 20, 30),
                ok(4, RegisterOp::Read, read(Some("1")), 40, 50),
            ],
        ),
    ];
    for (name, h) in cases {
        assert_eq!(verdict(&h), Verdict::Ok, "{name}");
    }
}

#[test]
fn bad_histories_are_caught_and_explained() {
    let cases: Vec<(&str, H)> = vec![
        (
            "stale read after a completed write",
            vec![ok(1, w("1"), RegisterRet::Written, 0, 10), ok(2, RegisterOp::Read, read(None), 20, 30)],
        ),
        (
            "new then old",
            vec![
                ok(1, w("1"), RegisterRet::Written, 0, 10),
                ok(2, w("2"), RegisterRet::Written, 0, 10),
                ok(3, RegisterOp::Read, read(Some("2")), 20, 30),
                ok(4, RegisterOp::Read, read(Some("1")), 40, 50),
            ],
        ),
        (
            "a compare-and-set that could not have succeeded",
            vec![ok(1, RegisterOp::Cas { expect: Some("a".into()), new: "b".into() }, RegisterRet::CasOk, 0, 10)],
        ),
        (
            "a value nobody wrote",
            vec![ok(1, w("1"), RegisterRet::Written, 0, 10), ok(2, RegisterOp::Read, read(Some("9")), 20, 30)],
        ),
        (
            "an unknown write cannot un-happen",
            vec![
                info(1, w("1"), 0),
                ok(2, RegisterOp::Read, read(Some("1")), 10, 20),
                ok(3, RegisterOp::Read, read(None), 30, 40),
            ],
        ),
    ];
    for (name, h) in cases {
        let r = check(&Register, &h, Budget::default());
        assert_eq!(r.valid, Verdict::Illegal, "{name}");
        let why = r.per_key["k"].explanation.clone().unwrap();
        assert!(why.contains("client"), "{name}: {why}");
    }
}

#[test]
fn keys_are_checked_independently_and_named() {
    let mut h = vec![ok(1, w("1"), RegisterRet::Written, 0, 10), ok(2, RegisterOp::Read, read(Some("1")), 20, 30)];
    let mut bad = ok(3, RegisterOp::Read, read(Some("zz")), 0, 5);
    bad.key = "other".into();
    h.push(bad);
    let r = check(&Register, &h, Budget::default());
    assert_eq!(r.valid, Verdict::Illegal);
    assert_eq!(r.per_key["k"].verdict, Verdict::Ok);
    assert_eq!(r.per_key["other"].verdict, Verdict::Illegal);
}

#[test]
fn a_tiny_budget_gives_unknown_not_a_hang() {
    // 12 fully concurrent writes and a read of a value nobody wrote: the search must explore.
    let mut h: H = (0..12).map(|i| ok(i, w(&i.to_string()), RegisterRet::Written, 0, 100)).collect();
    h.push(ok(99, RegisterOp::Read, read(Some("none")), 200, 300));
    let r = check(&Register, &h, Budget { max_steps: 50 });
    assert_eq!(r.valid, Verdict::Unknown);
}

/// A history from a real register: each op takes effect at a distinct instant inside its
/// [invoke, complete] window.
fn real_history(ops: &[(u64, u8, u8, u64, u64)]) -> H {
    let mut state: Option<String> = None;
    let mut h = Vec::new();
    for (i, (client, kind, val, before, after)) in ops.iter().enumerate() {
        let t = (i as u64 + 3) * 100;
        let (input, output) = match kind % 3 {
            0 => {
                state = Some(val.to_string());
                (w(&val.to_string()), RegisterRet::Written)
            }
            1 => (RegisterOp::Read, RegisterRet::Value(state.clone())),
            _ => {
                let expect = Some((val % 3).to_string());
                if state == expect {
                    state = Some(val.to_string());
                    (RegisterOp::Cas { expect, new: val.to_string() }, RegisterRet::CasOk)
                } else {
                    (RegisterOp::Cas { expect, new: val.to_string() }, RegisterRet::CasFailed)
                }
            }
        };
        h.push(ok(*client, input, output, t - before % 250, t + after % 250));
    }
    h
}

proptest! {
    #[test]
    fn histories_of_a_real_register_are_linearizable(ops in prop::collection::vec((0u64..5, 0u8..3, 0u8..5, 0u64..1000, 0u64..1000), 1..60)) {
        let h = real_history(&ops);
        prop_assert_eq!(verdict(&h), Verdict::Ok);
    }

    #[test]
    fn a_read_of_a_value_never_written_is_caught(ops in prop::collection::vec((0u64..5, 0u8..3, 0u8..5, 0u64..1000, 0u64..1000), 1..60), pick in 0usize..60) {
        let mut h = real_history(&ops);
        let reads: Vec<usize> = (0..h.len()).filter(|i| h[*i].input == RegisterOp::Read).collect();
        prop_assume!(!reads.is_empty());
        let i = reads[pick % reads.len()];
        h[i].outcome = Outcome::Ok { output: read(Some("never")), complete_ns: match h[i].outcome { Outcome::Ok { complete_ns, .. } => complete_ns, _ => 0 } };
        prop_assert_eq!(verdict(&h), Verdict::Illegal);
    }
}

#[test]
fn five_thousand_operations_check_quickly() {
    let mut rng_state = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = || {
        rng_state ^= rng_state << 13;
        rng_state ^= rng_state >> 7;
        rng_state ^= rng_state << 17;
        rng_state
    };
    let ops: Vec<(u64, u8, u8, u64, u64)> =
        (0..5000).map(|_| (next() % 8, (next() % 3) as u8, (next() % 5) as u8, next() % 300, next() % 300)).collect();
    let h = real_history(&ops);
    let r = check(&Register, &h, Budget::default());
    assert_eq!(r.valid, Verdict::Ok, "{:?}", r.per_key["k"].explanation);
}
