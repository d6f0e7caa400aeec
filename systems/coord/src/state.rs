//! The replicated state: the MVCC store (`basalt-mvcc`), each member's etcd client URL, and the
//! fencing demo's protected resources — one deterministic state machine on the consensus engine.
//! Commands and replies travel as postcard.

use std::collections::BTreeMap;
use std::sync::RwLock;

use basalt_consensus::StateMachine;
use basalt_mvcc as m;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

pub const SYSTEM: &str = "coord";

#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Command {
    Put(m::PutRequest),
    Delete(m::DeleteRangeRequest),
    Txn(m::TxnRequest),
    Compact(i64),
    LeaseGrant {
        id: i64,
        ttl: i64,
    },
    LeaseRevoke {
        id: i64,
    },
    /// A member announces the address of its etcd listener (for MemberList).
    Register {
        node_id: u64,
        client_url: String,
    },
    /// A write to a fenced resource carrying a lock's fencing token.
    Fenced {
        resource: String,
        token: i64,
        value: Vec<u8>,
    },
    /// The leader's lease keeper found the lease past its deadline in `term`: revoked only if
    /// the entry was appended in that same term (see [`State::apply_in_term`]).
    LeaseExpire {
        id: i64,
        term: u64,
    },
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Reply {
    Put(m::PutResponse),
    Delete(m::DeleteRangeResponse),
    Txn(m::TxnResponse),
    Compact(m::CompactionResponse),
    LeaseGrant(m::LeaseGrantResponse),
    LeaseRevoke(m::LeaseRevokeResponse),
    Done,
    /// The write was accepted (`true`) or refused as stale; the resource as it is now.
    Fenced(bool, FencedResource),
    /// A lease expiry decided in another term than its entry's: nothing was done.
    ExpiryIgnored,
}

pub type Answer = Result<Reply, m::Error>;

/// A resource that accepts a write only with a fencing token at least as new as every token it
/// accepted before.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FencedResource {
    pub token: i64,
    pub value: Vec<u8>,
    pub accepted: u64,
    pub refused: u64,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct State {
    pub store: m::Store,
    pub members: BTreeMap<u64, String>,
    pub fenced: BTreeMap<String, FencedResource>,
}

impl State {
    /// Watches are served from the store's change log (`Store::events`), so writes are made
    /// `quietly`: no per-write events (copies of each value and its previous one) are built.
    /// Applied outside the log (tests), a command has no term: a lease expiry, which must be
    /// appended in the term it names, is ignored unless it names term 0.
    pub fn apply(&mut self, cmd: Command) -> Answer {
        self.apply_in_term(0, cmd)
    }

    /// Apply `cmd` from an entry appended in `term`. A lease expiry counts only in the term its
    /// leader decided it in: forwarded to a later leader (a proposal queued on a leader that
    /// lost the lead is), it would expire a lease on a clock the new leader does not keep —
    /// which gave every lease a full TTL when it took over and may have renewed this one since.
    /// One appended in its own term and committed by a later leader is applied: that leader
    /// renews nothing before its first entry commits, and with it every entry before it.
    pub fn apply_in_term(&mut self, term: u64, cmd: Command) -> Answer {
        Ok(match cmd {
            Command::Put(r) => Reply::Put(self.store.quietly(|s| s.put(&r))?.response),
            Command::Delete(r) => Reply::Delete(self.store.quietly(|s| s.delete_range(&r))?.response),
            Command::Txn(r) => Reply::Txn(self.store.quietly(|s| s.txn(&r))?.response),
            Command::Compact(rev) => Reply::Compact(self.store.compact(rev)?),
            Command::LeaseGrant { id, ttl } => Reply::LeaseGrant(self.store.lease_grant(id, ttl)?),
            Command::LeaseRevoke { id } => Reply::LeaseRevoke(self.store.quietly(|s| s.lease_revoke(id))?.response),
            Command::Register { node_id, client_url } => {
                self.members.insert(node_id, client_url);
                Reply::Done
            }
            Command::Fenced { resource, token, value } => {
                let r = self.fenced.entry(resource).or_default();
                let ok = token >= r.token;
                if ok {
                    r.token = token;
                    r.value = value;
                    r.accepted += 1;
                } else {
                    r.refused += 1;
                }
                Reply::Fenced(ok, r.clone())
            }
            Command::LeaseExpire { id, term: decided } if decided == term => {
                Reply::LeaseRevoke(self.store.quietly(|s| s.lease_revoke(id))?.response)
            }
            Command::LeaseExpire { .. } => Reply::ExpiryIgnored,
        })
    }
}

/// The state behind a lock never held across an await; `revision` ticks with the store's
/// revision after every applied entry (watches and lock waiters wait on it).
pub struct CoordSm {
    state: RwLock<State>,
    revision: watch::Sender<i64>,
}

impl Default for CoordSm {
    fn default() -> Self {
        let state = State::default();
        let rev = state.store.revision();
        Self { state: RwLock::new(state), revision: watch::channel(rev).0 }
    }
}

