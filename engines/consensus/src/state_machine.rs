//! The state-machine side of the engine: the seam systems plug their state machines into, and
//! openraft's `RaftStateMachine` over all of them.
//!
//! Systems keep their state in memory (control-plane state: config, flags, locks, leases). The
//! durable truth is the snapshot (namespace `raft_sm`, written when openraft builds one) plus the
//! log after it: on start the engine restores the snapshot into every registered system and
//! openraft re-applies the committed entries that follow.

use std::collections::BTreeMap;
use std::io::Cursor;
use std::sync::{Arc, Mutex, RwLock};

use basalt_runtime::Namespace;
use openraft::storage::RaftStateMachine;
use openraft::{EntryPayload, ErrorSubject, ErrorVerb, OptionalSend, RaftLogId, RaftSnapshotBuilder};
use serde::{Deserialize, Serialize};
use tokio::sync::{broadcast, watch};

use crate::log_store::Durability;
use crate::types::{Command, Entry, LogId, Reply, Snapshot, SnapshotMeta, StorageError, StoredMembership, TypeConfig};

/// A system's replicated state. Implementations use interior mutability so the system can read
/// its state (after `Consensus::read_barrier`) while the engine applies.
pub trait StateMachine: Send + Sync + 'static {
    /// Apply one committed command. Must be deterministic: the same commands in the same order
    /// give the same state and replies on every node. `index` is the entry's log index, usable
    /// as a version number. Bad commands must be answered (in the reply), never panicked on.
    fn apply(&self, index: u64, command: &[u8]) -> Vec<u8>;
    /// [`StateMachine::apply`], told also the term of the leader that appended the entry. A
    /// command a leader decided on its own clock (a lease's expiry, say) can carry the term it
    /// was decided in and be ignored when its entry was appended in another: a proposal queued
    /// on a leader that lost the lead is forwarded to the next one, and would otherwise apply a
    /// decision the new leader never made. The engine calls this; the default ignores the term.
    fn apply_in_term(&self, index: u64, term: u64, command: &[u8]) -> Vec<u8> {
        let _ = term;
        self.apply(index, command)
    }
    /// The whole state, to be restored elsewhere with `restore`.
    fn snapshot(&self) -> Vec<u8>;
    /// Replace the whole state (empty bytes: the empty state).
    fn restore(&self, snapshot: &[u8]) -> anyhow::Result<()>;
}

/// One applied entry, as the change feed announces it.
#[derive(Debug, Clone)]
pub struct Applied {
    pub index: u64,
    /// The system the command was for (`None` for blank and membership entries).
    pub system: Option<String>,
    /// The command itself (for replicas outside the Raft group, fed from this feed).
    pub payload: Option<Arc<Vec<u8>>>,
}

/// Every system's snapshot by name. Byte strings are written as bytes (one copy), not as a
/// sequence of numbers (a call per byte); in postcard both are a length and the raw bytes, so
/// snapshots written either way read the same (tested).
#[derive(Serialize, Deserialize, Default)]
struct SnapshotPayload {
    systems: BTreeMap<String, serde_bytes::ByteBuf>,
}

#[derive(Deserialize)]
struct StoredSnapshot {
    meta: SnapshotMeta,
    #[serde(with = "serde_bytes")]
    data: Vec<u8>,
}

/// [`StoredSnapshot`] as written: borrowing the data rather than copying it first.
#[derive(Serialize)]
struct StoredSnapshotRef<'a> {
    meta: &'a SnapshotMeta,
    #[serde(with = "serde_bytes")]
    data: &'a [u8],
}

const SNAPSHOT_KEY: &[u8] = b"snapshot";

fn io_err(verb: ErrorVerb, e: impl std::fmt::Display) -> StorageError {
    StorageError::from_io_error(ErrorSubject::StateMachine, verb, std::io::Error::other(e.to_string()))
}

struct AppliedState {
    last_applied: Option<LogId>,
    membership: StoredMembership,
    snapshots_built: u64,
}

pub(crate) struct Inner {
    systems: RwLock<BTreeMap<String, Arc<dyn StateMachine>>>,
    /// Held while applying and while snapshotting, so a snapshot is one consistent cut.
    state: Mutex<AppliedState>,
    ns: Namespace,
    /// Nothing is applied before the log holds it on disk (see `log_store`).
    durability: Durability,
    applied_tx: watch::Sender<u64>,
    feed: broadcast::Sender<Applied>,
}

/// openraft's view of every system's state machine. Cheap to clone.
#[derive(Clone)]
pub struct SmStore {
    pub(crate) inner: Arc<Inner>,
}

