//! Evaluation: a compiled flag, a context and an environment (other flags and segments) give an
//! [`Evaluation`] with an OpenFeature reason and error code. Pure, deterministic, never panics.

use std::cmp::Ordering;

use serde::{Deserialize, Serialize};
use serde_json::{Number, Value};

use crate::compile::MAX_PREREQUISITE_EVALUATIONS;
use crate::compile::{AttrRef, CompiledClause, CompiledFlag, CompiledSegment, CompiledServe, Matcher, NumOp, SemverOp};
use crate::hash::{bucket_bytes, integer_digits};
use crate::model::{EvalContext, FlagKind};
use crate::semver;

/// Where evaluation finds the other flags (prerequisites) and the segments a flag refers to.
pub trait Lookup {
    /// The flag with this key.
    fn flag(&self, key: &str) -> Option<&CompiledFlag>;
    /// The segment with this key.
    fn segment(&self, key: &str) -> Option<&CompiledSegment>;
}

/// The empty environment: no other flags, no segments.
impl Lookup for () {
    fn flag(&self, _: &str) -> Option<&CompiledFlag> {
        None
    }

    fn segment(&self, _: &str) -> Option<&CompiledSegment> {
        None
    }
}

/// OpenFeature resolution reasons (the subset this evaluator produces).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Reason {
    /// Enabled, no rules, no prerequisites, a single-variant fallthrough: the value cannot depend on
    /// the context.
    Static,
    /// A rule matched (whether it serves a variant or a rollout); `rule_id` names it.
    TargetingMatch,
    /// No rule matched and the fallthrough is a rollout.
    Split,
    /// No rule matched and the fallthrough is a single variant; or a prerequisite is not met and
    /// `off_variant` is served.
    Default,
    /// The flag is disabled: `off_variant` is served.
    Disabled,
    /// See `error_code`; the value is `null` (or the caller's default for typed evaluations).
    Error,
}

impl Reason {
    /// OpenFeature's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Static => "STATIC",
            Reason::TargetingMatch => "TARGETING_MATCH",
            Reason::Split => "SPLIT",
            Reason::Default => "DEFAULT",
            Reason::Disabled => "DISABLED",
            Reason::Error => "ERROR",
        }
    }
}

/// OpenFeature error codes (the subset relevant to evaluation).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ErrorCode {
    /// No flag with the requested key ([`crate::FlagStore::evaluate`]).
    FlagNotFound,
    /// A definition or context could not be parsed. Never produced by evaluation itself (it only
    /// sees parsed, compiled data); for the serving layer.
    ParseError,
    /// The flag's kind is not the requested type (typed evaluation).
    TypeMismatch,
    /// A rollout needed a bucketing value (the targeting key, or its `bucket_by` attribute as a
    /// string or integer) that the context lacks.
    TargetingKeyMissing,
    /// The environment is inconsistent with the flag: an unknown segment or prerequisite flag, or
    /// more than [`MAX_PREREQUISITE_EVALUATIONS`] prerequisite evaluations (e.g. a cycle). Never
    /// happens for a flag [`crate::validate`]d against an unchanged environment.
    General,
}

impl ErrorCode {
    /// OpenFeature's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::FlagNotFound => "FLAG_NOT_FOUND",
            ErrorCode::ParseError => "PARSE_ERROR",
            ErrorCode::TypeMismatch => "TYPE_MISMATCH",
            ErrorCode::TargetingKeyMissing => "TARGETING_KEY_MISSING",
            ErrorCode::General => "GENERAL",
        }
    }
}

/// The result of evaluating a flag. `T` is `serde_json::Value` for [`evaluate`] and the requested
/// type for the typed helpers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Evaluation<T = Value> {
    /// The served variant's value; on error `null` ([`evaluate`]) or the caller's default (typed).
    pub value: T,
    /// The served variant; `None` exactly when `reason` is `ERROR`.
    pub variant: Option<String>,
    /// Why this value.
    pub reason: Reason,
    /// `Some` exactly when `reason` is `ERROR`.
    pub error_code: Option<ErrorCode>,
    /// The matching rule, for `TARGETING_MATCH` (and for a `TARGETING_KEY_MISSING` raised by a
    /// rule's rollout).
    pub rule_id: Option<String>,
}

impl<T> Evaluation<T> {
    /// An error evaluation serving `value` (the caller's default).
    pub fn error(value: T, code: ErrorCode) -> Self {
        Evaluation { value, variant: None, reason: Reason::Error, error_code: Some(code), rule_id: None }
    }
}

/// The environment is inconsistent with the flag (see [`ErrorCode::General`]).
struct Inconsistent;

/// A resolution borrowing from the flag: cheap to produce for prerequisites.
struct Outcome<'f> {
    /// Index into the flag's variants; `None` on error.
    variant: Option<usize>,
    reason: Reason,
    error: Option<ErrorCode>,
    rule: Option<&'f str>,
}

