//! Envoy's rate limit service (RLS v3) over gRPC: `ShouldRateLimit` on
//! `systems.ratelimit.grpc_addr`, so an Envoy proxy (or any RLS client) asks Basalt. Each
//! descriptor in a request is checked against the rule whose `descriptor` lists exactly its
//! entry keys in the request's domain (as Envoy's reference service matches its config tree);
//! a descriptor no rule limits is `OK` without a limit. The overall code is `OVER_LIMIT` when
//! any descriptor is over. Shadow rules answer `OK`. The binding descriptor's `RateLimit-*`
//! headers come back in `response_headers_to_add`.

use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;
use basalt_runtime::ApiError;
use tonic::{Request, Response, Status};

use crate::rules::Spec;
use crate::service::{Level, RateLimitService, binding};

#[allow(clippy::all, clippy::pedantic, missing_docs)]
pub mod pb {
    tonic::include_proto!("envoy.service.ratelimit.v3");
}

use pb::rate_limit_response::rate_limit::Unit;
use pb::rate_limit_response::{Code, DescriptorStatus, RateLimit};

struct Rls(Arc<RateLimitService>);

fn status(e: ApiError) -> Status {
    let msg = format!("{}: {}", e.code, e.message);
    match e.status {
        StatusCode::BAD_REQUEST | StatusCode::UNPROCESSABLE_ENTITY => Status::invalid_argument(msg),
        StatusCode::NOT_FOUND => Status::not_found(msg),
        StatusCode::SERVICE_UNAVAILABLE => Status::unavailable(msg),
        _ => Status::internal(msg),
    }
}

/// The period a spec counts over, in milliseconds (none for concurrency).
fn period_ms(s: &Spec) -> Option<u64> {
    match *s {
        Spec::TokenBucket { period_ms, .. }
        | Spec::LeakyBucket { period_ms, .. }
        | Spec::FixedWindow { period_ms, .. }
        | Spec::SlidingLog { period_ms, .. }
        | Spec::SlidingWindow { period_ms, .. }
        | Spec::Gcra { period_ms, .. } => Some(period_ms),
        Spec::Concurrency { .. } => None,
    }
}

fn unit(period_ms: Option<u64>) -> Unit {
    match period_ms {
        Some(1_000) => Unit::Second,
        Some(60_000) => Unit::Minute,
        Some(3_600_000) => Unit::Hour,
        Some(86_400_000) => Unit::Day,
        Some(604_800_000) => Unit::Week,
        _ => Unit::Unknown,
    }
}

impl Rls {
    fn descriptor_status(&self, l: &Level) -> DescriptorStatus {
        let spec = self.0.rules.get(&l.rule).map(|r| r.rule.spec_for(&l.key).clone());
        let clamp = |v: u64| u32::try_from(v).unwrap_or(u32::MAX);
        DescriptorStatus {
            code: if l.answer.allowed { Code::Ok } else { Code::OverLimit } as i32,
            current_limit: Some(RateLimit {
                name: l.rule.clone(),
                requests_per_unit: clamp(l.answer.limit),
                unit: unit(spec.as_ref().and_then(period_ms)) as i32,
            }),
            limit_remaining: clamp(l.answer.remaining),
            duration_until_reset: Some(
                prost_types::Duration::try_from(Duration::from_millis(l.answer.reset_after_ms)).unwrap_or_default(),
            ),
        }
    }
}

#[tonic::async_trait]
impl pb::rate_limit_service_server::RateLimitService for Rls {
    async fn should_rate_limit(
        &self,
        request: Request<pb::RateLimitRequest>,
    ) -> Result<Response<pb::RateLimitResponse>, Status> {
        let r = request.into_inner();
        if r.descriptors.is_empty() {
            return Err(Status::invalid_argument("a RateLimitRequest needs at least one descriptor"));
        }
        let cost = u64::from(r.hits_addend.max(1));
        let mut statuses = Vec::with_capacity(r.descriptors.len());
        let mut all = Vec::new();
        for (i, d) in r.descriptors.into_iter().enumerate() {
            if d.entries.is_empty() {
                return Err(Status::invalid_argument(format!("descriptors[{i}] has no entries")));
            }
            let entries: Vec<(String, String)> = d.entries.into_iter().map(|e| (e.key, e.value)).collect();
            let c = d.hits_addend.map(|h| h.value).filter(|v| *v > 0).unwrap_or(cost);
            let levels = self.0.check_descriptor(&r.domain, &entries, c, false).await.map_err(status)?;
            match levels.first() {
                Some(l) => statuses.push(self.descriptor_status(l)),
                None => statuses.push(DescriptorStatus { code: Code::Ok as i32, ..Default::default() }),
            }
            all.extend(levels);
        }
        let over = statuses.iter().any(|s| s.code == Code::OverLimit as i32);
        let headers = binding(&all)
            .map(|l| basalt_runtime::http::rate_limit::headers(&l.answer.limit()))
            .unwrap_or_default()
            .iter()
            .map(|(k, v)| pb::HeaderValue { key: k.to_string(), value: String::from_utf8_lossy(v.as_bytes()).into() })
            .collect();
        Ok(Response::new(pb::RateLimitResponse {
            overall_code: if over { Code::OverLimit } else { Code::Ok } as i32,
            statuses,
            response_headers_to_add: headers,
            request_headers_to_add: Vec::new(),
        }))
    }
}

pub async fn serve(
    listener: tokio::net::TcpListener,
    svc: Arc<RateLimitService>,
    stop: basalt_runtime::node::CancellationToken,
) {
    let result = tonic::transport::Server::builder()
        .add_service(pb::rate_limit_service_server::RateLimitServiceServer::new(Rls(svc)))
        .serve_with_incoming_shutdown(
            tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true)),
            stop.cancelled_owned(),
        )
        .await;
    if let Err(e) = result {
        tracing::error!(error = %e, "ratelimit: the RLS gRPC server failed");
    }
}