impl SmStore {
    pub fn new(ns: Namespace, durability: Durability) -> Self {
        let (applied_tx, _) = watch::channel(0);
        let (feed, _) = broadcast::channel(4096);
        Self {
            inner: Arc::new(Inner {
                systems: RwLock::default(),
                state: Mutex::new(AppliedState {
                    last_applied: None,
                    membership: StoredMembership::default(),
                    snapshots_built: 0,
                }),
                ns,
                durability,
                applied_tx,
                feed,
            }),
        }
    }

    pub fn register(&self, name: &str, sm: Arc<dyn StateMachine>) -> anyhow::Result<()> {
        let mut systems = self.inner.systems.write().map_err(|_| anyhow::anyhow!("state machine registry poisoned"))?;
        anyhow::ensure!(!systems.contains_key(name), "a state machine named `{name}` is already registered");
        systems.insert(name.to_string(), sm);
        Ok(())
    }

    pub fn applied(&self) -> watch::Receiver<u64> {
        self.inner.applied_tx.subscribe()
    }

    pub fn feed(&self) -> broadcast::Receiver<Applied> {
        self.inner.feed.subscribe()
    }

    /// Restore the last persisted snapshot into every registered system (at start).
    pub fn load_snapshot(&self) -> anyhow::Result<Option<u64>> {
        let Some(stored) = self.stored_snapshot()? else { return Ok(None) };
        self.install(&stored.meta, &stored.data)?;
        Ok(stored.meta.last_log_id.map(|l| l.index))
    }

    fn stored_snapshot(&self) -> anyhow::Result<Option<StoredSnapshot>> {
        Ok(match self.inner.ns.get(SNAPSHOT_KEY)? {
            Some(b) => Some(postcard::from_bytes(&b)?),
            None => None,
        })
    }

    fn install(&self, meta: &SnapshotMeta, data: &[u8]) -> anyhow::Result<()> {
        let payload: SnapshotPayload =
            if data.is_empty() { SnapshotPayload::default() } else { postcard::from_bytes(data)? };
        let mut state = self.inner.state.lock().map_err(|_| anyhow::anyhow!("state poisoned"))?;
        let systems = self.inner.systems.read().map_err(|_| anyhow::anyhow!("registry poisoned"))?;
        for (name, sm) in systems.iter() {
            let bytes = payload.systems.get(name).map(|b| b.as_slice()).unwrap_or(&[]);
            sm.restore(bytes).map_err(|e| anyhow::anyhow!("restoring `{name}` from the snapshot: {e:#}"))?;
        }
        state.last_applied = meta.last_log_id;
        state.membership = meta.last_membership.clone();
        let index = meta.last_log_id.map_or(0, |l| l.index);
        self.inner.applied_tx.send_replace(index);
        Ok(())
    }

    async fn persist_snapshot(&self, meta: &SnapshotMeta, data: &[u8]) -> Result<(), StorageError> {
        let bytes =
            postcard::to_allocvec(&StoredSnapshotRef { meta, data }).map_err(|e| io_err(ErrorVerb::Write, e))?;
        self.inner.ns.put(SNAPSHOT_KEY, bytes).map_err(|e| io_err(ErrorVerb::Write, e))?;
        self.inner.ns.sync().await.map_err(|e| io_err(ErrorVerb::Write, e))
    }
}

impl RaftSnapshotBuilder<TypeConfig> for SmStore {
    async fn build_snapshot(&mut self) -> Result<Snapshot, StorageError> {
        let (meta, data) = {
            let mut state = self.inner.state.lock().map_err(|_| io_err(ErrorVerb::Read, "state poisoned"))?;
            let systems = self.inner.systems.read().map_err(|_| io_err(ErrorVerb::Read, "registry poisoned"))?;
            let payload = SnapshotPayload {
                systems: systems.iter().map(|(n, sm)| (n.clone(), serde_bytes::ByteBuf::from(sm.snapshot()))).collect(),
            };
            let data = postcard::to_allocvec(&payload).map_err(|e| io_err(ErrorVerb::Write, e))?;
            state.snapshots_built += 1;
            let id = match state.last_applied {
                Some(l) => format!("{}-{}-{}", l.leader_id, l.index, state.snapshots_built),
                None => format!("none-{}", state.snapshots_built),
            };
            let meta = SnapshotMeta {
                last_log_id: state.last_applied,
                last_membership: state.membership.clone(),
                snapshot_id: id,
            };
            (meta, data)
        };
        self.persist_snapshot(&meta, &data).await?;
        Ok(Snapshot { meta, snapshot: Box::new(Cursor::new(data)) })
    }
}

