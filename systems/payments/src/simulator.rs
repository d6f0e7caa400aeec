//! The simulated payment provider: a book of charges, authorizations, captures and refunds
//! keyed by idempotency key ([`Book`]), and a real HTTP server around it
//! (`basalt payments-provider --addr 127.0.0.1:0 --data FILE`) with faults you can switch on,
//! so that its records survive Basalt's kill -9s and can be compared with the ledger.
//!
//! - `POST /v1/calls` a [`ProviderCall`] → the record (idempotent by key: the same key and
//!   parameters answer the same record; other parameters are refused with 422).
//! - `GET /v1/records`, `GET /v1/records/{key}`.
//! - `POST /faults` `{timeout_after_charge_rate, error_rate, delay_ms, duplicate_webhooks,
//!   reorder_webhooks, timeout_sleep_ms}` (any subset), `GET /faults`.
//! - `POST /webhooks` `{"urls": [...]}`: where to send `charge.*` / `refund.*` events.
//!
//! Faults: `delay_ms` delays every call; `error_rate` answers 500 — half of them before doing
//! anything, half after doing it; `timeout_after_charge_rate` does a *fresh* money-moving call
//! and then answers only after `timeout_sleep_ms` (longer than Basalt's provider timeout, so
//! Basalt sees a timeout after the charge happened); webhooks may be sent twice and out of order.
//!
//! Payment methods: `pm_card_chargeDeclined` (and any id containing `chargeDeclined`) is
//! declined `generic_decline`; one containing `InsufficientFunds` is declined
//! `insufficient_funds`; every other id succeeds.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use crate::provider::{ProviderCall, ProviderOp, ProviderRecord};

/// The provider's records, by idempotency key.
#[derive(Debug, Default)]
pub struct Book {
    records: BTreeMap<String, ProviderRecord>,
}

fn decline_code(payment_method: &str) -> Option<&'static str> {
    if payment_method.contains("InsufficientFunds") {
        Some("insufficient_funds")
    } else if payment_method.contains("chargeDeclined") {
        Some("generic_decline")
    } else {
        None
    }
}

impl Book {
    pub fn records(&self) -> Vec<ProviderRecord> {
        self.records.values().cloned().collect()
    }

    pub fn get(&self, key: &str) -> Option<&ProviderRecord> {
        self.records.get(key)
    }

    /// Load a record as persisted (the last one per key wins).
    pub fn load(&mut self, r: ProviderRecord) {
        self.records.insert(r.key.clone(), r);
    }

