//! `/v1/ratelimit` over HTTP.
//!
//! - `PUT    /v1/ratelimit/rules/{name}`  `{"limiter": {"algorithm": "token_bucket", "capacity": 10,
//!   "refill": 10, "period_ms": 1000}, "shadow": false, "overrides": {"vip": {…}}}`
//! - `GET    /v1/ratelimit/rules` · `GET|DELETE /v1/ratelimit/rules/{name}`
//! - `POST   /v1/ratelimit/check`    `{"rule", "key", "cost": 1}` → 200 allowed / 429 limited, with
//!   `RateLimit-Limit`, `RateLimit-Remaining`, `RateLimit-Reset` (seconds) and `Retry-After`;
//!   or `{"domain": "", "descriptor": [["tenant", "acme"], ["api_key", "k1"]], "cost": 1}`: every
//!   level of the hierarchy a rule limits, answered with `levels` and the binding level's headers
//! - `POST   /v1/ratelimit/release`  `{"rule", "key", "cost": 1}` (concurrency rules)
//! - `POST   /ratelimit/lease` on the peer listener (postcard): an allowance from a key's owner

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use basalt_runtime::ApiError;
use basalt_runtime::http::extract::{Json, Path};
use basalt_runtime::http::rate_limit;
use basalt_runtime::transport::Wire;
use serde::Deserialize;

use crate::rules::{Command, Rule};
use crate::service::{Answer, RateLimitService, binding};

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
    rule: Option<String>,
    key: Option<String>,
    #[serde(default)]
    domain: String,
    descriptor: Option<Vec<(String, String)>>,
    #[serde(default = "one")]
    cost: u64,
}

impl CheckBody {
    /// `(rule, key)`, or what is missing.
    fn rule_key(&self) -> Result<(&str, &str), ApiError> {
        match (&self.rule, &self.key) {
            (Some(r), Some(k)) => Ok((r, k)),
            _ => Err(ApiError::bad_request(
                "invalid_request",
                "give `rule` and `key`, or a `descriptor` ([[\"key\", \"value\"], …])",
            )),
        }
    }
}

fn one() -> u64 {
    1
}

fn respond(a: Answer) -> Response {
    let status = if a.allowed { StatusCode::OK } else { StatusCode::TOO_MANY_REQUESTS };
    let headers = rate_limit::headers(&a.limit());
    let mut resp = (status, axum::Json(a)).into_response();
    resp.headers_mut().extend(headers);
    resp
}

async fn check(State(s): Svc, Json(b): Json<CheckBody>) -> Result<Response, ApiError> {
    let Some(entries) = &b.descriptor else {
        let (rule, key) = b.rule_key()?;
        return Ok(respond(s.check(rule, key, b.cost).await?));
    };
    if b.rule.is_some() || b.key.is_some() {
        return Err(ApiError::bad_request("invalid_request", "give `rule` and `key`, or a `descriptor`, not both"));
    }
    let levels = s.check_descriptor(&b.domain, entries, b.cost, true).await?;
    let bound = binding(&levels);
    let allowed = bound.is_none_or(|l| l.answer.allowed);
    let status = if allowed { StatusCode::OK } else { StatusCode::TOO_MANY_REQUESTS };
    let headers = bound.map(|l| rate_limit::headers(&l.answer.limit())).unwrap_or_default();
    let mut body = serde_json::json!({ "allowed": allowed, "levels": levels });
    if let Some(l) = bound {
        body["binding"] = serde_json::json!(l.rule);
        body["retry_after_ms"] = serde_json::json!(l.answer.retry_after_ms);
    }
    let mut resp = (status, axum::Json(body)).into_response();
    resp.headers_mut().extend(headers);
    Ok(resp)
}

async fn release(State(s): Svc, Json(b): Json<CheckBody>) -> Result<Response, ApiError> {
    let (rule, key) = b.rule_key()?;
    Ok(respond(s.release(rule, key, b.cost)?))
}
