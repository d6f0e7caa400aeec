//! Evaluation: reasons, disabled flags, prerequisites, segments, rollouts, error codes, typed
//! helpers, the store, and the wire spellings.

mod common;

use basalt_flags_core::*;
use common::*;
use serde_json::{Value, json};

fn simple(key: &str, enabled: bool) -> Value {
    json!({
        "key": key,
        "kind": "boolean",
        "variants": {"on": true, "off": false},
        "enabled": enabled,
        "off_variant": "off",
        "fallthrough": {"variant": "on"},
    })
}

fn with_prereqs(key: &str, prereqs: Value) -> Value {
    let mut f = simple(key, true);
    f["prerequisites"] = prereqs;
    f
}

#[test]
fn reasons_static_default_targeting_split_disabled() {
    let anyone = ctx(Some("u1"), json!({}));
    let e = evaluate(&compiled(simple("s", true)), &anyone, &());
    assert_eq!(
        (e.reason, e.variant.as_deref(), e.value.clone(), e.error_code),
        (Reason::Static, Some("on"), json!(true), None)
    );

    let e = evaluate(&compiled(simple("d", false)), &anyone, &());
    assert_eq!((e.reason, e.variant.as_deref(), e.value.clone()), (Reason::Disabled, Some("off"), json!(false)));

    let mut rules = bool_flag_with("t", json!([{"attribute": "plan", "op": "equals", "values": ["pro"]}]));
    let f = compiled(rules.clone());
    let e = evaluate(&f, &ctx(Some("u1"), json!({"plan": "pro"})), &());
    assert_eq!(
        (e.reason, e.variant.as_deref(), e.rule_id.as_deref()),
        (Reason::TargetingMatch, Some("on"), Some("r0"))
    );
    let e = evaluate(&f, &ctx(Some("u1"), json!({"plan": "free"})), &());
    assert_eq!((e.reason, e.variant.as_deref(), e.rule_id), (Reason::Default, Some("off"), None));

    rules["fallthrough"] = json!({"rollout": {"weights": [["on", 50000], ["off", 50000]]}});
    let e = evaluate(&compiled(rules.clone()), &ctx(Some("u1"), json!({})), &());
    assert_eq!((e.reason, e.rule_id, e.error_code), (Reason::Split, None, None));
    assert!(e.variant.is_some());

    // A rule's rollout is still a targeting match.
    rules["rules"][0]["serve"] = json!({"rollout": {"weights": [["on", 100000], ["off", 0]]}});
    let e = evaluate(&compiled(rules.clone()), &ctx(Some("u1"), json!({"plan": "pro"})), &());
    assert_eq!(
        (e.reason, e.variant.as_deref(), e.rule_id.as_deref()),
        (Reason::TargetingMatch, Some("on"), Some("r0"))
    );

    // A disabled flag ignores its rules and fallthrough.
    rules["enabled"] = json!(false);
    let e = evaluate(&compiled(rules), &ctx(None, json!({"plan": "pro"})), &());
    assert_eq!((e.reason, e.variant.as_deref(), e.error_code), (Reason::Disabled, Some("off"), None));
}

#[test]
fn rollout_without_bucketing_value_is_targeting_key_missing() {
    let mut def = simple("r", true);
    def["fallthrough"] = json!({"rollout": {"weights": [["on", 30000], ["off", 70000]]}});
    let f = compiled(def.clone());
    let e = evaluate(&f, &ctx(None, json!({})), &());
    assert_eq!(e, Evaluation::error(Value::Null, ErrorCode::TargetingKeyMissing));
    assert!(evaluate(&f, &ctx(Some(""), json!({})), &()).variant.is_some()); // empty key is a key

    def["fallthrough"]["rollout"]["bucket_by"] = json!("org");
    let f = compiled(def.clone());
    for missing in [json!({}), json!({"org": null}), json!({"org": 1.5}), json!({"org": true}), json!({"org": ["a"]})] {
        let e = evaluate(&f, &ctx(Some("u1"), missing.clone()), &());
        assert_eq!(e.error_code, Some(ErrorCode::TargetingKeyMissing), "{missing}");
        assert_eq!(e.reason, Reason::Error);
    }
    // A string or an integer is bucketed: the integer by its decimal form.
    let by_int = evaluate(&f, &ctx(None, json!({"org": 4242})), &());
    let by_str = evaluate(&f, &ctx(None, json!({"org": "4242"})), &());
    assert_eq!(by_int.error_code, None);
    assert_eq!(by_int, by_str);
    let expected = if bucket("r", "", "4242") < 30_000 { "on" } else { "off" };
    assert_eq!(by_int.variant.as_deref(), Some(expected));

    // In a rule: the rule id is kept, and evaluation does not fall through to later rules.
    def["fallthrough"] = json!({"variant": "off"});
    def["rules"] = json!([
        {"id": "pct", "clauses": [], "serve": {"rollout": {"weights": [["on", 50000], ["off", 50000]]}}},
        {"id": "all", "clauses": [], "serve": {"variant": "on"}},
    ]);
    let e = evaluate(&compiled(def), &ctx(None, json!({})), &());
    assert_eq!(
        (e.error_code, e.rule_id.as_deref(), e.variant),
        (Some(ErrorCode::TargetingKeyMissing), Some("pct"), None)
    );
}

