//! Every clause operator: matches, non-matches, `negate`, wrong types, arrays and missing attributes.

mod common;

use basalt_flags_core::*;
use common::*;
use serde_json::{Value, json};

fn c(attribute: &str, op: &str, values: Value, negate: bool) -> Value {
    json!({"attribute": attribute, "op": op, "values": values, "negate": negate})
}

/// Asserts that `op values` on attribute `a` of value `attr` gives `expected`, and its negation the
/// opposite (the attribute is present in every case here).
fn check(op: &str, values: Value, attr: Value, expected: bool) {
    let cx = ctx(Some("user-1"), json!({ "a": attr }));
    assert_eq!(clause_matches(c("a", op, values.clone(), false), &cx), expected, "{op} {values} on {attr}");
    assert_eq!(clause_matches(c("a", op, values.clone(), true), &cx), !expected, "negated {op} {values} on {attr}");
}

#[test]
fn equals_compares_json_and_numbers_by_value() {
    check("equals", json!(["pro"]), json!("pro"), true);
    check("equals", json!(["pro"]), json!("Pro"), false);
    check("equals", json!([1]), json!(1.0), true);
    check("equals", json!([1.5]), json!(1.5), true);
    check("equals", json!([-3]), json!(-3), true);
    check("equals", json!([18446744073709551615u64]), json!(18446744073709551615u64), true);
    check("equals", json!([2]), json!(3), false);
    check("equals", json!([true]), json!(true), true);
    check("equals", json!([true]), json!("true"), false);
    check("equals", json!(["1"]), json!(1), false);
    check("equals", json!([{"x": 1, "y": [2]}]), json!({"y": [2.0], "x": 1}), true);
    check("equals", json!([{"x": 1}]), json!({"x": 1, "y": 2}), false);
}

#[test]
fn in_matches_any_value() {
    check("in", json!(["a", "b", 3]), json!("b"), true);
    check("in", json!(["a", "b", 3]), json!(3.0), true);
    check("in", json!(["a", "b", 3]), json!("c"), false);
    check("in", json!([false]), json!(false), true);
}

#[test]
fn array_attributes_match_when_any_element_does() {
    check("in", json!(["beta", "staff"]), json!(["users", "staff"]), true);
    check("in", json!(["beta"]), json!(["users", "staff"]), false);
    check("equals", json!(["beta"]), json!(["beta"]), true);
    check("starts_with", json!(["adm"]), json!(["user", "admin"]), true);
    check("gt", json!([10]), json!([1, 2, 30]), true);
    check("gt", json!([10]), json!([1, 2, "30"]), false);
    // An empty array is present, not missing: nothing matches, so the negation does.
    check("in", json!(["beta"]), json!([]), false);
}

#[test]
fn string_operators() {
    check("starts_with", json!(["ab"]), json!("abc"), true);
    check("starts_with", json!(["bc"]), json!("abc"), false);
    check("starts_with", json!(["x", "a"]), json!("abc"), true);
    check("starts_with", json!([""]), json!("abc"), true);
    check("ends_with", json!(["bc"]), json!("abc"), true);
    check("ends_with", json!(["ab"]), json!("abc"), false);
    check("ends_with", json!(["@example.com"]), json!("ann@example.com"), true);
    check("contains", json!(["b"]), json!("abc"), true);
    check("contains", json!(["B"]), json!("abc"), false);
    check("contains", json!(["zz", "bc"]), json!("abc"), true);
    // Wrong attribute type: the operator is false (so the negation is true).
    check("starts_with", json!(["1"]), json!(12), false);
    check("contains", json!(["t"]), json!(true), false);
    check("ends_with", json!(["}"]), json!({"a": "}"}), false);
}

#[test]
fn matches_is_an_unanchored_regex() {
    check("matches", json!(["^user-[0-9]+$"]), json!("user-42"), true);
    check("matches", json!(["^user-[0-9]+$"]), json!("user-42x"), false);
    check("matches", json!(["[0-9]"]), json!("abc7def"), true);
    check("matches", json!(["^a$", "^b$"]), json!("b"), true);
    check("matches", json!(["(?i)^ADMIN"]), json!("administrator"), true);
    check("matches", json!(["."]), json!(5), false);
}

#[test]
fn numeric_operators() {
    let cases = [
        ("lt", 5.0, 4.9, true),
        ("lt", 5.0, 5.0, false),
        ("lt", 5.0, 6.0, false),
        ("lte", 5.0, 5.0, true),
        ("lte", 5.0, 5.1, false),
        ("lte", 5.0, -1e9, true),
        ("gt", 5.0, 5.0, false),
        ("gt", 5.0, 5.001, true),
        ("gt", 5.0, 4.0, false),
        ("gte", 5.0, 5.0, true),
        ("gte", 5.0, 4.999, false),
        ("gte", -2.0, -1.0, true),
    ];
    for (op, operand, attr, expected) in cases {
        check(op, json!([operand]), json!(attr), expected);
    }
    check("lt", json!([10]), json!(3), true);
    check("gt", json!([1, 100]), json!(50), true); // any value
    check("lt", json!([10]), json!("3"), false); // numeric strings are not numbers
    check("gte", json!([0]), json!(false), false);
}

