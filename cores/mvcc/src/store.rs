//! The store: per-key histories, the revision-ordered change log, leases; reads and compaction.
//!
//! Layout. `keys` maps each key to its history: every retained change in (main, sub) order, a
//! put carrying the key-value as written, a delete a tombstone. Reading a key at revision `r` is a
//! binary search for the last change with `main <= r` (O(log n)). `log` maps every retained change
//! at or above the compaction revision to its key, in revision order, for watches. Leases keep the
//! set of keys they are attached to. `log`, the lease key sets and `size_bytes` are derived from
//! the histories; a snapshot carries only the histories (see `snapshot.rs`).

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Bound;

use serde::{Deserialize, Serialize};

use crate::error::Error;
use crate::types::{
    CompactionResponse, HashKvResponse, KeyValue, RangeRequest, RangeResponse, Revision, SortOrder, SortTarget,
};

/// Estimated bytes per retained change, beyond its key and value.
pub(crate) const CHANGE_OVERHEAD_BYTES: u64 = 48;
/// Estimated bytes per lease.
pub(crate) const LEASE_OVERHEAD_BYTES: u64 = 32;

/// Settings that are part of the replicated state: every replica must apply the same ones, so
/// they travel in snapshots.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(default)]
pub struct Config {
    /// Etcd's `--max-txn-ops`: the most compares, and the most operations per branch, in a
    /// transaction (nested transactions get what their parent leaves). Default 128.
    pub max_txn_ops: u32,
    /// Granted TTLs are raised to this many seconds. Default 2: etcd's minimum with its default
    /// timing, `ceil(1.5 × election timeout)` = `ceil(1.5 × 1 s)`.
    pub min_lease_ttl_secs: i64,
}

impl Default for Config {
    fn default() -> Self {
        Config { max_txn_ops: 128, min_lease_ttl_secs: 2 }
    }
}

/// A put's data as stored; the key and `mod_revision` come from where it is stored.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub(crate) struct Live {
    #[serde(with = "crate::bytes")]
    pub(crate) value: Vec<u8>,
    pub(crate) create_revision: i64,
    pub(crate) version: i64,
    pub(crate) lease: i64,
}

/// One retained change of a key: a put (`Some`) or a delete (`None`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub(crate) struct Change {
    pub(crate) rev: Revision,
    pub(crate) live: Option<Live>,
}

impl Change {
    pub(crate) fn size_bytes(&self, key: &[u8]) -> u64 {
        let value = self.live.as_ref().map_or(0, |l| l.value.len());
        (key.len() as u64).saturating_add(value as u64).saturating_add(CHANGE_OVERHEAD_BYTES)
    }

    pub(crate) fn to_kv(&self, key: &[u8]) -> Option<KeyValue> {
        self.live.as_ref().map(|l| KeyValue {
            key: key.to_vec(),
            create_revision: l.create_revision,
            mod_revision: self.rev.main,
            version: l.version,
            value: l.value.clone(),
            lease: l.lease,
        })
    }
}

/// The change in effect at revision `rev`: the last one with `main <= rev`.
pub(crate) fn change_at(history: &[Change], rev: i64) -> Option<&Change> {
    let n = history.partition_point(|c| c.rev.main <= rev);
    n.checked_sub(1).and_then(|i| history.get(i))
}

/// The key-value in effect at `rev`, if the key existed then.
pub(crate) fn kv_at(key: &[u8], history: &[Change], rev: i64) -> Option<KeyValue> {
    change_at(history, rev).and_then(|c| c.to_kv(key))
}

/// A granted lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Lease {
    pub(crate) ttl: i64,
    pub(crate) keys: BTreeSet<Vec<u8>>,
}

