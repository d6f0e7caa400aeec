//! [`FlagStore`]: a validated, consistent set of flags and segments, itself a [`Lookup`].

use std::collections::BTreeMap;

use crate::compile::{
    CompiledFlag, CompiledSegment, ValidationError, check_references, compile, compile_segment, quoted,
};
use crate::eval::{ErrorCode, Evaluation, Lookup, evaluate};
use crate::model::{EvalContext, Flag, Segment};

/// Flags and segments validated together: every reference resolves, no prerequisite cycles. So
/// evaluating any of its flags against it never yields `GENERAL`.
#[derive(Debug, Clone, Default)]
pub struct FlagStore {
    flags: BTreeMap<String, CompiledFlag>,
    segments: BTreeMap<String, CompiledSegment>,
}

impl FlagStore {
    /// Compiles and cross-validates. Error paths are prefixed with `flags["key"]` or
    /// `segments["key"]`; a repeated key is an error at that prefix.
    pub fn new(
        flags: impl IntoIterator<Item = Flag>,
        segments: impl IntoIterator<Item = Segment>,
    ) -> Result<FlagStore, ValidationError> {
        let mut store = FlagStore::default();
        for segment in segments {
            let prefix = format!("segments[{}]", quoted(&segment.key));
            let key = segment.key.clone();
            let compiled = compile_segment(segment).map_err(|e| e.prefixed(&prefix))?;
            if store.segments.insert(key, compiled).is_some() {
                return Err(ValidationError { path: prefix, message: "duplicate segment key".to_owned() });
            }
        }
        for flag in flags {
            let prefix = format!("flags[{}]", quoted(&flag.key));
            let key = flag.key.clone();
            let compiled = compile(flag).map_err(|e| e.prefixed(&prefix))?;
            if store.flags.insert(key, compiled).is_some() {
                return Err(ValidationError { path: prefix, message: "duplicate flag key".to_owned() });
            }
        }
        for (key, compiled) in &store.flags {
            check_references(&compiled.flag, &store).map_err(|e| e.prefixed(&format!("flags[{}]", quoted(key))))?;
        }
        Ok(store)
    }

    /// The flag with this key.
    pub fn get(&self, key: &str) -> Option<&CompiledFlag> {
        self.flags.get(key)
    }

    /// All flags, by key.
    pub fn flags(&self) -> impl Iterator<Item = &CompiledFlag> {
        self.flags.values()
    }

    /// All segments, by key.
    pub fn segments(&self) -> impl Iterator<Item = &CompiledSegment> {
        self.segments.values()
    }

    /// Evaluates the flag `key`; `FLAG_NOT_FOUND` (value `null`) if there is none.
    pub fn evaluate(&self, key: &str, ctx: &EvalContext) -> Evaluation {
        match self.flags.get(key) {
            Some(flag) => evaluate(flag, ctx, self),
            None => Evaluation::error(serde_json::Value::Null, ErrorCode::FlagNotFound),
        }
    }
}

impl Lookup for FlagStore {
    fn flag(&self, key: &str) -> Option<&CompiledFlag> {
        self.flags.get(key)
    }

    fn segment(&self, key: &str) -> Option<&CompiledSegment> {
        self.segments.get(key)
    }
}
