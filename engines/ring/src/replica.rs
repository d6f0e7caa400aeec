//! This node's replica of the ring's data: every object it holds, durably, with a Merkle
//! tree per partition kept up to date on every write (for anti-entropy).
//!
//! Keys in the store are `partition (u16, big-endian) ++ key`, so a partition is one range.
//! A write is a read-modify-write of one object under a striped lock, and is acknowledged
//! only after the store's fsync policy is met. Objects are postcard-encoded; the entry hash
//! in the Merkle tree is a hash of the key and that encoding, so two replicas agree on a
//! bucket exactly when they hold the same objects.

use std::sync::Mutex;

use basalt_ring::dvv::{Object, VersionVector};
use basalt_ring::hash::{hash64, mix};
use basalt_ring::merkle::Merkle;
use basalt_runtime::storage::Namespace;

pub type Value = Vec<u8>;
pub type Obj = Object<Value>;

pub const MERKLE_DEPTH: u32 = 6;
const STRIPES: usize = 64;

pub struct Replica {
    ns: Namespace,
    partition_bits: u32,
    trees: Mutex<Vec<Merkle>>,
    /// Keys whose object holds only tombstones (what collection looks at).
    tombstones: Mutex<std::collections::BTreeSet<Vec<u8>>>,
    stripes: Vec<tokio::sync::Mutex<()>>,
}

fn store_key(partition: u32, key: &[u8]) -> Vec<u8> {
    let mut k = Vec::with_capacity(2 + key.len());
    k.extend_from_slice(&(partition as u16).to_be_bytes());
    k.extend_from_slice(key);
    k
}

fn entry_hash(key: &[u8], encoded: &[u8]) -> u64 {
    mix(hash64(key) ^ hash64(encoded).rotate_left(32))
}

/// Objects are postcard-encoded, as on the transport (JSON would double binary values).
pub fn encode(o: &Obj) -> Vec<u8> {
    postcard::to_allocvec(o).unwrap_or_default()
}

pub fn decode(b: &[u8]) -> anyhow::Result<Obj> {
    Ok(postcard::from_bytes(b)?)
}

/// A causal context on the wire (what an HTTP client holds between a read and a write).
pub fn encode_vv(vv: &basalt_ring::dvv::VersionVector) -> Vec<u8> {
    postcard::to_allocvec(vv).unwrap_or_default()
}

pub fn decode_vv(b: &[u8]) -> anyhow::Result<basalt_ring::dvv::VersionVector> {
    Ok(postcard::from_bytes(b)?)
}

impl Replica {
    /// Open the replica and rebuild the Merkle trees from what is stored.
    pub fn open(ns: Namespace, partition_bits: u32) -> anyhow::Result<Self> {
        let mut trees = vec![Merkle::new(MERKLE_DEPTH); 1 << partition_bits];
        let mut tombstones = std::collections::BTreeSet::new();
        for (k, v) in ns.scan_prefix([])? {
            if k.len() < 2 {
                continue;
            }
            let p = u32::from(u16::from_be_bytes([k[0], k[1]]));
            let key = &k[2..];
            if decode(&v)?.is_deleted() {
                tombstones.insert(key.to_vec());
            }
            let t = &mut trees[p as usize];
            let b = t.bucket(hash64(key), partition_bits);
            t.add(b, entry_hash(key, &v));
        }
        let stripes = (0..STRIPES).map(|_| tokio::sync::Mutex::new(())).collect();
        Ok(Self { ns, partition_bits, trees: Mutex::new(trees), tombstones: Mutex::new(tombstones), stripes })
    }

    pub fn partition_of(&self, key: &[u8]) -> u32 {
        (hash64(key) >> (64 - self.partition_bits)) as u32
    }

    /// The stored object, if any (an empty object is not stored).
    pub fn get_stored(&self, key: &[u8]) -> anyhow::Result<Option<Obj>> {
        let p = self.partition_of(key);
        self.ns.get(store_key(p, key))?.map(|b| decode(&b)).transpose()
    }

    pub fn get(&self, key: &[u8]) -> anyhow::Result<Obj> {
        let p = self.partition_of(key);
        Ok(match self.ns.get(store_key(p, key))? {
            Some(b) => decode(&b)?,
            None => Obj::default(),
        })
    }

