//! The HTTP host: one axum router per node that mounts every system under `/v1/<system>`, adds
//! `/healthz`, `/readyz` and `/metrics`, and wraps it all in the same middleware — request ids,
//! tracing, per-route metrics, limits, and one error shape for every failure.

pub mod error;
pub mod extract;
pub mod rate_limit;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::limit::RequestBodyLimitLayer;
use tower_http::request_id::{MakeRequestId, PropagateRequestIdLayer, RequestId, SetRequestIdLayer};
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;

pub use error::{ApiError, ErrorReply};

use crate::config::HttpConfig;
use crate::metrics::{HttpMetrics, MetricsHandle, RequestLabels, RouteLabels};

/// What the host router is built from.
pub struct HostParts {
    /// `(name, routes)`: each mounted at `/v1/<name>`.
    pub systems: Vec<(&'static str, Router)>,
    /// Routes mounted as they are (engines' and the node's own `/v1/cluster`, `/v1/node`).
    pub extra: Vec<Router>,
    pub metrics: MetricsHandle,
    pub http_metrics: HttpMetrics,
    /// False until every system has started, and again once shutdown begins.
    pub ready: Arc<AtomicBool>,
    pub limits: HttpConfig,
    /// What systems offer (the request limiter behind `[http.rate_limit]`).
    pub services: crate::services::Services,
}

pub fn host_router(parts: HostParts) -> Router {
    let names: Vec<&'static str> = parts.systems.iter().map(|(n, _)| *n).collect();
    let mut app = Router::new()
        .route(
            "/",
            get(move || async move {
                axum::Json(serde_json::json!({
                    "name": "basalt", "version": env!("CARGO_PKG_VERSION"), "systems": names,
                }))
            }),
        )
        .route("/healthz", get(|| async { axum::Json(serde_json::json!({"status": "ok"})) }))
        .route("/readyz", get(readyz).with_state(parts.ready.clone()))
        .route("/metrics", get(render_metrics).with_state(parts.metrics.clone()));
    for (name, routes) in parts.systems {
        app = app.nest(&format!("/v1/{name}"), routes);
    }
    for routes in parts.extra {
        app = app.merge(routes);
    }
    let limits = parts.limits;
    let app = app.fallback(|req: Request| async move {
        ApiError::not_found(format!("no route for {} {}", req.method(), req.uri().path()))
    });
    // A bad `key` is refused by the config check before the node starts.
    let app = match rate_limit::Limiting::new(&limits.rate_limit, parts.services) {
        Ok(Some(l)) => app.layer(middleware::from_fn_with_state(l, rate_limit::limit)),
        _ => app,
    };
    app.layer(DefaultBodyLimit::max(limits.body_limit_bytes))
        .layer(RequestBodyLimitLayer::new(limits.body_limit_bytes))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::REQUEST_TIMEOUT,
            Duration::from_millis(limits.request_timeout_ms),
        ))
        .layer(CatchPanicLayer::new())
        .layer(tower::limit::GlobalConcurrencyLimitLayer::new(limits.concurrency_max))
        .layer(middleware::from_fn(normalize_errors))
        .layer(middleware::from_fn_with_state(parts.http_metrics, record_metrics))
        .layer(PropagateRequestIdLayer::x_request_id())
        .layer(TraceLayer::new_for_http().make_span_with(|req: &Request| {
            let id = req.headers().get("x-request-id").and_then(|v| v.to_str().ok()).unwrap_or("-");
            tracing::info_span!("request", method = %req.method(), path = %req.uri().path(), request_id = %id)
        }))
        .layer(SetRequestIdLayer::x_request_id(Counter::default()))
}

async fn readyz(State(ready): State<Arc<AtomicBool>>) -> Response {
    if ready.load(Ordering::Acquire) {
        axum::Json(serde_json::json!({"status": "ready"})).into_response()
    } else {
        ApiError::unavailable("not_ready", "the node is starting or shutting down").into_response()
    }
}

async fn render_metrics(State(m): State<MetricsHandle>) -> Response {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], m.render()).into_response()
}

async fn record_metrics(State(m): State<HttpMetrics>, req: Request, next: Next) -> Response {
    let route = req.extensions().get::<MatchedPath>().map_or("unmatched", |p| p.as_str()).to_string();
    let method = req.method().to_string();
    let start = Instant::now();
    let resp = next.run(req).await;
    m.latency
        .get_or_create(&RouteLabels { method: method.clone(), route: route.clone() })
        .observe(start.elapsed().as_secs_f64());
    m.requests.get_or_create(&RequestLabels { method, route, status: resp.status().as_u16() }).inc();
    resp
}

