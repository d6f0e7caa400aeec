//! Shared helpers: definitions from JSON, and a raw environment that (unlike `FlagStore`) may be
//! inconsistent.
#![allow(dead_code)]

use std::collections::BTreeMap;

use basalt_flags_core::*;
use serde_json::{Value, json};

/// A flag from its JSON definition (which must parse).
pub fn flag(def: Value) -> Flag {
    serde_json::from_value(def).expect("flag JSON parses")
}

/// A segment from its JSON definition.
pub fn segment(def: Value) -> Segment {
    serde_json::from_value(def).expect("segment JSON parses")
}

/// A compiled flag from JSON (which must compile).
pub fn compiled(def: Value) -> CompiledFlag {
    compile(flag(def)).expect("flag compiles")
}

/// A boolean flag `key` serving `on` to contexts matching `clauses`, `off` otherwise.
pub fn bool_flag_with(key: &str, clauses: Value) -> Value {
    json!({
        "key": key,
        "kind": "boolean",
        "variants": {"on": true, "off": false},
        "enabled": true,
        "off_variant": "off",
        "fallthrough": {"variant": "off"},
        "rules": [{"id": "r0", "clauses": clauses, "serve": {"variant": "on"}}],
    })
}

/// Whether `clause` (one JSON clause) matches `ctx`, via a one-rule flag evaluated against `env`.
pub fn clause_matches_in(clause: Value, ctx: &EvalContext, env: &impl Lookup) -> bool {
    let f = compiled(bool_flag_with("probe", json!([clause])));
    let e = evaluate(&f, ctx, env);
    assert_eq!(e.error_code, None, "{e:?}");
    match e.reason {
        Reason::TargetingMatch => true,
        Reason::Default => false,
        other => panic!("unexpected reason {other:?}"),
    }
}

/// [`clause_matches_in`] with the empty environment.
pub fn clause_matches(clause: Value, ctx: &EvalContext) -> bool {
    clause_matches_in(clause, ctx, &())
}

/// An environment built without cross-validation.
#[derive(Default)]
pub struct RawEnv {
    pub flags: BTreeMap<String, CompiledFlag>,
    pub segments: BTreeMap<String, CompiledSegment>,
}

impl RawEnv {
    pub fn with_flag(mut self, def: Value) -> Self {
        let f = compiled(def);
        self.flags.insert(f.key().to_owned(), f);
        self
    }

    pub fn with_segment(mut self, def: Value) -> Self {
        let s = compile_segment(segment(def)).expect("segment compiles");
        self.segments.insert(s.key().to_owned(), s);
        self
    }
}

impl Lookup for RawEnv {
    fn flag(&self, key: &str) -> Option<&CompiledFlag> {
        self.flags.get(key)
    }

    fn segment(&self, key: &str) -> Option<&CompiledSegment> {
        self.segments.get(key)
    }
}

/// A context with targeting key `key` and the attributes of a JSON object.
pub fn ctx(key: Option<&str>, attributes: Value) -> EvalContext {
    let attributes = match attributes {
        Value::Object(map) => map.into_iter().collect(),
        _ => panic!("attributes must be an object"),
    };
    EvalContext { targeting_key: key.map(str::to_owned), attributes }
}
