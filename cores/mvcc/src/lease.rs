//! Leases: grant, revoke (deleting the attached keys in one revision), lookups. The store has no
//! clock: when a lease expires is the driver's decision (the consensus leader proposes a revoke).

use std::collections::BTreeSet;

use crate::error::Error;
use crate::store::{LEASE_OVERHEAD_BYTES, Lease, Store};
use crate::types::{LeaseGrantResponse, LeaseRevokeResponse, LeaseTimeToLiveResponse, Outcome};
use crate::write::Writer;

/// The largest TTL a grant accepts, in seconds (etcd's `MaxLeaseTTL`).
pub const MAX_LEASE_TTL_SECS: i64 = 9_000_000_000;

impl Store {
    /// Etcd's LeaseGrant. `id == 0` lets the store pick: the smallest unused id at or after an
    /// internal counter that starts at 1 (deterministic, unlike etcd's random-looking ids).
    /// A TTL below `min_lease_ttl_secs` (including zero and negatives) is raised to it. Does not
    /// change the store revision.
    ///
    /// # Errors
    /// [`Error::LeaseTtlTooLarge`] above [`MAX_LEASE_TTL_SECS`]; [`Error::LeaseExists`] for an id
    /// in use.
    pub fn lease_grant(&mut self, id: i64, ttl_secs: i64) -> Result<LeaseGrantResponse, Error> {
        if ttl_secs > MAX_LEASE_TTL_SECS {
            return Err(Error::LeaseTtlTooLarge);
        }
        let id = if id == 0 {
            self.pick_lease_id()
        } else if self.leases.contains_key(&id) {
            return Err(Error::LeaseExists);
        } else {
            id
        };
        let ttl = ttl_secs.max(self.config.min_lease_ttl_secs);
        self.leases.insert(id, Lease { ttl, keys: BTreeSet::new() });
        self.size_bytes = self.size_bytes.saturating_add(LEASE_OVERHEAD_BYTES);
        Ok(LeaseGrantResponse { revision: self.revision, id, ttl })
    }

    /// The smallest free positive id at or after the counter, wrapping to 1; moves the counter.
    /// Terminates: at most `leases.len() + 1` candidates are taken.
    fn pick_lease_id(&mut self) -> i64 {
        let mut id = self.next_lease_id.max(1);
        while self.leases.contains_key(&id) {
            id = id.checked_add(1).unwrap_or(1);
        }
        self.next_lease_id = id.checked_add(1).unwrap_or(1);
        id
    }

    /// Etcd's LeaseRevoke: deletes every attached key (in key order, all at one new revision; no
    /// revision if there are none), then the lease. Returns the delete events.
    ///
    /// # Errors
    /// [`Error::LeaseNotFound`].
    pub fn lease_revoke(&mut self, id: i64) -> Result<Outcome<LeaseRevokeResponse>, Error> {
        let Some(lease) = self.leases.get(&id) else { return Err(Error::LeaseNotFound) };
        let keys: Vec<Vec<u8>> = lease.keys.iter().cloned().collect();
        let mut w = Writer::new(self);
        for key in &keys {
            w.delete_span(key, &[]);
        }
        let events = w.commit();
        self.leases.remove(&id);
        self.size_bytes = self.size_bytes.saturating_sub(LEASE_OVERHEAD_BYTES);
        Ok(Outcome { response: LeaseRevokeResponse { revision: self.revision }, events })
    }

    /// Etcd's LeaseTimeToLive without the remaining TTL (the driver tracks expiry; it answers
    /// etcd's `TTL: -1` for a missing lease).
    ///
    /// # Errors
    /// [`Error::LeaseNotFound`].
    pub fn lease_time_to_live(&self, id: i64, keys: bool) -> Result<LeaseTimeToLiveResponse, Error> {
        let lease = self.leases.get(&id).ok_or(Error::LeaseNotFound)?;
        Ok(LeaseTimeToLiveResponse {
            revision: self.revision,
            id,
            granted_ttl: lease.ttl,
            keys: if keys { lease.keys.iter().cloned().collect() } else { Vec::new() },
        })
    }

    /// Whether lease `id` exists (for keep-alives).
    pub fn lease_exists(&self, id: i64) -> bool {
        self.leases.contains_key(&id)
    }

    /// Every lease id, ascending (etcd's LeaseLeases).
    pub fn leases(&self) -> Vec<i64> {
        self.leases.keys().copied().collect()
    }
}