/// Rewrite every error the framework or a layer produced (404, 405, 408, 413, a panic …) into
/// the node's JSON error shape; errors a handler already shaped pass through untouched.
async fn normalize_errors(req: Request, next: Next) -> Response {
    let resp = next.run(req).await;
    let status = resp.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return resp;
    }
    let is_json = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if is_json {
        return resp;
    }
    let (parts, body) = resp.into_parts();
    let bytes = axum::body::to_bytes(body, 4096).await.unwrap_or_default();
    let text = String::from_utf8_lossy(&bytes);
    let text = text.trim();
    let message = if text.is_empty() { status.canonical_reason().unwrap_or("error") } else { text };
    let mut shaped = ApiError::new(status, error::code_for_status(status), message).into_response();
    for (name, value) in &parts.headers {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            shaped.headers_mut().insert(name.clone(), value.clone());
        }
    }
    shaped
}

/// Request ids: a per-process random prefix and a counter — unique, cheap, and sortable within
/// one process's logs.
#[derive(Clone)]
struct Counter {
    prefix: u32,
    next: Arc<AtomicU64>,
}

impl Default for Counter {
    fn default() -> Self {
        let nanos =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.subsec_nanos()).unwrap_or(0);
        Self { prefix: nanos ^ std::process::id().rotate_left(16), next: Arc::new(AtomicU64::new(1)) }
    }
}

impl MakeRequestId for Counter {
    fn make_request_id<B>(&mut self, _req: &axum::http::Request<B>) -> Option<RequestId> {
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        HeaderValue::from_str(&format!("{:08x}-{n:x}", self.prefix)).ok().map(RequestId::new)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::routing::post;
    use tower::ServiceExt;

    async fn boom() -> &'static str {
        panic!("handler bug")
    }

    fn app(ready: bool) -> Router {
        let mut registry = prometheus_client::registry::Registry::default();
        let http_metrics = HttpMetrics::register(&mut registry);
        let sys = Router::new()
            .route("/echo", post(|extract::Json(v): extract::Json<serde_json::Value>| async move { axum::Json(v) }))
            .route("/boom", get(boom));
        host_router(HostParts {
            systems: vec![("t", sys)],
            extra: vec![],
            metrics: MetricsHandle::new(registry),
            http_metrics,
            ready: Arc::new(AtomicBool::new(ready)),
            limits: HttpConfig { body_limit_bytes: 64, ..Default::default() },
            services: Default::default(),
        })
    }

