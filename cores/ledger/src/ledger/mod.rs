//! [`Ledger`]: a double-entry ledger in the style of TigerBeetle.
//!
//! Accounts hold four balances (`debits_pending`, `debits_posted`, `credits_pending`,
//! `credits_posted`). Every transfer moves one amount from one account's debits to another
//! account's credits, both in the transfer's currency, so the sum of all debits always equals the
//! sum of all credits (pending and posted separately). Nothing is ever deleted: a mistake is
//! corrected by a new transfer ([reversals](Ledger::reverse)), a reservation ends by a post, a
//! void or its expiry.
//!
//! # Events and timestamps
//!
//! Every applied event — an account creation, a transfer, an expiry — gets a ledger timestamp,
//! `max(now_ms × 1_000_000, last + 1)` ("nanoseconds"), so timestamps are strictly increasing and
//! totally order all events; the same calls with the same `now_ms` give the same timestamps on
//! every replica. Wall-derived values are capped at [`TIMESTAMP_WALL_MAX`] (2^63, year 2262) so the
//! `+ 1` can never overflow. A refused event takes no timestamp.
//!
//! # Batches
//!
//! [`Ledger::apply_transfers`] returns one result per event, in order. Events flagged `linked`
//! form a chain with the next event; a chain applies entirely or not at all (the failing event
//! gets its own error, the others [`TransferError::LinkedEventFailed`]); a chain still open at
//! the end of the batch fails ([`TransferError::LinkedEventChainOpen`] on its last event). Each
//! event is validated completely before it changes anything, and a chain's changes are undone
//! from an undo log if a later member fails, so a failed chain leaves no trace — no balance, no
//! transfer, no history entry, no timestamp. Work per event is O(log n).
//!
//! # Idempotency
//!
//! Ids are chosen by the client. Re-submitting an id that exists gives
//! [`TransferError::Exists`] if every field is the same (after resolving the fields a post, void
//! or reversal may leave 0 — "take the referenced transfer's"), else
//! [`TransferError::ExistsWithDifferentFields`]. This check comes first, right after the id's own
//! validity, so a retry is recognised whatever has happened to the accounts since.
mod audit;
mod errors;
mod model;

use std::collections::{BTreeMap, BTreeSet, HashMap};

pub use errors::{AccountError, AuditError, HistoryError, TransferError};
pub use model::{
    Account, AccountFlags, Balances, HistoryEntry, NewAccount, NewTransfer, PendingStatus, Transfer, TransferFlags,
};
use model::{Side, expiry};

/// Ledger timestamp units per millisecond of `now_ms`.
pub const NS_PER_MS: u64 = 1_000_000;

/// The largest timestamp derived from `now_ms` (2^63 ns after the epoch, in 2262). Beyond it,
/// timestamps advance by one per event, so `last + 1` never overflows in practice.
pub const TIMESTAMP_WALL_MAX: u64 = 1 << 63;

/// The most transfers [`Ledger::transfers_of`] returns in one call (TigerBeetle's batch size).
pub const QUERY_LIMIT_MAX: usize = 8_190;

// ---------------------------------------------------------------------------------------------
// The ledger.

/// The ledger: accounts, transfers, pending statuses and balance histories, plus indexes derived
/// from them. Serialized as the facts only (indexes are rebuilt and everything is checked on
/// load, see [`Ledger::audit`]).
///
/// Timestamps only grow and a failed chain is undone before anything else happens, so
/// transfers are kept in one vector in timestamp order and each account's statement is a
/// vector of positions in it: applying a transfer appends, a rollback pops what its chain
/// pushed. (Measured on 1M transfers: inserting into a `BTreeSet<(account, timestamp)>` at
/// random places was ⅔ of the time of a transfer, and a `BTreeMap<id, Transfer>` allocated a
/// node every few transfers; the vectors and an id → position map cost a third of that.)
/// Accounts are looked up four times per transfer, so they live in a hash map (SipHash with a
/// random key: ids are chosen by clients); nothing iterates it in its own order —
/// [`Ledger::accounts`] sorts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ledger {
    accounts: HashMap<u128, Slot>,
    /// Every transfer, timestamps strictly increasing.
    transfers: Vec<Transfer>,
    pending: BTreeMap<u128, PendingStatus>,
    history: BTreeMap<u128, Vec<HistoryEntry>>,
    last_timestamp: u64,
    // Derived from the above.
    /// Transfer id → its position in `transfers`.
    ids: BTreeMap<u128, usize>,
    expiries: BTreeSet<(u64, u128)>,
    reversed_by: BTreeMap<u128, u128>,
}

