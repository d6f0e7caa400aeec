//! The Raft log, durable in the node's store (namespace `raft_log`).
//!
//! Keys: `l` + big-endian index → the entry; `v` → the vote; `c` → the committed log id;
//! `p` → the last purged log id. Appends and votes are fsync'd (group commit) before openraft is
//! told they are done, so an entry a follower acknowledges is on its disk: an acknowledged write
//! is on a quorum of disks.
//!
//! A follower's append is written and synced before openraft is told it is done (openraft 0.9's
//! core waits for it either way); the store's group-commit thread shares one fsync among every
//! writer waiting meanwhile. The leader's own appends are synced by a flusher task instead, one
//! fsync for every append queued meanwhile, while openraft goes on (below).
//!
//! **The leader's own entries are replicated while its disk syncs** (Raft thesis §10.2.1, as
//! etcd does). openraft 0.9's core waits for an append to be flushed before it sends the entries
//! to followers, which put the leader's fsync and the followers' one after the other. So the
//! leader's appends of its own entries (created in its current term) are reported flushed as soon
//! as they are written, and safety is kept by [`Durability`] instead:
//! - nothing is applied — so no client is answered — before the leader's own copy is on disk
//!   (`SmStore::apply` waits for it), and
//! - followers are never told a commit index beyond what is on the leader's disk (the network
//!   caps `leader_commit`; followers hear the rest once the fsync ends).
//!
//! openraft counts the leader's unsynced entry toward the commit quorum, but no node acts on that
//! commit until the leader has it on disk, and by then it is on a majority of disks. Followers
//! still report an append only after their fsync.

use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use basalt_runtime::Namespace;
use openraft::storage::{LogFlushed, LogState, RaftLogReader, RaftLogStorage};
use openraft::{ErrorSubject, ErrorVerb, OptionalSend, RaftLogId};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::types::{Entry, LogId, NodeId, StorageError, TypeConfig, Vote};

const ENTRY: u8 = b'l';
const VOTE: &[u8] = b"v";
const COMMITTED: &[u8] = b"c";
const PURGED: &[u8] = b"p";

fn entry_key(index: u64) -> [u8; 9] {
    let mut k = [0u8; 9];
    k[0] = ENTRY;
    k[1..].copy_from_slice(&index.to_be_bytes());
    k
}

fn io_err(subject: ErrorSubject<u64>, verb: ErrorVerb, e: impl std::fmt::Display) -> StorageError {
    StorageError::from_io_error(subject, verb, std::io::Error::other(e.to_string()))
}

fn encode<T: Serialize>(v: &T) -> Result<Vec<u8>, StorageError> {
    postcard::to_allocvec(v).map_err(|e| io_err(ErrorSubject::Store, ErrorVerb::Write, e))
}

fn decode<T: DeserializeOwned>(b: &[u8]) -> Result<T, StorageError> {
    postcard::from_bytes(b).map_err(|e| io_err(ErrorSubject::Store, ErrorVerb::Read, e))
}

/// The flusher's queue: one message per append of the leader's own entries (reported flushed
/// already), which only needs [`Durability`] brought up to date.
type Flushes = tokio::sync::mpsc::UnboundedSender<()>;

/// What of this node's log is on disk. Shared by the log store (which writes and syncs), the
/// state machine (which applies nothing beyond it) and the network (which tells followers no
/// commit index beyond it). Cheap to clone.
#[derive(Clone)]
pub struct Durability {
    inner: Arc<DurabilityInner>,
}

struct DurabilityInner {
    /// This node's id; `None` turns the leader's early report off (every append waits).
    me: Option<NodeId>,
    vote: Mutex<Option<Vote>>,
    /// The last entry written to the store (durable or not).
    written: Mutex<Option<LogId>>,
    /// The last entry known to be on disk.
    durable: tokio::sync::watch::Sender<Option<LogId>>,
    /// The highest index reported flushed before it was (0: none).
    early: AtomicU64,
    /// Held while syncing and publishing `durable`, and while truncating, so a sync that began
    /// before a truncation cannot publish entries the truncation removed.
    sync_lock: tokio::sync::Mutex<()>,
    /// A follower was sent a commit index below the leader's (see [`Durability::cap_commit`]).
    held_back: AtomicBool,
}

