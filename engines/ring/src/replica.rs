//! This node's replica of the ring's data: every object it holds, durably, with a Merkle
//! tree per partition kept up to date on every write (for anti-entropy).
//!
//! Keys in the store are `partition (u16, big-endian) ++ key`, so a partition is one range.
//! A write is a read-modify-write of one object under a striped lock, and is acknowledged
//! only after the store's fsync policy is met. Objects are postcard-encoded; the entry hash
//! in the Merkle tree is a hash of the key and that encoding, so two replicas agree on a
//! bucket exactly when they hold the same objects.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

type FastMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

use basalt_ring::bin::{ByteBuf, Bytes};
use basalt_ring::dvv::{Dot, Object, VersionVector};
use basalt_ring::hash::{hash64, mix};
use basalt_ring::merkle::Merkle;
use basalt_runtime::storage::Namespace;
use basalt_runtime::storage::memlog::InlineKey;
use serde::{Deserialize, Serialize};

pub type Value = Vec<u8>;
pub type Obj = Object<Value>;

pub const MERKLE_DEPTH: u32 = 6;
/// Write locks: a pipeline's batch holds the stripes of all its keys at once, so there are
/// many (two batches of 16 random keys meet on one of 4,096 stripes 6% of the time, on one of
/// 64 nearly always).
const STRIPES: usize = 4096;
/// Cache shards (each key's shard is a function of its stripe).
const SHARDS: usize = 64;

/// A cached object: what the store holds for the key, decoded. While a writer has the object
/// checked out, `obj` is `None` (readers go to the store, which holds the old version until the
/// change is written) and the slot stays, so putting the new object back costs no allocation.
struct Slot {
    obj: Option<Arc<Obj>>,
    /// Its entry hash in the Merkle tree.
    hash: u64,
    /// Roughly what it costs in memory (its encoded size plus the key).
    bytes: usize,
}

/// One stripe's share of the object cache. Written only under the stripe's write lock, after
/// the store (write-through), so it never holds what the store does not.
#[derive(Default)]
struct Shard {
    map: FastMap<InlineKey, Slot>,
    bytes: usize,
}

impl Shard {
    fn get(&self, key: &[u8]) -> Option<&Arc<Obj>> {
        self.map.get(key)?.obj.as_ref()
    }

    /// Take the object out for a change, leaving the slot (empty) in place.
    fn take(&mut self, key: &[u8]) -> Option<(Arc<Obj>, u64)> {
        let s = self.map.get_mut(key)?;
        let obj = s.obj.take()?;
        Some((obj, s.hash))
    }

    fn remove(&mut self, key: &[u8]) {
        if let Some(s) = self.map.remove(key) {
            self.bytes -= s.bytes;
        }
    }

    fn put(&mut self, key: &[u8], slot: Slot, max_bytes: usize) {
        if slot.bytes > max_bytes {
            self.remove(key);
            return;
        }
        if let Some(cur) = self.map.get_mut(key) {
            if self.bytes - cur.bytes + slot.bytes <= max_bytes {
                self.bytes = self.bytes - cur.bytes + slot.bytes;
                *cur = slot;
                return;
            }
            self.remove(key);
        }
        // Evict whatever the hash map yields first (an arbitrary key) until the slot fits.
        while self.bytes + slot.bytes > max_bytes {
            let Some(k) = self.map.keys().next().cloned() else { break };
            self.remove(k.as_slice());
        }
        self.bytes += slot.bytes;
        self.map.insert(InlineKey::new(key), slot);
    }
}

/// The Merkle trees of every partition, kept lazily: a write changes only its leaf (a wrapping
/// add and subtract) and marks the partition; a tree is rebuilt from its leaves when anti-entropy
/// (or a stats page) asks for it. The same trees as updating them on every write.
struct Trees {
    /// `2^MERKLE_DEPTH` leaves per partition, partition after partition.
    leaves: Vec<u64>,
    built: Vec<Merkle>,
    dirty: Vec<bool>,
}

const LEAVES: usize = 1 << MERKLE_DEPTH;

impl Trees {
    fn new(partitions: usize) -> Self {
        Self {
            leaves: vec![0; partitions * LEAVES],
            built: vec![Merkle::new(MERKLE_DEPTH); partitions],
            dirty: vec![false; partitions],
        }
    }

