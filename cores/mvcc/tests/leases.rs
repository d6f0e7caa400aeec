//! Leases: grants (ids, TTL bounds), attachment as keys move, revocation in one revision,
//! lookups.

mod common;

use basalt_mvcc::*;
use common::*;

#[test]
fn grants_pick_ids_and_clamp_ttls() {
    let mut s = Store::default();
    assert_eq!(s.lease_grant(0, 30).unwrap(), LeaseGrantResponse { revision: 1, id: 1, ttl: 30 });
    assert_eq!(s.lease_grant(3, 1).unwrap().ttl, 2, "raised to the minimum");
    assert_eq!(s.lease_grant(0, 0).unwrap(), LeaseGrantResponse { revision: 1, id: 2, ttl: 2 });
    assert_eq!(s.lease_grant(0, -5).unwrap().id, 4, "3 is taken: skipped");
    assert_eq!(s.lease_grant(3, 10).unwrap_err(), Error::LeaseExists);
    assert_eq!(s.lease_grant(99, MAX_LEASE_TTL_SECS + 1).unwrap_err(), Error::LeaseTtlTooLarge);
    assert_eq!(s.lease_grant(3, i64::MAX).unwrap_err(), Error::LeaseTtlTooLarge, "TTL is checked first");
    assert_eq!(s.lease_grant(99, MAX_LEASE_TTL_SECS).unwrap().ttl, MAX_LEASE_TTL_SECS);
    assert_eq!(s.lease_grant(-7, 10).unwrap().id, -7, "any non-zero id is accepted");
    assert_eq!(s.leases(), vec![-7, 1, 2, 3, 4, 99]);
    assert_eq!(s.revision(), 1, "grants are not writes");
    let mut custom = Store::new(Config { min_lease_ttl_secs: 5, ..Config::default() });
    assert_eq!(custom.lease_grant(0, 1).unwrap().ttl, 5);
    // A revoked id can be granted again.
    s.lease_revoke(3).unwrap();
    assert!(!s.lease_exists(3));
    assert!(s.lease_grant(3, 10).is_ok());
}

#[test]
fn keys_move_between_leases_and_detach_on_delete() {
    let mut s = Store::default();
    s.lease_grant(1, 10).unwrap();
    s.lease_grant(2, 10).unwrap();
    let keys = |s: &Store, id| s.lease_time_to_live(id, true).unwrap().keys;
    put_lease(&mut s, "a", "1", 1);
    put_lease(&mut s, "b", "1", 1);
    assert_eq!(keys(&s, 1), vec![b("a"), b("b")]);
    put_lease(&mut s, "a", "2", 2);
    assert_eq!((keys(&s, 1), keys(&s, 2)), (vec![b("b")], vec![b("a")]));
    put(&mut s, "b", "2");
    assert!(keys(&s, 1).is_empty(), "a put without a lease detaches");
    del(&mut s, "a");
    assert!(keys(&s, 2).is_empty(), "a delete detaches");
    let ttl = s.lease_time_to_live(2, false).unwrap();
    assert_eq!(ttl, LeaseTimeToLiveResponse { revision: s.revision(), id: 2, granted_ttl: 10, keys: vec![] });
    assert_eq!(s.lease_time_to_live(77, true).unwrap_err(), Error::LeaseNotFound);
}

#[test]
fn revoke_deletes_attached_keys_at_one_revision_in_key_order() {
    let mut s = Store::default();
    s.lease_grant(5, 10).unwrap();
    for k in ["c", "a", "b"] {
        put_lease(&mut s, k, "v", 5);
    }
    put(&mut s, "free", "v");
    let out = s.lease_revoke(5).unwrap();
    assert_eq!(out.response.revision, 6);
    let revs: Vec<_> = out.events.iter().map(|e| (e.kind, e.kv.key.clone(), e.kv.mod_revision)).collect();
    assert_eq!(
        revs,
        vec![(EventType::Delete, b("a"), 6), (EventType::Delete, b("b"), 6), (EventType::Delete, b("c"), 6)]
    );
    assert!(out.events.iter().all(|e| e.prev_kv.as_ref().is_some_and(|p| p.lease == 5)));
    assert_eq!(all(&s), vec!["free"]);
    assert!(!s.lease_exists(5));
    assert_eq!(s.lease_revoke(5).unwrap_err(), Error::LeaseNotFound);
    // A lease without keys: no revision.
    s.lease_grant(6, 10).unwrap();
    let out = s.lease_revoke(6).unwrap();
    assert_eq!((out.response.revision, out.events.len()), (6, 0));
}