/// An account and its statement (the positions in `transfers` of the transfers debiting or
/// crediting it, increasing), kept beside it so one lookup serves both.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Slot {
    account: Account,
    statement: Vec<usize>,
}

/// What one validated transfer will change.
struct Plan {
    transfer: Transfer,
    debit: Balances,
    credit: Balances,
    resolves: Option<(u128, PendingStatus)>,
}

/// One change to undo if a linked chain fails.
enum Undo {
    Balances { account: u128, prev: Balances },
    Inserted(u128),
    Resolved(u128),
    History(u128),
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Single,
    Pending,
    Post,
    Void,
}

fn kind(flags: TransferFlags) -> Result<Kind, TransferError> {
    match (flags.pending, flags.post_pending, flags.void_pending) {
        (false, false, false) => Ok(Kind::Single),
        (true, false, false) => Ok(Kind::Pending),
        (false, true, false) => Ok(Kind::Post),
        (false, false, true) => Ok(Kind::Void),
        _ => Err(TransferError::FlagsAreMutuallyExclusive),
    }
}

fn check_id(id: u128, zero: TransferError, max: TransferError) -> Result<(), TransferError> {
    match id {
        0 => Err(zero),
        u128::MAX => Err(max),
        _ => Ok(()),
    }
}

fn wall_timestamp(now_ms: u64) -> u64 {
    now_ms.saturating_mul(NS_PER_MS).min(TIMESTAMP_WALL_MAX)
}

impl Ledger {
    /// An empty ledger.
    pub fn new() -> Ledger {
        Ledger::default()
    }

    /// The timestamp of the last applied event (0 if none).
    pub fn last_timestamp(&self) -> u64 {
        self.last_timestamp
    }

    /// The timestamp the next event applied at `now_ms` would get.
    fn next_timestamp(&self, now_ms: u64) -> u64 {
        wall_timestamp(now_ms).max(self.last_timestamp.saturating_add(1))
    }

    // -- Accounts --------------------------------------------------------------------------

    /// Creates accounts, each independently; one result per account, in order.
    pub fn create_accounts(&mut self, now_ms: u64, accounts: &[NewAccount]) -> Vec<Result<(), AccountError>> {
        accounts.iter().map(|a| self.create_account(now_ms, a)).collect()
    }

    fn create_account(&mut self, now_ms: u64, a: &NewAccount) -> Result<(), AccountError> {
        match a.id {
            0 => return Err(AccountError::IdMustNotBeZero),
            u128::MAX => return Err(AccountError::IdMustNotBeIntMax),
            _ => {}
        }
        if let Some(Slot { account: e, .. }) = self.accounts.get(&a.id) {
            let same = e.currency == a.currency && e.flags == a.flags && e.user_data == a.user_data;
            return Err(if same { AccountError::Exists } else { AccountError::ExistsWithDifferentFields });
        }
        if a.flags.debits_must_not_exceed_credits && a.flags.credits_must_not_exceed_debits {
            return Err(AccountError::FlagsAreMutuallyExclusive);
        }
        let ts = self.next_timestamp(now_ms);
        let account = Account {
            id: a.id,
            currency: a.currency,
            flags: a.flags,
            user_data: a.user_data,
            debits_pending: 0,
            debits_posted: 0,
            credits_pending: 0,
            credits_posted: 0,
            created_at: ts,
        };
        self.accounts.insert(a.id, Slot { account, statement: Vec::new() });
        if a.flags.history {
            self.history.insert(a.id, vec![HistoryEntry { timestamp: ts, balances: Balances::default() }]);
        }
        self.last_timestamp = ts;
        Ok(())
    }

    /// The account with this id.
    pub fn account(&self, id: u128) -> Option<&Account> {
        self.accounts.get(&id).map(|s| &s.account)
    }

