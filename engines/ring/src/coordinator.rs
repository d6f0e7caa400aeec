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
use crate::replica::{Obj, Replica, Value, WireObj};

type FastMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;

pub const READ: &str = "/ring/read";
pub const MERGE: &str = "/ring/merge";
pub const PUT: &str = "/ring/put";
pub const UPDATE: &str = "/ring/update";

/// A read-modify-write a system registers by name, run by a home replica of the key on its
/// local object: it may change the object (stamping new values with `actor`) and answers a
/// reply for the caller, or refuses — and then it must leave the object as it was (nothing is
/// written; the engine does not copy the object first, which for a big value would cost more
/// than the change).
pub trait Updater: Send + Sync + 'static {
    fn apply(&self, key: &[u8], obj: &mut Obj, actor: u64, arg: &[u8]) -> Result<Vec<u8>, String>;

    /// Several updates of one key, in order, each answering as `apply` would. An updater may
    /// do them as one write (one new dot for the lot: nobody could have seen the steps in
    /// between, as the object is stored once).
    fn apply_many(&self, key: &[u8], obj: &mut Obj, actor: u64, args: &[&[u8]]) -> Vec<Result<Vec<u8>, String>> {
        args.iter().map(|a| self.apply(key, obj, actor, a)).collect()
    }

    /// The write that `apply`/`apply_many` just made to `key` was not stored (the store batch
    /// failed): the replica keeps its older object, and the next write reuses the dot. An
    /// updater that keeps anything about the object it produced must drop it here.
    fn forget(&self, _key: &[u8]) {}
}

/// The most update operations one combined store batch takes.
const COMBINE_OPS_MAX: usize = 4096;
/// Combining lanes (each drained by at most one task at a time).
pub const COMBINE_LANES: usize = 8;

/// Updates waiting to be written, from every caller on this node, and whether a task is
/// writing them (see [`Coordinator::combine`]).
#[derive(Default)]
pub struct Combiner {
    pending: Vec<Pending>,
    draining: bool,
}

type LocalResult = Result<Vec<(Result<Vec<u8>, String>, Arc<Obj>)>, RingError>;

struct Pending {
    name: String,
    ops: Vec<(Vec<u8>, Vec<u8>)>,
    done: tokio::sync::oneshot::Sender<LocalResult>,
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
    #[serde(with = "crate::replica::wire_obj")]
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
    /// Single writes waiting to be combined, in [`COMBINE_LANES`] lanes by key.
    pub combiners: Vec<Mutex<Combiner>>,
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

    /// Whether this node is the first live node of the key's preference list (on `ring`, read
    /// once by the caller): who coordinates its read-modify-writes, and, with N = 1, its only
    /// replica. No allocation (the hot path of every one-node request).
    fn first_live_is_me(&self, ring: &basalt_ring::ring::Ring, key: &[u8], n: usize) -> bool {
        let me = self.membership.me;
        ring.walk(ring.partition_of(hash64(key))).take(n).find(|id| self.membership.alive(*id)) == Some(me)
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
        let ops = [(key.to_vec(), arg.to_vec(), q)];
        let mut out = self.coordinate_update_batch(name, &ops).await?;
        out.pop().unwrap_or_else(|| Err(RingError::Internal("no reply".into())))
    }

    fn updater(&self, name: &str) -> Result<Arc<dyn Updater>, RingError> {
        self.updaters
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(name)
            .cloned()
            .ok_or_else(|| RingError::Internal(format!("no updater `{name}` on this node")))
    }

