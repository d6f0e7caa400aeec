//! The ledger's records: accounts and their balances, transfers as submitted and as applied,
//! pending statuses and balance-history entries.

use serde::{Deserialize, Serialize};

use super::NS_PER_MS;
use crate::currency::Currency;

// ---------------------------------------------------------------------------------------------
// Accounts.

/// Limits and options of an account. The two `must_not_exceed` flags are mutually exclusive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AccountFlags {
    /// `debits_pending + debits_posted ≤ credits_posted` always holds (no overdraft of an asset
    /// the customer holds with us, e.g. a wallet).
    pub debits_must_not_exceed_credits: bool,
    /// `credits_pending + credits_posted ≤ debits_posted` always holds.
    pub credits_must_not_exceed_debits: bool,
    /// Keep the balances after every change, for [`Ledger::balance_at`](super::Ledger::balance_at).
    pub history: bool,
}

/// An account as the client submits it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewAccount {
    /// Client-chosen; not 0, not `u128::MAX`.
    pub id: u128,
    /// Every transfer on the account is in this currency.
    pub currency: Currency,
    /// Limits and options.
    #[serde(default)]
    pub flags: AccountFlags,
    /// Opaque to the ledger (e.g. a customer id).
    #[serde(default)]
    pub user_data: u64,
}

/// An account's four balances.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
pub struct Balances {
    /// Reserved by pending transfers debiting the account.
    pub debits_pending: u128,
    /// Posted debits.
    pub debits_posted: u128,
    /// Reserved by pending transfers crediting the account.
    pub credits_pending: u128,
    /// Posted credits.
    pub credits_posted: u128,
}

impl Balances {
    /// `debits_pending + debits_posted ≤ credits_posted` (pending debits count as spent).
    pub fn debits_within_credits(&self) -> bool {
        self.debits_pending.checked_add(self.debits_posted).is_some_and(|d| d <= self.credits_posted)
    }

    /// `credits_pending + credits_posted ≤ debits_posted`.
    pub fn credits_within_debits(&self) -> bool {
        self.credits_pending.checked_add(self.credits_posted).is_some_and(|c| c <= self.debits_posted)
    }

    /// Whether the balances respect the limits `flags` set.
    pub fn within_limits(&self, flags: AccountFlags) -> bool {
        (!flags.debits_must_not_exceed_credits || self.debits_within_credits())
            && (!flags.credits_must_not_exceed_debits || self.credits_within_debits())
    }

    /// `amount` added to one column; `None` if that column, or pending + posted on that side,
    /// would overflow.
    pub(super) fn add(mut self, side: Side, pending: bool, amount: u128) -> Option<Balances> {
        let (p, q) = match side {
            Side::Debit => (&mut self.debits_pending, &mut self.debits_posted),
            Side::Credit => (&mut self.credits_pending, &mut self.credits_posted),
        };
        let column = if pending { p } else { q };
        *column = column.checked_add(amount)?;
        let total = match side {
            Side::Debit => self.debits_pending.checked_add(self.debits_posted),
            Side::Credit => self.credits_pending.checked_add(self.credits_posted),
        };
        total.map(|_| self)
    }

    /// `amount` released from one side's pending column. A pending transfer's amount is always
    /// reserved on both its accounts until it is posted, voided or expired; anything else is a
    /// corrupted state, and continuing would corrupt money.
    pub(super) fn release(mut self, side: Side, amount: u128) -> Balances {
        let column = match side {
            Side::Debit => &mut self.debits_pending,
            Side::Credit => &mut self.credits_pending,
        };
        *column = column.checked_sub(amount).expect("ledger invariant: a pending amount is reserved");
        self
    }
}

/// A side of an account.
#[derive(Clone, Copy)]
pub(super) enum Side {
    Debit,
    Credit,
}