    /// Replace `old` (if any) by `new` (if any) in bucket `b` of partition `p`.
    fn change(&mut self, p: usize, b: usize, old: Option<u64>, new: Option<u64>) {
        let leaf = &mut self.leaves[p * LEAVES + b];
        if let Some(h) = old {
            *leaf = leaf.wrapping_sub(h);
        }
        if let Some(h) = new {
            *leaf = leaf.wrapping_add(h);
        }
        self.dirty[p] = true;
    }

    fn tree(&mut self, p: usize) -> &Merkle {
        if std::mem::take(&mut self.dirty[p]) {
            let mut t = Merkle::new(MERKLE_DEPTH);
            for (b, leaf) in self.leaves[p * LEAVES..(p + 1) * LEAVES].iter().enumerate() {
                if *leaf != 0 {
                    t.add(b, *leaf);
                }
            }
            self.built[p] = t;
        }
        &self.built[p]
    }
}

pub struct Replica {
    ns: Namespace,
    partition_bits: u32,
    trees: Mutex<Trees>,
    /// Keys whose object holds only tombstones (what collection looks at).
    tombstones: Mutex<std::collections::BTreeSet<Vec<u8>>>,
    stripes: Vec<tokio::sync::Mutex<()>>,
    /// Decoded objects by key, in shards (`cache_bytes_max` in all).
    cache: Vec<Mutex<Shard>>,
    shard_bytes_max: usize,
}

fn store_key(partition: u32, key: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(2 + key.len());
    k.extend_from_slice(&(partition as u16).to_be_bytes());
    k.extend_from_slice(key);
    k
}

/// The Merkle bucket of a key (by its hash) in a partition's tree.
fn bucket_of(key_hash: u64, partition_bits: u32) -> usize {
    ((key_hash << partition_bits) >> (64 - MERKLE_DEPTH)) as usize
}

/// An object's entry in its partition's Merkle tree: a hash of the key and the object's causal
/// metadata — the version vector and each sibling's dot (and whether it is a tombstone). A dot
/// names one write event, and its value never changes (a node takes a new actor id before it
/// could reuse a dot: after a wipe, a handoff, a collection), so two replicas hold the same
/// object exactly when they agree on these — and the hash costs O(actors + siblings), not
/// O(value size): a 1,000-member sorted set costs the same as a counter.
pub fn entry_hash(key: &[u8], o: &Obj) -> u64 {
    let mut h = mix(o.vv.0.len() as u64 ^ 0x5151_a1a1_0f0f_7777);
    for (node, counter) in &o.vv.0 {
        h = mix(h ^ mix(*node));
        h = mix(h ^ *counter);
    }
    h = mix(h ^ (o.siblings.len() as u64).rotate_left(7));
    for (d, v) in &o.siblings {
        h = mix(h ^ mix(d.node));
        h = mix(h ^ d.counter ^ (u64::from(v.is_none()) << 63));
    }
    mix(hash64(key) ^ h.rotate_left(32))
}

/// Objects are postcard-encoded, as on the transport (JSON would double binary values) —
/// through [`wire_obj`], which writes the same bytes as the derived encoding but copies
/// values whole.
pub fn encode(o: &Obj) -> Vec<u8> {
    let size =
        8 + 20 * o.vv.0.len() + o.siblings.iter().map(|(_, v)| 24 + v.as_ref().map_or(0, Vec::len)).sum::<usize>();
    postcard::to_extend(&ObjSer::of(o), Vec::with_capacity(size)).unwrap_or_default()
}

pub fn decode(b: &[u8]) -> anyhow::Result<Obj> {
    Ok(postcard::from_bytes::<ObjDe>(b)?.into())
}

#[derive(Serialize)]
struct ObjSer<'a> {
    vv: &'a VersionVector,
    siblings: Vec<(Dot, Option<&'a Bytes>)>,
}

impl<'a> ObjSer<'a> {
    fn of(o: &'a Obj) -> Self {
        Self { vv: &o.vv, siblings: o.siblings.iter().map(|(d, v)| (*d, v.as_deref().map(Bytes::new))).collect() }
    }
}

#[derive(Deserialize)]
struct ObjDe {
    vv: VersionVector,
    siblings: Vec<(Dot, Option<ByteBuf>)>,
}

impl From<ObjDe> for Obj {
    fn from(o: ObjDe) -> Obj {
        Obj { vv: o.vv, siblings: o.siblings.into_iter().map(|(d, v)| (d, v.map(ByteBuf::into_vec))).collect() }
    }
}