    /// Carry out a call: the record it answers with, and the records it changed (to persist
    /// and announce). A refusal (`Err`) changes nothing.
    pub fn apply(&mut self, call: &ProviderCall, now_ms: u64) -> Result<(ProviderRecord, Vec<ProviderRecord>), String> {
        let record = |kind: &str, amount: u64, currency: &str, status: &str, parent: Option<String>| ProviderRecord {
            key: call.key.clone(),
            intent: call.intent.clone(),
            kind: kind.to_owned(),
            amount,
            currency: currency.to_owned(),
            status: status.to_owned(),
            decline_code: None,
            parent,
            created_ms: now_ms,
        };
        match &call.op {
            ProviderOp::Charge { amount, currency, payment_method, capture } => {
                let kind = if *capture { "charge" } else { "authorize" };
                if let Some(r) = self.records.get(&call.key) {
                    // A tombstone left by a void that came first: nothing is charged.
                    let same = (r.kind == kind && r.amount == *amount && r.currency == *currency)
                        || (r.status == "voided" && r.amount == 0);
                    return if same && r.intent == call.intent {
                        Ok((r.clone(), vec![]))
                    } else {
                        Err(mismatch(&call.key))
                    };
                }
                let mut r = record(kind, *amount, currency, if *capture { "succeeded" } else { "authorized" }, None);
                if let Some(code) = decline_code(payment_method) {
                    r.status = "declined".into();
                    r.decline_code = Some(code.into());
                }
                Ok(self.insert(r))
            }
            ProviderOp::Capture { authorization, amount } => {
                if let Some(r) = self.records.get(&call.key) {
                    let same = r.kind == "capture" && r.amount == *amount && r.parent.as_deref() == Some(authorization);
                    return if same { Ok((r.clone(), vec![])) } else { Err(mismatch(&call.key)) };
                }
                let Some(auth) = self.records.get(authorization).cloned() else {
                    return Err(format!("no authorization {authorization}"));
                };
                let mut r = record("capture", *amount, &auth.currency, "succeeded", Some(authorization.clone()));
                if auth.status != "authorized" || *amount > auth.amount {
                    r.status = "declined".into();
                    r.decline_code = Some("authorization_not_capturable".into());
                    return Ok(self.insert(r));
                }
                let mut auth = auth;
                auth.status = "captured".into();
                let (r, mut changed) = self.insert(r);
                self.records.insert(auth.key.clone(), auth.clone());
                changed.push(auth);
                Ok((r, changed))
            }
            ProviderOp::Void { target } => match self.records.get(target).cloned() {
                Some(mut t) if t.moved_money() => {
                    t.status = "voided".into();
                    self.records.insert(t.key.clone(), t.clone());
                    Ok((t.clone(), vec![t]))
                }
                Some(t) => Ok((t, vec![])),
                None => {
                    // The call may still be on its way: leave a tombstone so it charges nothing.
                    let t = ProviderRecord { key: target.clone(), ..record("charge", 0, "", "voided", None) };
                    self.records.insert(t.key.clone(), t.clone());
                    Ok((t.clone(), vec![t]))
                }
            },
            ProviderOp::Refund { charge, amount } => {
                if let Some(r) = self.records.get(&call.key) {
                    let same = r.kind == "refund" && r.amount == *amount && r.parent.as_deref() == Some(charge);
                    return if same { Ok((r.clone(), vec![])) } else { Err(mismatch(&call.key)) };
                }
                let Some(c) = self.records.get(charge).cloned() else { return Err(format!("no charge {charge}")) };
                let refunded: u64 = self
                    .records
                    .values()
                    .filter(|r| r.kind == "refund" && r.parent.as_deref() == Some(charge) && r.status == "succeeded")
                    .map(|r| r.amount)
                    .sum();
                let ok = c.status == "succeeded" && refunded + amount <= c.amount;
                let mut r = record(
                    "refund",
                    *amount,
                    &c.currency,
                    if ok { "succeeded" } else { "failed" },
                    Some(charge.clone()),
                );
                if !ok {
                    r.decline_code = Some("charge_not_refundable".into());
                }
                Ok(self.insert(r))
            }
            ProviderOp::CancelRefund { refund } => match self.records.get(refund).cloned() {
                Some(r) => Ok((r, vec![])),
                None => {
                    let t = ProviderRecord { key: refund.clone(), ..record("refund", 0, "", "canceled", None) };
                    self.records.insert(t.key.clone(), t.clone());
                    Ok((t.clone(), vec![t]))
                }
            },
        }
    }

    fn insert(&mut self, r: ProviderRecord) -> (ProviderRecord, Vec<ProviderRecord>) {
        self.records.insert(r.key.clone(), r.clone());
        (r.clone(), vec![r])
    }
}

fn mismatch(key: &str) -> String {
    format!("idempotency key {key} was used with other parameters")
}

/// The fault switches (`POST /faults`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Faults {
    /// Probability that a fresh money-moving call is done and then answered too late.
    pub timeout_after_charge_rate: f64,
    /// Probability of a 500 (half before doing anything, half after).
    pub error_rate: f64,
    /// Added to every call.
    pub delay_ms: u64,
    /// Send every webhook twice.
    pub duplicate_webhooks: bool,
    /// Shuffle webhooks that are waiting to be sent.
    pub reorder_webhooks: bool,
    /// How late a "timed out" answer comes (default 3000 ms).
    pub timeout_sleep_ms: u64,
}

struct Sim {
    book: Mutex<Book>,
    faults: Mutex<(Faults, SmallRng)>,
    data: Option<Mutex<std::fs::File>>,
    webhook_urls: Mutex<Vec<String>>,
    webhooks: mpsc::UnboundedSender<ProviderRecord>,
    started: std::time::Instant,
    /// Faults injected so far: late answers after a charge, 500s before, 500s after.
    injected: [std::sync::atomic::AtomicU64; 3],
}

impl Sim {
    fn roll(&self, p: f64) -> bool {
        let mut f = self.faults.lock().unwrap_or_else(|e| e.into_inner());
        p > 0.0 && f.1.random::<f64>() < p
    }