#[test]
fn rollouts_follow_the_documented_ranges() {
    // Buckets [0, 20000) → a, [20000, 20000) → b (weight 0), [20000, 100000) → c.
    let f = compiled(json!({
        "key": "ranges", "salt": "s", "kind": "string",
        "variants": {"a": "A", "b": "B", "c": "C"},
        "enabled": true, "off_variant": "a",
        "fallthrough": {"rollout": {"weights": [["a", 20000], ["b", 0], ["c", 80000]]}},
    }));
    let mut seen = [false; 2];
    for i in 0..2_000 {
        let key = format!("user-{i}");
        let b = bucket("ranges", "s", &key);
        let expected = if b < 20_000 { "a" } else { "c" };
        let e = evaluate(&f, &EvalContext::with_key(key), &());
        assert_eq!(e.variant.as_deref(), Some(expected));
        assert_eq!(e.value, json!(expected.to_uppercase()));
        seen[usize::from(expected == "c")] = true;
    }
    assert_eq!(seen, [true, true]);
}

#[test]
fn prerequisites_satisfied_unsatisfied_disabled_and_chained() {
    let store = FlagStore::new(
        [
            simple("base-on", true),
            simple("base-off", false),
            with_prereqs("needs-on", json!([{"flag": "base-on", "variant": "on"}])),
            with_prereqs("needs-off-variant", json!([{"flag": "base-on", "variant": "off"}])),
            // A disabled prerequisite fails even when its off variant is the required one.
            with_prereqs("needs-disabled", json!([{"flag": "base-off", "variant": "off"}])),
            with_prereqs("chain", json!([{"flag": "needs-on", "variant": "on"}])),
            with_prereqs("chain-broken", json!([{"flag": "needs-off-variant", "variant": "on"}])),
            with_prereqs(
                "both",
                json!([{"flag": "base-on", "variant": "on"}, {"flag": "needs-disabled", "variant": "on"}]),
            ),
        ]
        .map(flag),
        [],
    )
    .unwrap();
    let cx = EvalContext::with_key("u");
    let got = |k: &str| {
        let e = store.evaluate(k, &cx);
        assert_eq!(e.error_code, None, "{k}");
        (e.variant.unwrap(), e.reason)
    };
    assert_eq!(got("needs-on"), ("on".to_owned(), Reason::Default)); // prerequisites make it non-static
    assert_eq!(got("needs-off-variant"), ("off".to_owned(), Reason::Default));
    assert_eq!(got("needs-disabled"), ("off".to_owned(), Reason::Default));
    assert_eq!(got("chain"), ("on".to_owned(), Reason::Default));
    assert_eq!(got("chain-broken"), ("off".to_owned(), Reason::Default));
    assert_eq!(got("both"), ("off".to_owned(), Reason::Default));

    // A disabled flag does not look at its prerequisites.
    let mut def = with_prereqs("d", json!([{"flag": "base-on", "variant": "off"}]));
    def["enabled"] = json!(false);
    let e = evaluate(&compiled(def), &cx, &store);
    assert_eq!(e.reason, Reason::Disabled);

    // A prerequisite that errors (rollout without a targeting key) is not met.
    let mut split = simple("split", true);
    split["fallthrough"] = json!({"rollout": {"weights": [["on", 100000], ["off", 0]]}});
    let store =
        FlagStore::new([split, with_prereqs("needs-split", json!([{"flag": "split", "variant": "on"}]))].map(flag), [])
            .unwrap();
    assert_eq!(store.evaluate("needs-split", &cx).variant.as_deref(), Some("on"));
    let anon = store.evaluate("needs-split", &EvalContext::default());
    assert_eq!((anon.variant.as_deref(), anon.reason, anon.error_code), (Some("off"), Reason::Default, None));
}

