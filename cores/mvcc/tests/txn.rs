//! Transactions: compares (every target and result, missing keys, ranges), branches, shared
//! revisions, reads of earlier writes, nested transactions, etcd's duplicate-key rules and gaps,
//! operation limits, validation order, and all-or-nothing.

mod common;

use CompareResult::*;
use CompareTarget as T;
use basalt_mvcc::*;
use common::*;

fn store() -> Store {
    let mut s = Store::default();
    s.lease_grant(9, 60).unwrap();
    put(&mut s, "k", "mid"); // rev 2
    put(&mut s, "k", "mid"); // rev 3: version 2
    put_lease(&mut s, "l", "x", 9); // rev 4
    s
}

fn holds(s: &mut Store, c: Compare) -> bool {
    s.txn(&txn(vec![c], vec![], vec![])).unwrap().response.succeeded
}

#[test]
fn compares_on_an_existing_key() {
    let mut s = store();
    let cases = [
        (T::Version(2), [true, false, false, false]),
        (T::Version(1), [false, true, false, true]),
        (T::Version(3), [false, false, true, true]),
        (T::Create(2), [true, false, false, false]),
        (T::Mod(3), [true, false, false, false]),
        (T::Mod(4), [false, false, true, true]),
        (T::Value(b("mid")), [true, false, false, false]),
        (T::Value(b("a")), [false, true, false, true]),
        (T::Value(b("z")), [false, false, true, true]),
        (T::Value(b("mi")), [false, true, false, true]),
        (T::Lease(0), [true, false, false, false]),
    ];
    for (target, [eq, gt, lt, ne]) in cases {
        let got = [Equal, Greater, Less, NotEqual].map(|r| holds(&mut s, cmp("k", r, target.clone())));
        assert_eq!(got, [eq, gt, lt, ne], "{target:?}");
    }
    assert!(holds(&mut s, cmp("l", Equal, T::Lease(9))));
    assert!(holds(&mut s, cmp("l", Greater, T::Lease(8))));
    assert_eq!(s.revision(), 4, "compares alone never write");
}

#[test]
fn compares_on_a_missing_key_see_zeros_and_value_compares_fail() {
    let mut s = store();
    assert!(holds(&mut s, cmp("nope", Equal, T::Version(0))));
    assert!(holds(&mut s, cmp("nope", Equal, T::Create(0))));
    assert!(holds(&mut s, cmp("nope", Equal, T::Mod(0))));
    assert!(holds(&mut s, cmp("nope", Equal, T::Lease(0))));
    assert!(holds(&mut s, cmp("nope", Less, T::Mod(1))));
    assert!(!holds(&mut s, cmp("nope", Greater, T::Version(0))));
    for r in [Equal, Greater, Less, NotEqual] {
        assert!(!holds(&mut s, cmp("nope", r, T::Value(b("x")))), "{r:?}");
        assert!(!holds(&mut s, cmp("nope", r, T::Value(vec![]))), "{r:?} empty");
    }
    // A deleted key is missing too.
    del(&mut s, "k");
    assert!(holds(&mut s, cmp("k", Equal, T::Version(0))));
}

#[test]
fn range_compares_need_every_key_to_hold() {
    let mut s = Store::default();
    put(&mut s, "r/a", "1");
    put(&mut s, "r/b", "2");
    let range = |result, target| Compare { range_end: prefix_end(b"r/"), ..Compare::new("r/", result, target) };
    let mut holds = |c| s.txn(&txn(vec![c], vec![], vec![])).unwrap().response.succeeded;
    assert!(holds(range(Equal, T::Version(1))));
    assert!(holds(range(Greater, T::Value(b("0")))));
    assert!(!holds(range(Greater, T::Value(b("1")))), "r/a fails");
    assert!(holds(range(Less, T::Mod(4))));
    assert!(!holds(range(Less, T::Mod(3))));
    // An empty range compares as one missing key.
    let empty = |result, target| Compare { range_end: b("t"), ..Compare::new("s", result, target) };
    assert!(holds(empty(Equal, T::Create(0))));
    assert!(!holds(empty(NotEqual, T::Value(b("x")))));
    // "\0": every key >= key.
    let from = Compare { range_end: vec![0], ..Compare::new("r/b", Equal, T::Value(b("2"))) };
    assert!(holds(from));
}

