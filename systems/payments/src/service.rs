//! The model on the consensus engine, and everything around it that does IO: proposing
//! commands, running provider calls for the jobs the state machine records, waiting for a
//! request's outcome, the leader's background tasks (job runner, sweeper, webhook dispatcher,
//! reconciliation), and the ledger batcher that packs concurrent ledger requests into one
//! proposal.

use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use basalt_consensus::{Consensus, ConsensusError, StateMachine};
use basalt_ledger_core::{NewTransfer, Outcome, RefundOutcome, StoredResponse};
use basalt_runtime::node::CancellationToken;
use basalt_runtime::{ApiError, Clock};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use tokio::sync::{Semaphore, mpsc, oneshot, watch};
use tokio::time::Instant;

use crate::PaymentsSettings;
use crate::model::{
    Action, Command, IdemKey, IntentReply, Model, ModelConfig, Op, Target, WaitOn, job_key, merchant_account,
};
use crate::provider::{Provider, ProviderCall, ProviderError, ProviderRecord};
use crate::stripe::StripeError;

pub const SYSTEM: &str = "payments";

/// The replicated state machine: the model behind a lock never held across an await, and a
/// watch that ticks on every applied payments entry.
pub struct PaymentsSm {
    model: RwLock<Model>,
    changed: watch::Sender<u64>,
    config: ModelConfig,
}

impl PaymentsSm {
    pub fn new(config: ModelConfig) -> anyhow::Result<Self> {
        Ok(Self { model: RwLock::new(Model::new(config)?), changed: watch::channel(0).0, config })
    }

    pub fn read<T>(&self, f: impl FnOnce(&Model) -> T) -> T {
        f(&self.model.read().unwrap_or_else(|e| e.into_inner()))
    }

    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }
}

impl StateMachine for PaymentsSm {
    fn apply(&self, index: u64, command: &[u8]) -> Vec<u8> {
        let reply = match Command::decode(command) {
            Ok(cmd) => self.model.write().unwrap_or_else(|e| e.into_inner()).apply(cmd),
            Err(e) => serde_json::to_vec(&json!({"bad_command": e.to_string()})).unwrap_or_default(),
        };
        self.changed.send_replace(index);
        reply
    }

    fn snapshot(&self) -> Vec<u8> {
        self.read(Model::snapshot)
    }

    fn restore(&self, snapshot: &[u8]) -> anyhow::Result<()> {
        let restored = Model::restore(snapshot, self.config)?;
        *self.model.write().unwrap_or_else(|e| e.into_inner()) = restored;
        self.changed.send_modify(|_| {});
        Ok(())
    }
}

/// The transfers of a batch that were refused: (index in the batch, error code).
pub type Refused = Vec<(u32, String)>;

/// A ledger request waiting for the batcher.
struct LedgerReq {
    transfers: Vec<NewTransfer>,
    reply: oneshot::Sender<Result<Refused, StripeError>>,
}

pub struct PaymentsService {
    pub sm: Arc<PaymentsSm>,
    pub consensus: Arc<Consensus>,
    pub clock: Clock,
    pub provider: Arc<dyn Provider>,
    pub settings: PaymentsSettings,
    /// Jobs this node is running now (so it never runs one twice at once).
    running: Arc<Mutex<HashSet<String>>>,
    ledger_tx: mpsc::Sender<LedgerReq>,
    ledger_rx: Mutex<Option<mpsc::Receiver<LedgerReq>>>,
    http: reqwest::Client,
}

/// Holds a job for this node; released when dropped.
struct Claim {
    key: String,
    running: Arc<Mutex<HashSet<String>>>,
}

impl Drop for Claim {
    fn drop(&mut self) {
        self.running.lock().unwrap_or_else(|e| e.into_inner()).remove(&self.key);
    }
}

pub fn consensus_err(e: ConsensusError) -> StripeError {
    let api: ApiError = e.into();
    StripeError::api(api.status.as_u16(), &api.code, api.message)
}

