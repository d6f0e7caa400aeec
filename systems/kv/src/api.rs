//! `/v1/kv` over HTTP: the store with its versions showing — every sibling, and the causal
//! context to send back with the next write, with R and W per request.
//!
//! - `GET    /v1/kv/keys/{key}?r=`            → `{"key", "siblings": [{"value", "at", "deleted", "expires_at_ms"}], "context"}`
//! - `PUT    /v1/kv/keys/{key}?w=` (body = the value, `X-Context` = a context from a read:
//!   the write replaces exactly the siblings that read saw; without it, it replaces what the
//!   coordinating replica holds)
//! - `DELETE /v1/kv/keys/{key}?w=` (`X-Context` likewise)
//! - `GET    /v1/kv/_local/keys`              the keys this node's replica holds (base64)

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use basalt_ring::dvv::VersionVector;
use basalt_ring_engine::{Obj, Quorum, RingError};
use basalt_runtime::ApiError;
use basalt_runtime::http::extract::{Path, Query};
use base64::Engine;
use serde::Deserialize;

use crate::model::{Data, Entry};
use crate::service::{KvService, decode_entries};

type Svc = State<Arc<KvService>>;
const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

pub fn routes(svc: Arc<KvService>) -> Router {
    Router::new()
        .route("/keys/{*key}", get(read).put(put).delete(delete))
        .route(
            "/_local/keys",
            get(|State(s): Svc| async move {
                let keys = s.local_keys().map_err(|e| ApiError::internal(e.to_string()))?;
                Ok::<_, ApiError>(axum::Json(keys.iter().map(|k| B64.encode(k)).collect::<Vec<_>>()))
            }),
        )
        .with_state(svc)
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct QuorumParams {
    r: Option<usize>,
    w: Option<usize>,
}

fn quorum(s: &KvService, key: &str, p: &QuorumParams) -> Result<Quorum, ApiError> {
    let d = s.quorum(key.as_bytes());
    let q = Quorum { n: d.n, r: p.r.unwrap_or(d.r), w: p.w.unwrap_or(d.w) };
    q.check().map_err(|e| ApiError::bad_request("invalid_quorum", e.to_string()))?;
    Ok(q)
}

fn ring_api(e: RingError) -> ApiError {
    match e {
        RingError::Unavailable { .. } => ApiError::unavailable("unavailable", e.to_string()),
        RingError::BadQuorum(m) => ApiError::bad_request("invalid_quorum", m),
        RingError::Rejected(m) => ApiError::bad_request("rejected", m),
        RingError::Internal(m) => ApiError::internal(m),
    }
}

fn view(key: &str, obj: &Obj) -> serde_json::Value {
    let siblings: Vec<serde_json::Value> = decode_entries(obj)
        .into_iter()
        .map(|e| {
            let value = match &e.data {
                Some(d @ (Data::Str(_) | Data::Counter(_) | Data::Throttle(_))) => {
                    serde_json::Value::String(String::from_utf8_lossy(&d.as_str().unwrap_or_default()).into_owned())
                }
                Some(Data::Hash(h)) => h
                    .iter()
                    .map(|(k, v)| (String::from_utf8_lossy(k).into_owned(), String::from_utf8_lossy(v).into()))
                    .collect::<serde_json::Map<_, _>>()
                    .into(),
                Some(Data::ZSet(z)) => z
                    .iter()
                    .map(|(m, s)| (String::from_utf8_lossy(m).into_owned(), serde_json::json!(s)))
                    .collect::<serde_json::Map<_, _>>()
                    .into(),
                None => serde_json::Value::Null,
            };
            serde_json::json!({"value": value, "deleted": e.data.is_none(), "expires_at_ms": e.expires_at_ms,
                "at": {"wall_ms": e.at.wall_ms, "logical": e.at.logical, "node": e.at.node}})
        })
        .collect();
    let ctx = B64.encode(basalt_ring_engine::replica::encode_vv(obj.context()));
    serde_json::json!({"key": key, "siblings": siblings, "context": ctx})
}

async fn read(State(s): Svc, Path(key): Path<String>, Query(p): Query<QuorumParams>) -> Result<Response, ApiError> {
    if p.w.is_some() {
        return Err(ApiError::bad_request("invalid_quorum", "a read takes r, not w"));
    }
    let q = quorum(&s, &key, &p)?;
    let obj = s.ring.coord.get(key.as_bytes(), q).await.map_err(ring_api)?;
    let status = if obj.is_deleted() { StatusCode::NOT_FOUND } else { StatusCode::OK };
    Ok((status, axum::Json(view(&key, &obj))).into_response())
}

fn context(h: &HeaderMap) -> Result<Option<VersionVector>, ApiError> {
    let Some(v) = h.get("x-context") else { return Ok(None) };
    let bad =
        |m: String| ApiError::bad_request("invalid_context", format!("X-Context is not a context from a read: {m}"));
    let bytes = B64.decode(v.as_bytes()).map_err(|e| bad(e.to_string()))?;
    basalt_ring_engine::replica::decode_vv(&bytes).map(Some).map_err(|e| bad(e.to_string()))
}

async fn write(
    s: &KvService,
    key: &str,
    h: &HeaderMap,
    p: &QuorumParams,
    data: Option<Data>,
) -> Result<Response, ApiError> {
    if p.r.is_some() {
        return Err(ApiError::bad_request("invalid_quorum", "a write takes w, not r"));
    }
    let q = quorum(s, key, p)?;
    let ctx = context(h)?;
    let at = s.stamp();
    let entry = Entry { at, expires_at_ms: None, data };
    let bytes = postcard::to_allocvec(&entry).map_err(|e| ApiError::internal(e.to_string()))?;
    let obj = s.ring.coord.put(key.as_bytes(), ctx, Some(bytes), q).await.map_err(ring_api)?;
    Ok(axum::Json(view(key, &obj)).into_response())
}

async fn put(
    State(s): Svc,
    Path(key): Path<String>,
    Query(p): Query<QuorumParams>,
    h: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    write(&s, &key, &h, &p, Some(Data::Str(body.to_vec()))).await
}

async fn delete(
    State(s): Svc,
    Path(key): Path<String>,
    Query(p): Query<QuorumParams>,
    h: HeaderMap,
) -> Result<Response, ApiError> {
    write(&s, &key, &h, &p, None).await
}
