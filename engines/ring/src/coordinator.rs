//! Reads and writes through the ring: N replicas per key, R and W per request.
//!
//! - **Write.** Only a home replica (one of the first N of the key's preference list)
//!   coordinates a write: it stamps the new value with a dot from its actor id, stores it
//!   durably, and sends the resulting object to the other N−1 targets, answering once W
//!   replicas (itself included) hold it. A node that is not a home replica forwards the write
//!   to the first live one. The targets are the first N *live* nodes of the preference list —
//!   a sloppy quorum: when a home replica is down, the next node stands in and keeps the object
//!   until it can hand it to its owner (`handoff.rs`).
//! - **Read.** Any node coordinates a read: it asks the first N live nodes, answers once R
//!   have answered with their objects merged (siblings and all), and repairs every replica that
//!   answered with less (read repair), including those that answered after R.
//! - Not enough live replicas for R or W is `unavailable`, with how many were needed and got.
//!   With R + W > N, a read overlaps every acknowledged write's replicas.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use basalt_ring::dvv::VersionVector;
use basalt_ring::hash::hash64;
use basalt_ring::ring::NodeId;
use basalt_runtime::transport::{RpcError, Transport};
use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use serde::{Deserialize, Serialize};

use crate::membership::Membership;
use crate::replica::{Obj, Replica, Value};

pub const READ: &str = "/ring/read";
pub const MERGE: &str = "/ring/merge";
pub const PUT: &str = "/ring/put";
pub const UPDATE: &str = "/ring/update";

/// A read-modify-write a system registers by name, run by a home replica of the key on its
/// local object: it may change the object (stamping new values with `actor`) and answers a
/// reply for the caller, or refuses (nothing is written).
pub trait Updater: Send + Sync + 'static {
    fn apply(&self, obj: &mut Obj, actor: u64, arg: &[u8]) -> Result<Vec<u8>, String>;
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UpdateReq {
    pub updater: String,
    pub key: Vec<u8>,
    pub arg: Vec<u8>,
    pub quorum: Quorum,
}

/// N, R and W for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Quorum {
    pub n: usize,
    pub r: usize,
    pub w: usize,
}

impl Quorum {
    /// On a ring of fewer than N members, N is the ring's size and R and W are capped at it:
    /// a one-node ring keeps one copy and still answers. R + W > N stays true when it was.
    /// (Members that are down still count: a failure never lowers a quorum.)
    pub fn on_ring(self, members: usize) -> Quorum {
        let n = self.n.min(members.max(1));
        Quorum { n, r: self.r.min(n), w: self.w.min(n) }
    }

    pub fn check(&self) -> Result<(), RingError> {
        if self.n == 0 || self.r == 0 || self.w == 0 || self.r > self.n || self.w > self.n {
            return Err(RingError::BadQuorum(format!(
                "need 1 <= r <= n and 1 <= w <= n, got n={} r={} w={}",
                self.n, self.r, self.w
            )));
        }
        Ok(())
    }
}

