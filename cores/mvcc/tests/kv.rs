//! Range, put and delete: revisions, per-key metadata, etcd's key-range conventions, limits,
//! sorting, filters, flags and their errors.

mod common;

use basalt_mvcc::*;
use common::*;

#[test]
fn an_empty_store_is_at_revision_1() {
    let s = Store::default();
    assert_eq!(s.revision(), 1);
    assert_eq!(s.compact_revision(), -1);
    let r = s.range(&RangeRequest::key("a")).unwrap();
    assert_eq!(r, RangeResponse { revision: 1, kvs: vec![], more: false, count: 0 });
}

#[test]
fn puts_track_create_mod_version_and_deletes_reset_them() {
    let mut s = Store::default();
    assert_eq!(put(&mut s, "k", "v1"), 2);
    assert_eq!(get(&s, "k"), Some(kv("k", "v1", 2, 2, 1, 0)));
    assert_eq!(put(&mut s, "k", "v2"), 3);
    assert_eq!(get(&s, "k"), Some(kv("k", "v2", 2, 3, 2, 0)));
    put(&mut s, "other", "x");
    assert_eq!(del(&mut s, "k"), 1);
    assert_eq!(s.revision(), 5);
    assert_eq!(get(&s, "k"), None);
    // A new incarnation: version 1 and a fresh create revision.
    assert_eq!(put(&mut s, "k", "v3"), 6);
    assert_eq!(get(&s, "k"), Some(kv("k", "v3", 6, 6, 1, 0)));
    // Putting the same value is still a write.
    assert_eq!(put(&mut s, "k", "v3"), 7);
    assert_eq!(get(&s, "k").unwrap().version, 2);
}

#[test]
fn deleting_nothing_keeps_the_revision() {
    let mut s = Store::default();
    put(&mut s, "a", "1");
    let out = s.delete_range(&DeleteRangeRequest::key("zzz")).unwrap();
    assert_eq!(out.response, DeleteRangeResponse { revision: 2, deleted: 0, prev_kvs: vec![] });
    assert!(out.events.is_empty());
    assert_eq!(s.revision(), 2);
}

#[test]
fn delete_range_counts_returns_prev_kvs_in_key_order_and_shares_one_revision() {
    let mut s = Store::default();
    for k in ["p/b", "p/a", "p/c", "q"] {
        put(&mut s, k, k);
    }
    let req = DeleteRangeRequest { prev_kv: true, ..DeleteRangeRequest::prefix(b"p/") };
    let out = s.delete_range(&req).unwrap();
    assert_eq!(out.response.deleted, 3);
    assert_eq!(out.response.revision, 6);
    let prev: Vec<_> = out.response.prev_kvs.iter().map(|kv| kv.key.clone()).collect();
    assert_eq!(prev, vec![b("p/a"), b("p/b"), b("p/c")]);
    assert_eq!(out.events.len(), 3);
    assert!(out.events.iter().all(|e| e.kind == EventType::Delete && e.kv.mod_revision == 6));
    assert_eq!(all(&s), vec!["q"]);
}

#[test]
fn range_end_conventions() {
    let mut s = Store::default();
    for k in ["a", "b", "ba", "c", "d"] {
        put(&mut s, k, "v");
    }
    let r = |k: &[u8], e: &[u8]| keys(&s.range(&RangeRequest::range(k, e)).unwrap());
    assert_eq!(r(b"b", b""), vec!["b"], "empty range_end: the single key");
    assert_eq!(r(b"b", b"\0"), vec!["b", "ba", "c", "d"], "\\0: every key >= key");
    assert_eq!(r(b"\0", b"\0"), vec!["a", "b", "ba", "c", "d"], "\\0 and \\0: everything");
    assert_eq!(r(b"b", b"c"), vec!["b", "ba"], "[key, range_end)");
    assert_eq!(r(b"c", b"b"), Vec::<String>::new(), "inverted: empty, no panic");
    assert_eq!(r(b"c", b"c"), Vec::<String>::new(), "key == range_end: empty");
    assert_eq!(keys(&s.range(&RangeRequest::prefix(b"b")).unwrap()), vec!["b", "ba"]);
    assert_eq!(keys(&s.range(&RangeRequest::prefix(b"")).unwrap()).len(), 5);
}