/// The outcome command for a job's provider answer, and whether it is final.
fn outcome_op(intent: &str, target: Target, result: &Result<ProviderRecord, ProviderError>) -> (Op, bool) {
    let intent = intent.to_owned();
    let retry = |intent: &str| (Op::JobRetry { job: job_key(intent, target) }, false);
    match (target, result) {
        (Target::Attempt(attempt), Ok(r)) => {
            let outcome = match r.status.as_str() {
                "declined" | "failed" | "canceled" => {
                    Outcome::Declined(r.decline_code.clone().unwrap_or(r.status.clone()))
                }
                // A tombstone: voided before the call arrived, so nothing was charged.
                "voided" if r.amount == 0 => Outcome::Declined("voided".into()),
                _ => Outcome::Succeeded,
            };
            (Op::AttemptOutcome { intent, attempt, outcome }, true)
        }
        (Target::Attempt(attempt), Err(_)) => {
            (Op::AttemptOutcome { intent, attempt, outcome: Outcome::Unknown }, false)
        }
        (Target::Void(attempt), Ok(_)) => (Op::VoidDone { intent, attempt }, true),
        (Target::Void(_), Err(_)) => retry(&intent),
        (Target::Refund(refund) | Target::CancelRefund(refund), Ok(r)) => {
            let outcome = match r.status.as_str() {
                "succeeded" => RefundOutcome::Succeeded,
                "canceled" => RefundOutcome::Canceled,
                _ => RefundOutcome::Failed(r.decline_code.clone().unwrap_or(r.status.clone())),
            };
            (Op::RefundOutcome { intent, refund, outcome }, true)
        }
        (Target::Refund(refund), Err(_)) => {
            (Op::RefundOutcome { intent, refund, outcome: RefundOutcome::Unknown }, false)
        }
        (Target::CancelRefund(_), Err(_)) => retry(&intent),
    }
}

impl PaymentsService {
    pub fn new(
        sm: Arc<PaymentsSm>,
        consensus: Arc<Consensus>,
        clock: Clock,
        provider: Arc<dyn Provider>,
        settings: PaymentsSettings,
    ) -> Self {
        let (ledger_tx, ledger_rx) = mpsc::channel(4096);
        let http = reqwest::Client::builder()
            .timeout(Duration::from_millis(settings.webhook_timeout_ms))
            .build()
            .unwrap_or_default();
        Self {
            sm,
            consensus,
            clock,
            provider,
            settings,
            running: Arc::default(),
            ledger_tx,
            ledger_rx: Mutex::new(Some(ledger_rx)),
            http,
        }
    }

    /// Propose a command stamped with this node's clock; the reply decoded.
    pub async fn propose<T: DeserializeOwned>(&self, op: Op) -> Result<T, StripeError> {
        let cmd = Command { at_ms: self.clock.now_ms(), op };
        let bytes = cmd.encode().map_err(|e| StripeError::api(500, "internal", e))?;
        let reply = self.consensus.propose_batched(SYSTEM, bytes).await.map_err(consensus_err)?;
        serde_json::from_slice(&reply)
            .map_err(|e| StripeError::api(500, "internal", format!("bad reply from the state machine: {e}")))
    }

    /// Linearizable read of the local state (read-index).
    pub async fn read<T>(&self, f: impl FnOnce(&Model) -> T) -> Result<T, StripeError> {
        self.consensus.read_barrier().await.map_err(consensus_err)?;
        Ok(self.sm.read(f))
    }

    fn is_leader(&self) -> bool {
        self.consensus.status().is_ok_and(|s| s.state == "leader")
    }

    fn claim(&self, key: &str) -> Option<Claim> {
        let mut running = self.running.lock().unwrap_or_else(|e| e.into_inner());
        running.insert(key.to_owned()).then(|| Claim { key: key.to_owned(), running: self.running.clone() })
    }

    /// A Stripe-shaped request: one command (idempotency key, transition, response), then —
    /// if it opened a provider attempt or a refund — the provider call and a wait for the
    /// outcome (which the state machine stores for the key). Answers `(response, replayed)`.
    pub async fn intent_request(
        self: &Arc<Self>,
        idem: Option<IdemKey>,
        action: Action,
    ) -> Result<(StoredResponse, bool), StripeError> {
        let key = idem.as_ref().map(|k| (k.scope.clone(), k.key.clone()));
        let (intent, on, calls) = match self.propose::<IntentReply>(Op::Intent { idem, action }).await? {
            IntentReply::Done { response, replayed } => return Ok((response, replayed)),
            IntentReply::Wait { intent, on, calls } => (intent, on, calls),
        };
        let deadline = Instant::now() + Duration::from_millis(self.settings.request_wait_ms);
        for (target, call) in calls {
            if let Some(claim) = self.claim(&job_key(&intent, target)) {
                self.run_job(claim, &intent, target, Some(call), deadline).await;
            }
        }
        let mut rx = self.sm.subscribe();
        loop {
            let done = self.sm.read(|m| match &key {
                Some((scope, k)) => m.stored_response(scope, k).cloned(),
                None => m.resolved(&intent, on).then(|| m.render_wait(&intent, on)),
            });
            if let Some(r) = done {
                return Ok((r, false));
            }
            if tokio::time::timeout_at(deadline, rx.changed()).await.is_err() {
                break;
            }
        }
        match key {
            Some((scope, key)) => {
                let r: Option<StoredResponse> = self.propose(Op::ReleaseWaiter { intent, scope, key }).await?;
                r.map(|r| (r, false)).ok_or_else(|| StripeError::api(500, "internal", "no response was stored"))
            }
            None => Ok((self.sm.read(|m| m.render_wait(&intent, on)), false)),
        }
    }

