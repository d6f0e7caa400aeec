//! The flag and segment model: plain serde data, exactly what an administrator writes.
//!
//! Every struct rejects unknown fields; JSON field names are snake_case. Validation and
//! compilation live in [`mod@crate::compile`]; nothing here checks cross-field consistency.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The attribute name under which a clause (or `bucket_by`) reads [`EvalContext::targeting_key`].
///
/// This is OpenFeature's spelling (and OFREP's context field). An entry of that name in
/// [`EvalContext::attributes`] is never read; `"key"` is an ordinary attribute.
pub const TARGETING_KEY_ATTRIBUTE: &str = "targetingKey";

/// The total every rollout's weights must sum to: weights are in thousandths of a percent.
pub const TOTAL_WEIGHT: u32 = 100_000;

/// A feature flag.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Flag {
    /// The flag's key; not empty.
    pub key: String,
    /// Variant name → value. Every value must match `kind`.
    pub variants: BTreeMap<String, Value>,
    /// The type of every variant's value.
    pub kind: FlagKind,
    /// A disabled flag serves `off_variant` with reason `DISABLED`.
    pub enabled: bool,
    /// Served when the flag is disabled or a prerequisite is not met.
    pub off_variant: String,
    /// Served when the flag is enabled, its prerequisites hold and no rule matches.
    pub fallthrough: Serve,
    /// Targeting rules, tried in order: the first matching rule wins.
    #[serde(default)]
    pub rules: Vec<Rule>,
    /// Other flags that must be enabled and serving a given variant for this one to be evaluated.
    #[serde(default)]
    pub prerequisites: Vec<Prerequisite>,
    /// Mixed into the bucketing hash; changing it re-shuffles every rollout of the flag.
    #[serde(default)]
    pub salt: String,
    /// The definition's version; carried, never interpreted.
    #[serde(default)]
    pub version: u64,
}

/// The type of a flag's values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FlagKind {
    /// JSON `true` / `false`.
    Boolean,
    /// JSON strings.
    String,
    /// JSON numbers (integers or floats).
    Number,
    /// JSON objects (OpenFeature "structure").
    Object,
}

impl FlagKind {
    /// Whether `value` has this kind.
    pub fn admits(self, value: &Value) -> bool {
        matches!(
            (self, value),
            (FlagKind::Boolean, Value::Bool(_))
                | (FlagKind::String, Value::String(_))
                | (FlagKind::Number, Value::Number(_))
                | (FlagKind::Object, Value::Object(_))
        )
    }

    /// The kind's JSON spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            FlagKind::Boolean => "boolean",
            FlagKind::String => "string",
            FlagKind::Number => "number",
            FlagKind::Object => "object",
        }
    }
}

/// A targeting rule: it matches when all its clauses match (a rule without clauses matches every
/// context).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// Reported as `rule_id` when the rule matches; not empty, unique within the flag.
    pub id: String,
    /// All must match.
    pub clauses: Vec<Clause>,
    /// What the rule serves.
    pub serve: Serve,
}

/// One condition on one attribute of the evaluation context.
///
/// `values` are alternatives: the operator holds when it holds for **any** value. If the attribute
/// is a JSON array, the operator holds when it holds for any element. `negate` inverts the result —
/// except that a **missing** attribute (absent, or JSON `null`) never matches, negated or not.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Clause {
    /// The context attribute; [`TARGETING_KEY_ATTRIBUTE`] reads the targeting key.
    pub attribute: String,
    /// The operator.
    pub op: Op,
    /// The operands (at least one; exactly one for `equals`).
    pub values: Vec<Value>,
    /// Invert the operator's result (for a present attribute).
    #[serde(default)]
    pub negate: bool,
}

