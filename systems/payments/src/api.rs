//! HTTP. At the node root, Stripe's paths (form-encoded or JSON bodies, `Idempotency-Key`):
//!
//! - `POST /v1/payment_intents` · `GET /v1/payment_intents` · `GET|POST /v1/payment_intents/{id}`
//! - `POST /v1/payment_intents/{id}/confirm` · `…/capture` · `…/cancel`
//! - `POST /v1/refunds` · `GET /v1/refunds/{id}`
//!
//! Under `/v1/payments`:
//!
//! - `POST /ledger/accounts` (a JSON array of accounts) · `POST /ledger/transfers` (a JSON array:
//!   one batch, linked chains inside it; answers one result per transfer)
//! - `GET /ledger/accounts/{id}` (`?at=` a ledger timestamp: balances then) ·
//!   `GET /ledger/accounts/{id}/transfers?limit=&after=` · `GET /ledger/transfers/{id}`
//! - `PUT|GET /webhook_endpoints` `{"urls": […]}` · `GET /events?after=&limit=`
//! - `POST /provider/webhooks` (the provider's events) · `POST /reconcile?repair=true` ·
//!   `GET /audit`

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use basalt_ledger_core::{CancellationReason, CaptureMethod, NewAccount, NewTransfer, QUERY_LIMIT_MAX, StoredResponse};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::model::{Action, CreateArgs, IdemKey, is_reserved, parse_intent_id};
use crate::params::Params;
use crate::provider::ProviderRecord;
use crate::service::{PaymentsService, json_bytes};
use crate::stripe::{self, StripeError};

type Svc = State<Arc<PaymentsService>>;

impl IntoResponse for StripeError {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.status).unwrap_or(StatusCode::BAD_REQUEST);
        (status, [(header::CONTENT_TYPE, "application/json")], self.body().to_string()).into_response()
    }
}

