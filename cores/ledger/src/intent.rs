//! [`PaymentIntent`]: Stripe's payment-intent state machine as pure transitions.
//!
//! Each transition takes `&self` and returns a [`Transition`] — the new intent and the
//! [`Effect`]s the driver must carry out (provider calls, ledger postings, webhooks) — or an
//! [`IntentError`] shaped like Stripe's (`type`, `code`, `message`, `param`). A refusal changes
//! nothing (the old intent is untouched by construction).
//!
//! ```text
//!  create ──► requires_payment_method ◄──────────── declined ──┐
//!                  │ update(payment_method)                     │
//!                  ▼                                            │
//!             requires_confirmation ──confirm──► processing ────┤ (Authorize effect; attempt open)
//!                                                  │  ▲  │      │
//!                          requires_action ◄───────┘  │  │ unknown: stays, QueryAttempt effect
//!                                 └──── resolve ──────┘  │
//!                       succeeded ◄── charge / capture ok┤
//!     requires_capture ◄── authorization ok (manual) ────┘
//!        │ capture ──► processing (Capture effect) ──► succeeded | back to requires_capture
//!  cancel: from requires_payment_method, requires_confirmation, requires_action, requires_capture
//! ```
//!
//! # Provider attempts
//!
//! Every provider call that can move money is an [`Attempt`] with an [`AttemptId`] local to the
//! intent (0, 1, 2, …: deterministic, so replicas agree; the driver derives the provider's
//! idempotency key from intent id + attempt id). At most one attempt is *open* (pending,
//! awaiting customer action, or of unknown outcome) at a time, and no transition starts a new
//! one while one is open: an `Unknown` outcome (a timeout after which the provider may or may not
//! have charged) leaves the intent in `processing` and asks the driver to query the provider
//! ([`Effect::QueryAttempt`]); only [`PaymentIntent::resolve`] with the answer moves it on. So an
//! intent is never charged twice. Outcomes are facts: the same outcome delivered twice is a no-op,
//! a contradicting one is refused.
//!
//! # Decisions
//!
//! - **Amounts** are integers in the currency's minor unit, 1 ≤ amount ≤ [`AMOUNT_MAX`]
//!   (Stripe's 99 999 999, eight digits, for every currency here; zero-decimal currencies such
//!   as JPY and KRW count whole units, so ¥99 999 999). Currencies must be in
//!   [`ISO_4217`](crate::currency::ISO_4217), in either case; they are stored uppercase.
//! - **Capture** (`capture_method: manual`) takes `amount_to_capture` ≤ `amount_capturable`
//!   (default: all); the rest of the hold is released when the capture succeeds. A declined
//!   capture returns to `requires_capture` (the authorization stands).
//! - **Cancel** is allowed from `requires_payment_method`, `requires_confirmation`,
//!   `requires_action` and `requires_capture` (Stripe's list), never from `processing`. From
//!   `requires_capture` it voids the hold. From `requires_action` the open attempt is
//!   *abandoned*: the driver voids it at the provider, and if a success for it arrives later
//!   anyway, [`Effect::Void`] is emitted again — the money goes back, the intent stays canceled.
//! - **Void** ([`Effect::Void`]) is fire-and-forget for the intent: the driver retries it until
//!   the provider confirms; the intent does not wait for it.
//! - **Refunds** reserve their amount while pending: pending + succeeded refunds never exceed
//!   `amount_received`, so `amount_refunded ≤ amount_received` holds whatever the outcomes. A
//!   refund's status changes only on the provider's word; `cancel_refund` asks the provider
//!   ([`Effect::CancelRefund`]) and the refund becomes `canceled` (or `succeeded`, if the
//!   provider was faster) when the answer is resolved.
//! - **Limits**: at most [`ATTEMPTS_MAX`] attempts and [`REFUNDS_MAX`] refunds per intent;
//!   payment-method ids 1–255 bytes.

use serde::{Deserialize, Serialize};

use crate::currency::Currency;

/// The smallest amount (in minor units).
pub const AMOUNT_MIN: u64 = 1;
/// The largest amount (in minor units): eight digits, as Stripe.
pub const AMOUNT_MAX: u64 = 99_999_999;
/// The most provider attempts (confirmations and captures) per intent.
pub const ATTEMPTS_MAX: usize = 32;
/// The most refunds per intent.
pub const REFUNDS_MAX: usize = 100;
/// The longest payment-method id, in bytes.
pub const PAYMENT_METHOD_LEN_MAX: usize = 255;