    /// All accounts, by id. O(n log n).
    pub fn accounts(&self) -> impl Iterator<Item = &Account> {
        let mut all: Vec<&Account> = self.accounts.values().map(|s| &s.account).collect();
        all.sort_unstable_by_key(|a| a.id);
        all.into_iter()
    }

    /// How many accounts there are. O(1).
    pub fn account_count(&self) -> usize {
        self.accounts.len()
    }

    // -- Transfers -------------------------------------------------------------------------

    /// Applies a batch of transfers: one result per event, in order (see the module
    /// documentation for linked chains). O(batch × log n).
    pub fn apply_transfers(&mut self, now_ms: u64, batch: &[NewTransfer]) -> Vec<Result<(), TransferError>> {
        let mut results = Vec::with_capacity(batch.len());
        let mut undo = Vec::new();
        let mut start = 0;
        while start < batch.len() {
            let Some(len) = batch[start..].iter().position(|t| !t.flags.linked) else {
                let open = batch.len() - start;
                results.extend((1..open).map(|_| Err(TransferError::LinkedEventFailed)));
                results.push(Err(TransferError::LinkedEventChainOpen));
                break;
            };
            let chain = &batch[start..=start + len];
            self.apply_chain(now_ms, chain, &mut undo, &mut results);
            start += chain.len();
        }
        debug_assert_eq!(results.len(), batch.len());
        results
    }

    fn apply_chain(
        &mut self,
        now_ms: u64,
        chain: &[NewTransfer],
        undo: &mut Vec<Undo>,
        results: &mut Vec<Result<(), TransferError>>,
    ) {
        undo.clear();
        let last_timestamp = self.last_timestamp;
        for (i, t) in chain.iter().enumerate() {
            if let Err(e) = self.apply_one(now_ms, t, undo) {
                self.rollback(undo);
                self.last_timestamp = last_timestamp;
                let failed = |j| if j == i { Err(e) } else { Err(TransferError::LinkedEventFailed) };
                results.extend((0..chain.len()).map(failed));
                return;
            }
        }
        results.extend(chain.iter().map(|_| Ok(())));
    }

    /// Validates `t` completely, then applies it (recording undo entries). A refusal changes
    /// nothing.
    fn apply_one(&mut self, now_ms: u64, t: &NewTransfer, undo: &mut Vec<Undo>) -> Result<(), TransferError> {
        check_id(t.id, TransferError::IdMustNotBeZero, TransferError::IdMustNotBeIntMax)?;
        if let Some(existing) = self.transfer(t.id) {
            return Err(self.exists_error(t, existing));
        }
        let ts = self.next_timestamp(now_ms);
        let plan = match (kind(t.flags)?, t.reversal_of) {
            (Kind::Single | Kind::Pending, 0) => self.plan_posting(t, ts)?,
            (Kind::Single, original) => {
                let resolved = self.resolve_reversal(t)?;
                if self.reversed_by.contains_key(&original) {
                    return Err(TransferError::TransferAlreadyReversed);
                }
                self.plan_posting(&resolved, ts)?
            }
            (Kind::Post | Kind::Void, 0) => self.plan_resolution(t, ts)?,
            _ => return Err(TransferError::ReversalMustBeSinglePhase),
        };
        self.commit(plan, undo);
        Ok(())
    }

    /// `Exists` if `t`, resolved as it would have been, equals the stored transfer.
    fn exists_error(&self, t: &NewTransfer, existing: &Transfer) -> TransferError {
        let resolved = match (kind(t.flags), t.reversal_of) {
            (Ok(Kind::Post | Kind::Void), 0) => self.resolve_two_phase(t).map(|(_, r)| r),
            (Ok(Kind::Single), original) if original != 0 => self.resolve_reversal(t),
            _ => Ok(*t),
        };
        match resolved {
            Ok(r) if r.same_as(existing) => TransferError::Exists,
            _ => TransferError::ExistsWithDifferentFields,
        }
    }