/// A key range with etcd's conventions.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Span<'a> {
    /// `range_end` empty: one key.
    Key(&'a [u8]),
    /// `range_end == "\0"`: every key `>= key`.
    From(&'a [u8]),
    /// `[key, range_end)` (empty when `range_end <= key`).
    Range(&'a [u8], &'a [u8]),
}

impl<'a> Span<'a> {
    pub(crate) fn new(key: &'a [u8], range_end: &'a [u8]) -> Self {
        match range_end {
            [] => Span::Key(key),
            [0] => Span::From(key),
            end => Span::Range(key, end),
        }
    }

    pub(crate) fn contains(&self, k: &[u8]) -> bool {
        match *self {
            Span::Key(key) => k == key,
            Span::From(key) => k >= key,
            Span::Range(key, end) => key <= k && k < end,
        }
    }

    /// The entries of `map` in the span, in key order. Never panics: an inverted range is empty.
    pub(crate) fn iter<V>(self, map: &'a BTreeMap<Vec<u8>, V>) -> std::collections::btree_map::Range<'a, Vec<u8>, V> {
        let bounds: (Bound<&[u8]>, Bound<&[u8]>) = match self {
            Span::Key(key) => (Bound::Included(key), Bound::Included(key)),
            Span::From(key) => (Bound::Included(key), Bound::Unbounded),
            Span::Range(key, end) if end > key => (Bound::Included(key), Bound::Excluded(end)),
            Span::Range(key, _) => (Bound::Included(key), Bound::Excluded(key)),
        };
        map.range::<[u8], _>(bounds)
    }
}

/// The MVCC key-value store of the etcd v3 API. See the crate documentation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Store {
    pub(crate) config: Config,
    /// The current store revision (1 when empty).
    pub(crate) revision: i64,
    /// The compaction revision; -1 when never compacted (etcd's initial `compactMainRev`).
    pub(crate) compact_revision: i64,
    /// The next id tried when a grant asks the store to pick.
    pub(crate) next_lease_id: i64,
    pub(crate) keys: BTreeMap<Vec<u8>, Vec<Change>>,
    pub(crate) log: BTreeMap<Revision, Vec<u8>>,
    pub(crate) leases: BTreeMap<i64, Lease>,
    pub(crate) size_bytes: u64,
    /// True only inside [`Store::quietly`]: writes build no events.
    pub(crate) quiet: bool,
}

impl Default for Store {
    fn default() -> Self {
        Store::new(Config::default())
    }
}

impl Store {
    /// Run `f` with writes that build no events (their `Outcome::events` are empty): for a
    /// caller that serves watches from [`Store::events`] (the change log) and would drop them.
    /// Everything else — responses, the store, the change log — is exactly as without it
    /// (property-tested); outside `f` writes build events as always.
    pub fn quietly<R>(&mut self, f: impl FnOnce(&mut Store) -> R) -> R {
        struct Loud<'a>(&'a mut Store);
        impl Drop for Loud<'_> {
            fn drop(&mut self) {
                self.0.quiet = false;
            }
        }
        self.quiet = true;
        let guard = Loud(self);
        f(guard.0)
    }

    /// An empty store at revision 1.
    pub fn new(config: Config) -> Self {
        Store {
            config,
            revision: 1,
            compact_revision: -1,
            next_lease_id: 1,
            keys: BTreeMap::new(),
            log: BTreeMap::new(),
            leases: BTreeMap::new(),
            quiet: false,
            size_bytes: 0,
        }
    }

    /// The settings.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The current store revision (1 for an empty store; +1 per write transaction that changed
    /// something).
    pub fn revision(&self) -> i64 {
        self.revision
    }

    /// The compaction revision: reads below it fail. -1 when never compacted (as etcd's HashKV
    /// reports).
    pub fn compact_revision(&self) -> i64 {
        self.compact_revision
    }

    /// An estimate of the state's size in bytes (what a snapshot costs), kept up to date on every
    /// change: keys and values of every retained change plus fixed overheads.
    pub fn size_estimate(&self) -> u64 {
        self.size_bytes
    }

    /// How many keys exist now.
    pub fn key_count(&self) -> usize {
        self.keys.values().filter(|h| h.last().is_some_and(|c| c.live.is_some())).count()
    }

    /// The current key-value of `key`, if it exists.
    pub fn get(&self, key: &[u8]) -> Option<KeyValue> {
        self.keys.get(key).and_then(|h| h.last()).and_then(|c| c.to_kv(key))
    }

    /// Etcd's Range.
    ///
    /// # Errors
    /// [`Error::EmptyKey`]; [`Error::FutureRev`] above the current revision;
    /// [`Error::Compacted`] below the compaction revision.
    pub fn range(&self, req: &RangeRequest) -> Result<RangeResponse, Error> {
        if req.key.is_empty() {
            return Err(Error::EmptyKey);
        }
        self.range_at(req, self.revision)
    }

    /// Range with `cur` as the current revision (the in-progress one inside a transaction that
    /// already wrote: its changes are in the histories).
    pub(crate) fn range_at(&self, req: &RangeRequest, cur: i64) -> Result<RangeResponse, Error> {
        let mut rev = req.revision;
        if rev > cur {
            return Err(Error::FutureRev);
        }
        if rev <= 0 {
            rev = cur;
        }
        if rev < self.compact_revision {
            return Err(self.compacted());
        }
        let span = Span::new(&req.key, &req.range_end);
        let filtered = req.min_mod_revision != 0
            || req.max_mod_revision != 0
            || req.min_create_revision != 0
            || req.max_create_revision != 0;
        // Like etcd: without a requested sort order or filters fetch one past the limit (for
        // `more`) — even when a non-key target will sort them; otherwise fetch everything. Then
        // filter, sort and cut.
        let fetch_max = match usize::try_from(req.limit) {
            Ok(limit) if limit > 0 && req.sort_order == SortOrder::None && !filtered => limit.saturating_add(1),
            _ => usize::MAX,
        };
        let mut count: i64 = 0;
        let mut kvs = Vec::new();
        for (key, history) in span.iter(&self.keys) {
            let Some(change) = change_at(history, rev) else { continue };
            if change.live.is_none() {
                continue;
            }
            count = count.saturating_add(1);
            if !req.count_only && kvs.len() < fetch_max {
                kvs.extend(change.to_kv(key));
            }
        }
        if req.max_mod_revision != 0 {
            kvs.retain(|kv| kv.mod_revision <= req.max_mod_revision);
        }
        if req.min_mod_revision != 0 {
            kvs.retain(|kv| kv.mod_revision >= req.min_mod_revision);
        }
        if req.max_create_revision != 0 {
            kvs.retain(|kv| kv.create_revision <= req.max_create_revision);
        }
        if req.min_create_revision != 0 {
            kvs.retain(|kv| kv.create_revision >= req.min_create_revision);
        }
        sort_kvs(&mut kvs, req.sort_order, req.sort_target);
        let mut more = false;
        if let Ok(limit) = usize::try_from(req.limit)
            && limit > 0
            && kvs.len() > limit
        {
            kvs.truncate(limit);
            more = true;
        }
        if req.keys_only {
            for kv in &mut kvs {
                kv.value = Vec::new();
            }
        }
        Ok(RangeResponse { revision: cur, kvs, more, count })
    }

    pub(crate) fn compacted(&self) -> Error {
        Error::Compacted { compact_revision: self.compact_revision }
    }

    /// Etcd's Compact: drops history below `revision`, keeping for each key the change in effect
    /// at `revision` if it is a put (a key deleted at or below `revision` loses its whole history).
    /// Reads at `revision` and above keep working; reads and watches below it fail with
    /// [`Error::Compacted`]. Does not change the store revision.
    ///
    /// # Errors
    /// [`Error::Compacted`] if `revision` is at or below the compaction revision;
    /// [`Error::FutureRev`] if it is above the current revision.
    pub fn compact(&mut self, revision: i64) -> Result<CompactionResponse, Error> {
        if revision <= self.compact_revision {
            return Err(self.compacted());
        }
        if revision > self.revision {
            return Err(Error::FutureRev);
        }
        // Only keys changed at or after the previous compaction revision can have something to
        // drop: every older key already holds a single put below it.
        let from = Revision { main: self.compact_revision, sub: 0 };
        let to = Revision { main: revision.saturating_add(1), sub: 0 };
        let touched: BTreeSet<Vec<u8>> = self.log.range(from..to).map(|(_, k)| k.clone()).collect();
        for key in touched {
            self.compact_key(&key, revision);
        }
        self.log = self.log.split_off(&Revision { main: revision, sub: 0 });
        self.compact_revision = revision;
        Ok(CompactionResponse { revision: self.revision })
    }

    fn compact_key(&mut self, key: &[u8], revision: i64) {
        let Some(history) = self.keys.get_mut(key) else { return };
        let n = history.partition_point(|c| c.rev.main <= revision);
        let Some(last) = n.checked_sub(1) else { return };
        let keep_from = match history.get(last) {
            Some(c) if c.live.is_some() => last,
            _ => n,
        };
        for change in history.drain(..keep_from) {
            self.log.remove(&change.rev);
            self.size_bytes = self.size_bytes.saturating_sub(change.size_bytes(key));
        }
        if history.is_empty() {
            self.keys.remove(key);
        }
    }

    /// A hash of every retained change up to `revision` (0: the current one), for comparing
    /// replicas at the same revision and compaction revision (etcd's HashKV, with Basalt's hash:
    /// FNV-1a 64 over a fixed encoding, stable across builds).
    ///
    /// # Errors
    /// [`Error::Compacted`] below the compaction revision, [`Error::FutureRev`] above the current.
    pub fn hash_kv(&self, revision: i64) -> Result<HashKvResponse, Error> {
        let rev = if revision <= 0 { self.revision } else { revision };
        if rev < self.compact_revision {
            return Err(self.compacted());
        }
        if rev > self.revision {
            return Err(Error::FutureRev);
        }
        let mut h = Fnv::new();
        for (key, history) in &self.keys {
            for change in history.iter().take_while(|c| c.rev.main <= rev) {
                h.bytes(key);
                h.i64(change.rev.main);
                h.i64(change.rev.sub);
                match &change.live {
                    None => h.u8(0),
                    Some(l) => {
                        h.u8(1);
                        h.bytes(&l.value);
                        h.i64(l.create_revision);
                        h.i64(l.version);
                        h.i64(l.lease);
                    }
                }
            }
        }
        Ok(HashKvResponse {
            revision: self.revision,
            hash: h.0,
            compact_revision: self.compact_revision,
            hash_revision: rev,
        })
    }

    /// Attaches `key` to lease `id` (ignored for 0 or an unknown lease).
    pub(crate) fn attach(&mut self, id: i64, key: &[u8]) {
        if let Some(lease) = self.leases.get_mut(&id) {
            lease.keys.insert(key.to_vec());
        }
    }

    /// Detaches `key` from lease `id` (ignored for 0 or an unknown lease).
    pub(crate) fn detach(&mut self, id: i64, key: &[u8]) {
        if let Some(lease) = self.leases.get_mut(&id) {
            lease.keys.remove(key);
        }
    }
}

