//! The pure core of Basalt's etcd-compatible coordination service (S05): the MVCC key-value
//! model of the etcd v3 API — no IO, no clock, no threads, no randomness. The same calls in the
//! same order give the same state and the same answers on every replica, so a [`Store`] can run
//! as a replicated state machine; the whole state is `Serialize + Deserialize` (snapshots).
//!
//! - [`Store::range`], [`Store::put`], [`Store::delete_range`], [`Store::txn`],
//!   [`Store::compact`] — etcd's KV service. Writes return an [`Outcome`]: the response and the
//!   [`Event`]s produced, for the driver to fan out to live watchers.
//! - [`Store::events`] — history for watchers that start in the past or fell behind.
//! - [`Store::lease_grant`], [`Store::lease_revoke`], [`Store::lease_time_to_live`],
//!   [`Store::leases`] — leases, without time.
//! - [`Store::hash_kv`] — a hash for divergence checks; [`Store::size_estimate`] for snapshots.
//! - [`Error`] — etcd's messages ([`Error::etcd_message`]) and gRPC codes ([`Error::grpc_code`]).
//! - [`prefix_end`] — etcd's `GetPrefixRangeEnd`.
//!
//! Keys and values are bytes, ordered bytewise. Key ranges follow etcd: an empty `range_end` is
//! the single key, `range_end == "\0"` is every key `>= key` (`key == "\0"` too: everything), any
//! other `range_end` is `[key, range_end)`, empty when `range_end <= key`.
//!
//! # Decisions
//!
//! - **Revisions.** The store starts at revision 1. A write transaction (a put, a delete that
//!   deletes something, a txn that changes something, a revoke of a lease with keys) takes the
//!   next revision; its changes share it with sub-revisions 0, 1, … in execution order. Compaction
//!   starts at -1 (etcd's `compactMainRev`), so `compact(0)` and `compact(1)` are accepted once.
//! - **Per key.** `create_revision`, `mod_revision`, `version` (1 on create, +1 per put; a delete
//!   ends the key's incarnation, so the next put has version 1 and a new `create_revision`) and
//!   `lease`.
//! - **Reads in a transaction see its earlier writes** (the in-progress revision is "current"
//!   for them), as in etcd 3.4–3.6. (Etcd's main branch defers index updates to the end of the
//!   transaction, which changes a range after a put in one txn; not followed.)
//! - **Compares** are all evaluated against the state before the transaction, nested
//!   transactions' too (etcd's `compareToPath`). Over a range, every existing key must satisfy the
//!   compare. A missing key (or empty range) compares as zeros for version, create, mod and lease;
//!   a value compare on it is always false, `NotEqual` included.
//! - **Validation order is etcd's**: request checks over both branches (too many ops, empty keys,
//!   `ignore_value` with a value, `ignore_lease` with a lease), then the put/delete overlap check
//!   per branch, then compares, then checks of the operations that will run (range revisions:
//!   future / compacted; puts: `ignore_*` on a missing key, unknown lease). A standalone put
//!   checks the lease before the key, as etcd does.
//! - **Duplicate keys** follow etcd's `checkIntervals` to the letter, including its gaps: a
//!   delete's `range_end` is taken literally there, so a delete with `range_end == "\0"` never
//!   conflicts with a put in the same branch (the delete then the put both apply, at one
//!   revision), and a nested transaction's put is not checked against a *later* sibling's delete.
//!   One such combination makes etcd crash the member (`ignore_value` on a key the same txn
//!   deleted through `"\0"`); the store refuses it with [`Error::KeyNotFound`] and applies
//!   nothing.
//! - **Range.** `count` is the number of keys in the range at the read revision, before the
//!   min/max filters and the limit; `more` is whether the limit cut the (filtered) results. A
//!   non-key `sort_target` with no order sorts ascending — but, as in etcd, with a limit and no
//!   filters only the first `limit + 1` keys in key order are fetched and sorted (etcd decides
//!   what to fetch from the request's own `sort_order`). Ties keep key order in both directions
//!   (etcd's sort is not stable; a stable rule is the one that can be replicated). Negative
//!   `limit` means none; `revision <= 0` means current. Inside a transaction a range `revision`
//!   below -1 is refused as compacted before any compaction (etcd compares it with
//!   `compactMainRev = -1`).
//! - **Headers.** Every response carries the store revision it was served at; a nested txn's
//!   response carries 0 (etcd never fills it).
//! - **Compaction** at `c` keeps, per key, the change in effect at `c` if it is a put, and drops
//!   everything older — including a tombstone at exactly `c` and the key's whole history before
//!   it (etcd's `keyIndex.compact`). Reads at `c` work, below fail. A watch may start at `c` and
//!   then misses deletes at `c`.
//! - **Events.** A delete event carries only the key and its revision. `prev_kv` is the key as of
//!   the previous revision, omitted for creates and when that revision is compacted (etcd's watch
//!   server rule). Live events from writes always carry it; the driver strips it per watcher.
//! - **Leases** have no time here: a grant stores the TTL (raised to
//!   [`Config::min_lease_ttl_secs`], default 2, as etcd with its default timing; above
//!   [`MAX_LEASE_TTL_SECS`] refused), `id == 0` picks the smallest free id from a counter
//!   (deterministic). Expiry, keep-alives and the remaining TTL belong to the driver, which
//!   proposes a revoke when a lease runs out. A revoke deletes the attached keys in key order at
//!   one revision.
//! - **Configuration** ([`Config`]) is part of the replicated state and travels in snapshots:
//!   replicas must never disagree on `max_txn_ops`.
//! - **Hash.** [`Store::hash_kv`] is FNV-1a 64 over every retained change up to a revision; not
//!   etcd's CRC32 (the stored bytes differ anyway), but stable across builds (pinned in tests).
//!
//! No input panics: inverted ranges, extreme revisions and limits, deep or huge transactions
//! (their depth is bounded by `max_txn_ops` before any recursion that could be deep), and
//! deserialized snapshots, which are validated.