    /// A single-phase or pending transfer: checks and the new balances.
    fn plan_posting(&self, t: &NewTransfer, ts: u64) -> Result<Plan, TransferError> {
        use TransferError as E;
        let pending = t.flags.pending;
        if t.pending_id != 0 {
            return Err(E::PendingIdMustBeZero);
        }
        if !pending && t.timeout_ms != 0 {
            return Err(E::TimeoutReservedForPendingTransfer);
        }
        check_id(t.debit_account_id, E::DebitAccountIdMustNotBeZero, E::DebitAccountIdMustNotBeIntMax)?;
        check_id(t.credit_account_id, E::CreditAccountIdMustNotBeZero, E::CreditAccountIdMustNotBeIntMax)?;
        if t.debit_account_id == t.credit_account_id {
            return Err(E::AccountsMustBeDifferent);
        }
        if t.amount == 0 {
            return Err(E::AmountMustNotBeZero);
        }
        if t.code == 0 {
            return Err(E::CodeMustNotBeZero);
        }
        let dr = self.account(t.debit_account_id).ok_or(E::DebitAccountNotFound)?;
        let cr = self.account(t.credit_account_id).ok_or(E::CreditAccountNotFound)?;
        if dr.currency != t.currency || cr.currency != t.currency {
            return Err(E::CurrencyMismatch);
        }
        if pending && t.timeout_ms != 0 && expiry(ts, t.timeout_ms).is_none() {
            return Err(E::OverflowsTimeout);
        }
        let debit = dr.balances().add(Side::Debit, pending, t.amount).ok_or(E::OverflowsDebits)?;
        let credit = cr.balances().add(Side::Credit, pending, t.amount).ok_or(E::OverflowsCredits)?;
        if dr.flags.debits_must_not_exceed_credits && !debit.debits_within_credits() {
            return Err(E::ExceedsCredits);
        }
        if cr.flags.credits_must_not_exceed_debits && !credit.credits_within_debits() {
            return Err(E::ExceedsDebits);
        }
        Ok(Plan { transfer: Transfer::from_new(t, ts), debit, credit, resolves: None })
    }

    /// A post or void: checks against the pending transfer and its status, and the new balances.
    fn plan_resolution(&self, t: &NewTransfer, ts: u64) -> Result<Plan, TransferError> {
        use TransferError as E;
        let (p, resolved) = self.resolve_two_phase(t)?;
        match self.pending.get(&p.id) {
            Some(PendingStatus::Pending) => {}
            Some(PendingStatus::Posted { .. }) => return Err(E::PendingTransferAlreadyPosted),
            Some(PendingStatus::Voided { .. }) => return Err(E::PendingTransferAlreadyVoided),
            Some(PendingStatus::Expired { .. }) => return Err(E::PendingTransferExpired),
            None => return Err(E::PendingTransferNotPending),
        }
        if p.expires_at().is_some_and(|at| ts >= at) {
            return Err(E::PendingTransferExpired);
        }
        let (dr, cr) = self.accounts_of(p);
        let mut debit = dr.balances().release(Side::Debit, p.amount);
        let mut credit = cr.balances().release(Side::Credit, p.amount);
        let post = t.flags.post_pending;
        if post {
            debit = debit.add(Side::Debit, false, resolved.amount).ok_or(E::OverflowsDebits)?;
            credit = credit.add(Side::Credit, false, resolved.amount).ok_or(E::OverflowsCredits)?;
        }
        let status = if post {
            PendingStatus::Posted { transfer_id: t.id }
        } else {
            PendingStatus::Voided { transfer_id: t.id }
        };
        Ok(Plan { transfer: Transfer::from_new(&resolved, ts), debit, credit, resolves: Some((p.id, status)) })
    }

    /// The accounts of an applied transfer (they exist: accounts are never deleted).
    fn accounts_of(&self, t: &Transfer) -> (&Account, &Account) {
        let dr = self.account(t.debit_account_id).expect("ledger invariant: a transfer's accounts exist");
        let cr = self.account(t.credit_account_id).expect("ledger invariant: a transfer's accounts exist");
        (dr, cr)
    }

