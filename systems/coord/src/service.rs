//! The coordination service on the consensus engine: proposals, linearizable and serializable
//! reads, lease time (kept by the leader), and the lock and election recipes etcd's v3lock and
//! v3election services run on top of the key-value store.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use basalt_consensus::{Consensus, ConsensusError};
use basalt_mvcc as m;
use basalt_runtime::transport::Transport;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;
use tonic::Status;

use crate::convert::Header;
use crate::state::{Answer, Command, CoordSm, Reply};

/// Where followers send lease keep-alives and time-to-live questions (the leader's peer listener).
pub const LEASE_PATH: &str = "/coord/lease";
/// Every Basalt cluster answers with this cluster id.
pub const CLUSTER_ID: u64 = 0x0ba5_a17c_0001;

/// A lease question forwarded to the leader.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub enum LeaseAsk {
    KeepAlive(i64),
    TimeToLive(i64),
}

/// The leader's clock for leases: a deadline per lease. A new leader starts every lease's full
/// TTL again, so a leader change never expires a lease early (it may expire it late).
#[derive(Default)]
struct LeaseClock {
    deadlines: HashMap<i64, Instant>,
    /// The term these deadlines were kept in (`None` when not leading). Kept by term, not as
    /// "leading or not": a leader that loses the lead and wins it back between two looks must
    /// still start every lease afresh — another leader may have renewed them in between.
    term: Option<u64>,
}

/// The term this node leads in, if it leads.
fn leading_term(status: Option<&basalt_consensus::ClusterStatus>) -> Option<u64> {
    status.filter(|s| s.state == "leader").map(|s| s.term)
}

fn ttl_from(now: Instant, ttl: i64) -> Instant {
    now + Duration::from_secs(ttl.max(0) as u64)
}

impl LeaseClock {
    /// Line the clock up with this node's role (`leading`: the term it leads in): deadlines are
    /// cleared unless it leads in the term they were kept in. Whether it leads now.
    fn align(&mut self, leading: Option<u64>) -> bool {
        if leading != self.term {
            self.deadlines.clear();
            self.term = leading;
        }
        leading.is_some()
    }

    /// A keep-alive for lease `id` (`granted`: its TTL if it exists): the TTL it now has, or 0.
    /// Past its deadline a lease is as good as revoked — the keeper is revoking it, or will at
    /// its next tick — so it is not renewed (etcd's lessor refuses an expired lease too):
    /// renewing it would answer a TTL for a lease about to be gone.
    fn keep_alive(&mut self, id: i64, granted: Option<i64>, now: Instant) -> i64 {
        match granted {
            Some(_) if self.deadlines.get(&id).is_some_and(|d| *d <= now) => 0,
            Some(ttl) => {
                self.deadlines.insert(id, ttl_from(now, ttl));
                ttl
            }
            None => 0,
        }
    }

    /// Seconds left on lease `id`, -1 if there is no such lease.
    fn time_to_live(&self, id: i64, granted: Option<i64>, now: Instant) -> i64 {
        match (granted, self.deadlines.get(&id)) {
            (Some(_), Some(d)) => d.saturating_duration_since(now).as_secs_f64().ceil() as i64,
            (Some(ttl), None) => ttl,
            (None, _) => -1,
        }
    }

    /// The keeper's look at the `live` leases (id, granted TTL): every lease this clock has not
    /// seen starts its full TTL from `now` (all of them, when this node has just taken the
    /// lead), forgotten ones are dropped; the ids past their deadline.
    fn expired(&mut self, live: &[(i64, i64)], now: Instant) -> Vec<i64> {
        let ids: std::collections::HashSet<i64> = live.iter().map(|(id, _)| *id).collect();
        self.deadlines.retain(|id, _| ids.contains(id));
        for (id, ttl) in live {
            self.deadlines.entry(*id).or_insert(ttl_from(now, *ttl));
        }
        let mut out: Vec<i64> = self.deadlines.iter().filter(|(_, d)| **d <= now).map(|(id, _)| *id).collect();
        out.sort_unstable();
        out
    }
}

pub struct Coord {
    pub sm: Arc<CoordSm>,
    pub consensus: Arc<Consensus>,
    pub node_id: u64,
    pub transport: Transport,
    leases: Mutex<LeaseClock>,
    term: AtomicU64,
    /// This node's etcd client URL (set when the listener is bound).
    pub client_url: std::sync::OnceLock<String>,
}

