//! The pure evaluation core of Basalt's feature flags (S04): the model, validation and evaluation
//! only — no IO, no clock, no threads. Deterministic: the same flag, context and environment always
//! give the same [`Evaluation`]. Evaluation never panics.
//!
//! - [`model`] — [`Flag`], [`Rule`], [`Clause`] / [`Op`], [`Segment`], [`Serve`], [`EvalContext`].
//! - [`compile()`] / [`compile_segment`] / [`validate`] — checks with field paths
//!   ([`ValidationError`]) and compilation (regexes, numbers, versions, rollout ranges precompiled).
//! - [`evaluate`] and the typed helpers ([`evaluate_bool`], …) — OpenFeature reasons and error codes.
//! - [`bucket`] — the stable rollout hash.
//! - [`FlagStore`] — a cross-validated set of flags and segments that is its own [`Lookup`].
//! - [`wire`] — what a server streams to SDKs: a [`Snapshot`], then [`Delta`]s; [`FlagSet`] applies them.
//!
//! # Decisions
//!
//! - **Targeting key**: clauses and `bucket_by` read it as attribute `"targetingKey"`
//!   ([`TARGETING_KEY_ATTRIBUTE`], OpenFeature's spelling); `"key"` is an ordinary attribute.
//! - **Missing attributes** (absent or JSON `null`) never match, negated or not — for every
//!   operator including `in_segment`. A present attribute of the wrong type (or an unparsable
//!   version) makes the operator false, so `negate` makes the clause true.
//! - **Arrays**: if the attribute is a JSON array, the operator holds when it holds for any element.
//! - **Prerequisites**: all must be enabled and serving the required variant (a disabled or erroring
//!   prerequisite fails); if one fails, `off_variant` is served with reason `DEFAULT`.
//! - **Rollouts**: buckets `[0, 100_000)`; ranges are laid out in the listed order of `weights`, so
//!   raising one variant's weight never moves anyone out of it, and when the weight is taken from a
//!   neighbour in the list the only users who move are donor → raised. (No layout can give the
//!   latter for every pair of ≥ 3 variants: that would force each variant's user set to depend on
//!   its own weight only, and then the sets could not tile the users for all weight vectors.)

pub mod compile;
pub mod eval;
pub mod hash;
pub mod model;
mod semver;
pub mod store;
pub mod wire;

pub use compile::{
    CompiledFlag, CompiledSegment, MAX_PREREQUISITE_EVALUATIONS, REGEX_SIZE_LIMIT, ValidationError, compile,
    compile_segment, validate,
};
pub use eval::{
    ErrorCode, Evaluation, Lookup, Reason, evaluate, evaluate_as, evaluate_bool, evaluate_integer, evaluate_number,
    evaluate_object, evaluate_string,
};
pub use hash::bucket;
pub use model::{
    Clause, EvalContext, Flag, FlagKind, Op, Prerequisite, Rule, Segment, Serve, TARGETING_KEY_ATTRIBUTE, TOTAL_WEIGHT,
};
pub use store::FlagStore;
pub use wire::{Delta, DeltaError, FlagSet, Snapshot};
