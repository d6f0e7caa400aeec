//! The Raft log, durable in the node's store (namespace `raft_log`).
//!
//! Keys: `l` + big-endian index → the entry; `v` → the vote; `c` → the committed log id;
//! `p` → the last purged log id. Appends and votes are fsync'd (group commit) before openraft is
//! told they are done, so an entry a follower acknowledges is on its disk: an acknowledged write
//! is on a quorum of disks.
//!
//! An append returns once its entries are written; its fsync is left to a flusher task, which
//! syncs once for every append queued meanwhile and then tells openraft (in append order) that
//! they are durable. So openraft keeps accepting and replicating entries while the disk syncs,
//! and one fsync covers many appends.

use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::sync::{Arc, OnceLock};

use basalt_runtime::Namespace;
use openraft::storage::{LogFlushed, LogState, RaftLogReader, RaftLogStorage};
use openraft::{ErrorSubject, ErrorVerb, OptionalSend, RaftLogId};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::types::{Entry, LogId, StorageError, TypeConfig, Vote};

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

type Flushes = tokio::sync::mpsc::UnboundedSender<LogFlushed<TypeConfig>>;

#[derive(Clone)]
pub struct LogStore {
    ns: Namespace,
    /// The flusher task's queue (started on the first append, inside the runtime).
    flusher: Arc<OnceLock<Flushes>>,
}

impl LogStore {
    pub fn new(ns: Namespace) -> Self {
        Self { ns, flusher: Arc::default() }
    }

    fn flusher(&self) -> &Flushes {
        self.flusher.get_or_init(|| {
            let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<LogFlushed<TypeConfig>>();
            let ns = self.ns.clone();
            tokio::spawn(async move {
                while let Some(first) = rx.recv().await {
                    // Every append queued so far was written before it was queued: one fsync
                    // makes them all durable.
                    let mut done = vec![first];
                    while let Ok(next) = rx.try_recv() {
                        done.push(next);
                    }
                    let synced = ns.sync().await;
                    for callback in done {
                        callback.log_io_completed(
                            synced.as_ref().map(|_| ()).map_err(|e| std::io::Error::other(e.to_string())),
                        );
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
        self.ns.sync().await.map_err(|e| io_err(ErrorSubject::Store, ErrorVerb::Write, e))
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
        let last = self
            .ns
            .last_with_prefix(&[ENTRY])
            .map_err(|e| io_err(ErrorSubject::Logs, ErrorVerb::Read, e))?
            .map(|(_, v)| decode::<Entry>(&v))
            .transpose()?
            .map(|e| *e.get_log_id());
        Ok(LogState { last_purged_log_id: last_purged, last_log_id: last.or(last_purged) })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), StorageError> {
        self.put(VOTE, vote)?;
        self.sync().await
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, StorageError> {
        self.get(VOTE)
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
        let mut puts = Vec::new();
        for e in entries {
            puts.push((entry_key(e.get_log_id().index).to_vec(), encode(&e)?));
        }
        self.ns.write_batch(&puts, &[]).map_err(|e| io_err(ErrorSubject::Logs, ErrorVerb::Write, e))?;
        if let Err(back) = self.flusher().send(callback) {
            // The flusher is gone (shutting down): sync here.
            let synced = self.ns.sync().await;
            back.0.log_io_completed(synced.as_ref().map(|_| ()).map_err(|e| std::io::Error::other(e.to_string())));
            return synced.map_err(|e| io_err(ErrorSubject::Logs, ErrorVerb::Write, e));
        }
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId) -> Result<(), StorageError> {
        self.delete_range(log_id.index, u64::MAX)?;
        self.sync().await
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), StorageError> {
        self.put(PURGED, &log_id)?;
        self.sync().await?;
        self.delete_range(0, log_id.index.saturating_add(1))
    }
}