impl CoordSm {
    pub fn read<T>(&self, f: impl FnOnce(&State) -> T) -> T {
        f(&self.state.read().unwrap_or_else(|e| e.into_inner()))
    }

    pub fn subscribe(&self) -> watch::Receiver<i64> {
        self.revision.subscribe()
    }

    pub fn revision(&self) -> i64 {
        *self.revision.borrow()
    }
}

impl StateMachine for CoordSm {
    /// Without a term (the engine calls `apply_in_term`): see [`State::apply`].
    fn apply(&self, index: u64, command: &[u8]) -> Vec<u8> {
        self.apply_in_term(index, 0, command)
    }

    fn apply_in_term(&self, _index: u64, term: u64, command: &[u8]) -> Vec<u8> {
        let answer: Answer = match postcard::from_bytes::<Command>(command) {
            Ok(cmd) => {
                let mut s = self.state.write().unwrap_or_else(|e| e.into_inner());
                let a = s.apply_in_term(term, cmd);
                let rev = s.store.revision();
                drop(s);
                self.revision.send_if_modified(|r| std::mem::replace(r, rev) != rev);
                a
            }
            // Never produced by this build; answered rather than panicked on.
            Err(_) => Err(m::Error::EmptyKey),
        };
        postcard::to_allocvec(&answer).unwrap_or_default()
    }

    fn snapshot(&self) -> Vec<u8> {
        self.read(|s| postcard::to_allocvec(s).unwrap_or_default())
    }

    fn restore(&self, snapshot: &[u8]) -> anyhow::Result<()> {
        let state: State = if snapshot.is_empty() { State::default() } else { postcard::from_bytes(snapshot)? };
        let rev = state.store.revision();
        *self.state.write().unwrap_or_else(|e| e.into_inner()) = state;
        self.revision.send_replace(rev);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn apply(sm: &CoordSm, index: u64, cmd: Command) -> Answer {
        postcard::from_bytes(&sm.apply(index, &postcard::to_allocvec(&cmd).unwrap())).unwrap()
    }

    #[test]
    fn a_lease_expiry_counts_only_in_the_term_it_was_decided_in() {
        let sm = CoordSm::default();
        let run = |term: u64, cmd: Command| -> Answer {
            postcard::from_bytes(&sm.apply_in_term(1, term, &postcard::to_allocvec(&cmd).unwrap())).unwrap()
        };
        let lease = match run(3, Command::LeaseGrant { id: 0, ttl: 5 }).unwrap() {
            Reply::LeaseGrant(g) => g.id,
            other => panic!("{other:?}"),
        };
        let put = m::PutRequest { key: b"held".to_vec(), value: b"x".to_vec(), lease, ..Default::default() };
        run(3, Command::Put(put)).unwrap();
        // Decided by the leader of term 3, appended by the leader of term 4 (forwarded): ignored.
        assert!(matches!(run(4, Command::LeaseExpire { id: lease, term: 3 }), Ok(Reply::ExpiryIgnored)));
        assert!(sm.read(|s| s.store.get(b"held").is_some()), "the key outlives a stale expiry");
        // Appended in the term it was decided in: the lease and its key go.
        assert!(matches!(run(4, Command::LeaseExpire { id: lease, term: 4 }), Ok(Reply::LeaseRevoke(_))));
        assert!(sm.read(|s| s.store.get(b"held").is_none()));
        assert!(matches!(run(4, Command::LeaseExpire { id: lease, term: 4 }), Err(m::Error::LeaseNotFound)));
    }

    #[test]
    fn commands_apply_and_the_revision_ticks() {
        let sm = CoordSm::default();
        let mut rx = sm.subscribe();
        assert!(matches!(apply(&sm, 1, Command::Put(m::PutRequest::new("a", "1"))), Ok(Reply::Put(_))));
        assert!(rx.has_changed().unwrap());
        assert_eq!(*rx.borrow_and_update(), 2);
        let bad = Command::Put(m::PutRequest::new("", "x"));
        assert_eq!(apply(&sm, 2, bad).unwrap_err(), m::Error::EmptyKey);
        assert!(!rx.has_changed().unwrap(), "a refused write moves nothing");
        let snap = sm.snapshot();
        let other = CoordSm::default();
        other.restore(&snap).unwrap();
        assert_eq!(other.revision(), 2);
        assert_eq!(other.read(|s| s.store.get(b"a").map(|kv| kv.value)), Some(b"1".to_vec()));
    }

    #[test]
    fn a_fenced_resource_refuses_older_tokens() {
        let mut s = State::default();
        let w = |token, v: &str| Command::Fenced { resource: "r".into(), token, value: v.as_bytes().to_vec() };
        assert!(matches!(s.apply(w(5, "a")), Ok(Reply::Fenced(true, _))));
        assert!(matches!(s.apply(w(7, "b")), Ok(Reply::Fenced(true, _))));
        match s.apply(w(5, "late")) {
            Ok(Reply::Fenced(false, r)) => assert_eq!((r.token, r.value, r.refused), (7, b"b".to_vec(), 1)),
            other => panic!("{other:?}"),
        }
    }
}