fn json_response(status: u16, body: Vec<u8>) -> Response {
    let status = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

fn stored(r: StoredResponse, replayed: bool, key: Option<&str>) -> Response {
    let mut resp = json_response(r.status, r.body.into_bytes());
    if replayed {
        resp.headers_mut().insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    if let Some(k) = key.and_then(|k| HeaderValue::from_str(k).ok()) {
        resp.headers_mut().insert("idempotency-key", k);
    }
    resp
}

pub fn stripe_routes(svc: Arc<PaymentsService>) -> Router {
    Router::new()
        .route("/v1/payment_intents", post(create_intent).get(list_intents))
        .route("/v1/payment_intents/{id}", get(get_intent).post(update_intent))
        .route("/v1/payment_intents/{id}/confirm", post(confirm))
        .route("/v1/payment_intents/{id}/capture", post(capture))
        .route("/v1/payment_intents/{id}/cancel", post(cancel))
        .route("/v1/refunds", post(create_refund))
        .route("/v1/refunds/{id}", get(get_refund))
        .with_state(svc)
}

pub fn routes(svc: Arc<PaymentsService>) -> Router {
    Router::new()
        .route("/ledger/accounts", post(create_accounts))
        .route("/ledger/accounts/{id}", get(get_account))
        .route("/ledger/accounts/{id}/transfers", get(account_transfers))
        .route("/ledger/transfers", post(create_transfers))
        .route("/ledger/transfers/{id}", get(get_transfer))
        .route("/webhook_endpoints", get(get_endpoints).put(put_endpoints))
        .route("/events", get(events))
        .route("/provider/webhooks", post(provider_webhook))
        .route("/reconcile", post(reconcile))
        .route("/audit", get(audit))
        .with_state(svc)
}

// ---------------------------------------------------------------------------------------------
// Stripe-shaped requests.

/// Scope of idempotency keys: the API key (`Authorization: Bearer sk_…`), as Stripe's keys
/// are per account.
fn scope(h: &HeaderMap) -> String {
    h.get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
        .map(|k| k.trim().chars().take(255).collect::<String>())
        .filter(|k| !k.is_empty())
        .unwrap_or_else(|| "anonymous".to_owned())
}

/// Parse, validate (refusals here are never stored), then run as one idempotent request.
async fn stripe_post(
    s: Arc<PaymentsService>,
    h: HeaderMap,
    uri: Uri,
    body: Bytes,
    build: impl FnOnce(&mut Params) -> Result<Action, StripeError>,
) -> Response {
    let content_type = h.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok());
    let mut params = match Params::parse(content_type, &body) {
        Ok(p) => p,
        Err(e) => return e.into_response(),
    };
    let fingerprint = params.fingerprint("POST", uri.path());
    let action = match build(&mut params).and_then(|a| params.finish().map(|()| a)) {
        Ok(a) => a,
        Err(e) => return e.into_response(),
    };
    let key = h.get("idempotency-key").and_then(|v| v.to_str().ok()).map(str::to_owned);
    let idem = key.clone().map(|key| IdemKey { scope: scope(&h), key, fingerprint });
    match s.intent_request(idem, action).await {
        Ok((r, replayed)) => stored(r, replayed, key.as_deref()),
        Err(e) => e.into_response(),
    }
}

fn capture_method(p: &mut Params) -> Result<CaptureMethod, StripeError> {
    match p.take_str("capture_method").as_deref() {
        None | Some("automatic") | Some("automatic_async") => Ok(CaptureMethod::Automatic),
        Some("manual") => Ok(CaptureMethod::Manual),
        Some(other) => Err(StripeError::invalid_request(
            400,
            "parameter_invalid",
            format!("Invalid capture_method: must be one of automatic, automatic_async or manual (got {other})"),
            Some("capture_method"),
        )),
    }
}

fn cancellation_reason(p: &mut Params) -> Result<Option<CancellationReason>, StripeError> {
    match p.take_str("cancellation_reason").as_deref() {
        None => Ok(None),
        Some("requested_by_customer") => Ok(Some(CancellationReason::RequestedByCustomer)),
        Some("duplicate") => Ok(Some(CancellationReason::Duplicate)),
        Some("fraudulent") => Ok(Some(CancellationReason::Fraudulent)),
        Some("abandoned") => Ok(Some(CancellationReason::Abandoned)),
        Some(other) => Err(StripeError::invalid_request(
            400,
            "parameter_invalid",
            format!("Invalid cancellation_reason: {other}"),
            Some("cancellation_reason"),
        )),
    }
}

async fn create_intent(State(s): Svc, h: HeaderMap, uri: Uri, body: Bytes) -> Response {
    stripe_post(s, h, uri, body, |p| {
        let amount = p.require_u64("amount")?;
        let currency = p.require_str("currency")?;
        Ok(Action::Create(CreateArgs {
            amount,
            currency,
            capture_method: capture_method(p)?,
            payment_method: p.take_str("payment_method"),
            confirm: p.take_bool("confirm")?.unwrap_or(false),
            metadata: p.take_metadata()?,
            description: p.take_str("description"),
        }))
    })
    .await
}

async fn update_intent(State(s): Svc, Path(id): Path<String>, h: HeaderMap, uri: Uri, body: Bytes) -> Response {
    stripe_post(s, h, uri, body, |p| {
        Ok(Action::Update {
            amount: p.take_u64("amount")?,
            payment_method: p.take_str("payment_method"),
            metadata: p.take_metadata()?,
            description: p.take_str("description"),
            id,
        })
    })
    .await
}

async fn confirm(State(s): Svc, Path(id): Path<String>, h: HeaderMap, uri: Uri, body: Bytes) -> Response {
    stripe_post(s, h, uri, body, |p| Ok(Action::Confirm { payment_method: p.take_str("payment_method"), id })).await
}

async fn capture(State(s): Svc, Path(id): Path<String>, h: HeaderMap, uri: Uri, body: Bytes) -> Response {
    stripe_post(s, h, uri, body, |p| Ok(Action::Capture { amount_to_capture: p.take_u64("amount_to_capture")?, id }))
        .await
}

async fn cancel(State(s): Svc, Path(id): Path<String>, h: HeaderMap, uri: Uri, body: Bytes) -> Response {
    stripe_post(s, h, uri, body, |p| Ok(Action::Cancel { reason: cancellation_reason(p)?, id })).await
}

async fn create_refund(State(s): Svc, h: HeaderMap, uri: Uri, body: Bytes) -> Response {
    stripe_post(s, h, uri, body, |p| {
        let payment_intent = match (p.take_str("payment_intent"), p.take_str("charge")) {
            (Some(pi), _) => pi,
            (None, Some(ch)) => {
                // `ch_<seq><attempt>` → the intent with that sequence number.
                let seq = ch
                    .strip_prefix("ch_")
                    .filter(|h| h.len() == 16)
                    .and_then(|h| u64::from_str_radix(&h[..12], 16).ok());
                seq.map(crate::model::intent_id).ok_or_else(|| StripeError::not_found("charge", &ch, "charge"))?
            }
            (None, None) => return Err(StripeError::missing("payment_intent")),
        };
        Ok(Action::Refund { payment_intent, amount: p.take_u64("amount")?, metadata: p.take_metadata()? })
    })
    .await
}

async fn get_intent(State(s): Svc, Path(id): Path<String>) -> Response {
    match s.read(|m| m.intent(&id).map(stripe::intent_json)).await {
        Ok(Some(v)) => json_response(200, v.to_string().into_bytes()),
        Ok(None) => StripeError::not_found("payment_intent", &id, "intent").into_response(),
        Err(e) => e.into_response(),
    }
}

async fn list_intents(State(s): Svc, RawQuery(q): RawQuery) -> Response {
    let mut p = Params::from_query(q.as_deref());
    let limit = match p.take_u64("limit") {
        Ok(l) => l.unwrap_or(10).clamp(1, 100) as usize,
        Err(e) => return e.into_response(),
    };
    let after = p.take_str("starting_after").and_then(|id| parse_intent_id(&id));
    let r = s
        .read(|m| {
            // Newest first, as Stripe lists.
            let items: Vec<Value> = m
                .intents()
                .rev()
                .filter(|r| after.is_none_or(|a| r.seq < a))
                .take(limit + 1)
                .map(stripe::intent_json)
                .collect();
            items
        })
        .await;
    match r {
        Ok(mut items) => {
            let has_more = items.len() > limit;
            items.truncate(limit);
            let body = json!({"object": "list", "url": "/v1/payment_intents", "has_more": has_more, "data": items});
            json_response(200, body.to_string().into_bytes())
        }
        Err(e) => e.into_response(),
    }
}

async fn get_refund(State(s): Svc, Path(id): Path<String>) -> Response {
    let Some((seq, n)) = stripe::parse_refund_id(&id) else {
        return StripeError::not_found("refund", &id, "id").into_response();
    };
    let r = s.read(|m| {
        m.intent_by_seq(seq).filter(|r| (n as usize) < r.intent.refunds.len()).map(|r| stripe::refund_json(r, n))
    });
    match r.await {
        Ok(Some(v)) => json_response(200, v.to_string().into_bytes()),
        Ok(None) => StripeError::not_found("refund", &id, "id").into_response(),
        Err(e) => e.into_response(),
    }
}

// ---------------------------------------------------------------------------------------------
// The ledger.

fn bad(code: &str, message: impl Into<String>) -> Response {
    StripeError::invalid_request(400, code, message, None).into_response()
}

#[derive(Serialize)]
struct ItemResult<'a> {
    index: usize,
    id: u128,
    result: &'a str,
}