/// Sorts as etcd does: a non-key target without an order sorts ascending; key-ascending is the
/// natural order. Ties keep key order in both directions (etcd's sort is unstable in general but
/// behaves so on small inputs; a stable rule is the one that can be replicated).
fn sort_kvs(kvs: &mut [KeyValue], order: SortOrder, target: SortTarget) {
    let order = match (target, order) {
        (SortTarget::Key, SortOrder::Ascend) => SortOrder::None,
        (SortTarget::Key, o) => o,
        (_, SortOrder::None) => SortOrder::Ascend,
        (_, o) => o,
    };
    let cmp = |a: &KeyValue, b: &KeyValue| match target {
        SortTarget::Key => a.key.cmp(&b.key),
        SortTarget::Version => a.version.cmp(&b.version),
        SortTarget::Create => a.create_revision.cmp(&b.create_revision),
        SortTarget::Mod => a.mod_revision.cmp(&b.mod_revision),
        SortTarget::Value => a.value.cmp(&b.value),
    };
    match order {
        SortOrder::None => {}
        SortOrder::Ascend => kvs.sort_by(cmp),
        SortOrder::Descend => kvs.sort_by(|a, b| cmp(b, a)),
    }
}

/// FNV-1a, 64 bits, with length-prefixed byte strings so concatenations cannot collide.
struct Fnv(u64);

impl Fnv {
    fn new() -> Self {
        Fnv(0xcbf2_9ce4_8422_2325)
    }

    fn u8(&mut self, b: u8) {
        self.0 ^= u64::from(b);
        self.0 = self.0.wrapping_mul(0x0000_0100_0000_01b3);
    }

    fn raw(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.u8(b);
        }
    }

    fn i64(&mut self, v: i64) {
        self.raw(&v.to_le_bytes());
    }

    fn bytes(&mut self, bytes: &[u8]) {
        self.raw(&(bytes.len() as u64).to_le_bytes());
        self.raw(bytes);
    }
}
