//! The Rust SDK for Basalt's feature flags.
//!
//! A [`FlagsClient`] holds an environment's flags in memory and evaluates them locally — no
//! network per evaluation, a read lock and the evaluation itself (`basalt-flags-core`). A
//! background task keeps the flags current from the server's Server-Sent Events stream
//! (`GET /v1/flags/stream` with the SDK key): a snapshot, then one delta per change.
//!
//! - **Failover**: give it every node's URL; when a stream breaks it reconnects to the next one.
//! - **Resume**: it reconnects with `Last-Event-ID` = the version it holds; a node that still has
//!   the deltas sends only those (no snapshot). A node behind that version waits until it has
//!   caught up before sending anything, so the client never goes back in time.
//! - **Dead connections**: the server sends keep-alives; no bytes for `idle_timeout` means the
//!   connection is dead (a paused or partitioned node), and the client moves on.
//! - **Offline**: the last known flags stay in use, whatever happens to the servers. While no
//!   stream can be opened it polls the snapshot endpoint with `If-None-Match`.
//!
//! ```no_run
//! # async fn demo() -> Result<(), basalt_flags_sdk::Error> {
//! use basalt_flags_sdk::{ClientOptions, EvalContext, FlagsClient};
//! let client = FlagsClient::start(ClientOptions::new(["http://127.0.0.1:7070"], "sdk-…"));
//! client.ready(std::time::Duration::from_secs(5)).await?;
//! let on = client.bool_value("new-checkout", &EvalContext::with_key("user-42"), false);
//! # Ok(()) }
//! ```

pub mod sse;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use basalt_flags_core::{Delta, DeltaError, FlagSet, FlagStore, Snapshot};
pub use basalt_flags_core::{EvalContext, Evaluation, Reason};
use tokio::sync::watch;

use crate::sse::{SseEvent, SseParser};

/// The longest event-stream line accepted (a snapshot of a large environment is one line).
const MAX_LINE: usize = 64 << 20;

#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// Base URLs of the nodes (`http://host:port`), tried in turn.
    pub urls: Vec<String>,
    /// The environment's SDK key.
    pub sdk_key: String,
    /// No bytes (not even a keep-alive) for this long: the connection is dead.
    pub idle_timeout: Duration,
    /// How long to wait to connect to one node.
    pub connect_timeout: Duration,
    /// Backoff between rounds of failed attempts: starts here, doubles, capped at `reconnect_max`.
    pub reconnect_min: Duration,
    pub reconnect_max: Duration,
    /// Poll the snapshot endpoint while no stream can be opened.
    pub poll_when_disconnected: bool,
}

impl ClientOptions {
    pub fn new<S: Into<String>>(urls: impl IntoIterator<Item = S>, sdk_key: impl Into<String>) -> Self {
        ClientOptions {
            urls: urls.into_iter().map(|u| u.into().trim_end_matches('/').to_owned()).collect(),
            sdk_key: sdk_key.into(),
            idle_timeout: Duration::from_secs(15),
            connect_timeout: Duration::from_secs(2),
            reconnect_min: Duration::from_millis(50),
            reconnect_max: Duration::from_secs(5),
            poll_when_disconnected: true,
        }
    }
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    #[error("no flags arrived within {0:?}; last problem: {1}")]
    NotReady(Duration, String),
}

/// Counters, for tests and dashboards.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    pub snapshots: u64,
    pub deltas: u64,
    pub polls_changed: u64,
    /// Streams opened (the first one included).
    pub connects: u64,
    pub connected: bool,
}

struct Loaded {
    set: FlagSet,
    store: FlagStore,
}

struct Shared {
    opts: ClientOptions,
    state: RwLock<Option<Arc<Loaded>>>,
    version: watch::Sender<u64>,
    last_error: RwLock<String>,
    snapshots: AtomicU64,
    deltas: AtomicU64,
    polls_changed: AtomicU64,
    connects: AtomicU64,
    connected: AtomicBool,
}

/// A handle to an environment's flags, kept current in the background. Dropping it stops the
/// background task.
pub struct FlagsClient {
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for FlagsClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FlagsClient").field("urls", &self.shared.opts.urls).field("version", &self.version()).finish()
    }
}

