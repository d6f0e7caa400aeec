//! Rules: which algorithm limits a rule's keys, with per-key overrides and shadow mode — a
//! deterministic state machine on the consensus engine, so every node holds the same rules.

use std::collections::BTreeMap;
use std::sync::RwLock;

use basalt_consensus::StateMachine;
use basalt_ratelimit_core as core;
use basalt_ratelimit_core::AnyLimiter;
use serde::{Deserialize, Serialize};

/// One algorithm with its parameters (times in milliseconds).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "algorithm", rename_all = "snake_case", deny_unknown_fields)]
pub enum Spec {
    /// `capacity` tokens, `refill` more every `period_ms`.
    TokenBucket {
        capacity: u64,
        refill: u64,
        period_ms: u64,
    },
    /// A meter of `capacity` that leaks `leak` every `period_ms`.
    LeakyBucket {
        capacity: u64,
        leak: u64,
        period_ms: u64,
    },
    FixedWindow {
        limit: u64,
        period_ms: u64,
    },
    /// Exact: one entry per admission in the window.
    SlidingLog {
        limit: u64,
        period_ms: u64,
    },
    /// The weighted two-window estimate.
    SlidingWindow {
        limit: u64,
        period_ms: u64,
    },
    /// redis-cell's: `max_burst + 1` at once, `count` per `period_ms`.
    Gcra {
        max_burst: u64,
        count: u64,
        period_ms: u64,
    },
    /// At most `limit` in flight (`/check` acquires, `/release` gives back).
    Concurrency {
        limit: u64,
    },
}

const MS: u64 = 1_000_000;

fn ns(param: &'static str, ms: u64) -> Result<u64, String> {
    ms.checked_mul(MS).ok_or_else(|| format!("`{param}` = {ms} ms is too large"))
}

impl Spec {
    /// A fresh limiter, or what is wrong with the parameters.
    pub fn build(&self) -> Result<AnyLimiter, String> {
        let e = |e: core::ConfigError| e.to_string();
        Ok(match *self {
            Spec::TokenBucket { capacity, refill, period_ms } => AnyLimiter::TokenBucket(core::TokenBucket::new(
                core::TokenBucketConfig::new(capacity, refill, ns("period_ms", period_ms)?).map_err(e)?,
            )),
            Spec::LeakyBucket { capacity, leak, period_ms } => AnyLimiter::LeakyBucket(core::LeakyBucket::new(
                core::LeakyBucketConfig::new(capacity, leak, ns("period_ms", period_ms)?).map_err(e)?,
            )),
            Spec::FixedWindow { limit, period_ms } => AnyLimiter::FixedWindow(core::FixedWindow::new(
                core::FixedWindowConfig::new(limit, ns("period_ms", period_ms)?).map_err(e)?,
            )),
            Spec::SlidingLog { limit, period_ms } => AnyLimiter::SlidingLog(core::SlidingLog::new(
                core::SlidingLogConfig::new(limit, ns("period_ms", period_ms)?).map_err(e)?,
            )),
            Spec::SlidingWindow { limit, period_ms } => AnyLimiter::SlidingCounter(core::SlidingCounter::new(
                core::SlidingCounterConfig::new(limit, ns("period_ms", period_ms)?).map_err(e)?,
            )),
            Spec::Gcra { max_burst, count, period_ms } => AnyLimiter::Gcra(core::Gcra::new(
                core::GcraConfig::new(max_burst, count, ns("period_ms", period_ms)?).map_err(e)?,
            )),
            Spec::Concurrency { limit } => {
                AnyLimiter::Concurrency(core::ConcurrencyLimiter::new(core::ConcurrencyConfig::new(limit).map_err(e)?))
            }
        })
    }

    /// The limiter for this spec, keeping `old`'s state when it is the same algorithm (a rule
    /// changed: hot reload without dropping what was counted).
    pub fn rebuild(&self, old: &AnyLimiter) -> Result<AnyLimiter, String> {
        let fresh = self.build()?;
        Ok(match (fresh, old) {
            (AnyLimiter::TokenBucket(n), AnyLimiter::TokenBucket(o)) => {
                AnyLimiter::TokenBucket(core::TokenBucket::with_state(*n.config(), *o.state()))
            }
            (AnyLimiter::LeakyBucket(n), AnyLimiter::LeakyBucket(o)) => {
                AnyLimiter::LeakyBucket(core::LeakyBucket::with_state(*n.config(), *o.state()))
            }
            (AnyLimiter::FixedWindow(n), AnyLimiter::FixedWindow(o)) => {
                AnyLimiter::FixedWindow(core::FixedWindow::with_state(*n.config(), *o.state()))
            }
            (AnyLimiter::SlidingLog(n), AnyLimiter::SlidingLog(o)) => {
                AnyLimiter::SlidingLog(core::SlidingLog::with_state(*n.config(), o.state().clone()))
            }
            (AnyLimiter::SlidingCounter(n), AnyLimiter::SlidingCounter(o)) => {
                AnyLimiter::SlidingCounter(core::SlidingCounter::with_state(*n.config(), *o.state()))
            }
            (AnyLimiter::Gcra(n), AnyLimiter::Gcra(o)) => {
                AnyLimiter::Gcra(core::Gcra::with_state(*n.config(), *o.state()))
            }
            (AnyLimiter::Concurrency(n), AnyLimiter::Concurrency(o)) => {
                AnyLimiter::Concurrency(core::ConcurrencyLimiter::with_state(*n.config(), *o.state()))
            }
            (fresh, _) => fresh,
        })
    }
}

