//! `/v1/config` over HTTP. Values are sent as their own text; the format comes from
//! `?format=` or the Content-Type (`application/json`, `application/yaml`, `application/toml`).
//!
//! - `GET  /v1/config/ns`                               namespaces (version, content hash)
//! - `PUT  /v1/config/ns/{ns}`                          create, body `{"schema": {…}}` or empty
//! - `GET  /v1/config/ns/{ns}`                          one namespace
//! - `PUT  /v1/config/ns/{ns}/schema`                   set or clear (`{"schema": null}`) the JSON Schema
//! - `GET  /v1/config/ns/{ns}/keys?prefix=`             list
//! - `PUT  /v1/config/ns/{ns}/keys/{key}`               write (`?expected_version=`, `?expected_key_version=`)
//! - `GET  /v1/config/ns/{ns}/keys/{key}?version=`      read (`?consistency=stale` for a local read)
//! - `DELETE /v1/config/ns/{ns}/keys/{key}`
//! - `GET  /v1/config/ns/{ns}/history?since=&limit=`
//! - `POST /v1/config/ns/{ns}/rollback`                 `{"to_version": N}` — as a new version
//! - `POST /v1/config/ns/{ns}/batch`                    `{"ops": [{"op":"put","key","format","value"}, {"op":"delete","key"}]}`
//!   — several keys as one version, all or nothing
//! - `GET  /v1/config/ns/{ns}/watch?since=&timeout_ms=` long-poll; with `Accept: text/event-stream`, SSE
//!   (event id = version; `Last-Event-ID` resumes)
//! - `POST /v1/config/ns/{ns}/rollouts`               a batch as a guarded rollout: `{"ops": […],
//!   "canary_regions": ["eu-west"], "bake_ms": 60000, "max_error_rate": 0.05, "min_requests": 100}`
//! - `GET  /v1/config/ns/{ns}/rollout`                the baking (or last decided) rollout
//! - `POST /v1/config/ns/{ns}/rollout/promote`        promote now (`{"version": N}` optional)
//! - `POST /v1/config/ns/{ns}/rollout/abort`          roll back everywhere now (`{"reason": "…"}`)
//! - `POST /v1/config/health`                         a region's errors and requests since its last report
//! - `GET  /v1/config/local`                          this replica: region, applied index, versions, hashes
//! - `GET  /v1/config/regions`                        every replica compared: in_sync, lagging, divergent, unreachable
//! - `POST /v1/config/local/hashes`                   the content hashes this replica recorded for given versions
//! - `GET  /v1/config/local/snapshot?min_index=`      this replica's state, once at or past that config index
//! - `POST /v1/config/local/corrupt`                  fault injection only: make this replica's content wrong
//!
//! Every write takes the author from `X-Author` (or `?author=`) and a message from `?message=`
//! (or `X-Change-Message`).

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use basalt_runtime::ApiError;
use basalt_runtime::http::extract::{Json, Path, Query};
use futures_util::stream::{self, Stream};
use serde::Deserialize;

use crate::model::{BatchOp, Change, Command, Format, Guard, GuardCommand};
use crate::service::{Backend, ConfigService, Consistency};
use basalt_runtime::transport::Wire;

type Svc = State<Arc<ConfigService>>;
const WATCH_BATCH_MAX: usize = 1000;
const WATCH_WAIT_MAX_MS: u64 = 60_000;

/// The node-to-node route (on the peer listener): a member pushes applied entries to an edge.
pub fn peer_routes(svc: Arc<ConfigService>) -> Router {
    Router::new().route(crate::edge::PUSH_PATH, post(edge_push)).with_state(svc)
}