#[test]
fn branches_responses_and_one_shared_revision() {
    let mut s = store();
    let t = txn(
        vec![cmp("k", Equal, T::Version(2))],
        vec![op_put("a", "1"), op_put("b", "2"), op_del("k"), op_get("a")],
        vec![op_put("never", "x")],
    );
    let out = s.txn(&t).unwrap();
    assert!(out.response.succeeded);
    assert_eq!(out.response.revision, 5);
    assert_eq!(s.revision(), 5);
    let revs: Vec<_> = out.events.iter().map(|e| (e.kind, e.kv.mod_revision)).collect();
    assert_eq!(revs, vec![(EventType::Put, 5), (EventType::Put, 5), (EventType::Delete, 5)]);
    let [ResponseOp::Put(p1), ResponseOp::Put(_), ResponseOp::DeleteRange(d), ResponseOp::Range(r)] =
        out.response.responses.as_slice()
    else {
        panic!("{:?}", out.response.responses)
    };
    assert_eq!(p1.revision, 5);
    assert_eq!(d.deleted, 1);
    // The range after the put sees it, at the in-progress revision.
    assert_eq!(r.revision, 5);
    assert_eq!(r.kvs, vec![kv("a", "1", 5, 5, 1, 0)]);
    assert_eq!(get(&s, "never"), None);

    let out = s.txn(&t).unwrap();
    assert!(!out.response.succeeded, "k is gone: version 0");
    assert_eq!(out.response.revision, 6);
    assert_eq!(get(&s, "never").unwrap().mod_revision, 6);
}

#[test]
fn transactions_that_change_nothing_keep_the_revision() {
    let mut s = store();
    let out = s.txn(&txn(vec![], vec![op_get("k"), op_del("missing")], vec![])).unwrap();
    assert_eq!(out.response.revision, 4);
    assert!(out.events.is_empty());
    let [ResponseOp::Range(r), ResponseOp::DeleteRange(d)] = out.response.responses.as_slice() else { panic!() };
    assert_eq!((r.revision, d.revision, d.deleted), (4, 4, 0));
    let out = s.txn(&TxnRequest::default()).unwrap();
    assert_eq!(out.response, TxnResponse { revision: 4, succeeded: true, responses: vec![] });
    assert_eq!(s.revision(), 4);
}

#[test]
fn a_delete_after_a_write_reports_the_in_progress_revision() {
    let mut s = store();
    let out = s.txn(&txn(vec![], vec![op_put("a", "1"), op_del("missing")], vec![])).unwrap();
    let [_, ResponseOp::DeleteRange(d)] = out.response.responses.as_slice() else { panic!() };
    assert_eq!((d.revision, d.deleted), (5, 0));
}

#[test]
fn nested_compares_see_the_state_before_the_transaction() {
    let mut s = store();
    let inner = txn(vec![cmp("new", Equal, T::Version(0))], vec![op_put("saw-none", "1")], vec![op_put("saw-it", "1")]);
    let out = s.txn(&txn(vec![], vec![op_put("new", "x"), RequestOp::Txn(inner)], vec![])).unwrap();
    assert!(get(&s, "saw-none").is_some());
    assert!(get(&s, "saw-it").is_none());
    let ResponseOp::Txn(nested) = &out.response.responses[1] else { panic!() };
    assert_eq!((nested.revision, nested.succeeded), (0, true), "etcd leaves nested headers empty");
    assert_eq!(out.response.revision, 5);
    assert_eq!(out.events.len(), 2);
}