#[test]
fn prefix_end_matches_get_prefix_range_end() {
    assert_eq!(prefix_end(b"abc"), b"abd");
    assert_eq!(prefix_end(b"a\xff"), b"b");
    assert_eq!(prefix_end(b"a\xff\xff"), b"b");
    assert_eq!(prefix_end(b"\x01\xfe\xff"), b"\x01\xff");
    assert_eq!(prefix_end(b"\xff"), b"\0");
    assert_eq!(prefix_end(b"\xff\xff"), b"\0");
    assert_eq!(prefix_end(b""), b"\0");
    assert_eq!(prefix_end(b"\0"), b"\x01");
}

#[test]
fn keys_with_0xff_bytes_range_by_prefix() {
    let mut s = Store::default();
    s.put(&PutRequest::new(b"\xff\xff".to_vec(), "a")).unwrap();
    s.put(&PutRequest::new(b"\xff\xff\x01".to_vec(), "b")).unwrap();
    s.put(&PutRequest::new(b"\xfe".to_vec(), "c")).unwrap();
    let r = s.range(&RangeRequest::prefix(b"\xff\xff")).unwrap();
    assert_eq!(r.count, 2);
}

#[test]
fn limit_more_and_count() {
    let mut s = Store::default();
    for k in ["a", "b", "c", "d", "e"] {
        put(&mut s, k, "v");
    }
    let req = |limit| RangeRequest { limit, ..RangeRequest::range("a", "\0") };
    let r = s.range(&req(2)).unwrap();
    assert_eq!((keys(&r), r.more, r.count), (vec!["a".to_string(), "b".to_string()], true, 5));
    let r = s.range(&req(5)).unwrap();
    assert_eq!((r.kvs.len(), r.more, r.count), (5, false, 5));
    let r = s.range(&req(6)).unwrap();
    assert_eq!((r.kvs.len(), r.more), (5, false));
    for no_limit in [0, -1, i64::MIN] {
        let r = s.range(&req(no_limit)).unwrap();
        assert_eq!((r.kvs.len(), r.more), (5, false), "limit {no_limit}");
    }
    let r = s.range(&req(i64::MAX)).unwrap();
    assert_eq!((r.kvs.len(), r.more), (5, false));
}

#[test]
fn count_only_and_keys_only() {
    let mut s = Store::default();
    for k in ["a", "b", "c"] {
        put(&mut s, k, "value");
    }
    let r = s.range(&RangeRequest { count_only: true, limit: 1, ..RangeRequest::prefix(b"") }).unwrap();
    assert_eq!(r, RangeResponse { revision: 4, kvs: vec![], more: false, count: 3 });
    let r = s.range(&RangeRequest { keys_only: true, ..RangeRequest::prefix(b"") }).unwrap();
    assert!(r.kvs.iter().all(|kv| kv.value.is_empty() && kv.version == 1));
    assert_eq!(r.count, 3);
}

#[test]
fn min_max_filters_do_not_change_count_but_change_more() {
    let mut s = Store::default();
    for k in ["a", "b", "c", "d"] {
        put(&mut s, k, "v"); // a@2 b@3 c@4 d@5
    }
    put(&mut s, "a", "v2"); // a: create 2, mod 6
    let base = RangeRequest::prefix(b"");
    let r = s.range(&RangeRequest { min_mod_revision: 4, ..base.clone() }).unwrap();
    assert_eq!((keys(&r), r.count), (vec!["a".into(), "c".into(), "d".into()], 4));
    let r = s.range(&RangeRequest { max_mod_revision: 4, ..base.clone() }).unwrap();
    assert_eq!(keys(&r), vec!["b", "c"]);
    let r = s.range(&RangeRequest { min_create_revision: 3, max_create_revision: 4, ..base.clone() }).unwrap();
    assert_eq!(keys(&r), vec!["b", "c"]);
    // The limit cuts after filtering: 3 pass the filter, limit 2 → more.
    let r = s.range(&RangeRequest { min_mod_revision: 4, limit: 2, ..base.clone() }).unwrap();
    assert_eq!((keys(&r), r.more, r.count), (vec!["a".into(), "c".into()], true, 4));
    // 2 pass, limit 2 → not more, though 4 keys are in range.
    let r = s.range(&RangeRequest { max_mod_revision: 4, limit: 2, ..base }).unwrap();
    assert_eq!((r.kvs.len(), r.more, r.count), (2, false, 4));
}