    /// Run the updater here on several keys (this node is a home replica of each), in order,
    /// combined with what other callers on this node run meanwhile into one store batch; wait
    /// until it is durable; then replicate each changed key to its W. Answers each operation's
    /// reply, or why it failed (an operation refused changes nothing; one whose key did not
    /// reach W is `unavailable`, its outcome unknown).
    pub async fn coordinate_update_batch(
        self: &Arc<Self>,
        name: &str,
        ops: &[(Vec<u8>, Vec<u8>, Quorum)],
    ) -> Result<Vec<Result<Vec<u8>, RingError>>, RingError> {
        // Operations on a key another write holds are combined with the other callers' (the
        // writers of one hot key share one write of its value); on free keys they run at once,
        // beside the others (a pipeline's run is already one batch).
        let local = if ops.iter().any(|(k, _, _)| self.replica.busy(k)) {
            self.combine(name, ops.iter().map(|(k, a, _)| (k.clone(), a.clone())).collect()).await?
        } else {
            let refs: Vec<(&[u8], &[u8])> = ops.iter().map(|(k, a, _)| (k.as_slice(), a.as_slice())).collect();
            self.apply_local(name, &refs).await?
        };
        self.replica.sync().await.map_err(internal)?;
        // Replicate each changed key once, with the last object the batch left it in.
        let mut jobs: Vec<(usize, Arc<Obj>)> = Vec::new();
        let mut job_of: FastMap<&[u8], usize> = FastMap::default();
        for (i, (r, obj)) in local.iter().enumerate() {
            if r.is_err() {
                continue;
            }
            match job_of.get(ops[i].0.as_slice()) {
                Some(j) => jobs[*j] = (i, obj.clone()),
                None => {
                    job_of.insert(&ops[i].0, jobs.len());
                    jobs.push((i, obj.clone()));
                }
            }
        }
        let results = futures_util::future::join_all(
            jobs.iter().map(|(i, o)| self.replicate_shared(&ops[*i].0, o.clone(), ops[*i].2, "write")),
        )
        .await;
        Ok(local
            .into_iter()
            .enumerate()
            .map(|(i, (r, _))| {
                let r = r.map_err(RingError::Rejected)?;
                match job_of.get(ops[i].0.as_slice()).map(|j| &results[*j]) {
                    Some(Err(e)) => Err(e.clone()),
                    _ => Ok(r),
                }
            })
            .collect())
    }

    /// Write `ops` to this replica, combined with the updates other callers queue meanwhile in
    /// its key's lane: callers queue; one task (spawned, so no caller's cancellation can strand the queue)
    /// takes everything queued, applies it in order and writes it as one store batch (one
    /// journal write; not yet synced), and goes on while more is queued. Concurrent writers of
    /// one hot key share one encoding and one write of its value instead of one each.
    async fn combine(self: &Arc<Self>, name: &str, ops: Vec<(Vec<u8>, Vec<u8>)>) -> LocalResult {
        // Lanes by key, so writers of different keys still run in parallel.
        let lane = ops.first().map_or(0, |(k, _)| (hash64(k) % COMBINE_LANES as u64) as usize);
        let (done, rx) = tokio::sync::oneshot::channel();
        let start = {
            let mut c = self.combiners[lane].lock().unwrap_or_else(|e| e.into_inner());
            c.pending.push(Pending { name: name.to_string(), ops, done });
            !std::mem::replace(&mut c.draining, true)
        };
        if start {
            let this = self.clone();
            tokio::spawn(async move { this.drain(lane).await });
        }
        rx.await.unwrap_or_else(|_| Err(RingError::Internal("the update batch was abandoned".into())))
    }

