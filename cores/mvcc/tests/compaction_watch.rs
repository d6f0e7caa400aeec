//! Compaction (what it keeps, its errors, reads around it) and historical events for watches
//! (order, filters, prev_kv, limits that never split a revision, resuming, compaction).

mod common;

use basalt_mvcc::*;
use common::*;

const ALL: EventFilter = EventFilter { no_put: false, no_delete: false };

fn summary(b: &EventBatch) -> Vec<(i64, EventType, String)> {
    b.events.iter().map(|e| (e.kv.mod_revision, e.kind, String::from_utf8_lossy(&e.kv.key).into_owned())).collect()
}

#[test]
fn compaction_bounds_and_errors() {
    let mut s = Store::default();
    assert_eq!(s.compact(0).unwrap(), CompactionResponse { revision: 1 }, "etcd starts compaction at -1");
    assert_eq!(s.compact(0).unwrap_err(), Error::Compacted { compact_revision: 0 });
    assert_eq!(s.compact(2).unwrap_err(), Error::FutureRev);
    assert_eq!(s.compact(1).unwrap(), CompactionResponse { revision: 1 });
    put(&mut s, "a", "1");
    put(&mut s, "a", "2");
    assert_eq!(s.compact(3).unwrap(), CompactionResponse { revision: 3 });
    assert_eq!(s.compact(2).unwrap_err(), Error::Compacted { compact_revision: 3 });
    assert_eq!(s.compact(3).unwrap_err(), Error::Compacted { compact_revision: 3 });
    assert_eq!(s.compact_revision(), 3);
    assert_eq!(s.revision(), 3, "compaction is not a write");
    assert_eq!(Store::default().compact(-5).unwrap_err(), Error::Compacted { compact_revision: -1 });
}

#[test]
fn compaction_keeps_what_reads_at_and_after_it_need() {
    let mut s = Store::default();
    put(&mut s, "a", "1"); // 2
    put(&mut s, "b", "1"); // 3
    put(&mut s, "a", "2"); // 4
    del(&mut s, "b"); // 5
    put(&mut s, "c", "1"); // 6
    put(&mut s, "a", "3"); // 7
    let reads_before: Vec<_> =
        (4..=7).map(|r| s.range(&RangeRequest { revision: r, ..RangeRequest::prefix(b"") })).collect();
    s.compact(5).unwrap();
    let reads_after: Vec<_> =
        (4..=7).map(|r| s.range(&RangeRequest { revision: r, ..RangeRequest::prefix(b"") })).collect();
    assert_eq!(reads_after[0], Err(Error::Compacted { compact_revision: 5 }));
    assert_eq!(reads_after[1..], reads_before[1..]);
    assert_eq!(get_at(&s, "a", 5).unwrap(), Some(kv("a", "2", 2, 4, 2, 0)), "the put in effect at 5 stays");
    // b was deleted at the compaction revision: its history is gone entirely.
    assert_eq!(s.hash_kv(0).unwrap().compact_revision, 5);
    let b_events = s.events(5, b"b", b"", ALL, false, 0).unwrap();
    assert!(b_events.events.is_empty());
}

#[test]
fn events_in_order_with_filters_and_prev_kv() {
    let mut s = Store::default();
    put(&mut s, "a", "1"); // 2
    s.txn(&txn(vec![], vec![op_put("b", "1"), op_put("a", "2")], vec![])).unwrap(); // 3
    del(&mut s, "a"); // 4
    put(&mut s, "zz", "1"); // 5
    let all_events = s.events(1, b"\0", b"\0", ALL, true, 0).unwrap();
    assert_eq!(
        summary(&all_events),
        vec![
            (2, EventType::Put, "a".into()),
            (3, EventType::Put, "b".into()),
            (3, EventType::Put, "a".into()),
            (4, EventType::Delete, "a".into()),
            (5, EventType::Put, "zz".into()),
        ]
    );
    assert_eq!(all_events.next_revision, 6);
    let e = &all_events.events;
    assert_eq!(e[0].prev_kv, None);
    assert_eq!(e[2].prev_kv, Some(kv("a", "1", 2, 2, 1, 0)));
    assert_eq!(e[3].kv, KeyValue { key: b("a"), mod_revision: 4, ..KeyValue::default() });
    assert_eq!(e[3].prev_kv, Some(kv("a", "2", 2, 3, 2, 0)));
    // Without prev_kv.
    let plain = s.events(3, b"a", b"", ALL, false, 0).unwrap();
    assert!(plain.events.iter().all(|e| e.prev_kv.is_none()));
    assert_eq!(summary(&plain), vec![(3, EventType::Put, "a".into()), (4, EventType::Delete, "a".into())]);
    // Filters.
    let no_put = s.events(1, b"a", b"b", EventFilter { no_put: true, no_delete: false }, false, 0).unwrap();
    assert_eq!(summary(&no_put), vec![(4, EventType::Delete, "a".into())]);
    let no_del = s.events(1, b"a", b"\0", EventFilter { no_put: false, no_delete: true }, false, 0).unwrap();
    assert_eq!(no_del.events.len(), 4);
    // Prefix watch.
    let z = s.events(1, b"z", &prefix_end(b"z"), ALL, false, 0).unwrap();
    assert_eq!(summary(&z), vec![(5, EventType::Put, "zz".into())]);
    // Start 0 = the next revision: nothing yet.
    let now = s.events(0, b"\0", b"\0", ALL, false, 0).unwrap();
    assert_eq!((now.events.len(), now.next_revision), (0, 6));
    let future = s.events(100, b"\0", b"\0", ALL, false, 0).unwrap();
    assert_eq!((future.events.len(), future.next_revision), (0, 6));
}