impl RaftStateMachine<TypeConfig> for SmStore {
    type SnapshotBuilder = Self;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), StorageError> {
        let state = self.inner.state.lock().map_err(|_| io_err(ErrorVerb::Read, "state poisoned"))?;
        Ok((state.last_applied, state.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Reply>, StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let entries: Vec<Entry> = entries.into_iter().collect();
        if let Some(last) = entries.last() {
            self.inner.durability.wait_durable(last.get_log_id().index).await?;
        }
        let mut replies = Vec::new();
        let mut events = Vec::new();
        {
            let mut state = self.inner.state.lock().map_err(|_| io_err(ErrorVerb::Write, "state poisoned"))?;
            let systems = self.inner.systems.read().map_err(|_| io_err(ErrorVerb::Write, "registry poisoned"))?;
            for entry in entries {
                let log_id = *entry.get_log_id();
                state.last_applied = Some(log_id);
                let (reply, system, payload) = match entry.payload {
                    EntryPayload::Blank => (Reply::None, None, None),
                    EntryPayload::Membership(m) => {
                        state.membership = StoredMembership::new(Some(log_id), m);
                        (Reply::None, None, None)
                    }
                    EntryPayload::Normal(cmd) if cmd.system == crate::batch::BATCH => {
                        // Commands batched into one entry: applied in order, each with the
                        // entry's index, each announced on the feed as if it were alone.
                        let inner: Vec<Command> = postcard::from_bytes(&cmd.payload).unwrap_or_default();
                        let mut inner_replies = Vec::with_capacity(inner.len());
                        for c in inner {
                            let payload = Arc::new(c.payload);
                            inner_replies.push(match systems.get(&c.system) {
                                Some(sm) => {
                                    Reply::Data(sm.apply_in_term(log_id.index, log_id.leader_id.term, &payload))
                                }
                                None => Reply::NoSuchSystem(c.system.clone()),
                            });
                            events.push(Applied {
                                index: log_id.index,
                                system: Some(c.system),
                                payload: Some(payload),
                            });
                        }
                        replies.push(Reply::Data(postcard::to_allocvec(&inner_replies).unwrap_or_default()));
                        continue;
                    }
                    EntryPayload::Normal(cmd) => {
                        let payload = Arc::new(cmd.payload);
                        let reply = match systems.get(&cmd.system) {
                            Some(sm) => Reply::Data(sm.apply_in_term(log_id.index, log_id.leader_id.term, &payload)),
                            None => Reply::NoSuchSystem(cmd.system.clone()),
                        };
                        (reply, Some(cmd.system), Some(payload))
                    }
                };
                replies.push(reply);
                events.push(Applied { index: log_id.index, system, payload });
            }
        }
        if let Some(last) = events.last() {
            self.inner.applied_tx.send_replace(last.index);
        }
        for e in events {
            let _ = self.inner.feed.send(e);
        }
        Ok(replies)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError> {
        let data = snapshot.into_inner();
        self.install(meta, &data).map_err(|e| io_err(ErrorVerb::Write, format!("{e:#}")))?;
        self.persist_snapshot(meta, &data).await
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot>, StorageError> {
        let stored = self.stored_snapshot().map_err(|e| io_err(ErrorVerb::Read, e))?;
        Ok(stored.map(|s| Snapshot { meta: s.meta, snapshot: Box::new(Cursor::new(s.data)) }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The layouts before byte strings were written as bytes.
    #[derive(Serialize)]
    struct OldPayload {
        systems: BTreeMap<String, Vec<u8>>,
    }

    #[derive(Serialize)]
    struct OldStored {
        meta: SnapshotMeta,
        data: Vec<u8>,
    }

    #[test]
    fn snapshots_are_written_as_before_and_read_either_way() {
        let systems: BTreeMap<String, Vec<u8>> =
            [("coord".to_string(), (0..=255u8).cycle().take(1000).collect()), ("empty".to_string(), Vec::new())].into();
        let old = postcard::to_allocvec(&OldPayload { systems: systems.clone() }).unwrap();
        let new = SnapshotPayload {
            systems: systems.iter().map(|(k, v)| (k.clone(), serde_bytes::ByteBuf::from(v.clone()))).collect(),
        };
        assert_eq!(postcard::to_allocvec(&new).unwrap(), old, "the payload's bytes are unchanged");
        let back: SnapshotPayload = postcard::from_bytes(&old).unwrap();
        assert_eq!(back.systems["coord"].as_slice(), systems["coord"].as_slice());

        let meta = SnapshotMeta { snapshot_id: "1-2-3".into(), ..Default::default() };
        let old = postcard::to_allocvec(&OldStored { meta: meta.clone(), data: systems["coord"].clone() }).unwrap();
        let new = postcard::to_allocvec(&StoredSnapshotRef { meta: &meta, data: &systems["coord"] }).unwrap();
        assert_eq!(new, old, "the stored snapshot's bytes are unchanged");
        let back: StoredSnapshot = postcard::from_bytes(&old).unwrap();
        assert_eq!((back.meta, back.data), (meta, systems["coord"].clone()));
    }
}