impl Drop for FlagsClient {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FlagsClient {
    /// Start the background task (needs a Tokio runtime). Evaluations answer the caller's
    /// defaults (`FLAG_NOT_FOUND`) until the first snapshot arrives; see [`ready`](Self::ready).
    pub fn start(opts: ClientOptions) -> Self {
        let shared = Arc::new(Shared {
            opts,
            state: RwLock::new(None),
            version: watch::channel(0).0,
            last_error: RwLock::new("not connected yet".into()),
            snapshots: AtomicU64::new(0),
            deltas: AtomicU64::new(0),
            polls_changed: AtomicU64::new(0),
            connects: AtomicU64::new(0),
            connected: AtomicBool::new(false),
        });
        let task = tokio::spawn(run(shared.clone()));
        FlagsClient { shared, task }
    }

    /// Wait until flags have been loaded once.
    pub async fn ready(&self, timeout: Duration) -> Result<(), Error> {
        let mut rx = self.shared.version.subscribe();
        let loaded = tokio::time::timeout(timeout, async {
            loop {
                if self.loaded().is_some() {
                    return;
                }
                if rx.changed().await.is_err() {
                    return;
                }
            }
        })
        .await;
        match (loaded, self.loaded()) {
            (Ok(()), Some(_)) => Ok(()),
            _ => Err(Error::NotReady(timeout, self.last_error())),
        }
    }

    /// Wait until the client holds environment version `version` or later.
    pub async fn wait_for_version(&self, version: u64, timeout: Duration) -> bool {
        let mut rx = self.shared.version.subscribe();
        tokio::time::timeout(timeout, rx.wait_for(|v| *v >= version)).await.is_ok_and(|r| r.is_ok())
    }

    /// Ticks with the environment version on every change.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.shared.version.subscribe()
    }

