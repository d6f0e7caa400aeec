//! The request, response and data types, shaped after etcd's `etcdserverpb` and `mvccpb` messages
//! so the gRPC layer is a field-by-field copy. Revisions, versions, lease ids, limits and TTLs are
//! `i64` because they are `int64` on etcd's wire; every value is accepted (negative ones behave as
//! etcd treats them, see each field).

use serde::{Deserialize, Serialize};

/// A point in the store's history: `main` is the store revision of the write transaction, `sub`
/// the index of the change within that transaction (0, 1, … in execution order).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Revision {
    /// The store revision of the transaction.
    pub main: i64,
    /// The change's position within the transaction.
    pub sub: i64,
}

/// One key as of some revision (etcd's `mvccpb.KeyValue`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct KeyValue {
    /// The key.
    #[serde(with = "crate::bytes")]
    pub key: Vec<u8>,
    /// The revision of the put that created the key (0 in a delete event).
    pub create_revision: i64,
    /// The revision of the last change to the key.
    pub mod_revision: i64,
    /// 1 on creation, +1 per put; a delete resets it (0 in a delete event).
    pub version: i64,
    /// The value (empty with `keys_only` and in a delete event).
    #[serde(with = "crate::bytes")]
    pub value: Vec<u8>,
    /// The attached lease id, 0 for none.
    pub lease: i64,
}

/// The kind of a watch event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum EventType {
    /// The key was put (created or updated).
    Put,
    /// The key was deleted.
    Delete,
}

/// One change, as a watcher sees it (etcd's `mvccpb.Event`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Event {
    /// Put or delete.
    pub kind: EventType,
    /// For a put, the key as written. For a delete, only `key` and `mod_revision` (the delete's
    /// revision) are set, as in etcd.
    pub kv: KeyValue,
    /// The key as of the revision before this event's, when it existed then and that revision is
    /// not compacted; never set for a create (`create_revision == mod_revision`), as in etcd.
    pub prev_kv: Option<KeyValue>,
}

impl Event {
    /// The revision the event happened at.
    pub fn revision(&self) -> i64 {
        self.kv.mod_revision
    }

    /// Whether this is the put that created the key (etcd's `IsCreateEvent`).
    pub fn is_create(&self) -> bool {
        self.kind == EventType::Put && self.kv.create_revision == self.kv.mod_revision
    }
}

/// The order of a range's results.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum SortOrder {
    /// Key order (unless `sort_target` is not `Key`: then ascending, as etcd).
    #[default]
    None,
    /// Ascending by `sort_target`.
    Ascend,
    /// Descending by `sort_target`.
    Descend,
}

/// The field a range's results are sorted by.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum SortTarget {
    /// The key.
    #[default]
    Key,
    /// `version`.
    Version,
    /// `create_revision`.
    Create,
    /// `mod_revision`.
    Mod,
    /// The value, bytewise.
    Value,
}

/// Etcd's `RangeRequest`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(default)]
pub struct RangeRequest {
    /// The first key (must not be empty).
    #[serde(with = "crate::bytes")]
    pub key: Vec<u8>,
    /// Empty: the single key `key`. `"\0"`: every key `>= key`. Otherwise `[key, range_end)`.
    #[serde(with = "crate::bytes")]
    pub range_end: Vec<u8>,
    /// At most this many results (`<= 0`: no limit); `more` tells whether some were cut.
    pub limit: i64,
    /// Read as of this revision (`<= 0`: the current one).
    pub revision: i64,
    /// The result order.
    pub sort_order: SortOrder,
    /// The sort field.
    pub sort_target: SortTarget,
    /// Serve from the local replica without a read barrier: the driver's concern, ignored here.
    pub serializable: bool,
    /// Leave values out.
    pub keys_only: bool,
    /// Return only `count`.
    pub count_only: bool,
    /// Keep keys with `mod_revision >= min_mod_revision` (0: no bound).
    pub min_mod_revision: i64,
    /// Keep keys with `mod_revision <= max_mod_revision` (0: no bound).
    pub max_mod_revision: i64,
    /// Keep keys with `create_revision >= min_create_revision` (0: no bound).
    pub min_create_revision: i64,
    /// Keep keys with `create_revision <= max_create_revision` (0: no bound).
    pub max_create_revision: i64,
}

impl RangeRequest {
    /// A read of the single key `key`.
    pub fn key(key: impl Into<Vec<u8>>) -> Self {
        RangeRequest { key: key.into(), ..RangeRequest::default() }
    }

    /// A read of `[key, range_end)` with etcd's conventions for `range_end`.
    pub fn range(key: impl Into<Vec<u8>>, range_end: impl Into<Vec<u8>>) -> Self {
        RangeRequest { key: key.into(), range_end: range_end.into(), ..RangeRequest::default() }
    }

