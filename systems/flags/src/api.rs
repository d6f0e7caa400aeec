//! `/v1/flags` over HTTP: administration, the audit history, and delivery to SDKs.
//!
//! - `GET|POST /v1/flags/projects`                          list; create `{"project", "description"}`
//! - `GET  /v1/flags/projects/{p}`
//! - `POST /v1/flags/projects/{p}/environments`             create `{"environment", "copy_from"?}` (answers its SDK key)
//! - `GET  /v1/flags/projects/{p}/environments/{e}`         version, SDK key, counts
//! - `GET  /v1/flags/projects/{p}/environments/{e}/flags`   every flag
//! - `PUT|GET|DELETE …/{e}/flags/{key}`                     a flag (the body's `key` may be left out)
//! - `POST …/{e}/flags/{key}/enable` · `…/disable`          toggle
//! - `PUT|GET|DELETE …/{e}/segments/{key}`                  a segment
//! - `GET  …/{e}/history?since=&limit=&key=`                the audit history (who, when, field diff)
//! - `POST …/{e}/schedules`                                 `{"run_at_ms" | "run_in_ms", "change": {"action": …}}`
//! - `GET  /v1/flags/schedules` · `DELETE /v1/flags/schedules/{id}` · `GET /v1/flags/schedules/log`
//! - `POST /v1/flags/projects/{p}/flags/{key}/kill`         the kill switch: off in every environment (`{"environments": […]}` to narrow)
//! - `GET  …/{e}/stream` (or `/v1/flags/stream` with the SDK key) Server-Sent Events: a snapshot, then deltas;
//!   `Last-Event-ID` (or `?since=`) resumes without a snapshot when the deltas are still kept
//! - `GET  …/{e}/snapshot` (or `/v1/flags/snapshot` with the SDK key) polling, with `ETag` / `If-None-Match`
//!
//! Writes take the author from `X-Author` and a message from `X-Change-Message`; `?expected_version=`
//! makes a write conditional on the environment's version. Admin reads are linearizable unless
//! `?consistency=stale`. SDK keys travel as `Authorization: Bearer <key>` or `X-API-Key`.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use basalt_flags_core::wire::{EVENT_DELTA, EVENT_SNAPSHOT};
use basalt_flags_core::{Flag, Segment};
use basalt_runtime::ApiError;
use basalt_runtime::http::extract::{Json, Path, Query};
use basalt_runtime::transport::Wire;
use futures_util::stream::{self, Stream};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::model::{Change, Op};
use basalt_consensus::Consistency;

use crate::service::{FlagsService, api_err};

type Svc = State<Arc<FlagsService>>;

pub fn routes(svc: Arc<FlagsService>) -> Router {
    let env = "/projects/{p}/environments/{e}";
    Router::new()
        .route("/projects", get(list_projects).post(create_project))
        .route("/projects/{p}", get(get_project))
        .route("/projects/{p}/environments", post(create_environment))
        .route(env, get(get_environment))
        .route(&format!("{env}/flags"), get(list_flags))
        .route(&format!("{env}/flags/{{key}}"), put(put_flag).get(get_flag).delete(delete_flag))
        .route(
            &format!("{env}/flags/{{key}}/enable"),
            post(|s: Svc, p: Path<(String, String, String)>, q: Query<WriteParams>, h: HeaderMap| {
                toggle(s, p, q, h, true)
            }),
        )
        .route(
            &format!("{env}/flags/{{key}}/disable"),
            post(|s: Svc, p: Path<(String, String, String)>, q: Query<WriteParams>, h: HeaderMap| {
                toggle(s, p, q, h, false)
            }),
        )
        .route(&format!("{env}/segments"), get(list_segments))
        .route(&format!("{env}/segments/{{key}}"), put(put_segment).get(get_segment).delete(delete_segment))
        .route(&format!("{env}/history"), get(history))
        .route(&format!("{env}/schedules"), post(schedule))
        .route(&format!("{env}/stream"), get(stream_env))
        .route(&format!("{env}/snapshot"), get(snapshot_env))
        .route("/projects/{p}/flags/{key}/kill", post(kill))
        .route("/schedules", get(|State(s): Svc| async move { axum::Json(s.sm.read(|m| m.scheduled())) }))
        .route("/schedules/log", get(|State(s): Svc| async move { axum::Json(s.sm.read(|m| m.schedule_log())) }))
        .route("/schedules/{id}", axum::routing::delete(cancel_schedule))
        .route("/stream", get(stream_by_key))
        .route("/snapshot", get(snapshot_by_key))
        .with_state(svc)
}