impl Durability {
    fn new(me: Option<NodeId>) -> Self {
        Self {
            inner: Arc::new(DurabilityInner {
                me,
                vote: Mutex::new(None),
                written: Mutex::new(None),
                durable: tokio::sync::watch::Sender::new(None),
                early: AtomicU64::new(0),
                sync_lock: tokio::sync::Mutex::new(()),
                held_back: AtomicBool::new(false),
            }),
        }
    }

    fn durable_index(&self) -> u64 {
        self.inner.durable.borrow().map_or(0, |l| l.index)
    }

    fn written(&self) -> Option<LogId> {
        *self.inner.written.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn set_written(&self, log_id: Option<LogId>) {
        *self.inner.written.lock().unwrap_or_else(|e| e.into_inner()) = log_id;
    }

    fn set_vote(&self, vote: Option<Vote>) {
        *self.inner.vote.lock().unwrap_or_else(|e| e.into_inner()) = vote;
    }

    /// The vote a node starts with, given the one it stored. openraft 0.9 restarts a node whose
    /// stored vote is its own committed one as the leader of that same term. Here that is
    /// unsafe: a leader's own entries are reported flushed before its fsync, so a leader that
    /// loses power comes back without its unsynced tail — which the followers may hold, and
    /// which counted toward commits. Leading on in the same term, it would give its next entries
    /// the log ids of the lost ones; a follower keeps an entry whose log id it already holds,
    /// so the replicas would apply different commands under one id. So its own committed vote
    /// comes back uncommitted: still voted for itself in that term (no other vote in it), but a
    /// follower, which leads again only by winning an election in a later term — where a member
    /// with the whole log wins the votes a shorter log cannot.
    fn restarted(&self, stored: Vote) -> Vote {
        match self.inner.me {
            Some(me) if stored.is_committed() && stored.leader_id().node_id == me => {
                Vote::new(stored.leader_id().term, me)
            }
            _ => stored,
        }
    }

    /// Whether `entries` are this node's own, made as the leader of its current (committed)
    /// vote: only those may be reported flushed before their fsync. An entry of an earlier
    /// term of ours, received back as a follower, does not qualify.
    fn own(&self, entries: &[Entry]) -> bool {
        let Some(me) = self.inner.me else { return false };
        let vote = self.inner.vote.lock().unwrap_or_else(|e| e.into_inner());
        let Some(vote) = vote.as_ref() else { return false };
        vote.is_committed()
            && vote.leader_id().node_id == me
            && entries.iter().all(|e| e.get_log_id().leader_id == *vote.leader_id())
    }

    /// Wait until the entries up to `index` that were reported flushed early are on disk.
    /// Entries that were never reported early (a follower's, or ones the engine did not write)
    /// pass at once.
    pub async fn wait_durable(&self, index: u64) -> Result<(), StorageError> {
        let need = index.min(self.inner.early.load(Ordering::Acquire));
        if need == 0 || self.durable_index() >= need {
            return Ok(());
        }
        let mut rx = self.inner.durable.subscribe();
        rx.wait_for(|d| d.is_some_and(|d| d.index >= need))
            .await
            .map(|_| ())
            .map_err(|_| io_err(ErrorSubject::Logs, ErrorVerb::Write, "the log's flusher stopped"))
    }

    /// The commit index a follower may be told: the leader's, but not beyond what is on the
    /// leader's disk. When it is held back, [`Durability::take_held_back`] says so after the
    /// next fsync, so the engine can send the rest at once.
    pub fn cap_commit(&self, commit: Option<LogId>) -> Option<LogId> {
        let c = commit?;
        let durable = *self.inner.durable.borrow();
        if durable.is_none_or(|d| d.index < c.index) {
            self.inner.held_back.store(true, Ordering::Release);
            return durable;
        }
        Some(c)
    }

    /// Whether a commit index was held back since the last call.
    pub fn take_held_back(&self) -> bool {
        self.inner.held_back.swap(false, Ordering::AcqRel)
    }

    /// Changes whenever more of the log is on disk.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<Option<LogId>> {
        self.inner.durable.subscribe()
    }

