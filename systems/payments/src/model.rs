//! The replicated state of payments as a pure, deterministic state machine: payment intents
//! (the core's [`PaymentIntent`] plus Stripe's bookkeeping), the idempotency-key table, the
//! double-entry [`Ledger`], the provider jobs still to do, and the outbox of merchant webhooks.
//!
//! Every command carries the proposer's time (`at_ms`), so applying it needs no clock. An
//! intent request with an `Idempotency-Key` is *one* command: begin the key, run the
//! transition, and either store the response (it needs no provider) or leave the key in flight
//! with a waiter on the provider attempt — the command that records the attempt's outcome
//! stores the response in the same step. So a response is stored exactly once, on every
//! replica alike, whoever delivers the outcome (the request's node, the leader's job runner
//! after a crash, a provider webhook, reconciliation).
//!
//! Provider calls are never made here: a transition's provider effects become *jobs* (keyed
//! by intent and attempt/refund), recorded before any call is made; their outcomes come back
//! as commands. Ledger postings are applied here, with transfer ids derived from the intent
//! and the attempt or refund, so a posting can never happen twice.

use std::collections::BTreeMap;

use basalt_ledger_core::{
    AttemptId, AttemptKind, AttemptStatus, AttemptToken, Begin, CancellationReason, CaptureMethod, CreateParams,
    Currency, Effect, EntryState, Fingerprint, IdempotencyConfig, IdempotencyError, IdempotencyTable, IntentStatus,
    Ledger, NewAccount, NewTransfer, Outcome, PaymentIntent, Posting, RefundId, RefundOutcome, RefundStatus,
    StoredResponse, Transition,
};
use serde::{Deserialize, Serialize};

use crate::params::mix;
use crate::provider::{ProviderCall, ProviderOp};
use crate::stripe::{self, StripeError};

/// Events kept in the outbox (the oldest are dropped first, delivered or not).
pub const EVENTS_MAX: usize = 10_000;
/// Anomalies kept (postings refused, contradicting outcomes).
pub const ANOMALIES_MAX: usize = 1_000;
/// Authorization holds expire after 7 days, as card authorizations do.
pub const HOLD_TIMEOUT_MS: u64 = 7 * 24 * 3600 * 1000;
/// Ids whose top 16 bits are all ones are the system's (intent postings, system accounts).
pub const RESERVED_PREFIX: u128 = 0xFFFF << 112;

/// Ledger transfer codes of intent postings.
pub const CODE_CHARGE: u16 = 1;
pub const CODE_HOLD: u16 = 2;
pub const CODE_REFUND: u16 = 5;

pub fn is_reserved(id: u128) -> bool {
    id & RESERVED_PREFIX == RESERVED_PREFIX && id != u128::MAX
}

fn currency_bits(c: Currency) -> u128 {
    c.as_str().bytes().fold(0u128, |acc, b| (acc << 8) | u128::from(b))
}

/// The account that stands for the outside world (card networks) in `currency`.
pub fn clearing_account(c: Currency) -> u128 {
    RESERVED_PREFIX | (1 << 32) | currency_bits(c)
}

/// The merchant's balance in `currency`.
pub fn merchant_account(c: Currency) -> u128 {
    RESERVED_PREFIX | (2 << 32) | currency_bits(c)
}

/// The transfer id of posting `kind` (1 charge, 2 hold, 3 capture, 4 void, 5 refund) for
/// attempt or refund `n` of intent `seq`.
pub fn posting_id(seq: u64, kind: u8, n: u32) -> u128 {
    RESERVED_PREFIX | (u128::from(seq) << 40) | (u128::from(kind) << 32) | u128::from(n)
}

pub fn intent_id(seq: u64) -> String {
    format!("pi_{seq:012x}{:012x}", mix(seq) & 0xffff_ffff_ffff)
}

/// The intent sequence number in an intent id (not checked against the full id).
pub fn parse_intent_id(id: &str) -> Option<u64> {
    let hex = id.strip_prefix("pi_")?;
    if hex.len() != 24 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u64::from_str_radix(&hex[..12], 16).ok()
}

/// The provider's idempotency key of attempt `n`.
pub fn attempt_key(intent: &str, n: u32) -> String {
    format!("{intent}:a{n}")
}

pub fn refund_key(intent: &str, n: u32) -> String {
    format!("{intent}:r{n}")
}

// ---------------------------------------------------------------------------------------------
// Commands.

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Command {
    pub at_ms: u64,
    pub op: Op,
}

/// The first byte of a binary command. No JSON text starts with it, so a log written before
/// ledger commands were binary still decodes (a JSON command starts with `{`).
const BINARY_TAG: u8 = 0xB1;

/// A ledger command in its binary form (postcard after [`BINARY_TAG`]). Ledger batches are
/// nearly all of the log's bytes: as JSON a transfer took about 245 bytes and encoding plus
/// parsing it again on apply cost more than applying it; as postcard it takes about 25.
/// Variants are only ever added at the end (postcard tags them by position).
#[derive(Debug, Serialize, Deserialize)]
enum BinaryOp {
    Transfers(Vec<Vec<NewTransfer>>),
    CreateAccounts(Vec<NewAccount>),
}