    fn loaded(&self) -> Option<Arc<Loaded>> {
        self.shared.state.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The environment version held (0 before anything was loaded).
    pub fn version(&self) -> u64 {
        self.loaded().map_or(0, |l| l.set.version)
    }

    pub fn stats(&self) -> Stats {
        let s = &self.shared;
        Stats {
            snapshots: s.snapshots.load(Ordering::Relaxed),
            deltas: s.deltas.load(Ordering::Relaxed),
            polls_changed: s.polls_changed.load(Ordering::Relaxed),
            connects: s.connects.load(Ordering::Relaxed),
            connected: s.connected.load(Ordering::Relaxed),
        }
    }

    /// Why the last connection attempt or stream failed.
    pub fn last_error(&self) -> String {
        self.shared.last_error.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Run `f` on the current flags (an empty set before the first load).
    fn with_store<T>(&self, f: impl FnOnce(&FlagStore) -> T) -> T {
        let guard = self.shared.state.read().unwrap_or_else(|e| e.into_inner());
        match guard.as_deref() {
            Some(l) => f(&l.store),
            None => f(&FlagStore::default()),
        }
    }

    /// Evaluate a flag of any type (`value` is JSON `null` on error).
    pub fn evaluate(&self, key: &str, ctx: &EvalContext) -> Evaluation {
        self.with_store(|s| s.evaluate(key, ctx))
    }

    /// A boolean flag's value, or `default` on any error.
    pub fn bool_details(&self, key: &str, ctx: &EvalContext, default: bool) -> Evaluation<bool> {
        self.with_store(|s| match s.get(key) {
            Some(f) => basalt_flags_core::evaluate_bool(f, ctx, s, default),
            None => Evaluation::error(default, basalt_flags_core::ErrorCode::FlagNotFound),
        })
    }

    pub fn bool_value(&self, key: &str, ctx: &EvalContext, default: bool) -> bool {
        self.bool_details(key, ctx, default).value
    }

    pub fn string_value(&self, key: &str, ctx: &EvalContext, default: &str) -> String {
        self.with_store(|s| match s.get(key) {
            Some(f) => basalt_flags_core::evaluate_string(f, ctx, s, default).value,
            None => default.to_owned(),
        })
    }

    pub fn number_value(&self, key: &str, ctx: &EvalContext, default: f64) -> f64 {
        self.with_store(|s| match s.get(key) {
            Some(f) => basalt_flags_core::evaluate_number(f, ctx, s, default).value,
            None => default,
        })
    }
}

impl Shared {
    fn set_error(&self, e: impl Into<String>) {
        *self.last_error.write().unwrap_or_else(|e| e.into_inner()) = e.into();
    }

    fn current(&self) -> Option<Arc<Loaded>> {
        self.state.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn install(&self, set: FlagSet) -> Result<(), String> {
        let store = set.compile().map_err(|e| format!("the server sent an invalid environment: {e}"))?;
        let version = set.version;
        *self.state.write().unwrap_or_else(|e| e.into_inner()) = Some(Arc::new(Loaded { set, store }));
        self.version.send_replace(version);
        Ok(())
    }

    fn on_snapshot(&self, data: &str) -> Result<(), String> {
        let snap: Snapshot = serde_json::from_str(data).map_err(|e| format!("a bad snapshot: {e}"))?;
        if let Some(cur) = self.current()
            && snap.version < cur.set.version
        {
            return Err(format!("a node behind this client sent version {} (have {})", snap.version, cur.set.version));
        }
        self.install(FlagSet::from_snapshot(snap))?;
        self.snapshots.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Apply a delta; `Err(true)` when the client needs a snapshot (it missed a version).
    fn on_delta(&self, data: &str) -> Result<(), (bool, String)> {
        let delta: Delta = serde_json::from_str(data).map_err(|e| (false, format!("a bad delta: {e}")))?;
        let Some(current) = self.current() else { return Err((true, "a delta before any snapshot".into())) };
        if delta.version <= current.set.version {
            return Ok(()); // already have it
        }
        let mut set = current.set.clone();
        set.apply(&delta).map_err(|e| (matches!(e, DeltaError::Gap { .. }), e.to_string()))?;
        self.install(set).map_err(|e| (true, e))?;
        self.deltas.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }
}

/// Why a stream ended.
enum Ended {
    /// The server closed it (or sent an error event): reconnect.
    Closed(String),
    /// The client needs a fresh snapshot.
    NeedSnapshot(String),
}

async fn run(shared: Arc<Shared>) {
    let http = match reqwest::Client::builder().connect_timeout(shared.opts.connect_timeout).build() {
        Ok(c) => c,
        Err(e) => {
            shared.set_error(format!("cannot build an HTTP client: {e}"));
            return;
        }
    };
    let n = shared.opts.urls.len().max(1);
    let mut next = 0usize;
    let mut backoff = shared.opts.reconnect_min;
    let mut resume = true;
    loop {
        let mut streamed = false;
        for i in 0..n {
            let Some(url) = shared.opts.urls.get((next + i) % n) else { break };
            match stream_once(&shared, &http, url, resume).await {
                Ok(Ended::Closed(why)) => {
                    shared.set_error(why);
                    streamed = true;
                    resume = true;
                }
                Ok(Ended::NeedSnapshot(why)) => {
                    shared.set_error(why);
                    streamed = true;
                    resume = false;
                }
                Err(e) => {
                    shared.set_error(format!("{url}: {e}"));
                    continue;
                }
            }
            // The stream worked and ended: start the next round on the following node.
            next = (next + i + 1) % n;
            break;
        }
        if streamed {
            backoff = shared.opts.reconnect_min;
            continue;
        }
        if shared.opts.poll_when_disconnected {
            for url in &shared.opts.urls {
                if poll_once(&shared, &http, url).await.is_ok() {
                    break;
                }
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(shared.opts.reconnect_max);
    }
}

/// Open one stream and consume it until it ends. `Err` if it could not be opened.
async fn stream_once(shared: &Shared, http: &reqwest::Client, url: &str, resume: bool) -> Result<Ended, String> {
    let mut req = http
        .get(format!("{url}/v1/flags/stream"))
        .bearer_auth(&shared.opts.sdk_key)
        .header("accept", "text/event-stream");
    if resume && let Some(cur) = shared.current() {
        req = req.header("last-event-id", cur.set.version.to_string());
    }
    let mut resp = tokio::time::timeout(shared.opts.connect_timeout, req.send())
        .await
        .map_err(|_| "timed out connecting".to_owned())?
        .map_err(|e| e.to_string())?;
    if !resp.status().is_success() {
        let status = resp.status();
        return Err(format!("{status}: {}", resp.text().await.unwrap_or_default()));
    }
    shared.connects.fetch_add(1, Ordering::Relaxed);
    shared.connected.store(true, Ordering::Relaxed);
    let ended = consume(shared, &mut resp).await;
    shared.connected.store(false, Ordering::Relaxed);
    Ok(ended)
}

async fn consume(shared: &Shared, resp: &mut reqwest::Response) -> Ended {
    let mut parser = SseParser::new(MAX_LINE);
    loop {
        let chunk = match tokio::time::timeout(shared.opts.idle_timeout, resp.chunk()).await {
            Err(_) => {
                return Ended::Closed(format!("no data for {:?}: the connection is dead", shared.opts.idle_timeout));
            }
            Ok(Err(e)) => return Ended::Closed(format!("the stream broke: {e}")),
            Ok(Ok(None)) => return Ended::Closed("the server closed the stream".into()),
            Ok(Ok(Some(c))) => c,
        };
        let events = match parser.feed(&chunk) {
            Ok(ev) => ev,
            Err(e) => return Ended::NeedSnapshot(e.to_string()),
        };
        for SseEvent { event, data, .. } in events {
            match event.as_str() {
                basalt_flags_core::wire::EVENT_SNAPSHOT => {
                    if let Err(e) = shared.on_snapshot(&data) {
                        return Ended::NeedSnapshot(e);
                    }
                }
                basalt_flags_core::wire::EVENT_DELTA => match shared.on_delta(&data) {
                    Ok(()) => {}
                    Err((true, e)) => return Ended::NeedSnapshot(e),
                    Err((false, e)) => return Ended::Closed(e),
                },
                "error" => return Ended::Closed(format!("the server reported: {data}")),
                _ => {}
            }
        }
    }
}

/// One poll of the snapshot endpoint (with the version held as `If-None-Match`).
async fn poll_once(shared: &Shared, http: &reqwest::Client, url: &str) -> Result<(), String> {
    let mut req = http.get(format!("{url}/v1/flags/snapshot")).bearer_auth(&shared.opts.sdk_key);
    if let Some(cur) = shared.current() {
        req = req.header("if-none-match", format!("\"v{}\"", cur.set.version));
    }
    let resp = tokio::time::timeout(shared.opts.connect_timeout, req.send())
        .await
        .map_err(|_| "timed out".to_owned())?
        .map_err(|e| e.to_string())?;
    match resp.status().as_u16() {
        304 => Ok(()),
        200 => {
            let body = resp.text().await.map_err(|e| e.to_string())?;
            let snap: Snapshot = serde_json::from_str(&body).map_err(|e| e.to_string())?;
            // Never go back in time (a node behind the version held).
            if shared.current().is_some_and(|c| c.set.version >= snap.version) {
                return Ok(());
            }
            shared.install(FlagSet::from_snapshot(snap))?;
            shared.polls_changed.fetch_add(1, Ordering::Relaxed);
            Ok(())
        }
        s => Err(format!("polling answered {s}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use basalt_flags_core::{Flag, FlagKind, Serve};

    fn shared() -> Shared {
        Shared {
            opts: ClientOptions::new(["http://127.0.0.1:1"], "k"),
            state: RwLock::new(None),
            version: watch::channel(0).0,
            last_error: RwLock::new(String::new()),
            snapshots: AtomicU64::new(0),
            deltas: AtomicU64::new(0),
            polls_changed: AtomicU64::new(0),
            connects: AtomicU64::new(0),
            connected: AtomicBool::new(false),
        }
    }

    fn flag(on: bool) -> Flag {
        Flag {
            key: "f".into(),
            variants: [("on".to_owned(), true.into()), ("off".to_owned(), false.into())].into(),
            kind: FlagKind::Boolean,
            enabled: on,
            off_variant: "off".into(),
            fallthrough: Serve::Variant("on".into()),
            rules: vec![],
            prerequisites: vec![],
            salt: String::new(),
            version: 0,
        }
    }

    fn snapshot(version: u64, on: bool) -> String {
        serde_json::to_string(&Snapshot { version, flags: vec![flag(on)], ..Snapshot::default() }).unwrap()
    }

    fn delta(version: u64, on: bool) -> String {
        serde_json::to_string(&Delta { version, flags: vec![flag(on)], ..Delta::default() }).unwrap()
    }

    #[test]
    fn the_flags_held_never_go_back_to_an_older_version() {
        let s = shared();
        s.on_snapshot(&snapshot(5, true)).unwrap();
        assert!(s.on_snapshot(&snapshot(4, false)).is_err(), "a node behind the client is refused");
        assert_eq!(s.current().unwrap().set.version, 5);
        // A delta already held is ignored; the next one applies.
        s.on_delta(&delta(5, false)).unwrap();
        assert!(s.current().unwrap().set.flags["f"].enabled);
        s.on_delta(&delta(6, false)).unwrap();
        assert_eq!(s.current().unwrap().set.version, 6);
        assert!(!s.current().unwrap().set.flags["f"].enabled);
    }

    #[test]
    fn a_missed_delta_asks_for_a_snapshot_and_changes_nothing() {
        let s = shared();
        assert!(matches!(s.on_delta(&delta(1, true)), Err((true, _))), "a delta before any snapshot");
        s.on_snapshot(&snapshot(3, true)).unwrap();
        assert!(matches!(s.on_delta(&delta(5, false)), Err((true, _))), "version 4 was missed");
        assert!(matches!(s.on_delta("{not json"), Err((false, _))));
        assert_eq!(s.current().unwrap().set.version, 3);
        assert!(s.current().unwrap().set.flags["f"].enabled);
    }
}
