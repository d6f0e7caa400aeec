//! Model-based property tests: random sequences of puts, deletes, transactions, ranges,
//! compactions, lease grants and revokes run against the store and against a naive model that
//! keeps one full snapshot per revision. Checked: every response and error; reads at every
//! retained revision; the compaction boundary; lease attachments; events replayed onto the
//! snapshot before their start reproduce the current state (also paged, and per key); prev_kv;
//! errors change nothing; serde round trips; determinism.

use std::collections::BTreeMap;

use basalt_mvcc::*;
use proptest::prelude::*;

type Snap = BTreeMap<Vec<u8>, KeyValue>;

const KEYS: [&[u8]; 8] = [b"a", b"ab", b"b", b"b\0", b"c", b"\0", b"\xff", b"\xff\xff"];

// ---------------------------------------------------------------------------------------------
// Generators

fn key() -> impl Strategy<Value = Vec<u8>> {
    prop::sample::select(KEYS.to_vec()).prop_map(<[u8]>::to_vec)
}

/// A `range_end` for `key`: the single key, "\0", the prefix end, or another key (maybe below).
fn range_end(key: Vec<u8>) -> impl Strategy<Value = (Vec<u8>, Vec<u8>)> {
    let pe = prefix_end(&key);
    prop_oneof![
        3 => Just(Vec::new()),
        1 => Just(vec![0u8]),
        2 => Just(pe),
        2 => prop::sample::select(KEYS.to_vec()).prop_map(<[u8]>::to_vec),
    ]
    .prop_map(move |end| (key.clone(), end))
}

fn span() -> impl Strategy<Value = (Vec<u8>, Vec<u8>)> {
    key().prop_flat_map(range_end)
}

fn value() -> impl Strategy<Value = Vec<u8>> {
    prop::sample::select(vec![&b""[..], b"x", b"y", b"zz", b"\0"]).prop_map(<[u8]>::to_vec)
}

/// Lease ids used in puts: none, a few that may exist, one that never does.
fn lease_id() -> impl Strategy<Value = i64> {
    prop_oneof![4 => Just(0i64), 3 => 1i64..=3, 1 => Just(99i64)]
}

fn put_req() -> impl Strategy<Value = PutRequest> {
    (key(), value(), lease_id(), any::<bool>(), 0u8..10, 0u8..10).prop_map(|(key, value, lease, prev_kv, iv, il)| {
        // ignore_value / ignore_lease in 1 of 5 puts each, usually well-formed (value or lease
        // cleared), sometimes not (ValueProvided / LeaseProvided).
        PutRequest {
            value: if iv == 0 { Vec::new() } else { value },
            lease: if il == 0 { 0 } else { lease },
            key,
            prev_kv,
            ignore_value: iv < 2,
            ignore_lease: il < 2,
        }
    })
}

fn delete_req() -> impl Strategy<Value = DeleteRangeRequest> {
    (span(), any::<bool>()).prop_map(|((key, range_end), prev_kv)| DeleteRangeRequest { key, range_end, prev_kv })
}

fn range_req() -> impl Strategy<Value = RangeRequest> {
    let sort = (
        prop::sample::select(vec![SortOrder::None, SortOrder::Ascend, SortOrder::Descend]),
        prop::sample::select(vec![
            SortTarget::Key,
            SortTarget::Version,
            SortTarget::Create,
            SortTarget::Mod,
            SortTarget::Value,
        ]),
    );
    let bound = prop_oneof![3 => Just(0i64), 1 => 1i64..12];
    let filters = (bound.clone(), bound.clone(), bound.clone(), bound);
    (span(), -1i64..4, -2i64..14, sort, 0u8..8, filters).prop_map(
        |((key, range_end), limit, revision, (sort_order, sort_target), flags, (a, b, c, d))| RangeRequest {
            key,
            range_end,
            limit,
            revision,
            sort_order,
            sort_target,
            serializable: false,
            keys_only: flags == 1,
            count_only: flags == 2,
            min_mod_revision: a,
            max_mod_revision: b,
            min_create_revision: c,
            max_create_revision: d,
        },
    )
}

fn compare() -> impl Strategy<Value = Compare> {
    let result = prop::sample::select(vec![
        CompareResult::Equal,
        CompareResult::Greater,
        CompareResult::Less,
        CompareResult::NotEqual,
    ]);
    let target = prop_oneof![
        (0i64..4).prop_map(CompareTarget::Version),
        (0i64..10).prop_map(CompareTarget::Create),
        (0i64..10).prop_map(CompareTarget::Mod),
        value().prop_map(CompareTarget::Value),
        (0i64..4).prop_map(CompareTarget::Lease),
    ];
    (span(), result, target).prop_map(|((key, range_end), result, target)| Compare { key, range_end, result, target })
}

