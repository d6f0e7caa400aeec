//! Validation and compilation: a [`Flag`] or [`Segment`] becomes a [`CompiledFlag`] /
//! [`CompiledSegment`] with variant indices, precompiled regular expressions, parsed numbers and
//! semantic versions and cumulative rollout ranges, so that evaluation does no parsing at all.
//!
//! Every error names the offending field with a path such as `rules[2].clauses[0].values[1]`,
//! `fallthrough.weights`, `variants["on"]` or `prerequisites[0].flag`.

use std::collections::{BTreeMap, BTreeSet};

use regex::{Regex, RegexBuilder};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::eval::Lookup;
use crate::model::{Clause, Flag, FlagKind, Op, Prerequisite, Segment, Serve, TARGETING_KEY_ATTRIBUTE, TOTAL_WEIGHT};
use crate::semver::OwnedVersion;

/// The most prerequisite evaluations one evaluation may need, counted over the fully expanded
/// prerequisite tree (a flag reached along two paths counts twice). Validation rejects flags over
/// it; evaluation stops with `GENERAL` if an environment changed after validation exceeds it
/// (which is also how a prerequisite cycle introduced later is cut short).
pub const MAX_PREREQUISITE_EVALUATIONS: usize = 64;

/// The compiled size limit of one `matches` regular expression, in bytes.
pub const REGEX_SIZE_LIMIT: usize = 1 << 20;

/// Why a flag or segment is invalid: the field's path and a message.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, thiserror::Error)]
#[serde(deny_unknown_fields)]
#[error("{path}: {message}")]
pub struct ValidationError {
    /// The offending field, e.g. `rules[2].clauses[0].values[1]` (empty for the whole object).
    pub path: String,
    /// What is wrong with it.
    pub message: String,
}

impl ValidationError {
    fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        ValidationError { path: path.into(), message: message.into() }
    }

    /// The same error with `prefix` (e.g. `flags["a"]`) prepended to the path.
    #[must_use]
    pub fn prefixed(mut self, prefix: &str) -> Self {
        self.path = if self.path.is_empty() { prefix.to_owned() } else { format!("{prefix}.{}", self.path) };
        self
    }
}

/// A map key as it appears in a path: JSON-quoted.
pub(crate) fn quoted(key: &str) -> String {
    Value::from(key).to_string()
}

/// A validated flag, ready to evaluate. Built by [`compile`].
#[derive(Debug, Clone)]
pub struct CompiledFlag {
    pub(crate) flag: Flag,
    /// Variant names, in the `BTreeMap` order of `flag.variants`.
    pub(crate) names: Vec<String>,
    /// Values, parallel to `names`.
    pub(crate) values: Vec<Value>,
    pub(crate) off: usize,
    pub(crate) fallthrough: CompiledServe,
    pub(crate) rules: Vec<CompiledRule>,
    /// Every variant is a JSON number representable as `i64`.
    pub(crate) all_integers: bool,
    /// No rules, no prerequisites, a single-variant fallthrough: the value cannot depend on context.
    pub(crate) is_static: bool,
}

impl CompiledFlag {
    /// The source definition.
    pub fn flag(&self) -> &Flag {
        &self.flag
    }

    /// The flag's key.
    pub fn key(&self) -> &str {
        &self.flag.key
    }

    /// Gives the source definition back.
    pub fn into_flag(self) -> Flag {
        self.flag
    }

    /// Segment keys referenced by `in_segment` clauses.
    fn segment_refs(&self) -> impl Iterator<Item = &str> {
        self.rules
            .iter()
            .flat_map(|r| &r.clauses)
            .flat_map(|c| match &c.matcher {
                Matcher::InSegment(keys) => keys.as_slice(),
                _ => &[],
            })
            .map(String::as_str)
    }
}

/// A validated segment. Built by [`compile_segment`].
#[derive(Debug, Clone)]
pub struct CompiledSegment {
    pub(crate) segment: Segment,
    /// Sorted, deduplicated.
    pub(crate) included: Vec<String>,
    /// Sorted, deduplicated.
    pub(crate) excluded: Vec<String>,
    pub(crate) rules: Vec<Vec<CompiledClause>>,
}

impl CompiledSegment {
    /// The source definition.
    pub fn segment(&self) -> &Segment {
        &self.segment
    }

    /// The segment's key.
    pub fn key(&self) -> &str {
        &self.segment.key
    }
}

