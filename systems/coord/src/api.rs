//! `/v1/coord` over HTTP: where the etcd listener is, the fencing demo's protected resource, and
//! the node-to-node lease route.
//!
//! - `GET  /v1/coord`                      `{"etcd_addr": "127.0.0.1:2389"}`
//! - `PUT  /v1/coord/fenced/{resource}`    a write with `X-Fencing-Token: <lock key's create revision>`:
//!   200 if the token is at least every token accepted before, else 409 `stale_token`
//! - `GET  /v1/coord/fenced/{resource}`    the resource (token, value, accepted, refused)
//!
//! On the peer listener: `POST /coord/lease` (postcard), a keep-alive or time-to-live at the leader.

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use basalt_runtime::ApiError;
use basalt_runtime::http::extract::Path;
use basalt_runtime::transport::Wire;
use serde_json::json;

use crate::service::{Coord, LeaseAsk};
use crate::state::{Command, FencedResource, Reply};

type Svc = State<Arc<Coord>>;

pub fn routes(coord: Arc<Coord>, etcd_addr: String) -> Router {
    Router::new()
        .route("/", get(move || async move { axum::Json(json!({ "etcd_addr": etcd_addr })) }))
        .route("/fenced/{resource}", get(get_fenced).put(put_fenced))
        .with_state(coord)
}

/// The node-to-node route (on the peer listener): a keep-alive or time-to-live at the leader.
pub fn peer_routes(coord: Arc<Coord>) -> Router {
    Router::new()
        .route(
            crate::service::LEASE_PATH,
            post(|State(c): Svc, Wire(ask): Wire<LeaseAsk>| async move {
                c.answer_lease_confirmed(ask)
                    .await
                    .map(Wire)
                    .ok_or_else(|| ApiError::unavailable("not_leader", "lease time is kept by the leader"))
            }),
        )
        .with_state(coord)
}

fn view(r: &FencedResource) -> serde_json::Value {
    json!({"token": r.token, "value": String::from_utf8_lossy(&r.value), "accepted": r.accepted, "refused": r.refused})
}

fn grpc_err(s: tonic::Status) -> ApiError {
    ApiError::unavailable("unavailable", s.message().to_string())
}

async fn put_fenced(
    State(c): Svc,
    Path(resource): Path<String>,
    h: HeaderMap,
    body: Bytes,
) -> Result<axum::Json<serde_json::Value>, ApiError> {
    let token = h
        .get("x-fencing-token")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<i64>().ok())
        .filter(|t| *t > 0)
        .ok_or_else(|| {
            ApiError::bad_request(
                "no_fencing_token",
                "send the lock's fencing token (its key's create revision) as `X-Fencing-Token`",
            )
        })?;
    match c.propose(&Command::Fenced { resource, token, value: body.to_vec() }).await.map_err(grpc_err)? {
        Reply::Fenced(true, r) => Ok(axum::Json(view(&r))),
        Reply::Fenced(false, r) => Err(ApiError::new(
            StatusCode::CONFLICT,
            "stale_token",
            format!("fencing token {token} is older than token {} already accepted; the lock has moved on", r.token),
        )),
        other => Err(ApiError::internal(format!("unexpected reply {other:?}"))),
    }
}

async fn get_fenced(State(c): Svc, Path(resource): Path<String>) -> Result<axum::Json<serde_json::Value>, ApiError> {
    c.barrier(false).await.map_err(grpc_err)?;
    let r = c.sm.read(|s| s.fenced.get(&resource).cloned()).unwrap_or_default();
    Ok(axum::Json(view(&r)))
}