    fn count(&self, i: usize) {
        self.injected[i].fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    fn faults(&self) -> Faults {
        self.faults.lock().unwrap_or_else(|e| e.into_inner()).0.clone()
    }

    fn persist(&self, changed: &[ProviderRecord]) {
        let Some(file) = &self.data else { return };
        let mut f = file.lock().unwrap_or_else(|e| e.into_inner());
        for r in changed {
            if let Ok(line) = serde_json::to_string(r) {
                let _ = writeln!(f, "{line}");
            }
        }
        let _ = f.flush();
    }
}

/// Run the simulated provider on `addr` (port 0: any), keeping its records in `data` (JSON
/// lines, reloaded at start). Prints `{"addr": "HOST:PORT"}` on stdout once listening; runs
/// until SIGINT/SIGTERM.
pub async fn serve(addr: &str, data: Option<PathBuf>) -> anyhow::Result<()> {
    let mut book = Book::default();
    let file = match &data {
        Some(path) => {
            if let Ok(text) = std::fs::read_to_string(path) {
                for line in text.lines().filter(|l| !l.trim().is_empty()) {
                    if let Ok(r) = serde_json::from_str::<ProviderRecord>(line) {
                        book.load(r);
                    }
                }
            }
            Some(Mutex::new(std::fs::OpenOptions::new().create(true).append(true).open(path)?))
        }
        None => None,
    };
    let (tx, rx) = mpsc::unbounded_channel();
    let sim = Arc::new(Sim {
        book: Mutex::new(book),
        faults: Mutex::new((Faults::default(), SmallRng::from_os_rng())),
        data: file,
        webhook_urls: Mutex::default(),
        webhooks: tx,
        started: std::time::Instant::now(),
        injected: Default::default(),
    });
    tokio::spawn(send_webhooks(sim.clone(), rx));
    let app = Router::new()
        .route("/v1/calls", post(call))
        .route("/v1/records", get(|State(s): State<Arc<Sim>>| async move { axum::Json(lock(&s.book).records()) }))
        .route("/v1/records/{key}", get(record))
        .route("/faults", get(get_faults).post(set_faults))
        .route("/webhooks", post(set_webhooks))
        .route("/healthz", get(|| async { "ok" }))
        .with_state(sim);
    let listener = tokio::net::TcpListener::bind(addr).await?;
    println!("{}", serde_json::json!({"addr": listener.local_addr()?.to_string()}));
    std::io::stdout().flush()?;
    let shutdown = async {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending().await } } => {}
        }
    };
    axum::serve(listener, app).with_graceful_shutdown(shutdown).await?;
    Ok(())
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

async fn call(State(s): State<Arc<Sim>>, axum::Json(c): axum::Json<ProviderCall>) -> Response {
    let faults = s.faults();
    if faults.delay_ms > 0 {
        tokio::time::sleep(Duration::from_millis(faults.delay_ms)).await;
    }
    if s.roll(faults.error_rate / 2.0) {
        s.count(1);
        return (StatusCode::INTERNAL_SERVER_ERROR, "simulated failure before the call").into_response();
    }
    let now_ms = s.started.elapsed().as_millis() as u64;
    let result = lock(&s.book).apply(&c, now_ms);
    let (record, changed) = match result {
        Ok(r) => r,
        Err(e) => return (StatusCode::UNPROCESSABLE_ENTITY, e).into_response(),
    };
    s.persist(&changed);
    let fresh = changed.iter().any(|r| r.key == c.key);
    for r in changed {
        let _ = s.webhooks.send(r);
    }
    if s.roll(faults.error_rate / 2.0) {
        s.count(2);
        return (StatusCode::INTERNAL_SERVER_ERROR, "simulated failure after the call").into_response();
    }
    let moves_money =
        matches!(c.op, ProviderOp::Charge { .. } | ProviderOp::Capture { .. } | ProviderOp::Refund { .. });
    if fresh && moves_money && s.roll(faults.timeout_after_charge_rate) {
        s.count(0);
        let sleep = if faults.timeout_sleep_ms == 0 { 3_000 } else { faults.timeout_sleep_ms };
        tokio::time::sleep(Duration::from_millis(sleep)).await;
    }
    axum::Json(record).into_response()
}

/// The switches, and how many faults were injected (`timeouts_after_charge`,
/// `errors_before`, `errors_after`).
async fn get_faults(State(s): State<Arc<Sim>>) -> impl IntoResponse {
    let n = |i: usize| s.injected[i].load(std::sync::atomic::Ordering::Relaxed);
    axum::Json(serde_json::json!({"faults": s.faults(), "injected": {
        "timeouts_after_charge": n(0), "errors_before": n(1), "errors_after": n(2)}}))
}

async fn record(State(s): State<Arc<Sim>>, Path(key): Path<String>) -> Response {
    match lock(&s.book).get(&key) {
        Some(r) => axum::Json(r.clone()).into_response(),
        None => (StatusCode::NOT_FOUND, "no such record").into_response(),
    }
}

async fn set_faults(State(s): State<Arc<Sim>>, axum::Json(f): axum::Json<Faults>) -> impl IntoResponse {
    lock(&s.faults).0 = f.clone();
    axum::Json(f)
}

#[derive(Deserialize)]
struct WebhookConfig {
    urls: Vec<String>,
}