#[derive(Debug, Clone)]
pub(crate) struct CompiledRule {
    pub(crate) id: String,
    pub(crate) clauses: Vec<CompiledClause>,
    pub(crate) serve: CompiledServe,
}

#[derive(Debug, Clone)]
pub(crate) enum CompiledServe {
    Variant(usize),
    /// `ranges[k] = (end, variant)`: buckets `[previous end, end)` get `variant`; the last end is
    /// `TOTAL_WEIGHT`. Zero-weight entries are dropped.
    Rollout {
        bucket_by: AttrRef,
        ranges: Vec<(u32, usize)>,
    },
}

#[derive(Debug, Clone)]
pub(crate) enum AttrRef {
    TargetingKey,
    Named(String),
}

impl AttrRef {
    fn new(name: &str) -> AttrRef {
        if name == TARGETING_KEY_ATTRIBUTE { AttrRef::TargetingKey } else { AttrRef::Named(name.to_owned()) }
    }
}

#[derive(Debug, Clone)]
pub(crate) struct CompiledClause {
    pub(crate) attribute: AttrRef,
    pub(crate) negate: bool,
    pub(crate) matcher: Matcher,
}

#[derive(Debug, Clone, Copy)]
pub(crate) enum NumOp {
    Lt,
    Lte,
    Gt,
    Gte,
}

#[derive(Debug, Clone, Copy)]
pub(crate) enum SemverOp {
    Lt,
    Eq,
    Gt,
}

/// An operator with its operands in evaluation-ready form.
#[derive(Debug, Clone)]
pub(crate) enum Matcher {
    /// `equals` (one value) and `in` (several): JSON equality, numbers by value. No `null`s.
    Equals(Vec<Value>),
    StartsWith(Vec<String>),
    EndsWith(Vec<String>),
    Contains(Vec<String>),
    Matches(Vec<Regex>),
    Numeric(NumOp, Vec<f64>),
    Semver(SemverOp, Vec<OwnedVersion>),
    InSegment(Vec<String>),
}

/// Validates a flag on its own (everything but references to other flags and segments) and
/// compiles it.
pub fn compile(flag: Flag) -> Result<CompiledFlag, ValidationError> {
    build(&flag).map(|parts| CompiledFlag { flag, ..parts })
}

/// Validates a flag completely: on its own (as [`compile`]) and against `env` — every segment
/// exists, every prerequisite flag exists and has the required variant, the prerequisites reachable
/// from the flag form no cycle (the error's message spells the cycle, e.g. `a -> b -> a`), reach no
/// unknown flag or segment, and need at most [`MAX_PREREQUISITE_EVALUATIONS`] evaluations.
///
/// When this succeeds (and `env` does not change), evaluating the flag never yields `GENERAL`.
pub fn validate<L: Lookup + ?Sized>(flag: &Flag, env: &L) -> Result<(), ValidationError> {
    build(flag)?;
    check_references(flag, env)
}

/// Validates and compiles a segment. Its rules may not use `in_segment`.
pub fn compile_segment(segment: Segment) -> Result<CompiledSegment, ValidationError> {
    if segment.key.is_empty() {
        return Err(ValidationError::new("key", "must not be empty"));
    }
    for (list, name) in [(&segment.included, "included"), (&segment.excluded, "excluded")] {
        if let Some(i) = list.iter().position(String::is_empty) {
            return Err(ValidationError::new(format!("{name}[{i}]"), "must not be empty"));
        }
    }
    let mut rules = Vec::with_capacity(segment.rules.len());
    for (i, rule) in segment.rules.iter().enumerate() {
        let mut clauses = Vec::with_capacity(rule.len());
        for (j, clause) in rule.iter().enumerate() {
            clauses.push(compile_clause(clause, &format!("rules[{i}][{j}]"), false)?);
        }
        rules.push(clauses);
    }
    let sorted = |list: &[String]| list.iter().cloned().collect::<BTreeSet<_>>().into_iter().collect::<Vec<_>>();
    let included = sorted(&segment.included);
    let excluded = sorted(&segment.excluded);
    Ok(CompiledSegment { segment, included, excluded, rules })
}