    async fn drain(self: Arc<Self>, lane: usize) {
        /// Clears `draining` however the task ends (a panic included), so callers never wait
        /// on a queue nobody drains.
        struct Draining<'a>(&'a Mutex<Combiner>);
        impl Drop for Draining<'_> {
            fn drop(&mut self) {
                if std::thread::panicking() {
                    let mut c = self.0.lock().unwrap_or_else(|e| e.into_inner());
                    c.draining = false;
                    // Dropping the senders answers the waiting callers with an error.
                    c.pending.clear();
                }
            }
        }
        let _guard = Draining(&self.combiners[lane]);
        loop {
            let batch: Vec<Pending> = {
                let mut c = self.combiners[lane].lock().unwrap_or_else(|e| e.into_inner());
                let mut n = 0;
                let take = c
                    .pending
                    .iter()
                    .take_while(|p| {
                        n += p.ops.len();
                        n <= COMBINE_OPS_MAX || n == p.ops.len()
                    })
                    .count();
                if take == 0 {
                    c.draining = false;
                    return;
                }
                c.pending.drain(..take).collect()
            };
            // One store batch per updater name, in the order queued.
            let mut names: Vec<&str> = batch.iter().map(|p| p.name.as_str()).collect();
            names.sort_unstable();
            names.dedup();
            let mut answers: Vec<Option<LocalResult>> = (0..batch.len()).map(|_| None).collect();
            for name in names {
                let members: Vec<usize> = (0..batch.len()).filter(|i| batch[*i].name == name).collect();
                let ops: Vec<(&[u8], &[u8])> = members
                    .iter()
                    .flat_map(|i| batch[*i].ops.iter().map(|(k, a)| (k.as_slice(), a.as_slice())))
                    .collect();
                match self.apply_local(name, &ops).await {
                    Ok(mut out) => {
                        for i in members.iter().rev() {
                            let rest = out.split_off(out.len() - batch[*i].ops.len());
                            answers[*i] = Some(Ok(rest));
                        }
                    }
                    Err(e) => {
                        for i in members {
                            answers[i] = Some(Err(e.clone()));
                        }
                    }
                }
            }
            for (p, a) in batch.into_iter().zip(answers) {
                let _ = p.done.send(a.unwrap_or_else(|| Err(RingError::Internal("no answer".into()))));
            }
        }
    }

    /// Apply `ops` (key, argument) with the updater `name` to this replica as one store batch:
    /// each key's operations go to the updater together, in order.
    async fn apply_local(&self, name: &str, ops: &[(&[u8], &[u8])]) -> LocalResult {
        let u = self.updater(name)?;
        let actor = self.actor();
        let mut keys: Vec<&[u8]> = Vec::new();
        let mut of_key: Vec<Vec<usize>> = Vec::new();
        let mut index: FastMap<&[u8], usize> = FastMap::default();
        for (i, (k, _)) in ops.iter().enumerate() {
            let j = *index.entry(*k).or_insert_with(|| {
                keys.push(k);
                of_key.push(Vec::new());
                keys.len() - 1
            });
            of_key[j].push(i);
        }
        let mut replies: Vec<Option<Result<Vec<u8>, String>>> = (0..ops.len()).map(|_| None).collect();
        let objs = self
            .replica
            .update_batch_unsynced(&keys, |j, o| {
                let args: Vec<&[u8]> = of_key[j].iter().map(|i| ops[*i].1).collect();
                for (i, r) in of_key[j].iter().zip(u.apply_many(keys[j], o, actor, &args)) {
                    replies[*i] = Some(r);
                }
                Ok(())
            })
            .await
            .map_err(|e| {
                for k in &keys {
                    u.forget(k);
                }
                internal(e)
            })?;
        let mut obj_of = vec![None; ops.len()];
        for (j, is) in of_key.iter().enumerate() {
            for i in is {
                obj_of[*i] = Some(objs[j].clone());
            }
        }
        Ok(replies
            .into_iter()
            .zip(obj_of)
            .map(|(r, o)| (r.unwrap_or_else(|| Err("ERR no reply".into())), o.unwrap_or_default()))
            .collect())
    }

    /// Run the updater `name` on several keys in order, each as [`Coordinator::update`] would:
    /// a run of keys whose first live home replica is this node runs here as one batch; a key
    /// coordinated elsewhere is forwarded on its own, after the run before it has finished — so
    /// effects happen in the order given.
    pub async fn update_batch(
        self: &Arc<Self>,
        name: &str,
        ops: Vec<(Vec<u8>, Vec<u8>, Quorum)>,
    ) -> Vec<Result<Vec<u8>, RingError>> {
        let mut out = Vec::with_capacity(ops.len());
        let mut run: Vec<(Vec<u8>, Vec<u8>, Quorum)> = Vec::with_capacity(ops.len());
        // The ring as it is now, read once for the batch (as `effective` and `home` read it).
        let ring = self.membership.ring();
        let members = ring.nodes().count();
        for (key, arg, q) in ops {
            // This node coordinates the key: the first live of its home replicas is this one.
            let local = q.check().is_ok() && self.first_live_is_me(&ring, &key, q.on_ring(members).n);
            if local {
                run.push((key, arg, q.on_ring(members)));
                continue;
            }
            out.extend(self.run_local(name, std::mem::take(&mut run)).await);
            out.push(self.update(name, &key, &arg, q).await);
        }
        out.extend(self.run_local(name, run).await);
        out
    }

    async fn run_local(
        self: &Arc<Self>,
        name: &str,
        run: Vec<(Vec<u8>, Vec<u8>, Quorum)>,
    ) -> Vec<Result<Vec<u8>, RingError>> {
        if run.is_empty() {
            return Vec::new();
        }
        match self.coordinate_update_batch(name, &run).await {
            Ok(r) => r,
            Err(e) => run.iter().map(|_| Err(e.clone())).collect(),
        }
    }

    /// Send `obj` to the other targets; answer once `w` replicas (this one included) hold it.
    /// Sends still in flight then go on in the background.
    async fn replicate(self: &Arc<Self>, key: &[u8], obj: Obj, q: Quorum, what: &str) -> Result<Obj, RingError> {
        self.replicate_shared(key, Arc::new(obj), q, what).await.map(Arc::unwrap_or_clone)
    }

    async fn replicate_shared(
        self: &Arc<Self>,
        key: &[u8],
        obj: Arc<Obj>,
        q: Quorum,
        what: &str,
    ) -> Result<Arc<Obj>, RingError> {
        let me = self.membership.me;
        // A one-node ring (the common case of the hot path): nobody else to send to.
        if q.w <= 1 && self.membership.ring().nodes().all(|id| id == me) {
            return Ok(obj);
        }
        let others: Vec<NodeId> = self.targets(key, q.n).into_iter().filter(|id| *id != me).collect();
        if q.w <= 1 && others.is_empty() {
            return Ok(obj);
        }
        let req = Arc::new(MergeReq { key: key.to_vec(), obj: (*obj).clone() });
        let mut pending: FuturesUnordered<_> = others
            .into_iter()
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

    /// [`Coordinator::get`], answering the object as this replica's cache shares it when this
    /// node is the key's only target (a one-node ring, or N = 1): no copy, nobody to repair.
    pub async fn get_shared(self: &Arc<Self>, key: &[u8], q: Quorum) -> Result<Arc<Obj>, RingError> {
        if let Some(answer) = self.get_local(key, q) {
            return answer;
        }
        self.get(key, q).await.map(Arc::new)
    }

    /// [`Self::get_shared`] when this node alone answers it, without waiting: the key has one
    /// replica (N=1 on this ring) and it is this node's. `None` when the read needs others.
    pub fn get_local(&self, key: &[u8], q: Quorum) -> Option<Result<Arc<Obj>, RingError>> {
        if let Err(e) = q.check() {
            return Some(Err(e));
        }
        let ring = self.membership.ring();
        if q.on_ring(ring.nodes().count()).n != 1 || !self.first_live_is_me(&ring, key, usize::MAX) {
            return None;
        }
        Some(match self.replica.get_shared(key) {
            Ok(o) => Ok(o.unwrap_or_default()),
            Err(e) => {
                tracing::warn!(error = %e, "ring: reading the local replica failed");
                Err(RingError::Unavailable { what: "read".into(), needed: 1, got: 0 })
            }
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
                        this.call::<_, WireObj>(peer, READ, &ReadReq { key })
                            .await
                            .map(|o| o.0)
                            .map_err(|e| e.to_string())
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