/// Clause operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Op {
    /// JSON equality with the single value (numbers compare by value: `1 == 1.0`).
    Equals,
    /// JSON equality with any of the values.
    In,
    /// String prefix (attribute and values strings).
    StartsWith,
    /// String suffix.
    EndsWith,
    /// Substring.
    Contains,
    /// Regular expression (`regex` crate syntax, unanchored), compiled once at validation.
    Matches,
    /// Attribute `<` value (numbers).
    Lt,
    /// Attribute `<=` value.
    Lte,
    /// Attribute `>` value.
    Gt,
    /// Attribute `>=` value.
    Gte,
    /// Semantic version `<` (strings `MAJOR.MINOR.PATCH[-PRERELEASE][+BUILD]`).
    SemverLt,
    /// Semantic version `==` (build metadata ignored).
    SemverEq,
    /// Semantic version `>`.
    SemverGt,
    /// Membership in a segment (values are segment keys; the attribute is looked up in the
    /// segment's `included` / `excluded` lists).
    InSegment,
}

impl Op {
    /// The operator's JSON spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Op::Equals => "equals",
            Op::In => "in",
            Op::StartsWith => "starts_with",
            Op::EndsWith => "ends_with",
            Op::Contains => "contains",
            Op::Matches => "matches",
            Op::Lt => "lt",
            Op::Lte => "lte",
            Op::Gt => "gt",
            Op::Gte => "gte",
            Op::SemverLt => "semver_lt",
            Op::SemverEq => "semver_eq",
            Op::SemverGt => "semver_gt",
            Op::InSegment => "in_segment",
        }
    }
}

/// A reusable set of contexts.
///
/// Membership of a context whose clause attribute has the string value `v`: `v` in `excluded` → no;
/// else `v` in `included` → yes; else yes iff any rule matches (a rule is a list of clauses that
/// must all match; rules may not use `in_segment`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Segment {
    /// The segment's key; not empty.
    pub key: String,
    /// Targeting keys (or values of the `in_segment` clause's attribute) always in the segment.
    #[serde(default)]
    pub included: Vec<String>,
    /// Always out of the segment; wins over `included` and the rules.
    #[serde(default)]
    pub excluded: Vec<String>,
    /// Any matching rule puts the context in the segment.
    #[serde(default)]
    pub rules: Vec<Vec<Clause>>,
}

/// What a rule or the fallthrough serves.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Serve {
    /// One variant for everyone: `{"variant": "on"}`.
    Variant(String),
    /// A percentage rollout: `{"rollout": {"bucket_by": null, "weights": [["on", 25000], ["off", 75000]]}}`.
    Rollout {
        /// The attribute whose value is hashed (a string or an integer); `None` = the targeting key.
        #[serde(default)]
        bucket_by: Option<String>,
        /// `(variant, weight)`; weights sum to exactly [`TOTAL_WEIGHT`]. Bucket ranges are laid out
        /// contiguously in this order (see [`crate::bucket`]).
        weights: Vec<(String, u32)>,
    },
}

/// A flag that must be enabled and serve `variant` (for the same context).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Prerequisite {
    /// The other flag's key.
    pub flag: String,
    /// The variant it must serve.
    pub variant: String,
}

/// The evaluation context (OpenFeature's): an optional targeting key and free attributes.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvalContext {
    /// Identifies the subject; read as attribute [`TARGETING_KEY_ATTRIBUTE`] and bucketed on by
    /// default.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub targeting_key: Option<String>,
    /// Other attributes.
    #[serde(default)]
    pub attributes: BTreeMap<String, Value>,
}

impl EvalContext {
    /// A context with a targeting key and no attributes.
    pub fn with_key(key: impl Into<String>) -> Self {
        EvalContext { targeting_key: Some(key.into()), attributes: BTreeMap::new() }
    }

    /// Adds (or replaces) an attribute.
    #[must_use]
    pub fn attr(mut self, name: impl Into<String>, value: impl Into<Value>) -> Self {
        self.attributes.insert(name.into(), value.into());
        self
    }

    /// From OpenFeature's flat JSON form (`{"targetingKey": "u1", "plan": "pro"}`, as in OFREP):
    /// a string `targetingKey` becomes the targeting key (any other `targetingKey` is dropped: it
    /// could never be read), everything else an attribute.
    pub fn from_flat(mut object: serde_json::Map<String, Value>) -> Self {
        let targeting_key = match object.remove(TARGETING_KEY_ATTRIBUTE) {
            Some(Value::String(key)) => Some(key),
            _ => None,
        };
        EvalContext { targeting_key, attributes: object.into_iter().collect() }
    }
}