    /// A read of every key starting with `prefix` (an empty prefix reads everything).
    pub fn prefix(prefix: &[u8]) -> Self {
        let (key, range_end) = crate::prefix_range(prefix);
        RangeRequest { key, range_end, ..RangeRequest::default() }
    }
}

/// Etcd's `RangeResponse`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct RangeResponse {
    /// The header revision: the store revision the read was served at (the in-progress one
    /// inside a transaction that already wrote), not the requested historical revision.
    pub revision: i64,
    /// The matching keys after filters, sort and limit (empty with `count_only`).
    pub kvs: Vec<KeyValue>,
    /// Whether `limit` cut some results.
    pub more: bool,
    /// How many keys are in the range at the read revision — before the min/max filters and the
    /// limit, as etcd counts.
    pub count: i64,
}

/// Etcd's `PutRequest`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(default)]
pub struct PutRequest {
    /// The key (must not be empty).
    #[serde(with = "crate::bytes")]
    pub key: Vec<u8>,
    /// The value (must be empty with `ignore_value`).
    #[serde(with = "crate::bytes")]
    pub value: Vec<u8>,
    /// The lease to attach (0: none; must be 0 with `ignore_lease`).
    pub lease: i64,
    /// Return the previous key-value.
    pub prev_kv: bool,
    /// Keep the current value (the key must exist).
    pub ignore_value: bool,
    /// Keep the current lease (the key must exist).
    pub ignore_lease: bool,
}

impl PutRequest {
    /// A plain put of `value` at `key`.
    pub fn new(key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) -> Self {
        PutRequest { key: key.into(), value: value.into(), ..PutRequest::default() }
    }

    /// The same put with a lease attached.
    pub fn with_lease(mut self, lease: i64) -> Self {
        self.lease = lease;
        self
    }
}

/// Etcd's `PutResponse`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct PutResponse {
    /// The revision of the write.
    pub revision: i64,
    /// The key before the put, when asked for and it existed.
    pub prev_kv: Option<KeyValue>,
}

/// Etcd's `DeleteRangeRequest`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(default)]
pub struct DeleteRangeRequest {
    /// The first key (must not be empty).
    #[serde(with = "crate::bytes")]
    pub key: Vec<u8>,
    /// As in [`RangeRequest::range_end`].
    #[serde(with = "crate::bytes")]
    pub range_end: Vec<u8>,
    /// Return the deleted key-values.
    pub prev_kv: bool,
}

impl DeleteRangeRequest {
    /// A delete of the single key `key`.
    pub fn key(key: impl Into<Vec<u8>>) -> Self {
        DeleteRangeRequest { key: key.into(), ..DeleteRangeRequest::default() }
    }

    /// A delete of `[key, range_end)` with etcd's conventions for `range_end`.
    pub fn range(key: impl Into<Vec<u8>>, range_end: impl Into<Vec<u8>>) -> Self {
        DeleteRangeRequest { key: key.into(), range_end: range_end.into(), prev_kv: false }
    }

    /// A delete of every key starting with `prefix`.
    pub fn prefix(prefix: &[u8]) -> Self {
        let (key, range_end) = crate::prefix_range(prefix);
        DeleteRangeRequest { key, range_end, prev_kv: false }
    }
}

/// Etcd's `DeleteRangeResponse`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct DeleteRangeResponse {
    /// The revision of the write, or the unchanged store revision if nothing was deleted (and,
    /// inside a transaction, nothing was written before).
    pub revision: i64,
    /// How many keys were deleted.
    pub deleted: i64,
    /// The deleted key-values in key order, when asked for.
    pub prev_kvs: Vec<KeyValue>,
}

/// The comparison of a [`Compare`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum CompareResult {
    /// The key's field equals the operand.
    Equal,
    /// The key's field is greater than the operand.
    Greater,
    /// The key's field is less than the operand.
    Less,
    /// The key's field differs from the operand.
    NotEqual,
}

/// What a [`Compare`] looks at, with its operand (etcd's `target` + `target_union`, which cannot
/// disagree here).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum CompareTarget {
    /// `version` (0 for a missing key).
    Version(i64),
    /// `create_revision` (0 for a missing key).
    Create(i64),
    /// `mod_revision` (0 for a missing key).
    Mod(i64),
    /// The value, bytewise. A compare on the value of a missing key is always false — even
    /// `NotEqual` — as in etcd.
    Value(#[serde(with = "crate::bytes")] Vec<u8>),
    /// The lease id (0 for a missing key or no lease).
    Lease(i64),
}

/// One condition of a transaction (etcd's `Compare`). With a `range_end`, every key in the
/// range must satisfy it (an empty range compares as one missing key).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Compare {
    /// The key (must not be empty).
    #[serde(with = "crate::bytes")]
    pub key: Vec<u8>,
    /// As in [`RangeRequest::range_end`].
    #[serde(with = "crate::bytes", default)]
    pub range_end: Vec<u8>,
    /// The comparison.
    pub result: CompareResult,
    /// The field and operand.
    pub target: CompareTarget,
}

