//! The fast lane of the transport: one long-lived TCP connection per peer carrying many calls at
//! once, instead of one HTTP/1.1 exchange per call.
//!
//! A connection starts as an HTTP/1.1 upgrade on the peer listener (`GET /v1/peer/stream`,
//! `Upgrade: basalt-rpc/1`), so it needs no port of its own and an older node simply answers
//! 404 (the caller then keeps using plain HTTP with it). After the 101 both sides exchange
//! frames, all integers big-endian:
//!
//! - call:   `len u32 | id u64 | path_len u16 | path | body`
//! - answer: `len u32 | id u64 | status u16 | body`
//!
//! `len` counts what follows it. The server runs every call through the same peer router as
//! HTTP (so handlers, the inbound fault hook and the body limit are the same), concurrently,
//! and answers in completion order; the client matches answers to calls by id. A frame over the
//! limit or a broken frame closes the connection; every call waiting on it then fails as
//! "unreachable" (its outcome unknown), and the next call opens a new connection.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;

use super::{CONTENT_TYPE, FROM_HEADER};

pub const STREAM_PATH: &str = "/v1/peer/stream";
const PROTOCOL: &str = "basalt-rpc/1";
/// Calls with bodies up to this size go over the stream; larger ones (snapshot chunks) use a
/// plain HTTP exchange so they never hold up the small messages queued behind them.
pub const STREAM_BODY_MAX: usize = 1 << 20;
/// Room for the id, status and path beyond a body.
const FRAME_OVERHEAD: usize = 8 + 2 + 1024;

/// An answer as it came off the wire: HTTP status and body.
pub type Answer = (u16, Bytes);

type Pending = Arc<Mutex<HashMap<u64, oneshot::Sender<Answer>>>>;

/// One open stream to a peer.
pub struct Conn {
    frames: mpsc::UnboundedSender<Vec<u8>>,
    pending: Pending,
    next_id: AtomicU64,
    closed: CancellationToken,
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.closed.cancel();
    }
}

/// Removes a call's entry if it ends without an answer (timeout, cancellation).
struct Forget<'a> {
    pending: &'a Pending,
    id: u64,
}

impl Drop for Forget<'_> {
    fn drop(&mut self) {
        self.pending.lock().unwrap_or_else(|e| e.into_inner()).remove(&self.id);
    }
}

impl Conn {
    /// Open a stream to the peer listener at `addr`. `Ok(None)`: the peer does not speak it
    /// (an older node); use HTTP.
    pub async fn connect(addr: &str, from: u64, body_limit: usize) -> std::io::Result<Option<Arc<Conn>>> {
        let tcp = TcpStream::connect(addr).await?;
        tcp.set_nodelay(true)?;
        // The upgrade itself is hyper's client: one HTTP/1.1 request, then the raw connection.
        let (mut sender, http) =
            hyper::client::conn::http1::handshake(TokioIo::new(tcp)).await.map_err(std::io::Error::other)?;
        tokio::spawn(http.with_upgrades());
        let req = axum::http::Request::get(STREAM_PATH)
            .header(header::HOST, addr)
            .header(header::CONNECTION, "upgrade")
            .header(header::UPGRADE, PROTOCOL)
            .header(FROM_HEADER, from)
            .body(http_body_util::Empty::<Bytes>::new())
            .map_err(std::io::Error::other)?;
        let resp = sender.send_request(req).await.map_err(std::io::Error::other)?;
        if resp.status() != StatusCode::SWITCHING_PROTOCOLS {
            return Ok(None);
        }
        let upgraded = hyper::upgrade::on(resp).await.map_err(std::io::Error::other)?;
        let (read, write) = tokio::io::split(TokioIo::new(upgraded));
        let (frames, rx) = mpsc::unbounded_channel();
        let conn = Arc::new(Conn {
            frames,
            pending: Pending::default(),
            next_id: AtomicU64::new(1),
            closed: CancellationToken::new(),
        });
        let closed = conn.closed.clone();
        tokio::spawn(write_frames(write, rx, closed.clone()));
        let pending = conn.pending.clone();
        tokio::spawn(async move {
            let mut read = BufReader::with_capacity(64 * 1024, read);
            loop {
                let frame = tokio::select! {
                    _ = closed.cancelled() => break,
                    f = read_frame(&mut read, body_limit + FRAME_OVERHEAD) => f,
                };
                let Ok(frame) = frame else { break };
                let Some((id, status, body)) = parse_answer(frame) else { break };
                let waiter = pending.lock().unwrap_or_else(|e| e.into_inner()).remove(&id);
                if let Some(w) = waiter {
                    let _ = w.send((status, body));
                }
            }
            closed.cancel();
            // Every call still waiting learns the connection is gone.
            pending.lock().unwrap_or_else(|e| e.into_inner()).clear();
        });
        Ok(Some(conn))
    }