    /// A post or void checked against its pending transfer (which never changes), with the
    /// fields it leaves 0 filled in: accounts, code and user data from the pending transfer; for a
    /// post the amount posted (0: all), for a void the amount released.
    fn resolve_two_phase(&self, t: &NewTransfer) -> Result<(&Transfer, NewTransfer), TransferError> {
        use TransferError as E;
        check_id(t.pending_id, E::PendingIdMustNotBeZero, E::PendingIdMustNotBeIntMax)?;
        if t.pending_id == t.id {
            return Err(E::PendingIdMustBeDifferent);
        }
        if t.timeout_ms != 0 {
            return Err(E::TimeoutReservedForPendingTransfer);
        }
        let p = self.transfer(t.pending_id).ok_or(E::PendingTransferNotFound)?;
        if !p.flags.pending {
            return Err(E::PendingTransferNotPending);
        }
        if t.debit_account_id != 0 && t.debit_account_id != p.debit_account_id {
            return Err(E::PendingTransferHasDifferentDebitAccountId);
        }
        if t.credit_account_id != 0 && t.credit_account_id != p.credit_account_id {
            return Err(E::PendingTransferHasDifferentCreditAccountId);
        }
        if t.currency != p.currency {
            return Err(E::CurrencyMismatch);
        }
        if t.code != 0 && t.code != p.code {
            return Err(E::PendingTransferHasDifferentCode);
        }
        let amount = if t.flags.post_pending {
            if t.amount > p.amount {
                return Err(E::ExceedsPendingTransferAmount);
            }
            if t.amount == 0 { p.amount } else { t.amount }
        } else {
            if t.amount != 0 && t.amount != p.amount {
                return Err(E::PendingTransferHasDifferentAmount);
            }
            p.amount
        };
        let resolved = NewTransfer {
            debit_account_id: p.debit_account_id,
            credit_account_id: p.credit_account_id,
            amount,
            code: p.code,
            user_data: if t.user_data == 0 { p.user_data } else { t.user_data },
            ..*t
        };
        Ok((p, resolved))
    }

    /// A reversal checked against the original (which never changes), with accounts swapped
    /// and amount and code filled in. Whether it was already reversed is checked by the caller.
    fn resolve_reversal(&self, t: &NewTransfer) -> Result<NewTransfer, TransferError> {
        use TransferError as E;
        if t.pending_id != 0 {
            return Err(E::PendingIdMustBeZero);
        }
        let o = self.transfer(t.reversal_of).ok_or(E::ReversedTransferNotFound)?;
        if o.flags.pending || o.flags.void_pending || o.reversal_of != 0 {
            return Err(E::TransferNotReversible);
        }
        if (t.debit_account_id != 0 && t.debit_account_id != o.credit_account_id)
            || (t.credit_account_id != 0 && t.credit_account_id != o.debit_account_id)
        {
            return Err(E::ReversalHasDifferentAccounts);
        }
        if t.amount != 0 && t.amount != o.amount {
            return Err(E::ReversalHasDifferentAmount);
        }
        if t.currency != o.currency {
            return Err(E::CurrencyMismatch);
        }
        Ok(NewTransfer {
            debit_account_id: o.credit_account_id,
            credit_account_id: o.debit_account_id,
            amount: o.amount,
            code: if t.code == 0 { o.code } else { t.code },
            ..*t
        })
    }

    /// Applies a validated plan, recording how to undo it.
    fn commit(&mut self, plan: Plan, undo: &mut Vec<Undo>) {
        let t = plan.transfer;
        assert!(t.timestamp > self.last_timestamp, "ledger invariant: timestamps strictly increase");
        if let Some((pending_id, status)) = plan.resolves {
            let expires_at = self.transfer(pending_id).and_then(Transfer::expires_at);
            unschedule(&mut self.expiries, expires_at, pending_id);
            self.pending.insert(pending_id, status);
            undo.push(Undo::Resolved(pending_id));
        }
        let position = self.transfers.len();
        self.post(t.debit_account_id, plan.debit, t.timestamp, Some(position), undo);
        self.post(t.credit_account_id, plan.credit, t.timestamp, Some(position), undo);
        if t.flags.pending {
            self.pending.insert(t.id, PendingStatus::Pending);
            if let Some(at) = t.expires_at() {
                self.expiries.insert((at, t.id));
            }
        }
        self.index(&t, position);
        self.transfers.push(t);
        undo.push(Undo::Inserted(t.id));
        self.last_timestamp = t.timestamp;
    }