#[test]
fn duplicate_keys_in_a_branch() {
    let mut s = store();
    let before = s.clone();
    let dup = [
        vec![op_put("a", "1"), op_put("a", "2")],
        vec![op_del("a"), op_put("a", "1")],
        vec![op_put("a", "1"), op_del("a")],
        vec![op_del_range("a", b"c"), op_put("b", "1")],
        vec![op_put("a", "1"), RequestOp::Txn(txn(vec![], vec![op_put("a", "2")], vec![]))],
        vec![RequestOp::Txn(txn(vec![], vec![op_del("a")], vec![])), op_put("a", "1")],
        vec![
            RequestOp::Txn(txn(vec![], vec![op_put("a", "1")], vec![])),
            RequestOp::Txn(txn(vec![], vec![], vec![op_put("a", "2")])),
        ],
        vec![
            RequestOp::Txn(txn(vec![], vec![op_del("a")], vec![])),
            RequestOp::Txn(txn(vec![], vec![op_put("a", "2")], vec![])),
        ],
    ];
    for success in dup {
        let t = txn(vec![], success.clone(), vec![]);
        assert_eq!(s.txn(&t).unwrap_err(), Error::DuplicateKey, "{success:?}");
        // The failure branch is checked too, whichever branch would run.
        let t = txn(vec![], vec![], success.clone());
        assert_eq!(s.txn(&t).unwrap_err(), Error::DuplicateKey, "failure {success:?}");
        assert_eq!(s, before);
    }
}

#[test]
fn allowed_overlaps() {
    let mut s = store();
    let ok = [
        // The same key in both branches of one nested transaction.
        vec![RequestOp::Txn(txn(vec![], vec![op_put("a", "1")], vec![op_put("a", "2")]))],
        // Overlapping deletes.
        vec![op_del_range("a", b"c"), op_del("b")],
        // A nested put before a later sibling's delete of the same key (etcd does not check it).
        vec![
            RequestOp::Txn(txn(vec![], vec![op_put("a", "1")], vec![])),
            RequestOp::Txn(txn(vec![], vec![op_del("a")], vec![])),
        ],
        // range_end "\0" is taken literally by etcd's overlap check: no conflict.
        vec![op_del_range("a", b"\0"), op_put("b", "1")],
    ];
    for success in ok {
        s.txn(&txn(vec![], success.clone(), vec![])).unwrap_or_else(|e| panic!("{success:?}: {e}"));
    }
    // Across the two branches of one transaction: fine.
    s.txn(&txn(vec![], vec![op_put("a", "1")], vec![op_put("a", "2")])).unwrap();
}

#[test]
fn delete_from_key_then_put_applies_both_at_one_revision() {
    let mut s = store();
    let rev = s.revision() + 1;
    let out = s.txn(&txn(vec![], vec![op_del_range("a", b"\0"), op_put("k", "new")], vec![])).unwrap();
    assert_eq!(out.response.revision, rev);
    // k and l deleted at (rev, 0..2), then k created again at (rev, 2).
    assert_eq!(get(&s, "k"), Some(kv("k", "new", rev, rev, 1, 0)));
    assert_eq!(get(&s, "l"), None);
    let kinds: Vec<_> = out.events.iter().map(|e| (e.kind, String::from_utf8_lossy(&e.kv.key).into_owned())).collect();
    assert_eq!(
        kinds,
        vec![(EventType::Delete, "k".into()), (EventType::Delete, "l".into()), (EventType::Put, "k".into())]
    );
    assert!(out.events[2].is_create() && out.events[2].prev_kv.is_none());
    assert!(s.lease_time_to_live(9, true).unwrap().keys.is_empty());
    // Reads at the revision before see the old k.
    assert_eq!(get_at(&s, "k", rev - 1).unwrap().unwrap().version, 2);
}

#[test]
fn ignore_value_on_a_key_the_same_txn_deleted_is_refused_whole() {
    // Etcd crashes the member on this one; the store refuses it and applies nothing.
    let mut s = store();
    let before = s.clone();
    let put_keep = RequestOp::Put(PutRequest { ignore_value: true, ..PutRequest::new("l", "") });
    let t = txn(vec![], vec![op_put("z", "1"), op_del_range("a", b"\0"), put_keep], vec![]);
    assert_eq!(s.txn(&t).unwrap_err(), Error::KeyNotFound);
    assert_eq!(s, before, "rolled back, lease attachments included");
    assert_eq!(s.lease_time_to_live(9, true).unwrap().keys, vec![b("l")]);
}

