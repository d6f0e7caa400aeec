//! The one internal transport between nodes, shared by every engine: request/response RPC over
//! HTTP on the node's peer listener (`peer_addr`), postcard-encoded bodies, a timeout on every
//! call, a bound on in-flight calls per peer, and a fault hook that tests and benchmarks drive
//! (drop, delay, partition per peer).
//!
//! Wire: a call is `POST <path>` with header `x-basalt-from: <node id>` and a postcard body;
//! 200 with a postcard body, or an error status with the node's JSON error shape. Calls travel
//! over one long-lived multiplexed connection per peer (`stream`: an HTTP upgrade, then framed
//! calls), or as plain HTTP/1.1 exchanges for large bodies and for peers without the stream.

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

pub mod stream;

use stream::{Conn, STREAM_BODY_MAX};

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
    lanes: Arc<Mutex<HashMap<u64, Arc<Lane>>>>,
}

/// The stream to one peer (at one address).
struct Lane {
    addr: String,
    /// Read on every call (a short std lock, never held across an await).
    state: Mutex<LaneState>,
    /// Held only while a connection is being opened, so concurrent callers open one.
    opening: tokio::sync::Mutex<()>,
}

impl Lane {
    fn new(addr: &str) -> Arc<Self> {
        Arc::new(Lane { addr: addr.to_string(), state: Mutex::new(LaneState::Closed), opening: Default::default() })
    }

    /// `Some(answer)` when the state settles it without connecting.
    fn settled(&self) -> Option<Option<Arc<Conn>>> {
        match &*self.state.lock().unwrap_or_else(|e| e.into_inner()) {
            LaneState::Open(c) if !c.is_closed() => Some(Some(c.clone())),
            LaneState::HttpUntil(t) if tokio::time::Instant::now() < *t => Some(None),
            _ => None,
        }
    }

    fn set(&self, state: LaneState) {
        *self.state.lock().unwrap_or_else(|e| e.into_inner()) = state;
    }
}

enum LaneState {
    Closed,
    Open(Arc<Conn>),
    /// The peer answered the upgrade with something else (an older node): plain HTTP until
    /// this time, then ask again.
    HttpUntil(tokio::time::Instant),
}