/// The checks and compilation that need the flag alone (the result holds a clone of it).
fn build(flag: &Flag) -> Result<CompiledFlag, ValidationError> {
    if flag.key.is_empty() {
        return Err(ValidationError::new("key", "must not be empty"));
    }
    if flag.variants.is_empty() {
        return Err(ValidationError::new("variants", "there must be at least one variant"));
    }
    for (name, value) in &flag.variants {
        let path = || format!("variants[{}]", quoted(name));
        if name.is_empty() {
            return Err(ValidationError::new(path(), "a variant name must not be empty"));
        }
        if !flag.kind.admits(value) {
            return Err(ValidationError::new(
                path(),
                format!("value {} is not of the flag's kind `{}`", value, flag.kind.as_str()),
            ));
        }
    }
    let names: Vec<String> = flag.variants.keys().cloned().collect();
    let values: Vec<Value> = flag.variants.values().cloned().collect();
    let variant_index = |name: &str| names.iter().position(|n| n == name);

    let off = variant_index(&flag.off_variant)
        .ok_or_else(|| ValidationError::new("off_variant", unknown_variant(&flag.off_variant)))?;

    for (i, p) in flag.prerequisites.iter().enumerate() {
        if p.flag.is_empty() {
            return Err(ValidationError::new(format!("prerequisites[{i}].flag"), "must not be empty"));
        }
        if p.flag == flag.key {
            return Err(ValidationError::new(
                format!("prerequisites[{i}].flag"),
                format!("prerequisite cycle: {0} -> {0}", flag.key),
            ));
        }
        if p.variant.is_empty() {
            return Err(ValidationError::new(format!("prerequisites[{i}].variant"), "must not be empty"));
        }
    }

    let fallthrough = compile_serve(&flag.fallthrough, &names, "fallthrough")?;

    let mut rules = Vec::with_capacity(flag.rules.len());
    let mut ids = BTreeSet::new();
    for (i, rule) in flag.rules.iter().enumerate() {
        if rule.id.is_empty() {
            return Err(ValidationError::new(format!("rules[{i}].id"), "must not be empty"));
        }
        if !ids.insert(rule.id.as_str()) {
            return Err(ValidationError::new(
                format!("rules[{i}].id"),
                format!("duplicate rule id {}", quoted(&rule.id)),
            ));
        }
        let mut clauses = Vec::with_capacity(rule.clauses.len());
        for (j, clause) in rule.clauses.iter().enumerate() {
            clauses.push(compile_clause(clause, &format!("rules[{i}].clauses[{j}]"), true)?);
        }
        let serve = compile_serve(&rule.serve, &names, &format!("rules[{i}].serve"))?;
        rules.push(CompiledRule { id: rule.id.clone(), clauses, serve });
    }

    let all_integers = flag.kind == FlagKind::Number && values.iter().all(|v| v.as_i64().is_some());
    let is_static =
        flag.rules.is_empty() && flag.prerequisites.is_empty() && matches!(flag.fallthrough, Serve::Variant(_));
    Ok(CompiledFlag { flag: flag.clone(), names, values, off, fallthrough, rules, all_integers, is_static })
}

fn unknown_variant(name: &str) -> String {
    format!("unknown variant {}", quoted(name))
}

fn compile_serve(serve: &Serve, names: &[String], path: &str) -> Result<CompiledServe, ValidationError> {
    match serve {
        Serve::Variant(name) => names
            .iter()
            .position(|n| n == name)
            .map(CompiledServe::Variant)
            .ok_or_else(|| ValidationError::new(format!("{path}.variant"), unknown_variant(name))),
        Serve::Rollout { bucket_by, weights } => {
            let bucket_by = match bucket_by.as_deref() {
                None => AttrRef::TargetingKey,
                Some("") => return Err(ValidationError::new(format!("{path}.bucket_by"), "must not be empty")),
                Some(name) => AttrRef::new(name),
            };
            let mut seen = BTreeSet::new();
            let mut ranges = Vec::with_capacity(weights.len());
            let mut total: u64 = 0;
            for (k, (name, weight)) in weights.iter().enumerate() {
                let index = names
                    .iter()
                    .position(|n| n == name)
                    .ok_or_else(|| ValidationError::new(format!("{path}.weights[{k}]"), unknown_variant(name)))?;
                if !seen.insert(index) {
                    return Err(ValidationError::new(
                        format!("{path}.weights[{k}]"),
                        format!("variant {} appears twice", quoted(name)),
                    ));
                }
                total += u64::from(*weight);
                if *weight > 0 && total <= u64::from(TOTAL_WEIGHT) {
                    ranges.push((total as u32, index));
                }
            }
            if total != u64::from(TOTAL_WEIGHT) {
                return Err(ValidationError::new(
                    format!("{path}.weights"),
                    format!("weights sum to {total}, not {TOTAL_WEIGHT}"),
                ));
            }
            Ok(CompiledServe::Rollout { bucket_by, ranges })
        }
    }
}

