//! The OpenFeature Remote Evaluation Protocol (OFREP), served at the node's root so that
//! OpenFeature's OFREP providers work unchanged:
//!
//! - `POST /ofrep/v1/evaluate/flags/{key}` `{"context": {"targetingKey": …, …}}` — one flag
//! - `POST /ofrep/v1/evaluate/flags` — every flag of the environment, with `ETag` (the
//!   environment version and the context) and `If-None-Match` → 304
//! - `GET  /ofrep/v1/configuration` — what this server supports
//!
//! The environment comes from the SDK key (`Authorization: Bearer <key>` or `X-API-Key`), or
//! without one from `systems.flags.default_environment`. Evaluations read this node's applied
//! state: no consensus round per evaluation.
//!
//! Answers follow OFREP: 200 with `key`, `value`, `reason`, `variant`, `metadata`; 404
//! `FLAG_NOT_FOUND`; 400 with `errorCode` (`PARSE_ERROR`, `INVALID_CONTEXT`,
//! `TARGETING_KEY_MISSING`, `GENERAL`) and `errorDetails`; 401 for a missing or unknown key.

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use basalt_flags_core::{EvalContext, Evaluation, FlagStore};
use serde_json::{Map, Value, json};

use crate::api::{env_for_key, sdk_key};
use crate::service::FlagsService;

type Svc = State<Arc<FlagsService>>;

pub fn routes(svc: Arc<FlagsService>) -> Router {
    Router::new()
        .route("/ofrep/v1/evaluate/flags/{key}", post(evaluate_one))
        .route("/ofrep/v1/evaluate/flags", post(evaluate_all))
        .route("/ofrep/v1/configuration", get(configuration))
        .with_state(svc)
}

/// An OFREP failure: `{"key"?, "errorCode", "errorDetails"}` with its status.
struct Failure {
    status: StatusCode,
    key: Option<String>,
    code: &'static str,
    details: String,
}

fn failure(status: StatusCode, key: Option<&str>, code: &'static str, details: impl Into<String>) -> Failure {
    Failure { status, key: key.map(str::to_owned), code, details: details.into() }
}

impl IntoResponse for Failure {
    fn into_response(self) -> Response {
        let mut body = json!({"errorCode": self.code, "errorDetails": self.details});
        if let Some(k) = self.key {
            body["key"] = Value::from(k);
        }
        (self.status, axum::Json(body)).into_response()
    }
}

/// The environment's compiled flags for this request, or the OFREP error response.
fn environment(s: &FlagsService, h: &HeaderMap) -> Result<(u64, Arc<FlagStore>), Failure> {
    let (p, e) = if sdk_key(h).is_some() {
        env_for_key(s, h).map_err(|e| failure(e.status, None, "GENERAL", e.message))?
    } else {
        s.default_environment.clone().ok_or_else(|| {
            failure(
                StatusCode::UNAUTHORIZED,
                None,
                "GENERAL",
                "send the environment's SDK key as `Authorization: Bearer <key>` (this node has no default environment)",
            )
        })?
    };
    s.compiled(&p, &e).map_err(|e| failure(e.status, None, "GENERAL", e.message))
}

/// The request's evaluation context: the body's `context` object (OpenFeature's flat form).
fn context(body: &Bytes, key: Option<&str>) -> Result<(EvalContext, Map<String, Value>), Failure> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok((EvalContext::default(), Map::new()));
    }
    let v: Value = serde_json::from_slice(body)
        .map_err(|e| failure(StatusCode::BAD_REQUEST, key, "PARSE_ERROR", format!("the body is not JSON: {e}")))?;
    let ctx = match v {
        Value::Object(mut o) => match o.remove("context") {
            None | Some(Value::Null) => Map::new(),
            Some(Value::Object(c)) => c,
            Some(other) => {
                return Err(failure(
                    StatusCode::BAD_REQUEST,
                    key,
                    "INVALID_CONTEXT",
                    format!("`context` must be an object, not {other}"),
                ));
            }
        },
        _ => return Err(failure(StatusCode::BAD_REQUEST, key, "PARSE_ERROR", "the body must be a JSON object")),
    };
    if let Some(t) = ctx.get("targetingKey")
        && !t.is_string()
    {
        return Err(failure(StatusCode::BAD_REQUEST, key, "INVALID_CONTEXT", "`targetingKey` must be a string"));
    }
    Ok((EvalContext::from_flat(ctx.clone()), ctx))
}

