//! Durable worker-id leases and the node's high-water mark, kept in the node's own store.
//!
//! The lease table itself is the pure `basalt_idgen::LeaseTable`; this module only loads it,
//! applies one change, and writes it back with an fsync before anyone relies on the result.
//! Single-node mode keeps the table in the node's namespace; when the consensus engine lands,
//! the same table moves into its state machine and worker ids are handed out cluster-wide.

use basalt_idgen::{Lease, LeaseTable};
use basalt_runtime::Namespace;
use rand::TryRngCore;

const TABLE_KEY: &[u8] = b"lease_table";
const HOLDER_KEY: &[u8] = b"holder_id";
const RESERVED_KEY: &[u8] = b"reserved_until_ms";

pub struct LocalRegistry {
    ns: Namespace,
    holder: String,
}

impl LocalRegistry {
    /// Open the registry; the holder id is created once per data dir and kept forever.
    pub fn open(ns: Namespace) -> anyhow::Result<Self> {
        let holder = match ns.get(HOLDER_KEY)? {
            Some(v) => String::from_utf8(v)?,
            None => {
                let mut raw = [0u8; 16];
                rand::rngs::OsRng.try_fill_bytes(&mut raw).map_err(|e| anyhow::anyhow!("no OS randomness: {e}"))?;
                let id: String = raw.iter().map(|b| format!("{b:02x}")).collect();
                ns.put(HOLDER_KEY, id.as_bytes())?;
                ns.store().sync_blocking()?;
                id
            }
        };
        Ok(Self { ns, holder })
    }

    pub fn holder(&self) -> &str {
        &self.holder
    }

    fn load(&self) -> anyhow::Result<LeaseTable> {
        Ok(match self.ns.get(TABLE_KEY)? {
            Some(v) => serde_json::from_slice(&v)?,
            None => LeaseTable::default(),
        })
    }

    /// The node's own high-water mark: every timestamp it may have issued is at most this.
    pub fn reserved_until_ms(&self) -> anyhow::Result<u64> {
        Ok(match self.ns.get(RESERVED_KEY)? {
            Some(v) => {
                u64::from_be_bytes(v.as_slice().try_into().map_err(|_| anyhow::anyhow!("corrupt high-water mark"))?)
            }
            None => 0,
        })
    }

    fn save(&self, table: &LeaseTable, reserved_until_ms: Option<u64>) -> anyhow::Result<()> {
        let mut puts = vec![(TABLE_KEY.to_vec(), serde_json::to_vec(table)?)];
        if let Some(r) = reserved_until_ms {
            puts.push((RESERVED_KEY.to_vec(), r.to_be_bytes().to_vec()));
        }
        self.ns.write_batch(&puts, &[])?;
        Ok(())
    }

    /// Take `count` worker ids (or the configured range), durably. Blocking: startup only.
    pub fn acquire(
        &self,
        count: u32,
        base: Option<u32>,
        max_worker: u32,
        now_ms: u64,
        ttl_ms: u64,
    ) -> anyhow::Result<Vec<Lease>> {
        let mut table = self.load()?;
        let leases = match base {
            Some(b) => (b..b + count)
                .map(|w| table.acquire_specific(&self.holder, w, now_ms, ttl_ms))
                .collect::<Result<Vec<_>, _>>()?,
            None => table.acquire(&self.holder, count, max_worker, now_ms, ttl_ms)?,
        };
        self.save(&table, None)?;
        self.ns.store().sync_blocking()?;
        Ok(leases)
    }

    /// Extend every lease's reservation through `through_ms` and record the node's high-water
    /// mark, in one atomic write. Not durable until the caller syncs.
    pub fn renew_all(&self, leases: &[Lease], through_ms: u64, now_ms: u64, ttl_ms: u64) -> anyhow::Result<Vec<Lease>> {
        let mut table = self.load()?;
        let renewed =
            leases.iter().map(|l| table.renew(l, through_ms, now_ms, ttl_ms)).collect::<Result<Vec<_>, _>>()?;
        let high = self.reserved_until_ms()?.max(through_ms);
        self.save(&table, Some(high))?;
        Ok(renewed)
    }

    pub fn namespace(&self) -> &Namespace {
        &self.ns
    }
}
