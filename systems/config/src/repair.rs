//! Divergence repair: every replica audits itself against others and, when they prove it
//! wrong, replaces its state with a good replica's — without anyone asking.
//!
//! Raft keeps members' logs identical, but a replica's *state* can still go wrong (a bug, a
//! bad disk, a hand edit). A lagging replica needs nothing from here — the log or the push
//! stream brings it up to date; this is for one that holds the same version as the others with
//! different content.
//!
//! Each round (every `audit_ms`):
//! 1. Recompute every namespace's content hash from the keys actually held ([`Digest`]).
//! 2. Ask the peers for the hash they *recorded* for those same versions (each change carries
//!    the hash after it), so replicas at different versions can still be compared.
//! 3. A namespace is divergent when enough peers agree on one hash for that version and it is
//!    not this replica's: for a member, a majority of the voters, not counting itself (so one
//!    bad replica — even the leader — cannot talk the others into its state); for an edge, the
//!    member it follows.
//! 4. Fetch a snapshot from a peer that agreed (the leader first: it has applied at least as
//!    far as any follower), taken at a config index at or past this replica's, and install it:
//!    an edge takes it at once; a member takes it exactly when its log reaches that index, so
//!    its state stays a function of the log. A snapshot that arrives behind this replica (writes
//!    kept landing) is asked for again, a few times within the round.
//!
//! Every repair is counted and the last one described in `GET /v1/config/local`.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use basalt_runtime::node::CancellationToken;
use serde::{Deserialize, Serialize};

use crate::model::Digest;
use crate::service::{Backend, ConfigService, Install};

/// A repair, as `GET /v1/config/local` describes the last one.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RepairRecord {
    pub at_ms: u64,
    pub namespaces: Vec<String>,
    /// The replica whose state was taken.
    pub source: String,
    /// The config index the state was taken at.
    pub index: u64,
    /// `now`, or `pending` until this member's log reaches `index`.
    pub installed: String,
}

#[derive(Default)]
pub struct RepairLog {
    count: std::sync::atomic::AtomicU64,
    last: Mutex<Option<RepairRecord>>,
    /// Fault injection can hold repairs back, so a test can see the divergence first.
    paused_until: Mutex<Option<tokio::time::Instant>>,
}

impl RepairLog {
    pub fn count(&self) -> u64 {
        self.count.load(std::sync::atomic::Ordering::Relaxed)
    }