#[test]
fn too_many_ops() {
    let mut s = store();
    let puts = |n: usize| (0..n).map(|i| op_put(&format!("k{i}"), "v")).collect::<Vec<_>>();
    assert!(s.txn(&txn(vec![], puts(128), vec![])).is_ok());
    assert_eq!(s.txn(&txn(vec![], puts(129), vec![])).unwrap_err(), Error::TooManyOps);
    assert_eq!(s.txn(&txn(vec![], vec![], puts(129))).unwrap_err(), Error::TooManyOps);
    let compares = (0..129).map(|_| cmp("k", Equal, T::Version(0))).collect();
    assert_eq!(s.txn(&txn(compares, vec![], vec![])).unwrap_err(), Error::TooManyOps);
    // A nested transaction gets what its parent leaves: 128 - 127 = 1.
    let mut ops = puts(126);
    ops.push(RequestOp::Txn(txn(vec![], vec![op_put("n1", "v")], vec![])));
    assert!(s.txn(&txn(vec![], ops.clone(), vec![])).is_ok());
    ops.push(op_put("extra", "v"));
    assert_eq!(s.txn(&txn(vec![], ops, vec![])).unwrap_err(), Error::TooManyOps);
    // The limit is configurable (and part of the state).
    let mut small = Store::new(Config { max_txn_ops: 2, ..Config::default() });
    assert_eq!(small.txn(&txn(vec![], puts(3), vec![])).unwrap_err(), Error::TooManyOps);
}

#[test]
fn deeply_nested_transactions_are_bounded_by_the_op_budget() {
    let mut s = Store::default();
    let mut t = txn(vec![], vec![op_put("deep", "v")], vec![]);
    for _ in 0..200 {
        t = txn(vec![], vec![RequestOp::Txn(t)], vec![]);
    }
    assert_eq!(s.txn(&t).unwrap_err(), Error::TooManyOps);
    let mut t = txn(vec![], vec![op_put("deep", "v")], vec![]);
    for _ in 0..100 {
        t = txn(vec![], vec![RequestOp::Txn(t)], vec![]);
    }
    assert!(s.txn(&t).is_ok());
    assert!(get(&s, "deep").is_some());
}