    /// Carry out one job: the provider call (idempotent by its key), then its outcome as a
    /// command. A lost answer is recorded as unknown once and the call re-issued (with the same
    /// key, so it cannot charge twice) until `deadline`; after that the job runner goes on.
    async fn run_job(
        &self,
        _claim: Claim,
        intent: &str,
        target: Target,
        call: Option<ProviderCall>,
        deadline: Instant,
    ) {
        let call = match call {
            Some(c) => c,
            None => match self.sm.read(|m| m.call_for(intent, target)) {
                Some(c) => c,
                None => return,
            },
        };
        let mut tries = 0u32;
        loop {
            let result = self.provider.call(&call).await;
            if let Err(e) = &result {
                tracing::debug!(key = %call.key, error = %e, "payments: provider call without an answer");
            }
            let (op, final_) = outcome_op(intent, target, &result);
            if (final_ || tries == 0)
                && let Err(e) = self.propose::<Value>(op).await
            {
                tracing::debug!(key = %call.key, error = %e.message, "payments: outcome not recorded (the job stays)");
                return;
            }
            if final_ {
                return;
            }
            tries += 1;
            let pause = Duration::from_millis(50 << tries.min(4));
            if tries > 4 || Instant::now() + pause >= deadline {
                return;
            }
            tokio::time::sleep(pause).await;
        }
    }