#[test]
fn live_events_equal_historical_ones() {
    let mut s = Store::default();
    s.lease_grant(1, 10).unwrap();
    let mut live = Vec::new();
    live.extend(s.put(&PutRequest::new("a", "1").with_lease(1)).unwrap().events);
    live.extend(s.put(&PutRequest::new("a", "2")).unwrap().events);
    live.extend(s.txn(&txn(vec![], vec![op_put("b", "x"), op_del("a")], vec![])).unwrap().events);
    live.extend(s.put(&PutRequest::new("b", "y").with_lease(1)).unwrap().events);
    live.extend(s.lease_revoke(1).unwrap().events);
    let history = s.events(1, b"\0", b"\0", ALL, true, 0).unwrap();
    assert_eq!(history.events, live);
}

#[test]
fn limits_never_split_a_revision_and_batches_resume() {
    let mut s = Store::default();
    put(&mut s, "a", "1"); // 2
    s.txn(&txn(vec![], vec![op_put("b", "1"), op_put("c", "1"), op_put("d", "1")], vec![])).unwrap(); // 3
    put(&mut s, "e", "1"); // 4
    put(&mut s, "f", "1"); // 5
    let b1 = s.events(1, b"\0", b"\0", ALL, false, 2).unwrap();
    assert_eq!(b1.events.len(), 4, "the limit falls inside revision 3: all of it comes");
    assert_eq!(b1.next_revision, 4);
    let b2 = s.events(b1.next_revision, b"\0", b"\0", ALL, false, 1).unwrap();
    assert_eq!((summary(&b2), b2.next_revision), (vec![(4, EventType::Put, "e".into())], 5));
    let b3 = s.events(b2.next_revision, b"\0", b"\0", ALL, false, 1).unwrap();
    assert_eq!((b3.events.len(), b3.next_revision), (1, 6));
    let b4 = s.events(b3.next_revision, b"\0", b"\0", ALL, false, 1).unwrap();
    assert_eq!((b4.events.len(), b4.next_revision), (0, 6));
    // Single-key watches page the same way.
    put(&mut s, "a", "2"); // 6
    put(&mut s, "a", "3"); // 7
    let k1 = s.events(1, b"a", b"", ALL, false, 2).unwrap();
    assert_eq!((k1.events.len(), k1.next_revision), (2, 7));
    let k2 = s.events(k1.next_revision, b"a", b"", ALL, false, 2).unwrap();
    assert_eq!((k2.events.len(), k2.next_revision), (1, 8));
}

#[test]
fn watches_and_compaction() {
    let mut s = Store::default();
    put(&mut s, "a", "1"); // 2
    put(&mut s, "b", "1"); // 3
    s.txn(&txn(vec![], vec![op_put("a", "2"), op_del("b")], vec![])).unwrap(); // 4
    put(&mut s, "a", "3"); // 5
    s.compact(4).unwrap();
    assert_eq!(s.events(3, b"\0", b"\0", ALL, true, 0).unwrap_err(), Error::Compacted { compact_revision: 4 });
    assert_eq!(s.events(1, b"a", b"", ALL, true, 0).unwrap_err(), Error::Compacted { compact_revision: 4 });
    // From the compaction revision: the put at 4 survives, the delete at 4 does not (as in etcd),
    // and its prev_kv (at 3, compacted) is omitted.
    let from = s.events(4, b"\0", b"\0", ALL, true, 0).unwrap();
    assert_eq!(summary(&from), vec![(4, EventType::Put, "a".into()), (5, EventType::Put, "a".into())]);
    assert_eq!(from.events[0].prev_kv, None);
    assert_eq!(from.events[1].prev_kv, Some(kv("a", "2", 2, 4, 2, 0)));
    let single = s.events(4, b"a", b"", ALL, true, 0).unwrap();
    assert_eq!(single.events, from.events);
}