/// Stripe's payment-intent statuses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum IntentStatus {
    /// Needs a payment method (initially, or after a decline).
    RequiresPaymentMethod,
    /// Has a payment method; waiting for `confirm`.
    RequiresConfirmation,
    /// The customer must act (e.g. 3-D Secure) for the open attempt.
    RequiresAction,
    /// A provider call is open.
    Processing,
    /// Authorized; waiting for `capture` (manual capture).
    RequiresCapture,
    /// Paid. Terminal except for refunds.
    Succeeded,
    /// Canceled. Terminal.
    Canceled,
}

impl IntentStatus {
    /// Stripe's spelling.
    pub fn as_str(&self) -> &'static str {
        match self {
            IntentStatus::RequiresPaymentMethod => "requires_payment_method",
            IntentStatus::RequiresConfirmation => "requires_confirmation",
            IntentStatus::RequiresAction => "requires_action",
            IntentStatus::Processing => "processing",
            IntentStatus::RequiresCapture => "requires_capture",
            IntentStatus::Succeeded => "succeeded",
            IntentStatus::Canceled => "canceled",
        }
    }
}

/// When funds are captured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CaptureMethod {
    /// Authorize and capture in one provider call.
    #[default]
    Automatic,
    /// Authorize on confirm; capture later.
    Manual,
}

/// Stripe's cancellation reasons.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CancellationReason {
    /// The customer asked for it.
    RequestedByCustomer,
    /// A duplicate payment.
    Duplicate,
    /// Suspected fraud.
    Fraudulent,
    /// The intent was abandoned.
    Abandoned,
}

/// A provider attempt's number within its intent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct AttemptId(pub u32);

/// A refund's number within its intent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct RefundId(pub u32);

/// What an attempt asks of the provider.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AttemptKind {
    /// Authorize and capture at once (automatic capture).
    Charge,
    /// Authorize only (manual capture): places a hold.
    Authorize,
    /// Capture part or all of the authorization.
    Capture,
}

/// Where an attempt stands.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AttemptStatus {
    /// Sent; no answer yet. Open.
    Pending,
    /// The customer must act. Open.
    RequiresAction,
    /// The provider's answer was lost; it must be queried. Open.
    Unknown,
    /// It went through.
    Succeeded,
    /// The provider declined it.
    Declined {
        /// The decline code, e.g. `insufficient_funds`.
        code: String,
    },
    /// The intent was canceled while it awaited customer action (voided at the provider).
    Abandoned,
}

impl AttemptStatus {
    /// Whether the attempt still awaits a final outcome and blocks new attempts.
    pub fn is_open(&self) -> bool {
        matches!(self, AttemptStatus::Pending | AttemptStatus::RequiresAction | AttemptStatus::Unknown)
    }
}

/// One provider call that can move money.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Attempt {
    /// Its number.
    pub id: AttemptId,
    /// What it asks.
    pub kind: AttemptKind,
    /// The amount it asks for.
    pub amount: u64,
    /// The payment method (charge and authorize attempts).
    pub payment_method: Option<String>,
    /// Where it stands.
    pub status: AttemptStatus,
}

/// The provider's answer to an attempt (first answer, or the answer to a query).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Done.
    Succeeded,
    /// Refused, with the decline code.
    Declined(String),
    /// The customer must act first (charge and authorize attempts only).
    RequiresAction,
    /// No answer (timeout): it may or may not have happened.
    Unknown,
}

/// Where a refund stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RefundStatus {
    /// Sent; its amount is reserved.
    Pending,
    /// Done.
    Succeeded,
    /// The provider could not refund.
    Failed,
    /// Canceled at the provider before it happened.
    Canceled,
}

/// The provider's answer to a refund.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RefundOutcome {
    /// Done.
    Succeeded,
    /// Failed, with the provider's reason.
    Failed(String),
    /// Canceled at the provider.
    Canceled,
    /// No answer: query the provider.
    Unknown,
}

/// A refund of (part of) the received amount.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Refund {
    /// Its number.
    pub id: RefundId,
    /// The amount.
    pub amount: u64,
    /// Where it stands.
    pub status: RefundStatus,
    /// The provider's failure reason.
    pub failure_reason: Option<String>,
    /// A cancellation was asked of the provider.
    pub cancel_requested: bool,
}

/// Stripe's `last_payment_error`: why the last attempt was declined.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PaymentError {
    /// Always `card_error`.
    #[serde(rename = "type")]
    pub kind: ErrorType,
    /// Always `card_declined`.
    pub code: String,
    /// The provider's decline code.
    pub decline_code: String,
    /// The declined attempt.
    pub attempt: AttemptId,
}