impl Command {
    /// The command's bytes for the log: binary for ledger batches, JSON for everything else.
    pub fn encode(self) -> Result<Vec<u8>, String> {
        let binary = match self.op {
            Op::Transfers(parts) => BinaryOp::Transfers(parts),
            Op::CreateAccounts(accounts) => BinaryOp::CreateAccounts(accounts),
            op => return serde_json::to_vec(&Command { at_ms: self.at_ms, op }).map_err(|e| e.to_string()),
        };
        postcard::to_extend(&(self.at_ms, binary), vec![BINARY_TAG]).map_err(|e| e.to_string())
    }

    /// A command from the log: binary (see [`BINARY_TAG`]) or JSON, whichever it was written as.
    pub fn decode(bytes: &[u8]) -> Result<Command, String> {
        let Some(binary) = bytes.strip_prefix(&[BINARY_TAG]) else {
            return serde_json::from_slice(bytes).map_err(|e| e.to_string());
        };
        let ((at_ms, op), rest): ((u64, BinaryOp), &[u8]) =
            postcard::take_from_bytes(binary).map_err(|e| format!("a bad binary command: {e}"))?;
        if !rest.is_empty() {
            return Err(format!("a bad binary command: {} bytes after its end", rest.len()));
        }
        let op = match op {
            BinaryOp::Transfers(parts) => Op::Transfers(parts),
            BinaryOp::CreateAccounts(accounts) => Op::CreateAccounts(accounts),
        };
        Ok(Command { at_ms, op })
    }
}

/// An idempotency key with its scope (the API key) and the request's fingerprint.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct IdemKey {
    pub scope: String,
    pub key: String,
    pub fingerprint: Fingerprint,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CreateArgs {
    pub amount: u64,
    pub currency: String,
    pub capture_method: CaptureMethod,
    pub payment_method: Option<String>,
    pub confirm: bool,
    pub metadata: BTreeMap<String, String>,
    pub description: Option<String>,
}

/// What a Stripe-shaped request asks.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Action {
    Create(CreateArgs),
    Update {
        id: String,
        amount: Option<u64>,
        payment_method: Option<String>,
        metadata: BTreeMap<String, String>,
        description: Option<String>,
    },
    Confirm {
        id: String,
        payment_method: Option<String>,
    },
    Capture {
        id: String,
        amount_to_capture: Option<u64>,
    },
    Cancel {
        id: String,
        reason: Option<CancellationReason>,
    },
    Refund {
        payment_intent: String,
        amount: Option<u64>,
        metadata: BTreeMap<String, String>,
    },
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Op {
    /// A Stripe-shaped request, with its idempotency key if it has one.
    Intent {
        idem: Option<IdemKey>,
        action: Action,
    },
    /// The provider's answer for an attempt (or the answer to a query).
    AttemptOutcome {
        intent: String,
        attempt: u32,
        outcome: Outcome,
    },
    /// The provider's answer for a refund.
    RefundOutcome {
        intent: String,
        refund: u32,
        outcome: RefundOutcome,
    },
    /// The provider confirmed a void.
    VoidDone {
        intent: String,
        attempt: u32,
    },
    /// A job's call failed; try again later.
    JobRetry {
        job: String,
    },
    /// Reconciliation found money moved for an attempt the intent does not keep: void it.
    RepairVoid {
        intent: String,
        attempt: u32,
    },
    /// A waiting request gave up: store the intent (or refund) as it is now for its key.
    ReleaseWaiter {
        intent: String,
        scope: String,
        key: String,
    },
    CreateAccounts(Vec<NewAccount>),
    /// Batches of transfers, each applied as its own batch (linked chains stay inside one).
    Transfers(Vec<Vec<NewTransfer>>),
    /// Expire idempotency keys and pending transfers that are due.
    Sweep,
    SetEndpoints(Vec<String>),
    Delivered(Vec<u64>),
}

/// The reply to [`Op::Intent`].
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum IntentReply {
    /// The response (stored for the key, unless it is a refusal that is never stored).
    Done { response: StoredResponse, replayed: bool },
    /// The request waits for the provider: make these calls, then wait until `on` resolves.
    Wait { intent: String, on: WaitOn, calls: Vec<(Target, ProviderCall)> },
}

/// What a waiting request waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum WaitOn {
    Attempt(u32),
    Refund(u32),
}

/// A request waiting on the provider, whose idempotency key gets the response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Waiter {
    pub scope: String,
    pub key: String,
    pub token: AttemptToken,
    pub on: WaitOn,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefundMeta {
    pub created_ms: u64,
    pub metadata: BTreeMap<String, String>,
}

/// An intent with Stripe's bookkeeping around the core's state machine.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IntentRecord {
    pub seq: u64,
    pub id: String,
    pub created_ms: u64,
    pub client_secret: String,
    pub intent: PaymentIntent,
    pub metadata: BTreeMap<String, String>,
    pub description: Option<String>,
    pub waiters: Vec<Waiter>,
    pub refund_meta: Vec<RefundMeta>,
}

/// Provider work still to do for an intent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Target {
    /// Carry out (or re-issue, to learn its outcome) attempt n.
    Attempt(u32),
    /// Void attempt n.
    Void(u32),
    /// Carry out (or re-issue) refund n.
    Refund(u32),
    /// Cancel refund n.
    CancelRefund(u32),
}

impl Target {
    fn tag(&self) -> String {
        match self {
            Target::Attempt(n) => format!("a{n}"),
            Target::Void(n) => format!("v{n}"),
            Target::Refund(n) => format!("r{n}"),
            Target::CancelRefund(n) => format!("c{n}"),
        }
    }
}