/// `#[serde(with = "crate::replica::wire_obj")]`: an object in the derived encoding, with its
/// values copied whole (see `basalt_ring::bin`).
pub mod wire_obj {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    use super::{Obj, ObjDe, ObjSer};

    pub fn serialize<S: Serializer>(o: &Obj, s: S) -> Result<S::Ok, S::Error> {
        ObjSer::of(o).serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Obj, D::Error> {
        Ok(ObjDe::deserialize(d)?.into())
    }
}

/// An object on the transport, encoded as [`wire_obj`] does.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WireObj(#[serde(with = "wire_obj")] pub Obj);

/// A causal context on the wire (what an HTTP client holds between a read and a write).
pub fn encode_vv(vv: &basalt_ring::dvv::VersionVector) -> Vec<u8> {
    postcard::to_allocvec(vv).unwrap_or_default()
}

pub fn decode_vv(b: &[u8]) -> anyhow::Result<basalt_ring::dvv::VersionVector> {
    Ok(postcard::from_bytes(b)?)
}

/// One object being changed under its stripe lock: what it was (its entry hash, if stored) and
/// what it is now.
struct Work {
    key: Vec<u8>,
    /// `hash64(key)`.
    key_hash: u64,
    old_hash: Option<u64>,
    obj: Obj,
    /// The object's causal metadata when checked out: if it is the same after the change,
    /// nothing changed (a dot names one value) and nothing is written.
    before: Meta,
}

/// An object's causal metadata, exactly — the version vector's entries and each sibling's dot
/// and whether it is a tombstone — as a run of words, held inline when short (one or two
/// actors: no allocation per write).
enum Meta {
    Inline(usize, [u64; META_INLINE]),
    Heap(Vec<u64>),
}

const META_INLINE: usize = 16;

fn meta_words(o: &Obj) -> impl Iterator<Item = u64> + '_ {
    std::iter::once(o.vv.0.len() as u64)
        .chain(o.vv.0.iter().flat_map(|(n, c)| [*n, *c]))
        .chain(std::iter::once(o.siblings.len() as u64))
        .chain(o.siblings.iter().flat_map(|(d, v)| [d.node, d.counter, u64::from(v.is_some())]))
}

fn meta(o: &Obj) -> Meta {
    let n = 2 + 2 * o.vv.0.len() + 3 * o.siblings.len();
    if n > META_INLINE {
        return Meta::Heap(meta_words(o).collect());
    }
    let mut words = [0u64; META_INLINE];
    for (slot, w) in words.iter_mut().zip(meta_words(o)) {
        *slot = w;
    }
    Meta::Inline(n, words)
}

impl Work {
    fn new(key: &[u8], key_hash: u64, old_hash: Option<u64>, obj: Obj) -> Self {
        Work { key: key.to_vec(), key_hash, old_hash, before: meta(&obj), obj }
    }

    fn changed(&self) -> bool {
        let before: &[u64] = match &self.before {
            Meta::Inline(n, w) => &w[..*n],
            Meta::Heap(v) => v,
        };
        !meta_words(&self.obj).eq(before.iter().copied())
    }
}

impl Replica {
    /// Open the replica and rebuild the Merkle trees from what is stored. Up to
    /// `cache_bytes_max` of decoded objects are kept in memory (0: none).
    pub fn open(ns: Namespace, partition_bits: u32, cache_bytes_max: usize) -> anyhow::Result<Self> {
        let mut trees = Trees::new(1 << partition_bits);
        let mut tombstones = std::collections::BTreeSet::new();
        for (k, v) in ns.scan_prefix([])? {
            if k.len() < 2 {
                continue;
            }
            let p = u32::from(u16::from_be_bytes([k[0], k[1]]));
            let key = &k[2..];
            let o = decode(&v)?;
            if o.is_deleted() {
                tombstones.insert(key.to_vec());
            }
            trees.change(p as usize, bucket_of(hash64(key), partition_bits), None, Some(entry_hash(key, &o)));
        }
        let stripes = (0..STRIPES).map(|_| tokio::sync::Mutex::new(())).collect();
        let cache = (0..SHARDS).map(|_| Mutex::new(Shard::default())).collect();
        Ok(Self {
            ns,
            partition_bits,
            trees: Mutex::new(trees),
            tombstones: Mutex::new(tombstones),
            stripes,
            cache,
            shard_bytes_max: cache_bytes_max / SHARDS,
        })
    }