impl<'f> Outcome<'f> {
    fn served(variant: usize, reason: Reason, rule: Option<&'f str>) -> Self {
        Outcome { variant: Some(variant), reason, error: None, rule }
    }
}

/// Evaluates `flag` for `ctx`; prerequisites and segments come from `env`.
///
/// Order: disabled → `off_variant` (`DISABLED`); a prerequisite (in order) that is not enabled and
/// serving its required variant → `off_variant` (`DEFAULT`); the first rule whose clauses all match
/// (`TARGETING_MATCH`); the fallthrough (`STATIC`, `DEFAULT` or `SPLIT`). A rollout without a
/// bucketing value → `ERROR`/`TARGETING_KEY_MISSING` (no fallback to later rules). On error the
/// value is `null` and `variant` is `None`.
pub fn evaluate<L: Lookup + ?Sized>(flag: &CompiledFlag, ctx: &EvalContext, env: &L) -> Evaluation {
    let mut budget = MAX_PREREQUISITE_EVALUATIONS;
    match resolve(flag, ctx, env, &mut budget) {
        Ok(outcome) => {
            let served = outcome.variant.and_then(|i| Some((flag.names.get(i)?, flag.values.get(i)?)));
            let (variant, value) = match served {
                Some((name, value)) => (Some(name.clone()), value.clone()),
                None => (None, Value::Null),
            };
            Evaluation {
                value,
                variant,
                reason: outcome.reason,
                error_code: outcome.error,
                rule_id: outcome.rule.map(str::to_owned),
            }
        }
        Err(Inconsistent) => Evaluation::error(Value::Null, ErrorCode::General),
    }
}

/// [`evaluate`] for a requested kind: `TYPE_MISMATCH` (value `null`) unless the flag has that kind.
pub fn evaluate_as<L: Lookup + ?Sized>(flag: &CompiledFlag, ctx: &EvalContext, env: &L, kind: FlagKind) -> Evaluation {
    if flag.flag.kind != kind {
        return Evaluation::error(Value::Null, ErrorCode::TypeMismatch);
    }
    evaluate(flag, ctx, env)
}

/// A boolean evaluation: `default` on any error, `TYPE_MISMATCH` unless the flag is `boolean`.
pub fn evaluate_bool<L: Lookup + ?Sized>(
    flag: &CompiledFlag,
    ctx: &EvalContext,
    env: &L,
    default: bool,
) -> Evaluation<bool> {
    typed(flag, ctx, env, default, flag.flag.kind == FlagKind::Boolean, Value::as_bool)
}

/// A string evaluation: `default` on any error, `TYPE_MISMATCH` unless the flag is `string`.
pub fn evaluate_string<L: Lookup + ?Sized>(
    flag: &CompiledFlag,
    ctx: &EvalContext,
    env: &L,
    default: &str,
) -> Evaluation<String> {
    let ok = flag.flag.kind == FlagKind::String;
    let eval = typed(flag, ctx, env, default, ok, Value::as_str);
    Evaluation {
        value: eval.value.to_owned(),
        variant: eval.variant,
        reason: eval.reason,
        error_code: eval.error_code,
        rule_id: eval.rule_id,
    }
}

/// A float evaluation: `default` on any error, `TYPE_MISMATCH` unless the flag is `number`.
pub fn evaluate_number<L: Lookup + ?Sized>(
    flag: &CompiledFlag,
    ctx: &EvalContext,
    env: &L,
    default: f64,
) -> Evaluation<f64> {
    typed(flag, ctx, env, default, flag.flag.kind == FlagKind::Number, Value::as_f64)
}

/// An integer evaluation: `default` on any error, `TYPE_MISMATCH` unless the flag is `number` and
/// every variant is an integer representable as `i64`.
pub fn evaluate_integer<L: Lookup + ?Sized>(
    flag: &CompiledFlag,
    ctx: &EvalContext,
    env: &L,
    default: i64,
) -> Evaluation<i64> {
    typed(flag, ctx, env, default, flag.all_integers, Value::as_i64)
}

/// An object evaluation: `default` on any error, `TYPE_MISMATCH` unless the flag is `object`.
pub fn evaluate_object<L: Lookup + ?Sized>(
    flag: &CompiledFlag,
    ctx: &EvalContext,
    env: &L,
    default: Value,
) -> Evaluation<Value> {
    let ok = flag.flag.kind == FlagKind::Object;
    let eval = typed(flag, ctx, env, None, ok, |v| Some(Some(v)));
    Evaluation {
        value: eval.value.cloned().unwrap_or(default),
        variant: eval.variant,
        reason: eval.reason,
        error_code: eval.error_code,
        rule_id: eval.rule_id,
    }
}

