//! Prometheus metrics: one registry per node. Systems register their own metrics under a
//! `basalt_<system>_` prefix while the node starts; the HTTP host records every request.

use std::sync::Arc;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub method: String,
    /// The matched route pattern (`/v1/ids/{id}/decode`), never the raw path, so the number of
    /// series stays bounded.
    pub route: String,
    pub status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    pub method: String,
    pub route: String,
}

/// The metrics the HTTP host records for every request.
#[derive(Clone)]
pub struct HttpMetrics {
    pub requests: Family<RequestLabels, Counter>,
    pub latency: Family<RouteLabels, Histogram>,
}

impl HttpMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let requests = Family::<RequestLabels, Counter>::default();
        // 50 µs … ~26 s.
        let latency = Family::<RouteLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.000_05, 2.0, 20))
        });
        registry.register("basalt_http_requests", "HTTP requests by route and status", requests.clone());
        registry.register("basalt_http_request_duration_seconds", "HTTP request latency by route", latency.clone());
        Self { requests, latency }
    }
}

/// The finished registry, rendered at `/metrics`.
#[derive(Clone)]
pub struct MetricsHandle {
    registry: Arc<Registry>,
}

impl MetricsHandle {
    pub fn new(registry: Registry) -> Self {
        Self { registry: Arc::new(registry) }
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            out = format!("# encoding metrics failed: {e}\n");
        }
        out
    }
}
