//! Transactions, in etcd's order: request checks (sizes, empty keys, put flags), the put/delete
//! overlap check per branch, every compare evaluated against the state before the transaction
//! (the path through nested transactions is fixed up front), checks of the operations on that
//! path (range revisions, put keys and leases), then execution. Any error applies nothing.

use std::collections::BTreeSet;

use crate::error::Error;
use crate::store::{Span, Store};
use crate::types::{Compare, CompareResult, CompareTarget, Outcome, RequestOp, ResponseOp, TxnRequest, TxnResponse};
use crate::write::{Writer, check_put_request};

/// The branch each transaction on the path takes: this one's, then its nested transactions'
/// (those in the branch taken, in order).
#[derive(Debug)]
struct Plan {
    succeeded: bool,
    nested: Vec<Plan>,
}

impl Store {
    /// Etcd's Txn.
    ///
    /// # Errors
    /// Request checks first, over both branches: [`Error::TooManyOps`], [`Error::EmptyKey`],
    /// [`Error::ValueProvided`], [`Error::LeaseProvided`], then [`Error::DuplicateKey`]. Then, on
    /// the operations that would run: [`Error::FutureRev`] / [`Error::Compacted`] for a range
    /// revision, [`Error::KeyNotFound`] / [`Error::LeaseNotFound`] for a put. On any error nothing
    /// changes.
    pub fn txn(&mut self, req: &TxnRequest) -> Result<Outcome<TxnResponse>, Error> {
        check_txn_request(req, i64::from(self.config.max_txn_ops))?;
        check_intervals(&req.success)?;
        check_intervals(&req.failure)?;
        let plan = self.plan(req);
        self.check_path(req, &plan)?;
        let mut w = Writer::new(self);
        match execute(&mut w, req, &plan) {
            Ok(responses) => {
                let revision = w.read_rev();
                let events = w.commit();
                Ok(Outcome { response: TxnResponse { revision, succeeded: plan.succeeded, responses }, events })
            }
            Err(e) => {
                // Only reachable through etcd's range_end "\0" overlap gap (see `check_intervals`):
                // etcd would crash the member here; the store refuses the transaction instead.
                w.rollback();
                Err(e)
            }
        }
    }

    /// A transaction whose branches hold only ranges (recursively) — etcd's read-only txn —
    /// answered without changing anything, exactly as [`txn`](Self::txn) would answer it; `None`
    /// for any other transaction. A server serves these after a read barrier instead of through
    /// the log.
    ///
    /// # Errors
    /// As [`txn`](Self::txn).
    pub fn txn_read_only(&self, req: &TxnRequest) -> Option<Result<TxnResponse, Error>> {
        if !is_read_only(req) {
            return None;
        }
        let answer = || {
            check_txn_request(req, i64::from(self.config.max_txn_ops))?;
            let plan = self.plan(req);
            self.check_path(req, &plan)?;
            Ok(TxnResponse {
                revision: self.revision,
                succeeded: plan.succeeded,
                responses: self.read_path(req, &plan)?,
            })
        };
        Some(answer())
    }

    fn read_path(&self, req: &TxnRequest, plan: &Plan) -> Result<Vec<ResponseOp>, Error> {
        let ops = if plan.succeeded { &req.success } else { &req.failure };
        let mut nested = plan.nested.iter();
        ops.iter()
            .map(|op| match op {
                RequestOp::Range(r) => Ok(ResponseOp::Range(self.range(r)?)),
                RequestOp::Txn(t) => {
                    let Some(p) = nested.next() else { return Err(Error::TooManyOps) };
                    Ok(ResponseOp::Txn(TxnResponse {
                        revision: 0,
                        succeeded: p.succeeded,
                        responses: self.read_path(t, p)?,
                    }))
                }
                RequestOp::Put(_) | RequestOp::DeleteRange(_) => Err(Error::TooManyOps),
            })
            .collect()
    }

    fn plan(&self, req: &TxnRequest) -> Plan {
        let succeeded = req.compare.iter().all(|c| self.compare(c));
        let ops = if succeeded { &req.success } else { &req.failure };
        let nested = ops
            .iter()
            .filter_map(|op| match op {
                RequestOp::Txn(t) => Some(self.plan(t)),
                _ => None,
            })
            .collect();
        Plan { succeeded, nested }
    }

