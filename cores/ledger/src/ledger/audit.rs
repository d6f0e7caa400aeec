//! [`Ledger::audit`] and snapshots: the state is serialized as its facts (accounts by id,
//! transfers in timestamp order, pending statuses and histories by id); loading rebuilds the
//! indexes and audits everything.

use std::collections::BTreeMap;

use serde::ser::SerializeStruct;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::model::Side;
use super::{Account, AuditError, Balances, HistoryEntry, Kind, Ledger, PendingStatus, Slot, Transfer, kind};

impl Ledger {
    /// Checks every invariant of the state: balances equal the sum of the transfers (posted
    /// from single-phase transfers and posts, pending from transfers still pending); limits
    /// hold; total debits equal total credits; every reference resolves; timestamps are unique
    /// and at most `last_timestamp`; each history ends at the current balances. O(n). Run on
    /// every snapshot load.
    pub fn audit(&self) -> Result<(), AuditError> {
        let fail = |m: String| Err(AuditError(m));
        let mut sums: BTreeMap<u128, Balances> = BTreeMap::new();
        if self.ids.len() != self.transfers.len() {
            return fail("the transfer index does not match the transfers".to_owned());
        }
        for (i, t) in self.transfers.iter().enumerate() {
            let after_previous = i.checked_sub(1).is_none_or(|p| self.transfers[p].timestamp < t.timestamp);
            if t.timestamp > self.last_timestamp || !after_previous || self.ids.get(&t.id) != Some(&i) {
                return fail(format!("transfer {} has a bad timestamp", t.id));
            }
            let pending = match kind(t.flags) {
                Ok(Kind::Single | Kind::Post) => false,
                Ok(Kind::Pending) if self.pending.get(&t.id) == Some(&PendingStatus::Pending) => true,
                Ok(Kind::Pending | Kind::Void) => continue,
                Err(_) => return fail(format!("transfer {} has invalid flags", t.id)),
            };
            for (account, side) in [(t.debit_account_id, Side::Debit), (t.credit_account_id, Side::Credit)] {
                let Some(a) = self.account(account) else {
                    return fail(format!("transfer {} references missing account {account}", t.id));
                };
                if a.currency != t.currency {
                    return fail(format!("transfer {} has another currency than account {account}", t.id));
                }
                let sum = sums.entry(account).or_default();
                match sum.add(side, pending, t.amount) {
                    Some(s) => *sum = s,
                    None => return fail(format!("balances of account {account} overflow")),
                }
            }
        }
        let mut totals = [0u128; 4];
        for a in self.accounts() {
            let b = a.balances();
            if sums.get(&a.id).copied().unwrap_or_default() != b {
                return fail(format!("account {} balances differ from its transfers", a.id));
            }
            if !b.within_limits(a.flags)
                || (a.flags.debits_must_not_exceed_credits && a.flags.credits_must_not_exceed_debits)
            {
                return fail(format!("account {} violates its limits", a.id));
            }
            let columns = [b.debits_pending, b.credits_pending, b.debits_posted, b.credits_posted];
            for (total, c) in totals.iter_mut().zip(columns) {
                *total = total.wrapping_add(c);
            }
            self.audit_history(a)?;
        }
        if totals[0] != totals[1] || totals[2] != totals[3] {
            return fail("total debits differ from total credits".to_owned());
        }
        self.audit_references()
    }

    fn audit_history(&self, a: &Account) -> Result<(), AuditError> {
        let entries = self.history.get(&a.id);
        match entries {
            None if !a.flags.history => Ok(()),
            Some(h)
                if a.flags.history
                    && h.first().is_some_and(|e| e.timestamp == a.created_at)
                    && h.windows(2).all(|w| w[0].timestamp < w[1].timestamp)
                    && h.last().is_some_and(|e| e.balances == a.balances() && e.timestamp <= self.last_timestamp) =>
            {
                Ok(())
            }
            _ => Err(AuditError(format!("account {} has an inconsistent history", a.id))),
        }
    }