/// An account. Balances change only through transfers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Account {
    /// Client-chosen id.
    pub id: u128,
    /// The account's currency.
    pub currency: Currency,
    /// Limits and options.
    pub flags: AccountFlags,
    /// Opaque to the ledger.
    pub user_data: u64,
    /// Reserved by pending debits.
    pub debits_pending: u128,
    /// Posted debits.
    pub debits_posted: u128,
    /// Reserved by pending credits.
    pub credits_pending: u128,
    /// Posted credits.
    pub credits_posted: u128,
    /// The ledger timestamp of its creation.
    pub created_at: u64,
}

impl Account {
    /// The four balances.
    pub fn balances(&self) -> Balances {
        Balances {
            debits_pending: self.debits_pending,
            debits_posted: self.debits_posted,
            credits_pending: self.credits_pending,
            credits_posted: self.credits_posted,
        }
    }

    pub(super) fn set_balances(&mut self, b: Balances) {
        self.debits_pending = b.debits_pending;
        self.debits_posted = b.debits_posted;
        self.credits_pending = b.credits_pending;
        self.credits_posted = b.credits_posted;
    }
}

// ---------------------------------------------------------------------------------------------
// Transfers.

/// What kind of transfer this is, and whether it links to the next event of the batch. At most
/// one of `pending`, `post_pending`, `void_pending`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TransferFlags {
    /// Applies atomically with the next event of the batch.
    pub linked: bool,
    /// Reserves the amount (phase one); posted or voided later, or expires.
    pub pending: bool,
    /// Posts (part of) the pending transfer `pending_id`.
    pub post_pending: bool,
    /// Releases the pending transfer `pending_id`.
    pub void_pending: bool,
}

/// A transfer as the client submits it. Fields a post, void or reversal may leave 0 (accounts,
/// amount, code, user data) are taken from the transfer it references.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewTransfer {
    /// Client-chosen; not 0, not `u128::MAX`.
    pub id: u128,
    /// The account debited.
    #[serde(default)]
    pub debit_account_id: u128,
    /// The account credited.
    #[serde(default)]
    pub credit_account_id: u128,
    /// In the currency's smallest unit. For a post, 0 means the full pending amount.
    #[serde(default)]
    pub amount: u128,
    /// Must be both accounts' currency.
    pub currency: Currency,
    /// The client's reason code; not 0 (a post, void or reversal inherits it when 0).
    #[serde(default)]
    pub code: u16,
    /// Opaque to the ledger.
    #[serde(default)]
    pub user_data: u64,
    /// Kind and linking.
    #[serde(default)]
    pub flags: TransferFlags,
    /// For a post or void: the pending transfer. Otherwise 0.
    #[serde(default)]
    pub pending_id: u128,
    /// For a reversal: the transfer reversed. Otherwise 0.
    #[serde(default)]
    pub reversal_of: u128,
    /// For a pending transfer: milliseconds after which it can no longer be posted (0: never).
    #[serde(default)]
    pub timeout_ms: u64,
}

impl NewTransfer {
    /// A single-phase transfer.
    pub fn new(id: u128, debit: u128, credit: u128, amount: u128, currency: Currency, code: u16) -> NewTransfer {
        NewTransfer {
            id,
            debit_account_id: debit,
            credit_account_id: credit,
            amount,
            currency,
            code,
            user_data: 0,
            flags: TransferFlags::default(),
            pending_id: 0,
            reversal_of: 0,
            timeout_ms: 0,
        }
    }

    /// Posts `amount` (0: all) of the pending transfer `pending_id`.
    pub fn post(id: u128, pending_id: u128, amount: u128, currency: Currency) -> NewTransfer {
        let flags = TransferFlags { post_pending: true, ..TransferFlags::default() };
        NewTransfer { pending_id, flags, ..NewTransfer::new(id, 0, 0, amount, currency, 0) }
    }

    /// Voids the pending transfer `pending_id`.
    pub fn void(id: u128, pending_id: u128, currency: Currency) -> NewTransfer {
        let flags = TransferFlags { void_pending: true, ..TransferFlags::default() };
        NewTransfer { pending_id, flags, ..NewTransfer::new(id, 0, 0, 0, currency, 0) }
    }

