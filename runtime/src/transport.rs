//! The one internal transport between nodes, shared by every engine: request/response RPC over
//! HTTP on the node's peer listener (`peer_addr`), postcard-encoded bodies, a timeout on every
//! call, a bound on in-flight calls per peer, and a fault hook that tests and benchmarks drive
//! (drop, delay, partition per peer).
//!
//! Wire: `POST http://<peer_addr><path>` with header `x-basalt-from: <node id>` and a postcard
//! body; 200 with a postcard body, or an error status with the node's JSON error shape.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;

use crate::http::ApiError;

pub const FROM_HEADER: &str = "x-basalt-from";
const CONTENT_TYPE: &str = "application/x-basalt-postcard";

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TransportConfig {
    /// Default timeout of one call.
    pub request_timeout_ms: u64,
    /// Calls to one peer that may be in flight at once; more wait for a slot (within the
    /// call's timeout).
    pub in_flight_max_per_peer: usize,
    /// Largest message body accepted (snapshots are sent in chunks below this).
    pub body_limit_bytes: usize,
}

impl Default for TransportConfig {
    fn default() -> Self {
        Self { request_timeout_ms: 2_000, in_flight_max_per_peer: 256, body_limit_bytes: 64 << 20 }
    }
}

/// Why a call failed. `Unreachable` means the message may not have arrived (or its answer was
/// lost): callers treat it as "unknown outcome".
#[derive(Debug, Clone, thiserror::Error)]
pub enum RpcError {
    #[error("peer {peer} unreachable: {reason}")]
    Unreachable { peer: u64, reason: String },
    #[error("peer {peer} answered {status}: {message}")]
    Remote { peer: u64, status: u16, code: String, message: String },
    #[error("bad message: {0}")]
    Codec(String),
}

/// What the fault hook does to traffic with one peer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FaultRule {
    /// Drop messages this node sends to the peer.
    pub drop_out: bool,
    /// Drop messages this node receives from the peer.
    pub drop_in: bool,
    /// Delay every message this node sends to the peer (one-way latency).
    pub delay_ms: u64,
}

/// The fault table, by peer node id. Empty in production.
#[derive(Debug, Clone, Default)]
pub struct Faults {
    rules: Arc<RwLock<BTreeMap<u64, FaultRule>>>,
}

impl Faults {
    pub fn rule(&self, peer: u64) -> FaultRule {
        self.rules.read().map(|r| r.get(&peer).copied().unwrap_or_default()).unwrap_or_default()
    }

    /// Replace the whole table.
    pub fn set_all(&self, rules: BTreeMap<u64, FaultRule>) {
        if let Ok(mut r) = self.rules.write() {
            *r = rules.into_iter().filter(|(_, rule)| *rule != FaultRule::default()).collect();
        }
    }

    pub fn all(&self) -> BTreeMap<u64, FaultRule> {
        self.rules.read().map(|r| r.clone()).unwrap_or_default()
    }
}

/// A handle to the transport. Cheap to clone.
#[derive(Clone)]
pub struct Transport {
    node_id: u64,
    config: TransportConfig,
    client: reqwest::Client,
    faults: Faults,
    slots: Arc<Mutex<HashMap<u64, Arc<Semaphore>>>>,
}

impl std::fmt::Debug for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Transport").field("node_id", &self.node_id).finish_non_exhaustive()
    }
}

impl Transport {
    pub fn new(node_id: u64, config: TransportConfig, faults: Faults) -> anyhow::Result<Self> {
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_millis(config.request_timeout_ms))
            .pool_max_idle_per_host(64)
            .tcp_nodelay(true)
            .build()?;
        Ok(Self { node_id, config, client, faults, slots: Arc::default() })
    }

    pub fn node_id(&self) -> u64 {
        self.node_id
    }

    pub fn faults(&self) -> &Faults {
        &self.faults
    }

    pub fn default_timeout(&self) -> Duration {
        Duration::from_millis(self.config.request_timeout_ms)
    }

    fn slots(&self, peer: u64) -> Arc<Semaphore> {
        let mut m = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        m.entry(peer).or_insert_with(|| Arc::new(Semaphore::new(self.config.in_flight_max_per_peer))).clone()
    }

    /// Call `path` on peer `peer` at `addr`, within `timeout` (the default when `None`).
    pub async fn call<Req: Serialize, Resp: DeserializeOwned>(
        &self,
        peer: u64,
        addr: &str,
        path: &str,
        req: &Req,
        timeout: Option<Duration>,
    ) -> Result<Resp, RpcError> {
        let timeout = timeout.unwrap_or_else(|| self.default_timeout());
        let unreachable = |reason: String| RpcError::Unreachable { peer, reason };
        let body = postcard::to_allocvec(req).map_err(|e| RpcError::Codec(e.to_string()))?;
        let fut = async {
            let rule = self.faults.rule(peer);
            if rule.drop_out {
                return Err(unreachable("dropped by fault injection".into()));
            }
            let slots = self.slots(peer);
            let _slot = slots.acquire().await.map_err(|_| unreachable("transport closed".into()))?;
            if rule.delay_ms > 0 {
                tokio::time::sleep(Duration::from_millis(rule.delay_ms)).await;
            }
            let resp = self
                .client
                .post(format!("http://{addr}{path}"))
                .header(FROM_HEADER, self.node_id.to_string())
                .header(header::CONTENT_TYPE, CONTENT_TYPE)
                .body(body)
                .send()
                .await
                .map_err(|e| unreachable(e.to_string()))?;
            let status = resp.status();
            let bytes = resp.bytes().await.map_err(|e| unreachable(e.to_string()))?;
            if !status.is_success() {
                let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
                return Err(RpcError::Remote {
                    peer,
                    status: status.as_u16(),
                    code: v["error"]["code"].as_str().unwrap_or("error").to_string(),
                    message: v["error"]["message"].as_str().unwrap_or("").to_string(),
                });
            }
            postcard::from_bytes(&bytes).map_err(|e| RpcError::Codec(e.to_string()))
        };
        tokio::time::timeout(timeout, fut).await.map_err(|_| unreachable(format!("no answer within {timeout:?}")))?
    }
}