#[test]
fn sorting_targets_orders_and_ties() {
    let mut s = Store::default();
    put(&mut s, "a", "3"); // rev 2
    put(&mut s, "b", "1"); // rev 3
    put(&mut s, "c", "2"); // rev 4
    put(&mut s, "b", "1"); // rev 5: b version 2
    let sorted = |order, target| {
        keys(&s.range(&RangeRequest { sort_order: order, sort_target: target, ..RangeRequest::prefix(b"") }).unwrap())
    };
    use SortOrder::*;
    use SortTarget::*;
    assert_eq!(sorted(None, Key), vec!["a", "b", "c"]);
    assert_eq!(sorted(Ascend, Key), vec!["a", "b", "c"]);
    assert_eq!(sorted(Descend, Key), vec!["c", "b", "a"]);
    assert_eq!(sorted(Ascend, Value), vec!["b", "c", "a"]);
    assert_eq!(sorted(None, Value), vec!["b", "c", "a"], "a non-key target without order sorts ascending");
    assert_eq!(sorted(Descend, Value), vec!["a", "c", "b"]);
    assert_eq!(sorted(Ascend, Mod), vec!["a", "c", "b"]);
    assert_eq!(sorted(Descend, Mod), vec!["b", "c", "a"]);
    assert_eq!(sorted(Ascend, Create), vec!["a", "b", "c"]);
    assert_eq!(sorted(Descend, Create), vec!["c", "b", "a"]);
    // Versions: a 1, b 2, c 1 — ties keep key order in both directions.
    assert_eq!(sorted(Ascend, Version), vec!["a", "c", "b"]);
    assert_eq!(sorted(Descend, Version), vec!["b", "a", "c"]);
    // Sorting happens before the limit.
    let r = s
        .range(&RangeRequest { sort_order: Descend, sort_target: Mod, limit: 1, ..RangeRequest::prefix(b"") })
        .unwrap();
    assert_eq!((keys(&r), r.more, r.count), (vec!["b".to_string()], true, 3));
}

#[test]
fn historical_reads_and_revision_errors() {
    let mut s = Store::default();
    put(&mut s, "k", "v1"); // 2
    put(&mut s, "k", "v2"); // 3
    del(&mut s, "k"); // 4
    put(&mut s, "k", "v3"); // 5
    assert_eq!(get_at(&s, "k", 1).unwrap(), None);
    assert_eq!(get_at(&s, "k", 2).unwrap(), Some(kv("k", "v1", 2, 2, 1, 0)));
    assert_eq!(get_at(&s, "k", 3).unwrap(), Some(kv("k", "v2", 2, 3, 2, 0)));
    assert_eq!(get_at(&s, "k", 4).unwrap(), None);
    assert_eq!(get_at(&s, "k", 5).unwrap(), Some(kv("k", "v3", 5, 5, 1, 0)));
    assert_eq!(get_at(&s, "k", 0).unwrap(), get_at(&s, "k", 5).unwrap());
    assert_eq!(get_at(&s, "k", -7).unwrap(), get_at(&s, "k", 5).unwrap(), "negative: current");
    assert_eq!(get_at(&s, "k", 6), Err(Error::FutureRev));
    assert_eq!(get_at(&s, "k", i64::MAX), Err(Error::FutureRev));
    // The header is the current revision even for a historical read.
    let r = s.range(&RangeRequest { revision: 2, ..RangeRequest::key("k") }).unwrap();
    assert_eq!(r.revision, 5);
}

#[test]
fn put_prev_kv_and_flags() {
    let mut s = Store::default();
    s.lease_grant(7, 60).unwrap();
    let out = s.put(&PutRequest { prev_kv: true, ..PutRequest::new("k", "v1") }).unwrap();
    assert_eq!(out.response.prev_kv, None);
    s.put(&PutRequest::new("k", "v2").with_lease(7)).unwrap();
    let out = s.put(&PutRequest { prev_kv: true, ignore_value: true, ..PutRequest::new("k", "") }).unwrap();
    assert_eq!(out.response.prev_kv, Some(kv("k", "v2", 2, 3, 2, 7)));
    // ignore_value keeps the value; without ignore_lease the lease is the request's (0).
    assert_eq!(get(&s, "k"), Some(kv("k", "v2", 2, 4, 3, 0)));
    s.put(&PutRequest::new("k", "v3").with_lease(7)).unwrap();
    s.put(&PutRequest { ignore_lease: true, ..PutRequest::new("k", "v4") }).unwrap();
    assert_eq!(get(&s, "k"), Some(kv("k", "v4", 2, 6, 5, 7)), "ignore_lease keeps the lease");
    assert_eq!(s.lease_time_to_live(7, true).unwrap().keys, vec![b("k")]);
}

