//! Historical events for watches: what etcd's unsynced watchers read from the backend.

use crate::error::Error;
use crate::store::{Span, Store, kv_at};
use crate::types::{Event, EventBatch, EventFilter, EventType, KeyValue, Revision};

impl Store {
    /// The events on `key` / `range_end` (etcd's conventions, as in a range; an empty key is
    /// allowed here) at revisions `>= start_revision`, in (revision, sub) order, after `filter`.
    /// `start_revision <= 0` means "from the next revision" (nothing yet). With `prev_kv`, each
    /// event that is not a create carries the key as of the revision before it, when that
    /// revision is not compacted (etcd's watch server rule).
    ///
    /// `limit` (0: none) bounds the events returned, but a revision's events are never split: the
    /// batch ends after the first revision that reaches the limit. Resume from
    /// [`EventBatch::next_revision`].
    ///
    /// After `compact(c)`, a watch may start at `c`: it sees the puts at `c` but not the deletes
    /// at `c` (compaction removes tombstones at its revision, as in etcd).
    ///
    /// # Errors
    /// [`Error::Compacted`] (with the compaction revision) if `start_revision` is below the
    /// compaction revision.
    pub fn events(
        &self,
        start_revision: i64,
        key: &[u8],
        range_end: &[u8],
        filter: EventFilter,
        prev_kv: bool,
        limit: usize,
    ) -> Result<EventBatch, Error> {
        let start = if start_revision <= 0 { self.revision.saturating_add(1) } else { start_revision };
        if start < self.compact_revision {
            return Err(self.compacted());
        }
        let span = Span::new(key, range_end);
        let from = Revision { main: start, sub: 0 };
        // A single key walks its own history; a range walks the log.
        let changes: Box<dyn Iterator<Item = (Revision, &[u8])> + '_> = match span {
            Span::Key(k) => match self.keys.get_key_value(k) {
                Some((k, history)) => {
                    let first = history.partition_point(|c| c.rev < from);
                    Box::new(history.get(first..).unwrap_or(&[]).iter().map(move |c| (c.rev, k.as_slice())))
                }
                None => Box::new(std::iter::empty()),
            },
            _ => {
                Box::new(self.log.range(from..).filter(move |(_, k)| span.contains(k)).map(|(r, k)| (*r, k.as_slice())))
            }
        };
        let mut events = Vec::new();
        let mut next_revision = self.revision.saturating_add(1);
        let mut current_main = None;
        for (rev, k) in changes {
            if current_main != Some(rev.main) {
                if limit > 0 && events.len() >= limit {
                    next_revision = rev.main;
                    break;
                }
                current_main = Some(rev.main);
            }
            let Some(event) = self.event_at(k, rev, prev_kv) else { continue };
            if filter.accepts(&event) {
                events.push(event);
            }
        }
        Ok(EventBatch { events, next_revision })
    }

    /// The event of `key`'s change at exactly `rev`.
    fn event_at(&self, key: &[u8], rev: Revision, want_prev: bool) -> Option<Event> {
        let history = self.keys.get(key)?;
        let i = history.binary_search_by(|c| c.rev.cmp(&rev)).ok()?;
        let change = history.get(i)?;
        let (kind, kv) = match change.to_kv(key) {
            Some(kv) => (EventType::Put, kv),
            None => (EventType::Delete, KeyValue { key: key.to_vec(), mod_revision: rev.main, ..KeyValue::default() }),
        };
        let is_create = kind == EventType::Put && kv.create_revision == kv.mod_revision;
        let before = rev.main.saturating_sub(1);
        let prev_kv =
            if want_prev && !is_create && before >= self.compact_revision { kv_at(key, history, before) } else { None };
        Some(Event { kind, kv, prev_kv })
    }
}
