//! Serde for [`Store`]: a snapshot holds the settings, the revisions, the lease ids and TTLs and
//! every key's retained history — nothing derived. Loading validates it and rebuilds the change
//! log, the lease key sets and the size estimate, so a loaded store equals the one saved
//! (property-tested), and a malformed snapshot is refused instead of breaking later.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::store::{Change, Config, LEASE_OVERHEAD_BYTES, Lease, Store};

#[derive(Serialize)]
#[serde(rename = "Store")]
struct SnapshotRef<'a> {
    config: &'a Config,
    revision: i64,
    compact_revision: i64,
    next_lease_id: i64,
    leases: LeasesRef<'a>,
    keys: KeysRef<'a>,
}

struct LeasesRef<'a>(&'a BTreeMap<i64, Lease>);

impl Serialize for LeasesRef<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.0.iter().map(|(&id, l)| LeaseEntry { id, ttl: l.ttl }))
    }
}

struct KeysRef<'a>(&'a BTreeMap<Vec<u8>, Vec<Change>>);

impl Serialize for KeysRef<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.0.iter().map(|(key, history)| KeyEntryRef { key, history }))
    }
}

#[derive(Serialize)]
struct KeyEntryRef<'a> {
    #[serde(with = "crate::bytes")]
    key: &'a [u8],
    history: &'a [Change],
}

#[derive(Serialize, Deserialize)]
struct LeaseEntry {
    id: i64,
    ttl: i64,
}

#[derive(Deserialize)]
#[serde(rename = "Store")]
struct Snapshot {
    config: Config,
    revision: i64,
    compact_revision: i64,
    next_lease_id: i64,
    leases: Vec<LeaseEntry>,
    keys: Vec<KeyEntry>,
}

#[derive(Deserialize)]
struct KeyEntry {
    #[serde(with = "crate::bytes")]
    key: Vec<u8>,
    history: Vec<Change>,
}

/// Why a snapshot was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid mvcc snapshot: {0}")]
pub struct SnapshotError(&'static str);

impl Serialize for Store {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        SnapshotRef {
            config: &self.config,
            revision: self.revision,
            compact_revision: self.compact_revision,
            next_lease_id: self.next_lease_id,
            leases: LeasesRef(&self.leases),
            keys: KeysRef(&self.keys),
        }
        .serialize(s)
    }
}

impl<'de> Deserialize<'de> for Store {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let snapshot = Snapshot::deserialize(d)?;
        Store::try_from(snapshot).map_err(serde::de::Error::custom)
    }
}

impl TryFrom<Snapshot> for Store {
    type Error = SnapshotError;

    fn try_from(s: Snapshot) -> Result<Self, SnapshotError> {
        let fail = |why| Err(SnapshotError(why));
        // The revision must leave room for one more write.
        if s.revision < 1 || s.revision == i64::MAX {
            return fail("revision out of range");
        }
        if s.compact_revision < -1 || s.compact_revision > s.revision {
            return fail("compact_revision out of range");
        }
        let mut store = Store::new(s.config);
        store.revision = s.revision;
        store.compact_revision = s.compact_revision;
        store.next_lease_id = s.next_lease_id;
        for LeaseEntry { id, ttl } in s.leases {
            if id == 0 || store.leases.insert(id, Lease { ttl, keys: BTreeSet::new() }).is_some() {
                return fail("lease id zero or repeated");
            }
            store.size_bytes = store.size_bytes.saturating_add(LEASE_OVERHEAD_BYTES);
        }
        for KeyEntry { key, history } in s.keys {
            if key.is_empty() || history.is_empty() {
                return fail("empty key or history");
            }
            if store.keys.last_key_value().is_some_and(|(last, _)| *last >= key) {
                return fail("keys not in strictly increasing order");
            }
            check_history(&history, s.revision, s.compact_revision)?;
            for change in &history {
                store.size_bytes = store.size_bytes.saturating_add(change.size_bytes(&key));
                if change.rev.main >= s.compact_revision {
                    store.log.insert(change.rev, key.clone());
                }
            }
            if let Some(live) = history.last().and_then(|c| c.live.as_ref())
                && live.lease != 0
            {
                match store.leases.get_mut(&live.lease) {
                    Some(lease) => {
                        lease.keys.insert(key.clone());
                    }
                    None => return fail("a key is attached to a lease that does not exist"),
                }
            }
            store.keys.insert(key, history);
        }
        Ok(store)
    }
}

/// One key's history: revisions strictly increasing within `[1, revision]`, sensible versions,
/// and at most one change at or below the compaction revision — a put.
fn check_history(history: &[Change], revision: i64, compact_revision: i64) -> Result<(), SnapshotError> {
    let fail = |why| Err(SnapshotError(why));
    if history.windows(2).any(|w| w.first().map(|c| c.rev) >= w.get(1).map(|c| c.rev)) {
        return fail("history not in strictly increasing revision order");
    }
    for change in history {
        if change.rev.main < 1 || change.rev.main > revision || change.rev.sub < 0 {
            return fail("change revision out of range");
        }
        if let Some(l) = &change.live
            && (l.version < 1 || l.create_revision < 1 || l.create_revision > change.rev.main)
        {
            return fail("put with an impossible version or create revision");
        }
    }
    if compact_revision >= 1 {
        let below = history.partition_point(|c| c.rev.main <= compact_revision);
        if below > 1 || history.first().is_some_and(|c| below == 1 && c.live.is_none()) {
            return fail("history not compacted at the compaction revision");
        }
    }
    Ok(())
}