fn txn_op() -> impl Strategy<Value = RequestOp> {
    prop_oneof![
        3 => put_req().prop_map(RequestOp::Put),
        2 => delete_req().prop_map(RequestOp::DeleteRange),
        2 => range_req().prop_map(RequestOp::Range),
    ]
}

#[derive(Debug, Clone)]
enum Op {
    Put(PutRequest),
    Delete(DeleteRangeRequest),
    Range(RangeRequest),
    Txn(TxnRequest),
    Compact(i64),
    Grant(i64, i64),
    Revoke(i64),
}

fn op() -> impl Strategy<Value = Op> {
    let txn = (
        prop::collection::vec(compare(), 0..3),
        prop::collection::vec(txn_op(), 0..4),
        prop::collection::vec(txn_op(), 0..3),
    )
        .prop_map(|(compare, success, failure)| TxnRequest { compare, success, failure });
    prop_oneof![
        6 => put_req().prop_map(Op::Put),
        2 => delete_req().prop_map(Op::Delete),
        2 => range_req().prop_map(Op::Range),
        4 => txn.prop_map(Op::Txn),
        1 => (0i64..5).prop_map(Op::Compact),
        2 => (0i64..=3, -1i64..20).prop_map(|(id, ttl)| Op::Grant(id, ttl)),
        1 => (0i64..=3).prop_map(Op::Revoke),
    ]
}

// ---------------------------------------------------------------------------------------------
// The model: one full snapshot per revision, etcd's rules written out naively.

#[derive(Debug, Clone)]
struct Model {
    /// `snaps[r - 1]` is the state at revision `r`.
    snaps: Vec<Snap>,
    compact: i64,
    leases: BTreeMap<i64, i64>,
    next_lease: i64,
}

fn in_span(key: &[u8], end: &[u8], k: &[u8]) -> bool {
    match end {
        [] => k == key,
        [0] => k >= key,
        _ => key <= k && k < end,
    }
}

impl Model {
    fn new() -> Self {
        Model { snaps: vec![Snap::new()], compact: -1, leases: BTreeMap::new(), next_lease: 1 }
    }

    fn rev(&self) -> i64 {
        self.snaps.len() as i64
    }

    fn cur(&self) -> &Snap {
        self.snaps.last().unwrap()
    }

    fn at(&self, rev: i64) -> Snap {
        if rev < 1 { Snap::new() } else { self.snaps[(rev - 1) as usize].clone() }
    }

    /// A range over `snap` (the state at the read revision), served at `cur`.
    fn range_of(&self, snap: &Snap, req: &RangeRequest, cur: i64) -> RangeResponse {
        let all: Vec<KeyValue> =
            snap.values().filter(|kv| in_span(&req.key, &req.range_end, &kv.key)).cloned().collect();
        let count = all.len() as i64;
        // Etcd fetches only limit + 1 keys (in key order) when the request's own sort order is
        // None and it has no filters — even if a non-key target then sorts them.
        let filtered = req.min_mod_revision != 0
            || req.max_mod_revision != 0
            || req.min_create_revision != 0
            || req.max_create_revision != 0;
        let fetched = if req.sort_order == SortOrder::None && !filtered && req.limit > 0 {
            all.into_iter().take(req.limit as usize + 1).collect()
        } else {
            all
        };
        let mut kvs: Vec<KeyValue> = fetched
            .into_iter()
            .filter(|kv| req.max_mod_revision == 0 || kv.mod_revision <= req.max_mod_revision)
            .filter(|kv| req.min_mod_revision == 0 || kv.mod_revision >= req.min_mod_revision)
            .filter(|kv| req.max_create_revision == 0 || kv.create_revision <= req.max_create_revision)
            .filter(|kv| req.min_create_revision == 0 || kv.create_revision >= req.min_create_revision)
            .collect();
        let order = match (req.sort_target, req.sort_order) {
            (SortTarget::Key, SortOrder::Ascend) => SortOrder::None,
            (SortTarget::Key, o) => o,
            (_, SortOrder::None) => SortOrder::Ascend,
            (_, o) => o,
        };
        let field = |kv: &KeyValue| -> (Vec<u8>, i64) {
            match req.sort_target {
                SortTarget::Key => (kv.key.clone(), 0),
                SortTarget::Version => (vec![], kv.version),
                SortTarget::Create => (vec![], kv.create_revision),
                SortTarget::Mod => (vec![], kv.mod_revision),
                SortTarget::Value => (kv.value.clone(), 0),
            }
        };
        match order {
            SortOrder::None => {}
            SortOrder::Ascend => kvs.sort_by_key(field),
            SortOrder::Descend => kvs.sort_by_key(|kv| std::cmp::Reverse(field(kv))),
        }
        let mut more = false;
        if req.limit > 0 && kvs.len() as i64 > req.limit {
            kvs.truncate(req.limit as usize);
            more = true;
        }
        if req.keys_only {
            kvs.iter_mut().for_each(|kv| kv.value.clear());
        }
        if req.count_only {
            kvs.clear();
            more = false;
        }
        RangeResponse { revision: cur, kvs, more, count }
    }