pub fn unavailable(e: ConsensusError) -> Status {
    match e {
        ConsensusError::NoLeader { .. } => Status::unavailable("etcdserver: no leader"),
        ConsensusError::Unknown(_) => Status::unavailable("etcdserver: request timed out"),
        ConsensusError::NotRunning => Status::unavailable("etcdserver: server stopped"),
        other => Status::internal(other.to_string()),
    }
}

impl Coord {
    pub fn new(sm: Arc<CoordSm>, consensus: Arc<Consensus>, node_id: u64, transport: Transport) -> Self {
        Self {
            sm,
            consensus,
            node_id,
            transport,
            leases: Mutex::default(),
            term: AtomicU64::new(0),
            client_url: std::sync::OnceLock::new(),
        }
    }

    pub fn header(&self) -> Header {
        Header { cluster_id: CLUSTER_ID, member_id: self.node_id, raft_term: self.term.load(Ordering::Relaxed) }
    }

    pub async fn propose(&self, cmd: &Command) -> Result<Reply, Status> {
        let bytes = postcard::to_allocvec(cmd).map_err(|e| Status::internal(e.to_string()))?;
        let reply = self.consensus.propose_batched(crate::state::SYSTEM, bytes).await.map_err(unavailable)?;
        let answer: Answer = postcard::from_bytes(&reply).map_err(|e| Status::internal(format!("bad reply: {e}")))?;
        answer.map_err(crate::convert::status)
    }

    /// Wait until this node has applied everything committed before the call (unless
    /// `serializable`): reads after it are linearizable.
    pub async fn barrier(&self, serializable: bool) -> Result<(), Status> {
        if !serializable {
            self.consensus.read_barrier().await.map_err(unavailable)?;
        }
        Ok(())
    }

    pub async fn range(&self, req: &m::RangeRequest) -> Result<m::RangeResponse, Status> {
        self.barrier(req.serializable).await?;
        self.sm.read(|s| s.store.range(req)).map_err(crate::convert::status)
    }

    /// A read-only transaction (only ranges, as etcd defines it) is served here after a read
    /// barrier (none when every range is serializable), not through the log — as etcd serves
    /// it; the answer is the one the log would give (`basalt-mvcc`'s property tests).
    pub async fn txn(&self, req: m::TxnRequest) -> Result<m::TxnResponse, Status> {
        if basalt_mvcc::is_read_only(&req) {
            self.barrier(basalt_mvcc::is_serializable(&req)).await?;
            if let Some(r) = self.sm.read(|s| s.store.txn_read_only(&req)) {
                return r.map_err(crate::convert::status);
            }
        }
        match self.propose(&Command::Txn(req)).await? {
            Reply::Txn(r) => Ok(r),
            other => Err(Status::internal(format!("unexpected reply {other:?}"))),
        }
    }

    // ---- leases ----

    fn leader_addr(&self) -> Result<(u64, String), Status> {
        let s = self.consensus.status().map_err(unavailable)?;
        let id = s.leader_id.ok_or_else(|| Status::unavailable("etcdserver: no leader"))?;
        let m =
            s.members.iter().find(|m| m.node_id == id).ok_or_else(|| Status::unavailable("etcdserver: no leader"))?;
        Ok((id, m.peer_addr.clone()))
    }

    /// Refresh a lease (on the leader, or forwarded to it); the TTL granted, 0 if there is no
    /// such lease (etcd's answer).
    pub async fn keep_alive(&self, id: i64) -> Result<i64, Status> {
        self.lease_ask(LeaseAsk::KeepAlive(id)).await
    }

    /// Seconds left on a lease, -1 if there is no such lease.
    pub async fn time_to_live(&self, id: i64) -> Result<i64, Status> {
        self.lease_ask(LeaseAsk::TimeToLive(id)).await
    }

    async fn lease_ask(&self, ask: LeaseAsk) -> Result<i64, Status> {
        if let Some(answer) = self.answer_lease_confirmed(ask).await {
            return Ok(answer);
        }
        let (leader, addr) = self.leader_addr()?;
        if leader == self.node_id {
            // This node leads in its own eyes but could not confirm it: no one to ask.
            return Err(Status::unavailable("etcdserver: no leader"));
        }
        self.transport
            .call::<_, i64>(leader, &addr, LEASE_PATH, &ask, Some(Duration::from_secs(2)))
            .await
            .map_err(|e| Status::unavailable(format!("etcdserver: leader unreachable: {e}")))
    }

