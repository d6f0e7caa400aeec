//! `/v1/ids` over HTTP:
//! - `POST /v1/ids?kind=snowflake|ulid|uuidv7&count=N` → `["…", …]` (1 ≤ N ≤ 100000)
//! - `GET /v1/ids/{id}/decode[?kind=…]` → the fields of the id
//! - `GET /v1/ids/status` → worker leases, reservation, layout

use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use axum::Router;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use basalt_idgen::{Decoded, Kind, format_ulid, format_uuid};
use basalt_runtime::ApiError;
use basalt_runtime::http::extract::{Path, Query};
use serde::Deserialize;

use crate::service::{Batch, COUNT_MAX, IdService};

pub fn routes(svc: Arc<IdService>) -> Router {
    Router::new()
        .route("/", post(issue))
        .route("/status", get(status))
        .route("/{id}/decode", get(decode))
        .with_state(svc)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct IssueParams {
    kind: Option<String>,
    count: Option<String>,
}

fn parse_kind(raw: Option<&str>) -> Result<Option<Kind>, ApiError> {
    raw.map(|k| k.parse::<Kind>().map_err(|e| ApiError::bad_request("invalid_kind", e.to_string()))).transpose()
}

fn parse_count(raw: Option<&str>) -> Result<usize, ApiError> {
    let Some(raw) = raw else { return Ok(1) };
    match raw.parse::<usize>() {
        Ok(n) if (1..=COUNT_MAX).contains(&n) => Ok(n),
        _ => Err(ApiError::bad_request(
            "invalid_count",
            format!("count must be a whole number from 1 to {COUNT_MAX}, not `{raw}`"),
        )),
    }
}

async fn issue(State(svc): State<Arc<IdService>>, Query(p): Query<IssueParams>) -> Result<Response, ApiError> {
    let kind = parse_kind(p.kind.as_deref())?.unwrap_or(Kind::Snowflake);
    let count = parse_count(p.count.as_deref())?;
    let batch = svc.issue(kind, count).await?;
    // Large batches render off the async workers (a 100,000-ID body is a few ms of CPU).
    let body = if count > 4096 {
        tokio::task::spawn_blocking(move || render(&batch)).await.map_err(|e| ApiError::internal(e.to_string()))?
    } else {
        render(&batch)
    };
    Ok(([(header::CONTENT_TYPE, "application/json")], body).into_response())
}

/// `["…","…"]` — the ids are digits, Crockford base32 or hex, so none needs escaping.
fn render(batch: &Batch) -> String {
    use std::fmt::Write;
    fn join<T>(items: &[T], per: usize, f: impl Fn(&mut String, &T)) -> String {
        let mut s = String::with_capacity(2 + items.len() * (per + 3));
        s.push('[');
        for (i, item) in items.iter().enumerate() {
            if i > 0 {
                s.push(',');
            }
            s.push('"');
            f(&mut s, item);
            s.push('"');
        }
        s.push(']');
        s
    }
    match batch {
        Batch::Snowflake(ids) => join(ids, 19, |s, id| {
            let _ = write!(s, "{id}");
        }),
        Batch::Ulid(ids) => join(ids, 26, |s, id| s.push_str(&format_ulid(*id))),
        Batch::UuidV7(ids) => join(ids, 36, |s, id| s.push_str(&format_uuid(*id))),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DecodeParams {
    kind: Option<String>,
}

async fn decode(
    State(svc): State<Arc<IdService>>,
    Path(id): Path<String>,
    Query(p): Query<DecodeParams>,
) -> Result<Response, ApiError> {
    let kind = parse_kind(p.kind.as_deref())?;
    let decoded =
        basalt_idgen::decode(&id, kind, &svc.layout).map_err(|e| ApiError::bad_request("invalid_id", e.to_string()))?;
    let body = match decoded {
        Decoded::Snowflake(p) => serde_json::json!({
            "kind": "snowflake", "id": id, "timestamp_ms": p.timestamp_ms, "timestamp": rfc3339(p.timestamp_ms),
            "worker": p.worker, "sequence": p.sequence,
        }),
        Decoded::Ulid(p) => serde_json::json!({
            "kind": "ulid", "id": id, "timestamp_ms": p.timestamp_ms, "timestamp": rfc3339(p.timestamp_ms),
            "random": format!("{:020x}", p.random),
        }),
        Decoded::UuidV7(p) => serde_json::json!({
            "kind": "uuidv7", "id": id, "timestamp_ms": p.timestamp_ms, "timestamp": rfc3339(p.timestamp_ms),
            "counter": p.counter, "random": p.random,
        }),
    };
    Ok(axum::Json(body).into_response())
}

async fn status(State(svc): State<Arc<IdService>>) -> Response {
    axum::Json(svc.status()).into_response()
}

fn rfc3339(ms: u64) -> String {
    basalt_runtime::clock::format_rfc3339_ms(UNIX_EPOCH + Duration::from_millis(ms))
}
