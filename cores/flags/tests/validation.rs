//! Every validation error, with its path.

mod common;

use basalt_flags_core::*;
use common::*;
use serde_json::{Value, json};

fn base() -> Value {
    json!({
        "key": "f",
        "kind": "string",
        "variants": {"a": "A", "b": "B"},
        "enabled": true,
        "off_variant": "a",
        "fallthrough": {"variant": "b"},
        "rules": [
            {"id": "r0", "clauses": [{"attribute": "plan", "op": "equals", "values": ["pro"]}], "serve": {"variant": "a"}},
            {"id": "r1", "clauses": [
                {"attribute": "x", "op": "in", "values": ["x"]},
                {"attribute": "y", "op": "in", "values": ["y"]},
            ], "serve": {"rollout": {"weights": [["a", 50000], ["b", 50000]]}}},
            {"id": "r2", "clauses": [{"attribute": "z", "op": "in", "values": ["z"]}], "serve": {"variant": "b"}},
        ],
    })
}

fn env() -> FlagStore {
    FlagStore::new(
        [flag(json!({"key": "other", "kind": "boolean", "variants": {"on": true, "off": false}, "enabled": true, "off_variant": "off", "fallthrough": {"variant": "on"}}))],
        [segment(json!({"key": "beta", "included": ["u"]}))],
    )
    .unwrap()
}

/// Applies `edit` to the base flag and asserts the validation error's path (and a message
/// fragment), both through `validate` and — for environment-free errors — through `compile`.
fn rejects(edit: impl FnOnce(&mut Value), path: &str, fragment: &str) {
    let mut def = base();
    edit(&mut def);
    let f = flag(def);
    let err = validate(&f, &env()).expect_err(path);
    assert_eq!(err.path, path, "{err}");
    assert!(err.message.contains(fragment), "{path}: {:?} lacks {fragment:?}", err.message);
    if let Err(compile_err) = compile(f) {
        assert_eq!(compile_err, err);
    }
}

fn clause_rejects(clause: Value, path_suffix: &str, fragment: &str) {
    rejects(|d| d["rules"][2]["clauses"][0] = clause, &format!("rules[2].clauses[0]{path_suffix}"), fragment);
}

#[test]
fn the_base_flag_is_valid() {
    validate(&flag(base()), &env()).unwrap();
    compile(flag(base())).unwrap();
}