fn typed<'f, T, L: Lookup + ?Sized>(
    flag: &'f CompiledFlag,
    ctx: &EvalContext,
    env: &L,
    default: T,
    kind_ok: bool,
    extract: impl FnOnce(&'f Value) -> Option<T>,
) -> Evaluation<T> {
    if !kind_ok {
        return Evaluation::error(default, ErrorCode::TypeMismatch);
    }
    let mut budget = MAX_PREREQUISITE_EVALUATIONS;
    let outcome = match resolve(flag, ctx, env, &mut budget) {
        Ok(outcome) => outcome,
        Err(Inconsistent) => return Evaluation::error(default, ErrorCode::General),
    };
    let rule_id = outcome.rule.map(str::to_owned);
    let Some(index) = outcome.variant else {
        return Evaluation {
            value: default,
            variant: None,
            reason: outcome.reason,
            error_code: outcome.error,
            rule_id,
        };
    };
    let value = flag.values.get(index).and_then(extract);
    match (value, flag.names.get(index)) {
        (Some(value), Some(name)) => {
            Evaluation { value, variant: Some(name.clone()), reason: outcome.reason, error_code: None, rule_id }
        }
        _ => Evaluation::error(default, ErrorCode::TypeMismatch),
    }
}

fn resolve<'f, L: Lookup + ?Sized>(
    flag: &'f CompiledFlag,
    ctx: &EvalContext,
    env: &L,
    budget: &mut usize,
) -> Result<Outcome<'f>, Inconsistent> {
    if !flag.flag.enabled {
        return Ok(Outcome::served(flag.off, Reason::Disabled, None));
    }
    for prerequisite in &flag.flag.prerequisites {
        *budget = budget.checked_sub(1).ok_or(Inconsistent)?;
        let other = env.flag(&prerequisite.flag).ok_or(Inconsistent)?;
        let outcome = resolve(other, ctx, env, budget)?;
        let satisfied = outcome.reason != Reason::Disabled
            && outcome.error.is_none()
            && outcome.variant.and_then(|i| other.names.get(i)).is_some_and(|name| *name == prerequisite.variant);
        if !satisfied {
            return Ok(Outcome::served(flag.off, Reason::Default, None));
        }
    }
    for rule in &flag.rules {
        if all_match(&rule.clauses, ctx, env)? {
            return Ok(serve(flag, &rule.serve, ctx, Reason::TargetingMatch, Some(&rule.id)));
        }
    }
    let reason = match flag.fallthrough {
        CompiledServe::Rollout { .. } => Reason::Split,
        CompiledServe::Variant(_) if flag.is_static => Reason::Static,
        CompiledServe::Variant(_) => Reason::Default,
    };
    Ok(serve(flag, &flag.fallthrough, ctx, reason, None))
}

fn serve<'f>(
    flag: &'f CompiledFlag,
    serve: &CompiledServe,
    ctx: &EvalContext,
    reason: Reason,
    rule: Option<&'f str>,
) -> Outcome<'f> {
    match serve {
        CompiledServe::Variant(index) => Outcome::served(*index, reason, rule),
        CompiledServe::Rollout { bucket_by, ranges } => {
            let error = |code| Outcome { variant: None, reason: Reason::Error, error: Some(code), rule };
            let Some(bucket) = bucket_of(flag, ctx, bucket_by) else {
                return error(ErrorCode::TargetingKeyMissing);
            };
            match ranges.iter().find(|(end, _)| bucket < *end) {
                Some(&(_, index)) => Outcome::served(index, reason, rule),
                None => error(ErrorCode::General), // unreachable: the ranges cover [0, TOTAL_WEIGHT)
            }
        }
    }
}

/// The bucket of the context's bucketing value (a string, or an integer in decimal), if any.
fn bucket_of(flag: &CompiledFlag, ctx: &EvalContext, attr: &AttrRef) -> Option<u32> {
    let (key, salt) = (flag.flag.key.as_str(), flag.flag.salt.as_str());
    match attr {
        AttrRef::TargetingKey => ctx.targeting_key.as_deref().map(|k| bucket_bytes(key, salt, k.as_bytes())),
        AttrRef::Named(name) => match ctx.attributes.get(name)? {
            Value::String(s) => Some(bucket_bytes(key, salt, s.as_bytes())),
            Value::Number(n) => {
                let mut buf = [0u8; 20];
                integer_digits(n, &mut buf).map(|digits| bucket_bytes(key, salt, digits))
            }
            _ => None,
        },
    }
}

fn all_match<L: Lookup + ?Sized>(clauses: &[CompiledClause], ctx: &EvalContext, env: &L) -> Result<bool, Inconsistent> {
    for clause in clauses {
        if !clause_matches(clause, ctx, env)? {
            return Ok(false);
        }
    }
    Ok(true)
}

