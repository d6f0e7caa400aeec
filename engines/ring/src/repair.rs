//! Background repair: hinted handoff (and rebalancing), and Merkle anti-entropy.
//!
//! **Handoff.** A node may hold objects of partitions it is not a home replica of: it stood
//! in for a replica that was down (a sloppy-quorum write — the object is the hint), or the
//! ring changed under it (a join or a leave). Every `handoff_ms` it offers each such object to
//! the partition's home replicas that are alive; once all N have taken it, it deletes its copy
//! (only if unchanged meanwhile). A node that gives away objects it coordinated takes a new
//! actor id first, so a dot is never reused should it own the partition again.
//!
//! **Anti-entropy.** Every `ae_ms` a node compares, with each live peer, the Merkle roots of
//! the partitions they both replicate; for partitions that differ it fetches the peer's leaves,
//! and for leaf buckets that differ the two exchange their objects and merge. Whatever a
//! replica missed (a write while it was down and no hint reached it, a wiped disk) comes back.
//!
//! **Tombstone collection.** A deleted key's object (only tombstone siblings) is kept until it
//! is certain that no copy of anything it deleted exists anywhere: the key's first home replica
//! (the decider) waits until it has seen the same tombstone for `tombstone_grace_ms`, then asks
//! *every* member of the table — home replicas, stand-ins, nodes that left — and purges only if
//! all of them answer and each holds exactly that tombstone or nothing; each then deletes it
//! only if it still holds exactly that tombstone. A member that is down or does not answer
//! blocks collection (nothing is lost by waiting), so an old value can never come back from a
//! replica or a hint that was out of reach.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use basalt_ring::ring::NodeId;
use basalt_runtime::node::CancellationToken;
use serde::{Deserialize, Serialize};

use crate::coordinator::Coordinator;
use crate::replica::Obj;

pub const HANDOFF: &str = "/ring/handoff";
pub const AE_ROOTS: &str = "/ring/ae/roots";
pub const AE_EXCHANGE: &str = "/ring/ae/exchange";
pub const GC_CHECK: &str = "/ring/gc/check";
pub const GC_PURGE: &str = "/ring/gc/purge";

/// Keys to check or purge, with the tombstone the decider holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GcReq(pub Vec<(Vec<u8>, Obj)>);

/// Per key: holds exactly that tombstone or nothing (true), or something else (false).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GcResp(pub Vec<bool>);

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Objects(pub Vec<(Vec<u8>, Obj)>);

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RootsReq {
    pub roots: Vec<(u32, u64)>,
}

/// For each partition whose root differs: the answering replica's leaves.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RootsResp {
    pub differing: Vec<(u32, Vec<u64>)>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ExchangeReq {
    pub partition: u32,
    pub buckets: Vec<usize>,
    pub objects: Vec<(Vec<u8>, Obj)>,
}

#[derive(Debug, Default, Clone, Serialize)]
pub struct RepairStats {
    pub handed_off: u64,
    pub ae_rounds: u64,
    pub ae_objects_received: u64,
    pub tombstones_collected: u64,
    /// Collection rounds that found a tombstone due but a member out of reach.
    pub tombstones_blocked: u64,
}

pub struct Repairer {
    pub coord: Arc<Coordinator>,
    pub n: usize,
    pub stats: std::sync::Mutex<RepairStats>,
    pub tombstone_grace: Duration,
    /// Tombstones this node decides for: when it first saw each (as it is now).
    pub tombstones: std::sync::Mutex<BTreeMap<Vec<u8>, (Obj, std::time::Instant)>>,
}

const BATCH: usize = 200;

impl Repairer {
    fn stat(&self, f: impl FnOnce(&mut RepairStats)) {
        f(&mut self.stats.lock().unwrap_or_else(|e| e.into_inner()));
    }