    /// Sets an account's balances at `timestamp` (one lookup): the balance history if the
    /// account keeps one and, for a transfer (at `position`), the statement.
    fn post(
        &mut self,
        account: u128,
        balances: Balances,
        timestamp: u64,
        position: Option<usize>,
        undo: &mut Vec<Undo>,
    ) {
        let slot = self.accounts.get_mut(&account).expect("ledger invariant: a planned account exists");
        let a = &mut slot.account;
        assert!(balances.within_limits(a.flags), "ledger invariant: account limits hold");
        undo.push(Undo::Balances { account, prev: a.balances() });
        a.set_balances(balances);
        if let Some(position) = position {
            slot.statement.push(position);
        }
        if a.flags.history {
            self.history.entry(account).or_default().push(HistoryEntry { timestamp, balances });
            undo.push(Undo::History(account));
        }
    }

    /// Adds `t`, at `position` in `transfers`, to the derived indexes that `post` does not keep
    /// (not to `pending` / `expiries` either).
    fn index(&mut self, t: &Transfer, position: usize) {
        self.ids.insert(t.id, position);
        if t.reversal_of != 0 {
            self.reversed_by.insert(t.reversal_of, t.id);
        }
    }

    /// Removes the latest transfer, at `position`, from an account's statement.
    fn unpost(&mut self, account: u128, position: usize) {
        let popped = self.accounts.get_mut(&account).and_then(|s| s.statement.pop());
        assert_eq!(popped, Some(position), "ledger invariant: a rollback undoes the latest transfers first");
    }

    fn rollback(&mut self, undo: &mut Vec<Undo>) {
        while let Some(u) = undo.pop() {
            match u {
                Undo::Balances { account, prev } => {
                    if let Some(s) = self.accounts.get_mut(&account) {
                        s.account.set_balances(prev);
                    }
                }
                Undo::Inserted(id) => {
                    let t = self.transfers.pop().expect("ledger invariant: a rollback undoes the latest transfer");
                    assert_eq!(t.id, id, "ledger invariant: a rollback undoes the latest transfer");
                    let position = self.transfers.len();
                    self.ids.remove(&id);
                    self.unpost(t.credit_account_id, position);
                    self.unpost(t.debit_account_id, position);
                    if t.reversal_of != 0 {
                        self.reversed_by.remove(&t.reversal_of);
                    }
                    if t.flags.pending {
                        self.pending.remove(&id);
                        unschedule(&mut self.expiries, t.expires_at(), id);
                    }
                }
                Undo::Resolved(pending_id) => {
                    self.pending.insert(pending_id, PendingStatus::Pending);
                    if let Some(at) = self.transfer(pending_id).and_then(Transfer::expires_at) {
                        self.expiries.insert((at, pending_id));
                    }
                }
                Undo::History(account) => {
                    if let Some(h) = self.history.get_mut(&account) {
                        h.pop();
                    }
                }
            }
        }
    }

    /// Reverses transfer `original_id` with a new transfer `new_id` (accounts swapped, same
    /// amount, currency and code). Equivalent to a batch of one [`NewTransfer::reversal`].
    pub fn reverse(&mut self, now_ms: u64, original_id: u128, new_id: u128) -> Result<(), TransferError> {
        let currency = self.transfer(original_id).ok_or(TransferError::ReversedTransferNotFound)?.currency;
        let t = NewTransfer::reversal(new_id, original_id, currency);
        self.apply_transfers(now_ms, &[t]).pop().unwrap_or(Err(TransferError::LinkedEventFailed))
    }

    /// Voids every pending transfer whose timeout has passed at `now_ms`, in order of expiry
    /// (then id); returns their ids. Each expiry is an event with its own timestamp.
    pub fn expire_pending(&mut self, now_ms: u64) -> Vec<u128> {
        self.expire_pending_at_most(now_ms, usize::MAX)
    }