fn compile_clause(clause: &Clause, path: &str, segments_allowed: bool) -> Result<CompiledClause, ValidationError> {
    if clause.attribute.is_empty() {
        return Err(ValidationError::new(format!("{path}.attribute"), "must not be empty"));
    }
    if clause.op == Op::InSegment && !segments_allowed {
        return Err(ValidationError::new(format!("{path}.op"), "in_segment is not allowed in segment rules"));
    }
    if clause.values.is_empty() {
        return Err(ValidationError::new(format!("{path}.values"), "there must be at least one value"));
    }
    if clause.op == Op::Equals && clause.values.len() != 1 {
        return Err(ValidationError::new(
            format!("{path}.values"),
            "equals takes exactly one value (use `in` for several)",
        ));
    }
    let value_err = |k: usize, message: String| ValidationError::new(format!("{path}.values[{k}]"), message);
    let strings = || -> Result<Vec<String>, ValidationError> {
        clause
            .values
            .iter()
            .enumerate()
            .map(|(k, v)| match v {
                Value::String(s) => Ok(s.clone()),
                other => Err(value_err(k, format!("{} needs a string, not {other}", clause.op.as_str()))),
            })
            .collect()
    };
    let matcher = match clause.op {
        Op::Equals | Op::In => {
            if let Some(k) = clause.values.iter().position(Value::is_null) {
                return Err(value_err(k, "null never matches: a null attribute counts as missing".to_owned()));
            }
            Matcher::Equals(clause.values.clone())
        }
        Op::StartsWith => Matcher::StartsWith(strings()?),
        Op::EndsWith => Matcher::EndsWith(strings()?),
        Op::Contains => Matcher::Contains(strings()?),
        Op::Matches => {
            let patterns = strings()?;
            let mut regexes = Vec::with_capacity(patterns.len());
            for (k, pattern) in patterns.iter().enumerate() {
                let regex = RegexBuilder::new(pattern)
                    .size_limit(REGEX_SIZE_LIMIT)
                    .build()
                    .map_err(|e| value_err(k, format!("invalid regular expression: {}", one_line(&e.to_string()))))?;
                regexes.push(regex);
            }
            Matcher::Matches(regexes)
        }
        Op::Lt | Op::Lte | Op::Gt | Op::Gte => {
            let op = match clause.op {
                Op::Lt => NumOp::Lt,
                Op::Lte => NumOp::Lte,
                Op::Gt => NumOp::Gt,
                _ => NumOp::Gte,
            };
            let mut numbers = Vec::with_capacity(clause.values.len());
            for (k, v) in clause.values.iter().enumerate() {
                match v.as_f64() {
                    Some(n) => numbers.push(n),
                    _ => return Err(value_err(k, format!("{} needs a number, not {v}", clause.op.as_str()))),
                }
            }
            Matcher::Numeric(op, numbers)
        }
        Op::SemverLt | Op::SemverEq | Op::SemverGt => {
            let op = match clause.op {
                Op::SemverLt => SemverOp::Lt,
                Op::SemverEq => SemverOp::Eq,
                _ => SemverOp::Gt,
            };
            let mut versions = Vec::with_capacity(clause.values.len());
            for (k, s) in strings()?.iter().enumerate() {
                versions.push(OwnedVersion::parse(s).ok_or_else(|| {
                    value_err(k, format!("{} is not a semantic version MAJOR.MINOR.PATCH[-PRERELEASE]", quoted(s)))
                })?);
            }
            Matcher::Semver(op, versions)
        }
        Op::InSegment => {
            let keys = strings()?;
            if let Some(k) = keys.iter().position(String::is_empty) {
                return Err(value_err(k, "a segment key must not be empty".to_owned()));
            }
            Matcher::InSegment(keys)
        }
    };
    Ok(CompiledClause { attribute: AttrRef::new(&clause.attribute), negate: clause.negate, matcher })
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The checks of [`validate`] that involve `env`.
pub(crate) fn check_references<L: Lookup + ?Sized>(flag: &Flag, env: &L) -> Result<(), ValidationError> {
    for (i, rule) in flag.rules.iter().enumerate() {
        for (j, clause) in rule.clauses.iter().enumerate() {
            if clause.op != Op::InSegment {
                continue;
            }
            for (k, key) in clause.values.iter().enumerate() {
                if let Some(key) = key.as_str()
                    && env.segment(key).is_none()
                {
                    return Err(ValidationError::new(
                        format!("rules[{i}].clauses[{j}].values[{k}]"),
                        format!("unknown segment {}", quoted(key)),
                    ));
                }
            }
        }
    }
    for (i, p) in flag.prerequisites.iter().enumerate() {
        if p.flag == flag.key {
            continue; // reported as a cycle below
        }
        let Some(other) = env.flag(&p.flag) else {
            return Err(ValidationError::new(
                format!("prerequisites[{i}].flag"),
                format!("unknown flag {}", quoted(&p.flag)),
            ));
        };
        if !other.flag.variants.contains_key(&p.variant) {
            return Err(ValidationError::new(
                format!("prerequisites[{i}].variant"),
                format!("flag {} has no variant {}", quoted(&p.flag), quoted(&p.variant)),
            ));
        }
    }
    check_prerequisite_graph(flag, env)
}

/// One flag on the depth-first path: its key, its prerequisites, the next one to visit, and the
/// number of prerequisite evaluations found below it so far.
struct Frame<'a> {
    key: &'a str,
    prerequisites: &'a [Prerequisite],
    next: usize,
    evaluations: usize,
}

