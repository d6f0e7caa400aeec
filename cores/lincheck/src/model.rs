//! Sequential specifications the linearizability checker tests histories against.

use std::fmt::Debug;
use std::hash::Hash;

use serde::{Deserialize, Serialize};

pub trait Model {
    type State: Clone + Eq + Hash + Debug;
    type Input: Clone + Debug;
    type Output: Clone + Debug + PartialEq;

    fn init(&self) -> Self::State;

    /// If `input` applied in `state` may answer `output`, the next state. With `output = None`
    /// (an operation whose outcome is unknown), the state after it *took effect*; `None` if it
    /// could not have taken effect in `state`.
    fn step(&self, state: &Self::State, input: &Self::Input, output: Option<&Self::Output>) -> Option<Self::State>;
}

/// A read/write/compare-and-set register holding an optional string (initially empty).
#[derive(Debug, Clone, Copy, Default)]
pub struct Register;

#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum RegisterOp {
    Read,
    Write(String),
    Cas { expect: Option<String>, new: String },
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum RegisterRet {
    Value(Option<String>),
    Written,
    CasOk,
    CasFailed,
}

impl Model for Register {
    type State = Option<String>;
    type Input = RegisterOp;
    type Output = RegisterRet;

    fn init(&self) -> Option<String> {
        None
    }

    fn step(&self, s: &Option<String>, input: &RegisterOp, output: Option<&RegisterRet>) -> Option<Option<String>> {
        match (input, output) {
            (RegisterOp::Read, Some(RegisterRet::Value(v))) => (v == s).then(|| s.clone()),
            (RegisterOp::Read, None) => Some(s.clone()),
            (RegisterOp::Write(v), Some(RegisterRet::Written) | None) => Some(Some(v.clone())),
            (RegisterOp::Cas { expect, new }, Some(RegisterRet::CasOk) | None) => {
                (expect == s).then(|| Some(new.clone()))
            }
            (RegisterOp::Cas { expect, .. }, Some(RegisterRet::CasFailed)) => (expect != s).then(|| s.clone()),
            _ => None,
        }
    }
}