    /// On the leader: run every due job (a request's own node had its chance first).
    pub async fn job_runner(self: Arc<Self>, stop: CancellationToken) {
        let tick = Duration::from_millis(self.settings.job_tick_ms);
        let parallel = Arc::new(Semaphore::new(self.settings.jobs_parallel_max));
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(tick) => {}
            }
            if !self.is_leader() {
                continue;
            }
            let now = self.clock.now_ms();
            let due: Vec<(String, Target)> = self.sm.read(|m| {
                m.jobs()
                    .filter(|(_, j)| j.not_before_ms <= now)
                    .take(self.settings.jobs_parallel_max * 4)
                    .map(|(_, j)| (j.intent.clone(), j.target))
                    .collect()
            });
            for (intent, target) in due {
                let Some(claim) = self.claim(&job_key(&intent, target)) else { continue };
                let Ok(permit) = parallel.clone().try_acquire_owned() else { break };
                let svc = self.clone();
                tokio::spawn(async move {
                    let deadline = Instant::now() + Duration::from_secs(2);
                    svc.run_job(claim, &intent, target, None, deadline).await;
                    drop(permit);
                });
            }
        }
    }

    /// On the leader: expire idempotency keys and ledger holds that are due.
    pub async fn sweeper(self: Arc<Self>, stop: CancellationToken) {
        let every = Duration::from_millis(self.settings.sweep_interval_ms);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(every) => {}
            }
            if self.is_leader()
                && let Err(e) = self.propose::<Value>(Op::Sweep).await
            {
                tracing::debug!(error = %e.message, "payments: sweep not run");
            }
        }
    }

    /// On the leader: deliver the outbox's events to the merchant's endpoints (at least once,
    /// in order per endpoint; receivers deduplicate by event id), then mark them delivered.
    pub async fn dispatcher(self: Arc<Self>, stop: CancellationToken) {
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(Duration::from_millis(100)) => {}
            }
            if !self.is_leader() {
                continue;
            }
            let (endpoints, events) = self.sm.read(|m| {
                let events: Vec<(u64, Value)> = m
                    .undelivered(100)
                    .into_iter()
                    .map(|e| {
                        let object: Value = serde_json::from_str(&e.object).unwrap_or(Value::Null);
                        (
                            e.seq,
                            json!({"id": e.id(), "object": "event", "type": e.kind, "created": e.created_ms / 1000,
                            "livemode": false, "data": {"object": object}}),
                        )
                    })
                    .collect();
                (m.endpoints().to_vec(), events)
            });
            if events.is_empty() {
                continue;
            }
            let mut delivered = Vec::new();
            for (seq, body) in events {
                let mut all = true;
                for url in &endpoints {
                    let ok = self.http.post(url).json(&body).send().await.is_ok_and(|r| r.status().is_success());
                    all &= ok;
                }
                if !all {
                    break;
                }
                delivered.push(seq);
            }
            if !delivered.is_empty()
                && let Err(e) = self.propose::<Value>(Op::Delivered(delivered)).await
            {
                tracing::debug!(error = %e.message, "payments: deliveries not recorded (they will be resent)");
            }
        }
    }

    /// A provider webhook: a hint that a call has an outcome. Recorded only if this node's
    /// state still waits for it; duplicates and reordering are harmless (outcomes are facts).
    pub async fn provider_webhook(&self, record: ProviderRecord) -> Result<bool, StripeError> {
        let Some((intent, tag)) = record.key.rsplit_once(':') else { return Ok(false) };
        let target = match (tag.split_at_checked(1), tag.len()) {
            (Some(("a", n)), _) => n.parse().ok().map(Target::Attempt),
            (Some(("r", n)), _) => n.parse().ok().map(Target::Refund),
            _ => None,
        };
        let Some(target) = target else { return Ok(false) };
        let open = self.sm.read(|m| match target {
            Target::Attempt(n) => !m.resolved(intent, WaitOn::Attempt(n)),
            Target::Refund(n) => !m.resolved(intent, WaitOn::Refund(n)),
            _ => false,
        });
        if !open {
            return Ok(false);
        }
        let (op, final_) = outcome_op(intent, target, &Ok(record.clone()));
        if final_ {
            self.propose::<Value>(op).await?;
        }
        Ok(final_)
    }

    /// Compare the provider's records with the intents and the ledger; with `repair`, record
    /// the outcomes the provider knows and the intents wait for, and void money moved for
    /// attempts Basalt does not keep.
    pub async fn reconcile(&self, repair: bool) -> Result<Value, StripeError> {
        let records =
            self.provider.list().await.map_err(|e| StripeError::api(502, "provider_unavailable", e.to_string()))?;
        self.consensus.read_barrier().await.map_err(consensus_err)?;
        let mut drift = Vec::new();
        let mut repairs: Vec<Op> = Vec::new();
        let mut provider_net: BTreeMap<String, i128> = BTreeMap::new();
        self.sm.read(|m| {
            for r in &records {
                let signed = match (r.kind.as_str(), r.status.as_str()) {
                    ("charge" | "capture", "succeeded") => i128::from(r.amount),
                    ("refund", "succeeded") => -i128::from(r.amount),
                    _ => 0,
                };
                *provider_net.entry(r.currency.to_ascii_uppercase()).or_default() += signed;
                let Some((intent_id, tag)) = r.key.split_once(':') else { continue };
                let Some(rec) = m.intent(intent_id) else {
                    if r.moved_money() {
                        drift.push(json!({"key": r.key, "problem": "money moved for an intent Basalt does not know"}));
                    }
                    continue;
                };
                let Some(n) = tag.strip_prefix('a').and_then(|n| n.parse::<u32>().ok()) else { continue };
                let Some(a) = rec.intent.attempts.get(n as usize) else {
                    drift.push(json!({"key": r.key, "problem": "provider record for an attempt Basalt never made"}));
                    continue;
                };
                if a.status.is_open() && r.status != "voided" {
                    drift.push(json!({"key": r.key, "problem": "outcome known to the provider only", "provider": r.status}));
                    repairs.push(outcome_op(intent_id, Target::Attempt(n), &Ok(r.clone())).0);
                } else if !a.status.is_open()
                    && r.moved_money()
                    && !matches!(a.status, basalt_ledger_core::AttemptStatus::Succeeded)
                {
                    drift.push(json!({"key": r.key, "problem": "money moved for an attempt Basalt records as not succeeded", "basalt": a.status}));
                    repairs.push(Op::RepairVoid { intent: intent_id.to_owned(), attempt: n });
                }
            }
        });
        let ledger: BTreeMap<String, i128> = self.sm.read(|m| {
            provider_net
                .keys()
                .filter_map(|c| {
                    let cur = basalt_ledger_core::Currency::new(c).ok()?;
                    let a = m.ledger().account(merchant_account(cur));
                    Some((c.clone(), a.map_or(0, |a| a.credits_posted as i128 - a.debits_posted as i128)))
                })
                .collect()
        });
        let mut balances = Vec::new();
        for (c, provider) in &provider_net {
            let basalt = ledger.get(c).copied().unwrap_or(0);
            if basalt != *provider {
                drift.push(json!({"currency": c, "problem": "ledger and provider disagree", "ledger": basalt.to_string(), "provider": provider.to_string()}));
            }
            balances.push(json!({"currency": c, "ledger": basalt.to_string(), "provider": provider.to_string()}));
        }
        let mut repaired = 0;
        if repair {
            for op in repairs {
                if self.propose::<Value>(op).await.is_ok() {
                    repaired += 1;
                }
            }
        }
        Ok(json!({"provider_records": records.len(), "drift": drift, "repaired": repaired, "balances": balances}))
    }

    /// On the leader, every `reconcile_interval_ms` (0: never): reconcile and repair.
    pub async fn reconciler(self: Arc<Self>, stop: CancellationToken) {
        if self.settings.reconcile_interval_ms == 0 {
            return;
        }
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(Duration::from_millis(self.settings.reconcile_interval_ms)) => {}
            }
            if self.is_leader() {
                match self.reconcile(true).await {
                    Ok(r) if r["drift"].as_array().is_some_and(|d| !d.is_empty()) => {
                        tracing::warn!(report = %r, "payments: reconciliation found drift");
                    }
                    Ok(_) => {}
                    Err(e) => tracing::debug!(error = %e.message, "payments: reconciliation not run"),
                }
            }
        }
    }

    /// Queue a batch of transfers; concurrent batches share one proposal (each stays its own
    /// batch for linked chains). The refused transfers with their error codes; the rest are ok.
    pub async fn transfers(&self, transfers: Vec<NewTransfer>) -> Result<Refused, StripeError> {
        let (reply, rx) = oneshot::channel();
        self.ledger_tx
            .send(LedgerReq { transfers, reply })
            .await
            .map_err(|_| StripeError::api(503, "not_running", "the ledger batcher stopped"))?;
        rx.await.map_err(|_| StripeError::api(503, "not_running", "the ledger batcher stopped"))?
    }

    /// Packs queued ledger requests into proposals of up to `ledger_proposal_max` transfers,
    /// with up to `ledger_proposals_in_flight` proposals in flight.
    pub async fn ledger_batcher(self: Arc<Self>, stop: CancellationToken) {
        let Some(mut rx) = self.ledger_rx.lock().unwrap_or_else(|e| e.into_inner()).take() else { return };
        let in_flight = Arc::new(Semaphore::new(self.settings.ledger_proposals_in_flight));
        loop {
            let permit = tokio::select! {
                _ = stop.cancelled() => return,
                p = in_flight.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => return },
            };
            let first = tokio::select! {
                _ = stop.cancelled() => return,
                r = rx.recv() => match r { Some(r) => r, None => return },
            };
            let mut n = first.transfers.len();
            let mut reqs = vec![first];
            while n < self.settings.ledger_proposal_max {
                match rx.try_recv() {
                    Ok(r) => {
                        n += r.transfers.len();
                        reqs.push(r);
                    }
                    Err(_) => break,
                }
            }
            let svc = self.clone();
            tokio::spawn(async move {
                let (parts, replies): (Vec<_>, Vec<_>) = reqs.into_iter().map(|r| (r.transfers, r.reply)).unzip();
                match svc.propose::<Vec<Refused>>(Op::Transfers(parts)).await {
                    Ok(results) => {
                        for (reply, r) in replies.into_iter().zip(results) {
                            let _ = reply.send(Ok(r));
                        }
                    }
                    Err(e) => {
                        for reply in replies {
                            let _ = reply.send(Err(e.clone()));
                        }
                    }
                }
                drop(permit);
            });
        }
    }
}

/// Serialize for replies that may hold u128s (serde_json's `Value` cannot).
pub fn json_bytes<T: Serialize>(v: &T) -> Vec<u8> {
    serde_json::to_vec(v).unwrap_or_default()
}