    pub fn last(&self) -> Option<RepairRecord> {
        self.last.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn pause(&self, d: Duration) {
        *self.paused_until.lock().unwrap_or_else(|e| e.into_inner()) = Some(tokio::time::Instant::now() + d);
    }

    fn paused(&self) -> bool {
        self.paused_until.lock().unwrap_or_else(|e| e.into_inner()).is_some_and(|t| tokio::time::Instant::now() < t)
    }

    fn record(&self, r: RepairRecord) {
        tracing::warn!(namespaces = ?r.namespaces, source = %r.source, index = r.index, "config replica repaired");
        self.count.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        *self.last.lock().unwrap_or_else(|e| e.into_inner()) = Some(r);
    }
}

/// `POST /v1/config/local/hashes`: the hashes a replica recorded for these versions.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HashesAsk {
    pub versions: BTreeMap<String, u64>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HashesReply {
    pub hashes: BTreeMap<String, Option<String>>,
}

/// The peers to compare with, and how many must agree to prove this replica wrong.
fn peers(svc: &ConfigService) -> Option<(Vec<String>, usize)> {
    match &svc.backend {
        Backend::Edge(e) => Some((vec![e.target()], 1)),
        Backend::Cluster { consensus, .. } => {
            let status = consensus.status().ok()?;
            let voters: Vec<_> = status.members.iter().filter(|m| m.voter).collect();
            let peers: Vec<String> =
                voters.iter().filter(|m| m.node_id != svc.node_id).map(|m| m.http_addr.clone()).collect();
            (!peers.is_empty()).then_some((peers, voters.len() / 2 + 1))
        }
    }
}

/// Which namespaces are proven divergent, with the peers that agree on the right state.
fn judge(mine: &[Digest], answers: &[(String, HashesReply)], needed: usize) -> BTreeMap<String, Vec<String>> {
    let mut out = BTreeMap::new();
    for d in mine {
        let mut votes: BTreeMap<&str, Vec<String>> = BTreeMap::new();
        for (peer, reply) in answers {
            if let Some(Some(h)) = reply.hashes.get(&d.name) {
                votes.entry(h.as_str()).or_default().push(peer.clone());
            }
        }
        if let Some((_, agreeing)) = votes.into_iter().find(|(h, v)| *h != d.content_hash && v.len() >= needed) {
            out.insert(d.name.clone(), agreeing);
        }
    }
    out
}

/// One audit round; answers the repair made, if any.
pub async fn audit_once(svc: &ConfigService, http: &basalt_runtime::reqwest::Client) -> Option<RepairRecord> {
    let (peers, needed) = peers(svc)?;
    let mine = svc.sm.read(|m| m.digests());
    if mine.is_empty() {
        return None;
    }
    let ask = HashesAsk { versions: mine.iter().map(|d| (d.name.clone(), d.version)).collect() };
    let mut answers = Vec::new();
    for peer in &peers {
        let r = http.post(format!("http://{peer}/v1/config/local/hashes")).json(&ask).send().await;
        if let Ok(r) = r
            && r.status().is_success()
            && let Ok(reply) = r.json::<HashesReply>().await
        {
            answers.push((peer.clone(), reply));
        }
    }
    let divergent = judge(&mine, &answers, needed);
    let mut sources: Vec<String> = divergent.values().next()?.clone();
    // The leader first: it has applied at least as far as any follower, so its snapshot is
    // rarely behind this replica (which then has to ask again).
    if let Backend::Cluster { consensus, .. } = &svc.backend
        && let Ok(status) = consensus.status()
        && let Some(leader) = status.leader_id.and_then(|id| status.members.iter().find(|m| m.node_id == id))
    {
        sources.sort_by_key(|s| *s != leader.http_addr);
    }
    let namespaces: Vec<String> = divergent.into_keys().collect();
    // Writes keep landing while a snapshot travels: a snapshot that arrives behind this replica
    // is asked for again, a few times, before waiting for the next round.
    let attempts = sources.iter().cycle().take(sources.len() * 4).cloned().collect::<Vec<_>>();
    for source in attempts {
        let url = format!("http://{source}/v1/config/local/snapshot?min_index={}", svc.sm.last_index());
        let Ok(r) = http.get(url).send().await else { continue };
        if !r.status().is_success() {
            continue;
        }
        let Ok(snap) = r.json::<crate::edge::Subscribed>().await else { continue };
        let Some(bytes) = snap.snapshot else { continue };
        let installed = match &svc.backend {
            Backend::Edge(e) => match e.install(snap.index, bytes.as_bytes()) {
                Ok(true) => "now",
                _ => continue,
            },
            Backend::Cluster { .. } => match svc.sm.install_at(snap.index, bytes.as_bytes()) {
                Ok(Install::Now) => "now",
                Ok(Install::Pending) => "pending",
                _ => continue,
            },
        };
        let record =
            RepairRecord { at_ms: crate::now_ms(), namespaces, source, index: snap.index, installed: installed.into() };
        svc.repairs.record(record.clone());
        return Some(record);
    }
    tracing::warn!(?namespaces, "config replica is divergent and no peer's snapshot could be installed yet");
    None
}

/// Audit every `interval` until stopped.
pub async fn run(svc: Arc<ConfigService>, interval: Duration, stop: CancellationToken) {
    let http = basalt_runtime::reqwest::Client::builder().timeout(Duration::from_secs(5)).build().unwrap_or_default();
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(interval) => {}
        }
        if !svc.repairs.paused() {
            audit_once(&svc, &http).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(name: &str, h: &str) -> Digest {
        Digest { name: name.into(), version: 5, content_hash: h.into() }
    }

    fn reply(pairs: &[(&str, Option<&str>)]) -> HashesReply {
        HashesReply { hashes: pairs.iter().map(|(n, h)| (n.to_string(), h.map(str::to_string))).collect() }
    }

    #[test]
    fn only_enough_agreeing_peers_prove_a_replica_wrong() {
        let mine = [d("a", "x"), d("b", "y")];
        let both = [
            ("p1".to_string(), reply(&[("a", Some("z")), ("b", Some("y"))])),
            ("p2".to_string(), reply(&[("a", Some("z")), ("b", None)])),
        ];
        assert_eq!(judge(&mine, &both, 2), BTreeMap::from([("a".to_string(), vec!["p1".to_string(), "p2".into()])]));
        // One peer is not a majority of three voters; disagreeing peers prove nothing.
        assert!(judge(&mine, &both[..1], 2).is_empty());
        let split = [("p1".to_string(), reply(&[("a", Some("z"))])), ("p2".to_string(), reply(&[("a", Some("w"))]))];
        assert!(judge(&mine, &split, 2).is_empty());
        // Peers that agree with this replica, or have not reached its version, prove nothing.
        let fine = [("p1".to_string(), reply(&[("a", Some("x"))])), ("p2".to_string(), reply(&[("a", None)]))];
        assert!(judge(&mine, &fine, 1).is_empty());
    }
}