pub fn job_key(intent: &str, target: Target) -> String {
    format!("{intent}:{}", target.tag())
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Job {
    pub intent: String,
    pub target: Target,
    /// The job runner leaves it alone until then (the request's own node runs it first).
    pub not_before_ms: u64,
    pub tries: u32,
}

/// A merchant webhook event in the outbox.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    pub seq: u64,
    pub kind: String,
    pub created_ms: u64,
    pub intent: String,
    /// The intent's JSON at the time of the event.
    pub object: String,
    pub delivered: bool,
}

impl Event {
    pub fn id(&self) -> String {
        format!("evt_{:016x}", self.seq)
    }
}

/// The settings the state machine needs (equal on every replica: from the config).
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct ModelConfig {
    pub idempotency: IdempotencyConfig,
    /// How long the job runner leaves a fresh job to the request that created it.
    pub inline_grace_ms: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Model {
    pub config: ModelConfig,
    next_intent: u64,
    intents: BTreeMap<u64, IntentRecord>,
    idem: IdempotencyTable,
    ledger: Ledger,
    jobs: BTreeMap<String, Job>,
    events: BTreeMap<u64, Event>,
    next_event: u64,
    endpoints: Vec<String>,
    anomalies: Vec<String>,
}

fn backoff_ms(tries: u32) -> u64 {
    (100u64 << tries.min(6)).min(5_000)
}

/// Errors of parameters rather than of the intent's state: a request refused with one of these
/// did not start executing, so its idempotency key is released (Stripe stores nothing).
fn is_validation(e: &StripeError) -> bool {
    matches!(
        e.code.as_deref(),
        Some(
            "amount_too_small"
                | "amount_too_large"
                | "invalid_currency"
                | "parameter_missing"
                | "parameter_invalid_string_empty"
                | "resource_missing"
        )
    )
}

enum ActionOk {
    Response(StoredResponse),
    Wait { seq: u64, on: WaitOn, calls: Vec<(Target, ProviderCall)> },
}

impl Model {
    pub fn new(config: ModelConfig) -> anyhow::Result<Model> {
        Ok(Model {
            config,
            next_intent: 1,
            intents: BTreeMap::new(),
            idem: IdempotencyTable::new(config.idempotency).map_err(|e| anyhow::anyhow!("{e}"))?,
            ledger: Ledger::new(),
            jobs: BTreeMap::new(),
            events: BTreeMap::new(),
            next_event: 1,
            endpoints: Vec::new(),
            anomalies: Vec::new(),
        })
    }

    // -- Reads ---------------------------------------------------------------------------

    pub fn intent(&self, id: &str) -> Option<&IntentRecord> {
        let seq = parse_intent_id(id)?;
        self.intents.get(&seq).filter(|r| r.id == id)
    }

    pub fn intent_by_seq(&self, seq: u64) -> Option<&IntentRecord> {
        self.intents.get(&seq)
    }

    pub fn intents(&self) -> impl DoubleEndedIterator<Item = &IntentRecord> {
        self.intents.values()
    }

    pub fn ledger(&self) -> &Ledger {
        &self.ledger
    }

    pub fn jobs(&self) -> impl Iterator<Item = (&String, &Job)> {
        self.jobs.iter()
    }

    pub fn events_after(&self, after: u64, limit: usize) -> Vec<&Event> {
        self.events.range(after.saturating_add(1)..).take(limit).map(|(_, e)| e).collect()
    }

    pub fn undelivered(&self, limit: usize) -> Vec<&Event> {
        self.events.values().filter(|e| !e.delivered).take(limit).collect()
    }

    pub fn endpoints(&self) -> &[String] {
        &self.endpoints
    }

    pub fn anomalies(&self) -> &[String] {
        &self.anomalies
    }

    /// The stored response for a key, once completed.
    pub fn stored_response(&self, scope: &str, key: &str) -> Option<&StoredResponse> {
        match &self.idem.get(scope, key)?.state {
            EntryState::Completed(r) => Some(r),
            EntryState::InFlight { .. } => None,
        }
    }

    pub fn idempotency_len(&self) -> usize {
        self.idem.len()
    }

    /// Whether the thing a request waits on has its outcome.
    pub fn resolved(&self, intent: &str, on: WaitOn) -> bool {
        let Some(r) = self.intent(intent) else { return true };
        match on {
            WaitOn::Attempt(n) => r.intent.attempts.get(n as usize).is_none_or(|a| !a.status.is_open()),
            WaitOn::Refund(n) => r.intent.refunds.get(n as usize).is_none_or(|f| f.status != RefundStatus::Pending),
        }
    }

    /// The response a request waiting on `on` gets now.
    pub fn render_wait(&self, intent: &str, on: WaitOn) -> StoredResponse {
        match self.intent(intent) {
            None => StripeError::not_found("payment_intent", intent, "intent").to_stored(),
            Some(r) => match on {
                WaitOn::Attempt(n) if self.resolved(intent, on) => stripe::attempt_response(r, n),
                WaitOn::Attempt(_) => stripe::ok(&stripe::intent_json(r)),
                WaitOn::Refund(n) => stripe::ok(&stripe::refund_json(r, n)),
            },
        }
    }

    /// The provider call that carries out `target` of `intent` now (`None` if there is
    /// nothing left to call).
    pub fn call_for(&self, intent: &str, target: Target) -> Option<ProviderCall> {
        let r = self.intent(intent)?;
        let i = &r.intent;
        let op = match target {
            Target::Attempt(n) => {
                let a = i.attempts.get(n as usize)?;
                match a.kind {
                    AttemptKind::Charge | AttemptKind::Authorize => ProviderOp::Charge {
                        amount: a.amount,
                        currency: i.currency.as_str().to_owned(),
                        payment_method: a.payment_method.clone().unwrap_or_default(),
                        capture: a.kind == AttemptKind::Charge,
                    },
                    AttemptKind::Capture => {
                        ProviderOp::Capture { authorization: attempt_key(&r.id, i.authorization?.0), amount: a.amount }
                    }
                }
            }
            Target::Void(n) => ProviderOp::Void { target: attempt_key(&r.id, n) },
            Target::Refund(n) => {
                let refund = i.refunds.get(n as usize)?;
                ProviderOp::Refund { charge: money_key(r)?, amount: refund.amount }
            }
            Target::CancelRefund(n) => ProviderOp::CancelRefund { refund: refund_key(&r.id, n) },
        };
        let key = match target {
            Target::Attempt(n) => attempt_key(&r.id, n),
            Target::Void(n) => format!("{}:void", attempt_key(&r.id, n)),
            Target::Refund(n) => refund_key(&r.id, n),
            Target::CancelRefund(n) => format!("{}:cancel", refund_key(&r.id, n)),
        };
        Some(ProviderCall { key, intent: r.id.clone(), op })
    }

    // -- Snapshots -----------------------------------------------------------------------

    pub fn snapshot(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    pub fn restore(bytes: &[u8], config: ModelConfig) -> anyhow::Result<Model> {
        if bytes.is_empty() {
            return Model::new(config);
        }
        let mut m: Model = serde_json::from_slice(bytes)?;
        m.config.inline_grace_ms = config.inline_grace_ms;
        Ok(m)
    }

    // -- Apply ---------------------------------------------------------------------------

    /// Applies a command; the reply is JSON.
    pub fn apply(&mut self, cmd: Command) -> Vec<u8> {
        let at = cmd.at_ms;
        let json = |v: &dyn erased::Ser| v.to_json();
        match cmd.op {
            Op::Intent { idem, action } => json(&self.apply_intent(at, idem, action)),
            Op::AttemptOutcome { intent, attempt, outcome } => {
                json(&self.with_intent(at, &intent, |r| r.intent.resolve(AttemptId(attempt), outcome)))
            }
            Op::RefundOutcome { intent, refund, outcome } => {
                json(&self.with_intent(at, &intent, |r| r.intent.resolve_refund(RefundId(refund), outcome)))
            }
            Op::VoidDone { intent, attempt } => {
                self.jobs.remove(&job_key(&intent, Target::Void(attempt)));
                json(&true)
            }
            Op::JobRetry { job } => {
                if let Some(j) = self.jobs.get_mut(&job) {
                    j.tries += 1;
                    j.not_before_ms = at + backoff_ms(j.tries);
                }
                json(&true)
            }
            Op::RepairVoid { intent, attempt } => {
                self.add_job(at, &intent, Target::Void(attempt), 0);
                json(&true)
            }
            Op::ReleaseWaiter { intent, scope, key } => json(&self.release_waiter(&intent, &scope, &key)),
            Op::CreateAccounts(accounts) => json(&self.create_accounts(at, &accounts)),
            Op::Transfers(parts) => json(&self.transfers(at, &parts)),
            Op::Sweep => {
                let keys = self.idem.expire_at_most(at, 10_000);
                let holds = self.ledger.expire_pending_at_most(at, 10_000).len();
                json(&(keys, holds))
            }
            Op::SetEndpoints(urls) => {
                self.endpoints = urls;
                json(&true)
            }
            Op::Delivered(seqs) => {
                for s in seqs {
                    if let Some(e) = self.events.get_mut(&s) {
                        e.delivered = true;
                    }
                }
                json(&true)
            }
        }
    }

    fn apply_intent(&mut self, at: u64, idem: Option<IdemKey>, action: Action) -> IntentReply {
        let done = |response: StoredResponse| IntentReply::Done { response, replayed: false };
        let token = match &idem {
            None => None,
            Some(k) => match self.idem.begin(&k.scope, &k.key, k.fingerprint, at) {
                Ok(Begin::Fresh { token, .. }) => Some(token),
                Ok(Begin::Replay(response)) => return IntentReply::Done { response, replayed: true },
                Ok(Begin::InFlight) => {
                    return done(StripeError::idempotency(409, "idempotency_key_in_use",
                        "There is currently another in-progress request using this Idempotent Key (that probably means you submitted twice, and the other request is still going through). Please try again later.").to_stored());
                }
                Ok(Begin::Mismatch) => {
                    return done(StripeError::idempotency(422, "idempotency_key_reused", format!(
                        "Keys for idempotent requests can only be used with the same parameters they were first used with. Try using a key other than '{}' if you meant to execute a different request.", k.key)).to_stored());
                }
                Err(e @ IdempotencyError::TableFull(_)) => {
                    return done(StripeError::api(503, e.code(), e.to_string()).to_stored());
                }
                Err(e) => {
                    return done(StripeError::idempotency(400, e.code(), e.to_string()).to_stored());
                }
            },
        };
        let result = self.run_action(at, action);
        let (Some(k), Some(token)) = (idem, token) else {
            return match result {
                Ok(ActionOk::Response(r)) => done(r),
                Err(e) => done(e.to_stored()),
                Ok(ActionOk::Wait { seq, on, calls }) => IntentReply::Wait { intent: intent_id(seq), on, calls },
            };
        };
        match result {
            Err(e) if is_validation(&e) => {
                let _ = self.idem.abandon(&k.scope, &k.key, token);
                done(e.to_stored())
            }
            Err(e) => {
                let r = e.to_stored();
                self.complete(&k.scope, &k.key, token, r.clone());
                done(r)
            }
            Ok(ActionOk::Response(r)) => {
                self.complete(&k.scope, &k.key, token, r.clone());
                done(r)
            }
            Ok(ActionOk::Wait { seq, on, calls }) => {
                if let Some(rec) = self.intents.get_mut(&seq) {
                    rec.waiters.push(Waiter { scope: k.scope, key: k.key, token, on });
                }
                IntentReply::Wait { intent: intent_id(seq), on, calls }
            }
        }
    }

    fn complete(&mut self, scope: &str, key: &str, token: AttemptToken, response: StoredResponse) {
        if let Err(e) = self.idem.complete(scope, key, token, response) {
            // A takeover fenced this owner out, or the body is too large: the key keeps the
            // other owner's answer (or none), never two.
            self.anomaly(format!("idempotency key {key}: {e}"));
        }
    }

    fn anomaly(&mut self, what: String) {
        if self.anomalies.len() >= ANOMALIES_MAX {
            self.anomalies.remove(0);
        }
        self.anomalies.push(what);
    }

    fn record(&self, id: &str) -> Result<u64, StripeError> {
        match self.intent(id) {
            Some(r) => Ok(r.seq),
            None => Err(StripeError::not_found("payment_intent", id, "intent")),
        }
    }

    fn run_action(&mut self, at: u64, action: Action) -> Result<ActionOk, StripeError> {
        let se = |e: basalt_ledger_core::IntentError| StripeError::from_intent(&e);
        match action {
            Action::Create(args) => {
                let params = CreateParams {
                    amount: args.amount,
                    currency: args.currency,
                    capture_method: args.capture_method,
                    payment_method: args.payment_method,
                };
                let created = PaymentIntent::create(params).map_err(se)?;
                let confirmed = if args.confirm { Some(created.intent.confirm(None).map_err(se)?) } else { None };
                let seq = self.next_intent;
                self.next_intent += 1;
                let id = intent_id(seq);
                let record = IntentRecord {
                    seq,
                    client_secret: format!("{id}_secret_{:016x}", mix(seq ^ 0x005e_c2e7)),
                    id,
                    created_ms: at,
                    intent: created.intent.clone(),
                    metadata: args.metadata,
                    description: args.description,
                    waiters: Vec::new(),
                    refund_meta: Vec::new(),
                };
                self.intents.insert(seq, record);
                self.commit(at, seq, created);
                match confirmed {
                    None => Ok(ActionOk::Response(stripe::ok(&stripe::intent_json(&self.intents[&seq])))),
                    Some(t) => Ok(self.commit_waiting(at, seq, t)),
                }
            }
            Action::Update { id, amount, payment_method, metadata, description } => {
                let seq = self.record(&id)?;
                let t = self.intents[&seq].intent.update(amount, payment_method).map_err(se)?;
                let rec = self.intents.get_mut(&seq).expect("looked up");
                rec.metadata.extend(metadata);
                if description.is_some() {
                    rec.description = description;
                }
                self.commit(at, seq, t);
                Ok(ActionOk::Response(stripe::ok(&stripe::intent_json(&self.intents[&seq]))))
            }
            Action::Confirm { id, payment_method } => {
                let seq = self.record(&id)?;
                let t = self.intents[&seq].intent.confirm(payment_method).map_err(se)?;
                Ok(self.commit_waiting(at, seq, t))
            }
            Action::Capture { id, amount_to_capture } => {
                let seq = self.record(&id)?;
                let t = self.intents[&seq].intent.capture(amount_to_capture).map_err(se)?;
                Ok(self.commit_waiting(at, seq, t))
            }
            Action::Cancel { id, reason } => {
                let seq = self.record(&id)?;
                let t = self.intents[&seq].intent.cancel(reason).map_err(se)?;
                self.commit(at, seq, t);
                Ok(ActionOk::Response(stripe::ok(&stripe::intent_json(&self.intents[&seq]))))
            }
            Action::Refund { payment_intent, amount, metadata } => {
                let seq = self.record(&payment_intent)?;
                let t = self.intents[&seq].intent.refund(amount).map_err(se)?;
                let n = t.intent.refunds.len() as u32 - 1;
                self.intents
                    .get_mut(&seq)
                    .expect("looked up")
                    .refund_meta
                    .push(RefundMeta { created_ms: at, metadata });
                let calls = self.commit(at, seq, t);
                Ok(ActionOk::Wait { seq, on: WaitOn::Refund(n), calls })
            }
        }
    }

    /// Commits a transition that opened a provider attempt; the request waits on it.
    fn commit_waiting(&mut self, at: u64, seq: u64, t: Transition) -> ActionOk {
        let attempt = t.intent.open_attempt().map(|a| a.id.0);
        let calls = self.commit(at, seq, t);
        match attempt {
            Some(n) => ActionOk::Wait { seq, on: WaitOn::Attempt(n), calls },
            None => ActionOk::Response(stripe::ok(&stripe::intent_json(&self.intents[&seq]))),
        }
    }

    /// Applies an outcome (or any transition) to intent `id`, then completes the requests that
    /// waited for it.
    fn with_intent(
        &mut self,
        at: u64,
        id: &str,
        f: impl FnOnce(&IntentRecord) -> Result<Transition, basalt_ledger_core::IntentError>,
    ) -> bool {
        let Some(seq) = self.intent(id).map(|r| r.seq) else { return false };
        match f(&self.intents[&seq]) {
            Ok(t) => {
                self.commit(at, seq, t);
                self.settle(seq);
                true
            }
            Err(e) => {
                self.anomaly(format!("{id}: {}", e.message));
                false
            }
        }
    }

    /// Completes the waiters whose attempt or refund has its outcome; drops finished jobs.
    fn settle(&mut self, seq: u64) {
        let Some(rec) = self.intents.get(&seq) else { return };
        let id = rec.id.clone();
        let mut done_jobs = Vec::new();
        for (n, a) in rec.intent.attempts.iter().enumerate() {
            if !a.status.is_open() {
                done_jobs.push(job_key(&id, Target::Attempt(n as u32)));
            }
        }
        for (n, f) in rec.intent.refunds.iter().enumerate() {
            if f.status != RefundStatus::Pending {
                done_jobs.push(job_key(&id, Target::Refund(n as u32)));
                done_jobs.push(job_key(&id, Target::CancelRefund(n as u32)));
            }
        }
        for k in done_jobs {
            self.jobs.remove(&k);
        }
        let (ready, waiting): (Vec<Waiter>, Vec<Waiter>) =
            rec.waiters.clone().into_iter().partition(|w| self.resolved(&id, w.on));
        for w in ready {
            let response = self.render_wait(&id, w.on);
            self.complete(&w.scope, &w.key, w.token, response);
        }
        if let Some(rec) = self.intents.get_mut(&seq) {
            rec.waiters = waiting;
        }
    }

    fn release_waiter(&mut self, id: &str, scope: &str, key: &str) -> Option<StoredResponse> {
        let seq = self.intent(id)?.seq;
        let rec = self.intents.get_mut(&seq)?;
        if let Some(i) = rec.waiters.iter().position(|w| w.scope == scope && w.key == key) {
            let w = rec.waiters.remove(i);
            let response = self.render_wait(id, w.on);
            self.complete(scope, key, w.token, response);
        }
        self.stored_response(scope, key).cloned()
    }

    fn add_job(&mut self, at: u64, intent: &str, target: Target, grace_ms: u64) {
        let key = job_key(intent, target);
        let job = self.jobs.entry(key).or_insert(Job {
            intent: intent.to_owned(),
            target,
            not_before_ms: at + grace_ms,
            tries: 0,
        });
        job.not_before_ms = job.not_before_ms.max(at + grace_ms);
    }

    /// Stores the transition's intent and carries out its effects: postings to the ledger,
    /// events to the outbox, provider work to the jobs (and the calls to make now).
    fn commit(&mut self, at: u64, seq: u64, t: Transition) -> Vec<(Target, ProviderCall)> {
        let Some(rec) = self.intents.get_mut(&seq) else { return Vec::new() };
        rec.intent = t.intent;
        let id = rec.id.clone();
        let grace = self.config.inline_grace_ms;
        let mut now = Vec::new();
        for effect in t.effects {
            match effect {
                Effect::Authorize { attempt, .. } | Effect::Capture { attempt, .. } => {
                    self.add_job(at, &id, Target::Attempt(attempt.0), grace);
                    now.push(Target::Attempt(attempt.0));
                }
                Effect::QueryAttempt { attempt } => {
                    let key = job_key(&id, Target::Attempt(attempt.0));
                    self.add_job(at, &id, Target::Attempt(attempt.0), 0);
                    if let Some(j) = self.jobs.get_mut(&key) {
                        j.tries += 1;
                        j.not_before_ms = at + backoff_ms(j.tries);
                    }
                }
                Effect::Void { attempt } => self.add_job(at, &id, Target::Void(attempt.0), 0),
                Effect::Refund { refund, .. } => {
                    self.add_job(at, &id, Target::Refund(refund.0), grace);
                    now.push(Target::Refund(refund.0));
                }
                Effect::QueryRefund { refund } => {
                    let key = job_key(&id, Target::Refund(refund.0));
                    self.add_job(at, &id, Target::Refund(refund.0), 0);
                    if let Some(j) = self.jobs.get_mut(&key) {
                        j.tries += 1;
                        j.not_before_ms = at + backoff_ms(j.tries);
                    }
                }
                Effect::CancelRefund { refund } => self.add_job(at, &id, Target::CancelRefund(refund.0), 0),
                Effect::PostLedger { posting, currency } => self.post(at, seq, posting, currency),
                Effect::Webhook { event } => self.event(at, seq, event.as_str()),
            }
        }
        now.into_iter().filter_map(|target| self.call_for(&id, target).map(|c| (target, c))).collect()
    }

    fn event(&mut self, at: u64, seq: u64, kind: &str) {
        let Some(rec) = self.intents.get(&seq) else { return };
        let event = Event {
            seq: self.next_event,
            kind: kind.to_owned(),
            created_ms: at,
            intent: rec.id.clone(),
            object: stripe::intent_json(rec).to_string(),
            delivered: self.endpoints.is_empty(),
        };
        self.events.insert(event.seq, event);
        self.next_event += 1;
        while self.events.len() > EVENTS_MAX {
            self.events.pop_first();
        }
    }

    fn ensure_accounts(&mut self, at: u64, currency: Currency) {
        for id in [clearing_account(currency), merchant_account(currency)] {
            if self.ledger.account(id).is_none() {
                let flags = basalt_ledger_core::AccountFlags {
                    debits_must_not_exceed_credits: id == merchant_account(currency),
                    history: true,
                    ..Default::default()
                };
                let _ = self.ledger.create_accounts(at, &[NewAccount { id, currency, flags, user_data: 0 }]);
            }
        }
    }

    /// An intent's posting as a ledger transfer with an id derived from the intent and the
    /// attempt or refund: applied at most once, whatever delivers the outcome.
    fn post(&mut self, at: u64, seq: u64, posting: Posting, currency: Currency) {
        self.ensure_accounts(at, currency);
        let (clearing, merchant) = (clearing_account(currency), merchant_account(currency));
        let t = match posting {
            Posting::Charge { attempt, amount } => NewTransfer::new(
                posting_id(seq, 1, attempt.0),
                clearing,
                merchant,
                amount.into(),
                currency,
                CODE_CHARGE,
            ),
            Posting::Hold { authorization, amount } => NewTransfer::new(
                posting_id(seq, 2, authorization.0),
                clearing,
                merchant,
                amount.into(),
                currency,
                CODE_HOLD,
            )
            .with_pending(HOLD_TIMEOUT_MS),
            Posting::CaptureHold { authorization, amount } => NewTransfer::post(
                posting_id(seq, 3, authorization.0),
                posting_id(seq, 2, authorization.0),
                amount.into(),
                currency,
            ),
            Posting::VoidHold { authorization } => {
                NewTransfer::void(posting_id(seq, 4, authorization.0), posting_id(seq, 2, authorization.0), currency)
            }
            Posting::Refund { refund, amount } => {
                NewTransfer::new(posting_id(seq, 5, refund.0), merchant, clearing, amount.into(), currency, CODE_REFUND)
            }
        };
        if let Some(Err(e)) = self.ledger.apply_transfers(at, &[t]).pop() {
            self.anomaly(format!("{}: posting {posting:?} refused: {}", intent_id(seq), e.code()));
        }
    }

    fn create_accounts(&mut self, at: u64, accounts: &[NewAccount]) -> Vec<String> {
        accounts
            .iter()
            .map(|a| {
                if is_reserved(a.id) {
                    return "id_reserved".to_owned();
                }
                match self.ledger.create_accounts(at, std::slice::from_ref(a)).pop() {
                    Some(Err(e)) => e.code().to_owned(),
                    _ => "ok".to_owned(),
                }
            })
            .collect()
    }

    /// Applies each batch; per batch, the transfers refused as (index, code) — the others are
    /// `ok` (most are, so the reply names only the exceptions).
    fn transfers(&mut self, at: u64, parts: &[Vec<NewTransfer>]) -> Vec<Vec<(u32, &'static str)>> {
        self.ledger.expire_pending_at_most(at, 1_000);
        parts
            .iter()
            .map(|batch| {
                let reserved = batch
                    .iter()
                    .any(|t| is_reserved(t.id) || is_reserved(t.debit_account_id) || is_reserved(t.credit_account_id));
                if reserved {
                    return (0..batch.len() as u32).map(|i| (i, "id_reserved")).collect();
                }
                let results = self.ledger.apply_transfers(at, batch);
                (0u32..).zip(results).filter_map(|(i, r)| r.err().map(|e| (i, e.code()))).collect()
            })
            .collect()
    }

    // -- Audit ---------------------------------------------------------------------------

    /// Checks what must always hold between intents and the ledger; answers the violations.
    pub fn audit(&self) -> Vec<String> {
        let mut bad = Vec::new();
        if let Err(e) = self.ledger.audit() {
            bad.push(format!("ledger: {e}"));
        }
        let mut merchant_expected: BTreeMap<Currency, i128> = BTreeMap::new();
        for r in self.intents.values() {
            let i = &r.intent;
            let posted: Vec<u128> = i
                .attempts
                .iter()
                .flat_map(|a| [posting_id(r.seq, 1, a.id.0), posting_id(r.seq, 3, a.id.0)])
                .filter(|id| self.ledger.transfer(*id).is_some())
                .collect();
            let posted_amount: u128 = posted.iter().filter_map(|id| self.ledger.transfer(*id)).map(|t| t.amount).sum();
            if i.amount_received > 0 && (posted.len() != 1 || posted_amount != u128::from(i.amount_received)) {
                bad.push(format!(
                    "{}: received {} but posted {posted_amount} in {} transfers",
                    r.id,
                    i.amount_received,
                    posted.len()
                ));
            }
            if i.amount_received == 0 && !posted.is_empty() {
                bad.push(format!("{}: posted {posted_amount} without having received anything", r.id));
            }
            if i.status == IntentStatus::Succeeded && i.amount_received == 0 {
                bad.push(format!("{}: succeeded with nothing received", r.id));
            }
            let successes = i
                .attempts
                .iter()
                .filter(|a| a.kind != AttemptKind::Capture && a.status == AttemptStatus::Succeeded)
                .count();
            if successes > 1 {
                bad.push(format!("{}: {successes} successful charges", r.id));
            }
            let refunds: u128 = i
                .refunds
                .iter()
                .enumerate()
                .filter_map(|(n, _)| self.ledger.transfer(posting_id(r.seq, 5, n as u32)))
                .map(|t| t.amount)
                .sum();
            if refunds != u128::from(i.amount_refunded) {
                bad.push(format!("{}: refunded {} but posted {refunds}", r.id, i.amount_refunded));
            }
            for a in i.attempts.iter().filter(|a| a.status.is_open()) {
                if !self.jobs.contains_key(&job_key(&r.id, Target::Attempt(a.id.0))) {
                    bad.push(format!("{}: attempt {} is open with no job to resolve it", r.id, a.id.0));
                }
            }
            for f in i.refunds.iter().filter(|f| f.status == RefundStatus::Pending) {
                if !self.jobs.contains_key(&job_key(&r.id, Target::Refund(f.id.0))) {
                    bad.push(format!("{}: refund {} is pending with no job to resolve it", r.id, f.id.0));
                }
            }
            *merchant_expected.entry(i.currency).or_default() +=
                i128::from(i.amount_received) - i128::from(i.amount_refunded);
        }
        for (c, expected) in merchant_expected {
            let Some(a) = self.ledger.account(merchant_account(c)) else {
                if expected != 0 {
                    bad.push(format!("{c}: no merchant account but {expected} expected"));
                }
                continue;
            };
            let net = a.credits_posted as i128 - a.debits_posted as i128;
            if net != expected {
                bad.push(format!("{c}: merchant balance {net}, intents say {expected}"));
            }
        }
        bad
    }
}

/// The provider key of the call that moved an intent's money (its successful charge, or its
/// successful capture).
pub fn money_key(r: &IntentRecord) -> Option<String> {
    r.intent
        .attempts
        .iter()
        .rev()
        .find(|a| a.status == AttemptStatus::Succeeded && a.kind != AttemptKind::Authorize)
        .map(|a| attempt_key(&r.id, a.id.0))
}

/// JSON replies of any serializable type, behind one `dyn` so `apply` stays one match.
mod erased {
    pub trait Ser {
        fn to_json(&self) -> Vec<u8>;
    }
    impl<T: serde::Serialize> Ser for T {
        fn to_json(&self) -> Vec<u8> {
            serde_json::to_vec(self).unwrap_or_default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use basalt_ledger_core::Currency;

    fn usd() -> Currency {
        Currency::new("USD").unwrap()
    }

    fn transfers() -> Op {
        let t = NewTransfer::new(u128::MAX - 1, 1, 2, 5, usd(), 1);
        Op::Transfers(vec![vec![t, NewTransfer::post(7, 3, 0, usd()).with_linked()], vec![]])
    }

    fn json(cmd: &Command) -> String {
        serde_json::to_string(cmd).unwrap()
    }

    #[test]
    fn ledger_commands_are_binary_and_the_rest_json_and_both_decode() {
        let accounts =
            Op::CreateAccounts(vec![NewAccount { id: 9, currency: usd(), flags: Default::default(), user_data: 3 }]);
        for op in [transfers(), accounts] {
            let cmd = Command { at_ms: 1_700_000_000_000, op };
            let bytes = cmd.clone().encode().unwrap();
            assert_eq!(bytes[0], BINARY_TAG);
            assert!(bytes.len() < json(&cmd).len() / 3, "{} bytes", bytes.len());
            assert_eq!(json(&Command::decode(&bytes).unwrap()), json(&cmd));
        }
        let sweep = Command { at_ms: 5, op: Op::Sweep };
        let bytes = sweep.clone().encode().unwrap();
        assert_eq!(bytes[0], b'{');
        assert_eq!(json(&Command::decode(&bytes).unwrap()), json(&sweep));
    }

    #[test]
    fn ledger_commands_logged_as_json_still_decode() {
        // Logs written before ledger commands were binary hold them as JSON.
        let cmd = Command { at_ms: 42, op: transfers() };
        let old = serde_json::to_vec(&cmd).unwrap();
        assert_eq!(json(&Command::decode(&old).unwrap()), json(&cmd));
    }

    #[test]
    fn bad_binary_commands_are_errors_not_panics() {
        let good = Command { at_ms: 42, op: transfers() }.encode().unwrap();
        for cut in 1..good.len() {
            assert!(Command::decode(&good[..cut]).is_err(), "cut at {cut}");
        }
        let mut longer = good.clone();
        longer.push(0);
        assert!(Command::decode(&longer).unwrap_err().contains("after its end"));
        let mut rng = 0x9e37_79b9_7f4a_7c15u64;
        for len in 0..200 {
            let mut bytes = vec![BINARY_TAG];
            bytes.extend((0..len).map(|_| {
                rng = mix(rng);
                rng as u8
            }));
            let _ = Command::decode(&bytes);
        }
        assert!(Command::decode(b"").is_err());
    }
}