#[test]
fn prerequisites_are_evaluated_for_the_same_context() {
    let gate = flag(bool_flag_with("gate", json!([{"attribute": "beta", "op": "equals", "values": [true]}])));
    let store =
        FlagStore::new([gate, flag(with_prereqs("feature", json!([{"flag": "gate", "variant": "on"}])))], []).unwrap();
    assert_eq!(store.evaluate("feature", &ctx(Some("u"), json!({"beta": true}))).variant.as_deref(), Some("on"));
    assert_eq!(store.evaluate("feature", &ctx(Some("u"), json!({"beta": false}))).variant.as_deref(), Some("off"));
}

#[test]
fn inconsistent_environments_give_general_never_a_hang_or_panic() {
    let cx = EvalContext::with_key("u");
    // Missing prerequisite flag.
    let f = compiled(with_prereqs("a", json!([{"flag": "gone", "variant": "on"}])));
    assert_eq!(evaluate(&f, &cx, &()), Evaluation::error(Value::Null, ErrorCode::General));
    // A cycle that appeared after validation: a -> b -> a.
    let env = RawEnv::default()
        .with_flag(with_prereqs("a", json!([{"flag": "b", "variant": "on"}])))
        .with_flag(with_prereqs("b", json!([{"flag": "a", "variant": "on"}])));
    let e = evaluate(&env.flags["a"], &cx, &env);
    assert_eq!(e.error_code, Some(ErrorCode::General));
    assert!(validate(env.flags["a"].flag(), &env).is_err());
    // Missing segment.
    let f =
        compiled(bool_flag_with("s", json!([{"attribute": "targetingKey", "op": "in_segment", "values": ["nope"]}])));
    assert_eq!(evaluate(&f, &cx, &()).error_code, Some(ErrorCode::General));
    // ... but a missing attribute is decided before the segment is looked up.
    assert_eq!(evaluate(&f, &EvalContext::default(), &()).error_code, None);
    // Typed helpers report GENERAL with the caller's default.
    let e = evaluate_bool(&f, &cx, &(), true);
    assert_eq!((e.value, e.error_code, e.reason), (true, Some(ErrorCode::General), Reason::Error));
}

#[test]
fn prerequisite_budget_is_enforced_at_evaluation() {
    // A chain longer than the budget, built without validation: GENERAL, not a stack overflow.
    let n = MAX_PREREQUISITE_EVALUATIONS + 1;
    let mut env = RawEnv::default().with_flag(simple("f0", true));
    for i in 1..=n {
        env = env.with_flag(with_prereqs(&format!("f{i}"), json!([{"flag": format!("f{}", i - 1), "variant": "on"}])));
    }
    let cx = EvalContext::with_key("u");
    let last = &env.flags[&format!("f{n}")];
    assert_eq!(evaluate(last, &cx, &env).error_code, Some(ErrorCode::General));
    let e = validate(last.flag(), &env).unwrap_err();
    assert_eq!(e.path, "prerequisites");
    // Exactly the budget is fine, and validates.
    let at_budget = &env.flags[&format!("f{}", n - 1)];
    assert_eq!(evaluate(at_budget, &cx, &env).variant.as_deref(), Some("on"));
    validate(at_budget.flag(), &env).unwrap();
}

#[test]
fn segments_excluded_wins_over_included_wins_over_rules() {
    let seg = json!({
        "key": "beta",
        "included": ["alice", "carol"],
        "excluded": ["carol", "dave"],
        "rules": [
            [{"attribute": "email", "op": "ends_with", "values": ["@corp.example"]}],
            [{"attribute": "plan", "op": "equals", "values": ["enterprise"]}, {"attribute": "seats", "op": "gt", "values": [10]}],
        ],
    });
    let in_beta = bool_flag_with("f", json!([{"attribute": "targetingKey", "op": "in_segment", "values": ["beta"]}]));
    let not_in_beta = bool_flag_with(
        "g",
        json!([{"attribute": "targetingKey", "op": "in_segment", "values": ["beta"], "negate": true}]),
    );
    let store = FlagStore::new([flag(in_beta), flag(not_in_beta)], [segment(seg)]).unwrap();
    let cases = [
        (Some("alice"), json!({}), true),                                  // included
        (Some("carol"), json!({"email": "c@corp.example"}), false),        // excluded beats included and rules
        (Some("dave"), json!({"plan": "enterprise", "seats": 50}), false), // excluded beats rules
        (Some("erin"), json!({"email": "e@corp.example"}), true),          // first rule
        (Some("erin"), json!({"plan": "enterprise", "seats": 50}), true),  // second rule (all clauses)
        (Some("erin"), json!({"plan": "enterprise", "seats": 5}), false),
        (Some("erin"), json!({"email": "e@else.example"}), false),
        (None, json!({"email": "e@corp.example"}), false), // clause attribute missing
    ];
    for (key, attrs, member) in cases {
        let cx = ctx(key, attrs.clone());
        let f = store.evaluate("f", &cx);
        assert_eq!(f.reason == Reason::TargetingMatch, member, "{key:?} {attrs}");
        let g = store.evaluate("g", &cx);
        // Negated: the opposite, except that a missing attribute matches neither way.
        assert_eq!(g.reason == Reason::TargetingMatch, key.is_some() && !member, "negated {key:?} {attrs}");
    }
}