/// A present attribute: the targeting key, or a non-null JSON value.
#[derive(Clone, Copy)]
enum Attr<'c> {
    Str(&'c str),
    Json(&'c Value),
}

fn attribute<'c>(ctx: &'c EvalContext, attr: &AttrRef) -> Option<Attr<'c>> {
    match attr {
        AttrRef::TargetingKey => ctx.targeting_key.as_deref().map(Attr::Str),
        AttrRef::Named(name) => ctx.attributes.get(name).filter(|v| !v.is_null()).map(Attr::Json),
    }
}

fn clause_matches<L: Lookup + ?Sized>(
    clause: &CompiledClause,
    ctx: &EvalContext,
    env: &L,
) -> Result<bool, Inconsistent> {
    let Some(attr) = attribute(ctx, &clause.attribute) else {
        return Ok(false); // a missing attribute never matches, negated or not
    };
    let hit = match &clause.matcher {
        Matcher::InSegment(keys) => {
            let member = match attr {
                Attr::Str(s) => Some(s),
                Attr::Json(v) => v.as_str(),
            };
            let mut hit = false;
            for key in keys {
                let segment = env.segment(key).ok_or(Inconsistent)?;
                if in_segment(segment, member, ctx) {
                    hit = true;
                    break;
                }
            }
            hit
        }
        matcher => match attr {
            Attr::Str(s) => matches_str(matcher, s),
            Attr::Json(Value::Array(items)) => items.iter().any(|item| matches_value(matcher, item)),
            Attr::Json(value) => matches_value(matcher, value),
        },
    };
    Ok(hit != clause.negate)
}

/// Segment membership; `member` is the clause attribute's value when it is a string.
fn in_segment(segment: &CompiledSegment, member: Option<&str>, ctx: &EvalContext) -> bool {
    if let Some(member) = member {
        let listed = |list: &[String]| list.binary_search_by(|x| x.as_str().cmp(member)).is_ok();
        if listed(&segment.excluded) {
            return false;
        }
        if listed(&segment.included) {
            return true;
        }
    }
    // Segment rules never contain `in_segment` (compile_segment rejects it), so the empty
    // environment is enough and no recursion happens.
    segment.rules.iter().any(|rule| matches!(all_match(rule, ctx, &()), Ok(true)))
}

fn matches_str(matcher: &Matcher, s: &str) -> bool {
    match matcher {
        Matcher::Equals(values) => values.iter().any(|v| v.as_str() == Some(s)),
        Matcher::StartsWith(prefixes) => prefixes.iter().any(|p| s.starts_with(p.as_str())),
        Matcher::EndsWith(suffixes) => suffixes.iter().any(|p| s.ends_with(p.as_str())),
        Matcher::Contains(needles) => needles.iter().any(|p| s.contains(p.as_str())),
        Matcher::Matches(regexes) => regexes.iter().any(|r| r.is_match(s)),
        Matcher::Semver(op, versions) => semver::parse(s).is_some_and(|attr| {
            versions.iter().any(|v| {
                let ord = semver::compare(attr, v.as_version());
                match op {
                    SemverOp::Lt => ord == Ordering::Less,
                    SemverOp::Eq => ord == Ordering::Equal,
                    SemverOp::Gt => ord == Ordering::Greater,
                }
            })
        }),
        Matcher::Numeric(..) | Matcher::InSegment(_) => false,
    }
}

fn matches_value(matcher: &Matcher, value: &Value) -> bool {
    match (matcher, value) {
        (_, Value::String(s)) => matches_str(matcher, s),
        (Matcher::Equals(values), _) => values.iter().any(|v| json_eq(v, value)),
        (Matcher::Numeric(op, numbers), Value::Number(n)) => n.as_f64().is_some_and(|x| {
            numbers.iter().any(|&y| match op {
                NumOp::Lt => x < y,
                NumOp::Lte => x <= y,
                NumOp::Gt => x > y,
                NumOp::Gte => x >= y,
            })
        }),
        _ => false,
    }
}

/// JSON equality where numbers compare by value (`1 == 1.0`), recursively.
fn json_eq(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => number_eq(x, y),
        (Value::Array(xs), Value::Array(ys)) => xs.len() == ys.len() && xs.iter().zip(ys).all(|(x, y)| json_eq(x, y)),
        (Value::Object(xs), Value::Object(ys)) => {
            xs.len() == ys.len() && xs.iter().all(|(k, x)| ys.get(k).is_some_and(|y| json_eq(x, y)))
        }
        _ => a == b,
    }
}

fn number_eq(x: &Number, y: &Number) -> bool {
    if let (Some(a), Some(b)) = (x.as_i64(), y.as_i64()) {
        a == b
    } else if let (Some(a), Some(b)) = (x.as_u64(), y.as_u64()) {
        a == b
    } else {
        x.as_f64() == y.as_f64()
    }
}
