//! Decisions, in two tiers.
//!
//! - **Node scope**: each node keeps the limiters of the (rule, key) pairs it has seen, built
//!   from the replicated rules, and decides alone.
//! - **Cluster scope**: one node owns each (rule, key) — picked by hashing it over the Raft
//!   members — and keeps the one authoritative limiter. Another node asks the owner for an
//!   *allowance* (a few units, consumed at the owner like any request) and spends it locally
//!   until it runs out or a second passes; only then does it go back to the owner. Every unit a
//!   node admits was first admitted by the owner, so the cluster never admits more than the
//!   rule allows while the owner is reachable; the price is under-admission of at most the
//!   unspent allowances (≤ nodes × batch per second). When the owner cannot be reached, the
//!   rule's `on_unreachable` decides: `open` falls back to this node's own limiter (at most the
//!   limit per node meanwhile), `closed` refuses.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use basalt_consensus::Consensus;
use basalt_ratelimit_core::{AnyLimiter, Decision, Limiter};
use basalt_runtime::ApiError;
use basalt_runtime::transport::Transport;
use serde::{Deserialize, Serialize};

use crate::rules::{Command, FailMode, RulesSm, Scope, Spec, Stored};

pub const LEASE_PATH: &str = "/ratelimit/lease";
const LEASE_NS: u64 = 1_000_000_000;
const LEASE_TIMEOUT: Duration = Duration::from_millis(500);

/// A node asks the owner of (rule, key) for `units`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LeaseReq {
    pub rule: String,
    pub key: String,
    pub units: u64,
    /// The limiter of a rule given with each request (`CL.THROTTLE`'s), which no stored rule
    /// holds — as JSON: the wire format (postcard) has no internally tagged enums.
    #[serde(default)]
    pub spec_json: Option<String>,
}

/// The rule name `CL.THROTTLE`'s limiters count under (`@` is not allowed in stored names).
pub const CL_THROTTLE: &str = "@cl.throttle";

/// How long a node reuses the Raft members it hashed owners over.
const MEMBERS_TTL: Duration = Duration::from_millis(250);

/// Units leased from the owner, spendable here until `expires_ns`.
#[derive(Debug, Clone, Copy)]
struct Allowance {
    units: u64,
    expires_ns: u64,
    /// The owner's answer when it granted them (for `remaining` and `reset`).
    owner: Decision,
}

pub const SYSTEM: &str = "ratelimit";

/// The Raft members as `(node id, peer address)`, sorted.
type Members = Arc<Vec<(u64, String)>>;

pub struct RateLimitService {
    pub consensus: Arc<Consensus>,
    pub rules: Arc<RulesSm>,
    pub clock: basalt_runtime::Clock,
    pub transport: Transport,
    pub node_id: u64,
    /// (rule, key) → (the rule version it was built from, the limiter).
    limiters: Mutex<HashMap<(String, String), (u64, AnyLimiter)>>,
    allowances: Mutex<HashMap<(String, String), Allowance>>,
    /// The Raft members (sorted) and when they were read: owners are hashed over them.
    members: Mutex<(Option<std::time::Instant>, Members)>,
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
    /// Cluster scope: the node that keeps this key's count.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub owner: Option<u64>,
    /// Set when the owner could not be reached: `decided_locally` (fail open) or
    /// `owner_unreachable` (fail closed).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub degraded: Option<&'static str>,
}

/// One level of a descriptor check: the rule that limits it, the limiter's key, its decision.
#[derive(Debug, Clone, Serialize)]
pub struct Level {
    pub rule: String,
    pub key: String,
    #[serde(flatten)]
    pub answer: Answer,
}

/// The level that binds: the first refusing one, else the one with the least remaining.
pub fn binding(levels: &[Level]) -> Option<&Level> {
    levels.iter().find(|l| !l.answer.allowed).or_else(|| levels.iter().min_by_key(|l| l.answer.remaining))
}

impl Answer {
    pub fn limit(&self) -> basalt_runtime::services::Limit {
        basalt_runtime::services::Limit {
            allowed: self.allowed,
            limit: self.limit,
            remaining: self.remaining,
            reset_after_ms: self.reset_after_ms,
            retry_after_ms: self.retry_after_ms,
        }
    }
}

