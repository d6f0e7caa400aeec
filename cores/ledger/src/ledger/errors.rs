//! The ledger's errors, each with a stable snake_case code.

use serde::{Deserialize, Serialize};

/// Why an account was not created.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AccountError {
    /// Id 0 is reserved ("none").
    #[error("account id must not be zero")]
    IdMustNotBeZero,
    /// Id `u128::MAX` is reserved.
    #[error("account id must not be 2^128 - 1")]
    IdMustNotBeIntMax,
    /// Both `must_not_exceed` flags set: the account could never move.
    #[error("flags debits_must_not_exceed_credits and credits_must_not_exceed_debits are mutually exclusive")]
    FlagsAreMutuallyExclusive,
    /// The account exists with the same fields (a retry).
    #[error("the account already exists")]
    Exists,
    /// The id is taken by an account with other fields.
    #[error("an account with this id already exists with different fields")]
    ExistsWithDifferentFields,
}

impl AccountError {
    /// The stable snake_case code, e.g. `"exists_with_different_fields"`.
    pub fn code(&self) -> &'static str {
        match self {
            AccountError::IdMustNotBeZero => "id_must_not_be_zero",
            AccountError::IdMustNotBeIntMax => "id_must_not_be_int_max",
            AccountError::FlagsAreMutuallyExclusive => "flags_are_mutually_exclusive",
            AccountError::Exists => "exists",
            AccountError::ExistsWithDifferentFields => "exists_with_different_fields",
        }
    }
}

/// Why a transfer was not applied. [`TransferError::code`] is the stable wire code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TransferError {
    /// Another event of its linked chain failed.
    #[error("another transfer in the linked chain failed")]
    LinkedEventFailed,
    /// The batch ended while the chain was still open (`linked` on its last event).
    #[error("the last transfer of the batch is linked: the chain is open")]
    LinkedEventChainOpen,
    /// Id 0 is reserved.
    #[error("transfer id must not be zero")]
    IdMustNotBeZero,
    /// Id `u128::MAX` is reserved.
    #[error("transfer id must not be 2^128 - 1")]
    IdMustNotBeIntMax,
    /// The transfer exists with the same fields (a retry).
    #[error("the transfer already exists")]
    Exists,
    /// The id is taken by a transfer with other fields.
    #[error("a transfer with this id already exists with different fields")]
    ExistsWithDifferentFields,
    /// More than one of `pending`, `post_pending`, `void_pending`.
    #[error("flags pending, post_pending and void_pending are mutually exclusive")]
    FlagsAreMutuallyExclusive,
    /// `debit_account_id` is 0.
    #[error("debit account id must not be zero")]
    DebitAccountIdMustNotBeZero,
    /// `debit_account_id` is `u128::MAX`.
    #[error("debit account id must not be 2^128 - 1")]
    DebitAccountIdMustNotBeIntMax,
    /// `credit_account_id` is 0.
    #[error("credit account id must not be zero")]
    CreditAccountIdMustNotBeZero,
    /// `credit_account_id` is `u128::MAX`.
    #[error("credit account id must not be 2^128 - 1")]
    CreditAccountIdMustNotBeIntMax,
    /// Debit and credit account are the same.
    #[error("debit and credit accounts must be different")]
    AccountsMustBeDifferent,
    /// A zero amount moves nothing.
    #[error("amount must not be zero")]
    AmountMustNotBeZero,
    /// Code 0 is reserved.
    #[error("code must not be zero")]
    CodeMustNotBeZero,
    /// `pending_id` set on a transfer that is not a post or void.
    #[error("pending_id must be zero unless post_pending or void_pending is set")]
    PendingIdMustBeZero,
    /// A post or void without `pending_id`.
    #[error("pending_id must not be zero for a post or void")]
    PendingIdMustNotBeZero,
    /// `pending_id` is `u128::MAX`.
    #[error("pending_id must not be 2^128 - 1")]
    PendingIdMustNotBeIntMax,
    /// A post or void referencing itself.
    #[error("pending_id must differ from the transfer's own id")]
    PendingIdMustBeDifferent,
    /// `timeout_ms` on a transfer that is not pending.
    #[error("timeout_ms is only allowed on pending transfers")]
    TimeoutReservedForPendingTransfer,
    /// No account `debit_account_id`.
    #[error("debit account not found")]
    DebitAccountNotFound,
    /// No account `credit_account_id`.
    #[error("credit account not found")]
    CreditAccountNotFound,
    /// The accounts' currencies differ from each other or from the transfer's.
    #[error("the transfer and both accounts must have the same currency")]
    CurrencyMismatch,
    /// The debit account's debits would overflow 128 bits.
    #[error("the debit account's debits would overflow")]
    OverflowsDebits,
    /// The credit account's credits would overflow 128 bits.
    #[error("the credit account's credits would overflow")]
    OverflowsCredits,
    /// `timestamp + timeout` would overflow.
    #[error("the timeout is too large")]
    OverflowsTimeout,
    /// The debit account has `debits_must_not_exceed_credits` and too little credit.
    #[error("the debit account's debits would exceed its credits")]
    ExceedsCredits,
    /// The credit account has `credits_must_not_exceed_debits` and too little debit.
    #[error("the credit account's credits would exceed its debits")]
    ExceedsDebits,
    /// No transfer `pending_id`.
    #[error("pending transfer not found")]
    PendingTransferNotFound,
    /// Transfer `pending_id` is not a pending transfer.
    #[error("the referenced transfer is not pending")]
    PendingTransferNotPending,
    /// The post/void names a different debit account than the pending transfer.
    #[error("the pending transfer has a different debit account")]
    PendingTransferHasDifferentDebitAccountId,
    /// The post/void names a different credit account than the pending transfer.
    #[error("the pending transfer has a different credit account")]
    PendingTransferHasDifferentCreditAccountId,
    /// The post/void names a different code than the pending transfer.
    #[error("the pending transfer has a different code")]
    PendingTransferHasDifferentCode,
    /// A void with an amount other than 0 or the pending amount.
    #[error("a void must release the full pending amount")]
    PendingTransferHasDifferentAmount,
    /// A post of more than was reserved.
    #[error("the amount exceeds the pending transfer's amount")]
    ExceedsPendingTransferAmount,
    /// The pending transfer was already posted.
    #[error("the pending transfer was already posted")]
    PendingTransferAlreadyPosted,
    /// The pending transfer was already voided.
    #[error("the pending transfer was already voided")]
    PendingTransferAlreadyVoided,
    /// The pending transfer's timeout has passed.
    #[error("the pending transfer has expired")]
    PendingTransferExpired,
    /// A reversal flagged pending, post_pending or void_pending.
    #[error("a reversal must be a single-phase transfer")]
    ReversalMustBeSinglePhase,
    /// No transfer `reversal_of`.
    #[error("the transfer to reverse was not found")]
    ReversedTransferNotFound,
    /// Only single-phase transfers and posts can be reversed, and a reversal cannot be.
    #[error("the transfer cannot be reversed: only posted, non-reversal transfers can")]
    TransferNotReversible,
    /// The transfer was already reversed.
    #[error("the transfer was already reversed")]
    TransferAlreadyReversed,
    /// A reversal naming other accounts than the original's, swapped.
    #[error("a reversal must swap the original's accounts")]
    ReversalHasDifferentAccounts,
    /// A reversal with an amount other than 0 or the original's.
    #[error("a reversal must reverse the full amount")]
    ReversalHasDifferentAmount,
}