/// A ledger posting the driver turns into ledger transfers (ids derived from the intent id and
/// the attempt or refund id, so retries are idempotent).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Posting {
    /// A pending transfer holding `amount` (authorization succeeded).
    Hold {
        /// The authorization attempt.
        authorization: AttemptId,
        /// The amount held.
        amount: u64,
    },
    /// Post `amount` of the hold (≤ the hold; the rest is released).
    CaptureHold {
        /// The authorization attempt.
        authorization: AttemptId,
        /// The amount captured.
        amount: u64,
    },
    /// Void the hold.
    VoidHold {
        /// The authorization attempt.
        authorization: AttemptId,
    },
    /// A single-phase transfer of a charge (automatic capture).
    Charge {
        /// The charge attempt.
        attempt: AttemptId,
        /// The amount.
        amount: u64,
    },
    /// A single-phase transfer back to the customer.
    Refund {
        /// The refund.
        refund: RefundId,
        /// The amount.
        amount: u64,
    },
}

/// Webhook event types (Stripe's names, see [`EventType::as_str`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum EventType {
    /// `payment_intent.created`
    #[serde(rename = "payment_intent.created")]
    Created,
    /// `payment_intent.processing`
    #[serde(rename = "payment_intent.processing")]
    Processing,
    /// `payment_intent.requires_action`
    #[serde(rename = "payment_intent.requires_action")]
    RequiresAction,
    /// `payment_intent.amount_capturable_updated`
    #[serde(rename = "payment_intent.amount_capturable_updated")]
    AmountCapturableUpdated,
    /// `payment_intent.succeeded`
    #[serde(rename = "payment_intent.succeeded")]
    Succeeded,
    /// `payment_intent.payment_failed`
    #[serde(rename = "payment_intent.payment_failed")]
    PaymentFailed,
    /// `payment_intent.canceled`
    #[serde(rename = "payment_intent.canceled")]
    Canceled,
    /// `refund.created`
    #[serde(rename = "refund.created")]
    RefundCreated,
    /// `refund.updated` (canceled)
    #[serde(rename = "refund.updated")]
    RefundUpdated,
    /// `refund.failed`
    #[serde(rename = "refund.failed")]
    RefundFailed,
    /// `charge.refunded`
    #[serde(rename = "charge.refunded")]
    ChargeRefunded,
}

impl EventType {
    /// Stripe's event type string.
    pub fn as_str(&self) -> &'static str {
        match self {
            EventType::Created => "payment_intent.created",
            EventType::Processing => "payment_intent.processing",
            EventType::RequiresAction => "payment_intent.requires_action",
            EventType::AmountCapturableUpdated => "payment_intent.amount_capturable_updated",
            EventType::Succeeded => "payment_intent.succeeded",
            EventType::PaymentFailed => "payment_intent.payment_failed",
            EventType::Canceled => "payment_intent.canceled",
            EventType::RefundCreated => "refund.created",
            EventType::RefundUpdated => "refund.updated",
            EventType::RefundFailed => "refund.failed",
            EventType::ChargeRefunded => "charge.refunded",
        }
    }
}

/// What the driver must do after a transition, in order.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Effect {
    /// Ask the provider to authorize (and, if `capture`, capture) `amount`.
    Authorize {
        /// The attempt (the provider call's identity).
        attempt: AttemptId,
        /// The amount.
        amount: u64,
        /// The currency.
        currency: Currency,
        /// The payment method.
        payment_method: String,
        /// Capture at once (automatic capture).
        capture: bool,
    },
    /// Ask the provider to capture `amount` of the authorization.
    Capture {
        /// The capture attempt.
        attempt: AttemptId,
        /// The authorization attempt.
        authorization: AttemptId,
        /// The amount.
        amount: u64,
    },
    /// Ask the provider to void (reverse) what `attempt` did. Fire-and-forget; retried until done.
    Void {
        /// The authorization or charge attempt.
        attempt: AttemptId,
    },
    /// Ask the provider for the outcome of an attempt whose answer was lost.
    QueryAttempt {
        /// The attempt.
        attempt: AttemptId,
    },
    /// Ask the provider to refund.
    Refund {
        /// The refund.
        refund: RefundId,
        /// The amount.
        amount: u64,
    },
    /// Ask the provider to cancel a pending refund.
    CancelRefund {
        /// The refund.
        refund: RefundId,
    },
    /// Ask the provider for the outcome of a refund whose answer was lost.
    QueryRefund {
        /// The refund.
        refund: RefundId,
    },
    /// Record money movement in the ledger.
    PostLedger {
        /// What to post.
        posting: Posting,
        /// The currency.
        currency: Currency,
    },
    /// Send a webhook event with the intent's new state.
    Webhook {
        /// The event type.
        event: EventType,
    },
}

