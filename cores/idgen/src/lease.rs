//! Durable worker-id leases with fencing, as a pure state machine.
//!
//! Two live Snowflake generators with the same worker id could issue the same ID, so a worker
//! id must have one holder at a time, and a worker id handed to a new holder must start above
//! every timestamp the previous holder may have issued. The [`LeaseTable`] is plain data with
//! deterministic transitions (`acquire`, `acquire_specific`, `renew`, `release`), each taking
//! the caller's `now_ms`, so today a node keeps it in its own store and later a consensus
//! state machine can own it unchanged.
//!
//! # Safety argument
//!
//! A holder issues only timestamps in `(floor_ms, reserved_until_ms]` of its lease (the
//! generator is built with exactly those bounds, see [`TimeGuard`](crate::TimeGuard)), and it
//! can raise `reserved_until_ms` only through [`LeaseTable::renew`], which succeeds only while
//! the table's record still carries the holder's fencing number. Every acquisition bumps the
//! fencing number and sets the new holder's `floor_ms` to the record's `reserved_until_ms` at
//! that moment, which is the highest reservation the old holder was ever granted: after the
//! bump, the old holder can no longer renew. So the time ranges two successive holders of one
//! worker id can issue in are `(f1, r1]` and `(r1, r2]`: they never overlap, whatever the
//! clocks of the holders or of the table do. Expiry only decides *when* a worker id may be
//! taken over, never whether two holders can collide; a holder that keeps issuing after
//! losing its lease (a paused process, a partitioned node) stays inside its old range.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// One holder's right to use one worker id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    pub worker: u32,
    /// Who holds it: an id that stays the same across the holder's restarts.
    pub holder: String,
    /// Bumped on every acquisition of this worker id (starting at 1); only the lease with the
    /// table's current fencing number may renew.
    pub fencing: u64,
    /// The holder may issue only timestamps strictly above this.
    pub floor_ms: u64,
    /// ... and at most this. Starts at `floor_ms`: the holder must reserve before issuing.
    pub reserved_until_ms: u64,
    /// After this (`expires_at_ms <= now_ms`) another holder may take the worker id over.
    pub expires_at_ms: u64,
}

impl Lease {
    /// Whether the lease still blocks other holders at `now_ms`.
    pub fn is_live(&self, now_ms: u64) -> bool {
        self.expires_at_ms > now_ms
    }
}

/// Every worker id ever leased, by worker id (ordered, so iteration and choice are
/// deterministic). Records are never removed: an expired or released record still carries
/// the reservation the next holder's floor must clear.
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseTable {
    leases: BTreeMap<u32, Lease>,
}

/// Why a lease operation was refused. The table is unchanged whenever one is returned.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LeaseError {
    #[error("wanted {wanted} worker ids but only {available} are free or expired")]
    Exhausted { wanted: u32, available: u32 },
    #[error("worker id {worker} is held by {holder:?} until {expires_at_ms} ms (Unix)")]
    Held { worker: u32, holder: String, expires_at_ms: u64 },
    #[error(
        "the lease on worker id {worker} is stale: it carries fencing number {presented} but the \
         table is at {current}, so the worker id has been taken over since"
    )]
    Fenced { worker: u32, presented: u64, current: u64 },
    #[error("worker id {worker} has never been leased")]
    Unknown { worker: u32 },
}

impl LeaseTable {
    pub fn new() -> Self {
        Self::default()
    }

    /// The current record for `worker`, if it was ever leased.
    pub fn get(&self, worker: u32) -> Option<&Lease> {
        self.leases.get(&worker)
    }

    /// All records, by worker id.
    pub fn iter(&self) -> impl Iterator<Item = &Lease> {
        self.leases.values()
    }

    pub fn len(&self) -> usize {
        self.leases.len()
    }

    pub fn is_empty(&self) -> bool {
        self.leases.is_empty()
    }

    /// Give `count` worker ids in `0..=max_worker` to `holder`, all or nothing.
    ///
    /// Preference: worker ids the holder already holds (a restarted holder gets its own back,
    /// fencing out its previous incarnation), then never-used ones (lowest first), then ones
    /// whose lease has expired (lowest first). Returns the new leases ordered by worker id.
    pub fn acquire(
        &mut self,
        holder: &str,
        count: u32,
        max_worker: u32,
        now_ms: u64,
        ttl_ms: u64,
    ) -> Result<Vec<Lease>, LeaseError> {
        let in_range = || self.leases.range(..=max_worker).map(|(_, l)| l);
        let own = in_range().filter(|l| l.holder == holder).count() as u64;
        let expired = in_range().filter(|l| l.holder != holder && !l.is_live(now_ms)).count() as u64;
        let never_used = u64::from(max_worker) + 1 - in_range().count() as u64;
        let available = own + never_used + expired;
        if available < u64::from(count) {
            return Err(LeaseError::Exhausted {
                wanted: count,
                available: u32::try_from(available).unwrap_or(u32::MAX),
            });
        }

        let wanted = count as usize;
        let mut chosen: Vec<u32> = in_range().filter(|l| l.holder == holder).map(|l| l.worker).take(wanted).collect();
        let fresh = (0..=max_worker).filter(|w| !self.leases.contains_key(w));
        chosen.extend(fresh.take(wanted - chosen.len()));
        let stale = in_range().filter(|l| l.holder != holder && !l.is_live(now_ms)).map(|l| l.worker);
        chosen.extend(stale.take(wanted - chosen.len()));
        chosen.sort_unstable();

        Ok(chosen.into_iter().map(|w| self.grant(holder, w, now_ms, ttl_ms)).collect())
    }