    /// Reverses transfer `original` (accounts, amount and code taken from it).
    pub fn reversal(id: u128, original: u128, currency: Currency) -> NewTransfer {
        NewTransfer { reversal_of: original, ..NewTransfer::new(id, 0, 0, 0, currency, 0) }
    }

    /// This transfer as a pending one (phase one) with a timeout (0: none).
    pub fn with_pending(mut self, timeout_ms: u64) -> NewTransfer {
        self.flags.pending = true;
        self.timeout_ms = timeout_ms;
        self
    }

    /// This transfer linked to the next event of its batch.
    pub fn with_linked(mut self) -> NewTransfer {
        self.flags.linked = true;
        self
    }

    /// Whether `t` (an applied transfer) has exactly these fields.
    pub(super) fn same_as(&self, t: &Transfer) -> bool {
        *self == t.as_new()
    }
}

/// An applied transfer. Post, void and reversal transfers are stored with their resolved fields
/// (accounts and code of the transfer they reference; for a post the amount posted, for a void
/// the amount released).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Transfer {
    /// Client-chosen id.
    pub id: u128,
    /// The account debited.
    pub debit_account_id: u128,
    /// The account credited.
    pub credit_account_id: u128,
    /// The amount (see the type's documentation for posts and voids).
    pub amount: u128,
    /// The currency of both accounts.
    pub currency: Currency,
    /// The client's reason code.
    pub code: u16,
    /// Opaque to the ledger.
    pub user_data: u64,
    /// Kind and linking, as submitted.
    pub flags: TransferFlags,
    /// For a post or void: the pending transfer.
    pub pending_id: u128,
    /// For a reversal: the transfer reversed.
    pub reversal_of: u128,
    /// For a pending transfer: its timeout in milliseconds (0: none).
    pub timeout_ms: u64,
    /// The ledger timestamp at which it applied.
    pub timestamp: u64,
}

impl Transfer {
    pub(super) fn from_new(t: &NewTransfer, timestamp: u64) -> Transfer {
        Transfer {
            id: t.id,
            debit_account_id: t.debit_account_id,
            credit_account_id: t.credit_account_id,
            amount: t.amount,
            currency: t.currency,
            code: t.code,
            user_data: t.user_data,
            flags: t.flags,
            pending_id: t.pending_id,
            reversal_of: t.reversal_of,
            timeout_ms: t.timeout_ms,
            timestamp,
        }
    }

    pub(super) fn as_new(&self) -> NewTransfer {
        NewTransfer {
            id: self.id,
            debit_account_id: self.debit_account_id,
            credit_account_id: self.credit_account_id,
            amount: self.amount,
            currency: self.currency,
            code: self.code,
            user_data: self.user_data,
            flags: self.flags,
            pending_id: self.pending_id,
            reversal_of: self.reversal_of,
            timeout_ms: self.timeout_ms,
        }
    }

    /// For a pending transfer with a timeout: the first ledger timestamp at which it is expired.
    pub fn expires_at(&self) -> Option<u64> {
        if !self.flags.pending || self.timeout_ms == 0 {
            return None;
        }
        expiry(self.timestamp, self.timeout_ms)
    }
}

/// `timestamp + timeout`, `None` on overflow.
pub(super) fn expiry(timestamp: u64, timeout_ms: u64) -> Option<u64> {
    timeout_ms.checked_mul(NS_PER_MS).and_then(|t| timestamp.checked_add(t))
}

/// Where a pending transfer stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PendingStatus {
    /// Still reserved.
    Pending,
    /// Posted by the transfer `transfer_id`.
    Posted {
        /// The post transfer.
        transfer_id: u128,
    },
    /// Voided by the transfer `transfer_id`.
    Voided {
        /// The void transfer.
        transfer_id: u128,
    },
    /// Released by [`Ledger::expire_pending`](super::Ledger::expire_pending) at `timestamp`.
    Expired {
        /// The ledger timestamp of the expiry event.
        timestamp: u64,
    },
}

/// An account's balances from `timestamp` until the next entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct HistoryEntry {
    /// The ledger timestamp of the event that set these balances.
    pub timestamp: u64,
    /// The balances after it.
    pub balances: Balances,
}
