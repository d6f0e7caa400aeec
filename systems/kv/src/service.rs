//! The store on the ring: every write is the `kv` updater run on a home replica of the key;
//! every read is a quorum read resolved to the newest entry.

use std::sync::{Arc, Mutex};

use basalt_ring::hlc::{Hlc, HlcClock};
use basalt_ring_engine::{Obj, Quorum, RingError, RingHandle, Updater};
use serde::{Deserialize, Serialize};

use crate::model::{self, Entry, Reply, WriteOp};

pub const UPDATER: &str = "kv";

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UpdateArg {
    pub op: WriteOp,
    pub now_ms: u64,
    pub at: Hlc,
}

pub fn decode_entries(obj: &Obj) -> Vec<Entry> {
    obj.values().filter_map(|v| postcard::from_bytes::<Entry>(v).ok()).collect()
}

/// The `kv` updater: resolve the key's entry, apply the operation, and stamp the result after
/// everything it replaces.
pub struct KvUpdater;

impl Updater for KvUpdater {
    fn apply(&self, obj: &mut Obj, actor: u64, arg: &[u8]) -> Result<Vec<u8>, String> {
        let arg: UpdateArg = postcard::from_bytes(arg).map_err(|e| format!("ERR bad update: {e}"))?;
        let entries = decode_entries(obj);
        let cur = model::resolve(&entries);
        let cur = cur.as_ref();
        let mut at = arg.at;
        if let Some(c) = cur
            && c.at >= at
        {
            at = Hlc { wall_ms: c.at.wall_ms, logical: c.at.logical + 1, node: at.node };
        }
        let (new, reply) = model::apply(cur, &arg.op, arg.now_ms, at, actor)?;
        // A delete is a ring tombstone (collectable once every replica has it); it supersedes
        // what this replica holds, and a write it never saw survives it.
        if let Some(e) = new {
            let ctx = obj.vv.clone();
            let value = match e.data {
                None => None,
                Some(_) => Some(postcard::to_allocvec(&e).map_err(|e| e.to_string())?),
            };
            obj.write(actor, &ctx, value);
        }
        postcard::to_allocvec(&reply).map_err(|e| e.to_string())
    }
}

/// A namespace's own read and write quorums (`systems.kv.namespaces.<name> = {r, w}`): for
/// keys named `<name>:…`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NamespaceQuorum {
    pub r: usize,
    pub w: usize,
}

pub struct KvService {
    pub ring: RingHandle,
    pub namespaces: std::collections::BTreeMap<String, NamespaceQuorum>,
    hlc: Mutex<HlcClock>,
    clock: basalt_runtime::Clock,
}

impl KvService {
    pub fn new(
        ring: RingHandle,
        node_id: u64,
        clock: basalt_runtime::Clock,
        namespaces: std::collections::BTreeMap<String, NamespaceQuorum>,
    ) -> Arc<Self> {
        ring.coord.register(UPDATER, Arc::new(KvUpdater));
        Arc::new(Self { ring, namespaces, hlc: Mutex::new(HlcClock::new(node_id)), clock })
    }

    pub fn now_ms(&self) -> u64 {
        self.clock.now_ms()
    }

    /// The quorum for `key`: its namespace's (the part before the first `:`), else the ring's.
    pub fn quorum(&self, key: &[u8]) -> Quorum {
        let q = self.ring.quorum();
        let ns = key.iter().position(|b| *b == b':').map(|i| &key[..i]);
        match ns.and_then(|n| std::str::from_utf8(n).ok()).and_then(|n| self.namespaces.get(n)) {
            Some(nq) => Quorum { n: q.n, r: nq.r, w: nq.w },
            None => q,
        }
    }

    /// A timestamp for a write coordinated through this node.
    pub fn stamp(&self) -> Hlc {
        let now = self.now_ms();
        self.hlc.lock().unwrap_or_else(|e| e.into_inner()).now(now)
    }

    pub async fn write(&self, key: &[u8], op: WriteOp) -> Result<Reply, RingError> {
        let now_ms = self.now_ms();
        let at = self.stamp();
        let arg =
            postcard::to_allocvec(&UpdateArg { op, now_ms, at }).map_err(|e| RingError::Internal(e.to_string()))?;
        let bytes = self.ring.coord.update(UPDATER, key, &arg, self.quorum(key)).await?;
        postcard::from_bytes(&bytes).map_err(|e| RingError::Internal(e.to_string()))
    }

    /// The key's current entry, if it exists now.
    pub async fn read(&self, key: &[u8]) -> Result<Option<Entry>, RingError> {
        let obj = self.ring.coord.get(key, self.quorum(key)).await?;
        let entries = decode_entries(&obj);
        let now = self.now_ms();
        if let Some(e) = model::resolve(&entries) {
            self.hlc.lock().unwrap_or_else(|e| e.into_inner()).observe(e.at);
            if e.live(now).is_some() {
                return Ok(Some(e));
            }
        }
        Ok(None)
    }

    /// The keys this node's replica holds that exist now.
    pub fn local_keys(&self) -> anyhow::Result<Vec<Vec<u8>>> {
        let now = self.now_ms();
        Ok(self
            .ring
            .coord
            .replica
            .all()?
            .into_iter()
            .filter(|(_, o)| model::resolve(&decode_entries(o)).is_some_and(|e| e.live(now).is_some()))
            .map(|(k, _)| k)
            .collect())
    }

    /// Every key in the cluster that exists now: the union of every live member's replica.
    pub async fn all_keys(&self) -> Vec<Vec<u8>> {
        let mut keys: std::collections::BTreeSet<Vec<u8>> = self.local_keys().unwrap_or_default().into_iter().collect();
        let m = self.ring.membership();
        let http = basalt_runtime::reqwest::Client::new();
        for peer in m.peers().into_iter().filter(|p| m.alive(p.node_id)) {
            let url = format!("http://{}/v1/kv/_local/keys", peer.http_addr);
            if let Ok(r) = http.get(url).send().await
                && let Ok(v) = r.json::<Vec<String>>().await
            {
                use base64::Engine;
                for k in v {
                    if let Ok(b) = base64::engine::general_purpose::STANDARD.decode(k) {
                        keys.insert(b);
                    }
                }
            }
        }
        keys.into_iter().collect()
    }
}