impl Compare {
    /// A compare on the single key `key`.
    pub fn new(key: impl Into<Vec<u8>>, result: CompareResult, target: CompareTarget) -> Self {
        Compare { key: key.into(), range_end: Vec::new(), result, target }
    }
}

/// One operation of a transaction branch.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum RequestOp {
    /// A read.
    Range(RangeRequest),
    /// A put.
    Put(PutRequest),
    /// A delete.
    DeleteRange(DeleteRangeRequest),
    /// A nested transaction.
    Txn(TxnRequest),
}

/// The response to one [`RequestOp`].
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ResponseOp {
    /// To a read.
    Range(RangeResponse),
    /// To a put.
    Put(PutResponse),
    /// To a delete.
    DeleteRange(DeleteRangeResponse),
    /// To a nested transaction.
    Txn(TxnResponse),
}

/// Etcd's `TxnRequest`: if every compare holds, run `success`, else `failure`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(default)]
pub struct TxnRequest {
    /// The conditions, all evaluated against the state before the transaction — the nested
    /// transactions' ones too.
    pub compare: Vec<Compare>,
    /// The operations run when every compare holds, in order.
    pub success: Vec<RequestOp>,
    /// The operations run otherwise, in order.
    pub failure: Vec<RequestOp>,
}

impl TxnRequest {
    /// Whether every operation of both branches is a range (etcd's `IsTxnReadonly`; a nested
    /// transaction counts as a write). A read-only transaction never changes the store.
    pub fn is_read_only(&self) -> bool {
        self.success.iter().chain(&self.failure).all(|op| matches!(op, RequestOp::Range(_)))
    }
}

/// Etcd's `TxnResponse`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct TxnResponse {
    /// The store revision after the transaction. Nested transactions' responses carry 0: etcd
    /// leaves their header empty.
    pub revision: i64,
    /// Whether the compares held (and `success` ran).
    pub succeeded: bool,
    /// One response per operation of the branch that ran.
    pub responses: Vec<ResponseOp>,
}

/// Etcd's `CompactionResponse`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct CompactionResponse {
    /// The current store revision (compaction does not change it).
    pub revision: i64,
}

/// A write's response with the events it produced, in (revision, sub) order, for the driver to
/// fan out to watchers without scanning. `prev_kv` is filled on every event that has one; strip
/// it for watchers that did not ask.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outcome<T> {
    /// The response.
    pub response: T,
    /// The events, empty when nothing changed.
    pub events: Vec<Event>,
}

/// Which events a watcher drops (etcd's `WatchCreateRequest.filters`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct EventFilter {
    /// Drop put events.
    pub no_put: bool,
    /// Drop delete events.
    pub no_delete: bool,
}

impl EventFilter {
    /// Whether `event` passes the filter.
    pub fn accepts(&self, event: &Event) -> bool {
        match event.kind {
            EventType::Put => !self.no_put,
            EventType::Delete => !self.no_delete,
        }
    }
}

/// A batch of historical events from [`Store::events`](crate::Store::events).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventBatch {
    /// The events in (revision, sub) order; a revision's events are never split across batches.
    pub events: Vec<Event>,
    /// The revision to resume from: every matching event below it has been returned.
    pub next_revision: i64,
}

/// Etcd's `LeaseGrantResponse`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct LeaseGrantResponse {
    /// The current store revision (a grant does not change it).
    pub revision: i64,
    /// The lease id (chosen by the store when the request said 0).
    pub id: i64,
    /// The granted TTL in seconds, after raising it to the minimum.
    pub ttl: i64,
}

/// Etcd's `LeaseRevokeResponse`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct LeaseRevokeResponse {
    /// The store revision after deleting the lease's keys.
    pub revision: i64,
}

/// What the store knows of a lease (etcd's `LeaseTimeToLiveResponse` without the remaining TTL:
/// the store has no clock, so the driver, which tracks expiry, fills `TTL` in).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct LeaseTimeToLiveResponse {
    /// The current store revision.
    pub revision: i64,
    /// The lease id.
    pub id: i64,
    /// The TTL granted, in seconds.
    pub granted_ttl: i64,
    /// The attached keys in key order (empty unless asked for).
    pub keys: Vec<Vec<u8>>,
}

/// The result of [`Store::hash_kv`](crate::Store::hash_kv), for divergence checks between
/// replicas (etcd's `HashKVResponse`; the hash function is Basalt's, not etcd's CRC).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct HashKvResponse {
    /// The current store revision.
    pub revision: i64,
    /// The hash of every retained change up to `hash_revision`.
    pub hash: u64,
    /// The compaction revision (-1 when never compacted); replicas agree on `hash` only at the
    /// same compaction revision.
    pub compact_revision: i64,
    /// The revision the hash covers.
    pub hash_revision: i64,
}