async fn create_accounts(State(s): Svc, body: Bytes) -> Response {
    let accounts: Vec<NewAccount> = match serde_json::from_slice(&body) {
        Ok(a) => a,
        Err(e) => return bad("invalid_accounts", format!("expected a JSON array of accounts: {e}")),
    };
    if accounts.is_empty() || accounts.len() > s.settings.ledger_batch_max {
        return bad("invalid_batch_size", format!("send 1 to {} accounts", s.settings.ledger_batch_max));
    }
    match s.propose::<Vec<String>>(crate::model::Op::CreateAccounts(accounts.clone())).await {
        Ok(results) => {
            let out: Vec<ItemResult> = accounts
                .iter()
                .zip(&results)
                .enumerate()
                .map(|(index, (a, r))| ItemResult { index, id: a.id, result: r })
                .collect();
            json_response(200, json_bytes(&out))
        }
        Err(e) => e.into_response(),
    }
}

async fn create_transfers(State(s): Svc, body: Bytes) -> Response {
    let transfers: Vec<NewTransfer> = match serde_json::from_slice(&body) {
        Ok(t) => t,
        Err(e) => return bad("invalid_transfers", format!("expected a JSON array of transfers: {e}")),
    };
    if transfers.is_empty() || transfers.len() > s.settings.ledger_batch_max {
        return bad("invalid_batch_size", format!("send 1 to {} transfers", s.settings.ledger_batch_max));
    }
    if let Some(t) = transfers
        .iter()
        .find(|t| is_reserved(t.id) || is_reserved(t.debit_account_id) || is_reserved(t.credit_account_id))
    {
        return bad(
            "id_reserved",
            format!("transfer {}: ids with the top 16 bits set are reserved for payment intents", t.id),
        );
    }
    let ids: Vec<u128> = transfers.iter().map(|t| t.id).collect();
    match s.transfers(transfers).await {
        Ok(refused) => {
            let mut results = vec!["ok"; ids.len()];
            for (index, code) in &refused {
                if let Some(r) = results.get_mut(*index as usize) {
                    *r = code;
                }
            }
            let out: Vec<ItemResult> = ids
                .iter()
                .zip(results)
                .enumerate()
                .map(|(index, (id, result))| ItemResult { index, id: *id, result })
                .collect();
            json_response(200, json_bytes(&out))
        }
        Err(e) => e.into_response(),
    }
}

