//! History checkers for the fault harness (issue: Jepsen-style harness). Pure: no IO, no clock.
//!
//! A harness records what clients saw — each operation's invocation and completion time, input
//! and output, or that its outcome is unknown — while a nemesis breaks the cluster. These
//! checkers decide whether that history is allowed:
//! - [`linear::check`]: linearizability against a sequential [`Model`], partitioned by key
//!   (Wing & Gong's search with Lowe's memoization, as in Porcupine);
//! - [`invariants`]: no lost acknowledged write, monotonic reads, unique ids, preserved sums,
//!   bounded over-admission.

pub mod history;
pub mod invariants;
pub mod linear;
pub mod model;

pub use history::{History, Op, Outcome};
pub use linear::{Budget, CheckResult, KeyResult, Verdict, check};
pub use model::{Model, Register, RegisterOp, RegisterRet};