#[test]
fn in_segment_uses_the_clause_attribute_for_the_lists_and_any_listed_segment() {
    let store = FlagStore::new(
        [flag(bool_flag_with("f", json!([{"attribute": "org", "op": "in_segment", "values": ["a", "b"]}])))],
        [segment(json!({"key": "a", "included": ["acme"]})), segment(json!({"key": "b", "included": ["globex"]}))],
    )
    .unwrap();
    let hit = |attrs: Value| store.evaluate("f", &ctx(Some("acme"), attrs)).reason == Reason::TargetingMatch;
    assert!(hit(json!({"org": "acme"})));
    assert!(hit(json!({"org": "globex"})));
    assert!(!hit(json!({"org": "initech"})));
    assert!(!hit(json!({}))); // the targeting key is not consulted
    assert!(!hit(json!({"org": 7}))); // not a string: the lists do not apply, and there are no rules
}

#[test]
fn typed_helpers_check_the_type_and_serve_defaults_on_error() {
    let cx = EvalContext::with_key("u");
    let b = compiled(simple("b", true));
    let e = evaluate_bool(&b, &cx, &(), false);
    assert_eq!((e.value, e.variant.as_deref(), e.reason, e.error_code), (true, Some("on"), Reason::Static, None));
    let e = evaluate_string(&b, &cx, &(), "dflt");
    assert_eq!(
        (e.value.as_str(), e.variant, e.reason, e.error_code),
        ("dflt", None, Reason::Error, Some(ErrorCode::TypeMismatch))
    );
    assert_eq!(evaluate_number(&b, &cx, &(), 1.5).error_code, Some(ErrorCode::TypeMismatch));
    assert_eq!(evaluate_object(&b, &cx, &(), json!({})).error_code, Some(ErrorCode::TypeMismatch));
    assert_eq!(evaluate_as(&b, &cx, &(), FlagKind::String), Evaluation::error(Value::Null, ErrorCode::TypeMismatch));
    assert_eq!(evaluate_as(&b, &cx, &(), FlagKind::Boolean), evaluate(&b, &cx, &()));

    let def = |kind: &str, variants: Value, serve: &str| {
        compiled(
            json!({"key": "k", "kind": kind, "variants": variants, "enabled": true, "off_variant": serve, "fallthrough": {"variant": serve}}),
        )
    };
    let s = def("string", json!({"x": "hello", "y": "bye"}), "x");
    assert_eq!(evaluate_string(&s, &cx, &(), "d").value, "hello");
    let e = evaluate_bool(&s, &cx, &(), true);
    assert!(e.value);
    assert_eq!(e.error_code, Some(ErrorCode::TypeMismatch));

    let ints = def("number", json!({"small": 3, "big": -40}), "big");
    assert_eq!(evaluate_integer(&ints, &cx, &(), 0).value, -40);
    assert_eq!(evaluate_number(&ints, &cx, &(), 0.0).value, -40.0);
    let floats = def("number", json!({"small": 3, "half": 0.5}), "small");
    assert_eq!(evaluate_number(&floats, &cx, &(), 0.0).value, 3.0);
    // Not every variant is an integer: an integer request is a type mismatch, whichever is served.
    let e = evaluate_integer(&floats, &cx, &(), 9);
    assert_eq!((e.value, e.error_code), (9, Some(ErrorCode::TypeMismatch)));

    let o = def("object", json!({"cfg": {"limit": 5}}), "cfg");
    let e = evaluate_object(&o, &cx, &(), json!(null));
    assert_eq!((e.value, e.variant.as_deref()), (json!({"limit": 5}), Some("cfg")));

    // An evaluation error keeps its code and serves the default.
    let mut split = simple("sp", true);
    split["fallthrough"] = json!({"rollout": {"weights": [["on", 100000], ["off", 0]]}});
    let e = evaluate_bool(&compiled(split), &EvalContext::default(), &(), false);
    assert_eq!((e.value, e.reason, e.error_code), (false, Reason::Error, Some(ErrorCode::TargetingKeyMissing)));
}

