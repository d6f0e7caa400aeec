//! What systems offer each other while the node runs.
//!
//! Engines share handles through [`Extensions`](crate::engine::Extensions) before systems start;
//! these are the run-time offers between systems, looked up per request (so the order systems
//! start in does not matter, and a system that is off simply leaves its offer out):
//! - **Redis commands** served on another system's RESP port: the rate limiter answers
//!   `CL.THROTTLE` on the key-value store's port.
//! - **The request limiter** every public HTTP route can be put behind (`[http.rate_limit]`,
//!   see [`crate::http::rate_limit`]).

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use basalt_resp::Frame;
use bytes::Bytes;

use crate::engine::BoxFuture;
use crate::http::ApiError;

/// A Redis command's handler: the arguments after the command's name, and the reply.
pub type RespCommand = Arc<dyn Fn(Vec<Bytes>) -> BoxFuture<'static, Frame> + Send + Sync>;

/// One decision of a request limiter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limit {
    pub allowed: bool,
    pub limit: u64,
    pub remaining: u64,
    pub reset_after_ms: u64,
    pub retry_after_ms: Option<u64>,
}

/// Decides whether a request may go on (and counts it).
pub trait RequestLimiter: Send + Sync {
    fn check<'a>(&'a self, rule: &'a str, key: &'a str, cost: u64) -> BoxFuture<'a, Result<Limit, ApiError>>;
}

#[derive(Default)]
struct Offers {
    resp: HashMap<String, RespCommand>,
    limiter: Option<Arc<dyn RequestLimiter>>,
}

/// The node's offers; every [`SystemContext`](crate::SystemContext) holds the same one.
#[derive(Clone, Default)]
pub struct Services(Arc<RwLock<Offers>>);

impl std::fmt::Debug for Services {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let o = self.0.read().unwrap_or_else(|e| e.into_inner());
        f.debug_struct("Services")
            .field("resp", &o.resp.keys().collect::<Vec<_>>())
            .field("limiter", &o.limiter.is_some())
            .finish()
    }
}

impl Services {
    /// Serve `name` (any case) on the node's RESP port.
    pub fn offer_resp_command(&self, name: &str, handler: RespCommand) {
        self.0.write().unwrap_or_else(|e| e.into_inner()).resp.insert(name.to_ascii_uppercase(), handler);
    }

    /// The handler of `name_upper` (the command's name in upper case), if a system offers it.
    pub fn resp_command(&self, name_upper: &str) -> Option<RespCommand> {
        self.0.read().unwrap_or_else(|e| e.into_inner()).resp.get(name_upper).cloned()
    }

    pub fn offer_limiter(&self, limiter: Arc<dyn RequestLimiter>) {
        self.0.write().unwrap_or_else(|e| e.into_inner()).limiter = Some(limiter);
    }

    pub fn limiter(&self) -> Option<Arc<dyn RequestLimiter>> {
        self.0.read().unwrap_or_else(|e| e.into_inner()).limiter.clone()
    }
}
