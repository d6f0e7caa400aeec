//! `/v1/ratelimit` over HTTP.
//!
//! - `PUT    /v1/ratelimit/rules/{name}`  `{"limiter": {"algorithm": "token_bucket", "capacity": 10,
//!   "refill": 10, "period_ms": 1000}, "shadow": false, "overrides": {"vip": {…}}}`
//! - `GET    /v1/ratelimit/rules` · `GET|DELETE /v1/ratelimit/rules/{name}`
//! - `POST   /v1/ratelimit/check`    `{"rule", "key", "cost": 1}` → 200 allowed / 429 limited, with
//!   `RateLimit-Limit`, `RateLimit-Remaining`, `RateLimit-Reset` (seconds) and `Retry-After`
//! - `POST   /v1/ratelimit/release`  `{"rule", "key", "cost": 1}` (concurrency rules)
//! - `POST   /ratelimit/lease` on the peer listener (postcard): an allowance from a key's owner

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use basalt_runtime::ApiError;
use basalt_runtime::http::extract::{Json, Path};
use basalt_runtime::transport::Wire;
use serde::Deserialize;

use crate::rules::{Command, Rule};
use crate::service::{Answer, RateLimitService};

type Svc = State<Arc<RateLimitService>>;

pub fn routes(svc: Arc<RateLimitService>) -> Router {
    Router::new()
        .route("/rules", get(|State(s): Svc| async move { axum::Json(serde_json::json!({ "rules": s.rules.all() })) }))
        .route("/rules/{name}", get(get_rule).put(put_rule).delete(delete_rule))
        .route("/check", post(check))
        .route("/release", post(release))
        .with_state(svc)
}

/// The node-to-node route (on the peer listener): an allowance from a key's owner.
pub fn peer_routes(svc: Arc<RateLimitService>) -> Router {
    Router::new()
        .route(
            crate::service::LEASE_PATH,
            post(|State(s): Svc, Wire(req): Wire<crate::service::LeaseReq>| async move { s.lease(&req).map(Wire) }),
        )
        .with_state(svc)
}

async fn get_rule(State(s): Svc, Path(name): Path<String>) -> Result<Response, ApiError> {
    match s.rules.get(&name) {
        Some(r) => Ok(axum::Json(r).into_response()),
        None => Err(ApiError::new(StatusCode::NOT_FOUND, "unknown_rule", format!("no rule `{name}`"))),
    }
}

async fn put_rule(State(s): Svc, Path(name): Path<String>, Json(rule): Json<Rule>) -> Result<Response, ApiError> {
    if !crate::rules::valid_name(&name) {
        return Err(ApiError::bad_request(
            "invalid_rule",
            format!("`{name}` is not a rule name (1-128 of A-Z a-z 0-9 - _ . :)"),
        ));
    }
    rule.validate().map_err(|m| ApiError::bad_request("invalid_rule", m))?;
    Ok(axum::Json(s.change(Command::Put { name, rule }).await?).into_response())
}

async fn delete_rule(State(s): Svc, Path(name): Path<String>) -> Result<Response, ApiError> {
    match s.change(Command::Delete { name: name.clone() }).await? {
        Some(r) => Ok(axum::Json(r).into_response()),
        None => Err(ApiError::new(StatusCode::NOT_FOUND, "unknown_rule", format!("no rule `{name}`"))),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CheckBody {
    rule: String,
    key: String,
    #[serde(default = "one")]
    cost: u64,
}

fn one() -> u64 {
    1
}

fn respond(a: Answer) -> Response {
    let status = if a.allowed { StatusCode::OK } else { StatusCode::TOO_MANY_REQUESTS };
    let mut headers = vec![
        ("ratelimit-limit", a.limit.to_string()),
        ("ratelimit-remaining", a.remaining.to_string()),
        ("ratelimit-reset", a.reset_after_ms.div_ceil(1000).to_string()),
    ];
    if let Some(r) = a.retry_after_ms {
        headers.push(("retry-after", r.div_ceil(1000).max(1).to_string()));
    }
    let mut resp = (status, axum::Json(a)).into_response();
    for (k, v) in headers {
        if let Ok(v) = HeaderValue::from_str(&v) {
            resp.headers_mut().insert(HeaderName::from_static(k), v);
        }
    }
    resp
}

async fn check(State(s): Svc, Json(b): Json<CheckBody>) -> Result<Response, ApiError> {
    Ok(respond(s.check(&b.rule, &b.key, b.cost).await?))
}

async fn release(State(s): Svc, Json(b): Json<CheckBody>) -> Result<Response, ApiError> {
    Ok(respond(s.release(&b.rule, &b.key, b.cost)?))
}
