//! Write transactions: every change of one request goes at revision `begin + 1` with increasing
//! sub-revisions, straight into the histories (so later operations of the same transaction see
//! earlier ones, as in etcd 3.5). A transaction either commits (the store revision becomes
//! `begin + 1` if anything changed) or rolls back every change it made, leases included.

use crate::error::Error;
use crate::store::{Change, Live, Span, Store, change_at, kv_at};
use crate::types::{
    DeleteRangeRequest, DeleteRangeResponse, Event, EventType, KeyValue, Outcome, PutRequest, PutResponse,
    RangeRequest, RangeResponse, Revision,
};

pub(crate) struct Writer<'s> {
    store: &'s mut Store,
    /// The store revision when the transaction began.
    begin: i64,
    /// The key of each change made, in sub-revision order (for rollback).
    touched: Vec<Vec<u8>>,
    /// `None` inside [`Store::quietly`]: no events are built.
    events: Option<Vec<Event>>,
}

impl<'s> Writer<'s> {
    pub(crate) fn new(store: &'s mut Store) -> Self {
        let begin = store.revision;
        let events = (!store.quiet).then(Vec::new);
        Writer { store, begin, touched: Vec::new(), events }
    }

    pub(crate) fn store(&self) -> &Store {
        self.store
    }

    /// The revision every change of this transaction gets.
    fn write_rev(&self) -> i64 {
        self.begin.saturating_add(1)
    }

    /// The revision reads inside the transaction see as current (etcd's `storeTxnWrite.Range`).
    pub(crate) fn read_rev(&self) -> i64 {
        if self.touched.is_empty() { self.begin } else { self.write_rev() }
    }

    fn next_revision(&self) -> Revision {
        Revision { main: self.write_rev(), sub: i64::try_from(self.touched.len()).unwrap_or(i64::MAX) }
    }

    /// Appends a change to `key`'s history and to the log.
    fn record(&mut self, key: &[u8], change: Change) {
        self.store.size_bytes = self.store.size_bytes.saturating_add(change.size_bytes(key));
        self.store.log.insert(change.rev, key.to_vec());
        match self.store.keys.get_mut(key) {
            Some(history) => history.push(change),
            None => {
                self.store.keys.insert(key.to_vec(), vec![change]);
            }
        }
        self.touched.push(key.to_vec());
    }

    /// The key-value `key` had when the transaction began, for an event's `prev_kv`.
    fn before(&self, key: &[u8]) -> Option<KeyValue> {
        self.store.keys.get(key).and_then(|h| kv_at(key, h, self.begin))
    }

    /// Etcd's `storeTxnWrite.put`: a new version of `key` (version and create revision carry on
    /// from the key's current incarnation), moving the key between leases if needed.
    pub(crate) fn put(&mut self, key: &[u8], value: Vec<u8>, lease: i64) {
        let rev = self.next_revision();
        let current = self.store.keys.get(key).and_then(|h| h.last()).and_then(|c| c.live.as_ref());
        let (create_revision, version, old_lease) = match current {
            Some(l) => (l.create_revision, l.version.saturating_add(1), l.lease),
            None => (rev.main, 1, 0),
        };
        let event = self.events.is_some().then(|| Event {
            kind: EventType::Put,
            kv: KeyValue {
                key: key.to_vec(),
                create_revision,
                mod_revision: rev.main,
                version,
                value: value.clone(),
                lease,
            },
            prev_kv: if create_revision == rev.main { None } else { self.before(key) },
        });
        self.record(key, Change { rev, live: Some(Live { value, create_revision, version, lease }) });
        if old_lease != lease {
            self.store.detach(old_lease, key);
            self.store.attach(lease, key);
        }
        if let (Some(events), Some(e)) = (&mut self.events, event) {
            events.push(e);
        }
    }

    /// Etcd's `storeTxnWrite.delete`: a tombstone for a key that exists now.
    fn delete(&mut self, key: &[u8]) {
        let rev = self.next_revision();
        let old_lease =
            self.store.keys.get(key).and_then(|h| h.last()).and_then(|c| c.live.as_ref()).map_or(0, |l| l.lease);
        let prev_kv = self.events.is_some().then(|| self.before(key)).flatten();
        self.record(key, Change { rev, live: None });
        self.store.detach(old_lease, key);
        if let Some(events) = &mut self.events {
            let kv = KeyValue { key: key.to_vec(), mod_revision: rev.main, ..KeyValue::default() };
            events.push(Event { kind: EventType::Delete, kv, prev_kv });
        }
    }

    /// Deletes every key that exists now in the span; returns how many.
    pub(crate) fn delete_span(&mut self, key: &[u8], range_end: &[u8]) -> i64 {
        let victims: Vec<Vec<u8>> = Span::new(key, range_end)
            .iter(&self.store.keys)
            .filter(|(_, h)| h.last().is_some_and(|c| c.live.is_some()))
            .map(|(k, _)| k.clone())
            .collect();
        for k in &victims {
            self.delete(k);
        }
        i64::try_from(victims.len()).unwrap_or(i64::MAX)
    }