    /// [`Ledger::expire_pending`], stopping after `max` expiries (bounded work per call; the
    /// rest expire on the next call — they can no longer be posted meanwhile).
    pub fn expire_pending_at_most(&mut self, now_ms: u64, max: usize) -> Vec<u128> {
        let wall = wall_timestamp(now_ms);
        let mut expired = Vec::new();
        while expired.len() < max {
            match self.expiries.first() {
                Some(&(at, id)) if at <= wall => {
                    self.expiries.remove(&(at, id));
                    if self.expire_one(now_ms, id) {
                        expired.push(id);
                    }
                }
                _ => break,
            }
        }
        expired
    }

    /// Releases pending transfer `id`; false if it is not pending (the index is derived from the
    /// pending statuses, so that would be a bug — but releasing twice would corrupt balances).
    fn expire_one(&mut self, now_ms: u64, id: u128) -> bool {
        let Some(p) = self.transfer(id).copied() else { return false };
        if self.pending.get(&id) != Some(&PendingStatus::Pending) {
            debug_assert!(false, "ledger invariant: only pending transfers are in the expiry index");
            return false;
        }
        let ts = self.next_timestamp(now_ms);
        let (dr, cr) = self.accounts_of(&p);
        let debit = dr.balances().release(Side::Debit, p.amount);
        let credit = cr.balances().release(Side::Credit, p.amount);
        let mut scratch = Vec::new();
        self.post(p.debit_account_id, debit, ts, None, &mut scratch);
        self.post(p.credit_account_id, credit, ts, None, &mut scratch);
        self.pending.insert(id, PendingStatus::Expired { timestamp: ts });
        self.last_timestamp = ts;
        true
    }

    // -- Lookups ---------------------------------------------------------------------------

    /// The transfer with this id.
    pub fn transfer(&self, id: u128) -> Option<&Transfer> {
        self.ids.get(&id).and_then(|&i| self.transfers.get(i))
    }

    /// All transfers, in timestamp (application) order.
    pub fn transfers(&self) -> impl Iterator<Item = &Transfer> {
        self.transfers.iter()
    }

    /// The status of pending transfer `id` (`None` if it is not a pending transfer).
    pub fn pending_status(&self, id: u128) -> Option<PendingStatus> {
        self.pending.get(&id).copied()
    }

    /// The id of the transfer that reversed `original_id`, if any.
    pub fn reversed_by(&self, original_id: u128) -> Option<u128> {
        self.reversed_by.get(&original_id).copied()
    }

    /// A statement: up to `limit` (at most [`QUERY_LIMIT_MAX`]) transfers debiting or crediting
    /// the account, oldest first, with timestamps after `after` (a cursor: pass the last
    /// timestamp of the previous page). O(log n + limit).
    pub fn transfers_of(&self, account_id: u128, limit: usize, after: Option<u64>) -> Vec<&Transfer> {
        let Some(slot) = self.accounts.get(&account_id) else { return Vec::new() };
        let from = after.map_or(0, |after| slot.statement.partition_point(|&i| self.transfers[i].timestamp <= after));
        slot.statement[from..].iter().take(limit.min(QUERY_LIMIT_MAX)).map(|&i| &self.transfers[i]).collect()
    }

    /// The account's balances just after the last event at or before `at` (a ledger timestamp).
    /// Only for accounts with the `history` flag. O(log entries).
    pub fn balance_at(&self, account_id: u128, at: u64) -> Result<Balances, HistoryError> {
        let account = self.account(account_id).ok_or(HistoryError::AccountNotFound)?;
        if !account.flags.history {
            return Err(HistoryError::HistoryNotEnabled);
        }
        let entries = self.history.get(&account_id).map(Vec::as_slice).unwrap_or_default();
        let n = entries.partition_point(|e| e.timestamp <= at);
        n.checked_sub(1).map(|i| entries[i].balances).ok_or(HistoryError::BeforeAccountCreated)
    }

    /// The balance history of an account with the `history` flag, oldest first (the first entry
    /// is its creation, with zero balances).
    pub fn history(&self, account_id: u128) -> Option<&[HistoryEntry]> {
        self.history.get(&account_id).map(Vec::as_slice)
    }
}

/// Unschedules the expiry of pending transfer `id` (if it has one, at `at`).
fn unschedule(expiries: &mut BTreeSet<(u64, u128)>, at: Option<u64>, id: u128) {
    if let Some(at) = at {
        expiries.remove(&(at, id));
    }
}