async fn set_webhooks(State(s): State<Arc<Sim>>, axum::Json(c): axum::Json<WebhookConfig>) -> impl IntoResponse {
    *lock(&s.webhook_urls) = c.urls.clone();
    axum::Json(serde_json::json!({"urls": c.urls}))
}

/// Sends `charge.<status>` / `refund.<status>` events to every configured URL, best effort
/// (a provider's webhooks are at-least-once at best; Basalt treats them as hints).
async fn send_webhooks(s: Arc<Sim>, mut rx: mpsc::UnboundedReceiver<ProviderRecord>) {
    let http = reqwest::Client::builder().timeout(Duration::from_secs(2)).build().unwrap_or_default();
    let mut rng = SmallRng::from_os_rng();
    let mut seq = 0u64;
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        let faults = s.faults();
        if faults.reorder_webhooks {
            // Let a few more gather, then send them in a shuffled order.
            tokio::time::sleep(Duration::from_millis(20)).await;
            while let Ok(r) = rx.try_recv() {
                batch.push(r);
            }
            for i in (1..batch.len()).rev() {
                batch.swap(i, rng.random_range(0..=i));
            }
        }
        let urls = lock(&s.webhook_urls).clone();
        for r in batch {
            seq += 1;
            let kind = if r.kind == "refund" { "refund" } else { "charge" };
            let event =
                serde_json::json!({"id": format!("evt_sim_{seq}"), "type": format!("{kind}.{}", r.status), "data": r});
            let copies = if faults.duplicate_webhooks { 2 } else { 1 };
            for url in &urls {
                for _ in 0..copies {
                    let _ = http.post(url).json(&event).send().await;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn charge(key: &str, pm: &str, capture: bool) -> ProviderCall {
        ProviderCall {
            key: key.into(),
            intent: "pi_1".into(),
            op: ProviderOp::Charge { amount: 500, currency: "USD".into(), payment_method: pm.into(), capture },
        }
    }

    #[test]
    fn calls_are_idempotent_by_key_and_never_charge_twice() {
        let mut b = Book::default();
        let (r, changed) = b.apply(&charge("pi_1:a0", "pm_card_visa", true), 1).unwrap();
        assert_eq!((r.status.as_str(), changed.len()), ("succeeded", 1));
        let (again, changed) = b.apply(&charge("pi_1:a0", "pm_card_visa", true), 2).unwrap();
        assert_eq!((again, changed.len()), (r, 0));
        let mut other = charge("pi_1:a0", "pm_card_visa", true);
        other.op =
            ProviderOp::Charge { amount: 501, currency: "USD".into(), payment_method: "x".into(), capture: true };
        assert!(b.apply(&other, 3).is_err());
        let (d, _) = b.apply(&charge("pi_1:a1", "pm_card_chargeDeclined", true), 4).unwrap();
        assert_eq!((d.status.as_str(), d.decline_code.as_deref()), ("declined", Some("generic_decline")));
        assert_eq!(b.records().iter().filter(|r| r.moved_money()).count(), 1);
    }

    #[test]
    fn a_void_before_its_charge_leaves_a_tombstone() {
        let mut b = Book::default();
        let void = ProviderCall {
            key: "pi_1:a0:void".into(),
            intent: "pi_1".into(),
            op: ProviderOp::Void { target: "pi_1:a0".into() },
        };
        b.apply(&void, 1).unwrap();
        let (r, _) = b.apply(&charge("pi_1:a0", "pm_card_visa", true), 2).unwrap();
        assert_eq!(r.status, "voided");
        assert!(b.records().iter().all(|r| !r.moved_money()));
    }

    #[test]
    fn capture_and_refund_follow_the_authorization() {
        let mut b = Book::default();
        b.apply(&charge("pi_1:a0", "pm_card_visa", false), 1).unwrap();
        let cap = ProviderCall {
            key: "pi_1:a1".into(),
            intent: "pi_1".into(),
            op: ProviderOp::Capture { authorization: "pi_1:a0".into(), amount: 400 },
        };
        assert_eq!(b.apply(&cap, 2).unwrap().0.status, "succeeded");
        assert_eq!(b.get("pi_1:a0").unwrap().status, "captured");
        let refund = |key: &str, amount| ProviderCall {
            key: key.into(),
            intent: "pi_1".into(),
            op: ProviderOp::Refund { charge: "pi_1:a1".into(), amount },
        };
        assert_eq!(b.apply(&refund("pi_1:r0", 300), 3).unwrap().0.status, "succeeded");
        assert_eq!(b.apply(&refund("pi_1:r1", 300), 4).unwrap().0.status, "failed");
    }
}