fn success(key: &str, version: u64, ev: Evaluation) -> Value {
    let mut metadata = json!({"environmentVersion": version});
    if let Some(rule) = &ev.rule_id {
        metadata["ruleId"] = Value::from(rule.as_str());
    }
    json!({"key": key, "value": ev.value, "reason": ev.reason.as_str(), "variant": ev.variant, "metadata": metadata})
}

/// One flag's answer: the success body, or (status, error code, details).
fn evaluate(
    store: &FlagStore,
    key: &str,
    ctx: &EvalContext,
    version: u64,
) -> Result<Value, (StatusCode, &'static str, String)> {
    let ev = store.evaluate(key, ctx);
    match ev.error_code {
        None => Ok(success(key, version, ev)),
        Some(code) => {
            let status = if code == basalt_flags_core::ErrorCode::FlagNotFound {
                StatusCode::NOT_FOUND
            } else {
                StatusCode::BAD_REQUEST
            };
            let details = match code {
                basalt_flags_core::ErrorCode::FlagNotFound => {
                    format!("flag `{key}` does not exist in this environment")
                }
                basalt_flags_core::ErrorCode::TargetingKeyMissing => {
                    format!(
                        "flag `{key}` needs a targeting key (or its bucketing attribute) to place the context in a rollout"
                    )
                }
                other => format!("flag `{key}` could not be evaluated: {}", other.as_str()),
            };
            Err((status, code.as_str(), details))
        }
    }
}

async fn evaluate_one(
    State(s): Svc,
    axum::extract::Path(key): axum::extract::Path<String>,
    h: HeaderMap,
    body: Bytes,
) -> Result<Response, Failure> {
    let (ctx, _) = context(&body, Some(&key))?;
    let (version, store) = environment(&s, &h)?;
    match evaluate(&store, &key, &ctx, version) {
        Ok(v) => Ok(axum::Json(v).into_response()),
        Err((status, code, details)) => Err(failure(status, Some(&key), code, details)),
    }
}

async fn evaluate_all(State(s): Svc, h: HeaderMap, body: Bytes) -> Result<Response, Failure> {
    let (ctx, raw) = context(&body, None)?;
    let (version, store) = environment(&s, &h)?;
    // The answer depends on the environment version and the context only.
    let tag = format!(
        "\"{version}-{:016x}\"",
        basalt_flags_core::hash::fingerprint(Value::Object(raw).to_string().as_bytes())
    );
    let mut resp = if h
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == tag))
    {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        let flags: Vec<Value> = store
            .flags()
            .map(|f| match evaluate(&store, f.key(), &ctx, version) {
                Ok(v) => v,
                Err((_, code, details)) => json!({"key": f.key(), "errorCode": code, "errorDetails": details}),
            })
            .collect();
        axum::Json(json!({ "flags": flags })).into_response()
    };
    if let Ok(v) = HeaderValue::from_str(&tag) {
        resp.headers_mut().insert(header::ETAG, v);
    }
    Ok(resp)
}

async fn configuration() -> Response {
    axum::Json(json!({
        "name": "basalt",
        "capabilities": {
            "cacheInvalidation": {"polling": {"enabled": true, "minPollingIntervalMs": 1000}},
            "flagEvaluation": {"supportedTypes": ["boolean", "string", "int", "float", "object"]},
        }
    }))
    .into_response()
}