pub fn routes(svc: Arc<ConfigService>) -> Router {
    Router::new()
        .route("/ns", get(list_namespaces))
        .route("/ns/{ns}", put(create_namespace).get(get_namespace))
        .route("/ns/{ns}/schema", put(set_schema))
        .route("/ns/{ns}/keys", get(list_keys))
        .route("/ns/{ns}/keys/{*key}", put(put_key).get(get_key).delete(delete_key))
        .route("/ns/{ns}/history", get(history))
        .route("/ns/{ns}/rollback", post(rollback))
        .route("/ns/{ns}/batch", post(batch))
        .route("/ns/{ns}/watch", get(watch))
        .route("/ns/{ns}/rollouts", post(start_rollout))
        .route("/ns/{ns}/rollout", get(get_rollout))
        .route("/ns/{ns}/rollout/promote", post(promote_rollout))
        .route("/ns/{ns}/rollout/abort", post(abort_rollout))
        .route("/health", post(report_health))
        .route("/local", get(|State(s): Svc| async move { axum::Json(s.local_view()) }))
        .route("/local/hashes", post(local_hashes))
        .route("/local/snapshot", get(local_snapshot))
        .route("/local/corrupt", post(corrupt))
        .route("/edge/subscribe", post(edge_subscribe))
        .route("/regions", get(|State(s): Svc| async move { s.regions().await.map(axum::Json) }))
        .with_state(svc)
}

use crate::now_ms;

