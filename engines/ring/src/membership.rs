//! Who is in the ring, and who is alive: gossip with a heartbeat failure detector.
//!
//! Every node keeps a table of members (id, addresses, a heartbeat counter, whether it left).
//! Each round (every `gossip_ms`) a node bumps its own heartbeat and exchanges its table with
//! one random peer; both keep, per member, the entry with the higher heartbeat. Failure
//! detection is phi-accrual (Hayashibara et al.) over the times this node sees each member's
//! heartbeat rise: with the mean interval learned per member, the suspicion after `t` ms of
//! silence is `phi = t / mean · log10(e)` (an exponential model), and a member is down once phi
//! passes `phi_threshold` — or, whatever the history, after `suspect_ms` of silence. A down
//! member stays in the
//! ring (its data is still its own), but requests route around it to the next nodes of the
//! preference list (sloppy quorum). A member that leaves is marked `left` and its partitions
//! move to the others. Heartbeats are wall-clock milliseconds (never going back), so a node
//! that restarts resumes above its old value. The table is persisted, so a restarted node
//! knows its peers before anyone gossips to it.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use basalt_ring::ring::{NodeId, Ring};
use basalt_runtime::storage::Namespace;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberInfo {
    pub node_id: NodeId,
    pub peer_addr: String,
    pub http_addr: String,
    /// Extra addresses systems publish (e.g. `resp` → the Redis-protocol listener).
    pub endpoints: BTreeMap<String, String>,
    pub heartbeat: u64,
    pub left: bool,
}

struct Inner {
    members: BTreeMap<NodeId, MemberInfo>,
    /// When this node last saw each member's heartbeat rise, and the mean interval between.
    seen: BTreeMap<NodeId, Arrivals>,
    ring: Arc<Ring>,
}

/// Heartbeat arrivals of one member, as this node saw them.
#[derive(Debug, Clone, Copy)]
struct Arrivals {
    last: Instant,
    mean_ms: f64,
}

impl Arrivals {
    /// Suspicion that the member is down, after the silence since its last heartbeat.
    fn phi(&self) -> f64 {
        self.last.elapsed().as_secs_f64() * 1000.0 / self.mean_ms.max(1.0) * std::f64::consts::LOG10_E
    }
}

pub struct Membership {
    pub me: NodeId,
    inner: Mutex<Inner>,
    suspect: Duration,
    phi_threshold: f64,
    /// The first guess of a member's heartbeat interval (the gossip interval).
    interval: Duration,
    partition_bits: u32,
    vnodes: u32,
    ns: Namespace,
}

const TABLE_KEY: &[u8] = b"members";

fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

impl Membership {
    pub fn open(
        me: MemberInfo,
        ns: Namespace,
        partition_bits: u32,
        vnodes: u32,
        detector: (Duration, f64, Duration),
    ) -> anyhow::Result<Self> {
        let (suspect, phi_threshold, interval) = detector;
        let mut members: BTreeMap<NodeId, MemberInfo> = match ns.get(TABLE_KEY)? {
            Some(b) => serde_json::from_slice(&b)?,
            None => BTreeMap::new(),
        };
        let id = me.node_id;
        let hb = members.get(&id).map_or(0, |m| m.heartbeat);
        let left = members.get(&id).is_some_and(|m| m.left);
        members.insert(id, MemberInfo { heartbeat: hb.max(now_ms()), left, ..me });
        let ring = Arc::new(Self::build(partition_bits, vnodes, &members));
        let m = Self {
            me: id,
            inner: Mutex::new(Inner { members, seen: BTreeMap::new(), ring }),
            suspect,
            phi_threshold,
            interval,
            partition_bits,
            vnodes,
            ns,
        };
        m.persist()?;
        Ok(m)
    }