/// How long a peer without the stream is left on plain HTTP before it is asked again.
const HTTP_ONLY_RETRY: Duration = Duration::from_secs(30);

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
        Ok(Self { node_id, config, client, faults, slots: Arc::default(), lanes: Arc::default() })
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

    /// The open stream to `peer` at `addr`, opened if need be; `None` when the peer takes plain
    /// HTTP only.
    async fn stream(&self, peer: u64, addr: &str) -> Result<Option<Arc<Conn>>, RpcError> {
        let lane = {
            let mut lanes = self.lanes.lock().unwrap_or_else(|e| e.into_inner());
            let lane = lanes.entry(peer).or_insert_with(|| Lane::new(addr));
            if lane.addr != addr {
                // The peer moved: a new lane to the new address.
                *lane = Lane::new(addr);
            }
            lane.clone()
        };
        if let Some(answer) = lane.settled() {
            return Ok(answer);
        }
        let _opening = lane.opening.lock().await;
        if let Some(answer) = lane.settled() {
            return Ok(answer); // another caller opened it meanwhile
        }
        match Conn::connect(addr, self.node_id, self.config.body_limit_bytes).await {
            Ok(Some(c)) => {
                lane.set(LaneState::Open(c.clone()));
                Ok(Some(c))
            }
            Ok(None) => {
                tracing::info!(peer, addr, "peer does not take the stream transport; using HTTP with it");
                lane.set(LaneState::HttpUntil(tokio::time::Instant::now() + HTTP_ONLY_RETRY));
                Ok(None)
            }
            Err(e) => {
                lane.set(LaneState::Closed);
                Err(RpcError::Unreachable { peer, reason: format!("connecting to {addr}: {e}") })
            }
        }
    }

    /// One exchange over plain HTTP: (status, body).
    async fn http_call(&self, addr: &str, path: &str, body: Vec<u8>) -> Result<(u16, Bytes), String> {
        let resp = self
            .client
            .post(format!("http://{addr}{path}"))
            .header(FROM_HEADER, self.node_id.to_string())
            .header(header::CONTENT_TYPE, CONTENT_TYPE)
            .body(body)
            .send()
            .await
            .map_err(|e| e.to_string())?;
        let status = resp.status().as_u16();
        let bytes = resp.bytes().await.map_err(|e| e.to_string())?;
        Ok((status, bytes))
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
            let conn = if body.len() <= STREAM_BODY_MAX { self.stream(peer, addr).await? } else { None };
            let (status, bytes) = match conn {
                Some(conn) => conn.call(path, &body).await,
                None => self.http_call(addr, path, body).await,
            }
            .map_err(unreachable)?;
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
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

    fn app(faults: Faults) -> Router {
        Router::new()
            .route(
                "/echo",
                post(|Wire(v): Wire<Vec<u32>>| async move { Wire(v.into_iter().map(|x| x * 2).collect::<Vec<_>>()) }),
            )
            .route("/len", post(|body: Bytes| async move { Wire(body.len() as u64) }))
            .route("/hang", post(std::future::pending::<()>))
            .layer(axum::middleware::from_fn_with_state(faults, inbound_faults))
            .layer(axum::extract::DefaultBodyLimit::max(TransportConfig::default().body_limit_bytes))
    }

    /// A peer listener: with the stream (as nodes serve it) or plain HTTP only (an older node).
    async fn serve(faults: Faults, with_stream: bool, stop: tokio_util::sync::CancellationToken) -> String {
        let app = app(faults);
        let app = if with_stream {
            stream::routes(app.clone(), TransportConfig::default().body_limit_bytes, stop).merge(app)
        } else {
            app
        };
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap().to_string();
        tokio::spawn(async move { axum::serve(l, app).await });
        addr
    }

    #[tokio::test]
    async fn calls_round_trip_and_faults_apply_over_the_stream() {
        round_trips_and_faults(true).await;
    }

    #[tokio::test]
    async fn calls_round_trip_and_faults_apply_over_http_to_a_peer_without_the_stream() {
        round_trips_and_faults(false).await;
    }

    #[tokio::test]
    async fn the_stream_is_used_when_offered_and_large_bodies_go_over_http() {
        let addr = serve(Faults::default(), true, Default::default()).await;
        assert!(stream::Conn::connect(&addr, 1, 1 << 20).await.unwrap().is_some(), "the listener takes the stream");
        let plain = serve(Faults::default(), false, Default::default()).await;
        assert!(stream::Conn::connect(&plain, 1, 1 << 20).await.unwrap().is_none(), "an older node answers 404");

        let t = Transport::new(1, TransportConfig::default(), Faults::default()).unwrap();
        // Many calls at once share one connection and each gets its own answer.
        let calls = (0..200u32).map(|i| {
            let (t, addr) = (t.clone(), addr.clone());
            async move { t.call::<_, Vec<u32>>(2, &addr, "/echo", &vec![i], None).await.unwrap() }
        });
        let answers = futures_util::future::join_all(calls).await;
        assert!(answers.iter().enumerate().all(|(i, a)| a == &vec![2 * i as u32]));
        let lanes = t.lanes.lock().unwrap().len();
        assert_eq!(lanes, 1);
        // Over the stream's frame size: plain HTTP, same answer.
        let big = vec![7u8; stream::STREAM_BODY_MAX + 10];
        let n: u64 = t.call(2, &addr, "/len", &big, None).await.unwrap();
        assert_eq!(n, postcard::to_allocvec(&big).unwrap().len() as u64);
    }

    #[tokio::test]
    async fn a_call_on_a_stream_that_breaks_fails_at_once_and_the_next_call_reconnects() {
        let stop = tokio_util::sync::CancellationToken::new();
        let addr = serve(Faults::default(), true, stop.clone()).await;
        let t = Transport::new(1, TransportConfig::default(), Faults::default()).unwrap();
        let r: Vec<u32> = t.call(2, &addr, "/echo", &vec![1u32], None).await.unwrap();
        assert_eq!(r, vec![2]);
        let hung = {
            let (t, addr) = (t.clone(), addr.clone());
            tokio::spawn(async move {
                let started = std::time::Instant::now();
                let r = t.call::<_, ()>(2, &addr, "/hang", &(), Some(Duration::from_secs(30))).await;
                (r, started.elapsed())
            })
        };
        // Wait until the call is in flight on the stream, then break the stream server-side.
        loop {
            let in_flight = {
                let lane = t.lanes.lock().unwrap().get(&2).unwrap().clone();
                match &*lane.state.lock().unwrap() {
                    LaneState::Open(c) => c.in_flight(),
                    _ => 0,
                }
            };
            if in_flight > 0 {
                break;
            }
            tokio::task::yield_now().await;
        }
        stop.cancel();
        let (r, took) = hung.await.unwrap();
        assert!(matches!(r, Err(RpcError::Unreachable { .. })), "{r:?}");
        assert!(took < Duration::from_secs(10), "failed when the stream broke, not at the timeout: {took:?}");
    }

    /// A peer that answered the upgrade with 404 (an older node) is called over HTTP until the
    /// retry time passes; then it is asked again, and once upgraded it gets the stream.
    #[tokio::test]
    async fn a_peer_without_the_stream_is_asked_again_after_the_retry_time() {
        use std::sync::atomic::{AtomicBool, Ordering};
        let upgraded = Arc::new(AtomicBool::new(false));
        let app = {
            let stream =
                stream::routes(app(Faults::default()), TransportConfig::default().body_limit_bytes, Default::default());
            let upgraded = upgraded.clone();
            stream.merge(app(Faults::default())).layer(axum::middleware::from_fn(move |req: Request, next: Next| {
                let on = upgraded.load(Ordering::SeqCst);
                async move {
                    if !on && req.uri().path() == stream::STREAM_PATH {
                        return StatusCode::NOT_FOUND.into_response();
                    }
                    next.run(req).await
                }
            }))
        };
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap().to_string();
        tokio::spawn(async move { axum::serve(l, app).await });

        let t = Transport::new(1, TransportConfig::default(), Faults::default()).unwrap();
        let lane_state = |t: &Transport| -> &'static str {
            let lane = t.lanes.lock().unwrap().get(&2).unwrap().clone();
            match &*lane.state.lock().unwrap() {
                LaneState::Open(c) if !c.is_closed() => "stream",
                LaneState::HttpUntil(_) => "http",
                _ => "closed",
            }
        };
        let r: Vec<u32> = t.call(2, &addr, "/echo", &vec![1u32], None).await.unwrap();
        assert_eq!((r, lane_state(&t)), (vec![2], "http"), "an older node is called over HTTP");
        upgraded.store(true, Ordering::SeqCst);
        let r: Vec<u32> = t.call(2, &addr, "/echo", &vec![2u32], None).await.unwrap();
        assert_eq!((r, lane_state(&t)), (vec![4], "http"), "not asked again before the retry time");

        // The retry time passes (moved instead of waited for): the next call asks again.
        let lane = t.lanes.lock().unwrap().get(&2).unwrap().clone();
        match &mut *lane.state.lock().unwrap() {
            LaneState::HttpUntil(until) => *until = tokio::time::Instant::now() - Duration::from_millis(1),
            _ => panic!("the lane left HTTP-only by itself"),
        }
        let r: Vec<u32> = t.call(2, &addr, "/echo", &vec![3u32], None).await.unwrap();
        assert_eq!((r, lane_state(&t)), (vec![6], "stream"), "the upgraded peer gets the stream");
    }

    /// A stream that sends a broken or oversized frame is closed; the listener keeps serving.
    #[tokio::test]
    async fn bad_frames_close_the_stream_and_nothing_else() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let addr = serve(Faults::default(), true, Default::default()).await;
        for garbage in [
            &[0u8, 0, 0, 3, 1, 2, 3][..], // shorter than an id and a path length
            &[0, 0, 0, 12, 0, 0, 0, 0, 0, 0, 0, 1, 0, 9, b'x', b'y'][..], // a path longer than the frame
            &[0xff, 0xff, 0xff, 0xff][..], // a length over the limit
            &[0, 0, 0, 11, 0, 0, 0, 0, 0, 0, 0, 1, 0, 1, b'x'][..], // a path without its leading '/'
        ] {
            let mut tcp = tokio::net::TcpStream::connect(&addr).await.unwrap();
            let head = format!(
                "GET {} HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: basalt-rpc/1\r\n\r\n",
                stream::STREAM_PATH
            );
            tcp.write_all(head.as_bytes()).await.unwrap();
            let mut head = Vec::new();
            let mut b = [0u8; 1];
            while !head.ends_with(b"\r\n\r\n") {
                assert_eq!(tcp.read(&mut b).await.unwrap(), 1);
                head.push(b[0]);
            }
            assert!(head.starts_with(b"HTTP/1.1 101"), "{}", String::from_utf8_lossy(&head));
            tcp.write_all(garbage).await.unwrap();
            let mut rest = Vec::new();
            let n = tokio::time::timeout(Duration::from_secs(10), tcp.read_to_end(&mut rest)).await;
            assert!(matches!(n, Ok(Ok(0)) | Ok(Err(_))), "the stream is closed without an answer: {n:?} {rest:?}");
        }
        let t = Transport::new(1, TransportConfig::default(), Faults::default()).unwrap();
        let r: Vec<u32> = t.call(2, &addr, "/echo", &vec![3u32], None).await.unwrap();
        assert_eq!(r, vec![6]);
        // Without the upgrade header the path is refused in the node's error shape.
        let r = reqwest::Client::new().get(format!("http://{addr}{}", stream::STREAM_PATH)).send().await.unwrap();
        assert_eq!(r.status(), 400);
    }

    async fn round_trips_and_faults(with_stream: bool) {
        let server_faults = Faults::default();
        let addr = serve(server_faults.clone(), with_stream, Default::default()).await;
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
        server_faults.set_all(BTreeMap::new());
        let e = t.call::<_, Vec<u32>>(2, &addr, "/nope", &vec![1u32], None).await.unwrap_err();
        assert!(matches!(e, RpcError::Remote { status: 404, .. }), "{e}");
    }
}