    /// A range as the transaction sees it.
    pub(crate) fn range(&self, req: &RangeRequest) -> Result<RangeResponse, Error> {
        self.store.range_at(req, self.read_rev())
    }

    /// Etcd's `put` (the request-level one): `ignore_value`, `ignore_lease`, `prev_kv`. The only
    /// error is [`Error::KeyNotFound`]; lease existence is the caller's check.
    pub(crate) fn put_request(&mut self, req: &PutRequest) -> Result<PutResponse, Error> {
        let prev = if req.ignore_value || req.ignore_lease || req.prev_kv {
            self.store.keys.get(&req.key).and_then(|h| h.last()).and_then(|c| c.to_kv(&req.key))
        } else {
            None
        };
        let (value, lease) = match (&prev, req.ignore_value || req.ignore_lease) {
            (None, true) => return Err(Error::KeyNotFound),
            (Some(p), true) => (
                if req.ignore_value { p.value.clone() } else { req.value.clone() },
                if req.ignore_lease { p.lease } else { req.lease },
            ),
            (_, false) => (req.value.clone(), req.lease),
        };
        self.put(&req.key, value, lease);
        Ok(PutResponse { revision: self.write_rev(), prev_kv: if req.prev_kv { prev } else { None } })
    }

    /// Etcd's `deleteRange` (the request-level one).
    pub(crate) fn delete_request(&mut self, req: &DeleteRangeRequest) -> DeleteRangeResponse {
        let prev_kvs = if req.prev_kv {
            let cur = self.read_rev();
            Span::new(&req.key, &req.range_end)
                .iter(&self.store.keys)
                .filter_map(|(k, h)| change_at(h, cur).and_then(|c| c.to_kv(k)))
                .collect()
        } else {
            Vec::new()
        };
        let deleted = self.delete_span(&req.key, &req.range_end);
        DeleteRangeResponse { revision: self.read_rev(), deleted, prev_kvs }
    }

    /// Makes the changes current: the store revision moves on if anything changed.
    pub(crate) fn commit(self) -> Vec<Event> {
        if !self.touched.is_empty() {
            self.store.revision = self.write_rev();
        }
        self.events.unwrap_or_default()
    }

    /// Undoes every change, newest first, restoring lease attachments.
    pub(crate) fn rollback(self) {
        let write_rev = self.write_rev();
        for key in self.touched.iter().rev() {
            let Some(history) = self.store.keys.get_mut(key.as_slice()) else { continue };
            if history.last().is_none_or(|c| c.rev.main != write_rev) {
                continue;
            }
            let Some(undone) = history.pop() else { continue };
            let restored_lease = history.last().and_then(|c| c.live.as_ref()).map_or(0, |l| l.lease);
            if history.is_empty() {
                self.store.keys.remove(key.as_slice());
            }
            self.store.log.remove(&undone.rev);
            self.store.size_bytes = self.store.size_bytes.saturating_sub(undone.size_bytes(key));
            let undone_lease = undone.live.as_ref().map_or(0, |l| l.lease);
            if undone_lease != restored_lease {
                self.store.detach(undone_lease, key);
                self.store.attach(restored_lease, key);
            }
        }
    }
}

/// `Put` / `DeleteRange` outside a transaction, and the request checks etcd's gRPC layer does.
impl Store {
    /// Etcd's Put.
    ///
    /// # Errors
    /// [`Error::EmptyKey`], [`Error::ValueProvided`], [`Error::LeaseProvided`] (request checks),
    /// then [`Error::LeaseNotFound`], then [`Error::KeyNotFound`] (with `ignore_value` or
    /// `ignore_lease` on a missing key) — in etcd's order. On error nothing changes.
    pub fn put(&mut self, req: &PutRequest) -> Result<Outcome<PutResponse>, Error> {
        check_put_request(req)?;
        if req.lease != 0 && !self.leases.contains_key(&req.lease) {
            return Err(Error::LeaseNotFound);
        }
        let mut w = Writer::new(self);
        match w.put_request(req) {
            Ok(response) => Ok(Outcome { response, events: w.commit() }),
            Err(e) => {
                w.rollback();
                Err(e)
            }
        }
    }

    /// Etcd's DeleteRange. Deleting nothing leaves the revision unchanged.
    ///
    /// # Errors
    /// [`Error::EmptyKey`].
    pub fn delete_range(&mut self, req: &DeleteRangeRequest) -> Result<Outcome<DeleteRangeResponse>, Error> {
        if req.key.is_empty() {
            return Err(Error::EmptyKey);
        }
        let mut w = Writer::new(self);
        let response = w.delete_request(req);
        Ok(Outcome { response, events: w.commit() })
    }
}

/// Etcd's `checkPutRequest` (done before the request reaches the state machine).
pub(crate) fn check_put_request(req: &PutRequest) -> Result<(), Error> {
    if req.key.is_empty() {
        return Err(Error::EmptyKey);
    }
    if req.ignore_value && !req.value.is_empty() {
        return Err(Error::ValueProvided);
    }
    if req.ignore_lease && req.lease != 0 {
        return Err(Error::LeaseProvided);
    }
    Ok(())
}