    pub fn is_closed(&self) -> bool {
        self.closed.is_cancelled()
    }

    /// Calls sent and not yet answered.
    pub fn in_flight(&self) -> usize {
        self.pending.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Send one call and wait for its answer. `Err` when the connection broke first (the call
    /// may or may not have run).
    pub async fn call(&self, path: &str, body: &[u8]) -> Result<Answer, String> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.pending.lock().unwrap_or_else(|e| e.into_inner()).insert(id, tx);
        let _forget = Forget { pending: &self.pending, id };
        if self.is_closed() {
            return Err("the peer stream is closed".into());
        }
        let mut frame = Vec::with_capacity(4 + 8 + 2 + path.len() + body.len());
        frame.extend_from_slice(&((8 + 2 + path.len() + body.len()) as u32).to_be_bytes());
        frame.extend_from_slice(&id.to_be_bytes());
        frame.extend_from_slice(&(path.len() as u16).to_be_bytes());
        frame.extend_from_slice(path.as_bytes());
        frame.extend_from_slice(body);
        self.frames.send(frame).map_err(|_| "the peer stream is closed".to_string())?;
        rx.await.map_err(|_| "the peer stream closed before the answer".to_string())
    }
}

/// Write queued frames, as many per `write` as are waiting.
async fn write_frames(
    mut write: impl AsyncWrite + Unpin,
    mut rx: mpsc::UnboundedReceiver<Vec<u8>>,
    closed: CancellationToken,
) {
    let mut buf = Vec::with_capacity(64 * 1024);
    loop {
        let first = tokio::select! {
            _ = closed.cancelled() => break,
            f = rx.recv() => f,
        };
        let Some(first) = first else { break };
        buf.clear();
        buf.extend_from_slice(&first);
        while buf.len() < 256 * 1024
            && let Ok(next) = rx.try_recv()
        {
            buf.extend_from_slice(&next);
        }
        if write.write_all(&buf).await.is_err() {
            break;
        }
    }
    closed.cancel();
}

/// One frame's bytes after its length, or an error for EOF, a broken stream or an oversized
/// frame.
async fn read_frame(read: &mut (impl AsyncRead + Unpin), max: usize) -> std::io::Result<Vec<u8>> {
    let len = read.read_u32().await? as usize;
    if len > max {
        return Err(std::io::Error::other(format!("a frame of {len} bytes is over the limit of {max}")));
    }
    let mut frame = vec![0u8; len];
    read.read_exact(&mut frame).await?;
    Ok(frame)
}

fn parse_answer(frame: Vec<u8>) -> Option<(u64, u16, Bytes)> {
    if frame.len() < 10 {
        return None;
    }
    let id = u64::from_be_bytes(frame[..8].try_into().ok()?);
    let status = u16::from_be_bytes(frame[8..10].try_into().ok()?);
    let mut body = Bytes::from(frame);
    Some((id, status, body.split_off(10)))
}

/// A call frame: (id, path, body).
fn parse_call(frame: Vec<u8>) -> Option<(u64, String, Bytes)> {
    if frame.len() < 10 {
        return None;
    }
    let id = u64::from_be_bytes(frame[..8].try_into().ok()?);
    let path_len = u16::from_be_bytes(frame[8..10].try_into().ok()?) as usize;
    let path = std::str::from_utf8(frame.get(10..10 + path_len)?).ok()?.to_string();
    if !path.starts_with('/') {
        return None;
    }
    let mut body = Bytes::from(frame);
    Some((id, path, body.split_off(10 + path_len)))
}

#[derive(Clone)]
struct Server {
    app: Router,
    body_limit: usize,
    stop: CancellationToken,
}

/// The route that turns a connection into a stream, serving each call through `app` (the peer
/// router with its layers). Streams end when `stop` is cancelled.
pub fn routes(app: Router, body_limit: usize, stop: CancellationToken) -> Router {
    Router::new().route(STREAM_PATH, get(accept)).with_state(Server { app, body_limit, stop })
}

async fn accept(State(server): State<Server>, mut req: Request) -> Response {
    let upgrade_ok = req
        .headers()
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case(PROTOCOL));
    if !upgrade_ok {
        return crate::http::ApiError::bad_request("bad_upgrade", format!("this path takes `Upgrade: {PROTOCOL}`"))
            .into_response();
    }
    let from = req.headers().get(FROM_HEADER).cloned();
    let on_upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        match on_upgrade.await {
            Ok(upgraded) => serve(TokioIo::new(upgraded), server, from).await,
            Err(e) => tracing::debug!(error = %e, "peer stream upgrade failed"),
        }
    });
    let mut resp = StatusCode::SWITCHING_PROTOCOLS.into_response();
    resp.headers_mut().insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    resp.headers_mut().insert(header::UPGRADE, HeaderValue::from_static(PROTOCOL));
    resp
}