#[test]
fn flag_level_errors() {
    rejects(|d| d["key"] = json!(""), "key", "empty");
    rejects(|d| d["variants"] = json!({}), "variants", "at least one");
    rejects(|d| d["variants"]["b"] = json!(2), r#"variants["b"]"#, "kind `string`");
    rejects(|d| d["variants"][""] = json!("E"), r#"variants[""]"#, "empty");
    rejects(|d| d["off_variant"] = json!("zzz"), "off_variant", "unknown variant \"zzz\"");
    rejects(|d| d["fallthrough"] = json!({"variant": "zzz"}), "fallthrough.variant", "unknown variant");
}

#[test]
fn variant_values_must_match_the_kind() {
    for (kind, good, bad) in [
        ("boolean", json!(true), json!("true")),
        ("string", json!("s"), json!(1)),
        ("number", json!(1.5), json!(null)),
        ("object", json!({"a": 1}), json!([1])),
    ] {
        let def = |v: Value| json!({"key": "k", "kind": kind, "variants": {"v": v}, "enabled": true, "off_variant": "v", "fallthrough": {"variant": "v"}});
        compile(flag(def(good))).unwrap();
        assert_eq!(compile(flag(def(bad))).unwrap_err().path, r#"variants["v"]"#);
    }
}

#[test]
fn rollout_errors() {
    let rollout = |weights: Value| json!({"rollout": {"weights": weights}});
    rejects(
        |d| d["fallthrough"] = rollout(json!([["a", 50000], ["b", 49999]])),
        "fallthrough.weights",
        "99999, not 100000",
    );
    rejects(
        |d| d["fallthrough"] = rollout(json!([["a", 4294967295u32], ["b", 4294967295u32]])),
        "fallthrough.weights",
        "8589934590",
    );
    rejects(|d| d["fallthrough"] = rollout(json!([])), "fallthrough.weights", "sum to 0");
    rejects(
        |d| d["fallthrough"] = rollout(json!([["a", 50000], ["c", 50000]])),
        "fallthrough.weights[1]",
        "unknown variant \"c\"",
    );
    rejects(|d| d["fallthrough"] = rollout(json!([["a", 50000], ["a", 50000]])), "fallthrough.weights[1]", "twice");
    rejects(
        |d| d["fallthrough"] = json!({"rollout": {"bucket_by": "", "weights": [["a", 100000]]}}),
        "fallthrough.bucket_by",
        "empty",
    );
    rejects(|d| d["rules"][1]["serve"]["rollout"]["weights"][0][1] = json!(1), "rules[1].serve.weights", "50001");
    rejects(|d| d["rules"][0]["serve"] = json!({"variant": "q"}), "rules[0].serve.variant", "unknown variant");
}

#[test]
fn rule_errors() {
    rejects(|d| d["rules"][1]["id"] = json!(""), "rules[1].id", "empty");
    rejects(|d| d["rules"][2]["id"] = json!("r0"), "rules[2].id", "duplicate");
}

#[test]
fn clause_errors() {
    let c = |op: &str, values: Value| json!({"attribute": "a", "op": op, "values": values});
    clause_rejects(json!({"attribute": "", "op": "in", "values": [1]}), ".attribute", "empty");
    clause_rejects(c("in", json!([])), ".values", "at least one");
    clause_rejects(c("equals", json!(["a", "b"])), ".values", "exactly one");
    clause_rejects(c("in", json!(["a", null])), ".values[1]", "null");
    clause_rejects(c("equals", json!([null])), ".values[0]", "null");
    for op in ["starts_with", "ends_with", "contains", "matches", "semver_lt", "semver_eq", "semver_gt", "in_segment"] {
        clause_rejects(c(op, json!(["ok", 5])), ".values[1]", "needs a string");
    }
    clause_rejects(c("matches", json!(["ok", "("])), ".values[1]", "invalid regular expression");
    clause_rejects(c("matches", json!(["a{1000}{1000}"])), ".values[0]", "invalid regular expression"); // size limit
    for op in ["lt", "lte", "gt", "gte"] {
        clause_rejects(c(op, json!([1, "2"])), ".values[1]", "needs a number");
        clause_rejects(c(op, json!([true])), ".values[0]", "needs a number");
    }
    for bad in ["1.2", "1.2.3.4", "v1.2.3", "01.2.3", "1.2.3-", "1.2.3-01", "x"] {
        clause_rejects(c("semver_gt", json!(["1.0.0", bad])), ".values[1]", "not a semantic version");
    }
    clause_rejects(c("in_segment", json!(["beta", ""])), ".values[1]", "empty");
    clause_rejects(c("in_segment", json!(["beta", "nope"])), ".values[1]", "unknown segment \"nope\"");
}

#[test]
fn prerequisite_errors() {
    rejects(|d| d["prerequisites"] = json!([{"flag": "", "variant": "on"}]), "prerequisites[0].flag", "empty");
    rejects(|d| d["prerequisites"] = json!([{"flag": "other", "variant": ""}]), "prerequisites[0].variant", "empty");
    rejects(
        |d| d["prerequisites"] = json!([{"flag": "other", "variant": "on"}, {"flag": "missing", "variant": "on"}]),
        "prerequisites[1].flag",
        "unknown flag \"missing\"",
    );
    rejects(
        |d| d["prerequisites"] = json!([{"flag": "other", "variant": "maybe"}]),
        "prerequisites[0].variant",
        "has no variant \"maybe\"",
    );
    rejects(|d| d["prerequisites"] = json!([{"flag": "f", "variant": "a"}]), "prerequisites[0].flag", "cycle: f -> f");
}

fn prereq_flag(key: &str, on: &[&str]) -> Value {
    let prereqs: Vec<Value> = on.iter().map(|k| json!({"flag": k, "variant": "on"})).collect();
    json!({"key": key, "kind": "boolean", "variants": {"on": true, "off": false}, "enabled": true, "off_variant": "off", "fallthrough": {"variant": "on"}, "prerequisites": prereqs})
}

#[test]
fn prerequisite_cycles_are_rejected_with_the_cycle() {
    // a -> b -> c -> a, through a store.
    let err =
        FlagStore::new([prereq_flag("a", &["b"]), prereq_flag("b", &["c"]), prereq_flag("c", &["a"])].map(flag), [])
            .unwrap_err();
    assert_eq!(err.path, r#"flags["a"].prerequisites[0].flag"#);
    assert_eq!(err.message, "prerequisite cycle: a -> b -> c -> a");

    // A cycle reachable from, but not through, the flag: x -> y -> z -> y; the path names x's edge.
    let env = RawEnv::default()
        .with_flag(prereq_flag("ok", &[]))
        .with_flag(prereq_flag("y", &["z"]))
        .with_flag(prereq_flag("z", &["y"]));
    let err = validate(&flag(prereq_flag("x", &["ok", "y"])), &env).unwrap_err();
    assert_eq!((err.path.as_str(), err.message.as_str()), ("prerequisites[1].flag", "prerequisite cycle: y -> z -> y"));

    // A diamond is not a cycle.
    let store = FlagStore::new(
        [
            prereq_flag("top", &["l", "r"]),
            prereq_flag("l", &["bottom"]),
            prereq_flag("r", &["bottom"]),
            prereq_flag("bottom", &[]),
        ]
        .map(flag),
        [],
    )
    .unwrap();
    assert_eq!(store.evaluate("top", &EvalContext::default()).variant.as_deref(), Some("on"));

    // Indirect unknown flags and segments are reported on the direct edge.
    let env = RawEnv::default().with_flag(prereq_flag("mid", &["gone"]));
    let err = validate(&flag(prereq_flag("x", &["mid"])), &env).unwrap_err();
    assert_eq!(err.path, "prerequisites[0].flag");
    assert!(err.message.contains("x -> mid -> gone"), "{}", err.message);
    let env = RawEnv::default()
        .with_flag(bool_flag_with("seg-user", json!([{"attribute": "k", "op": "in_segment", "values": ["gone"]}])));
    let err = validate(&flag(json!({"key": "x", "kind": "boolean", "variants": {"on": true}, "enabled": true, "off_variant": "on", "fallthrough": {"variant": "on"}, "prerequisites": [{"flag": "seg-user", "variant": "on"}]})), &env)
        .unwrap_err();
    assert_eq!(err.path, "prerequisites[0].flag");
    assert!(err.message.contains("unknown segment \"gone\""), "{}", err.message);
}

#[test]
fn exponential_prerequisite_diamonds_are_rejected_quickly() {
    // d0 <- d1 <- ... each level needs the previous twice over two paths: 2^40 expanded evaluations.
    // (Zero-padded keys: the store validates in key order.)
    let mut flags = vec![prereq_flag("d00", &[])];
    for i in 1..=40 {
        let prev = format!("d{:02}", i - 1);
        flags.push(prereq_flag(&format!("d{i:02}"), &[&prev, &prev]));
    }
    let err = FlagStore::new(flags.into_iter().map(flag), []).unwrap_err();
    assert_eq!(err.path, r#"flags["d06"].prerequisites"#); // d05 needs 62 evaluations, d06 126
    assert!(err.message.contains("126"), "{}", err.message);
}

#[test]
fn segment_errors() {
    let err = |def: Value| compile_segment(segment(def)).unwrap_err();
    let e = err(json!({"key": ""}));
    assert_eq!(e.path, "key");
    assert_eq!(err(json!({"key": "s", "included": ["a", ""]})).path, "included[1]");
    assert_eq!(err(json!({"key": "s", "excluded": [""]})).path, "excluded[0]");
    let e = err(
        json!({"key": "s", "rules": [[], [{"attribute": "a", "op": "in", "values": ["x"]}, {"attribute": "a", "op": "in_segment", "values": ["s"]}]]}),
    );
    assert_eq!((e.path.as_str(), e.message.as_str()), ("rules[1][1].op", "in_segment is not allowed in segment rules"));
    assert_eq!(
        err(json!({"key": "s", "rules": [[{"attribute": "a", "op": "lt", "values": ["x"]}]]})).path,
        "rules[0][0].values[0]"
    );
    assert_eq!(
        err(json!({"key": "s", "rules": [[{"attribute": "a", "op": "matches", "values": ["["]}]]})).path,
        "rules[0][0].values[0]"
    );
}

#[test]
fn store_errors_are_prefixed() {
    let good = json!({"key": "g", "kind": "boolean", "variants": {"on": true}, "enabled": true, "off_variant": "on", "fallthrough": {"variant": "on"}});
    let mut bad = good.clone();
    bad["key"] = json!("b");
    bad["off_variant"] = json!("nope");
    assert_eq!(FlagStore::new([good.clone(), bad].map(flag), []).unwrap_err().path, r#"flags["b"].off_variant"#);
    let e = FlagStore::new([good.clone(), good.clone()].map(flag), []).unwrap_err();
    assert_eq!((e.path.as_str(), e.message.as_str()), (r#"flags["g"]"#, "duplicate flag key"));
    let e = FlagStore::new([], [json!({"key": "s"}), json!({"key": "s"})].map(segment)).unwrap_err();
    assert_eq!(e.path, r#"segments["s"]"#);
    let e = FlagStore::new([], [json!({"key": "s", "included": [""]})].map(segment)).unwrap_err();
    assert_eq!(e.path, r#"segments["s"].included[0]"#);
    let mut uses = good;
    uses["rules"] = json!([{"id": "r", "clauses": [{"attribute": "k", "op": "in_segment", "values": ["nope"]}], "serve": {"variant": "on"}}]);
    let e = FlagStore::new([uses].map(flag), []).unwrap_err();
    assert_eq!(e.path, r#"flags["g"].rules[0].clauses[0].values[0]"#);
    assert_eq!(e.to_string(), r#"flags["g"].rules[0].clauses[0].values[0]: unknown segment "nope""#);
}