    fn range(&self, req: &RangeRequest) -> Result<RangeResponse, Error> {
        let cur = self.rev();
        let rev = if req.revision <= 0 { cur } else { req.revision };
        if req.revision > cur {
            return Err(Error::FutureRev);
        }
        if rev < self.compact {
            return Err(Error::Compacted { compact_revision: self.compact });
        }
        Ok(self.range_of(&self.at(rev), req, cur))
    }

    fn put_flags(req: &PutRequest) -> Result<(), Error> {
        if req.ignore_value && !req.value.is_empty() {
            return Err(Error::ValueProvided);
        }
        if req.ignore_lease && req.lease != 0 {
            return Err(Error::LeaseProvided);
        }
        Ok(())
    }

    /// A put on the working state `work` at revision `rev`.
    fn put_on(work: &mut Snap, req: &PutRequest, rev: i64) -> Result<PutResponse, Error> {
        let prev = work.get(&req.key).cloned();
        if (req.ignore_value || req.ignore_lease) && prev.is_none() {
            return Err(Error::KeyNotFound);
        }
        let value = if req.ignore_value { prev.as_ref().unwrap().value.clone() } else { req.value.clone() };
        let lease = if req.ignore_lease { prev.as_ref().unwrap().lease } else { req.lease };
        let (create_revision, version) = prev.as_ref().map_or((rev, 1), |p| (p.create_revision, p.version + 1));
        let kv = KeyValue { key: req.key.clone(), create_revision, mod_revision: rev, version, value, lease };
        work.insert(req.key.clone(), kv);
        Ok(PutResponse { revision: rev, prev_kv: if req.prev_kv { prev } else { None } })
    }

    fn delete_on(work: &mut Snap, req: &DeleteRangeRequest, rev: i64, changed: &mut bool) -> DeleteRangeResponse {
        let victims: Vec<KeyValue> =
            work.values().filter(|kv| in_span(&req.key, &req.range_end, &kv.key)).cloned().collect();
        for v in &victims {
            work.remove(&v.key);
        }
        *changed |= !victims.is_empty();
        DeleteRangeResponse {
            revision: if *changed { rev } else { rev - 1 },
            deleted: victims.len() as i64,
            prev_kvs: if req.prev_kv { victims } else { Vec::new() },
        }
    }

    fn put(&mut self, req: &PutRequest) -> Result<PutResponse, Error> {
        Self::put_flags(req)?;
        if req.lease != 0 && !self.leases.contains_key(&req.lease) {
            return Err(Error::LeaseNotFound);
        }
        let mut work = self.cur().clone();
        let resp = Self::put_on(&mut work, req, self.rev() + 1)?;
        self.snaps.push(work);
        Ok(resp)
    }

    fn delete(&mut self, req: &DeleteRangeRequest) -> DeleteRangeResponse {
        let mut work = self.cur().clone();
        let mut changed = false;
        let resp = Self::delete_on(&mut work, req, self.rev() + 1, &mut changed);
        if changed {
            self.snaps.push(work);
        }
        resp
    }

    fn compare(&self, c: &Compare) -> bool {
        let kvs: Vec<&KeyValue> = self.cur().values().filter(|kv| in_span(&c.key, &c.range_end, &kv.key)).collect();
        let test = |ord: std::cmp::Ordering| match c.result {
            CompareResult::Equal => ord.is_eq(),
            CompareResult::Greater => ord.is_gt(),
            CompareResult::Less => ord.is_lt(),
            CompareResult::NotEqual => ord.is_ne(),
        };
        let zero = KeyValue::default();
        let checked: Vec<&KeyValue> = if kvs.is_empty() {
            if matches!(c.target, CompareTarget::Value(_)) {
                return false;
            }
            vec![&zero]
        } else {
            kvs
        };
        checked.iter().all(|kv| match &c.target {
            CompareTarget::Version(v) => test(kv.version.cmp(v)),
            CompareTarget::Create(v) => test(kv.create_revision.cmp(v)),
            CompareTarget::Mod(v) => test(kv.mod_revision.cmp(v)),
            CompareTarget::Value(v) => test(kv.value.cmp(v)),
            CompareTarget::Lease(v) => test(kv.lease.cmp(v)),
        })
    }

