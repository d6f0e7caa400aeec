//! Payment providers behind one adapter trait, [`Provider`]: every call carries the provider's
//! idempotency key (derived from the intent id and the attempt or refund number), so calling
//! twice — a retry, a query after a lost answer, two nodes racing — never moves money twice.
//!
//! - [`HttpProvider`] talks to a provider over HTTP: the simulated provider process
//!   (`basalt payments-provider`, [`crate::simulator`]) speaks this API.
//! - [`BuiltinProvider`] is the same simulated book in process, without faults: the default
//!   when no `provider_url` is configured, and what the benchmark uses on both sides.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::future::BoxFuture;
use serde::{Deserialize, Serialize};

use crate::simulator::Book;

/// What Basalt asks of a provider. The key is the provider's idempotency key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProviderCall {
    /// The provider's idempotency key, e.g. `pi_…:a0`.
    pub key: String,
    /// The intent the call is for.
    pub intent: String,
    /// What to do.
    pub op: ProviderOp,
}

/// The operations a provider offers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum ProviderOp {
    /// Authorize `amount` on the payment method; with `capture`, capture it at once.
    Charge { amount: u64, currency: String, payment_method: String, capture: bool },
    /// Capture `amount` of the authorization made under `authorization` (its key).
    Capture { authorization: String, amount: u64 },
    /// Void (reverse) what the call under `target` did.
    Void { target: String },
    /// Refund `amount` of the money moved by the call under `charge`.
    Refund { charge: String, amount: u64 },
    /// Cancel the refund made under `refund`, if it has not happened yet.
    CancelRefund { refund: String },
}

/// One record in the provider's book, keyed by idempotency key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProviderRecord {
    pub key: String,
    pub intent: String,
    /// `charge`, `authorize`, `capture`, `refund`.
    pub kind: String,
    pub amount: u64,
    pub currency: String,
    /// `succeeded` (charge, capture, refund), `authorized`, `declined`, `voided`, `failed`,
    /// `canceled`.
    pub status: String,
    pub decline_code: Option<String>,
    /// The record this one acts on (a capture's authorization, a refund's charge).
    pub parent: Option<String>,
    pub created_ms: u64,
}

impl ProviderRecord {
    /// Whether money moved (or is held) for this record now.
    pub fn moved_money(&self) -> bool {
        matches!(self.status.as_str(), "succeeded" | "authorized")
    }
}

/// Why a call got no usable answer.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ProviderError {
    /// No answer in time, or the connection failed: the call may or may not have happened.
    #[error("no answer from the provider: {0}")]
    Unknown(String),
    /// The provider refused the request itself (e.g. a key reused with other parameters).
    #[error("the provider refused the request: {0}")]
    Refused(String),
}

/// A payment provider.
pub trait Provider: Send + Sync + 'static {
    /// Carry out `call` (idempotently by its key); answers the record as the provider holds it.
    fn call(&self, call: &ProviderCall) -> BoxFuture<'static, Result<ProviderRecord, ProviderError>>;
    /// Every record, for reconciliation.
    fn list(&self) -> BoxFuture<'static, Result<Vec<ProviderRecord>, ProviderError>>;
}

/// The simulated provider's book in process: no network, no faults, answers at once.
#[derive(Default)]
pub struct BuiltinProvider {
    book: Arc<Mutex<Book>>,
}

impl Provider for BuiltinProvider {
    fn call(&self, call: &ProviderCall) -> BoxFuture<'static, Result<ProviderRecord, ProviderError>> {
        let r = self.book.lock().unwrap_or_else(|e| e.into_inner()).apply(call, 0).map(|(rec, _)| rec);
        Box::pin(async move { r.map_err(ProviderError::Refused) })
    }

    fn list(&self) -> BoxFuture<'static, Result<Vec<ProviderRecord>, ProviderError>> {
        let all = self.book.lock().unwrap_or_else(|e| e.into_inner()).records();
        Box::pin(async move { Ok(all) })
    }
}

/// A provider over HTTP (the simulated provider's API: `POST /v1/calls`, `GET /v1/records`).
pub struct HttpProvider {
    base: String,
    http: reqwest::Client,
}

impl HttpProvider {
    pub fn new(base: &str, timeout: Duration) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder().timeout(timeout).build()?;
        Ok(Self { base: base.trim_end_matches('/').to_owned(), http })
    }
}

impl Provider for HttpProvider {
    fn call(&self, call: &ProviderCall) -> BoxFuture<'static, Result<ProviderRecord, ProviderError>> {
        let req = self.http.post(format!("{}/v1/calls", self.base)).json(call);
        Box::pin(async move {
            let resp = req.send().await.map_err(|e| ProviderError::Unknown(e.to_string()))?;
            let status = resp.status();
            let text = resp.text().await.map_err(|e| ProviderError::Unknown(e.to_string()))?;
            if status.is_server_error() {
                return Err(ProviderError::Unknown(format!("{status}: {text}")));
            }
            if !status.is_success() {
                return Err(ProviderError::Refused(format!("{status}: {text}")));
            }
            serde_json::from_str(&text).map_err(|e| ProviderError::Unknown(format!("bad answer {text:?}: {e}")))
        })
    }

    fn list(&self) -> BoxFuture<'static, Result<Vec<ProviderRecord>, ProviderError>> {
        let req = self.http.get(format!("{}/v1/records", self.base));
        Box::pin(async move {
            let resp = req.send().await.map_err(|e| ProviderError::Unknown(e.to_string()))?;
            if !resp.status().is_success() {
                return Err(ProviderError::Unknown(format!("listing records: {}", resp.status())));
            }
            resp.json().await.map_err(|e| ProviderError::Unknown(e.to_string()))
        })
    }
}
