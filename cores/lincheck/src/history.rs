//! What clients saw.

use serde::{Deserialize, Serialize};

/// How an operation ended, as its client saw it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Outcome<O> {
    /// It took effect and answered `output`.
    Ok { output: O, complete_ns: u64 },
    /// It certainly did not take effect (a definite rejection).
    Fail { complete_ns: u64 },
    /// Unknown (a timeout, a broken connection): it may have taken effect at any time after
    /// its invocation, or never.
    Info,
}

/// One operation. Times are the harness's monotonic nanoseconds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Op<I, O> {
    pub client: u64,
    /// Checkers partition by key: operations on different keys are independent.
    pub key: String,
    pub input: I,
    pub invoke_ns: u64,
    pub outcome: Outcome<O>,
}

/// A recorded history; serializable so a failing run can write it out.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct History<I, O> {
    pub ops: Vec<Op<I, O>>,
}

impl<I, O> History<I, O> {
    pub fn new() -> Self {
        Self { ops: Vec::new() }
    }

    pub fn push(&mut self, op: Op<I, O>) {
        self.ops.push(op);
    }

    pub fn ops(&self) -> &[Op<I, O>] {
        &self.ops
    }
}