/// Stripe's error types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorType {
    /// The request is wrong for the intent's state or parameters.
    InvalidRequestError,
    /// The card was declined (in `last_payment_error`).
    CardError,
}

/// Error codes: Stripe's where Stripe has one, else Basalt's (marked).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The intent's status does not allow the operation.
    PaymentIntentUnexpectedState,
    /// Below [`AMOUNT_MIN`].
    AmountTooSmall,
    /// Above [`AMOUNT_MAX`], `amount_capturable`, or the unrefunded amount.
    AmountTooLarge,
    /// A required parameter is missing (e.g. a payment method on confirm).
    ParameterMissing,
    /// A string parameter is empty or too long.
    ParameterInvalidStringEmpty,
    /// Nothing left to refund.
    ChargeAlreadyRefunded,
    /// No such attempt or refund.
    ResourceMissing,
    /// Basalt: the currency is not in the ISO 4217 table (Stripe sends no code).
    InvalidCurrency,
    /// Basalt: an outcome contradicting one already recorded.
    OutcomeConflict,
    /// Basalt: `RequiresAction` for a capture.
    OutcomeNotApplicable,
    /// Basalt: [`ATTEMPTS_MAX`] reached.
    TooManyAttempts,
    /// Basalt: [`REFUNDS_MAX`] reached.
    TooManyRefunds,
    /// Basalt: the refund is no longer pending.
    RefundUnexpectedState,
}

impl ErrorCode {
    /// The wire code.
    pub fn as_str(&self) -> &'static str {
        match self {
            ErrorCode::PaymentIntentUnexpectedState => "payment_intent_unexpected_state",
            ErrorCode::AmountTooSmall => "amount_too_small",
            ErrorCode::AmountTooLarge => "amount_too_large",
            ErrorCode::ParameterMissing => "parameter_missing",
            ErrorCode::ParameterInvalidStringEmpty => "parameter_invalid_string_empty",
            ErrorCode::ChargeAlreadyRefunded => "charge_already_refunded",
            ErrorCode::ResourceMissing => "resource_missing",
            ErrorCode::InvalidCurrency => "invalid_currency",
            ErrorCode::OutcomeConflict => "outcome_conflict",
            ErrorCode::OutcomeNotApplicable => "outcome_not_applicable",
            ErrorCode::TooManyAttempts => "too_many_attempts",
            ErrorCode::TooManyRefunds => "too_many_refunds",
            ErrorCode::RefundUnexpectedState => "refund_unexpected_state",
        }
    }
}

/// A refused transition, shaped like Stripe's error object (serializes as
/// `{"type", "code", "message", "param"}`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, thiserror::Error, Serialize)]
#[error("{message}")]
pub struct IntentError {
    /// Always `invalid_request_error` for refused transitions.
    #[serde(rename = "type")]
    pub kind: ErrorType,
    /// The code.
    pub code: ErrorCode,
    /// A human message.
    pub message: String,
    /// The offending parameter, if one.
    pub param: Option<&'static str>,
}

impl IntentError {
    fn new(code: ErrorCode, message: String, param: Option<&'static str>) -> IntentError {
        IntentError { kind: ErrorType::InvalidRequestError, code, message, param }
    }

    fn unexpected_state(action: &str, status: IntentStatus) -> IntentError {
        let message = format!("You cannot {action} this PaymentIntent because it has a status of {}.", status.as_str());
        IntentError::new(ErrorCode::PaymentIntentUnexpectedState, message, None)
    }
}

/// The parameters of [`PaymentIntent::create`].
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateParams {
    /// In minor units.
    pub amount: u64,
    /// An ISO 4217 code, either case.
    pub currency: String,
    /// Automatic (default) or manual capture.
    #[serde(default)]
    pub capture_method: CaptureMethod,
    /// The payment method, if already known.
    #[serde(default)]
    pub payment_method: Option<String>,
}

/// A transition's result: the new intent and the effects to carry out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition {
    /// The intent after the transition.
    pub intent: PaymentIntent,
    /// What the driver must do, in order.
    pub effects: Vec<Effect>,
}

/// A payment intent. Build it with [`PaymentIntent::create`] and move it only through the
/// transitions; they never panic on any intent, even a hand-made one.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PaymentIntent {
    /// The amount to collect, in minor units.
    pub amount: u64,
    /// The currency (uppercase).
    pub currency: Currency,
    /// Automatic or manual capture.
    pub capture_method: CaptureMethod,
    /// The status.
    pub status: IntentStatus,
    /// The payment method for the next confirmation.
    pub payment_method: Option<String>,
    /// Held and capturable (in `requires_capture`).
    pub amount_capturable: u64,
    /// Collected.
    pub amount_received: u64,
    /// Refunded (succeeded refunds).
    pub amount_refunded: u64,
    /// The succeeded authorization (manual capture).
    pub authorization: Option<AttemptId>,
    /// Every provider attempt, by id.
    pub attempts: Vec<Attempt>,
    /// Every refund, by id.
    pub refunds: Vec<Refund>,
    /// Why the last attempt was declined.
    pub last_payment_error: Option<PaymentError>,
    /// Why it was canceled.
    pub cancellation_reason: Option<CancellationReason>,
}

