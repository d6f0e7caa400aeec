//! The pure core of Basalt's payments (S32): money that is never lost, invented or moved twice.
//! No IO, no clock, no threads, no randomness: time comes in as `now_ms`, and the same calls
//! give the same state and results on every replica (it runs as a state machine on the Raft
//! log). All state is `Serialize + Deserialize` for snapshots, and iterates in key order.
//!
//! - [`currency`] — [`Currency`] codes and the ISO 4217 table with minor-unit exponents.
//! - [`ledger`] — [`Ledger`], a TigerBeetle-style double-entry ledger: accounts with limits,
//!   balanced transfers, two-phase transfers with timeouts, linked (atomic) chains, reversals,
//!   balance history, statements.
//! - [`idempotency`] — [`IdempotencyTable`], idempotency keys with Stripe's semantics (replay,
//!   in-flight 409, mismatch 422, takeover of keys whose owner died, 24 h expiry).
//! - [`intent`] — [`PaymentIntent`], Stripe's payment-intent state machine as pure transitions
//!   returning effects (provider calls, ledger postings, webhooks), with refunds.
//!
//! # Decisions
//!
//! - **Ledger timestamps** are `max(now_ms × 10^6, last + 1)`: strictly increasing, a total
//!   order of events, and equal on replicas fed the same `now_ms`. Each account creation,
//!   transfer and expiry takes one; refused events take none.
//! - **Retries first**: an existing id is answered `exists` / `exists_with_different_fields`
//!   before any other check, so a retried transfer is recognised whatever changed since. Fields
//!   a post, void or reversal may leave 0 are resolved from the referenced transfer before
//!   comparing, and the transfer is stored resolved.
//! - **Validate, then apply**: every event is checked completely before it changes anything; a
//!   linked chain that fails is rolled back from an undo log — no balance, transfer, history
//!   entry or timestamp remains.
//! - **Zero amounts and code 0 are refused** (TigerBeetle ≥ 0.16 allows zero amounts; a payment
//!   ledger has no use for them). A post's amount 0 means "the full pending amount".
//! - **Expiry is explicit**: a pending transfer past its timeout can no longer be posted or
//!   voided (`pending_transfer_expired`), but its reservation is released only by
//!   [`Ledger::expire_pending`], which the driver calls before each batch with the batch's
//!   `now_ms`. Until then the amount stays reserved — the conservative side for limits.
//! - **Reversals** are a transfer field (`reversal_of`), so they can be part of linked chains;
//!   [`Ledger::reverse`] is the one-call form. Only single-phase transfers and posts can be
//!   reversed, once, in full, and a reversal cannot be reversed. Limits apply to reversals like
//!   any transfer (a merchant who already paid out cannot go negative).
//! - **Snapshots carry facts only** (accounts, transfers, pending statuses, histories); indexes
//!   are rebuilt on load and the whole state is audited ([`Ledger::audit`]): balances must equal
//!   the sum of the transfers.
//! - **Safety assertions stay on in release** for the ledger (TigerBeetle's rule): a broken
//!   invariant stops the replica rather than corrupt money. They cannot fire on any input, only
//!   on a bug.
//! - **Idempotency takeover**: an in-flight key whose lock is older than `lock_timeout_ms` may
//!   be taken over with a new token; the old token is fenced out (see [`idempotency`]).
//! - **Intents never charge twice**: at most one provider attempt is open; an unknown outcome
//!   is resolved by querying the provider, never by a new attempt (see [`intent`]).

pub mod currency;
pub mod idempotency;
pub mod intent;
pub mod ledger;

pub use currency::{Currency, CurrencyError, ISO_4217};
pub use idempotency::{
    AttemptToken, Begin, DAY_MS, Entry, EntryState, Fingerprint, IdempotencyConfig, IdempotencyError, IdempotencyTable,
    KEY_LEN_MAX, KeyField, StoredResponse,
};
pub use intent::{
    AMOUNT_MAX, AMOUNT_MIN, ATTEMPTS_MAX, Attempt, AttemptId, AttemptKind, AttemptStatus, CancellationReason,
    CaptureMethod, CreateParams, Effect, ErrorCode, ErrorType, EventType, IntentError, IntentStatus, Outcome,
    PAYMENT_METHOD_LEN_MAX, PaymentError, PaymentIntent, Posting, REFUNDS_MAX, Refund, RefundId, RefundOutcome,
    RefundStatus, Transition,
};
pub use ledger::{
    Account, AccountError, AccountFlags, AuditError, Balances, HistoryEntry, HistoryError, Ledger, NS_PER_MS,
    NewAccount, NewTransfer, PendingStatus, QUERY_LIMIT_MAX, TIMESTAMP_WALL_MAX, Transfer, TransferError,
    TransferFlags,
};