mod bytes;
mod error;
mod lease;
mod snapshot;
mod store;
mod txn;
mod types;
mod watch;
mod write;

pub use error::{Error, GrpcCode};
pub use lease::MAX_LEASE_TTL_SECS;
pub use snapshot::SnapshotError;
pub use store::{Config, Store};
pub use txn::{is_read_only, is_serializable};
pub use types::{
    CompactionResponse, Compare, CompareResult, CompareTarget, DeleteRangeRequest, DeleteRangeResponse, Event,
    EventBatch, EventFilter, EventType, HashKvResponse, KeyValue, LeaseGrantResponse, LeaseRevokeResponse,
    LeaseTimeToLiveResponse, Outcome, PutRequest, PutResponse, RangeRequest, RangeResponse, RequestOp, ResponseOp,
    Revision, SortOrder, SortTarget, TxnRequest, TxnResponse,
};

/// Etcd's `GetPrefixRangeEnd`: the `range_end` that selects every key starting with `prefix` —
/// the prefix with its last byte below 0xff incremented and what follows dropped. When there is
/// no such byte (empty prefix, or all 0xff) it is `"\0"`: every key `>= prefix`.
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    match prefix.iter().rposition(|&b| b < 0xff) {
        Some(i) => {
            let mut end = prefix.get(..=i).unwrap_or_default().to_vec();
            if let Some(last) = end.last_mut() {
                *last = last.saturating_add(1);
            }
            end
        }
        None => vec![0],
    }
}

/// `(key, range_end)` for a prefix read, as etcd's client `WithPrefix`: an empty prefix becomes
/// `("\0", "\0")`, everything.
pub(crate) fn prefix_range(prefix: &[u8]) -> (Vec<u8>, Vec<u8>) {
    if prefix.is_empty() { (vec![0], vec![0]) } else { (prefix.to_vec(), prefix_end(prefix)) }
}