fn check_amount(amount: u64, param: &'static str) -> Result<u64, IntentError> {
    if amount < AMOUNT_MIN {
        let message = format!("Amount must be at least {AMOUNT_MIN}.");
        return Err(IntentError::new(ErrorCode::AmountTooSmall, message, Some(param)));
    }
    if amount > AMOUNT_MAX {
        let message = format!("Amount must be no more than {AMOUNT_MAX}.");
        return Err(IntentError::new(ErrorCode::AmountTooLarge, message, Some(param)));
    }
    Ok(amount)
}

fn check_payment_method(pm: &str) -> Result<(), IntentError> {
    if pm.is_empty() || pm.len() > PAYMENT_METHOD_LEN_MAX {
        let message = format!("payment_method must be 1 to {PAYMENT_METHOD_LEN_MAX} bytes long.");
        return Err(IntentError::new(ErrorCode::ParameterInvalidStringEmpty, message, Some("payment_method")));
    }
    Ok(())
}

fn webhook(event: EventType) -> Effect {
    Effect::Webhook { event }
}

impl PaymentIntent {
    /// A new intent: `requires_confirmation` with a payment method, else
    /// `requires_payment_method`.
    pub fn create(params: CreateParams) -> Result<Transition, IntentError> {
        let amount = check_amount(params.amount, "amount")?;
        let currency = Currency::parse_iso(&params.currency).map_err(|e| {
            IntentError::new(ErrorCode::InvalidCurrency, format!("Invalid currency: {e}."), Some("currency"))
        })?;
        if let Some(pm) = &params.payment_method {
            check_payment_method(pm)?;
        }
        let status = match params.payment_method {
            Some(_) => IntentStatus::RequiresConfirmation,
            None => IntentStatus::RequiresPaymentMethod,
        };
        let intent = PaymentIntent {
            amount,
            currency,
            capture_method: params.capture_method,
            status,
            payment_method: params.payment_method,
            amount_capturable: 0,
            amount_received: 0,
            amount_refunded: 0,
            authorization: None,
            attempts: Vec::new(),
            refunds: Vec::new(),
            last_payment_error: None,
            cancellation_reason: None,
        };
        Ok(Transition { intent, effects: vec![webhook(EventType::Created)] })
    }

    /// The open attempt (pending, awaiting action, or unknown), if any.
    pub fn open_attempt(&self) -> Option<&Attempt> {
        self.attempts.iter().find(|a| a.status.is_open())
    }

    /// Pending plus succeeded refunds.
    pub fn amount_refund_reserved(&self) -> u64 {
        self.refunds
            .iter()
            .filter(|r| matches!(r.status, RefundStatus::Pending | RefundStatus::Succeeded))
            .fold(0u64, |sum, r| sum.saturating_add(r.amount))
    }

    fn attempt(&self, id: AttemptId) -> Result<&Attempt, IntentError> {
        self.attempts.get(id.0 as usize).filter(|a| a.id == id).ok_or_else(|| {
            IntentError::new(ErrorCode::ResourceMissing, format!("No such attempt: {}.", id.0), Some("attempt"))
        })
    }

    fn refund_ref(&self, id: RefundId) -> Result<&Refund, IntentError> {
        self.refunds.get(id.0 as usize).filter(|r| r.id == id).ok_or_else(|| {
            IntentError::new(ErrorCode::ResourceMissing, format!("No such refund: {}.", id.0), Some("refund"))
        })
    }

    /// A copy with a new attempt appended (refused at [`ATTEMPTS_MAX`], or while one is open).
    fn with_attempt(
        &self,
        kind: AttemptKind,
        amount: u64,
        pm: Option<String>,
    ) -> Result<(Self, AttemptId), IntentError> {
        if self.open_attempt().is_some() {
            return Err(IntentError::unexpected_state("start a new attempt on", IntentStatus::Processing));
        }
        if self.attempts.len() >= ATTEMPTS_MAX {
            let message = format!("This PaymentIntent has reached the limit of {ATTEMPTS_MAX} attempts.");
            return Err(IntentError::new(ErrorCode::TooManyAttempts, message, None));
        }
        let id = AttemptId(self.attempts.len() as u32);
        let mut next = self.clone();
        next.attempts.push(Attempt { id, kind, amount, payment_method: pm, status: AttemptStatus::Pending });
        next.status = IntentStatus::Processing;
        Ok((next, id))
    }