    /// Sync the store and publish what is now durable.
    async fn sync(&self, ns: &Namespace) -> Result<(), basalt_runtime::storage::StorageError> {
        let _held = self.inner.sync_lock.lock().await;
        let written = self.written();
        ns.sync().await?;
        self.inner.durable.send_if_modified(|d| {
            let changed = *d != written;
            *d = written;
            changed
        });
        Ok(())
    }
}

#[derive(Clone)]
pub struct LogStore {
    ns: Namespace,
    durability: Durability,
    /// The flusher task's queue (started on the first append, inside the runtime).
    flusher: Arc<OnceLock<Flushes>>,
}

impl LogStore {
    /// `me`: this node's id, which lets the leader report its own appends flushed before their
    /// fsync (see the module's notes); `None` makes every append wait for its fsync.
    pub fn new(ns: Namespace, me: Option<NodeId>) -> Self {
        Self { ns, durability: Durability::new(me), flusher: Arc::default() }
    }

    pub fn durability(&self) -> Durability {
        self.durability.clone()
    }

    fn flusher(&self) -> &Flushes {
        self.flusher.get_or_init(|| {
            let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<()>();
            let (ns, durability) = (self.ns.clone(), self.durability.clone());
            tokio::spawn(async move {
                while rx.recv().await.is_some() {
                    // Every append queued so far was written before it was queued: one fsync
                    // makes them all durable.
                    while rx.try_recv().is_ok() {}
                    if let Err(e) = durability.sync(&ns).await {
                        // Nothing reported early is applied or told committed until it is
                        // durable, so a failed sync holds those writes back (the node's store
                        // refuses further durable writes after a failed fsync).
                        tracing::error!(error = %e, "syncing the Raft log failed");
                    }
                }
            });
            tx
        })
    }

    fn get<T: DeserializeOwned>(&self, key: &[u8]) -> Result<Option<T>, StorageError> {
        match self.ns.get(key).map_err(|e| io_err(ErrorSubject::Store, ErrorVerb::Read, e))? {
            Some(b) => Ok(Some(decode(&b)?)),
            None => Ok(None),
        }
    }

    fn put<T: Serialize>(&self, key: &[u8], v: &T) -> Result<(), StorageError> {
        self.ns.put(key, encode(v)?).map_err(|e| io_err(ErrorSubject::Store, ErrorVerb::Write, e))
    }

    async fn sync(&self) -> Result<(), StorageError> {
        self.durability.sync(&self.ns).await.map_err(|e| io_err(ErrorSubject::Store, ErrorVerb::Write, e))
    }

    fn last_entry(&self) -> Result<Option<LogId>, StorageError> {
        Ok(self
            .ns
            .last_with_prefix(&[ENTRY])
            .map_err(|e| io_err(ErrorSubject::Logs, ErrorVerb::Read, e))?
            .map(|(_, v)| decode::<Entry>(&v))
            .transpose()?
            .map(|e| *e.get_log_id()))
    }