#[test]
fn request_checks_cover_both_branches_path_checks_only_the_taken_one() {
    let mut s = store();
    let before = s.clone();
    let bad_put = |p: PutRequest| txn(vec![], vec![op_put("a", "1")], vec![RequestOp::Put(p)]);
    assert_eq!(s.txn(&bad_put(PutRequest::new("", "v"))).unwrap_err(), Error::EmptyKey);
    assert_eq!(
        s.txn(&bad_put(PutRequest { ignore_value: true, ..PutRequest::new("k", "v") })).unwrap_err(),
        Error::ValueProvided
    );
    assert_eq!(
        s.txn(&bad_put(PutRequest { ignore_lease: true, ..PutRequest::new("k", "").with_lease(9) })).unwrap_err(),
        Error::LeaseProvided
    );
    let empty_range = txn(vec![], vec![], vec![RequestOp::Range(RangeRequest::key(""))]);
    assert_eq!(s.txn(&empty_range).unwrap_err(), Error::EmptyKey);
    let empty_compare = txn(vec![cmp("", Equal, T::Version(0))], vec![], vec![]);
    assert_eq!(s.txn(&empty_compare).unwrap_err(), Error::EmptyKey);
    let empty_del = txn(vec![], vec![RequestOp::DeleteRange(DeleteRangeRequest::key(""))], vec![]);
    assert_eq!(s.txn(&empty_del).unwrap_err(), Error::EmptyKey);
    assert_eq!(s, before);
    // Unknown lease / missing key / future range only matter on the path taken.
    let untaken = txn(
        vec![],
        vec![op_put("a", "1")],
        vec![
            RequestOp::Put(PutRequest::new("b", "1").with_lease(1234)),
            RequestOp::Put(PutRequest { ignore_value: true, ..PutRequest::new("missing", "") }),
            RequestOp::Range(RangeRequest { revision: 1000, ..RangeRequest::key("k") }),
        ],
    );
    assert!(s.txn(&untaken).unwrap().response.succeeded);
    let taken = |op| txn(vec![], vec![op_put("a", "2"), op], vec![]);
    let before = s.clone();
    let cases = [
        (RequestOp::Put(PutRequest::new("b", "1").with_lease(1234)), Error::LeaseNotFound),
        (RequestOp::Put(PutRequest { ignore_value: true, ..PutRequest::new("missing", "") }), Error::KeyNotFound),
        (RequestOp::Put(PutRequest { ignore_lease: true, ..PutRequest::new("missing", "v") }), Error::KeyNotFound),
        (RequestOp::Range(RangeRequest { revision: 1000, ..RangeRequest::key("k") }), Error::FutureRev),
        // The in-progress revision is a future one for the check (etcd's checkRange).
        (RequestOp::Range(RangeRequest { revision: 6, ..RangeRequest::key("k") }), Error::FutureRev),
    ];
    for (op, err) in cases {
        assert_eq!(s.txn(&taken(op.clone())).unwrap_err(), err, "{op:?}");
        assert_eq!(s, before);
    }
    // Nested paths are checked too.
    let nested = txn(vec![], vec![RequestOp::Txn(taken(cases_lease()))], vec![]);
    assert_eq!(s.txn(&nested).unwrap_err(), Error::LeaseNotFound);
    assert_eq!(s, before);
}

fn cases_lease() -> RequestOp {
    RequestOp::Put(PutRequest::new("b", "1").with_lease(4321))
}

#[test]
fn compacted_range_revisions_in_a_txn() {
    let mut s = store();
    s.compact(3).unwrap();
    let t = |rev| txn(vec![], vec![RequestOp::Range(RangeRequest { revision: rev, ..RangeRequest::key("k") })], vec![]);
    assert_eq!(s.txn(&t(2)).unwrap_err(), Error::Compacted { compact_revision: 3 });
    let out = s.txn(&t(3)).unwrap();
    let ResponseOp::Range(r) = &out.response.responses[0] else { panic!() };
    assert_eq!(r.kvs[0].mod_revision, 3);
    // Negative revisions: current for a plain range; in a txn, etcd compares them with the
    // compaction revision (-1 before any compaction).
    assert!(s.txn(&t(-1)).is_err());
    let mut fresh = Store::default();
    assert!(fresh.txn(&t(-1)).is_ok());
    assert_eq!(fresh.txn(&t(-2)).unwrap_err(), Error::Compacted { compact_revision: -1 });
    assert!(fresh.range(&RangeRequest { revision: -2, ..RangeRequest::key("k") }).is_ok());
}

#[test]
fn txn_leases_attach_and_move() {
    let mut s = store();
    s.lease_grant(10, 60).unwrap();
    let t = txn(vec![], vec![RequestOp::Put(PutRequest::new("l", "y").with_lease(10))], vec![]);
    s.txn(&t).unwrap();
    assert!(s.lease_time_to_live(9, true).unwrap().keys.is_empty());
    assert_eq!(s.lease_time_to_live(10, true).unwrap().keys, vec![b("l")]);
}

#[test]
fn read_only_detection() {
    assert!(txn(vec![], vec![op_get("a")], vec![op_get("b")]).is_read_only());
    assert!(TxnRequest::default().is_read_only());
    assert!(!txn(vec![], vec![op_get("a")], vec![op_del("b")]).is_read_only());
    assert!(!txn(vec![], vec![RequestOp::Txn(TxnRequest::default())], vec![]).is_read_only());
}