    /// Etcd's overlap rule for a flat branch: no key put twice, no put inside a delete (its
    /// range_end read literally).
    fn duplicate(ops: &[RequestOp]) -> bool {
        let dels: Vec<&DeleteRangeRequest> =
            ops.iter().filter_map(|o| if let RequestOp::DeleteRange(d) = o { Some(d) } else { None }).collect();
        let mut puts = std::collections::BTreeSet::new();
        for o in ops {
            if let RequestOp::Put(p) = o {
                let hit = dels.iter().any(|d| {
                    if d.range_end.is_empty() { d.key == p.key } else { d.key <= p.key && p.key < d.range_end }
                });
                if hit || !puts.insert(p.key.clone()) {
                    return true;
                }
            }
        }
        false
    }

    fn txn(&mut self, req: &TxnRequest) -> Result<TxnResponse, Error> {
        for op in req.success.iter().chain(&req.failure) {
            if let RequestOp::Put(p) = op {
                Self::put_flags(p)?;
            }
        }
        if Self::duplicate(&req.success) || Self::duplicate(&req.failure) {
            return Err(Error::DuplicateKey);
        }
        let succeeded = req.compare.iter().all(|c| self.compare(c));
        let ops = if succeeded { &req.success } else { &req.failure };
        let begin = self.rev();
        for op in ops {
            match op {
                RequestOp::Range(r) if r.revision != 0 && r.revision > begin => return Err(Error::FutureRev),
                RequestOp::Range(r) if r.revision != 0 && r.revision < self.compact => {
                    return Err(Error::Compacted { compact_revision: self.compact });
                }
                RequestOp::Put(p) => {
                    if (p.ignore_value || p.ignore_lease) && !self.cur().contains_key(&p.key) {
                        return Err(Error::KeyNotFound);
                    }
                    if p.lease != 0 && !self.leases.contains_key(&p.lease) {
                        return Err(Error::LeaseNotFound);
                    }
                }
                _ => {}
            }
        }
        let mut work = self.cur().clone();
        let mut changed = false;
        let mut responses = Vec::new();
        for op in ops {
            responses.push(match op {
                RequestOp::Range(r) => {
                    let cur = if changed { begin + 1 } else { begin };
                    let snap = if r.revision <= 0 { work.clone() } else { self.at(r.revision) };
                    ResponseOp::Range(self.range_of(&snap, r, cur))
                }
                RequestOp::Put(p) => {
                    let resp = Self::put_on(&mut work, p, begin + 1)?;
                    changed = true;
                    ResponseOp::Put(resp)
                }
                RequestOp::DeleteRange(d) => {
                    ResponseOp::DeleteRange(Self::delete_on(&mut work, d, begin + 1, &mut changed))
                }
                RequestOp::Txn(_) => unreachable!("not generated"),
            });
        }
        if changed {
            self.snaps.push(work);
        }
        Ok(TxnResponse { revision: self.rev(), succeeded, responses })
    }

    fn compact(&mut self, rev: i64) -> Result<CompactionResponse, Error> {
        if rev <= self.compact {
            return Err(Error::Compacted { compact_revision: self.compact });
        }
        if rev > self.rev() {
            return Err(Error::FutureRev);
        }
        self.compact = rev;
        Ok(CompactionResponse { revision: self.rev() })
    }

    fn grant(&mut self, id: i64, ttl: i64) -> Result<LeaseGrantResponse, Error> {
        let id = if id == 0 {
            let mut id = self.next_lease;
            while self.leases.contains_key(&id) {
                id += 1;
            }
            self.next_lease = id + 1;
            id
        } else if self.leases.contains_key(&id) {
            return Err(Error::LeaseExists);
        } else {
            id
        };
        let ttl = ttl.max(2);
        self.leases.insert(id, ttl);
        Ok(LeaseGrantResponse { revision: self.rev(), id, ttl })
    }

    fn revoke(&mut self, id: i64) -> Result<LeaseRevokeResponse, Error> {
        if self.leases.remove(&id).is_none() {
            return Err(Error::LeaseNotFound);
        }
        let mut work = self.cur().clone();
        work.retain(|_, kv| kv.lease != id);
        if work.len() != self.cur().len() {
            self.snaps.push(work);
        }
        Ok(LeaseRevokeResponse { revision: self.rev() })
    }
}