    fn audit_references(&self) -> Result<(), AuditError> {
        let fail = |m: String| Err(AuditError(m));
        if self.history.keys().any(|id| !self.accounts.contains_key(id)) {
            return fail("history of a missing account".to_owned());
        }
        for (&id, status) in &self.pending {
            let Some(p) = self.transfer(id).filter(|p| p.flags.pending) else {
                return fail(format!("pending status for {id}, which is not a pending transfer"));
            };
            let by = match *status {
                PendingStatus::Pending | PendingStatus::Expired { .. } => None,
                PendingStatus::Posted { transfer_id } | PendingStatus::Voided { transfer_id } => Some(transfer_id),
            };
            if by.is_some_and(|by| self.transfer(by).is_none_or(|t| t.pending_id != p.id)) {
                return fail(format!("pending transfer {id} resolved by a transfer that does not reference it"));
            }
        }
        for t in &self.transfers {
            if t.flags.pending != self.pending.contains_key(&t.id) {
                return fail(format!("transfer {} has no pending status", t.id));
            }
            if t.reversal_of != 0 && self.reversed_by.get(&t.reversal_of) != Some(&t.id) {
                return fail(format!("transfer {} reverses {} more than once", t.id, t.reversal_of));
            }
        }
        if self.accounts().any(|a| a.created_at > self.last_timestamp) {
            return fail("an account was created after the last timestamp".to_owned());
        }
        Ok(())
    }

    /// Rebuilds the derived indexes from the facts, then audits.
    fn from_snapshot(s: Snapshot) -> Result<Ledger, AuditError> {
        let mut l = Ledger { last_timestamp: s.last_timestamp, ..Ledger::default() };
        for a in s.accounts {
            if a.id == 0
                || a.id == u128::MAX
                || l.accounts.insert(a.id, Slot { account: a, statement: Vec::new() }).is_some()
            {
                return Err(AuditError(format!("invalid or duplicate account id {}", a.id)));
            }
        }
        // Transfers are kept in timestamp order (snapshots written before they were listed them
        // by id).
        let mut transfers = s.transfers;
        if !transfers.is_sorted_by_key(|t| t.timestamp) {
            transfers.sort_unstable_by_key(|t| t.timestamp);
        }
        l.transfers.reserve_exact(transfers.len());
        for t in transfers {
            if t.id == 0 || t.id == u128::MAX || l.transfers.last().is_some_and(|last| last.timestamp >= t.timestamp) {
                return Err(AuditError(format!("invalid transfer id or duplicate timestamp {}", t.id)));
            }
            if t.reversal_of != 0 && l.reversed_by.contains_key(&t.reversal_of) {
                return Err(AuditError(format!("transfer {} reversed twice", t.reversal_of)));
            }
            for account in [t.debit_account_id, t.credit_account_id] {
                let Some(slot) = l.accounts.get_mut(&account) else {
                    return Err(AuditError(format!("transfer {} references missing account {account}", t.id)));
                };
                slot.statement.push(l.transfers.len());
            }
            if l.ids.contains_key(&t.id) {
                return Err(AuditError(format!("duplicate transfer id {}", t.id)));
            }
            l.index(&t, l.transfers.len());
            l.transfers.push(t);
        }
        for (id, status) in s.pending {
            if l.pending.insert(id, status).is_some() {
                return Err(AuditError(format!("duplicate pending status for {id}")));
            }
            if status == PendingStatus::Pending
                && let Some(at) = l.transfer(id).and_then(Transfer::expires_at)
            {
                l.expiries.insert((at, id));
            }
        }
        for (id, entries) in s.history {
            if l.history.insert(id, entries).is_some() {
                return Err(AuditError(format!("duplicate history for account {id}")));
            }
        }
        l.audit()?;
        Ok(l)
    }
}

/// The serialized form: facts only (transfers in timestamp order; before 2026-11 by id, which
/// loads too).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Snapshot {
    last_timestamp: u64,
    accounts: Vec<Account>,
    transfers: Vec<Transfer>,
    pending: Vec<(u128, PendingStatus)>,
    history: Vec<(u128, Vec<HistoryEntry>)>,
}

/// Serializes a map's entries as a sequence of pairs, without copying.
struct Entries<'a, K, V>(&'a BTreeMap<K, V>);

impl<K: Serialize, V: Serialize> Serialize for Entries<'_, K, V> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.0.iter())
    }
}

/// Serializes the accounts (without their derived statements) as a sequence.
struct Accounts<'a>(&'a Ledger);

impl Serialize for Accounts<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.0.accounts())
    }
}

impl Serialize for Ledger {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut st = s.serialize_struct("Ledger", 5)?;
        st.serialize_field("last_timestamp", &self.last_timestamp)?;
        st.serialize_field("accounts", &Accounts(self))?;
        st.serialize_field("transfers", &self.transfers)?;
        st.serialize_field("pending", &Entries(&self.pending))?;
        st.serialize_field("history", &Entries(&self.history))?;
        st.end()
    }
}

impl<'de> Deserialize<'de> for Ledger {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Ledger, D::Error> {
        let snapshot = Snapshot::deserialize(d)?;
        Ledger::from_snapshot(snapshot).map_err(serde::de::Error::custom)
    }
}