/// Where a rule's count lives.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Scope {
    /// One count for the whole cluster, kept by the key's owner node; other nodes spend
    /// allowances leased from it (never more than the owner admitted).
    #[default]
    Cluster,
    /// Each node counts alone (a rule admits up to its limit per node).
    Node,
}

/// What a cluster-scope rule does when the key's owner cannot be reached.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailMode {
    /// Decide on this node alone (admits up to the limit per node meanwhile).
    #[default]
    Open,
    /// Refuse.
    Closed,
}

/// The descriptors a rule limits (Envoy's rate-limit descriptors): requests in `domain`
/// carrying entries with exactly these keys, in this order (`["tenant", "api_key"]`). The
/// limiter's key is the entries' values ([`descriptor_key`]); `overrides` name such keys.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DescriptorMatch {
    #[serde(default)]
    pub domain: String,
    pub keys: Vec<String>,
}

/// The most entries a descriptor (and a rule's `descriptor.keys`) may have.
pub const DESCRIPTOR_KEYS_MAX: usize = 16;

/// The limiter key of a descriptor's values: joined by `/`, with `%` and `/` in a value
/// escaped (`%25`, `%2F`) so that two different descriptors never share a key.
pub fn descriptor_key<'a>(values: impl IntoIterator<Item = &'a str>) -> String {
    let mut k = String::new();
    for (i, v) in values.into_iter().enumerate() {
        if i > 0 {
            k.push('/');
        }
        for c in v.chars() {
            match c {
                '%' => k.push_str("%25"),
                '/' => k.push_str("%2F"),
                c => k.push(c),
            }
        }
    }
    k
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    pub limiter: Spec,
    #[serde(default)]
    pub scope: Scope,
    #[serde(default)]
    pub on_unreachable: FailMode,
    /// Decide and count, never block: checks answer allowed, with `would_block`.
    #[serde(default)]
    pub shadow: bool,
    /// Keys with their own limiter.
    #[serde(default)]
    pub overrides: BTreeMap<String, Spec>,
    /// The descriptors this rule limits, if any (checked with `descriptor` requests and
    /// Envoy's `ShouldRateLimit`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub descriptor: Option<DescriptorMatch>,
}

impl Rule {
    pub fn validate(&self) -> Result<(), String> {
        self.limiter.build().map_err(|e| format!("limiter: {e}"))?;
        for (k, s) in &self.overrides {
            s.build().map_err(|e| format!("overrides.{k}: {e}"))?;
        }
        if let Some(d) = &self.descriptor {
            if d.keys.is_empty() || d.keys.len() > DESCRIPTOR_KEYS_MAX {
                return Err(format!("descriptor.keys: 1 to {DESCRIPTOR_KEYS_MAX} entry keys"));
            }
            if let Some(k) = d.keys.iter().find(|k| k.is_empty() || k.len() > 128) {
                return Err(format!("descriptor.keys: `{k}` is not an entry key (1-128 bytes)"));
            }
            if d.domain.len() > 128 {
                return Err("descriptor.domain: at most 128 bytes".into());
            }
        }
        Ok(())
    }

    pub fn spec_for(&self, key: &str) -> &Spec {
        self.overrides.get(key).unwrap_or(&self.limiter)
    }
}

/// A rule as stored: with the log index that last changed it (its version).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stored {
    pub name: String,
    pub version: u64,
    #[serde(flatten)]
    pub rule: Rule,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Command {
    Put { name: String, rule: Rule },
    Delete { name: String },
}

pub fn valid_name(n: &str) -> bool {
    (1..=128).contains(&n.len()) && n.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b))
}

/// The replicated rules.
#[derive(Default)]
pub struct RulesSm {
    rules: RwLock<BTreeMap<String, Stored>>,
}