    fn delete_range(&self, from: u64, to_exclusive: u64) -> Result<(), StorageError> {
        let keys = self
            .ns
            .keys_in(&entry_key(from), &entry_key(to_exclusive))
            .map_err(|e| io_err(ErrorSubject::Logs, ErrorVerb::Delete, e))?;
        self.ns.write_batch(&[], &keys).map_err(|e| io_err(ErrorSubject::Logs, ErrorVerb::Delete, e))
    }
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, StorageError> {
        let start = match range.start_bound() {
            Bound::Included(x) => *x,
            Bound::Excluded(x) => x.saturating_add(1),
            Bound::Unbounded => 0,
        };
        let end = match range.end_bound() {
            Bound::Included(x) => x.saturating_add(1),
            Bound::Excluded(x) => *x,
            Bound::Unbounded => u64::MAX,
        };
        if start >= end {
            return Ok(Vec::new());
        }
        let rows = self
            .ns
            .range(&entry_key(start), &entry_key(end), usize::MAX)
            .map_err(|e| io_err(ErrorSubject::Logs, ErrorVerb::Read, e))?;
        rows.iter().map(|(_, v)| decode(v)).collect()
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError> {
        let last_purged: Option<LogId> = self.get(PURGED)?;
        let last = self.last_entry()?;
        if self.durability.written().is_none() {
            // At start: what the store holds is made durable before anything builds on it.
            self.durability.set_written(last.or(last_purged));
            self.sync().await?;
        }
        Ok(LogState { last_purged_log_id: last_purged, last_log_id: last.or(last_purged) })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), StorageError> {
        self.put(VOTE, vote)?;
        self.sync().await?;
        self.durability.set_vote(Some(*vote));
        Ok(())
    }

    /// At start. A node that led when it stopped comes back a follower that voted for itself
    /// (see [`Durability::restarted`]).
    async fn read_vote(&mut self) -> Result<Option<Vote>, StorageError> {
        let vote: Option<Vote> = self.get(VOTE)?;
        let vote = vote.map(|v| self.durability.restarted(v));
        self.durability.set_vote(vote);
        Ok(vote)
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), StorageError> {
        // Not fsync'd on its own: losing the last few updates only means re-learning the commit
        // index from the leader (or recomputing it as leader); the log itself is durable.
        self.put(COMMITTED, &committed)
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, StorageError> {
        Ok(self.get::<Option<LogId>>(COMMITTED)?.flatten())
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> Result<(), StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let entries: Vec<Entry> = entries.into_iter().collect();
        let Some(last) = entries.last().map(|e| *e.get_log_id()) else {
            callback.log_io_completed(Ok(()));
            return Ok(());
        };
        let mut puts = Vec::with_capacity(entries.len());
        for e in &entries {
            puts.push((entry_key(e.get_log_id().index).to_vec(), encode(e)?));
        }
        self.ns.write_batch(&puts, &[]).map_err(|e| io_err(ErrorSubject::Logs, ErrorVerb::Write, e))?;
        self.durability.set_written(Some(last));
        if !self.durability.own(&entries) {
            // A follower's append (or a former leader's entries received back): openraft's core
            // waits for it anyway, so it is synced here rather than handed to the flusher task
            // and back — two fewer task hand-offs on every replicated write.
            let synced = self.sync().await;
            callback.log_io_completed(synced.as_ref().map(|_| ()).map_err(|e| std::io::Error::other(e.to_string())));
            return synced;
        }
        // The leader's own entries: reported now, so openraft replicates them while the flusher
        // syncs; nothing acts on their commit before the sync (module notes).
        self.durability.inner.early.fetch_max(last.index, Ordering::AcqRel);
        callback.log_io_completed(Ok(()));
        if self.flusher().send(()).is_err() {
            // The flusher is gone (shutting down): sync here.
            return self.sync().await;
        }
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        let _held = self.durability.inner.sync_lock.lock().await;
        self.delete_range(log_id.index, u64::MAX)?;
        let last = self.last_entry()?;
        let purged: Option<LogId> = self.get(PURGED)?;
        self.durability.set_written(last.or(purged));
        self.ns.sync().await.map_err(|e| io_err(ErrorSubject::Logs, ErrorVerb::Write, e))?;
        self.durability.inner.durable.send_replace(last.or(purged));
        Ok(())
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        self.put(PURGED, &log_id)?;
        self.sync().await?;
        self.delete_range(0, log_id.index.saturating_add(1))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use basalt_runtime::Store;
    use basalt_runtime::config::FsyncPolicy;
    use openraft::{CommittedLeaderId, EntryPayload};

    use super::*;

    fn log_id(term: u64, node: NodeId, index: u64) -> LogId {
        LogId::new(CommittedLeaderId::new(term, node), index)
    }

    /// A log namespace on a real store that fsyncs every sync (the directory lives as long as
    /// the first value).
    fn log_namespace() -> (tempfile::TempDir, Namespace) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), FsyncPolicy::Always, Duration::from_millis(100)).unwrap();
        let ns = store.namespace("raft_log").unwrap();
        (dir, ns)
    }

    fn entry(term: u64, node: NodeId, index: u64) -> Entry {
        Entry { log_id: log_id(term, node, index), payload: EntryPayload::Blank }
    }