    fn build(bits: u32, vnodes: u32, members: &BTreeMap<NodeId, MemberInfo>) -> Ring {
        Ring::with_nodes(bits, vnodes, members.values().filter(|m| !m.left).map(|m| m.node_id))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn persist(&self) -> anyhow::Result<()> {
        let bytes = serde_json::to_vec(&self.lock().members)?;
        self.ns.put(TABLE_KEY, bytes)?;
        Ok(())
    }

    pub fn ring(&self) -> Arc<Ring> {
        self.lock().ring.clone()
    }

    pub fn table(&self) -> Vec<MemberInfo> {
        self.lock().members.values().cloned().collect()
    }

    pub fn get(&self, id: NodeId) -> Option<MemberInfo> {
        self.lock().members.get(&id).cloned()
    }

    /// Alive: this node, or a member whose heartbeat rose within `suspect_ms`.
    pub fn alive(&self, id: NodeId) -> bool {
        if id == self.me {
            return true;
        }
        let g = self.lock();
        g.members.get(&id).is_some_and(|m| !m.left)
            && g.seen.get(&id).is_some_and(|a| a.last.elapsed() < self.suspect && a.phi() < self.phi_threshold)
    }

    /// Heard from recently, whether or not it left the ring.
    pub fn reachable(&self, id: NodeId) -> bool {
        if id == self.me {
            return true;
        }
        let g = self.lock();
        g.seen.get(&id).is_some_and(|a| a.last.elapsed() < self.suspect && a.phi() < self.phi_threshold)
    }

    /// A new heartbeat for this node (once per gossip round).
    pub fn tick(&self) {
        let mut g = self.lock();
        if let Some(m) = g.members.get_mut(&self.me) {
            m.heartbeat = (m.heartbeat + 1).max(now_ms());
        }
    }

    /// Set an endpoint this node publishes (e.g. its RESP address).
    pub fn publish(&self, name: &str, addr: String) {
        let mut g = self.lock();
        if let Some(m) = g.members.get_mut(&self.me) {
            m.endpoints.insert(name.into(), addr);
            m.heartbeat = (m.heartbeat + 1).max(now_ms());
        }
    }

    /// Mark this node as leaving (or back): its partitions move to the others.
    pub fn set_left(&self, left: bool) -> anyhow::Result<()> {
        {
            let mut g = self.lock();
            if let Some(m) = g.members.get_mut(&self.me) {
                m.left = left;
                m.heartbeat = (m.heartbeat + 1).max(now_ms());
            }
            g.ring = Arc::new(Self::build(self.partition_bits, self.vnodes, &g.members));
        }
        self.persist()
    }

    /// Take in a peer's table. Answers whether the ring (who is in it) changed.
    pub fn merge(&self, remote: Vec<MemberInfo>) -> bool {
        let changed = {
            let mut g = self.lock();
            let before: Vec<(NodeId, bool)> = g.members.values().map(|m| (m.node_id, m.left)).collect();
            for r in remote {
                if r.node_id == self.me {
                    // Someone remembers us from before a restart: jump above it.
                    if let Some(m) = g.members.get_mut(&self.me)
                        && r.heartbeat >= m.heartbeat
                    {
                        m.heartbeat = r.heartbeat + 1;
                    }
                    continue;
                }
                let newer = g.members.get(&r.node_id).is_none_or(|m| r.heartbeat > m.heartbeat);
                if newer {
                    let now = Instant::now();
                    let first = self.interval.as_secs_f64() * 1000.0;
                    let a = match g.seen.get(&r.node_id) {
                        // A moving average of the intervals, so the detector adapts to the load.
                        Some(a) => {
                            let gap = now.duration_since(a.last).as_secs_f64() * 1000.0;
                            Arrivals {
                                last: now,
                                mean_ms: 0.9 * a.mean_ms + 0.1 * gap.min(self.suspect.as_secs_f64() * 1000.0),
                            }
                        }
                        None => Arrivals { last: now, mean_ms: first },
                    };
                    g.seen.insert(r.node_id, a);
                    g.members.insert(r.node_id, r);
                }
            }
            let after: Vec<(NodeId, bool)> = g.members.values().map(|m| (m.node_id, m.left)).collect();
            let changed = before != after;
            if changed {
                g.ring = Arc::new(Self::build(self.partition_bits, self.vnodes, &g.members));
            }
            changed
        };
        if changed && let Err(e) = self.persist() {
            tracing::warn!(error = %e, "ring: persisting the member table failed");
        }
        changed
    }

    /// Peers to gossip with: every other member that has not left.
    pub fn peers(&self) -> Vec<MemberInfo> {
        self.lock().members.values().filter(|m| m.node_id != self.me && !m.left).cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suspicion_grows_with_silence_and_with_a_steadier_history() {
        let ago = |ms| Instant::now() - Duration::from_millis(ms);
        let steady = Arrivals { last: ago(1000), mean_ms: 100.0 };
        let slow = Arrivals { last: ago(1000), mean_ms: 500.0 };
        let recent = Arrivals { last: ago(100), mean_ms: 100.0 };
        assert!(steady.phi() > slow.phi(), "the same silence is more suspicious from a chatty member");
        assert!(steady.phi() > recent.phi());
        // t / mean · log10(e): 10 intervals of silence ≈ 4.3.
        assert!((steady.phi() - 4.34).abs() < 0.2, "{}", steady.phi());
    }
}