    /// One handoff pass: every object of a partition this node is not a home replica of.
    pub async fn handoff_once(&self) {
        let c = &self.coord;
        let me = c.membership.me;
        let ring = c.membership.ring();
        for p in c.replica.partitions_held() {
            let home = ring.replicas(p, self.n);
            if home.contains(&me) {
                continue;
            }
            if !home.iter().all(|h| c.membership.alive(*h)) {
                continue; // a hint waits until every owner can take it
            }
            let Ok(objects) = c.replica.objects(p, None) else { continue };
            for chunk in objects.chunks(BATCH) {
                let batch = Objects(chunk.to_vec());
                let mut all = true;
                for h in &home {
                    let addr = c.membership.get(*h).map(|m| m.peer_addr).unwrap_or_default();
                    if c.transport.call::<_, ()>(*h, &addr, HANDOFF, &batch, None).await.is_err() {
                        all = false;
                        break;
                    }
                }
                if !all {
                    break;
                }
                for (key, obj) in chunk {
                    if obj.vv.get(c.actor()) > 0
                        && let Err(e) = c.renew_actor().await
                    {
                        tracing::warn!(error = %e, "ring: saving a new actor id failed; keeping the data");
                        return;
                    }
                    if let Ok(true) = c.replica.remove_if(key, obj).await {
                        self.stat(|s| s.handed_off += 1);
                    }
                }
            }
        }
    }

    /// One anti-entropy pass with every live peer.
    pub async fn anti_entropy_once(&self) {
        let c = &self.coord;
        let me = c.membership.me;
        let ring = c.membership.ring();
        let mut shared: BTreeMap<NodeId, Vec<u32>> = BTreeMap::new();
        for p in 0..ring.partitions() {
            let reps = ring.replicas(p, self.n);
            if !reps.contains(&me) {
                continue;
            }
            for r in reps.into_iter().filter(|r| *r != me && c.membership.alive(*r)) {
                shared.entry(r).or_default().push(p);
            }
        }
        for (peer, parts) in shared {
            let addr = c.membership.get(peer).map(|m| m.peer_addr).unwrap_or_default();
            let roots = RootsReq { roots: parts.iter().map(|p| (*p, c.replica.root(*p))).collect() };
            let Ok(resp) = c.transport.call::<_, RootsResp>(peer, &addr, AE_ROOTS, &roots, None).await else {
                continue;
            };
            for (p, theirs) in resp.differing {
                let mine = c.replica.leaves(p);
                let buckets: Vec<usize> = (0..mine.len()).filter(|i| theirs.get(*i) != Some(&mine[*i])).collect();
                if buckets.is_empty() {
                    continue;
                }
                let Ok(objects) = c.replica.objects(p, Some(&buckets)) else { continue };
                let req = ExchangeReq { partition: p, buckets, objects };
                let Ok(back) = c.transport.call::<_, Objects>(peer, &addr, AE_EXCHANGE, &req, None).await else {
                    continue;
                };
                for (key, obj) in back.0 {
                    if let Ok((_, true)) = c.replica.merge(&key, &obj).await {
                        self.stat(|s| s.ae_objects_received += 1);
                    }
                }
            }
        }
        self.stat(|s| s.ae_rounds += 1);
    }