#[test]
fn store_reports_flag_not_found() {
    let store = FlagStore::new([flag(simple("a", true))], []).unwrap();
    assert_eq!(store.evaluate("b", &EvalContext::default()), Evaluation::error(Value::Null, ErrorCode::FlagNotFound));
    assert_eq!(store.evaluate("a", &EvalContext::default()).reason, Reason::Static);
    assert_eq!(store.flags().count(), 1);
    assert!(store.get("a").is_some() && store.get("b").is_none());
}

#[test]
fn wire_spellings_are_openfeature_and_snake_case() {
    let reasons = [
        (Reason::Static, "STATIC"),
        (Reason::TargetingMatch, "TARGETING_MATCH"),
        (Reason::Split, "SPLIT"),
        (Reason::Default, "DEFAULT"),
        (Reason::Disabled, "DISABLED"),
        (Reason::Error, "ERROR"),
    ];
    for (r, s) in reasons {
        assert_eq!(serde_json::to_value(r).unwrap(), json!(s));
        assert_eq!(r.as_str(), s);
        assert_eq!(serde_json::from_value::<Reason>(json!(s)).unwrap(), r);
    }
    let codes = [
        (ErrorCode::FlagNotFound, "FLAG_NOT_FOUND"),
        (ErrorCode::ParseError, "PARSE_ERROR"),
        (ErrorCode::TypeMismatch, "TYPE_MISMATCH"),
        (ErrorCode::TargetingKeyMissing, "TARGETING_KEY_MISSING"),
        (ErrorCode::General, "GENERAL"),
    ];
    for (c, s) in codes {
        assert_eq!(serde_json::to_value(c).unwrap(), json!(s));
        assert_eq!(c.as_str(), s);
    }
    let e = Evaluation::error(Value::Null, ErrorCode::TargetingKeyMissing);
    assert_eq!(
        serde_json::to_value(&e).unwrap(),
        json!({"value": null, "variant": null, "reason": "ERROR", "error_code": "TARGETING_KEY_MISSING", "rule_id": null})
    );
    // Ops round-trip with their snake_case names.
    for op in [
        "equals",
        "in",
        "starts_with",
        "ends_with",
        "contains",
        "matches",
        "lt",
        "lte",
        "gt",
        "gte",
        "semver_lt",
        "semver_eq",
        "semver_gt",
        "in_segment",
    ] {
        let parsed: Op = serde_json::from_value(json!(op)).unwrap();
        assert_eq!(parsed.as_str(), op);
    }
}

#[test]
fn definitions_reject_unknown_fields_and_round_trip() {
    let mut def = simple("a", true);
    def["rules"] = json!([{"id": "r", "clauses": [{"attribute": "x", "op": "in", "values": [1]}], "serve": {"rollout": {"bucket_by": "org", "weights": [["on", 1], ["off", 99999]]}}}]);
    let f = flag(def.clone());
    assert_eq!(serde_json::from_value::<Flag>(serde_json::to_value(&f).unwrap()).unwrap(), f);
    for (pointer, field) in
        [("", "extra"), ("/rules/0", "extra"), ("/rules/0/clauses/0", "extra"), ("/rules/0/serve/rollout", "extra")]
    {
        let mut bad = def.clone();
        bad.pointer_mut(pointer).unwrap()[field] = json!(1);
        assert!(serde_json::from_value::<Flag>(bad).is_err(), "{pointer}");
    }
    assert!(serde_json::from_value::<Segment>(json!({"key": "s", "extra": 1})).is_err());
    assert!(serde_json::from_value::<EvalContext>(json!({"targeting_key": "u", "extra": 1})).is_err());
    assert!(serde_json::from_value::<Flag>(json!({"key": "a"})).is_err());
}

#[test]
fn contexts_from_the_flat_openfeature_form() {
    let flat = json!({"targetingKey": "u1", "plan": "pro"});
    let Value::Object(map) = flat else { unreachable!() };
    let cx = EvalContext::from_flat(map);
    assert_eq!(cx, EvalContext::with_key("u1").attr("plan", "pro"));
    let Value::Object(map) = json!({"targetingKey": 5}) else { unreachable!() };
    assert_eq!(EvalContext::from_flat(map), EvalContext::default());
}