#[test]
fn put_errors_in_etcds_order_and_apply_nothing() {
    let mut s = Store::default();
    put(&mut s, "k", "v");
    let before = s.clone();
    let cases = [
        (PutRequest::new("", "v"), Error::EmptyKey),
        (PutRequest { ignore_value: true, ..PutRequest::new("k", "v") }, Error::ValueProvided),
        (PutRequest { ignore_lease: true, ..PutRequest::new("k", "").with_lease(3) }, Error::LeaseProvided),
        (PutRequest::new("k", "v").with_lease(3), Error::LeaseNotFound),
        (PutRequest { ignore_value: true, ..PutRequest::new("missing", "") }, Error::KeyNotFound),
        (PutRequest { ignore_lease: true, ..PutRequest::new("missing", "x") }, Error::KeyNotFound),
        // The lease is checked before the key (etcd's standalone Put).
        (PutRequest { ignore_value: true, ..PutRequest::new("missing", "").with_lease(3) }, Error::LeaseNotFound),
    ];
    for (req, err) in cases {
        assert_eq!(s.put(&req).unwrap_err(), err, "{req:?}");
        assert_eq!(s, before);
    }
}

#[test]
fn empty_keys_are_refused() {
    let mut s = Store::default();
    assert_eq!(s.range(&RangeRequest::key("")).unwrap_err(), Error::EmptyKey);
    assert_eq!(s.delete_range(&DeleteRangeRequest::key("")).unwrap_err(), Error::EmptyKey);
    assert_eq!(s.put(&PutRequest::new("", "")).unwrap_err(), Error::EmptyKey);
}

#[test]
fn put_events_carry_prev_kv_except_for_creates() {
    let mut s = Store::default();
    let e = s.put(&PutRequest::new("k", "v1")).unwrap().events;
    assert_eq!(e, vec![Event { kind: EventType::Put, kv: kv("k", "v1", 2, 2, 1, 0), prev_kv: None }]);
    assert!(e[0].is_create());
    let e = s.put(&PutRequest::new("k", "v2")).unwrap().events;
    assert_eq!(e[0].prev_kv, Some(kv("k", "v1", 2, 2, 1, 0)));
    let e = s.delete_range(&DeleteRangeRequest::key("k")).unwrap().events;
    assert_eq!(
        e,
        vec![Event {
            kind: EventType::Delete,
            kv: KeyValue { key: b("k"), mod_revision: 4, ..KeyValue::default() },
            prev_kv: Some(kv("k", "v2", 2, 3, 2, 0)),
        }]
    );
}

#[test]
fn size_estimate_grows_with_history_and_shrinks_with_compaction() {
    let mut s = Store::default();
    assert_eq!(s.size_estimate(), 0);
    put(&mut s, "key", "0123456789");
    let one = s.size_estimate();
    assert!(one >= 13);
    put(&mut s, "key", "0123456789");
    assert_eq!(s.size_estimate(), 2 * one);
    s.compact(s.revision()).unwrap();
    assert_eq!(s.size_estimate(), one);
    assert_eq!(s.key_count(), 1);
}

#[test]
fn a_non_key_target_without_order_sorts_only_the_first_limit_plus_one_keys() {
    // Etcd fetches limit + 1 keys when the request's sort_order is None (before turning a
    // non-key target into an ascending sort), then sorts those and cuts.
    let mut s = Store::default();
    put(&mut s, "c", "1"); // create 2
    put(&mut s, "b", "1"); // create 3
    put(&mut s, "a", "1"); // create 4
    let req = RangeRequest { sort_target: SortTarget::Create, limit: 1, ..RangeRequest::prefix(b"") };
    let r = s.range(&req).unwrap();
    assert_eq!((keys(&r), r.more, r.count), (vec!["b".to_string()], true, 3), "sorted among a, b only");
    let r = s.range(&RangeRequest { sort_order: SortOrder::Ascend, ..req }).unwrap();
    assert_eq!(keys(&r), vec!["c"], "with an explicit order every key is sorted");
}