    async fn call(
        app: Router,
        req: axum::http::Request<Body>,
    ) -> (StatusCode, serde_json::Value, axum::http::HeaderMap) {
        let resp = app.oneshot(req).await.unwrap();
        let status = resp.status();
        let headers = resp.headers().clone();
        let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20).await.unwrap();
        (status, serde_json::from_slice(&bytes).unwrap_or(serde_json::Value::Null), headers)
    }

    fn req(method: &str, uri: &str, body: &str) -> axum::http::Request<Body> {
        axum::http::Request::builder()
            .method(method)
            .uri(uri)
            .header("content-type", "application/json")
            .body(Body::from(body.to_string()))
            .unwrap()
    }

    #[tokio::test]
    async fn errors_share_one_shape() {
        let cases = [
            (req("GET", "/nope", ""), StatusCode::NOT_FOUND, "not_found"),
            (req("GET", "/v1/t/echo", ""), StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"),
            (req("POST", "/v1/t/echo", &"x".repeat(100)), StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large"),
            (req("POST", "/v1/t/echo", "{not json"), StatusCode::BAD_REQUEST, "invalid_json"),
            (req("GET", "/v1/t/boom", ""), StatusCode::INTERNAL_SERVER_ERROR, "internal"),
            (req("GET", "/readyz", ""), StatusCode::SERVICE_UNAVAILABLE, "not_ready"),
        ];
        for (r, status, code) in cases {
            let what = format!("{} {}", r.method(), r.uri());
            let (s, body, headers) = call(app(false), r).await;
            assert_eq!(s, status, "{what}: {body}");
            assert_eq!(body["error"]["code"], code, "{what}: {body}");
            assert!(body["error"]["message"].as_str().is_some_and(|m| !m.is_empty()), "{what}: {body}");
            assert!(headers.contains_key("x-request-id"), "{what}");
        }
    }

    /// Admits two requests per key, then refuses.
    struct TwoPerKey(std::sync::Mutex<std::collections::HashMap<String, u64>>);

    impl crate::services::RequestLimiter for TwoPerKey {
        fn check<'a>(
            &'a self,
            rule: &'a str,
            key: &'a str,
            cost: u64,
        ) -> crate::engine::BoxFuture<'a, Result<crate::services::Limit, ApiError>> {
            Box::pin(async move {
                if rule != "api" {
                    return Err(ApiError::not_found(format!("no rule `{rule}`")));
                }
                let mut m = self.0.lock().unwrap();
                let used = m.entry(key.to_string()).or_default();
                let allowed = *used + cost <= 2;
                if allowed {
                    *used += cost;
                }
                Ok(crate::services::Limit {
                    allowed,
                    limit: 2,
                    remaining: 2 - *used,
                    reset_after_ms: 1500,
                    retry_after_ms: (!allowed).then_some(1500),
                })
            })
        }
    }

    #[tokio::test]
    async fn the_rate_limit_layer_refuses_past_the_rule_and_spares_health_and_its_own_routes() {
        let services = crate::services::Services::default();
        let limited_except = |rule: &str, key: &str, exempt: Vec<String>| {
            let limits = HttpConfig {
                rate_limit: rate_limit::RateLimitConfig { rule: rule.into(), key: key.into(), exempt },
                ..Default::default()
            };
            let mut registry = prometheus_client::registry::Registry::default();
            let http_metrics = HttpMetrics::register(&mut registry);
            let sys = Router::new().route(
                "/echo",
                post(|extract::Json(v): extract::Json<serde_json::Value>| async move { axum::Json(v) }),
            );
            host_router(HostParts {
                systems: vec![("t", sys), ("ratelimit", Router::new().route("/rules", get(|| async { "rules" })))],
                extra: vec![],
                metrics: MetricsHandle::new(registry),
                http_metrics,
                ready: Arc::new(AtomicBool::new(true)),
                limits,
                services: services.clone(),
            })
        };
        let limited = |rule: &str, key: &str| limited_except(rule, key, vec![]);
        let with_key = |key: &str| {
            let mut r = req("POST", "/v1/t/echo", "{}");
            r.headers_mut().insert("x-api-key", HeaderValue::from_str(key).unwrap());
            r
        };
        // No limiter offered yet: a clear 503, not a silent pass.
        let (s, body, _) = call(limited("api", "header:x-api-key"), with_key("a")).await;
        assert_eq!(
            (s, body["error"]["code"].as_str()),
            (StatusCode::SERVICE_UNAVAILABLE, Some("rate_limiter_unavailable"))
        );
        services.offer_limiter(Arc::new(TwoPerKey(Default::default())));
        let app = limited("api", "header:x-api-key");
        for left in [1, 0] {
            let (s, _, h) = call(app.clone(), with_key("a")).await;
            assert_eq!(s, StatusCode::OK);
            assert_eq!(h["ratelimit-remaining"], left.to_string().as_str());
            assert_eq!(h["ratelimit-limit"], "2");
        }
        let (s, body, h) = call(app.clone(), with_key("a")).await;
        assert_eq!(
            (s, body["error"]["code"].as_str()),
            (StatusCode::TOO_MANY_REQUESTS, Some("rate_limited")),
            "{body}"
        );
        assert_eq!(
            (&h["retry-after"], &h["ratelimit-reset"]),
            (&HeaderValue::from_static("2"), &HeaderValue::from_static("2"))
        );
        // Another key has its own count; health, metrics and the limiter's own routes are never limited.
        assert_eq!(call(app.clone(), with_key("b")).await.0, StatusCode::OK);
        for _ in 0..3 {
            assert_eq!(call(app.clone(), req("GET", "/healthz", "")).await.0, StatusCode::OK);
            assert_eq!(call(app.clone(), req("GET", "/v1/ratelimit/rules", "")).await.0, StatusCode::OK);
        }
        // An `exempt` prefix is never limited; the rest of the node still is.
        let spared = limited_except("api", "header:x-api-key", vec!["/v1/t/".into()]);
        for _ in 0..3 {
            assert_eq!(call(spared.clone(), with_key("a")).await.0, StatusCode::OK);
        }
        let outside: Vec<StatusCode> = {
            let mut v = Vec::new();
            for _ in 0..3 {
                v.push(call(spared.clone(), req("GET", "/", "")).await.0);
            }
            v
        };
        assert_eq!(
            outside,
            [StatusCode::OK, StatusCode::OK, StatusCode::TOO_MANY_REQUESTS],
            "requests without the header share one key"
        );
        // A rule the limiter does not know: the route is there, its limiter is not.
        let (s, body, _) = call(limited("nope", "client_ip"), with_key("a")).await;
        assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE);
        assert!(body["error"]["message"].as_str().unwrap().contains("no rule `nope`"), "{body}");
        // A bad key setting is refused by name.
        let bad = rate_limit::RateLimitConfig { rule: "api".into(), key: "cookie".into(), exempt: vec![] };
        assert!(bad.key_by().unwrap_err().contains("http.rate_limit.key"));
    }

    #[tokio::test]
    async fn metrics_count_requests_by_route_pattern() {
        let app = app(true);
        let (s, _, _) = call(app.clone(), req("POST", "/v1/t/echo", "{\"a\":1}")).await;
        assert_eq!(s, StatusCode::OK);
        let resp = app.oneshot(req("GET", "/metrics", "")).await.unwrap();
        let text = String::from_utf8(axum::body::to_bytes(resp.into_body(), 1 << 20).await.unwrap().to_vec()).unwrap();
        assert!(
            text.contains(r#"basalt_http_requests_total{method="POST",route="/v1/t/echo",status="200"} 1"#),
            "{text}"
        );
        assert!(text.contains("basalt_http_request_duration_seconds_bucket"), "{text}");
    }
}