/// The node's request limiter (`[http.rate_limit]` puts every public route behind a rule).
impl basalt_runtime::services::RequestLimiter for RateLimitService {
    fn check<'a>(
        &'a self,
        rule: &'a str,
        key: &'a str,
        cost: u64,
    ) -> basalt_runtime::engine::BoxFuture<'a, Result<basalt_runtime::services::Limit, ApiError>> {
        Box::pin(async move { Ok(RateLimitService::check(self, rule, key, cost).await?.limit()) })
    }
}

fn ms(ns: u64) -> u64 {
    ns.div_ceil(1_000_000)
}

impl RateLimitService {
    pub fn new(
        consensus: Arc<Consensus>,
        rules: Arc<RulesSm>,
        clock: basalt_runtime::Clock,
        transport: Transport,
        node_id: u64,
    ) -> Self {
        Self {
            consensus,
            rules,
            clock,
            transport,
            node_id,
            limiters: Mutex::default(),
            allowances: Mutex::default(),
            members: Mutex::new((None, Arc::default())),
        }
    }

    /// The Raft members, sorted (read again at most every [`MEMBERS_TTL`]: a membership change
    /// moves owners a moment later).
    fn members(&self) -> Arc<Vec<(u64, String)>> {
        let mut m = self.members.lock().unwrap_or_else(|e| e.into_inner());
        if m.0.is_none_or(|t| t.elapsed() > MEMBERS_TTL) {
            let mut v: Vec<(u64, String)> = self
                .consensus
                .status()
                .map(|s| s.members.into_iter().map(|m| (m.node_id, m.peer_addr)).collect())
                .unwrap_or_default();
            v.sort();
            *m = (Some(std::time::Instant::now()), Arc::new(v));
        }
        m.1.clone()
    }

    /// The owner of (rule, key): one of the Raft members, by hash; with its peer address.
    fn owner(&self, rule: &str, key: &str) -> Option<(u64, String)> {
        let members = self.members();
        if members.is_empty() {
            return None;
        }
        let mut id = Vec::with_capacity(rule.len() + 1 + key.len());
        id.extend_from_slice(rule.as_bytes());
        id.push(0);
        id.extend_from_slice(key.as_bytes());
        let h = basalt_ring::hash::hash64(&id);
        members.get((h % members.len() as u64) as usize).cloned()
    }

    /// The owner side of a lease: the authoritative limiter decides `units`.
    pub fn lease(&self, req: &LeaseReq) -> Result<Decision, ApiError> {
        let r = match &req.spec_json {
            Some(json) => {
                let spec =
                    serde_json::from_str(json).map_err(|e| ApiError::bad_request("invalid_rule", e.to_string()))?;
                adhoc(&req.rule, spec)?
            }
            None => self.rule(&req.rule)?,
        };
        let now = self.now_ns();
        self.with_limiter(&r, &req.key, |l| l.check(now, req.units))
    }