// ---------------------------------------------------------------------------------------------
// Running and checking

/// Applies `op` to the store and the model; checks responses match and that an error changed
/// nothing in the store.
fn step(s: &mut Store, m: &mut Model, op: &Op, live: &mut Vec<Event>) -> Result<(), TestCaseError> {
    let before = s.clone();
    let failed = match op {
        Op::Put(req) => {
            let got = s.put(req).map(|o| {
                live.extend(o.events);
                o.response
            });
            prop_assert_eq!(&got, &m.put(req), "put {:?}", req);
            got.is_err()
        }
        Op::Delete(req) => {
            let got = s.delete_range(req).map(|o| {
                live.extend(o.events);
                o.response
            });
            prop_assert_eq!(got, Ok(m.delete(req)), "delete {:?}", req);
            false
        }
        Op::Range(req) => {
            prop_assert_eq!(s.range(req), m.range(req), "range {:?}", req);
            false
        }
        Op::Txn(req) => {
            let got = s.txn(req).map(|o| {
                live.extend(o.events);
                o.response
            });
            prop_assert_eq!(&got, &m.txn(req), "txn {:?}", req);
            got.is_err()
        }
        Op::Compact(back) => {
            let rev = s.revision() - back;
            let got = s.compact(rev);
            prop_assert_eq!(&got, &m.compact(rev), "compact {}", rev);
            got.is_err()
        }
        Op::Grant(id, ttl) => {
            let got = s.lease_grant(*id, *ttl);
            prop_assert_eq!(&got, &m.grant(*id, *ttl), "grant {} {}", id, ttl);
            got.is_err()
        }
        Op::Revoke(id) => {
            let got = s.lease_revoke(*id).map(|o| {
                live.extend(o.events);
                o.response
            });
            prop_assert_eq!(&got, &m.revoke(*id), "revoke {}", id);
            got.is_err()
        }
    };
    if failed {
        prop_assert_eq!(&*s, &before, "an error changed the store: {:?}", op);
    }
    prop_assert_eq!(s.revision(), m.rev());
    prop_assert_eq!(s.compact_revision(), m.compact);
    Ok(())
}

fn all_keys() -> RangeRequest {
    RangeRequest::range(vec![0u8], vec![0u8])
}

fn check_reads(s: &Store, m: &Model) -> Result<(), TestCaseError> {
    for r in 1..=m.rev() {
        let got = s.range(&RangeRequest { revision: r, ..all_keys() });
        if r < m.compact {
            prop_assert_eq!(got, Err(Error::Compacted { compact_revision: m.compact }));
        } else {
            let want: Vec<KeyValue> = m.at(r).into_values().collect();
            prop_assert_eq!(got.map(|g| g.kvs), Ok(want), "revision {}", r);
        }
    }
    prop_assert_eq!(s.key_count(), m.cur().len());
    Ok(())
}

fn check_leases(s: &Store, m: &Model) -> Result<(), TestCaseError> {
    prop_assert_eq!(s.leases(), m.leases.keys().copied().collect::<Vec<_>>());
    for (&id, &ttl) in &m.leases {
        let want: Vec<Vec<u8>> = m.cur().values().filter(|kv| kv.lease == id).map(|kv| kv.key.clone()).collect();
        let got = s.lease_time_to_live(id, true).unwrap();
        prop_assert_eq!((got.granted_ttl, got.keys), (ttl, want), "lease {}", id);
    }
    Ok(())
}

fn replay(mut snap: Snap, events: &[Event]) -> Snap {
    for e in events {
        match e.kind {
            EventType::Put => {
                snap.insert(e.kv.key.clone(), e.kv.clone());
            }
            EventType::Delete => {
                snap.remove(&e.kv.key);
            }
        }
    }
    snap
}

/// An event's prev_kv is the key at the revision before, unless it is a create or that revision
/// is compacted.
fn check_prev_kvs(m: &Model, events: &[Event]) -> Result<(), TestCaseError> {
    for e in events {
        let rev = e.kv.mod_revision;
        let want = if e.is_create() || rev - 1 < m.compact { None } else { m.at(rev - 1).get(&e.kv.key).cloned() };
        prop_assert_eq!(&e.prev_kv, &want, "prev_kv of {:?}", e);
    }
    Ok(())
}

