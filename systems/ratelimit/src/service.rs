//! Decisions: each node keeps the limiters of the (rule, key) pairs it has seen, built from the
//! replicated rules, and decides locally — the fast tier. (The cluster-wide tier that bounds
//! over-admission across nodes is not built yet; see the README.)

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use basalt_consensus::Consensus;
use basalt_ratelimit_core::{AnyLimiter, Decision, Limiter};
use basalt_runtime::ApiError;
use serde::Serialize;

use crate::rules::{Command, RulesSm, Stored};

pub const SYSTEM: &str = "ratelimit";

pub struct RateLimitService {
    pub consensus: Arc<Consensus>,
    pub rules: Arc<RulesSm>,
    pub clock: basalt_runtime::Clock,
    /// (rule, key) → (the rule version it was built from, the limiter).
    limiters: Mutex<HashMap<(String, String), (u64, AnyLimiter)>>,
}

/// A decision as the API answers it.
#[derive(Debug, Clone, Serialize)]
pub struct Answer {
    pub allowed: bool,
    /// Shadow rules: what the limiter decided (the request is allowed anyway).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub would_block: Option<bool>,
    pub limit: u64,
    pub remaining: u64,
    pub reset_after_ms: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_after_ms: Option<u64>,
}

fn ms(ns: u64) -> u64 {
    ns.div_ceil(1_000_000)
}

impl RateLimitService {
    pub fn new(consensus: Arc<Consensus>, rules: Arc<RulesSm>, clock: basalt_runtime::Clock) -> Self {
        Self { consensus, rules, clock, limiters: Mutex::default() }
    }

    fn now_ns(&self) -> u64 {
        self.clock.now_ms().saturating_mul(1_000_000)
    }

    pub async fn change(&self, cmd: Command) -> Result<Option<Stored>, ApiError> {
        let bytes = serde_json::to_vec(&cmd).map_err(|e| ApiError::internal(e.to_string()))?;
        let reply = self.consensus.propose(SYSTEM, bytes).await?;
        let r: Result<Option<Stored>, String> =
            serde_json::from_slice(&reply).map_err(|e| ApiError::internal(format!("bad reply: {e}")))?;
        r.map_err(|m| ApiError::bad_request("invalid_rule", m))
    }

    fn rule(&self, name: &str) -> Result<Stored, ApiError> {
        self.rules.get(name).ok_or_else(|| {
            ApiError::new(axum::http::StatusCode::NOT_FOUND, "unknown_rule", format!("no rule `{name}`"))
        })
    }

    /// Decide (and count) `cost` for `key` under `rule`.
    pub fn check(&self, rule: &str, key: &str, cost: u64) -> Result<Answer, ApiError> {
        let r = self.rule(rule)?;
        let now = self.now_ns();
        let d = self.with_limiter(&r, key, |l| l.check(now, cost))?;
        Ok(answer(&r, d))
    }

    /// Give back `cost` to a concurrency rule.
    pub fn release(&self, rule: &str, key: &str, cost: u64) -> Result<Answer, ApiError> {
        let r = self.rule(rule)?;
        let now = self.now_ns();
        let d = self
            .with_limiter(&r, key, |l| match l {
                AnyLimiter::Concurrency(c) => {
                    c.release(cost);
                    Ok(c.peek(now))
                }
                _ => Err(()),
            })?
            .map_err(|()| {
                ApiError::bad_request(
                    "not_a_concurrency_rule",
                    format!("rule `{rule}` does not count in-flight requests; nothing to release"),
                )
            })?;
        Ok(answer(&r, d))
    }

    fn with_limiter<T>(&self, r: &Stored, key: &str, f: impl FnOnce(&mut AnyLimiter) -> T) -> Result<T, ApiError> {
        let spec = r.rule.spec_for(key);
        let mut m = self.limiters.lock().unwrap_or_else(|e| e.into_inner());
        let id = (r.name.clone(), key.to_string());
        let entry = match m.remove(&id) {
            Some((v, l)) if v == r.version => (v, l),
            Some((_, old)) => (r.version, spec.rebuild(&old).map_err(ApiError::internal)?),
            None => (r.version, spec.build().map_err(ApiError::internal)?),
        };
        let (v, mut l) = entry;
        let out = f(&mut l);
        m.insert(id, (v, l));
        Ok(out)
    }

    /// Forget limiters that are full again (dropping them changes no decision) and those of
    /// deleted rules. Answers how many remain.
    pub fn sweep(&self) -> usize {
        let now = self.now_ns();
        let mut m = self.limiters.lock().unwrap_or_else(|e| e.into_inner());
        m.retain(|(rule, _), (_, l)| self.rules.get(rule).is_some() && l.peek(now).remaining < l.limit());
        m.len()
    }

    pub async fn sweeper(self: Arc<Self>, stop: basalt_runtime::node::CancellationToken) {
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(std::time::Duration::from_secs(10)) => {}
            }
            self.sweep();
        }
    }
}

fn answer(r: &Stored, d: Decision) -> Answer {
    Answer {
        allowed: d.allowed || r.rule.shadow,
        would_block: r.rule.shadow.then_some(!d.allowed),
        limit: d.limit,
        remaining: d.remaining,
        reset_after_ms: ms(d.reset_after_ns),
        retry_after_ms: if r.rule.shadow { None } else { d.retry_after_ns.map(ms) },
    }
}