impl RulesSm {
    pub fn get(&self, name: &str) -> Option<Stored> {
        self.rules.read().unwrap_or_else(|e| e.into_inner()).get(name).cloned()
    }

    /// The rule limiting descriptors with exactly these keys in `domain`.
    pub fn by_descriptor<'a>(&self, domain: &str, keys: impl Iterator<Item = &'a str> + Clone) -> Option<Stored> {
        let rules = self.rules.read().unwrap_or_else(|e| e.into_inner());
        rules
            .values()
            .find(|r| {
                r.rule
                    .descriptor
                    .as_ref()
                    .is_some_and(|d| d.domain == domain && d.keys.iter().map(String::as_str).eq(keys.clone()))
            })
            .cloned()
    }

    pub fn all(&self) -> Vec<Stored> {
        self.rules.read().unwrap_or_else(|e| e.into_inner()).values().cloned().collect()
    }
}

impl StateMachine for RulesSm {
    fn apply(&self, index: u64, command: &[u8]) -> Vec<u8> {
        let reply: Result<Option<Stored>, String> = match serde_json::from_slice::<Command>(command) {
            Err(e) => Err(format!("bad command: {e}")),
            Ok(Command::Put { name, rule }) => {
                if !valid_name(&name) {
                    Err(format!("`{name}` is not a rule name (1-128 of A-Z a-z 0-9 - _ . :)"))
                } else if let Err(e) = rule.validate() {
                    Err(e)
                } else if let Some(other) = rule.descriptor.as_ref().and_then(|d| {
                    self.by_descriptor(&d.domain, d.keys.iter().map(String::as_str)).filter(|o| o.name != name)
                }) {
                    Err(format!("descriptor: these keys are already limited by rule `{}`", other.name))
                } else {
                    let s = Stored { name: name.clone(), version: index, rule };
                    self.rules.write().unwrap_or_else(|e| e.into_inner()).insert(name, s.clone());
                    Ok(Some(s))
                }
            }
            Ok(Command::Delete { name }) => Ok(self.rules.write().unwrap_or_else(|e| e.into_inner()).remove(&name)),
        };
        serde_json::to_vec(&reply).unwrap_or_default()
    }

    fn snapshot(&self) -> Vec<u8> {
        serde_json::to_vec(&*self.rules.read().unwrap_or_else(|e| e.into_inner())).unwrap_or_default()
    }

    fn restore(&self, snapshot: &[u8]) -> anyhow::Result<()> {
        let map = if snapshot.is_empty() { BTreeMap::new() } else { serde_json::from_slice(snapshot)? };
        *self.rules.write().unwrap_or_else(|e| e.into_inner()) = map;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use basalt_ratelimit_core::Limiter;

    #[test]
    fn bad_rules_name_the_parameter_and_are_not_stored() {
        let sm = RulesSm::default();
        let bad = Command::Put {
            name: "api".into(),
            rule: Rule {
                limiter: Spec::FixedWindow { limit: 10, period_ms: 0 },
                scope: Scope::Cluster,
                on_unreachable: FailMode::Open,
                shadow: false,
                overrides: BTreeMap::new(),
                descriptor: None,
            },
        };
        let r: Result<Option<Stored>, String> =
            serde_json::from_slice(&sm.apply(1, &serde_json::to_vec(&bad).unwrap())).unwrap();
        assert!(r.unwrap_err().contains("period"));
        assert!(sm.all().is_empty());
    }

    #[test]
    fn a_changed_rule_keeps_what_was_counted() {
        let old = Spec::TokenBucket { capacity: 5, refill: 5, period_ms: 1000 };
        let mut l = old.build().unwrap();
        assert!(l.check(0, 5).allowed);
        let bigger = Spec::TokenBucket { capacity: 10, refill: 5, period_ms: 1000 };
        let l2 = bigger.rebuild(&l).unwrap();
        assert_eq!(l2.peek(0).remaining, 0, "the 5 spent stay spent");
        let other = Spec::FixedWindow { limit: 3, period_ms: 1000 };
        assert_eq!(other.rebuild(&l).unwrap().peek(0).remaining, 3, "another algorithm starts fresh");
    }

    proptest::proptest! {
        /// Two different descriptors never share a limiter: the key is injective.
        #[test]
        fn descriptor_keys_never_collide(
            a in proptest::collection::vec("[a-c/%]{0,4}", 1..4),
            b in proptest::collection::vec("[a-c/%]{0,4}", 1..4),
        ) {
            let ka = descriptor_key(a.iter().map(String::as_str));
            let kb = descriptor_key(b.iter().map(String::as_str));
            proptest::prop_assert_eq!(ka == kb, a == b, "{:?} {:?} → {} {}", a, b, ka, kb);
        }
    }
}