    /// Changes the amount and/or payment method before confirmation (`requires_payment_method`
    /// or `requires_confirmation`). A payment method moves the intent to `requires_confirmation`.
    pub fn update(&self, amount: Option<u64>, payment_method: Option<String>) -> Result<Transition, IntentError> {
        if !matches!(self.status, IntentStatus::RequiresPaymentMethod | IntentStatus::RequiresConfirmation) {
            return Err(IntentError::unexpected_state("update", self.status));
        }
        let mut next = self.clone();
        if let Some(amount) = amount {
            next.amount = check_amount(amount, "amount")?;
        }
        if let Some(pm) = payment_method {
            check_payment_method(&pm)?;
            next.payment_method = Some(pm);
            next.status = IntentStatus::RequiresConfirmation;
        }
        Ok(Transition { intent: next, effects: Vec::new() })
    }

    /// Confirms: starts a charge (automatic capture) or authorization (manual) attempt with the
    /// given or stored payment method. From `requires_payment_method` (with a payment method) or
    /// `requires_confirmation`.
    pub fn confirm(&self, payment_method: Option<String>) -> Result<Transition, IntentError> {
        if !matches!(self.status, IntentStatus::RequiresPaymentMethod | IntentStatus::RequiresConfirmation) {
            return Err(IntentError::unexpected_state("confirm", self.status));
        }
        if let Some(pm) = &payment_method {
            check_payment_method(pm)?;
        }
        let Some(pm) = payment_method.or_else(|| self.payment_method.clone()) else {
            let message = "You cannot confirm this PaymentIntent because it's missing a payment method.".to_owned();
            return Err(IntentError::new(ErrorCode::ParameterMissing, message, Some("payment_method")));
        };
        let capture = self.capture_method == CaptureMethod::Automatic;
        let kind = if capture { AttemptKind::Charge } else { AttemptKind::Authorize };
        let (mut next, attempt) = self.with_attempt(kind, self.amount, Some(pm.clone()))?;
        next.payment_method = Some(pm.clone());
        next.last_payment_error = None;
        let effects = vec![
            Effect::Authorize { attempt, amount: self.amount, currency: self.currency, payment_method: pm, capture },
            webhook(EventType::Processing),
        ];
        Ok(Transition { intent: next, effects })
    }

    /// Captures `amount_to_capture` (default: all) of the authorization, from `requires_capture`.
    pub fn capture(&self, amount_to_capture: Option<u64>) -> Result<Transition, IntentError> {
        let (IntentStatus::RequiresCapture, Some(authorization)) = (self.status, self.authorization) else {
            return Err(IntentError::unexpected_state("capture", self.status));
        };
        let amount = amount_to_capture.unwrap_or(self.amount_capturable);
        if amount < AMOUNT_MIN {
            let message = format!("amount_to_capture must be at least {AMOUNT_MIN}.");
            return Err(IntentError::new(ErrorCode::AmountTooSmall, message, Some("amount_to_capture")));
        }
        if amount > self.amount_capturable {
            let message = format!(
                "The amount_to_capture ({amount}) is greater than the amount_capturable ({}).",
                self.amount_capturable
            );
            return Err(IntentError::new(ErrorCode::AmountTooLarge, message, Some("amount_to_capture")));
        }
        let (next, attempt) = self.with_attempt(AttemptKind::Capture, amount, None)?;
        Ok(Transition { intent: next, effects: vec![Effect::Capture { attempt, authorization, amount }] })
    }

    /// Cancels, from `requires_payment_method`, `requires_confirmation`, `requires_action` or
    /// `requires_capture`.
    pub fn cancel(&self, reason: Option<CancellationReason>) -> Result<Transition, IntentError> {
        let mut next = self.clone();
        let mut effects = Vec::new();
        match self.status {
            IntentStatus::RequiresPaymentMethod | IntentStatus::RequiresConfirmation => {}
            IntentStatus::RequiresAction => {
                for a in next.attempts.iter_mut().filter(|a| a.status.is_open()) {
                    a.status = AttemptStatus::Abandoned;
                    effects.push(Effect::Void { attempt: a.id });
                }
            }
            IntentStatus::RequiresCapture => {
                let Some(authorization) = self.authorization else {
                    return Err(IntentError::unexpected_state("cancel", self.status));
                };
                effects.push(Effect::Void { attempt: authorization });
                let posting = Posting::VoidHold { authorization };
                effects.push(Effect::PostLedger { posting, currency: self.currency });
                next.amount_capturable = 0;
            }
            IntentStatus::Processing | IntentStatus::Succeeded | IntentStatus::Canceled => {
                return Err(IntentError::unexpected_state("cancel", self.status));
            }
        }
        next.status = IntentStatus::Canceled;
        next.cancellation_reason = reason;
        effects.push(webhook(EventType::Canceled));
        Ok(Transition { intent: next, effects })
    }