fn check_events(s: &Store, m: &Model) -> Result<(), TestCaseError> {
    let all = EventFilter::default();
    let lo = (m.compact + 1).max(1);
    for start in lo..=m.rev() + 1 {
        let batch = s.events(start, b"\0", b"\0", all, true, 0).unwrap();
        prop_assert_eq!(batch.next_revision, m.rev() + 1);
        prop_assert_eq!(&replay(m.at(start - 1), &batch.events), m.cur(), "replay from {}", start);
        prop_assert!(batch.events.iter().all(|e| e.kv.mod_revision >= start && e.kv.mod_revision <= m.rev()));
        check_prev_kvs(m, &batch.events)?;
        prop_assert!(batch.events.windows(2).all(|w| w[0].kv.mod_revision <= w[1].kv.mod_revision));
    }
    if m.compact >= 1 {
        let from_compact = s.events(m.compact, b"\0", b"\0", all, true, 0).unwrap();
        prop_assert_eq!(&replay(m.at(m.compact), &from_compact.events), m.cur());
        check_prev_kvs(m, &from_compact.events)?;
        if m.compact >= 2 {
            prop_assert_eq!(
                s.events(m.compact - 1, b"\0", b"\0", all, false, 0).unwrap_err(),
                Error::Compacted { compact_revision: m.compact }
            );
        }
    }
    // Paged with limit 1 = unpaged; one key's events = the key's share of all events.
    let whole = s.events(lo, b"\0", b"\0", all, true, 0).unwrap().events;
    let mut paged = Vec::new();
    let mut next = lo;
    for _ in 0..1000 {
        let b = s.events(next, b"\0", b"\0", all, true, 1).unwrap();
        paged.extend(b.events);
        prop_assert!(b.next_revision > next || b.next_revision == m.rev() + 1);
        if b.next_revision == next || b.next_revision > m.rev() {
            break;
        }
        next = b.next_revision;
    }
    prop_assert_eq!(&paged, &whole);
    for k in KEYS {
        let mine = s.events(lo, k, b"", all, true, 0).unwrap().events;
        let share: Vec<Event> = whole.iter().filter(|e| e.kv.key == k).cloned().collect();
        prop_assert_eq!(mine, share);
    }
    Ok(())
}

/// Runs `ops` on a fresh store and model; returns them with every live event the writes produced.
fn run(ops: &[Op]) -> Result<(Store, Model, Vec<Event>), TestCaseError> {
    let mut s = Store::default();
    let mut m = Model::new();
    let mut live = Vec::new();
    for op in ops {
        step(&mut s, &mut m, op, &mut live)?;
    }
    Ok((s, m, live))
}

/// Live events equal the history's, beyond the compaction revision.
fn check_live_events(s: &Store, m: &Model, live: &[Event]) -> Result<(), TestCaseError> {
    let lo = (m.compact + 1).max(1);
    let history = s.events(lo, b"\0", b"\0", EventFilter::default(), true, 0).unwrap().events;
    let recent: Vec<Event> = live.iter().filter(|e| e.kv.mod_revision >= lo).cloned().collect();
    prop_assert_eq!(recent, history);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn the_store_behaves_as_the_model(ops in prop::collection::vec(op(), 1..40), reads in prop::collection::vec(range_req(), 8)) {
        let (s, m, live) = run(&ops)?;
        check_reads(&s, &m)?;
        check_live_events(&s, &m, &live)?;
        check_leases(&s, &m)?;
        check_events(&s, &m)?;
        for req in &reads {
            prop_assert_eq!(s.range(req), m.range(req), "range {:?}", req);
        }
    }

    #[test]
    fn snapshots_round_trip_and_replay_is_deterministic(ops in prop::collection::vec(op(), 1..40)) {
        let (s, _, _) = run(&ops)?;
        let bytes = postcard::to_allocvec(&s).unwrap();
        let back: Store = postcard::from_bytes(&bytes).unwrap();
        prop_assert_eq!(&back, &s);
        let json: Store = serde_json::from_str(&serde_json::to_string(&s).unwrap()).unwrap();
        prop_assert_eq!(&json, &s);
        let (again, _, _) = run(&ops)?;
        prop_assert_eq!(&again, &s);
        prop_assert_eq!(postcard::to_allocvec(&again).unwrap(), bytes);
        prop_assert_eq!(again.hash_kv(0).unwrap(), s.hash_kv(0).unwrap());
    }

    /// A replica restored from a snapshot mid-way ends identical to one that never stopped.
    #[test]
    fn a_restored_replica_converges(ops in prop::collection::vec(op(), 2..40), cut in any::<prop::sample::Index>()) {
        let cut = cut.index(ops.len());
        let (mut a, mut m, _) = run(&ops[..cut])?;
        let mut b: Store = postcard::from_bytes(&postcard::to_allocvec(&a).unwrap()).unwrap();
        let mut m2 = m.clone();
        for op in &ops[cut..] {
            step(&mut a, &mut m, op, &mut Vec::new())?;
            step(&mut b, &mut m2, op, &mut Vec::new())?;
        }
        prop_assert_eq!(&a, &b);
    }
}