    /// One collection pass over the tombstones this node decides for.
    pub async fn collect_tombstones_once(&self) {
        let c = &self.coord;
        let me = c.membership.me;
        let ring = c.membership.ring();
        let Ok(all) = c.replica.tombstones() else { return };
        let mut due = Vec::new();
        {
            let mut seen = self.tombstones.lock().unwrap_or_else(|e| e.into_inner());
            let mut now_seen = BTreeMap::new();
            for (key, obj) in all {
                if !obj.is_deleted()
                    || ring.replicas(ring.partition_of(basalt_ring::hash::hash64(&key)), self.n).first() != Some(&me)
                {
                    continue;
                }
                let since = match seen.remove(&key) {
                    Some((o, t)) if o == obj => t,
                    _ => std::time::Instant::now(),
                };
                if since.elapsed() >= self.tombstone_grace {
                    due.push((key.clone(), obj.clone()));
                }
                now_seen.insert(key, (obj, since));
            }
            *seen = now_seen;
        }
        if due.is_empty() {
            return;
        }
        for chunk in due.chunks(BATCH) {
            let req = GcReq(chunk.to_vec());
            let mut ok = vec![true; chunk.len()];
            let mut everyone = true;
            // Every member — except one that left the ring and is gone (it handed its data off
            // before going; a leaver that is still up is asked like everyone else).
            for m in c.membership.table().into_iter().filter(|m| !m.left || c.membership.reachable(m.node_id)) {
                if m.node_id == me {
                    continue;
                }
                let timeout = Some(Duration::from_secs(1));
                match c.transport.call::<_, GcResp>(m.node_id, &m.peer_addr, GC_CHECK, &req, timeout).await {
                    Ok(GcResp(flags)) if flags.len() == ok.len() => {
                        for (o, f) in ok.iter_mut().zip(flags) {
                            *o &= f;
                        }
                    }
                    _ => {
                        everyone = false;
                        break;
                    }
                }
            }
            if !everyone {
                self.stat(|s| s.tombstones_blocked += 1);
                return; // someone is out of reach: wait
            }
            let purge = GcReq(chunk.iter().zip(&ok).filter(|(_, f)| **f).map(|(kv, _)| kv.clone()).collect());
            if purge.0.is_empty() {
                continue;
            }
            for m in c.membership.table().into_iter().filter(|m| !m.left || c.membership.reachable(m.node_id)) {
                if m.node_id != me {
                    let timeout = Some(Duration::from_secs(1));
                    let _ = c.transport.call::<_, GcResp>(m.node_id, &m.peer_addr, GC_PURGE, &purge, timeout).await;
                }
            }
            let n = self.purge(&purge).await.0.iter().filter(|f| **f).count();
            self.stat(|s| s.tombstones_collected += n as u64);
            let mut seen = self.tombstones.lock().unwrap_or_else(|e| e.into_inner());
            for (k, _) in &purge.0 {
                seen.remove(k);
            }
        }
    }

    /// The member side of collection: does this node hold exactly these tombstones, or nothing?
    pub fn gc_check(&self, req: &GcReq) -> GcResp {
        let r = &self.coord.replica;
        GcResp(
            req.0
                .iter()
                .map(|(k, t)| match r.get_stored(k) {
                    Ok(None) => true,
                    Ok(Some(o)) => o == *t,
                    Err(_) => false,
                })
                .collect(),
        )
    }

    /// Delete each key still holding exactly the given tombstone. A node that deletes objects
    /// carrying its own dots takes a new actor id first, so those dots are never issued again.
    pub async fn purge(&self, req: &GcReq) -> GcResp {
        let actor = self.coord.actor();
        if req.0.iter().any(|(_, t)| t.vv.get(actor) > 0)
            && let Err(e) = self.coord.renew_actor().await
        {
            tracing::warn!(error = %e, "ring: saving a new actor id failed; not collecting");
            return GcResp(vec![false; req.0.len()]);
        }
        let mut out = Vec::with_capacity(req.0.len());
        for (k, t) in &req.0 {
            out.push(self.coord.replica.remove_if(k, t).await.unwrap_or(false));
        }
        GcResp(out)
    }

    /// The peer side of `anti_entropy_once`'s first step.
    pub fn roots(&self, req: RootsReq) -> RootsResp {
        let r = &self.coord.replica;
        RootsResp {
            differing: req
                .roots
                .into_iter()
                .filter(|(p, root)| r.root(*p) != *root)
                .map(|(p, _)| (p, r.leaves(p)))
                .collect(),
        }
    }

    /// The peer side of the exchange: merge theirs, answer ours (as they were before).
    pub async fn exchange(&self, req: ExchangeReq) -> anyhow::Result<Objects> {
        let r = &self.coord.replica;
        let ours = r.objects(req.partition, Some(&req.buckets))?;
        for (key, obj) in &req.objects {
            r.merge(key, obj).await?;
        }
        Ok(Objects(ours))
    }

    pub async fn run(self: Arc<Self>, handoff: Duration, ae: Duration, stop: CancellationToken) {
        let mut h = tokio::time::interval(handoff);
        let mut a = tokio::time::interval(ae);
        h.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        a.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = h.tick() => self.handoff_once().await,
                _ = a.tick() => {
                    self.anti_entropy_once().await;
                    self.collect_tombstones_once().await;
                }
            }
        }
    }
}