/// The node-to-node route (on the peer listener): committed deltas pushed by the leader.
pub fn peer_routes(svc: Arc<FlagsService>) -> Router {
    Router::new()
        .route(
            crate::service::PUSH_PATH,
            post(|State(s): Svc, Wire(bytes): Wire<Vec<u8>>| async move {
                let deltas: crate::service::Deltas =
                    serde_json::from_slice(&bytes).map_err(|e| ApiError::bad_request("bad_push", e.to_string()))?;
                s.sm.accept_early(deltas);
                Ok::<_, ApiError>(Wire(()))
            }),
        )
        .with_state(svc)
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct ReadParams {
    #[serde(default)]
    consistency: Consistency,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct WriteParams {
    expected_version: Option<u64>,
}

fn author(h: &HeaderMap) -> (String, String) {
    let get = |name: &str| h.get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
    (get("x-author").unwrap_or_else(|| "anonymous".into()), get("x-change-message").unwrap_or_default())
}

/// Parse a definition with the path of the offending field in the error.
fn parse_definition<T: DeserializeOwned>(what: &str, key: &str, mut body: Value) -> Result<T, ApiError> {
    let Value::Object(obj) = &mut body else {
        return Err(ApiError::bad_request("invalid_definition", format!("a {what} must be a JSON object")));
    };
    match obj.get("key") {
        None => {
            obj.insert("key".into(), Value::from(key));
        }
        Some(Value::String(k)) if k == key => {}
        Some(other) => {
            return Err(ApiError::bad_request(
                "key_mismatch",
                format!("the body's key {other} is not the key in the path, `{key}`"),
            )
            .with_field("key"));
        }
    }
    serde_path_to_error::deserialize::<_, T>(body).map_err(|e| {
        let path = e.path().to_string();
        let err = ApiError::bad_request("invalid_definition", format!("{path}: {}", e.inner()));
        if path == "." { err } else { err.with_field(path) }
    })
}

async fn write<T: DeserializeOwned>(s: &FlagsService, h: &HeaderMap, op: Op) -> Result<T, ApiError> {
    let (author, message) = author(h);
    s.write(author, message, op).await
}

async fn change(
    s: &FlagsService,
    h: &HeaderMap,
    (p, e): (String, String),
    expected_version: Option<u64>,
    change: Change,
) -> Result<axum::Json<Value>, ApiError> {
    change.check().map_err(api_err)?;
    let op = Op::Change { project: p, environment: e, change, expected_version };
    Ok(axum::Json(write(s, h, op).await?))
}

async fn list_projects(State(s): Svc, Query(q): Query<ReadParams>) -> Result<Response, ApiError> {
    Ok(axum::Json(s.read(q.consistency, |m| Ok(m.projects())).await?).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewProject {
    project: String,
    #[serde(default)]
    description: String,
}

async fn create_project(State(s): Svc, h: HeaderMap, Json(b): Json<NewProject>) -> Result<Response, ApiError> {
    let v: Value = write(&s, &h, Op::CreateProject { project: b.project, description: b.description }).await?;
    Ok((StatusCode::CREATED, axum::Json(v)).into_response())
}

async fn get_project(State(s): Svc, Path(p): Path<String>, Query(q): Query<ReadParams>) -> Result<Response, ApiError> {
    Ok(axum::Json(s.read(q.consistency, |m| m.project(&p)).await?).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NewEnvironment {
    environment: String,
    #[serde(default)]
    copy_from: Option<String>,
}

fn new_sdk_key() -> String {
    use rand::{Rng, SeedableRng};
    let mut rng = rand::rngs::StdRng::from_os_rng();
    format!("sdk-{:032x}", rng.random::<u128>())
}

async fn create_environment(
    State(s): Svc,
    Path(p): Path<String>,
    h: HeaderMap,
    Json(b): Json<NewEnvironment>,
) -> Result<Response, ApiError> {
    let op = Op::CreateEnvironment {
        project: p,
        environment: b.environment,
        sdk_key: new_sdk_key(),
        copy_from: b.copy_from,
    };
    let v: Value = write(&s, &h, op).await?;
    Ok((StatusCode::CREATED, axum::Json(v)).into_response())
}

async fn get_environment(
    State(s): Svc,
    Path((p, e)): Path<(String, String)>,
    Query(q): Query<ReadParams>,
) -> Result<Response, ApiError> {
    Ok(axum::Json(s.read(q.consistency, |m| m.environment_view(&p, &e)).await?).into_response())
}

async fn list_flags(
    State(s): Svc,
    Path((p, e)): Path<(String, String)>,
    Query(q): Query<ReadParams>,
) -> Result<Response, ApiError> {
    let flags = s.read(q.consistency, |m| Ok(m.env(&p, &e)?.set().flags.values().cloned().collect::<Vec<_>>())).await?;
    Ok(axum::Json(flags).into_response())
}

async fn get_flag(
    State(s): Svc,
    Path((p, e, key)): Path<(String, String, String)>,
    Query(q): Query<ReadParams>,
) -> Result<Response, ApiError> {
    let flag = s
        .read(q.consistency, |m| {
            m.env(&p, &e)?.set().flags.get(&key).cloned().ok_or(crate::model::FlagsError::FlagNotFound(key.clone()))
        })
        .await?;
    Ok(axum::Json(flag).into_response())
}

async fn put_flag(
    State(s): Svc,
    Path((p, e, key)): Path<(String, String, String)>,
    Query(q): Query<WriteParams>,
    h: HeaderMap,
    Json(body): Json<Value>,
) -> Result<axum::Json<Value>, ApiError> {
    let flag: Flag = parse_definition("flag", &key, body)?;
    change(&s, &h, (p, e), q.expected_version, Change::PutFlag { flag }).await
}

async fn delete_flag(
    State(s): Svc,
    Path((p, e, key)): Path<(String, String, String)>,
    Query(q): Query<WriteParams>,
    h: HeaderMap,
) -> Result<axum::Json<Value>, ApiError> {
    change(&s, &h, (p, e), q.expected_version, Change::DeleteFlag { key }).await
}

async fn toggle(
    State(s): Svc,
    Path((p, e, key)): Path<(String, String, String)>,
    Query(q): Query<WriteParams>,
    h: HeaderMap,
    enabled: bool,
) -> Result<axum::Json<Value>, ApiError> {
    change(&s, &h, (p, e), q.expected_version, Change::SetEnabled { key, enabled }).await
}

async fn list_segments(
    State(s): Svc,
    Path((p, e)): Path<(String, String)>,
    Query(q): Query<ReadParams>,
) -> Result<Response, ApiError> {
    let segs =
        s.read(q.consistency, |m| Ok(m.env(&p, &e)?.set().segments.values().cloned().collect::<Vec<_>>())).await?;
    Ok(axum::Json(segs).into_response())
}

async fn get_segment(
    State(s): Svc,
    Path((p, e, key)): Path<(String, String, String)>,
    Query(q): Query<ReadParams>,
) -> Result<Response, ApiError> {
    let seg = s
        .read(q.consistency, |m| {
            m.env(&p, &e)?
                .set()
                .segments
                .get(&key)
                .cloned()
                .ok_or(crate::model::FlagsError::SegmentNotFound(key.clone()))
        })
        .await?;
    Ok(axum::Json(seg).into_response())
}

async fn put_segment(
    State(s): Svc,
    Path((p, e, key)): Path<(String, String, String)>,
    Query(q): Query<WriteParams>,
    h: HeaderMap,
    Json(body): Json<Value>,
) -> Result<axum::Json<Value>, ApiError> {
    let segment: Segment = parse_definition("segment", &key, body)?;
    change(&s, &h, (p, e), q.expected_version, Change::PutSegment { segment }).await
}

async fn delete_segment(
    State(s): Svc,
    Path((p, e, key)): Path<(String, String, String)>,
    Query(q): Query<WriteParams>,
    h: HeaderMap,
) -> Result<axum::Json<Value>, ApiError> {
    change(&s, &h, (p, e), q.expected_version, Change::DeleteSegment { key }).await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct HistoryParams {
    #[serde(default)]
    since: u64,
    limit: Option<usize>,
    key: Option<String>,
    #[serde(default)]
    consistency: Consistency,
}

async fn history(
    State(s): Svc,
    Path((p, e)): Path<(String, String)>,
    Query(q): Query<HistoryParams>,
) -> Result<Response, ApiError> {
    let limit = q.limit.unwrap_or(100).clamp(1, 1000);
    let entries = s.read(q.consistency, |m| Ok(m.env(&p, &e)?.history(q.since, limit, q.key.as_deref()))).await?;
    Ok(axum::Json(entries).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct KillBody {
    #[serde(default)]
    environments: Vec<String>,
}

async fn kill(
    State(s): Svc,
    Path((p, key)): Path<(String, String)>,
    h: HeaderMap,
    body: axum::body::Bytes,
) -> Result<axum::Json<Value>, ApiError> {
    let environments = if body.iter().all(u8::is_ascii_whitespace) {
        Vec::new()
    } else {
        serde_json::from_slice::<KillBody>(&body)
            .map_err(|e| ApiError::bad_request("invalid_body", format!("expected {{\"environments\": [...]}}: {e}")))?
            .environments
    };
    Ok(axum::Json(write(&s, &h, Op::Kill { project: p, flag: key, environments }).await?))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ScheduleBody {
    run_at_ms: Option<u64>,
    run_in_ms: Option<u64>,
    change: Value,
}

async fn schedule(
    State(s): Svc,
    Path((p, e)): Path<(String, String)>,
    h: HeaderMap,
    Json(b): Json<ScheduleBody>,
) -> Result<Response, ApiError> {
    let run_at_ms = match (b.run_at_ms, b.run_in_ms) {
        (Some(at), None) => at,
        (None, Some(d)) => s.clock.now_ms().saturating_add(d),
        _ => {
            return Err(ApiError::bad_request("invalid_schedule", "give exactly one of `run_at_ms` and `run_in_ms`"));
        }
    };
    let change: Change = serde_path_to_error::deserialize(b.change).map_err(|e| {
        ApiError::bad_request("invalid_definition", format!("change.{}: {}", e.path(), e.inner()))
            .with_field(format!("change.{}", e.path()))
    })?;
    change.check().map_err(api_err)?;
    let v: Value = write(&s, &h, Op::Schedule { project: p, environment: e, run_at_ms, change }).await?;
    Ok((StatusCode::CREATED, axum::Json(v)).into_response())
}

async fn cancel_schedule(State(s): Svc, Path(id): Path<u64>, h: HeaderMap) -> Result<axum::Json<Value>, ApiError> {
    Ok(axum::Json(write(&s, &h, Op::CancelSchedule { id }).await?))
}

/// The SDK key a request carries (`Authorization: Bearer …` or `X-API-Key`).
pub fn sdk_key(h: &HeaderMap) -> Option<&str> {
    if let Some(v) = h.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()) {
        return Some(v.strip_prefix("Bearer ").unwrap_or(v).trim());
    }
    h.get("x-api-key").and_then(|v| v.to_str().ok()).map(str::trim)
}

/// The environment a keyed request is for.
pub fn env_for_key(s: &FlagsService, h: &HeaderMap) -> Result<(String, String), ApiError> {
    let key = sdk_key(h).ok_or_else(|| {
        ApiError::new(StatusCode::UNAUTHORIZED, "no_sdk_key", "send the SDK key as `Authorization: Bearer <key>`")
    })?;
    s.sm.read(|m| m.by_sdk_key(key).map(|(p, e)| (p.to_owned(), e.to_owned())))
        .ok_or_else(|| ApiError::new(StatusCode::UNAUTHORIZED, "unknown_sdk_key", "no environment has this SDK key"))
}

fn etag(version: u64) -> String {
    format!("\"v{version}\"")
}

fn snapshot_response(s: &FlagsService, p: &str, e: &str, h: &HeaderMap) -> Result<Response, ApiError> {
    let snap = s.sm.read(|m| m.snapshot_of(p, e)).map_err(api_err)?;
    let tag = etag(snap.version);
    let fresh = h
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == tag));
    let mut resp = if fresh { StatusCode::NOT_MODIFIED.into_response() } else { axum::Json(snap).into_response() };
    if let Ok(v) = HeaderValue::from_str(&tag) {
        resp.headers_mut().insert(header::ETAG, v);
    }
    Ok(resp)
}

async fn snapshot_env(State(s): Svc, Path((p, e)): Path<(String, String)>, h: HeaderMap) -> Result<Response, ApiError> {
    snapshot_response(&s, &p, &e, &h)
}

async fn snapshot_by_key(State(s): Svc, h: HeaderMap) -> Result<Response, ApiError> {
    let (p, e) = env_for_key(&s, &h)?;
    snapshot_response(&s, &p, &e, &h)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StreamParams {
    since: Option<u64>,
}

async fn stream_env(
    State(s): Svc,
    Path((p, e)): Path<(String, String)>,
    Query(q): Query<StreamParams>,
    h: HeaderMap,
) -> Result<Response, ApiError> {
    open_stream(s, p, e, q.since, &h)
}

async fn stream_by_key(State(s): Svc, Query(q): Query<StreamParams>, h: HeaderMap) -> Result<Response, ApiError> {
    let (p, e) = env_for_key(&s, &h)?;
    open_stream(s, p, e, q.since, &h)
}

fn open_stream(
    s: Arc<FlagsService>,
    p: String,
    e: String,
    since: Option<u64>,
    h: &HeaderMap,
) -> Result<Response, ApiError> {
    // Fail before the stream starts on an unknown environment.
    s.sm.read(|m| m.env(&p, &e).map(drop)).map_err(api_err)?;
    let last = h.get("last-event-id").and_then(|v| v.to_str().ok()).and_then(|v| v.trim().parse::<u64>().ok());
    let keepalive = s.keepalive;
    Ok(Sse::new(sse(s, p, e, last.or(since))).keep_alive(KeepAlive::new().interval(keepalive)).into_response())
}

/// A snapshot (unless the client resumes from a version whose deltas are still kept), then one
/// event per change, in version order. Ends when the node shuts down or the environment goes.
fn sse(
    s: Arc<FlagsService>,
    p: String,
    e: String,
    since: Option<u64>,
) -> impl Stream<Item = Result<Event, Infallible>> {
    struct St {
        s: Arc<FlagsService>,
        p: String,
        e: String,
        since: Option<u64>,
        rx: tokio::sync::watch::Receiver<u64>,
        pending: VecDeque<Event>,
        done: bool,
    }
    let rx = s.sm.subscribe();
    let st = St { s, p, e, since, rx, pending: VecDeque::new(), done: false };
    stream::unfold(st, |mut st| async move {
        loop {
            if let Some(ev) = st.pending.pop_front() {
                return Some((Ok(ev), st));
            }
            if st.done {
                return None;
            }
            st.rx.borrow_and_update();
            let step = st.s.sm.read(|m| {
                let env = m.env(&st.p, &st.e)?;
                Ok::<_, crate::model::FlagsError>(match st.since {
                    Some(v) if v >= env.version() => Step::Wait,
                    Some(v) => match env.deltas_after(v) {
                        Some(d) => Step::Deltas(d),
                        None => Step::Snapshot(env.set().to_snapshot(&st.p, &st.e)),
                    },
                    None => Step::Snapshot(env.set().to_snapshot(&st.p, &st.e)),
                })
            });
            // Nothing new in this replica's log: deltas the leader pushed ahead of it may follow.
            let step = match (step, st.since) {
                (Ok(Step::Wait), Some(v)) => match st.s.sm.early_after(&st.p, &st.e, v) {
                    early if early.is_empty() => Ok(Step::Wait),
                    early => Ok(Step::Deltas(early)),
                },
                (other, _) => other,
            };
            match step {
                Err(err) => {
                    st.pending.push_back(Event::default().event("error").data(api_err(err).body_json()));
                    st.done = true;
                }
                Ok(Step::Snapshot(snap)) => {
                    st.since = Some(snap.version);
                    st.pending.push_back(json_event(EVENT_SNAPSHOT, snap.version, &snap));
                }
                Ok(Step::Deltas(ds)) => {
                    for d in ds {
                        st.since = Some(d.version);
                        st.pending.push_back(json_event(EVENT_DELTA, d.version, &d));
                    }
                }
                Ok(Step::Wait) => {
                    tokio::select! {
                        r = st.rx.changed() => if r.is_err() { return None },
                        _ = st.s.shutdown.cancelled() => return None,
                    }
                }
            }
        }
    })
}

enum Step {
    Wait,
    Snapshot(basalt_flags_core::Snapshot),
    Deltas(Vec<basalt_flags_core::Delta>),
}

fn json_event<T: serde::Serialize>(name: &str, version: u64, data: &T) -> Event {
    Event::default()
        .id(version.to_string())
        .event(name)
        .json_data(data)
        .unwrap_or_else(|e| Event::default().event("error").data(e.to_string()))
}