// ---------------------------------------------------------------------------------------------
// Arbitrary input: nested transactions, any bytes, any integers. Nothing panics, an error changes
// nothing, a write moves the revision by at most one, and the derived structures stay consistent
// (a snapshot round trip rebuilds them and must give an equal store).

fn any_bytes() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(prop_oneof![Just(0u8), Just(b'a'), Just(b'b'), Just(0xff), any::<u8>()], 0..3)
}

fn any_int() -> impl Strategy<Value = i64> {
    prop_oneof![-3i64..12, Just(i64::MIN), Just(i64::MAX), any::<i64>()]
}

fn any_range() -> impl Strategy<Value = RangeRequest> {
    (any_bytes(), any_bytes(), any_int(), any_int(), any::<u8>(), any_int(), any_int()).prop_map(
        |(key, range_end, limit, revision, flags, a, b)| RangeRequest {
            key,
            range_end,
            limit,
            revision,
            sort_order: [SortOrder::None, SortOrder::Ascend, SortOrder::Descend][usize::from(flags % 3)],
            sort_target: [SortTarget::Key, SortTarget::Version, SortTarget::Create, SortTarget::Mod, SortTarget::Value]
                [usize::from(flags % 5)],
            serializable: false,
            keys_only: flags & 8 != 0,
            count_only: flags & 16 != 0,
            min_mod_revision: if flags & 32 != 0 { a } else { 0 },
            max_mod_revision: if flags & 64 != 0 { b } else { 0 },
            min_create_revision: if flags & 128 != 0 { a } else { 0 },
            max_create_revision: 0,
        },
    )
}

fn any_put() -> impl Strategy<Value = PutRequest> {
    (any_bytes(), any_bytes(), prop_oneof![Just(0i64), 1i64..4, any_int()], any::<u8>()).prop_map(
        |(key, value, lease, f)| PutRequest {
            key,
            value,
            lease,
            prev_kv: f & 1 != 0,
            ignore_value: f & 6 == 6,
            ignore_lease: f & 24 == 24,
        },
    )
}

fn any_delete() -> impl Strategy<Value = DeleteRangeRequest> {
    (any_bytes(), any_bytes(), any::<bool>()).prop_map(|(key, range_end, prev_kv)| DeleteRangeRequest {
        key,
        range_end,
        prev_kv,
    })
}

fn any_compare() -> impl Strategy<Value = Compare> {
    (any_bytes(), any_bytes(), 0u8..4, 0u8..5, any_int(), any_bytes()).prop_map(|(key, range_end, r, t, n, v)| {
        let result = [CompareResult::Equal, CompareResult::Greater, CompareResult::Less, CompareResult::NotEqual]
            [usize::from(r)];
        let target = match t {
            0 => CompareTarget::Version(n),
            1 => CompareTarget::Create(n),
            2 => CompareTarget::Mod(n),
            3 => CompareTarget::Value(v),
            _ => CompareTarget::Lease(n),
        };
        Compare { key, range_end, result, target }
    })
}

fn any_txn() -> impl Strategy<Value = TxnRequest> {
    let leaf = prop_oneof![
        any_put().prop_map(RequestOp::Put),
        any_delete().prop_map(RequestOp::DeleteRange),
        any_range().prop_map(RequestOp::Range),
    ];
    let op = leaf.prop_recursive(2, 12, 3, |inner| {
        (
            prop::collection::vec(any_compare(), 0..2),
            prop::collection::vec(inner.clone(), 0..3),
            prop::collection::vec(inner, 0..3),
        )
            .prop_map(|(compare, success, failure)| RequestOp::Txn(TxnRequest { compare, success, failure }))
    });
    (
        prop::collection::vec(any_compare(), 0..3),
        prop::collection::vec(op.clone(), 0..4),
        prop::collection::vec(op, 0..3),
    )
        .prop_map(|(compare, success, failure)| TxnRequest { compare, success, failure })
}

#[derive(Debug, Clone)]
enum AnyOp {
    Put(PutRequest),
    Delete(DeleteRangeRequest),
    Range(RangeRequest),
    Txn(TxnRequest),
    Compact(i64),
    Grant(i64, i64),
    Revoke(i64),
    Events(i64, Vec<u8>, Vec<u8>, usize),
    Hash(i64),
}