fn parse_u128(what: &str, s: &str) -> Result<u128, Box<Response>> {
    s.parse().map_err(|_| Box::new(bad("invalid_id", format!("{what} id must be an integer below 2^128, not {s:?}"))))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AtQuery {
    at: Option<u64>,
}

async fn get_account(
    State(s): Svc,
    Path(id): Path<String>,
    q: basalt_runtime::http::extract::Query<AtQuery>,
) -> Response {
    let id = match parse_u128("account", &id) {
        Ok(id) => id,
        Err(r) => return *r,
    };
    let at = q.0.at;
    let r = s
        .read(|m| {
            let a = m.ledger().account(id)?;
            match at.map(|at| m.ledger().balance_at(id, at)).transpose() {
                Ok(balances_at) => Some(Ok(json_bytes(&AccountOut { account: a, balances_at }))),
                Err(e) => Some(Err(bad(e.code(), e.to_string()))),
            }
        })
        .await;
    match r {
        Ok(Some(Ok(b))) => json_response(200, b),
        Ok(Some(Err(resp))) => resp,
        Ok(None) => StripeError::not_found("account", &id.to_string(), "id").into_response(),
        Err(e) => e.into_response(),
    }
}

/// An account, with its balances at `?at=` when asked.
#[derive(Serialize)]
struct AccountOut<'a> {
    #[serde(flatten)]
    account: &'a basalt_ledger_core::Account,
    #[serde(skip_serializing_if = "Option::is_none")]
    balances_at: Option<basalt_ledger_core::Balances>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PageQuery {
    limit: Option<usize>,
    after: Option<u64>,
}

async fn account_transfers(
    State(s): Svc,
    Path(id): Path<String>,
    q: basalt_runtime::http::extract::Query<PageQuery>,
) -> Response {
    let id = match parse_u128("account", &id) {
        Ok(id) => id,
        Err(r) => return *r,
    };
    let limit = q.0.limit.unwrap_or(100).clamp(1, QUERY_LIMIT_MAX);
    let after = q.0.after;
    let r = s
        .read(|m| {
            m.ledger().account(id)?;
            Some(json_bytes(&m.ledger().transfers_of(id, limit, after)))
        })
        .await;
    match r {
        Ok(Some(b)) => json_response(200, b),
        Ok(None) => StripeError::not_found("account", &id.to_string(), "id").into_response(),
        Err(e) => e.into_response(),
    }
}

async fn get_transfer(State(s): Svc, Path(id): Path<String>) -> Response {
    let id = match parse_u128("transfer", &id) {
        Ok(id) => id,
        Err(r) => return *r,
    };
    match s.read(|m| m.ledger().transfer(id).map(json_bytes)).await {
        Ok(Some(b)) => json_response(200, b),
        Ok(None) => StripeError::not_found("transfer", &id.to_string(), "id").into_response(),
        Err(e) => e.into_response(),
    }
}

// ---------------------------------------------------------------------------------------------
// Webhooks, reconciliation, audit.

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Endpoints {
    urls: Vec<String>,
}

async fn put_endpoints(State(s): Svc, body: Bytes) -> Response {
    let e: Endpoints = match serde_json::from_slice(&body) {
        Ok(e) => e,
        Err(e) => return bad("invalid_endpoints", format!("expected {{\"urls\": [...]}}: {e}")),
    };
    if e.urls.len() > 16
        || e.urls.iter().any(|u| !(u.starts_with("http://") || u.starts_with("https://")) || u.len() > 2048)
    {
        return bad("invalid_endpoints", "at most 16 http(s) URLs");
    }
    match s.propose::<bool>(crate::model::Op::SetEndpoints(e.urls.clone())).await {
        Ok(_) => json_response(200, json!({"urls": e.urls}).to_string().into_bytes()),
        Err(e) => e.into_response(),
    }
}

async fn get_endpoints(State(s): Svc) -> Response {
    match s.read(|m| m.endpoints().to_vec()).await {
        Ok(urls) => json_response(200, json!({"urls": urls}).to_string().into_bytes()),
        Err(e) => e.into_response(),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EventsQuery {
    after: Option<u64>,
    limit: Option<usize>,
}

async fn events(State(s): Svc, q: basalt_runtime::http::extract::Query<EventsQuery>) -> Response {
    let (after, limit) = (q.0.after.unwrap_or(0), q.0.limit.unwrap_or(100).clamp(1, 1000));
    let r = s
        .read(|m| {
            m.events_after(after, limit)
                .into_iter()
                .map(|e| {
                    json!({"seq": e.seq, "id": e.id(), "type": e.kind, "created": e.created_ms / 1000, "delivered": e.delivered,
                        "data": {"object": serde_json::from_str::<Value>(&e.object).unwrap_or(Value::Null)}})
                })
                .collect::<Vec<_>>()
        })
        .await;
    match r {
        Ok(v) => json_response(200, Value::Array(v).to_string().into_bytes()),
        Err(e) => e.into_response(),
    }
}

#[derive(Deserialize)]
struct ProviderEvent {
    data: ProviderRecord,
}

async fn provider_webhook(State(s): Svc, body: Bytes) -> Response {
    let e: ProviderEvent = match serde_json::from_slice(&body) {
        Ok(e) => e,
        Err(e) => return bad("invalid_event", e.to_string()),
    };
    match s.provider_webhook(e.data).await {
        Ok(recorded) => json_response(200, json!({"recorded": recorded}).to_string().into_bytes()),
        Err(e) => e.into_response(),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReconcileQuery {
    repair: Option<bool>,
}

async fn reconcile(State(s): Svc, q: basalt_runtime::http::extract::Query<ReconcileQuery>) -> Response {
    match s.reconcile(q.0.repair.unwrap_or(false)).await {
        Ok(v) => json_response(200, v.to_string().into_bytes()),
        Err(e) => e.into_response(),
    }
}

async fn audit(State(s): Svc) -> Response {
    let r = s
        .read(|m| {
            let mut statuses: BTreeMap<&str, usize> = BTreeMap::new();
            let mut waiters = 0;
            for r in m.intents() {
                *statuses.entry(r.intent.status.as_str()).or_default() += 1;
                waiters += r.waiters.len();
            }
            let violations = m.audit();
            json!({
                "ok": violations.is_empty(),
                "violations": violations,
                "intents": statuses,
                "jobs": m.jobs().count(),
                "waiters": waiters,
                "idempotency_keys": m.idempotency_len(),
                "anomalies": m.anomalies(),
                "ledger_accounts": m.ledger().account_count(),
            })
        })
        .await;
    match r {
        Ok(v) => json_response(200, v.to_string().into_bytes()),
        Err(e) => e.into_response(),
    }
}