    /// redis-cell's `CL.THROTTLE key max_burst count period quantity`: a GCRA limiter given
    /// with the request, counted like a cluster-scope rule (one owner per key, allowances
    /// elsewhere). Answers redis-cell's five integers.
    pub async fn throttle(
        &self,
        key: &str,
        max_burst: u64,
        count: u64,
        period_s: u64,
        quantity: u64,
    ) -> Result<[i64; 5], String> {
        basalt_ratelimit_core::GcraConfig::from_cl_throttle(max_burst, count, period_s)
            .map_err(|e| format!("ERR {e}"))?;
        let period_ms = period_s.checked_mul(1000).ok_or("ERR period is too large")?;
        let r =
            adhoc(CL_THROTTLE, Spec::Gcra { max_burst, count, period_ms }).map_err(|e| format!("ERR {}", e.message))?;
        let a = self.decide(&r, key, quantity).await.map_err(|e| format!("ERR {}", e.message))?;
        Ok(basalt_ratelimit_core::cl_throttle_reply(&Decision {
            allowed: a.allowed,
            limit: a.limit,
            remaining: a.remaining,
            reset_after_ns: a.reset_after_ms.saturating_mul(1_000_000),
            retry_after_ns: a.retry_after_ms.map(|r| r.saturating_mul(1_000_000)),
        }))
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
    pub async fn check(&self, rule: &str, key: &str, cost: u64) -> Result<Answer, ApiError> {
        let r = self.rule(rule)?;
        self.decide(&r, key, cost).await
    }

    /// Decide (and count) `cost` for `key` under the rule `r`.
    async fn decide(&self, r: &Stored, key: &str, cost: u64) -> Result<Answer, ApiError> {
        let rule = r.name.as_str();
        let now = self.now_ns();
        let local = r.rule.scope == Scope::Node || matches!(r.rule.spec_for(key), Spec::Concurrency { .. });
        let owner = if local { None } else { self.owner(rule, key) };
        let owner_here = owner.as_ref().map(|(id, _)| *id);
        let Some((owner_id, owner_addr)) = owner.filter(|(id, _)| *id != self.node_id) else {
            // Node scope, or this node is the owner: the limiter here decides.
            let d = self.with_limiter(r, key, |l| l.check(now, cost))?;
            let mut a = answer(r, d);
            a.owner = owner_here;
            return Ok(a);
        };
        let id = (rule.to_string(), key.to_string());
        // Spend from the allowance when it covers the cost.
        {
            let mut al = self.allowances.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(a) = al.get_mut(&id)
                && a.expires_ns > now
                && a.units >= cost
            {
                a.units -= cost;
                let d = Decision {
                    allowed: true,
                    limit: a.owner.limit,
                    remaining: a.owner.remaining.saturating_add(a.units),
                    reset_after_ns: a.owner.reset_after_ns,
                    retry_after_ns: None,
                };
                let mut ans = answer(r, d);
                ans.owner = Some(owner_id);
                return Ok(ans);
            }
        }
        // Lease more: a batch, or just the cost if the batch is refused.
        let limit = r.rule.spec_for(key).build().map(|l| l.limit()).unwrap_or(1);
        let nodes = self.consensus.status().map(|s| s.members.len()).unwrap_or(1).max(1) as u64;
        let batch = (limit / (4 * nodes)).max(1).max(cost);
        let mut asks = vec![batch];
        if batch > cost {
            asks.push(cost);
        }
        for units in asks {
            let spec_json = rule.starts_with('@').then(|| serde_json::to_string(&r.rule.limiter).unwrap_or_default());
            let req = LeaseReq { rule: rule.into(), key: key.into(), units, spec_json };
            match self.transport.call::<_, Decision>(owner_id, &owner_addr, LEASE_PATH, &req, Some(LEASE_TIMEOUT)).await
            {
                Ok(d) if d.allowed => {
                    let left = units - cost;
                    let fresh = Allowance { units: left, expires_ns: now.saturating_add(LEASE_NS), owner: d };
                    // Requests here may have leased at the same time: add to what another left
                    // (never overwrite it — its units would be lost), expiring with the older
                    // lease so no unit outlives its second.
                    let mut al = self.allowances.lock().unwrap_or_else(|e| e.into_inner());
                    let merged = match al.get(&id) {
                        Some(a) if a.expires_ns > now => Allowance { units: a.units + left, owner: d, ..*a },
                        _ => fresh,
                    };
                    al.insert(id, merged);
                    drop(al);
                    let mut ans = answer(r, Decision { remaining: d.remaining.saturating_add(left), ..d });
                    ans.owner = Some(owner_id);
                    return Ok(ans);
                }
                Ok(d) => {
                    if units == cost {
                        let mut ans = answer(r, d);
                        ans.owner = Some(owner_id);
                        return Ok(ans);
                    }
                }
                Err(e) => {
                    tracing::debug!(owner = owner_id, error = %e, "ratelimit: owner unreachable");
                    return Ok(match r.rule.on_unreachable {
                        FailMode::Open => {
                            let d = self.with_limiter(r, key, |l| l.check(now, cost))?;
                            let mut a = answer(r, d);
                            a.owner = Some(owner_id);
                            a.degraded = Some("decided_locally");
                            a
                        }
                        FailMode::Closed => Answer {
                            allowed: r.rule.shadow,
                            would_block: r.rule.shadow.then_some(true),
                            limit,
                            remaining: 0,
                            reset_after_ms: 1000,
                            retry_after_ms: (!r.rule.shadow).then_some(1000),
                            owner: Some(owner_id),
                            degraded: Some("owner_unreachable"),
                        },
                    });
                }
            }
        }
        Err(ApiError::internal("lease loop ended without an answer"))
    }

    /// Decide (and count) `cost` for a descriptor: the entries `(key, value)` in order, e.g.
    /// `[("tenant", "acme"), ("api_key", "k1"), ("route", "/orders")]`.
    /// - `hierarchy`: every prefix whose keys a rule limits is a level (the tenant's limit, the
    ///   API key's within it, the route's within that) — one request checks the whole chain.
    /// - otherwise only the rule limiting exactly these keys (Envoy's `ShouldRateLimit`, where
    ///   the proxy sends each level as its own descriptor).
    ///
    /// Allowed when every level allows. As in Envoy's service, every level counts the cost even
    /// when another refuses. No rule matching is allowed, with no levels.
    pub async fn check_descriptor(
        &self,
        domain: &str,
        entries: &[(String, String)],
        cost: u64,
        hierarchy: bool,
    ) -> Result<Vec<Level>, ApiError> {
        if entries.is_empty() || entries.len() > crate::rules::DESCRIPTOR_KEYS_MAX {
            return Err(ApiError::bad_request(
                "invalid_descriptor",
                format!("a descriptor has 1 to {} entries, not {}", crate::rules::DESCRIPTOR_KEYS_MAX, entries.len()),
            ));
        }
        let mut levels = Vec::new();
        let from = if hierarchy { 1 } else { entries.len() };
        for n in from..=entries.len() {
            let keys = entries[..n].iter().map(|(k, _)| k.as_str());
            let Some(r) = self.rules.by_descriptor(domain, keys) else { continue };
            let key = crate::rules::descriptor_key(entries[..n].iter().map(|(_, v)| v.as_str()));
            let answer = self.decide(&r, &key, cost).await?;
            levels.push(Level { rule: r.name, key, answer });
        }
        Ok(levels)
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
        let slot = m.entry((r.name.clone(), key.to_string()));
        let (v, l) = match slot {
            std::collections::hash_map::Entry::Occupied(o) => o.into_mut(),
            std::collections::hash_map::Entry::Vacant(v) => {
                v.insert((r.version, spec.build().map_err(ApiError::internal)?))
            }
        };
        if *v != r.version {
            // The rule changed: same algorithm keeps what was counted.
            *l = spec.rebuild(l).map_err(ApiError::internal)?;
            *v = r.version;
        }
        Ok(f(l))
    }

    /// Forget limiters that are full again (dropping them changes no decision) and those of
    /// deleted rules. Answers how many remain.
    pub fn sweep(&self) -> usize {
        let now = self.now_ns();
        let mut m = self.limiters.lock().unwrap_or_else(|e| e.into_inner());
        m.retain(|(rule, _), (_, l)| (rule.starts_with('@') || self.rules.get(rule).is_some()) && !full_again(l, now));
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

/// A rule given with the request rather than stored: its version is a hash of its limiter, so
/// a request with other parameters rebuilds the key's limiter, keeping its state when the
/// algorithm is the same (redis-cell's key keeps its arrival time whatever the parameters).
fn adhoc(name: &str, spec: Spec) -> Result<Stored, ApiError> {
    if !name.starts_with('@') {
        return Err(ApiError::bad_request("invalid_rule", "only `@` rules come with their limiter"));
    }
    spec.build().map_err(|e| ApiError::bad_request("invalid_rule", e))?;
    let version = basalt_ring::hash::hash64(&postcard::to_allocvec(&spec).unwrap_or_default());
    Ok(Stored {
        name: name.to_string(),
        version,
        rule: crate::rules::Rule {
            limiter: spec,
            scope: Scope::Cluster,
            on_unreachable: FailMode::Open,
            shadow: false,
            overrides: Default::default(),
            descriptor: None,
        },
    })
}

/// A limiter back to its full limit decides exactly like a fresh one: it can be dropped.
fn full_again(l: &AnyLimiter, now_ns: u64) -> bool {
    l.peek(now_ns).remaining >= l.limit()
}

fn answer(r: &Stored, d: Decision) -> Answer {
    Answer {
        allowed: d.allowed || r.rule.shadow,
        would_block: r.rule.shadow.then_some(!d.allowed),
        limit: d.limit,
        remaining: d.remaining,
        reset_after_ms: ms(d.reset_after_ns),
        retry_after_ms: if r.rule.shadow { None } else { d.retry_after_ns.map(ms) },
        owner: None,
        degraded: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::Spec;

    #[test]
    fn only_limiters_back_to_full_are_forgotten() {
        let s = 1_000_000_000;
        let mut tb = Spec::TokenBucket { capacity: 2, refill: 1, period_ms: 1000 }.build().unwrap();
        assert!(full_again(&tb, 0));
        assert!(tb.check(0, 1).allowed);
        assert!(!full_again(&tb, 0), "a spent token is remembered");
        assert!(full_again(&tb, s), "refilled after a second");
        let mut c = Spec::Concurrency { limit: 1 }.build().unwrap();
        assert!(c.check(0, 1).allowed);
        assert!(!full_again(&c, 10 * s), "an in-flight request is never forgotten");
    }
}