    /// Records the provider's answer for an attempt — its first answer or the answer to a
    /// query. The same final outcome again, or `Unknown` after a final one, is a no-op; a
    /// contradicting final outcome is refused.
    pub fn resolve(&self, attempt: AttemptId, outcome: Outcome) -> Result<Transition, IntentError> {
        let a = self.attempt(attempt)?;
        let unchanged = || Ok(Transition { intent: self.clone(), effects: Vec::new() });
        match (&a.status, &outcome) {
            (_, Outcome::Unknown | Outcome::RequiresAction) if !a.status.is_open() => unchanged(),
            (AttemptStatus::Succeeded, Outcome::Succeeded) => unchanged(),
            (AttemptStatus::Declined { code }, Outcome::Declined(c)) if code == c => unchanged(),
            (AttemptStatus::Abandoned, Outcome::Succeeded) => {
                let mut next = self.clone();
                next.attempts[attempt.0 as usize].status = AttemptStatus::Succeeded;
                Ok(Transition { intent: next, effects: vec![Effect::Void { attempt }] })
            }
            (AttemptStatus::Abandoned, Outcome::Declined(code)) => {
                let mut next = self.clone();
                next.attempts[attempt.0 as usize].status = AttemptStatus::Declined { code: code.clone() };
                Ok(Transition { intent: next, effects: Vec::new() })
            }
            (status, _) if !status.is_open() => {
                let message = format!("Attempt {} already has a different outcome.", attempt.0);
                Err(IntentError::new(ErrorCode::OutcomeConflict, message, Some("outcome")))
            }
            _ => self.resolve_open(a, outcome),
        }
    }

    fn resolve_open(&self, a: &Attempt, outcome: Outcome) -> Result<Transition, IntentError> {
        let mut next = self.clone();
        let index = a.id.0 as usize;
        let currency = self.currency;
        let mut effects = Vec::new();
        match outcome {
            Outcome::Unknown => {
                if a.status == AttemptStatus::Pending {
                    next.attempts[index].status = AttemptStatus::Unknown;
                }
                effects.push(Effect::QueryAttempt { attempt: a.id });
            }
            Outcome::RequiresAction => {
                if a.kind == AttemptKind::Capture {
                    let message = "A capture cannot require customer action.".to_owned();
                    return Err(IntentError::new(ErrorCode::OutcomeNotApplicable, message, Some("outcome")));
                }
                next.attempts[index].status = AttemptStatus::RequiresAction;
                next.status = IntentStatus::RequiresAction;
                effects.push(webhook(EventType::RequiresAction));
            }
            Outcome::Succeeded => {
                next.attempts[index].status = AttemptStatus::Succeeded;
                match a.kind {
                    AttemptKind::Charge => {
                        next.status = IntentStatus::Succeeded;
                        next.amount_received = a.amount;
                        let posting = Posting::Charge { attempt: a.id, amount: a.amount };
                        effects.push(Effect::PostLedger { posting, currency });
                        effects.push(webhook(EventType::Succeeded));
                    }
                    AttemptKind::Authorize => {
                        next.status = IntentStatus::RequiresCapture;
                        next.amount_capturable = a.amount;
                        next.authorization = Some(a.id);
                        let posting = Posting::Hold { authorization: a.id, amount: a.amount };
                        effects.push(Effect::PostLedger { posting, currency });
                        effects.push(webhook(EventType::AmountCapturableUpdated));
                    }
                    AttemptKind::Capture => {
                        let authorization = self.authorization.unwrap_or(a.id);
                        next.status = IntentStatus::Succeeded;
                        next.amount_received = a.amount;
                        next.amount_capturable = 0;
                        let posting = Posting::CaptureHold { authorization, amount: a.amount };
                        effects.push(Effect::PostLedger { posting, currency });
                        effects.push(webhook(EventType::Succeeded));
                    }
                }
            }
            Outcome::Declined(code) => {
                next.attempts[index].status = AttemptStatus::Declined { code: code.clone() };
                next.last_payment_error = Some(PaymentError {
                    kind: ErrorType::CardError,
                    code: "card_declined".to_owned(),
                    decline_code: code,
                    attempt: a.id,
                });
                if a.kind == AttemptKind::Capture {
                    next.status = IntentStatus::RequiresCapture;
                } else {
                    next.status = IntentStatus::RequiresPaymentMethod;
                    next.payment_method = None;
                }
                effects.push(webhook(EventType::PaymentFailed));
            }
        }
        Ok(Transition { intent: next, effects })
    }