    fn stripe(&self, key: &[u8]) -> &tokio::sync::Mutex<()> {
        &self.stripes[(hash64(key) as usize) % STRIPES]
    }

    /// Store `new` in place of `old` (whose encoding was `old_enc`), keeping the tree in step.
    fn replace(&self, key: &[u8], old_enc: Option<&[u8]>, new: &Obj) -> anyhow::Result<()> {
        let p = self.partition_of(key);
        let enc = encode(new);
        self.ns.put(store_key(p, key), &enc)?;
        {
            let mut t = self.tombstones.lock().unwrap_or_else(|e| e.into_inner());
            if new.is_deleted() {
                t.insert(key.to_vec());
            } else if !t.is_empty() {
                t.remove(key);
            }
        }
        let mut trees = self.trees.lock().unwrap_or_else(|e| e.into_inner());
        let t = &mut trees[p as usize];
        let b = t.bucket(hash64(key), self.partition_bits);
        if let Some(o) = old_enc {
            t.remove(b, entry_hash(key, o));
        }
        t.add(b, entry_hash(key, &enc));
        Ok(())
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
        let _g = self.stripe(key).lock().await;
        let p = self.partition_of(key);
        let old = self.ns.get(store_key(p, key))?;
        let mut o = match &old {
            Some(b) => decode(b)?,
            None => Obj::default(),
        };
        f(&mut o)?;
        self.replace(key, old.as_deref(), &o)?;
        drop(_g);
        self.ns.sync().await?;
        Ok(o)
    }

    /// Merge another replica's object in. Answers the merged object and whether it changed.
    pub async fn merge(&self, key: &[u8], other: &Obj) -> anyhow::Result<(Obj, bool)> {
        let _g = self.stripe(key).lock().await;
        let p = self.partition_of(key);
        let old = self.ns.get(store_key(p, key))?;
        let mut o = match &old {
            Some(b) => decode(b)?,
            None => Obj::default(),
        };
        let before = o.clone();
        o.merge(other);
        if o == before && old.is_some() {
            return Ok((o, false));
        }
        self.replace(key, old.as_deref(), &o)?;
        drop(_g);
        self.ns.sync().await?;
        Ok((o, true))
    }

    /// Drop a key this node no longer replicates, if it still holds exactly `expected`.
    pub async fn remove_if(&self, key: &[u8], expected: &Obj) -> anyhow::Result<bool> {
        let _g = self.stripe(key).lock().await;
        let p = self.partition_of(key);
        let Some(old) = self.ns.get(store_key(p, key))? else { return Ok(false) };
        if decode(&old)? != *expected {
            return Ok(false);
        }
        self.ns.delete(store_key(p, key))?;
        self.tombstones.lock().unwrap_or_else(|e| e.into_inner()).remove(key);
        let mut trees = self.trees.lock().unwrap_or_else(|e| e.into_inner());
        let t = &mut trees[p as usize];
        let b = t.bucket(hash64(key), self.partition_bits);
        t.remove(b, entry_hash(key, &old));
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
        let trees = self.trees.lock().unwrap_or_else(|e| e.into_inner());
        trees[partition as usize].level(MERKLE_DEPTH).to_vec()
    }

    pub fn root(&self, partition: u32) -> u64 {
        self.trees.lock().unwrap_or_else(|e| e.into_inner())[partition as usize].root()
    }

    /// Partitions holding at least one object.
    pub fn partitions_held(&self) -> Vec<u32> {
        let trees = self.trees.lock().unwrap_or_else(|e| e.into_inner());
        (0..trees.len() as u32).filter(|p| trees[*p as usize].root() != 0).collect()
    }

    /// Every object of a partition, optionally only those in the given Merkle buckets.
    pub fn objects(&self, partition: u32, buckets: Option<&[usize]>) -> anyhow::Result<Vec<(Vec<u8>, Obj)>> {
        let prefix = (partition as u16).to_be_bytes();
        let probe = Merkle::new(MERKLE_DEPTH);
        let mut out = Vec::new();
        for (k, v) in self.ns.scan_prefix(prefix)? {
            let key = k[2..].to_vec();
            if let Some(bs) = buckets
                && !bs.contains(&probe.bucket(hash64(&key), self.partition_bits))
            {
                continue;
            }
            out.push((key, decode(&v)?));
        }
        Ok(out)
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
