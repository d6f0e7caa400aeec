//! Snapshots (serde round trips through postcard and JSON, refusal of malformed ones) and the
//! divergence hash (pinned, recomputed independently, sensitive to every field).

mod common;

use basalt_mvcc::*;
use common::*;

fn busy_store() -> Store {
    let mut s = Store::new(Config { max_txn_ops: 64, min_lease_ttl_secs: 3 });
    s.lease_grant(0, 10).unwrap();
    s.lease_grant(42, 100).unwrap();
    put_lease(&mut s, "a", "1", 1);
    s.put(&PutRequest::new(b"\xff\x00bin".to_vec(), vec![0u8, 255, 7])).unwrap();
    put(&mut s, "b", "1");
    put(&mut s, "a", "2");
    del(&mut s, "b");
    put_lease(&mut s, "c", "x", 42);
    s.compact(4).unwrap();
    put(&mut s, "d", "y");
    s
}

#[test]
fn round_trips_through_postcard_and_json() {
    let s = busy_store();
    let bytes = postcard::to_allocvec(&s).unwrap();
    let back: Store = postcard::from_bytes(&bytes).unwrap();
    assert_eq!(back, s);
    let json = serde_json::to_string(&s).unwrap();
    let back: Store = serde_json::from_str(&json).unwrap();
    assert_eq!(back, s);
    assert_eq!(back.size_estimate(), s.size_estimate());
    assert_eq!(back.lease_time_to_live(42, true).unwrap().keys, vec![b("c")]);
    // The restored store keeps working identically.
    let mut x = s.clone();
    let mut y = back;
    for st in [&mut x, &mut y] {
        put(st, "e", "z");
        st.lease_revoke(1).unwrap();
        st.compact(st.revision()).unwrap();
    }
    assert_eq!(x, y);
}

#[test]
fn an_empty_store_round_trips() {
    let s = Store::default();
    let back: Store = serde_json::from_str(&serde_json::to_string(&s).unwrap()).unwrap();
    assert_eq!(back, s);
}

fn mutate(edit: impl Fn(&mut serde_json::Value)) -> Result<Store, serde_json::Error> {
    let mut v = serde_json::to_value(busy_store()).unwrap();
    edit(&mut v);
    serde_json::from_value(v)
}

type Edit = Box<dyn Fn(&mut serde_json::Value)>;

#[test]
fn malformed_snapshots_are_refused() {
    assert!(mutate(|_| {}).is_ok());
    let bad: Vec<(&str, Edit)> = vec![
        ("revision 0", Box::new(|v| v["revision"] = 0.into())),
        ("revision max", Box::new(|v| v["revision"] = i64::MAX.into())),
        ("compact above revision", Box::new(|v| v["compact_revision"] = 1000.into())),
        ("keys out of order", Box::new(|v| v["keys"].as_array_mut().unwrap().reverse())),
        ("missing lease", Box::new(|v| v["leases"] = serde_json::json!([]))),
        ("lease id 0", Box::new(|v| v["leases"][0]["id"] = 0.into())),
        ("change above revision", Box::new(|v| v["keys"][0]["history"][0]["rev"]["main"] = 999.into())),
        ("history reversed", Box::new(|v| v["keys"][0]["history"].as_array_mut().unwrap().reverse())),
        ("empty key", Box::new(|v| v["keys"][0]["key"] = serde_json::json!([]))),
        ("empty history", Box::new(|v| v["keys"][0]["history"] = serde_json::json!([]))),
        ("version 0", Box::new(|v| v["keys"][0]["history"][0]["live"]["version"] = 0.into())),
        ("uncompacted below the compaction revision", Box::new(|v| v["compact_revision"] = 6.into())),
    ];
    for (what, edit) in bad {
        assert!(mutate(edit).is_err(), "{what}");
    }
    assert!(postcard::from_bytes::<Store>(&[1, 2, 3]).is_err());
}

#[test]
fn hash_is_pinned_and_matches_the_documented_encoding() {
    let mut s = Store::default();
    put(&mut s, "k", "v");
    del(&mut s, "k");
    // FNV-1a 64 over, per change: key (u64 LE length + bytes), main, sub (i64 LE), then 0 for a
    // tombstone or 1, value (length-prefixed), create, version, lease.
    let mut data = Vec::new();
    let bytes = |d: &mut Vec<u8>, b: &[u8]| {
        d.extend((b.len() as u64).to_le_bytes());
        d.extend(b);
    };
    bytes(&mut data, b"k");
    data.extend(2i64.to_le_bytes());
    data.extend(0i64.to_le_bytes());
    data.push(1);
    bytes(&mut data, b"v");
    data.extend(2i64.to_le_bytes());
    data.extend(1i64.to_le_bytes());
    data.extend(0i64.to_le_bytes());
    bytes(&mut data, b"k");
    data.extend(3i64.to_le_bytes());
    data.extend(0i64.to_le_bytes());
    data.push(0);
    let fnv = data.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3));
    let h = s.hash_kv(0).unwrap();
    assert_eq!(h, HashKvResponse { revision: 3, hash: fnv, compact_revision: -1, hash_revision: 3 });
    // Pinned (computed with a few lines of Python over the same encoding): never changes.
    assert_eq!(h.hash, 0xce6b_915f_0674_b9fb);
    assert_eq!(Store::default().hash_kv(0).unwrap().hash, 0xcbf2_9ce4_8422_2325, "empty: the offset basis");
}

#[test]
fn hash_agrees_on_equal_histories_and_differs_otherwise() {
    let a = busy_store();
    let b = busy_store();
    assert_eq!(a.hash_kv(0).unwrap(), b.hash_kv(0).unwrap());
    let mut c = busy_store();
    put(&mut c, "d", "Y");
    assert_ne!(c.hash_kv(0).unwrap().hash, a.hash_kv(0).unwrap().hash);
    // Hashing an older revision ignores what came later.
    assert_eq!(c.hash_kv(a.revision()).unwrap().hash, a.hash_kv(0).unwrap().hash);
    assert_eq!(a.hash_kv(a.revision() + 1).unwrap_err(), Error::FutureRev);
    assert_eq!(a.hash_kv(3).unwrap_err(), Error::Compacted { compact_revision: 4 });
}