    /// Refunds `amount` (default: everything not yet refunded or pending refund), from
    /// `succeeded`.
    pub fn refund(&self, amount: Option<u64>) -> Result<Transition, IntentError> {
        if self.status != IntentStatus::Succeeded {
            return Err(IntentError::unexpected_state("refund", self.status));
        }
        let refundable = self.amount_received.saturating_sub(self.amount_refund_reserved());
        if refundable == 0 {
            let message = "This charge has already been refunded.".to_owned();
            return Err(IntentError::new(ErrorCode::ChargeAlreadyRefunded, message, None));
        }
        let amount = amount.unwrap_or(refundable);
        if amount < AMOUNT_MIN {
            let message = format!("Refund amount must be at least {AMOUNT_MIN}.");
            return Err(IntentError::new(ErrorCode::AmountTooSmall, message, Some("amount")));
        }
        if amount > refundable {
            let message =
                format!("Refund amount ({amount}) is greater than unrefunded amount on charge ({refundable}).");
            return Err(IntentError::new(ErrorCode::AmountTooLarge, message, Some("amount")));
        }
        if self.refunds.len() >= REFUNDS_MAX {
            let message = format!("This charge has reached the limit of {REFUNDS_MAX} refunds.");
            return Err(IntentError::new(ErrorCode::TooManyRefunds, message, None));
        }
        let id = RefundId(self.refunds.len() as u32);
        let mut next = self.clone();
        next.refunds.push(Refund {
            id,
            amount,
            status: RefundStatus::Pending,
            failure_reason: None,
            cancel_requested: false,
        });
        Ok(Transition {
            intent: next,
            effects: vec![Effect::Refund { refund: id, amount }, webhook(EventType::RefundCreated)],
        })
    }

    /// Asks the provider to cancel a pending refund (a no-op if already asked).
    pub fn cancel_refund(&self, refund: RefundId) -> Result<Transition, IntentError> {
        let r = self.refund_ref(refund)?;
        if r.status != RefundStatus::Pending {
            let message = format!("Refund {} is no longer pending.", refund.0);
            return Err(IntentError::new(ErrorCode::RefundUnexpectedState, message, None));
        }
        if r.cancel_requested {
            return Ok(Transition { intent: self.clone(), effects: Vec::new() });
        }
        let mut next = self.clone();
        next.refunds[refund.0 as usize].cancel_requested = true;
        Ok(Transition { intent: next, effects: vec![Effect::CancelRefund { refund }] })
    }

    /// Records the provider's answer for a refund. Repeats and `Unknown` after a final outcome
    /// are no-ops; a contradicting final outcome is refused.
    pub fn resolve_refund(&self, refund: RefundId, outcome: RefundOutcome) -> Result<Transition, IntentError> {
        let r = self.refund_ref(refund)?;
        let unchanged = || Ok(Transition { intent: self.clone(), effects: Vec::new() });
        let final_status = match &outcome {
            RefundOutcome::Succeeded => RefundStatus::Succeeded,
            RefundOutcome::Failed(_) => RefundStatus::Failed,
            RefundOutcome::Canceled => RefundStatus::Canceled,
            RefundOutcome::Unknown if r.status == RefundStatus::Pending => {
                return Ok(Transition { intent: self.clone(), effects: vec![Effect::QueryRefund { refund }] });
            }
            RefundOutcome::Unknown => return unchanged(),
        };
        if r.status != RefundStatus::Pending {
            if r.status == final_status {
                return unchanged();
            }
            let message = format!("Refund {} already has a different outcome.", refund.0);
            return Err(IntentError::new(ErrorCode::OutcomeConflict, message, Some("outcome")));
        }
        let mut next = self.clone();
        let index = refund.0 as usize;
        next.refunds[index].status = final_status;
        let effects = match outcome {
            RefundOutcome::Succeeded => {
                next.amount_refunded = next.amount_refunded.saturating_add(r.amount);
                let posting = Posting::Refund { refund, amount: r.amount };
                vec![Effect::PostLedger { posting, currency: self.currency }, webhook(EventType::ChargeRefunded)]
            }
            RefundOutcome::Failed(reason) => {
                next.refunds[index].failure_reason = Some(reason);
                vec![webhook(EventType::RefundFailed)]
            }
            RefundOutcome::Canceled | RefundOutcome::Unknown => vec![webhook(EventType::RefundUpdated)],
        };
        Ok(Transition { intent: next, effects })
    }
}
