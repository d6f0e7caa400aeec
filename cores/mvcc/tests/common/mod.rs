//! Helpers shared by the test files.
#![allow(dead_code)]

use basalt_mvcc::*;

pub fn b(s: &str) -> Vec<u8> {
    s.as_bytes().to_vec()
}

/// Puts `value` at `key`; panics on error (tests only). Returns the write's revision.
pub fn put(s: &mut Store, key: &str, value: &str) -> i64 {
    s.put(&PutRequest::new(key, value)).unwrap().response.revision
}

pub fn put_lease(s: &mut Store, key: &str, value: &str, lease: i64) -> i64 {
    s.put(&PutRequest::new(key, value).with_lease(lease)).unwrap().response.revision
}

pub fn del(s: &mut Store, key: &str) -> i64 {
    s.delete_range(&DeleteRangeRequest::key(key)).unwrap().response.deleted
}

pub fn get(s: &Store, key: &str) -> Option<KeyValue> {
    s.range(&RangeRequest::key(key)).unwrap().kvs.into_iter().next()
}

pub fn get_at(s: &Store, key: &str, rev: i64) -> Result<Option<KeyValue>, Error> {
    let req = RangeRequest { revision: rev, ..RangeRequest::key(key) };
    s.range(&req).map(|r| r.kvs.into_iter().next())
}

pub fn keys(r: &RangeResponse) -> Vec<String> {
    r.kvs.iter().map(|kv| String::from_utf8_lossy(&kv.key).into_owned()).collect()
}

pub fn all(s: &Store) -> Vec<String> {
    keys(&s.range(&RangeRequest::range(vec![0], vec![0])).unwrap())
}

pub fn kv(key: &str, value: &str, create: i64, modr: i64, version: i64, lease: i64) -> KeyValue {
    KeyValue { key: b(key), create_revision: create, mod_revision: modr, version, value: b(value), lease }
}

pub fn cmp(key: &str, result: CompareResult, target: CompareTarget) -> Compare {
    Compare::new(key, result, target)
}

pub fn op_put(key: &str, value: &str) -> RequestOp {
    RequestOp::Put(PutRequest::new(key, value))
}

pub fn op_del(key: &str) -> RequestOp {
    RequestOp::DeleteRange(DeleteRangeRequest::key(key))
}

pub fn op_del_range(key: &str, end: &[u8]) -> RequestOp {
    RequestOp::DeleteRange(DeleteRangeRequest::range(key, end))
}

pub fn op_get(key: &str) -> RequestOp {
    RequestOp::Range(RangeRequest::key(key))
}

pub fn txn(compare: Vec<Compare>, success: Vec<RequestOp>, failure: Vec<RequestOp>) -> TxnRequest {
    TxnRequest { compare, success, failure }
}