    /// Answer on the leader once it has confirmed that it still leads (a read-index round: a
    /// majority answered its heartbeat after the ask arrived); `None` on any other node, or if
    /// it no longer leads. Without the round, a leader cut off from the others — which does not
    /// know it has been replaced — would renew a lease on its own clock while the new leader
    /// runs the lease out on its own: the client holds a keep-alive answer with a TTL for a
    /// lease (and lock) already gone. Time-to-live questions are answered without the round.
    pub async fn answer_lease_confirmed(&self, ask: LeaseAsk) -> Option<i64> {
        if let LeaseAsk::KeepAlive(_) = ask {
            if !self.consensus.status().is_ok_and(|s| s.state == "leader") {
                return None;
            }
            self.consensus.read_barrier().await.ok()?;
        }
        self.answer_lease(ask)
    }

    /// Answer on the leader (no round; see [`Coord::answer_lease_confirmed`]); `None` on any
    /// other node.
    fn answer_lease(&self, ask: LeaseAsk) -> Option<i64> {
        let mut clock = self.leases.lock().unwrap_or_else(|e| e.into_inner());
        if !clock.align(leading_term(self.consensus.status().ok().as_ref())) {
            return None;
        }
        let now = Instant::now();
        Some(match ask {
            LeaseAsk::KeepAlive(id) => clock.keep_alive(id, self.granted_ttl(id), now),
            LeaseAsk::TimeToLive(id) => clock.time_to_live(id, self.granted_ttl(id), now),
        })
    }

    fn granted_ttl(&self, id: i64) -> Option<i64> {
        self.sm.read(|s| s.store.lease_time_to_live(id, false).ok().map(|r| r.granted_ttl))
    }