    /// Etcd's `applyCompare`: every existing key in the span must satisfy the compare; with none,
    /// a value compare fails and the others compare against zeros.
    fn compare(&self, c: &Compare) -> bool {
        let mut seen = false;
        for (_, history) in Span::new(&c.key, &c.range_end).iter(&self.keys) {
            let Some(change) = history.last() else { continue };
            let Some(live) = &change.live else { continue };
            seen = true;
            let holds = match &c.target {
                CompareTarget::Version(v) => test(c.result, live.version.cmp(v)),
                CompareTarget::Create(v) => test(c.result, live.create_revision.cmp(v)),
                CompareTarget::Mod(v) => test(c.result, change.rev.main.cmp(v)),
                CompareTarget::Value(v) => test(c.result, live.value.as_slice().cmp(v.as_slice())),
                CompareTarget::Lease(v) => test(c.result, live.lease.cmp(v)),
            };
            if !holds {
                return false;
            }
        }
        seen || match &c.target {
            CompareTarget::Value(_) => false,
            CompareTarget::Version(v) | CompareTarget::Create(v) | CompareTarget::Mod(v) | CompareTarget::Lease(v) => {
                test(c.result, 0.cmp(v))
            }
        }
    }

    /// Etcd's `checkTxn`: the operations on the path, against the state before the transaction.
    fn check_path(&self, req: &TxnRequest, plan: &Plan) -> Result<(), Error> {
        let ops = if plan.succeeded { &req.success } else { &req.failure };
        let mut nested = plan.nested.iter();
        for op in ops {
            match op {
                RequestOp::Range(r) => {
                    if r.revision != 0 && r.revision > self.revision {
                        return Err(Error::FutureRev);
                    }
                    if r.revision != 0 && r.revision < self.compact_revision {
                        return Err(self.compacted());
                    }
                }
                RequestOp::Put(p) => {
                    if (p.ignore_value || p.ignore_lease) && self.get(&p.key).is_none() {
                        return Err(Error::KeyNotFound);
                    }
                    if p.lease != 0 && !self.leases.contains_key(&p.lease) {
                        return Err(Error::LeaseNotFound);
                    }
                }
                RequestOp::DeleteRange(_) => {}
                RequestOp::Txn(t) => {
                    if let Some(p) = nested.next() {
                        self.check_path(t, p)?;
                    }
                }
            }
        }
        Ok(())
    }
}

/// Etcd's `IsTxnReadonly`: every operation of both branches, recursively, is a range.
pub fn is_read_only(req: &TxnRequest) -> bool {
    req.success.iter().chain(&req.failure).all(|op| match op {
        RequestOp::Range(_) => true,
        RequestOp::Txn(t) => is_read_only(t),
        RequestOp::Put(_) | RequestOp::DeleteRange(_) => false,
    })
}

/// Etcd's `IsTxnSerializable`: read-only, and every range asks for a serializable read.
pub fn is_serializable(req: &TxnRequest) -> bool {
    req.success.iter().chain(&req.failure).all(|op| match op {
        RequestOp::Range(r) => r.serializable,
        RequestOp::Txn(t) => is_serializable(t),
        RequestOp::Put(_) | RequestOp::DeleteRange(_) => false,
    })
}

fn test(result: CompareResult, ord: std::cmp::Ordering) -> bool {
    match result {
        CompareResult::Equal => ord.is_eq(),
        CompareResult::NotEqual => ord.is_ne(),
        CompareResult::Greater => ord.is_gt(),
        CompareResult::Less => ord.is_lt(),
    }
}

fn execute(w: &mut Writer<'_>, req: &TxnRequest, plan: &Plan) -> Result<Vec<ResponseOp>, Error> {
    let ops = if plan.succeeded { &req.success } else { &req.failure };
    let mut nested = plan.nested.iter();
    let mut responses = Vec::with_capacity(ops.len());
    for op in ops {
        let response = match op {
            RequestOp::Range(r) => ResponseOp::Range(w.range(r)?),
            RequestOp::Put(p) => {
                // Checked on the path already; checked again because a put must never attach a
                // key to a lease that does not exist.
                if p.lease != 0 && !w.store().leases.contains_key(&p.lease) {
                    return Err(Error::LeaseNotFound);
                }
                ResponseOp::Put(w.put_request(p)?)
            }
            RequestOp::DeleteRange(d) => ResponseOp::DeleteRange(w.delete_request(d)),
            RequestOp::Txn(t) => {
                // The plan was built from this very request: one entry per nested transaction.
                let Some(p) = nested.next() else { return Err(Error::TooManyOps) };
                // Etcd leaves a nested transaction's header empty: revision 0.
                ResponseOp::Txn(TxnResponse { revision: 0, succeeded: p.succeeded, responses: execute(w, t, p)? })
            }
        };
        responses.push(response);
    }
    Ok(responses)
}

