//! Every public route behind a rate-limit rule (`[http.rate_limit]`): the middleware asks the
//! node's request limiter (the ratelimit system offers it, see [`crate::services`]) whether a
//! request may go on, keyed by the client's IP or a header, and answers `429 rate_limited`
//! with `RateLimit-*` and `Retry-After` when it may not. Allowed responses carry the
//! `RateLimit-*` headers too. A limiter that cannot decide (no ratelimit system on the node, a
//! rule that does not exist) is `503 rate_limiter_unavailable` saying why.
//!
//! Never limited: `/healthz`, `/readyz`, `/metrics`, and `/v1/ratelimit/…` (where the rule
//! itself is managed — a limit on it could lock operators out), plus any `exempt` prefix.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use super::ApiError;
use crate::services::{Limit, Services};

/// `[http.rate_limit]`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RateLimitConfig {
    /// The ratelimit rule every request is checked against; empty: no limit.
    pub rule: String,
    /// What a request is counted by: `client_ip` (default) or `header:<name>` (a request
    /// without the header counts under the empty key, with every other such request).
    pub key: String,
    /// Path prefixes never limited, besides the built-in ones.
    pub exempt: Vec<String>,
}

/// What requests are counted by.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyBy {
    ClientIp,
    Header(HeaderName),
}

impl RateLimitConfig {
    pub fn key_by(&self) -> Result<KeyBy, String> {
        match self.key.as_str() {
            "" | "client_ip" => Ok(KeyBy::ClientIp),
            k => match k.strip_prefix("header:").map(HeaderName::try_from) {
                Some(Ok(h)) => Ok(KeyBy::Header(h)),
                _ => Err(format!("http.rate_limit.key must be `client_ip` or `header:<name>`, not `{k}`")),
            },
        }
    }
}

/// The middleware's state.
#[derive(Clone)]
pub struct Limiting {
    rule: Arc<str>,
    key: KeyBy,
    exempt: Arc<[String]>,
    services: Services,
}

impl Limiting {
    /// None when no rule is set.
    pub fn new(config: &RateLimitConfig, services: Services) -> Result<Option<Self>, String> {
        if config.rule.is_empty() {
            return Ok(None);
        }
        let mut exempt: Vec<String> = ["/healthz", "/readyz", "/metrics", "/v1/ratelimit/"].map(String::from).into();
        exempt.extend(config.exempt.iter().cloned());
        Ok(Some(Self { rule: config.rule.as_str().into(), key: config.key_by()?, exempt: exempt.into(), services }))
    }
}

/// The `RateLimit-*` headers of a decision (and `Retry-After` when refused), in seconds.
pub fn headers(l: &Limit) -> HeaderMap {
    let mut h = HeaderMap::new();
    let mut put = |name: &'static str, v: u64| {
        if let Ok(v) = HeaderValue::from_str(&v.to_string()) {
            h.insert(HeaderName::from_static(name), v);
        }
    };
    put("ratelimit-limit", l.limit);
    put("ratelimit-remaining", l.remaining);
    put("ratelimit-reset", l.reset_after_ms.div_ceil(1000));
    if let Some(r) = l.retry_after_ms {
        put("retry-after", r.div_ceil(1000).max(1));
    }
    h
}

pub async fn limit(State(s): State<Limiting>, req: Request, next: Next) -> Response {
    let path = req.uri().path();
    if s.exempt.iter().any(|p| path.starts_with(p.as_str()) || p.strip_suffix('/') == Some(path)) {
        return next.run(req).await;
    }
    let Some(limiter) = s.services.limiter() else {
        return ApiError::unavailable(
            "rate_limiter_unavailable",
            "http.rate_limit is set but the ratelimit system is not running on this node",
        )
        .into_response();
    };
    let key = match &s.key {
        KeyBy::ClientIp => req
            .extensions()
            .get::<ConnectInfo<SocketAddr>>()
            .map_or_else(|| "unknown".to_string(), |c| c.0.ip().to_string()),
        KeyBy::Header(h) => {
            req.headers().get(h).map_or_else(String::new, |v| String::from_utf8_lossy(v.as_bytes()).into())
        }
    };
    let decision = match limiter.check(&s.rule, &key, 1).await {
        Ok(d) => d,
        // The route exists; the limiter in front of it does not work (a missing rule …).
        Err(e) => {
            return ApiError::unavailable(
                "rate_limiter_unavailable",
                format!("http.rate_limit: rule `{}`: {} ({})", s.rule, e.message, e.code),
            )
            .into_response();
        }
    };
    let extra = headers(&decision);
    let mut resp = if decision.allowed {
        next.run(req).await
    } else {
        ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            format!("rate limit `{}` reached for this client; retry later", s.rule),
        )
        .into_response()
    };
    resp.headers_mut().extend(extra);
    resp
}