    /// The leader's lease keeper: on becoming leader every lease gets its full TTL again; leases
    /// past their deadline are revoked through the log (which deletes their keys).
    pub async fn lease_keeper(self: Arc<Self>, stop: basalt_runtime::node::CancellationToken) {
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(Duration::from_millis(100)) => {}
            }
            let Ok(status) = self.consensus.status() else { continue };
            self.term.store(status.term, Ordering::Relaxed);
            let expired: Vec<i64> = {
                let mut clock = self.leases.lock().unwrap_or_else(|e| e.into_inner());
                if !clock.align(leading_term(Some(&status))) {
                    continue;
                }
                let live: Vec<(i64, i64)> = self.sm.read(|s| {
                    s.store
                        .leases()
                        .into_iter()
                        .filter_map(|id| s.store.lease_time_to_live(id, false).ok().map(|r| (id, r.granted_ttl)))
                        .collect()
                });
                clock.expired(&live, Instant::now())
            };
            for id in expired {
                // Carries the term: applied only if still appended in it (`State::apply_in_term`).
                match self.propose(&Command::LeaseExpire { id, term: status.term }).await {
                    Ok(Reply::ExpiryIgnored) => {
                        tracing::info!(lease = id, term = status.term, "coord: a lease expiry from a lost term ignored")
                    }
                    Ok(_) => tracing::info!(lease = id, term = status.term, "coord: lease expired and revoked"),
                    Err(e) if e.code() == tonic::Code::NotFound => {}
                    Err(e) => tracing::debug!(lease = id, error = %e, "coord: lease expiry not applied yet"),
                }
            }
        }
    }

    /// Announce this node's etcd client URL until it is in the replicated member list.
    pub async fn register(self: Arc<Self>, client_url: String, stop: basalt_runtime::node::CancellationToken) {
        loop {
            if self.sm.read(|s| s.members.get(&self.node_id) == Some(&client_url)) {
                return;
            }
            let cmd = Command::Register { node_id: self.node_id, client_url: client_url.clone() };
            if self.propose(&cmd).await.is_ok() {
                return;
            }
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(Duration::from_millis(200)) => {}
            }
        }
    }

    // ---- lock and election: etcd's recipes, run on the server ----

    /// Create `name/<lease hex>` with the lease unless it exists; its create revision is the
    /// waiter's place in line (and, for a lock, the fencing token). Also answers whether that key
    /// was the oldest under `name/` — the owner — when the write committed (read in the same
    /// transaction, as etcd's v3lock does): then there is nothing to wait for.
    async fn enqueue(&self, name: &[u8], lease: i64, value: &[u8]) -> Result<(m::KeyValue, bool), Status> {
        if lease == 0 {
            return Err(Status::invalid_argument("etcdserver: a lease is required"));
        }
        let mut key = name.to_vec();
        key.extend_from_slice(format!("/{lease:x}").as_bytes());
        let mut prefix = name.to_vec();
        prefix.push(b'/');
        let oldest = m::RequestOp::Range(m::RangeRequest {
            limit: 1,
            sort_order: m::SortOrder::Ascend,
            sort_target: m::SortTarget::Create,
            keys_only: true,
            ..m::RangeRequest::prefix(&prefix)
        });
        let put = m::PutRequest { key: key.clone(), value: value.to_vec(), lease, ..Default::default() };
        let txn = m::TxnRequest {
            compare: vec![m::Compare::new(key.clone(), m::CompareResult::Equal, m::CompareTarget::Create(0))],
            success: vec![m::RequestOp::Put(put), oldest.clone()],
            failure: vec![m::RequestOp::Range(m::RangeRequest::key(key.clone())), oldest],
        };
        let r = self.txn(txn).await?;
        let mut responses = r.responses.into_iter();
        let mine = if r.succeeded {
            responses.next();
            m::KeyValue {
                key,
                create_revision: r.revision,
                mod_revision: r.revision,
                version: 1,
                value: value.to_vec(),
                lease,
            }
        } else {
            match responses.next() {
                Some(m::ResponseOp::Range(rr)) => {
                    rr.kvs.into_iter().next().ok_or_else(|| Status::aborted("lost the key"))?
                }
                _ => return Err(Status::internal("unexpected txn answer")),
            }
        };
        let owns = match responses.next() {
            Some(m::ResponseOp::Range(rr)) => {
                rr.kvs.first().is_some_and(|o| o.key == mine.key && o.create_revision == mine.create_revision)
            }
            _ => return Err(Status::internal("unexpected txn answer")),
        };
        Ok((mine, owns))
    }

    /// The owner of `name`: the key under `name/` with the lowest create revision.
    /// The oldest key under `name/` (the lock's holder, the election's leader), and the store
    /// revision it was read at — read together: the applied-revision signal (`sm.revision()`)
    /// moves just after the store does, so reading it apart could pair this key with an
    /// earlier revision, at which another key may have led.
    pub fn owner(&self, name: &[u8]) -> (Option<m::KeyValue>, i64) {
        let mut prefix = name.to_vec();
        prefix.push(b'/');
        self.sm.read(|s| {
            let r = s.store.range(&m::RangeRequest::prefix(&prefix)).ok();
            (r.and_then(|r| r.kvs.into_iter().min_by_key(|kv| kv.create_revision)), s.store.revision())
        })
    }

    /// Wait until this node's store has applied revision `rev` (a write this node proposed
    /// may have been answered by the leader first).
    async fn applied(&self, rev: i64) -> Result<(), Status> {
        let mut rx = self.sm.subscribe();
        while self.sm.revision() < rev {
            rx.changed().await.map_err(|_| Status::unavailable("etcdserver: server stopped"))?;
        }
        Ok(())
    }

    /// Wait until `mine` is the oldest key under `name/`. Fails if the key disappears first
    /// (its lease expired or was revoked).
    async fn wait_turn(&self, name: &[u8], mine: &m::KeyValue) -> Result<(), Status> {
        let mut rx = self.sm.subscribe();
        // Once this node has applied the write that queued `mine`, every key queued before it
        // is visible here, and one gone here is gone for good: ownership seen here is real, so
        // no read-index round is needed (etcd's v3lock does a linearizable range instead).
        self.applied(mine.mod_revision).await?;
        loop {
            rx.borrow_and_update();
            let exists =
                self.sm.read(|s| s.store.get(&mine.key).is_some_and(|kv| kv.create_revision == mine.create_revision));
            if !exists {
                return Err(Status::not_found("etcdserver: requested lease not found"));
            }
            if self.owner(name).0.is_some_and(|o| o.key == mine.key) {
                return Ok(());
            }
            rx.changed().await.map_err(|_| Status::unavailable("etcdserver: server stopped"))?;
        }
    }

    /// v3lock `Lock`: the key held; its create revision is the fencing token.
    pub async fn lock(&self, name: &[u8], lease: i64) -> Result<m::KeyValue, Status> {
        let (mine, owns) = self.enqueue(name, lease, b"").await?;
        if !owns {
            self.wait_turn(name, &mine).await?;
        }
        Ok(mine)
    }

    /// v3election `Campaign`: returns once this candidate leads.
    pub async fn campaign(&self, name: &[u8], lease: i64, value: &[u8]) -> Result<m::KeyValue, Status> {
        let (mut mine, owns) = self.enqueue(name, lease, value).await?;
        if mine.value != value {
            // Already a candidate with this lease: take the new value.
            mine = self.proclaim(&mine.key, mine.create_revision, value).await?.0;
        }
        if !owns {
            self.wait_turn(name, &mine).await?;
        }
        Ok(mine)
    }

    /// v3election `Proclaim`: a new value, only while `key` (created at `rev`) still leads. The
    /// key as it is now, and the revision of this write (what etcd's reply header carries).
    pub async fn proclaim(&self, key: &[u8], rev: i64, value: &[u8]) -> Result<(m::KeyValue, i64), Status> {
        let put = m::PutRequest { key: key.to_vec(), value: value.to_vec(), ignore_lease: true, ..Default::default() };
        let txn = m::TxnRequest {
            compare: vec![m::Compare::new(key.to_vec(), m::CompareResult::Equal, m::CompareTarget::Create(rev))],
            success: vec![m::RequestOp::Put(put)],
            failure: vec![],
        };
        let r = self.txn(txn).await?;
        if !r.succeeded {
            return Err(Status::failed_precondition("election: not leader"));
        }
        self.applied(r.revision).await?;
        let kv = self.sm.read(|s| s.store.get(key)).filter(|kv| kv.create_revision == rev);
        Ok((kv.ok_or_else(|| Status::failed_precondition("election: not leader"))?, r.revision))
    }

    /// v3election `Resign` / v3lock `Unlock`: delete the key if it is still the one created at
    /// `rev` (any revision when `rev` is 0).
    pub async fn release(&self, key: &[u8], rev: i64) -> Result<i64, Status> {
        let compare = if rev == 0 {
            vec![]
        } else {
            vec![m::Compare::new(key.to_vec(), m::CompareResult::Equal, m::CompareTarget::Create(rev))]
        };
        let txn = m::TxnRequest {
            compare,
            success: vec![m::RequestOp::DeleteRange(m::DeleteRangeRequest::key(key.to_vec()))],
            failure: vec![],
        };
        Ok(self.txn(txn).await?.revision)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TTL: i64 = 2;

    fn secs(n: f64) -> Duration {
        Duration::from_secs_f64(n)
    }

    #[test]
    fn a_lease_past_its_deadline_is_not_renewed() {
        let t0 = Instant::now();
        let mut clock = LeaseClock::default();
        assert!(clock.align(Some(3)));
        assert!(clock.expired(&[(7, TTL)], t0).is_empty(), "a lease seen for the first time has its full TTL");
        assert_eq!(clock.keep_alive(7, Some(TTL), t0 + secs(1.0)), TTL, "renewed before its deadline");
        assert_eq!(clock.time_to_live(7, Some(TTL), t0 + secs(1.5)), 2);
        // Past the renewed deadline (t0 + 3 s) the keeper is revoking it: no renewal, no TTL.
        let late = t0 + secs(3.2);
        assert_eq!(clock.expired(&[(7, TTL)], late), vec![7]);
        assert_eq!(clock.keep_alive(7, Some(TTL), late), 0, "an expired lease is not renewed");
        assert_eq!(clock.expired(&[(7, TTL)], late), vec![7], "and it stays expired");
        assert_eq!(clock.keep_alive(8, None, late), 0, "no such lease");
        assert_eq!(clock.time_to_live(8, None, late), -1);
    }

    #[test]
    fn every_new_term_starts_every_lease_afresh() {
        let t0 = Instant::now();
        let mut clock = LeaseClock::default();
        assert!(clock.align(Some(3)));
        assert!(clock.expired(&[(7, TTL)], t0).is_empty());
        // The node lost the lead and won it back (term 5) between two looks: another leader may
        // have renewed the lease meanwhile, so its old deadline (t0 + 2 s) no longer holds.
        assert!(clock.align(Some(5)));
        assert!(clock.expired(&[(7, TTL)], t0 + secs(2.5)).is_empty(), "a new term gives a full TTL again");
        assert_eq!(clock.expired(&[(7, TTL)], t0 + secs(4.6)), vec![7], "counted from when it took the lead");
        // Not leading: nothing kept, nothing answered.
        assert!(!clock.align(None));
        assert!(clock.deadlines.is_empty());
    }

    #[test]
    fn a_forgotten_lease_leaves_the_clock() {
        let t0 = Instant::now();
        let mut clock = LeaseClock::default();
        clock.align(Some(1));
        clock.expired(&[(7, TTL), (8, TTL)], t0);
        assert_eq!(clock.expired(&[(8, TTL)], t0 + secs(3.0)), vec![8], "lease 7 was revoked: not expired again");
        assert!(!clock.deadlines.contains_key(&7));
    }
}