/// Etcd's `checkTxnRequest`: at most `max_ops` compares and operations per branch, non-empty
/// keys, valid put flags — over both branches, recursively; a nested transaction may use what its
/// parent leaves (`max_ops` minus the parent's largest count).
fn check_txn_request(req: &TxnRequest, max_ops: i64) -> Result<(), Error> {
    let len = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
    let opc = len(req.compare.len()).max(len(req.success.len())).max(len(req.failure.len()));
    if opc > max_ops {
        return Err(Error::TooManyOps);
    }
    if req.compare.iter().any(|c| c.key.is_empty()) {
        return Err(Error::EmptyKey);
    }
    for op in req.success.iter().chain(&req.failure) {
        match op {
            RequestOp::Range(r) if r.key.is_empty() => return Err(Error::EmptyKey),
            RequestOp::Range(_) => {}
            RequestOp::Put(p) => check_put_request(p)?,
            RequestOp::DeleteRange(d) if d.key.is_empty() => return Err(Error::EmptyKey),
            RequestOp::DeleteRange(_) => {}
            RequestOp::Txn(t) => check_txn_request(t, max_ops.saturating_sub(opc))?,
        }
    }
    Ok(())
}

/// A delete's key set as etcd's overlap check sees it: one key, or `[begin, end)` compared
/// bytewise — `range_end` is taken literally, so `"\0"` (and any end at or below the key) covers
/// nothing here even though the delete itself covers every key `>= begin`. Etcd has that gap; it
/// is kept so the same transactions are accepted.
#[derive(Debug, Clone, Copy)]
struct Deleted<'a> {
    begin: &'a [u8],
    end: Option<&'a [u8]>,
}

impl Deleted<'_> {
    fn hits(&self, key: &[u8]) -> bool {
        match self.end {
            None => key == self.begin,
            Some(end) => self.begin <= key && key < end,
        }
    }
}

fn any_hit(dels: &[Deleted<'_>], key: &[u8]) -> bool {
    dels.iter().any(|d| d.hits(key))
}

/// Etcd's `checkIntervals`: within one branch, no key is put twice and no put falls in a
/// delete — counting nested transactions' puts and deletes, where the two branches of one nested
/// transaction may put the same key. Returns the branch's puts and deletes for the parent.
fn check_intervals(ops: &[RequestOp]) -> Result<(BTreeSet<&[u8]>, Vec<Deleted<'_>>), Error> {
    let mut dels: Vec<Deleted<'_>> = ops
        .iter()
        .filter_map(|op| match op {
            RequestOp::DeleteRange(d) => Some(Deleted {
                begin: d.key.as_slice(),
                end: if d.range_end.is_empty() { None } else { Some(d.range_end.as_slice()) },
            }),
            _ => None,
        })
        .collect();
    let mut puts: BTreeSet<&[u8]> = BTreeSet::new();
    for op in ops {
        let RequestOp::Txn(t) = op else { continue };
        let (puts_then, dels_then) = check_intervals(&t.success)?;
        let (puts_else, dels_else) = check_intervals(&t.failure)?;
        for &k in &puts_then {
            if puts.contains(k) || any_hit(&dels, k) {
                return Err(Error::DuplicateKey);
            }
            puts.insert(k);
        }
        for &k in &puts_else {
            if (puts.contains(k) && !puts_then.contains(k)) || any_hit(&dels, k) {
                return Err(Error::DuplicateKey);
            }
            puts.insert(k);
        }
        dels.extend(dels_then);
        dels.extend(dels_else);
    }
    for op in ops {
        let RequestOp::Put(p) = op else { continue };
        let k = p.key.as_slice();
        if puts.contains(k) || any_hit(&dels, k) {
            return Err(Error::DuplicateKey);
        }
        puts.insert(k);
    }
    Ok((puts, dels))
}