/// Extractor and response for postcard bodies on the peer listener.
#[derive(Debug)]
pub struct Wire<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for Wire<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let bytes =
            Bytes::from_request(req, state).await.map_err(|e| ApiError::new(e.status(), "bad_body", e.body_text()))?;
        postcard::from_bytes(&bytes).map(Wire).map_err(|e| ApiError::bad_request("bad_message", e.to_string()))
    }
}

impl<T: Serialize> IntoResponse for Wire<T> {
    fn into_response(self) -> Response {
        match postcard::to_allocvec(&self.0) {
            Ok(bytes) => ([(header::CONTENT_TYPE, CONTENT_TYPE)], bytes).into_response(),
            Err(e) => ApiError::internal(format!("encoding reply: {e}")).into_response(),
        }
    }
}

/// Inbound half of the fault hook: drop what a partitioned peer sends.
pub async fn inbound_faults(faults: axum::extract::State<Faults>, req: Request, next: Next) -> Response {
    let from = req.headers().get(FROM_HEADER).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    if let Some(peer) = from
        && faults.rule(peer).drop_in
    {
        return ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "dropped", "dropped by fault injection").into_response();
    }
    next.run(req).await
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::Router;
    use axum::routing::post;

    async fn serve(faults: Faults) -> String {
        let app = Router::new()
            .route(
                "/echo",
                post(|Wire(v): Wire<Vec<u32>>| async move { Wire(v.into_iter().map(|x| x * 2).collect::<Vec<_>>()) }),
            )
            .layer(axum::middleware::from_fn_with_state(faults, inbound_faults));
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap().to_string();
        tokio::spawn(async move { axum::serve(l, app).await });
        addr
    }

    #[tokio::test]
    async fn calls_round_trip_and_faults_apply() {
        let server_faults = Faults::default();
        let addr = serve(server_faults.clone()).await;
        let t = Transport::new(1, TransportConfig::default(), Faults::default()).unwrap();
        let r: Vec<u32> = t.call(2, &addr, "/echo", &vec![1u32, 2], None).await.unwrap();
        assert_eq!(r, vec![2, 4]);

        t.faults().set_all([(2, FaultRule { drop_out: true, ..Default::default() })].into());
        let e = t.call::<_, Vec<u32>>(2, &addr, "/echo", &vec![1u32], None).await.unwrap_err();
        assert!(matches!(e, RpcError::Unreachable { .. }), "{e}");

        t.faults().set_all([(2, FaultRule { delay_ms: 300, ..Default::default() })].into());
        let e = t.call::<_, Vec<u32>>(2, &addr, "/echo", &vec![1u32], Some(Duration::from_millis(100))).await;
        assert!(matches!(e, Err(RpcError::Unreachable { .. })), "delay beyond the timeout");
        let start = std::time::Instant::now();
        t.call::<_, Vec<u32>>(2, &addr, "/echo", &vec![1u32], None).await.unwrap();
        assert!(start.elapsed() >= Duration::from_millis(300));

        t.faults().set_all(BTreeMap::new());
        server_faults.set_all([(1, FaultRule { drop_in: true, ..Default::default() })].into());
        let e = t.call::<_, Vec<u32>>(2, &addr, "/echo", &vec![1u32], None).await.unwrap_err();
        assert!(matches!(e, RpcError::Remote { status: 503, .. }), "{e}");

        let e = t.call::<_, Vec<u32>>(2, "127.0.0.1:1", "/echo", &vec![1u32], None).await.unwrap_err();
        assert!(matches!(e, RpcError::Unreachable { .. }), "{e}");
    }
}