#[test]
fn semver_operators() {
    check("semver_lt", json!(["2.0.0"]), json!("1.9.9"), true);
    check("semver_lt", json!(["2.0.0"]), json!("2.0.0"), false);
    check("semver_lt", json!(["2.0.0"]), json!("2.0.0-rc.1"), true); // pre-release before release
    check("semver_lt", json!(["2.0.0"]), json!("10.0.0"), false); // numeric, not lexical
    check("semver_eq", json!(["1.2.3"]), json!("1.2.3+build.7"), true); // build metadata ignored
    check("semver_eq", json!(["1.2.3"]), json!("1.2.3-alpha"), false);
    check("semver_eq", json!(["1.2.3-alpha.1"]), json!("1.2.3-alpha.1"), true);
    check("semver_gt", json!(["1.0.0-beta.2"]), json!("1.0.0-beta.11"), true);
    check("semver_gt", json!(["1.0.0-alpha"]), json!("1.0.0-alpha"), false);
    check("semver_gt", json!(["1.0.0"]), json!("1.0.1"), true);
    check("semver_gt", json!(["3.0.0", "1.0.0"]), json!("2.0.0"), true); // any value
    // Unparsable or non-string attributes: the operator is false.
    check("semver_lt", json!(["2.0.0"]), json!("1.0"), false);
    check("semver_lt", json!(["2.0.0"]), json!("v1.0.0"), false);
    check("semver_lt", json!(["2.0.0"]), json!(1), false);
}

#[test]
fn missing_or_null_attributes_never_match_even_negated() {
    let ops: [(&str, Value); 14] = [
        ("equals", json!(["x"])),
        ("in", json!(["x", 1])),
        ("starts_with", json!(["x"])),
        ("ends_with", json!(["x"])),
        ("contains", json!(["x"])),
        ("matches", json!([".*"])),
        ("lt", json!([1])),
        ("lte", json!([1])),
        ("gt", json!([1])),
        ("gte", json!([1])),
        ("semver_lt", json!(["1.0.0"])),
        ("semver_eq", json!(["1.0.0"])),
        ("semver_gt", json!(["1.0.0"])),
        ("in_segment", json!(["everyone"])),
    ];
    let env = RawEnv::default().with_segment(json!({"key": "everyone", "rules": [[]]}));
    let absent = ctx(None, json!({"other": "x"}));
    let null = ctx(None, json!({"a": null}));
    for (op, values) in ops {
        for negate in [false, true] {
            for cx in [&absent, &null] {
                assert!(!clause_matches_in(c("a", op, values.clone(), negate), cx, &env), "{op} negate={negate}");
            }
            // The targeting key is missing too.
            assert!(!clause_matches_in(c("targetingKey", op, values.clone(), negate), &absent, &env), "{op}");
        }
    }
    // Control: with the attribute present, `in_segment everyone` does match, and `matches .*` too.
    let present = ctx(Some("k"), json!({"a": "x"}));
    assert!(clause_matches_in(c("a", "in_segment", json!(["everyone"]), false), &present, &env));
    assert!(clause_matches_in(c("a", "matches", json!([".*"]), false), &present, &env));
    assert!(clause_matches_in(c("targetingKey", "equals", json!(["k"]), false), &present, &env));
}

#[test]
fn the_targeting_key_is_attribute_targeting_key_and_key_is_ordinary() {
    let cx = ctx(Some("user-7"), json!({"key": "other", "targetingKey": "shadowed"}));
    assert!(clause_matches(c("targetingKey", "equals", json!(["user-7"]), false), &cx));
    assert!(!clause_matches(c("targetingKey", "equals", json!(["shadowed"]), false), &cx));
    assert!(clause_matches(c("key", "equals", json!(["other"]), false), &cx));
    assert!(!clause_matches(c("key", "equals", json!(["user-7"]), false), &cx));
    assert!(clause_matches(c("targetingKey", "matches", json!(["^user-[0-9]$"]), false), &cx));
    assert!(clause_matches(c("targetingKey", "semver_gt", json!(["0.0.1"]), true), &cx)); // unparsable → negated true
    assert!(!clause_matches(c("targetingKey", "lt", json!([1]), false), &cx)); // a string, never a number
}

#[test]
fn a_rule_needs_all_clauses_and_the_first_matching_rule_wins() {
    let f = compiled(json!({
        "key": "tiers",
        "kind": "string",
        "variants": {"gold": "g", "silver": "s", "none": "n"},
        "enabled": true,
        "off_variant": "none",
        "fallthrough": {"variant": "none"},
        "rules": [
            {"id": "gold", "clauses": [
                {"attribute": "plan", "op": "equals", "values": ["pro"]},
                {"attribute": "seats", "op": "gte", "values": [100]},
            ], "serve": {"variant": "gold"}},
            {"id": "silver", "clauses": [{"attribute": "plan", "op": "equals", "values": ["pro"]}], "serve": {"variant": "silver"}},
            {"id": "also-gold", "clauses": [], "serve": {"variant": "gold"}},
        ],
    }));
    let eval = |attrs: Value| evaluate(&f, &ctx(Some("u"), attrs), &());
    let e = eval(json!({"plan": "pro", "seats": 150}));
    assert_eq!((e.variant.as_deref(), e.rule_id.as_deref()), (Some("gold"), Some("gold")));
    let e = eval(json!({"plan": "pro", "seats": 10}));
    assert_eq!((e.variant.as_deref(), e.rule_id.as_deref()), (Some("silver"), Some("silver")));
    // A rule without clauses matches everyone.
    let e = eval(json!({"plan": "free"}));
    assert_eq!((e.variant.as_deref(), e.rule_id.as_deref()), (Some("gold"), Some("also-gold")));
    assert_eq!(e.reason, Reason::TargetingMatch);
}