impl TransferError {
    /// Every variant, in declaration order (for documentation and tests).
    pub const ALL: &'static [TransferError] = &[
        TransferError::LinkedEventFailed,
        TransferError::LinkedEventChainOpen,
        TransferError::IdMustNotBeZero,
        TransferError::IdMustNotBeIntMax,
        TransferError::Exists,
        TransferError::ExistsWithDifferentFields,
        TransferError::FlagsAreMutuallyExclusive,
        TransferError::DebitAccountIdMustNotBeZero,
        TransferError::DebitAccountIdMustNotBeIntMax,
        TransferError::CreditAccountIdMustNotBeZero,
        TransferError::CreditAccountIdMustNotBeIntMax,
        TransferError::AccountsMustBeDifferent,
        TransferError::AmountMustNotBeZero,
        TransferError::CodeMustNotBeZero,
        TransferError::PendingIdMustBeZero,
        TransferError::PendingIdMustNotBeZero,
        TransferError::PendingIdMustNotBeIntMax,
        TransferError::PendingIdMustBeDifferent,
        TransferError::TimeoutReservedForPendingTransfer,
        TransferError::DebitAccountNotFound,
        TransferError::CreditAccountNotFound,
        TransferError::CurrencyMismatch,
        TransferError::OverflowsDebits,
        TransferError::OverflowsCredits,
        TransferError::OverflowsTimeout,
        TransferError::ExceedsCredits,
        TransferError::ExceedsDebits,
        TransferError::PendingTransferNotFound,
        TransferError::PendingTransferNotPending,
        TransferError::PendingTransferHasDifferentDebitAccountId,
        TransferError::PendingTransferHasDifferentCreditAccountId,
        TransferError::PendingTransferHasDifferentCode,
        TransferError::PendingTransferHasDifferentAmount,
        TransferError::ExceedsPendingTransferAmount,
        TransferError::PendingTransferAlreadyPosted,
        TransferError::PendingTransferAlreadyVoided,
        TransferError::PendingTransferExpired,
        TransferError::ReversalMustBeSinglePhase,
        TransferError::ReversedTransferNotFound,
        TransferError::TransferNotReversible,
        TransferError::TransferAlreadyReversed,
        TransferError::ReversalHasDifferentAccounts,
        TransferError::ReversalHasDifferentAmount,
    ];

    /// The stable snake_case code, e.g. `"exceeds_credits"` (also the serde spelling).
    pub fn code(&self) -> &'static str {
        use TransferError::*;
        match self {
            LinkedEventFailed => "linked_event_failed",
            LinkedEventChainOpen => "linked_event_chain_open",
            IdMustNotBeZero => "id_must_not_be_zero",
            IdMustNotBeIntMax => "id_must_not_be_int_max",
            Exists => "exists",
            ExistsWithDifferentFields => "exists_with_different_fields",
            FlagsAreMutuallyExclusive => "flags_are_mutually_exclusive",
            DebitAccountIdMustNotBeZero => "debit_account_id_must_not_be_zero",
            DebitAccountIdMustNotBeIntMax => "debit_account_id_must_not_be_int_max",
            CreditAccountIdMustNotBeZero => "credit_account_id_must_not_be_zero",
            CreditAccountIdMustNotBeIntMax => "credit_account_id_must_not_be_int_max",
            AccountsMustBeDifferent => "accounts_must_be_different",
            AmountMustNotBeZero => "amount_must_not_be_zero",
            CodeMustNotBeZero => "code_must_not_be_zero",
            PendingIdMustBeZero => "pending_id_must_be_zero",
            PendingIdMustNotBeZero => "pending_id_must_not_be_zero",
            PendingIdMustNotBeIntMax => "pending_id_must_not_be_int_max",
            PendingIdMustBeDifferent => "pending_id_must_be_different",
            TimeoutReservedForPendingTransfer => "timeout_reserved_for_pending_transfer",
            DebitAccountNotFound => "debit_account_not_found",
            CreditAccountNotFound => "credit_account_not_found",
            CurrencyMismatch => "currency_mismatch",
            OverflowsDebits => "overflows_debits",
            OverflowsCredits => "overflows_credits",
            OverflowsTimeout => "overflows_timeout",
            ExceedsCredits => "exceeds_credits",
            ExceedsDebits => "exceeds_debits",
            PendingTransferNotFound => "pending_transfer_not_found",
            PendingTransferNotPending => "pending_transfer_not_pending",
            PendingTransferHasDifferentDebitAccountId => "pending_transfer_has_different_debit_account_id",
            PendingTransferHasDifferentCreditAccountId => "pending_transfer_has_different_credit_account_id",
            PendingTransferHasDifferentCode => "pending_transfer_has_different_code",
            PendingTransferHasDifferentAmount => "pending_transfer_has_different_amount",
            ExceedsPendingTransferAmount => "exceeds_pending_transfer_amount",
            PendingTransferAlreadyPosted => "pending_transfer_already_posted",
            PendingTransferAlreadyVoided => "pending_transfer_already_voided",
            PendingTransferExpired => "pending_transfer_expired",
            ReversalMustBeSinglePhase => "reversal_must_be_single_phase",
            ReversedTransferNotFound => "reversed_transfer_not_found",
            TransferNotReversible => "transfer_not_reversible",
            TransferAlreadyReversed => "transfer_already_reversed",
            ReversalHasDifferentAccounts => "reversal_has_different_accounts",
            ReversalHasDifferentAmount => "reversal_has_different_amount",
        }
    }
}

/// Why [`Ledger::balance_at`](super::Ledger::balance_at) has no answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
pub enum HistoryError {
    /// No such account.
    #[error("account not found")]
    AccountNotFound,
    /// The account was created without the `history` flag.
    #[error("the account does not keep a balance history")]
    HistoryNotEnabled,
    /// The timestamp is before the account existed.
    #[error("the account did not exist at that timestamp")]
    BeforeAccountCreated,
}

impl HistoryError {
    /// The stable snake_case code.
    pub fn code(&self) -> &'static str {
        match self {
            HistoryError::AccountNotFound => "account_not_found",
            HistoryError::HistoryNotEnabled => "history_not_enabled",
            HistoryError::BeforeAccountCreated => "before_account_created",
        }
    }
}

/// A state that fails the ledger's consistency checks (on snapshot load, or [`Ledger::audit`](super::Ledger::audit)).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("inconsistent ledger state: {0}")]
pub struct AuditError(pub String);