    pub fn partition_of(&self, key: &[u8]) -> u32 {
        self.partition_of_hash(hash64(key))
    }

    fn partition_of_hash(&self, key_hash: u64) -> u32 {
        (key_hash >> (64 - self.partition_bits)) as u32
    }

    fn stripe_of(key: &[u8]) -> usize {
        Self::stripe_of_hash(hash64(key))
    }

    fn stripe_of_hash(key_hash: u64) -> usize {
        (key_hash as usize) % STRIPES
    }

    fn shard(&self, key_hash: u64) -> std::sync::MutexGuard<'_, Shard> {
        self.cache[Self::stripe_of_hash(key_hash) % SHARDS].lock().unwrap_or_else(|e| e.into_inner())
    }

    fn load(&self, key: &[u8], key_hash: u64) -> anyhow::Result<Option<Obj>> {
        let p = self.partition_of_hash(key_hash);
        self.ns.get(store_key(p, key))?.map(|b| decode(&b)).transpose()
    }

    fn trees(&self) -> std::sync::MutexGuard<'_, Trees> {
        self.trees.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The stored object, if any (an empty object is not stored). From the cache when it holds
    /// the key; otherwise from the store, caching it if no writer holds the key's stripe (a
    /// writer may be about to change it, and the cache must never hold an old version).
    pub fn get_shared(&self, key: &[u8]) -> anyhow::Result<Option<Arc<Obj>>> {
        let h = hash64(key);
        if let Some(o) = self.shard(h).get(key) {
            return Ok(Some(o.clone()));
        }
        let Ok(_g) = self.stripes[Self::stripe_of_hash(h)].try_lock() else {
            return Ok(self.load(key, h)?.map(Arc::new));
        };
        let Some(o) = self.load(key, h)? else { return Ok(None) };
        let o = Arc::new(o);
        self.cache_put(key, h, o.clone(), None);
        Ok(Some(o))
    }

    /// The stored object, if any (an empty object is not stored).
    pub fn get_stored(&self, key: &[u8]) -> anyhow::Result<Option<Obj>> {
        Ok(self.get_shared(key)?.map(Arc::unwrap_or_clone))
    }

    pub fn get(&self, key: &[u8]) -> anyhow::Result<Obj> {
        Ok(self.get_stored(key)?.unwrap_or_default())
    }

    /// Whether a write holds `key`'s stripe right now (a hint: it may change at once).
    pub fn busy(&self, key: &[u8]) -> bool {
        self.stripes[Self::stripe_of(key)].try_lock().is_err()
    }

    fn cache_put(&self, key: &[u8], key_hash: u64, obj: Arc<Obj>, hash: Option<u64>) {
        if self.shard_bytes_max == 0 {
            return;
        }
        let hash = hash.unwrap_or_else(|| entry_hash(key, &obj));
        let bytes =
            key.len() + 64 + obj.siblings.iter().map(|(_, v)| v.as_ref().map_or(16, |v| v.len() + 16)).sum::<usize>();
        self.shard(key_hash).put(key, Slot { obj: Some(obj), hash, bytes }, self.shard_bytes_max);
    }

    /// Take `key`'s object out for a change (the caller holds the key's stripe lock). It leaves
    /// the cache (its slot stays, empty), so readers go to the store, which still has the old
    /// version until the change is written.
    fn checkout(&self, key: &[u8]) -> anyhow::Result<Work> {
        let h = hash64(key);
        if let Some((obj, hash)) = self.shard(h).take(key) {
            return Ok(Work::new(key, h, Some(hash), Arc::unwrap_or_clone(obj)));
        }
        Ok(match self.load(key, h)? {
            Some(o) => Work::new(key, h, Some(entry_hash(key, &o)), o),
            None => Work::new(key, h, None, Obj::default()),
        })
    }

    /// Write changed objects to the store in one batch (atomic, one journal write), then keep
    /// the trees, the tombstone set and the cache in step. The caller holds their stripe locks.
    fn commit(&self, works: Vec<Work>) -> anyhow::Result<Vec<Arc<Obj>>> {
        let puts: Vec<(Vec<u8>, Vec<u8>)> = works
            .iter()
            .filter(|w| w.changed())
            .map(|w| (store_key(self.partition_of_hash(w.key_hash), &w.key), encode(&w.obj)))
            .collect();
        match puts.as_slice() {
            [] => {}
            [(k, v)] => self.ns.put(k, v)?,
            _ => self.ns.write_batch(&puts, &[])?,
        }
        let mut out = Vec::with_capacity(works.len());
        for w in works {
            if !w.changed() {
                let obj = Arc::new(w.obj);
                if w.old_hash.is_some() {
                    self.cache_put(&w.key, w.key_hash, obj.clone(), w.old_hash);
                }
                out.push(obj);
                continue;
            }
            let p = self.partition_of_hash(w.key_hash);
            let new_hash = entry_hash(&w.key, &w.obj);
            {
                let mut t = self.tombstones.lock().unwrap_or_else(|e| e.into_inner());
                if w.obj.is_deleted() {
                    t.insert(w.key.clone());
                } else if !t.is_empty() {
                    t.remove(&w.key);
                }
            }
            self.trees().change(p as usize, bucket_of(w.key_hash, self.partition_bits), w.old_hash, Some(new_hash));
            let obj = Arc::new(w.obj);
            self.cache_put(&w.key, w.key_hash, obj.clone(), Some(new_hash));
            out.push(obj);
        }
        Ok(out)
    }

    /// A write coordinated here: a new dot from `actor`, superseding what `ctx` covers (or, with
    /// `ctx = None`, everything this replica holds). Durable when it returns.
    pub async fn write(
        &self,
        key: &[u8],
        actor: u64,
        ctx: Option<&VersionVector>,
        value: Option<Value>,
    ) -> anyhow::Result<Obj> {
        self.update(key, |o| {
            let ctx = ctx.cloned().unwrap_or_else(|| o.vv.clone());
            o.write(actor, &ctx, value);
            Ok(())
        })
        .await
    }

    /// Read-modify-write of one object under its lock; durable when it returns.
    pub async fn update(&self, key: &[u8], f: impl FnOnce(&mut Obj) -> anyhow::Result<()>) -> anyhow::Result<Obj> {
        let obj = self.update_shared(key, f).await?;
        Ok(Arc::unwrap_or_clone(obj))
    }

    /// `update`, answering the object as the cache shares it (no copy).
    pub async fn update_shared(
        &self,
        key: &[u8],
        f: impl FnOnce(&mut Obj) -> anyhow::Result<()>,
    ) -> anyhow::Result<Arc<Obj>> {
        let mut f = Some(f);
        let mut out = self.update_batch(&[key], |_, o| f.take().map_or(Ok(()), |f| f(o))).await?;
        out.pop().ok_or_else(|| anyhow::anyhow!("update_batch answered nothing"))
    }

    /// Read-modify-writes of several keys as one: `f(i, object)` runs for each `keys[i]` in
    /// order (a key named twice sees its earlier change), all under the keys' stripe locks
    /// (taken in stripe order, so batches never deadlock); the changed objects are written in
    /// one store batch and synced once. Answers each key's object after its own change — for
    /// a key named twice, the later one. Durable when it returns.
    pub async fn update_batch<K: AsRef<[u8]>>(
        &self,
        keys: &[K],
        f: impl FnMut(usize, &mut Obj) -> anyhow::Result<()>,
    ) -> anyhow::Result<Vec<Arc<Obj>>> {
        let out = self.update_batch_unsynced(keys, f).await?;
        self.ns.sync().await?;
        Ok(out)
    }

    /// Wait until every write made so far is as durable as the node's fsync policy promises.
    pub async fn sync(&self) -> anyhow::Result<()> {
        Ok(self.ns.sync().await?)
    }

    /// [`Replica::update_batch`] without the sync: the caller must [`Replica::sync`] before it
    /// acknowledges anything (so whoever batches writes never waits for a disk flush itself).
    pub async fn update_batch_unsynced<K: AsRef<[u8]>>(
        &self,
        keys: &[K],
        mut f: impl FnMut(usize, &mut Obj) -> anyhow::Result<()>,
    ) -> anyhow::Result<Vec<Arc<Obj>>> {
        let mut idx: Vec<usize> = keys.iter().map(|k| Self::stripe_of(k.as_ref())).collect();
        idx.sort_unstable();
        idx.dedup();
        let mut guards = Vec::with_capacity(idx.len());
        for i in idx {
            guards.push(self.stripes[i].lock().await);
        }
        let mut works: Vec<Work> = Vec::new();
        let mut slot_of = Vec::with_capacity(keys.len());
        for (i, k) in keys.iter().enumerate() {
            let k = k.as_ref();
            let w = match works.iter().position(|w| w.key == k) {
                Some(w) => w,
                None => {
                    works.push(self.checkout(k)?);
                    works.len() - 1
                }
            };
            slot_of.push(w);
            f(i, &mut works[w].obj)?;
        }
        let objs = self.commit(works)?;
        drop(guards);
        Ok(slot_of.into_iter().map(|w| objs[w].clone()).collect())
    }

    /// Merge another replica's object in. Answers the merged object and whether it changed.
    pub async fn merge(&self, key: &[u8], other: &Obj) -> anyhow::Result<(Obj, bool)> {
        let g = self.stripes[Self::stripe_of(key)].lock().await;
        let mut w = self.checkout(key)?;
        if w.old_hash.is_some() && w.obj.contains(other) {
            let o = w.obj.clone();
            self.cache_put(key, w.key_hash, Arc::new(w.obj), w.old_hash);
            return Ok((o, false));
        }
        w.obj.merge(other);
        let o = w.obj.clone();
        self.commit(vec![w])?;
        drop(g);
        self.ns.sync().await?;
        Ok((o, true))
    }

    /// Drop a key this node no longer replicates, if it still holds exactly `expected`.
    pub async fn remove_if(&self, key: &[u8], expected: &Obj) -> anyhow::Result<bool> {
        let _g = self.stripes[Self::stripe_of(key)].lock().await;
        let w = self.checkout(key)?;
        let Some(old_hash) = w.old_hash else { return Ok(false) };
        if w.obj != *expected {
            self.cache_put(key, w.key_hash, Arc::new(w.obj), Some(old_hash));
            return Ok(false);
        }
        let p = self.partition_of_hash(w.key_hash);
        self.ns.delete(store_key(p, key))?;
        self.shard(w.key_hash).remove(key);
        self.tombstones.lock().unwrap_or_else(|e| e.into_inner()).remove(key);
        self.trees().change(p as usize, bucket_of(w.key_hash, self.partition_bits), Some(old_hash), None);
        Ok(true)
    }

    /// The keys whose object holds only tombstones, with those objects.
    pub fn tombstones(&self) -> anyhow::Result<Vec<(Vec<u8>, Obj)>> {
        let keys: Vec<Vec<u8>> = self.tombstones.lock().unwrap_or_else(|e| e.into_inner()).iter().cloned().collect();
        let mut out = Vec::with_capacity(keys.len());
        for k in keys {
            if let Some(o) = self.get_stored(&k)?
                && o.is_deleted()
            {
                out.push((k, o));
            }
        }
        Ok(out)
    }

    /// The Merkle leaves of a partition.
    pub fn leaves(&self, partition: u32) -> Vec<u64> {
        self.trees().tree(partition as usize).level(MERKLE_DEPTH).to_vec()
    }

    pub fn root(&self, partition: u32) -> u64 {
        self.trees().tree(partition as usize).root()
    }

    /// Partitions holding at least one object.
    pub fn partitions_held(&self) -> Vec<u32> {
        let mut trees = self.trees();
        (0..trees.built.len()).filter(|p| trees.tree(*p).root() != 0).map(|p| p as u32).collect()
    }

    /// Every object of a partition, optionally only those in the given Merkle buckets.
    pub fn objects(&self, partition: u32, buckets: Option<&[usize]>) -> anyhow::Result<Vec<(Vec<u8>, Obj)>> {
        let prefix = (partition as u16).to_be_bytes();
        let mut out = Vec::new();
        for (k, v) in self.ns.scan_prefix(prefix)? {
            let key = k[2..].to_vec();
            if let Some(bs) = buckets
                && !bs.contains(&bucket_of(hash64(&key), self.partition_bits))
            {
                continue;
            }
            out.push((key, decode(&v)?));
        }
        Ok(out)
    }

    /// The object log's size and rewrites when objects are kept in memory
    /// (`engines.ring.storage = "memory"`).
    pub fn memlog_stats(&self) -> Option<basalt_runtime::storage::MemLogStats> {
        self.ns.memlog_stats()
    }

    /// Every key this replica holds (for SCAN/KEYS on one node), with its object.
    pub fn all(&self) -> anyhow::Result<Vec<(Vec<u8>, Obj)>> {
        let mut out = Vec::new();
        for (k, v) in self.ns.scan_prefix([])? {
            out.push((k[2..].to_vec(), decode(&v)?));
        }
        Ok(out)
    }
}