#[derive(Debug, Clone, thiserror::Error, Serialize, Deserialize, PartialEq, Eq)]
pub enum RingError {
    #[error("{what}: needed {needed} replicas, {got} answered")]
    Unavailable { what: String, needed: usize, got: usize },
    #[error("{0}")]
    BadQuorum(String),
    /// The updater refused (e.g. a value of the wrong type); nothing was written.
    #[error("{0}")]
    Rejected(String),
    #[error("{0}")]
    Internal(String),
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReadReq {
    pub key: Vec<u8>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MergeReq {
    pub key: Vec<u8>,
    pub obj: Obj,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PutReq {
    pub key: Vec<u8>,
    pub ctx: Option<VersionVector>,
    pub value: Option<Value>,
    pub quorum: Quorum,
}

pub struct Coordinator {
    pub membership: Arc<Membership>,
    pub replica: Arc<Replica>,
    pub transport: Transport,
    /// The id this node stamps its writes with (replaced when it gives away data it wrote).
    pub actor: Mutex<u64>,
    pub timeout: Duration,
    pub updaters: std::sync::RwLock<std::collections::BTreeMap<String, Arc<dyn Updater>>>,
    /// Where the actor id is kept.
    pub meta: basalt_runtime::storage::Namespace,
}

pub const ACTOR_KEY: &[u8] = b"actor";

fn no_home() -> RingError {
    RingError::Unavailable { what: "write: no home replica of the key answered".into(), needed: 1, got: 0 }
}

fn internal(e: impl std::fmt::Display) -> RingError {
    RingError::Internal(e.to_string())
}

impl Coordinator {
    pub fn actor(&self) -> u64 {
        *self.actor.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Take a new actor id, durably (before giving away data stamped with the old one).
    pub async fn renew_actor(&self) -> anyhow::Result<()> {
        let fresh = crate::random_u64();
        self.meta.put(ACTOR_KEY, fresh.to_be_bytes())?;
        self.meta.sync().await?;
        *self.actor.lock().unwrap_or_else(|e| e.into_inner()) = fresh;
        Ok(())
    }

    fn effective(&self, q: Quorum) -> Quorum {
        q.on_ring(self.membership.ring().nodes().count())
    }

    fn partition(&self, key: &[u8]) -> u32 {
        self.membership.ring().partition_of(hash64(key))
    }

    /// The first `n` live nodes of the key's preference list.
    pub fn targets(&self, key: &[u8], n: usize) -> Vec<NodeId> {
        let ring = self.membership.ring();
        ring.walk(ring.partition_of(hash64(key))).filter(|id| self.membership.alive(*id)).take(n).collect()
    }

    /// The key's home replicas: the first `n` of its preference list, live or not.
    pub fn home(&self, key: &[u8], n: usize) -> Vec<NodeId> {
        self.membership.ring().replicas(self.partition(key), n)
    }

    async fn call<Req: Serialize, Resp: serde::de::DeserializeOwned>(
        &self,
        peer: NodeId,
        path: &str,
        req: &Req,
    ) -> Result<Resp, RpcError> {
        let addr = self
            .membership
            .get(peer)
            .map(|m| m.peer_addr)
            .ok_or_else(|| RpcError::Unreachable { peer, reason: "not a member".into() })?;
        self.transport.call(peer, &addr, path, req, Some(self.timeout)).await
    }

    /// Write `value` (None deletes) under `key`, superseding what `ctx` covers (None: what the
    /// coordinating replica holds — a blind overwrite).
    pub async fn put(
        self: &Arc<Self>,
        key: &[u8],
        ctx: Option<VersionVector>,
        value: Option<Value>,
        q: Quorum,
    ) -> Result<Obj, RingError> {
        q.check()?;
        let q = self.effective(q);
        let home = self.home(key, q.n);
        if home.contains(&self.membership.me) {
            return self.coordinate_put(key, ctx, value, q).await;
        }
        let req = PutReq { key: key.to_vec(), ctx, value, quorum: q };
        let live: Vec<NodeId> = home.into_iter().filter(|h| self.membership.alive(*h)).collect();
        self.forward(&live, PUT, &req).await.unwrap_or_else(|| Err(no_home()))
    }

    /// Send `req` to the first of `to` that answers; None if none does.
    async fn forward<Req: Serialize, T: serde::de::DeserializeOwned>(
        &self,
        to: &[NodeId],
        path: &str,
        req: &Req,
    ) -> Option<Result<T, RingError>> {
        for h in to {
            match self.call::<_, Result<T, RingError>>(*h, path, req).await {
                Ok(r) => return Some(r),
                Err(e) => {
                    tracing::debug!(peer = h, error = %e, path, "ring: forwarding failed; trying the next home replica")
                }
            }
        }
        None
    }

    /// Coordinate a write here (this node is a home replica of the key).
    pub async fn coordinate_put(
        self: &Arc<Self>,
        key: &[u8],
        ctx: Option<VersionVector>,
        value: Option<Value>,
        q: Quorum,
    ) -> Result<Obj, RingError> {
        let obj = self.replica.write(key, self.actor(), ctx.as_ref(), value).await.map_err(internal)?;
        self.replicate(key, obj, q, "write").await
    }

    /// Register a named read-modify-write (before the node serves requests).
    pub fn register(&self, name: &str, u: Arc<dyn Updater>) {
        self.updaters.write().unwrap_or_else(|e| e.into_inner()).insert(name.into(), u);
    }

    /// Run the updater `name` on `key` at the first live home replica (here, or forwarded), so
    /// one replica orders a key's read-modify-writes while it is up; if it cannot be reached,
    /// the next live home replica takes over. Replicated to W. Answers the updater's reply.
    pub async fn update(self: &Arc<Self>, name: &str, key: &[u8], arg: &[u8], q: Quorum) -> Result<Vec<u8>, RingError> {
        q.check()?;
        let q = self.effective(q);
        let me = self.membership.me;
        let req = UpdateReq { updater: name.into(), key: key.to_vec(), arg: arg.to_vec(), quorum: q };
        let live: Vec<NodeId> = self.home(key, q.n).into_iter().filter(|h| self.membership.alive(*h)).collect();
        // Live home replicas ahead of this one come first; then this one, if it is home.
        let ahead = live.iter().position(|h| *h == me).unwrap_or(live.len());
        if let Some(r) = self.forward(&live[..ahead], UPDATE, &req).await {
            return r;
        }
        if ahead < live.len() {
            return self.coordinate_update(name, key, arg, q).await;
        }
        Err(no_home())
    }

    /// Run the updater here (this node is a home replica of the key).
    pub async fn coordinate_update(
        self: &Arc<Self>,
        name: &str,
        key: &[u8],
        arg: &[u8],
        q: Quorum,
    ) -> Result<Vec<u8>, RingError> {
        let u = self
            .updaters
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(name)
            .cloned()
            .ok_or_else(|| RingError::Internal(format!("no updater `{name}` on this node")))?;
        let actor = self.actor();
        let mut reply = Ok(Vec::new());
        let obj = self
            .replica
            .update(key, |o| {
                let mut copy = o.clone();
                reply = u.apply(&mut copy, actor, arg);
                if reply.is_ok() {
                    *o = copy;
                }
                Ok(())
            })
            .await
            .map_err(internal)?;
        let reply = reply.map_err(RingError::Rejected)?;
        self.replicate(key, obj, q, "write").await?;
        Ok(reply)
    }

    /// Send `obj` to the other targets; answer once `w` replicas (this one included) hold it.
    /// Sends still in flight then go on in the background.
    async fn replicate(self: &Arc<Self>, key: &[u8], obj: Obj, q: Quorum, what: &str) -> Result<Obj, RingError> {
        let me = self.membership.me;
        let req = Arc::new(MergeReq { key: key.to_vec(), obj: obj.clone() });
        let mut pending: FuturesUnordered<_> = self
            .targets(key, q.n)
            .into_iter()
            .filter(|id| *id != me)
            .map(|peer| {
                let (req, this) = (req.clone(), self.clone());
                tokio::spawn(async move { this.call::<_, ()>(peer, MERGE, &*req).await.is_ok() })
            })
            .collect();
        let mut acks = 1;
        while acks < q.w {
            match pending.next().await {
                Some(Ok(true)) => acks += 1,
                Some(_) => {}
                None => break,
            }
        }
        if acks >= q.w {
            return Ok(obj);
        }
        Err(RingError::Unavailable {
            what: format!("{what} not acknowledged by enough replicas"),
            needed: q.w,
            got: acks,
        })
    }

    /// Read `key` from R of its first N live replicas, merged; repairs stale replicas.
    pub async fn get(self: &Arc<Self>, key: &[u8], q: Quorum) -> Result<Obj, RingError> {
        q.check()?;
        let q = self.effective(q);
        let targets = self.targets(key, q.n);
        let me = self.membership.me;
        let mut pending: FuturesUnordered<_> = targets
            .iter()
            .map(|peer| {
                let (peer, this, key) = (*peer, self.clone(), key.to_vec());
                async move {
                    let r = if peer == me {
                        this.replica.get(&key).map_err(|e| e.to_string())
                    } else {
                        this.call::<_, Obj>(peer, READ, &ReadReq { key }).await.map_err(|e| e.to_string())
                    };
                    (peer, r)
                }
            })
            .collect();
        let mut answers: Vec<(NodeId, Obj)> = Vec::new();
        while answers.len() < q.r {
            match pending.next().await {
                Some((peer, Ok(o))) => answers.push((peer, o)),
                Some((_, Err(_))) => {}
                None => break,
            }
        }
        if answers.len() < q.r {
            return Err(RingError::Unavailable { what: "read".into(), needed: q.r, got: answers.len() });
        }
        let mut merged = Obj::default();
        for (_, o) in &answers {
            merged.merge(o);
        }
        // Read repair, off the request path: everyone who answered (now or later) with less.
        if pending.is_empty() && answers.iter().all(|(_, o)| *o == merged) {
            return Ok(merged);
        }
        let this = self.clone();
        let (key, m) = (key.to_vec(), merged.clone());
        tokio::spawn(async move {
            let mut stale: Vec<NodeId> = answers.iter().filter(|(_, o)| *o != m).map(|(p, _)| *p).collect();
            while let Some((peer, r)) = pending.next().await {
                if let Ok(o) = r
                    && o != m
                {
                    stale.push(peer);
                }
            }
            for peer in stale {
                this.repair(peer, &key, &m).await;
            }
        });
        Ok(merged)
    }

    async fn repair(&self, peer: NodeId, key: &[u8], obj: &Obj) {
        let r = if peer == self.membership.me {
            self.replica.merge(key, obj).await.map(|_| ()).map_err(|e| e.to_string())
        } else {
            self.call::<_, ()>(peer, MERGE, &MergeReq { key: key.to_vec(), obj: obj.clone() })
                .await
                .map_err(|e| e.to_string())
        };
        match r {
            Ok(()) => tracing::debug!(peer, "ring: read repair"),
            Err(e) => tracing::debug!(peer, error = %e, "ring: read repair failed"),
        }
    }
}