fn header_str(h: &HeaderMap, name: &str) -> Option<String> {
    h.get(name).and_then(|v| v.to_str().ok()).map(str::to_string)
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct WriteParams {
    format: Option<String>,
    expected_version: Option<u64>,
    expected_key_version: Option<u64>,
    author: Option<String>,
    message: Option<String>,
}

impl WriteParams {
    fn author(&self, h: &HeaderMap) -> String {
        self.author.clone().or_else(|| header_str(h, "x-author")).unwrap_or_else(|| "anonymous".into())
    }
    fn message(&self, h: &HeaderMap) -> String {
        self.message.clone().or_else(|| header_str(h, "x-change-message")).unwrap_or_default()
    }
}

fn format_of(param: Option<&str>, h: &HeaderMap) -> Result<Format, ApiError> {
    if let Some(f) = param {
        return f.parse::<Format>().map_err(|e| ApiError::bad_request("invalid_format", e.to_string()));
    }
    let ct = header_str(h, "content-type").unwrap_or_default();
    let ct = ct.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    Ok(match ct.as_str() {
        "application/yaml" | "application/x-yaml" | "text/yaml" | "text/x-yaml" => Format::Yaml,
        "application/toml" | "text/toml" => Format::Toml,
        _ => Format::Json,
    })
}

fn text_of(body: &Bytes) -> Result<String, ApiError> {
    String::from_utf8(body.to_vec()).map_err(|_| ApiError::bad_request("invalid_value", "the value is not UTF-8 text"))
}

async fn list_namespaces(State(s): Svc, Query(p): Query<ReadParams>) -> Result<Response, ApiError> {
    let list = s.read(p.consistency.unwrap_or_default(), |m| Ok(m.namespaces())).await?;
    Ok(axum::Json(serde_json::json!({ "namespaces": list })).into_response())
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct CreateBody {
    schema: Option<serde_json::Value>,
}

async fn create_namespace(
    State(s): Svc,
    Path(ns): Path<String>,
    h: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let b: CreateBody = if body.is_empty() {
        CreateBody::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| ApiError::bad_request("invalid_json", e.to_string()))?
    };
    let author = header_str(&h, "x-author").unwrap_or_else(|| "anonymous".into());
    let schema = b.schema.filter(|v| !v.is_null()).map(|v| v.to_string());
    let change = s.write(Command::CreateNamespace { namespace: ns, schema, author, at_ms: now_ms() }).await?;
    Ok((StatusCode::CREATED, axum::Json(change)).into_response())
}

async fn get_namespace(
    State(s): Svc,
    Path(ns): Path<String>,
    Query(p): Query<ReadParams>,
) -> Result<Response, ApiError> {
    let info = s.read(p.consistency.unwrap_or_default(), |m| m.namespace(&ns)).await?;
    Ok(axum::Json(info).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct SchemaBody {
    schema: Option<serde_json::Value>,
    expected_version: Option<u64>,
    message: Option<String>,
}

async fn set_schema(
    State(s): Svc,
    Path(ns): Path<String>,
    h: HeaderMap,
    Json(b): Json<SchemaBody>,
) -> Result<Response, ApiError> {
    let cmd = Command::SetSchema {
        namespace: ns,
        schema: b.schema.filter(|v| !v.is_null()).map(|v| v.to_string()),
        expected_version: b.expected_version,
        author: header_str(&h, "x-author").unwrap_or_else(|| "anonymous".into()),
        message: b.message.unwrap_or_default(),
        at_ms: now_ms(),
    };
    Ok(axum::Json(s.write(cmd).await?).into_response())
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct ReadParams {
    consistency: Option<Consistency>,
    version: Option<u64>,
    prefix: Option<String>,
}

async fn list_keys(State(s): Svc, Path(ns): Path<String>, Query(p): Query<ReadParams>) -> Result<Response, ApiError> {
    let prefix = p.prefix.clone().unwrap_or_default();
    let (info, (version, items)) = s
        .read(p.consistency.unwrap_or_default(), |m| Ok((m.namespace(&ns)?, m.list_for(&ns, &prefix, &s.region)?)))
        .await?;
    let keys: Vec<serde_json::Value> = items
        .into_iter()
        .map(|(k, v)| serde_json::json!({"key": k, "version": v.version, "format": v.format, "value": v.json}))
        .collect();
    Ok(axum::Json(
        // `version` is what this region serves (behind the newest while a rollout bakes
        // elsewhere); `content_hash` is the newest version's.
        serde_json::json!({"namespace": ns, "version": version, "newest_version": info.version,
            "content_hash": info.content_hash, "keys": keys}),
    )
    .into_response())
}

async fn put_key(
    State(s): Svc,
    Path((ns, key)): Path<(String, String)>,
    Query(p): Query<WriteParams>,
    h: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let cmd = Command::Put {
        namespace: ns,
        key,
        format: format_of(p.format.as_deref(), &h)?,
        text: text_of(&body)?,
        expected_version: p.expected_version,
        expected_key_version: p.expected_key_version,
        author: p.author(&h),
        message: p.message(&h),
        at_ms: now_ms(),
    };
    Ok(axum::Json(s.write(cmd).await?).into_response())
}

async fn get_key(
    State(s): Svc,
    Path((ns, key)): Path<(String, String)>,
    Query(p): Query<ReadParams>,
) -> Result<Response, ApiError> {
    let v = s
        .read(p.consistency.unwrap_or_default(), |m| match p.version {
            Some(at) => m.get_at(&ns, &key, at),
            None => m.get_for(&ns, &key, &s.region),
        })
        .await?;
    Ok(axum::Json(serde_json::json!({
        "namespace": ns, "key": key, "version": v.version, "format": v.format, "value": v.json, "text": v.text,
    }))
    .into_response())
}

async fn delete_key(
    State(s): Svc,
    Path((ns, key)): Path<(String, String)>,
    Query(p): Query<WriteParams>,
    h: HeaderMap,
) -> Result<Response, ApiError> {
    let cmd = Command::Delete {
        namespace: ns,
        key,
        expected_version: p.expected_version,
        author: p.author(&h),
        message: p.message(&h),
        at_ms: now_ms(),
    };
    Ok(axum::Json(s.write(cmd).await?).into_response())
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct HistoryParams {
    since: Option<u64>,
    limit: Option<usize>,
    consistency: Option<Consistency>,
    timeout_ms: Option<u64>,
}

async fn history(State(s): Svc, Path(ns): Path<String>, Query(p): Query<HistoryParams>) -> Result<Response, ApiError> {
    let (since, limit) = (p.since.unwrap_or(0), p.limit.unwrap_or(100).clamp(1, WATCH_BATCH_MAX));
    let changes = s.read(p.consistency.unwrap_or_default(), |m| m.history(&ns, since, limit)).await?;
    Ok(axum::Json(serde_json::json!({ "namespace": ns, "changes": changes })).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RollbackBody {
    to_version: u64,
    expected_version: Option<u64>,
    message: Option<String>,
}

async fn rollback(
    State(s): Svc,
    Path(ns): Path<String>,
    h: HeaderMap,
    Json(b): Json<RollbackBody>,
) -> Result<Response, ApiError> {
    let cmd = Command::Rollback {
        namespace: ns,
        to_version: b.to_version,
        expected_version: b.expected_version,
        author: header_str(&h, "x-author").unwrap_or_else(|| "anonymous".into()),
        message: b.message.unwrap_or_default(),
        at_ms: now_ms(),
    };
    Ok(axum::Json(s.write(cmd).await?).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(tag = "op", rename_all = "lowercase", deny_unknown_fields)]
enum BatchItem {
    Put { key: String, format: Option<String>, value: String },
    Delete { key: String },
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct BatchBody {
    ops: Vec<BatchItem>,
    expected_version: Option<u64>,
    message: Option<String>,
}

fn batch_ops(items: Vec<BatchItem>) -> Result<Vec<BatchOp>, ApiError> {
    items
        .into_iter()
        .map(|item| match item {
            BatchItem::Put { key, format, value } => {
                let format = match format {
                    Some(f) => {
                        f.parse::<Format>().map_err(|e| ApiError::bad_request("invalid_format", e.to_string()))?
                    }
                    None => Format::Json,
                };
                Ok(BatchOp::Put { key, format, text: value })
            }
            BatchItem::Delete { key } => Ok(BatchOp::Delete { key }),
        })
        .collect()
}

async fn batch(
    State(s): Svc,
    Path(ns): Path<String>,
    h: HeaderMap,
    Json(b): Json<BatchBody>,
) -> Result<Response, ApiError> {
    let cmd = Command::Batch {
        namespace: ns,
        ops: batch_ops(b.ops)?,
        expected_version: b.expected_version,
        author: header_str(&h, "x-author").unwrap_or_else(|| "anonymous".into()),
        message: b.message.unwrap_or_default(),
        at_ms: now_ms(),
    };
    Ok(axum::Json(s.write(cmd).await?).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RolloutBody {
    ops: Vec<BatchItem>,
    canary_regions: Vec<String>,
    bake_ms: u64,
    /// 0.0-1.0: a canary region whose error rate exceeds it fails the rollout.
    max_error_rate: f64,
    #[serde(default = "one")]
    min_requests: u64,
    expected_version: Option<u64>,
    message: Option<String>,
}

fn one() -> u64 {
    1
}

async fn start_rollout(
    State(s): Svc,
    Path(ns): Path<String>,
    h: HeaderMap,
    Json(b): Json<RolloutBody>,
) -> Result<Response, ApiError> {
    if !(0.0..=1.0).contains(&b.max_error_rate) {
        return Err(ApiError::bad_request(
            "invalid_rollout",
            "invalid rollout: max_error_rate must be between 0 and 1",
        ));
    }
    let guard = Guard {
        canary_regions: b.canary_regions,
        bake_ms: b.bake_ms,
        max_error_ppm: (b.max_error_rate * 1_000_000.0).round() as u64,
        min_requests: b.min_requests,
    };
    let cmd = Command::StartRollout {
        namespace: ns,
        ops: batch_ops(b.ops)?,
        guard,
        expected_version: b.expected_version,
        author: header_str(&h, "x-author").unwrap_or_else(|| "anonymous".into()),
        message: b.message.unwrap_or_default(),
        at_ms: now_ms(),
    };
    Ok((StatusCode::CREATED, axum::Json(s.write(cmd).await?)).into_response())
}

async fn get_rollout(State(s): Svc, Path(ns): Path<String>, Query(p): Query<ReadParams>) -> Result<Response, ApiError> {
    let r = s.read(p.consistency.unwrap_or_default(), |m| m.rollout(&ns)).await?;
    let serving_here = r.rollout.serves(&s.region);
    Ok(axum::Json(serde_json::json!({"rollout": r, "region": s.region, "serving_here": serving_here})).into_response())
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct DecisionBody {
    version: Option<u64>,
    reason: Option<String>,
}

fn decision_body(body: &Bytes) -> Result<DecisionBody, ApiError> {
    if body.is_empty() {
        return Ok(DecisionBody::default());
    }
    serde_json::from_slice(body).map_err(|e| ApiError::bad_request("invalid_json", e.to_string()))
}

async fn promote_rollout(
    State(s): Svc,
    Path(ns): Path<String>,
    h: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let b = decision_body(&body)?;
    let author = header_str(&h, "x-author").unwrap_or_else(|| "anonymous".into());
    let cmd = GuardCommand::Promote { namespace: ns, version: b.version, force: true, author, at_ms: now_ms() };
    Ok(axum::Json(serde_json::json!({ "rollouts": s.guard(cmd).await? })).into_response())
}

async fn abort_rollout(State(s): Svc, Path(ns): Path<String>, h: HeaderMap, body: Bytes) -> Result<Response, ApiError> {
    let b = decision_body(&body)?;
    let author = header_str(&h, "x-author").unwrap_or_else(|| "anonymous".into());
    let reason = b.reason.unwrap_or_default();
    let cmd = GuardCommand::Abort { namespace: ns, version: b.version, author, reason, at_ms: now_ms() };
    Ok(axum::Json(serde_json::json!({ "rollouts": s.guard(cmd).await? })).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct HealthBody {
    /// Defaults to this node's region.
    region: Option<String>,
    namespace: Option<String>,
    errors: u64,
    requests: u64,
}

/// A region's errors and requests since its last report; judged against baking rollouts. An
/// edge replica relays it to its member.
async fn report_health(State(s): Svc, Json(b): Json<HealthBody>) -> Result<Response, ApiError> {
    if let Backend::Edge(e) = &s.backend {
        let body = serde_json::json!({"region": b.region.unwrap_or_else(|| s.region.clone()),
            "namespace": b.namespace, "errors": b.errors, "requests": b.requests});
        let r = basalt_runtime::reqwest::Client::new()
            .post(format!("http://{}/v1/config/health", e.target()))
            .json(&body)
            .timeout(Duration::from_secs(5))
            .send()
            .await
            .map_err(|err| ApiError::unavailable("member_unreachable", format!("relaying to {}: {err}", e.target())))?;
        let status = StatusCode::from_u16(r.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
        let bytes = r.bytes().await.map_err(|err| ApiError::unavailable("member_unreachable", err.to_string()))?;
        return Ok((status, [(axum::http::header::CONTENT_TYPE, "application/json")], bytes).into_response());
    }
    let cmd = GuardCommand::ReportHealth {
        region: b.region.unwrap_or_else(|| s.region.clone()),
        namespace: b.namespace,
        errors: b.errors,
        requests: b.requests,
        at_ms: now_ms(),
    };
    Ok(axum::Json(serde_json::json!({ "rollouts": s.guard(cmd).await? })).into_response())
}

async fn local_hashes(
    State(s): Svc,
    Json(ask): Json<crate::repair::HashesAsk>,
) -> axum::Json<crate::repair::HashesReply> {
    let hashes = s.sm.read(|m| ask.versions.iter().map(|(ns, v)| (ns.clone(), m.recorded_hash(ns, *v))).collect());
    axum::Json(crate::repair::HashesReply { hashes })
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct SnapshotParams {
    min_index: Option<u64>,
}

async fn local_snapshot(State(s): Svc, Query(p): Query<SnapshotParams>) -> Result<Response, ApiError> {
    let (index, snap) = s.snapshot_after(p.min_index.unwrap_or(0), Duration::from_secs(2)).await?;
    let snapshot = Some(String::from_utf8_lossy(&snap).into_owned());
    Ok(axum::Json(crate::edge::Subscribed { index, snapshot }).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CorruptBody {
    namespace: String,
    key: String,
    value: serde_json::Value,
    /// Hold this replica's repairs back for a while, so the divergence can be observed.
    #[serde(default)]
    pause_repair_ms: u64,
}

/// Fault injection: overwrite a key in this replica only (no version, no log entry).
async fn corrupt(State(s): Svc, Json(b): Json<CorruptBody>) -> Result<Response, ApiError> {
    if !s.fault_injection {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "fault_injection_disabled",
            "this node was not started with fault_injection = true",
        ));
    }
    s.repairs.pause(Duration::from_millis(b.pause_repair_ms));
    s.sm.corrupt(&b.namespace, &b.key, b.value).map_err(crate::service::api_err)?;
    Ok(axum::Json(s.local_view()).into_response())
}

/// A member registers an edge replica and answers with where it stands (and a snapshot).
async fn edge_subscribe(State(s): Svc, Json(b): Json<crate::edge::Subscribe>) -> Result<Response, ApiError> {
    match &s.backend {
        Backend::Cluster { edges, .. } => Ok(axum::Json(edges.subscribe(&s.sm, b)).into_response()),
        Backend::Edge(e) => Err(ApiError::new(
            StatusCode::MISDIRECTED_REQUEST,
            "not_a_member",
            format!("this node is itself an edge replica; subscribe to {}", e.target()),
        )),
    }
}

/// A member pushes one applied config command to this edge replica.
async fn edge_push(State(s): Svc, Wire(p): Wire<crate::edge::Push>) -> Result<Response, ApiError> {
    match &s.backend {
        Backend::Edge(e) => {
            e.receive(p);
            Ok(Wire(()).into_response())
        }
        Backend::Cluster { .. } => Err(ApiError::new(
            StatusCode::MISDIRECTED_REQUEST,
            "not_an_edge",
            "this node is a Raft member, not an edge replica",
        )),
    }
}

/// Long-poll (JSON) or SSE. Both read this node's applied history, which has every version in
/// order, so a watcher that resumes from its last version — on this node or another — sees
/// no gap and no duplicate.
async fn watch(
    State(s): Svc,
    Path(ns): Path<String>,
    Query(p): Query<HistoryParams>,
    h: HeaderMap,
) -> Result<Response, ApiError> {
    let last_event = header_str(&h, "last-event-id").and_then(|v| v.parse::<u64>().ok());
    let since = last_event.or(p.since).unwrap_or(0);
    // Fail fast on an unknown namespace or a compacted version.
    s.read(Consistency::Stale, |m| m.history(&ns, since, 1)).await?;
    let sse = header_str(&h, "accept").is_some_and(|a| a.contains("text/event-stream"));
    if sse {
        return Ok(Sse::new(sse_stream(s, ns, since)).keep_alive(KeepAlive::default()).into_response());
    }
    let wait = Duration::from_millis(p.timeout_ms.unwrap_or(30_000).min(WATCH_WAIT_MAX_MS));
    let limit = p.limit.unwrap_or(100).clamp(1, WATCH_BATCH_MAX);
    let changes = s.changes_after(&ns, since, limit, wait).await?;
    let next = changes.last().map_or(since, |c| c.version);
    Ok(axum::Json(serde_json::json!({ "namespace": ns, "changes": changes, "next_since": next })).into_response())
}

fn sse_stream(s: Arc<ConfigService>, ns: String, since: u64) -> impl Stream<Item = Result<Event, Infallible>> {
    struct St {
        s: Arc<ConfigService>,
        ns: String,
        since: u64,
        pending: std::collections::VecDeque<Change>,
        done: bool,
    }
    let st = St { s, ns, since, pending: Default::default(), done: false };
    stream::unfold(st, |mut st| async move {
        loop {
            if st.done {
                return None;
            }
            if let Some(c) = st.pending.pop_front() {
                st.since = c.version;
                let ev = Event::default().id(c.version.to_string()).event("change").json_data(&c);
                let ev = ev.unwrap_or_else(|e| Event::default().event("error").data(e.to_string()));
                return Some((Ok(ev), st));
            }
            match st.s.changes_after(&st.ns, st.since, WATCH_BATCH_MAX, Duration::from_secs(15)).await {
                Ok(changes) => st.pending.extend(changes),
                Err(e) => {
                    // Report and end: the client reconnects with Last-Event-ID.
                    st.done = true;
                    return Some((Ok(Event::default().event("error").data(e.body_json())), st));
                }
            }
        }
    })
}