async fn serve(io: impl AsyncRead + AsyncWrite + Send + 'static, server: Server, from: Option<HeaderValue>) {
    let (read, write) = tokio::io::split(io);
    let (frames, rx) = mpsc::unbounded_channel();
    let closed = server.stop.child_token();
    tokio::spawn(write_frames(write, rx, closed.clone()));
    let mut read = BufReader::with_capacity(64 * 1024, read);
    loop {
        let frame = tokio::select! {
            _ = closed.cancelled() => break,
            f = read_frame(&mut read, server.body_limit + FRAME_OVERHEAD) => f,
        };
        let Ok(frame) = frame else { break };
        let Some((id, path, body)) = parse_call(frame) else {
            tracing::warn!("a peer sent a malformed stream frame; closing the stream");
            break;
        };
        let mut req = Request::post(path).header(header::CONTENT_TYPE, CONTENT_TYPE);
        if let Some(from) = &from {
            req = req.header(FROM_HEADER, from.clone());
        }
        let Ok(req) = req.body(Body::from(body)) else { break };
        let (app, frames, limit) = (server.app.clone(), frames.clone(), server.body_limit);
        tokio::spawn(async move {
            let resp = match app.oneshot(req).await {
                Ok(r) => r,
                Err(never) => match never {},
            };
            let status = resp.status().as_u16();
            let body = match axum::body::to_bytes(resp.into_body(), limit).await {
                Ok(b) => b,
                Err(e) => {
                    let e = crate::http::ApiError::internal(format!("reading the answer: {e}")).into_response();
                    axum::body::to_bytes(e.into_body(), limit).await.unwrap_or_default()
                }
            };
            let mut frame = Vec::with_capacity(4 + 10 + body.len());
            frame.extend_from_slice(&((10 + body.len()) as u32).to_be_bytes());
            frame.extend_from_slice(&id.to_be_bytes());
            frame.extend_from_slice(&status.to_be_bytes());
            frame.extend_from_slice(&body);
            let _ = frames.send(frame);
        });
    }
    closed.cancel();
}

#[cfg(test)]
mod tests {
    use super::*;

    proptest::proptest! {
        /// Whatever bytes arrive as a frame, parsing answers or refuses; it never panics.
        #[test]
        fn frames_parse_or_are_refused(frame in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..64)) {
            let _ = parse_call(frame.clone());
            let _ = parse_answer(frame);
        }

        #[test]
        fn a_call_frame_round_trips(id in proptest::prelude::any::<u64>(), path in "/[a-z/_]{0,40}", body in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..200)) {
            let mut frame = Vec::new();
            frame.extend_from_slice(&id.to_be_bytes());
            frame.extend_from_slice(&(path.len() as u16).to_be_bytes());
            frame.extend_from_slice(path.as_bytes());
            frame.extend_from_slice(&body);
            let (i, p, b) = parse_call(frame).unwrap();
            proptest::prop_assert_eq!((i, p, b.to_vec()), (id, path, body));
        }
    }
}
