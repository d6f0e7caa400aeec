//! Linearizability, per key: is there a total order of the operations, consistent with
//! real time (an operation that completed before another was invoked comes first) and with the
//! sequential model, in which every acknowledged operation appears?
//!
//! The search is Wing & Gong's (1993) depth-first search over the history's call/return events,
//! with Lowe's (2017) memoization of (set of linearized operations, model state) as in
//! Porcupine: an operation may be linearized when its call is reached before any pending
//! return; reaching the return of an operation not yet linearized means backtracking.
//!
//! - Equal timestamps: calls sort before returns, so an operation completing at `t` and one
//!   invoked at `t` count as concurrent (the permissive reading).
//! - `Fail` operations are dropped (they did not happen). `Info` operations (unknown outcome)
//!   have no return: they may be linearized anywhere after their call, with any output the
//!   model allows, or not at all.
//! - The search is bounded by [`Budget::max_steps`]; past it the key's verdict is `Unknown`.

use std::collections::{BTreeMap, HashSet};

use serde::{Deserialize, Serialize};

use crate::history::{Op, Outcome};
use crate::model::Model;

#[derive(Debug, Clone, Copy)]
pub struct Budget {
    pub max_steps: u64,
}

impl Default for Budget {
    fn default() -> Self {
        Self { max_steps: 10_000_000 }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Verdict {
    Ok,
    Illegal,
    Unknown,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeyResult {
    pub verdict: Verdict,
    pub ops: usize,
    pub steps: u64,
    /// For `Illegal`: the longest linearizable prefix found and the operation that could not
    /// be placed after it.
    pub explanation: Option<String>,
    /// For `Illegal`: the operation that could not be placed, as (client, invoke_ns).
    #[serde(default)]
    pub stuck: Option<(u64, u64)>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckResult {
    pub valid: Verdict,
    pub per_key: BTreeMap<String, KeyResult>,
}

type ModelOp<M> = Op<<M as Model>::Input, <M as Model>::Output>;

/// Check every key's operations independently (P-compositionality).
pub fn check<M: Model>(model: &M, history: &[Op<M::Input, M::Output>], budget: Budget) -> CheckResult {
    let mut by_key: BTreeMap<&str, Vec<&ModelOp<M>>> = BTreeMap::new();
    for op in history {
        by_key.entry(op.key.as_str()).or_default().push(op);
    }
    let per_key: BTreeMap<String, KeyResult> =
        by_key.into_iter().map(|(k, ops)| (k.to_string(), check_key(model, &ops, budget))).collect();
    let valid = if per_key.values().any(|r| r.verdict == Verdict::Illegal) {
        Verdict::Illegal
    } else if per_key.values().any(|r| r.verdict == Verdict::Unknown) {
        Verdict::Unknown
    } else {
        Verdict::Ok
    };
    CheckResult { valid, per_key }
}

const NIL: usize = usize::MAX;

struct Node {
    op: usize,
    is_call: bool,
    /// The call's return event, if the operation has one.
    ret: usize,
    prev: usize,
    next: usize,
}

struct List {
    nodes: Vec<Node>,
}

impl List {
    const HEAD: usize = 0;

    fn first(&self) -> usize {
        self.nodes[Self::HEAD].next
    }

    fn unlink(&mut self, i: usize) {
        let (p, n) = (self.nodes[i].prev, self.nodes[i].next);
        self.nodes[p].next = n;
        if n != NIL {
            self.nodes[n].prev = p;
        }
    }

    fn relink(&mut self, i: usize) {
        let (p, n) = (self.nodes[i].prev, self.nodes[i].next);
        self.nodes[p].next = i;
        if n != NIL {
            self.nodes[n].prev = i;
        }
    }

    /// Remove a call and its return; undone by `unlift` in reverse (LIFO) order.
    fn lift(&mut self, call: usize) {
        self.unlink(call);
        let ret = self.nodes[call].ret;
        if ret != NIL {
            self.unlink(ret);
        }
    }

    fn unlift(&mut self, call: usize) {
        let ret = self.nodes[call].ret;
        if ret != NIL {
            self.relink(ret);
        }
        self.relink(call);
    }
}

fn check_key<M: Model>(model: &M, ops: &[&ModelOp<M>], budget: Budget) -> KeyResult {
    // Drop operations that certainly did not happen.
    let ops: Vec<&ModelOp<M>> = ops.iter().copied().filter(|o| !matches!(o.outcome, Outcome::Fail { .. })).collect();
    let required = ops.iter().filter(|o| matches!(o.outcome, Outcome::Ok { .. })).count();
    // Events: (time, 0 = call / 1 = return, op).
    let mut events: Vec<(u64, u8, usize)> = Vec::new();
    for (i, o) in ops.iter().enumerate() {
        events.push((o.invoke_ns, 0, i));
        if let Outcome::Ok { complete_ns, .. } = o.outcome {
            events.push((complete_ns.max(o.invoke_ns), 1, i));
        }
    }
    events.sort();
    let mut list = List { nodes: vec![Node { op: NIL, is_call: false, ret: NIL, prev: NIL, next: NIL }] };
    let mut call_node = vec![NIL; ops.len()];
    for (t, kind, op) in &events {
        let _ = t;
        let idx = list.nodes.len();
        let prev = idx - 1;
        list.nodes.push(Node { op: *op, is_call: *kind == 0, ret: NIL, prev, next: NIL });
        list.nodes[prev].next = idx;
        if *kind == 0 {
            call_node[*op] = idx;
        } else {
            let c = call_node[*op];
            list.nodes[c].ret = idx;
        }
    }

    let words = ops.len().div_ceil(64).max(1);
    let mut linearized = vec![0u64; words];
    let mut cache: HashSet<(Vec<u64>, M::State)> = HashSet::new();
    let mut state = model.init();
    let mut stack: Vec<(usize, M::State)> = Vec::new();
    let mut done = 0usize;
    let mut steps = 0u64;
    let mut best: (usize, Vec<usize>, Option<usize>) = (0, Vec::new(), None);
    let mut entry = list.first();
    loop {
        if done == required {
            return KeyResult { verdict: Verdict::Ok, ops: ops.len(), steps, explanation: None, stuck: None };
        }
        steps += 1;
        if steps > budget.max_steps {
            return KeyResult {
                verdict: Verdict::Unknown,
                ops: ops.len(),
                steps,
                explanation: Some(format!("search budget of {} steps exhausted", budget.max_steps)),
                stuck: None,
            };
        }
        let backtrack = entry == NIL || !list.nodes[entry].is_call;
        if !backtrack {
            let op = list.nodes[entry].op;
            let output = match &ops[op].outcome {
                Outcome::Ok { output, .. } => Some(output),
                _ => None,
            };
            if let Some(next_state) = model.step(&state, &ops[op].input, output) {
                let mut lin = linearized.clone();
                lin[op / 64] |= 1 << (op % 64);
                if cache.insert((lin.clone(), next_state.clone())) {
                    stack.push((entry, std::mem::replace(&mut state, next_state)));
                    linearized = lin;
                    if output.is_some() {
                        done += 1;
                    }
                    list.lift(entry);
                    entry = list.first();
                    continue;
                }
            }
            entry = list.nodes[entry].next;
            continue;
        }
        // A return of an unlinearized operation (or the end): undo the last choice.
        if stack.len() >= best.0 {
            let stuck = (entry != NIL).then(|| list.nodes[entry].op);
            best = (stack.len(), stack.iter().map(|(e, _)| list.nodes[*e].op).collect(), stuck);
        }
        let Some((call, prev_state)) = stack.pop() else {
            return KeyResult {
                verdict: Verdict::Illegal,
                ops: ops.len(),
                steps,
                explanation: Some(explain(&ops, &best)),
                stuck: best.2.map(|i| (ops[i].client, ops[i].invoke_ns)),
            };
        };
        let op = list.nodes[call].op;
        linearized[op / 64] &= !(1 << (op % 64));
        if matches!(ops[op].outcome, Outcome::Ok { .. }) {
            done -= 1;
        }
        state = prev_state;
        list.unlift(call);
        entry = list.nodes[call].next;
    }
}

fn explain<I: std::fmt::Debug, O: std::fmt::Debug>(
    ops: &[&Op<I, O>],
    best: &(usize, Vec<usize>, Option<usize>),
) -> String {
    let describe = |i: usize| {
        let o = ops[i];
        let (out, end) = match &o.outcome {
            Outcome::Ok { output, complete_ns } => (format!("{output:?}"), complete_ns.to_string()),
            Outcome::Fail { complete_ns } => ("failed".into(), complete_ns.to_string()),
            Outcome::Info => ("unknown".into(), "?".into()),
        };
        format!("client {} {:?} -> {} [{}..{}]", o.client, o.input, out, o.invoke_ns, end)
    };
    let prefix: Vec<String> = best.1.iter().map(|i| describe(*i)).collect();
    match best.2 {
        Some(stuck) => format!(
            "linearized {} operations ({}), then could not place {}",
            best.0,
            prefix.join("; "),
            describe(stuck)
        ),
        None => format!("no order of the {} operations satisfies the model", ops.len()),
    }
}