    /// Give one statically configured worker id to `holder`, unless another holder's lease on
    /// it is live. Re-acquiring one's own lease always succeeds (and fences out the old one).
    pub fn acquire_specific(
        &mut self,
        holder: &str,
        worker: u32,
        now_ms: u64,
        ttl_ms: u64,
    ) -> Result<Lease, LeaseError> {
        if let Some(current) = self.leases.get(&worker)
            && current.holder != holder
            && current.is_live(now_ms)
        {
            return Err(LeaseError::Held {
                worker,
                holder: current.holder.clone(),
                expires_at_ms: current.expires_at_ms,
            });
        }
        Ok(self.grant(holder, worker, now_ms, ttl_ms))
    }

    /// Extend a current lease: raise its reservation to at least `reserve_through_ms` and its
    /// expiry to at least `now_ms + ttl_ms`. A lease that expired but was not taken over may
    /// still renew; one whose fencing number (or holder) is no longer the table's may not.
    ///
    /// The holder may use the new reservation only once the table change is durable.
    pub fn renew(
        &mut self,
        lease: &Lease,
        reserve_through_ms: u64,
        now_ms: u64,
        ttl_ms: u64,
    ) -> Result<Lease, LeaseError> {
        let record = self.current_mut(lease)?;
        record.reserved_until_ms = record.reserved_until_ms.max(reserve_through_ms);
        record.expires_at_ms = record.expires_at_ms.max(now_ms.saturating_add(ttl_ms));
        Ok(record.clone())
    }

    /// Give a current lease up: it expires at once (for every clock), but keeps its floor and
    /// reservation so the next holder still starts above them.
    pub fn release(&mut self, lease: &Lease) -> Result<(), LeaseError> {
        self.current_mut(lease)?.expires_at_ms = 0;
        Ok(())
    }

    /// The table's record for `lease`, if `lease` is still the current one.
    fn current_mut(&mut self, lease: &Lease) -> Result<&mut Lease, LeaseError> {
        let worker = lease.worker;
        let record = self.leases.get_mut(&worker).ok_or(LeaseError::Unknown { worker })?;
        if record.fencing != lease.fencing || record.holder != lease.holder {
            return Err(LeaseError::Fenced { worker, presented: lease.fencing, current: record.fencing });
        }
        Ok(record)
    }

    /// The one place a worker id changes hands: bump the fencing number and start the new
    /// holder above everything the previous one may have issued.
    fn grant(&mut self, holder: &str, worker: u32, now_ms: u64, ttl_ms: u64) -> Lease {
        let previous = self.leases.get(&worker);
        let fencing = previous.map_or(1, |p| p.fencing.checked_add(1).expect("2^64 acquisitions of one worker id"));
        let floor_ms = previous.map_or(0, |p| p.reserved_until_ms.max(p.floor_ms));
        let lease = Lease {
            worker,
            holder: holder.to_owned(),
            fencing,
            floor_ms,
            reserved_until_ms: floor_ms,
            expires_at_ms: now_ms.saturating_add(ttl_ms),
        };
        self.leases.insert(worker, lease.clone());
        lease
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn preference_order_own_then_fresh_then_expired() {
        let mut t = LeaseTable::new();
        let a = t.acquire("a", 2, 3, 0, 100).unwrap();
        assert_eq!(a.iter().map(|l| l.worker).collect::<Vec<_>>(), [0, 1]);
        let b = t.acquire("b", 1, 3, 0, 10).unwrap();
        assert_eq!(b[0].worker, 2);
        // At 50, b's lease has expired; a re-acquires its own two first, then fresh worker 3.
        let a2 = t.acquire("a", 3, 3, 50, 100).unwrap();
        assert_eq!(a2.iter().map(|l| (l.worker, l.fencing)).collect::<Vec<_>>(), [(0, 2), (1, 2), (3, 1)]);
        // c gets b's expired worker 2, then nothing is left.
        assert_eq!(t.acquire("c", 1, 3, 50, 100).unwrap()[0].worker, 2);
        let before = t.clone();
        assert_eq!(t.acquire("d", 1, 3, 50, 100), Err(LeaseError::Exhausted { wanted: 1, available: 0 }));
        assert_eq!(t, before);
    }

    #[test]
    fn new_holder_starts_above_old_reservation() {
        let mut t = LeaseTable::new();
        let a = t.acquire_specific("a", 7, 0, 10).unwrap();
        let a = t.renew(&a, 500, 5, 10).unwrap();
        assert_eq!(
            t.acquire_specific("b", 7, 14, 10),
            Err(LeaseError::Held { worker: 7, holder: "a".into(), expires_at_ms: 15 })
        );
        let b = t.acquire_specific("b", 7, 15, 10).unwrap();
        assert_eq!((b.fencing, b.floor_ms, b.reserved_until_ms), (2, 500, 500));
        assert_eq!(t.renew(&a, 900, 16, 10), Err(LeaseError::Fenced { worker: 7, presented: 1, current: 2 }));
        assert_eq!(t.release(&a), Err(LeaseError::Fenced { worker: 7, presented: 1, current: 2 }));
    }

    #[test]
    fn release_keeps_reservation() {
        let mut t = LeaseTable::new();
        let a = t.acquire_specific("a", 0, 1_000, 10_000).unwrap();
        let a = t.renew(&a, 2_000, 1_000, 10_000).unwrap();
        t.release(&a).unwrap();
        let b = t.acquire_specific("b", 0, 1_001, 10).unwrap();
        assert_eq!(b.floor_ms, 2_000);
    }
}