    #[test]
    fn a_restarted_leader_comes_back_a_follower_that_voted_for_itself() {
        let d = Durability::new(Some(1));
        assert_eq!(d.restarted(Vote::new_committed(3, 1)), Vote::new(3, 1), "its own lead: uncommitted");
        assert_eq!(d.restarted(Vote::new_committed(3, 2)), Vote::new_committed(3, 2), "another's lead: kept");
        assert_eq!(d.restarted(Vote::new(4, 1)), Vote::new(4, 1), "a candidate's vote: kept");
        let off = Durability::new(None);
        assert_eq!(off.restarted(Vote::new_committed(3, 1)), Vote::new_committed(3, 1), "no early reports: kept");
    }

    #[test]
    fn only_the_current_leaders_own_entries_are_reported_before_their_fsync() {
        let d = Durability::new(Some(1));
        let mine = [entry(3, 1, 10), entry(3, 1, 11)];
        assert!(!d.own(&mine), "no vote yet");
        d.set_vote(Some(Vote::new(3, 1)));
        assert!(!d.own(&mine), "a candidate's vote is not committed");
        d.set_vote(Some(Vote::new_committed(3, 1)));
        assert!(d.own(&mine), "the leader's own entries of its term");
        assert!(!d.own(&[entry(2, 1, 10)]), "an entry of an earlier term of ours, received back");
        assert!(!d.own(&[entry(3, 1, 10), entry(3, 2, 11)]), "all of them or none");
        d.set_vote(Some(Vote::new_committed(4, 2)));
        assert!(!d.own(&[entry(4, 2, 12)]), "a follower's entries from the leader");
        let off = Durability::new(None);
        off.set_vote(Some(Vote::new_committed(3, 1)));
        assert!(!off.own(&mine), "turned off without a node id");
    }

    #[tokio::test]
    async fn entries_reported_early_are_neither_applied_nor_told_committed_before_their_fsync() {
        let (_dir, ns) = log_namespace();
        let d = Durability::new(Some(1));
        d.set_written(Some(log_id(1, 1, 5)));
        d.inner.early.store(5, Ordering::Release);

        // Not on disk yet: applying waits, followers hear no commit beyond the disk.
        let blocked = tokio::time::timeout(Duration::from_millis(50), d.wait_durable(5)).await;
        assert!(blocked.is_err(), "applying an entry reported early waited for its sync");
        assert_eq!(d.cap_commit(Some(log_id(1, 1, 5))), None);
        assert!(d.take_held_back(), "the held-back commit is remembered");
        assert!(!d.take_held_back(), "…once");
        assert_eq!(d.cap_commit(None), None);

        // Entries never reported early (a follower's) are not held.
        let follower = Durability::new(Some(2));
        tokio::time::timeout(Duration::from_secs(5), follower.wait_durable(9)).await.unwrap().unwrap();

        let waiter = tokio::spawn({
            let d = d.clone();
            async move { d.wait_durable(5).await }
        });
        d.sync(&ns).await.unwrap();
        tokio::time::timeout(Duration::from_secs(5), waiter).await.unwrap().unwrap().unwrap();
        assert_eq!(d.cap_commit(Some(log_id(1, 1, 5))), Some(log_id(1, 1, 5)), "on disk: told in full");
        assert!(!d.take_held_back());
        assert_eq!(d.cap_commit(Some(log_id(1, 1, 7))), Some(log_id(1, 1, 5)), "never beyond the disk");
    }

    #[tokio::test]
    async fn a_sync_publishes_only_what_was_written_before_it_began() {
        let (_dir, ns) = log_namespace();
        let d = Durability::new(Some(1));
        d.set_written(Some(log_id(1, 1, 3)));
        // A truncation holds the lock: a sync waits for it and then publishes what it left.
        let held = d.inner.sync_lock.lock().await;
        let sync = tokio::spawn({
            let (d, ns) = (d.clone(), ns.clone());
            async move { d.sync(&ns).await }
        });
        d.set_written(Some(log_id(1, 1, 2)));
        drop(held);
        sync.await.unwrap().unwrap();
        assert_eq!(*d.inner.durable.borrow(), Some(log_id(1, 1, 2)));
    }
}