/// Depth-first search over the prerequisites reachable from `root` (iterative: no recursion depth
/// to exhaust), detecting cycles, unknown flags and segments, and counting the expanded tree.
fn check_prerequisite_graph<L: Lookup + ?Sized>(root: &Flag, env: &L) -> Result<(), ValidationError> {
    let mut done: BTreeMap<&str, usize> = BTreeMap::new();
    let mut path = vec![Frame { key: &root.key, prerequisites: &root.prerequisites, next: 0, evaluations: 0 }];
    let err_path = |path: &[Frame<'_>]| {
        format!("prerequisites[{}].flag", path.first().map_or(0, |root| root.next.saturating_sub(1)))
    };
    while let Some(frame) = path.last_mut() {
        let Some(p) = frame.prerequisites.get(frame.next) else {
            let (key, evaluations) = (frame.key, frame.evaluations);
            path.pop();
            done.insert(key, evaluations);
            if let Some(parent) = path.last_mut() {
                parent.evaluations = parent.evaluations.saturating_add(1).saturating_add(evaluations);
            }
            continue;
        };
        frame.next += 1;
        let child = p.flag.as_str();
        if let Some(&below) = done.get(child) {
            frame.evaluations = frame.evaluations.saturating_add(1).saturating_add(below);
            continue;
        }
        if let Some(start) = path.iter().position(|f| f.key == child) {
            let mut cycle: Vec<&str> = path[start..].iter().map(|f| f.key).collect();
            cycle.push(child);
            return Err(ValidationError::new(err_path(&path), format!("prerequisite cycle: {}", cycle.join(" -> "))));
        }
        let Some(compiled) = env.flag(child) else {
            let mut chain: Vec<&str> = path.iter().map(|f| f.key).collect();
            chain.push(child);
            return Err(ValidationError::new(
                err_path(&path),
                format!("prerequisite chain {} reaches unknown flag {}", chain.join(" -> "), quoted(child)),
            ));
        };
        if let Some(missing) = compiled.segment_refs().find(|s| env.segment(s).is_none()) {
            return Err(ValidationError::new(
                err_path(&path),
                format!("prerequisite flag {} uses unknown segment {}", quoted(child), quoted(missing)),
            ));
        }
        path.push(Frame { key: child, prerequisites: &compiled.flag.prerequisites, next: 0, evaluations: 0 });
    }
    let total = done.get(root.key.as_str()).copied().unwrap_or(0);
    if total > MAX_PREREQUISITE_EVALUATIONS {
        return Err(ValidationError::new(
            "prerequisites",
            format!("the prerequisites expand to {total} flag evaluations, more than {MAX_PREREQUISITE_EVALUATIONS}"),
        ));
    }
    Ok(())
}