fn any_op() -> impl Strategy<Value = AnyOp> {
    prop_oneof![
        4 => any_put().prop_map(AnyOp::Put),
        2 => any_delete().prop_map(AnyOp::Delete),
        2 => any_range().prop_map(AnyOp::Range),
        4 => any_txn().prop_map(AnyOp::Txn),
        1 => any_int().prop_map(AnyOp::Compact),
        1 => (prop_oneof![Just(0i64), 1i64..4, any_int()], any_int()).prop_map(|(i, t)| AnyOp::Grant(i, t)),
        1 => prop_oneof![1i64..4, any_int()].prop_map(AnyOp::Revoke),
        1 => (any_int(), any_bytes(), any_bytes(), 0usize..3).prop_map(|(s, k, e, l)| AnyOp::Events(s, k, e, l)),
        1 => any_int().prop_map(AnyOp::Hash),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_input_never_panics_and_errors_change_nothing(ops in prop::collection::vec(any_op(), 1..30)) {
        let mut s = Store::default();
        for op in &ops {
            let before = s.clone();
            let (wrote, failed) = match op {
                AnyOp::Put(r) => (true, s.put(r).is_err()),
                AnyOp::Delete(r) => (true, s.delete_range(r).is_err()),
                AnyOp::Range(r) => (false, s.range(r).is_err()),
                AnyOp::Txn(r) => {
                    let read_only = s.txn_read_only(r);
                    let applied = s.txn(r);
                    if let Some(ro) = read_only {
                        // Served without the log, it answers exactly what the log would have.
                        prop_assert_eq!(ro, applied.clone().map(|o| o.response), "{:?}", r);
                        prop_assert_eq!(&s, &before, "a read-only txn changed the store");
                    }
                    (true, applied.is_err())
                }
                AnyOp::Compact(r) => (false, s.compact(*r).is_err()),
                AnyOp::Grant(i, t) => (false, s.lease_grant(*i, *t).is_err()),
                AnyOp::Revoke(i) => (true, s.lease_revoke(*i).is_err()),
                AnyOp::Events(st, k, e, l) => (false, s.events(*st, k, e, EventFilter::default(), true, *l).is_err()),
                AnyOp::Hash(r) => (false, s.hash_kv(*r).is_err()),
            };
            if failed {
                prop_assert_eq!(&s, &before, "{:?}", op);
            }
            let step = s.revision() - before.revision();
            prop_assert!(step == 0 || (wrote && step == 1), "{:?} moved the revision by {}", op, step);
        }
        let back: Store = postcard::from_bytes(&postcard::to_allocvec(&s).unwrap()).unwrap();
        prop_assert_eq!(back, s);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Writes made `quietly` build no events and change nothing else: the same answers, the
    /// same store (its change log, from which watches are served, included) as made loudly.
    #[test]
    fn quiet_writes_differ_only_in_their_events(ops in prop::collection::vec(any_op(), 1..30)) {
        /// A quiet outcome has no events and answers as the loud one does.
        fn same<T: PartialEq + std::fmt::Debug>(
            quiet: Result<Outcome<T>, Error>,
            loud: Result<Outcome<T>, Error>,
        ) -> Result<(), TestCaseError> {
            prop_assert!(quiet.as_ref().map_or(true, |o| o.events.is_empty()), "a quiet write built events");
            prop_assert_eq!(quiet.map(|o| o.response), loud.map(|o| o.response));
            Ok(())
        }
        let (mut loud, mut quiet) = (Store::default(), Store::default());
        for op in &ops {
            match op {
                AnyOp::Put(r) => same(quiet.quietly(|s| s.put(r)), loud.put(r))?,
                AnyOp::Delete(r) => same(quiet.quietly(|s| s.delete_range(r)), loud.delete_range(r))?,
                AnyOp::Txn(r) => same(quiet.quietly(|s| s.txn(r)), loud.txn(r))?,
                AnyOp::Revoke(i) => same(quiet.quietly(|s| s.lease_revoke(*i)), loud.lease_revoke(*i))?,
                AnyOp::Compact(r) => prop_assert_eq!(quiet.compact(*r), loud.compact(*r)),
                AnyOp::Grant(i, t) => prop_assert_eq!(quiet.lease_grant(*i, *t), loud.lease_grant(*i, *t)),
                _ => {}
            }
            prop_assert_eq!(&quiet, &loud, "{:?}", op);
            let all = |s: &Store| s.events(0, b"\0", b"\0", EventFilter::default(), true, 0);
            prop_assert_eq!(all(&quiet), all(&loud));
        }
        // Outside `quietly` a write builds its events again.
        let put = PutRequest { key: b"k".to_vec(), value: b"v".to_vec(), ..Default::default() };
        prop_assert_eq!(quiet.put(&put).unwrap().events.len(), 1);
    }
}
