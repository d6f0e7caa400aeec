//! Guarded rollouts: a change goes to canary regions first and is promoted or rolled back by
//! the error rates those regions report.
//!
//! - `StartRollout` commits a batch as version `v` like any other change, and records a
//!   [`Rollout`] on the namespace. While it bakes, replicas in the canary regions serve `v`;
//!   every other region keeps serving `v - 1` (reads without `?version=` and watches stop
//!   there), and the namespace takes no other change (`409 rollout_in_progress`), so the
//!   decision is about exactly one change.
//! - Regions report health (`ReportHealth`: errors and requests since their last report). The
//!   tallies of a canary region are judged once it has served `min_requests`: an error rate above
//!   `max_error_ppm` rolls the change back *at once and everywhere*, as the command is applied —
//!   a new version with the content of `v - 1`, authored `basalt-guard`, with the reason.
//! - When the bake time has passed and every canary region has served `min_requests` without
//!   breaching, the leader proposes `Promote` and every region serves `v`. A rollout without
//!   evidence is never promoted by itself: it waits (its status says for what), and an operator
//!   can promote (`force`) or abort it.
//! - Every decision is recorded on the rollout and on `v`'s entry in the history (state, when,
//!   by whom, why, the rollback version), so `history` shows what happened and why.
//!
//! Regions outside the canary set never see a rolled-back `v`: their watches skip it and go on
//! to the rollback version, whose values are the ones they already hold. Everything here is
//! integer arithmetic on data inside commands, so every replica decides the same.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{ChangeKind, ConfigError, Model, Plan, StoredValue};

pub const BAKE_MS_MAX: u64 = 24 * 3600 * 1000;
pub const CANARY_REGIONS_MAX: usize = 64;
const GUARD_AUTHOR: &str = "basalt-guard";

/// How a rollout is guarded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Guard {
    pub canary_regions: Vec<String>,
    pub bake_ms: u64,
    /// A canary region whose errors per million requests exceed this fails the rollout.
    pub max_error_ppm: u64,
    /// Requests a canary region must have served before its error rate is judged, and before
    /// the rollout may be promoted.
    pub min_requests: u64,
}

impl Guard {
    pub(super) fn check(&self) -> Result<(), ConfigError> {
        let bad = |m: String| Err(ConfigError::InvalidRollout(m));
        if self.canary_regions.is_empty() || self.canary_regions.len() > CANARY_REGIONS_MAX {
            return bad(format!("canary_regions must name 1 to {CANARY_REGIONS_MAX} regions"));
        }
        for (i, r) in self.canary_regions.iter().enumerate() {
            if !valid_region(r) {
                return bad(format!("canary_regions[{i}] `{r}` is not a region name (1-64 of A-Z a-z 0-9 _ -)"));
            }
            if self.canary_regions[..i].contains(r) {
                return bad(format!("canary_regions names `{r}` twice"));
            }
        }
        if !(1..=BAKE_MS_MAX).contains(&self.bake_ms) {
            return bad(format!("bake_ms must be between 1 and {BAKE_MS_MAX}"));
        }
        if self.max_error_ppm > 1_000_000 {
            return bad("max_error_rate must be between 0 and 1".into());
        }
        if self.min_requests == 0 {
            return bad("min_requests must be at least 1: a rollout is judged on evidence".into());
        }
        Ok(())
    }
}

pub fn valid_region(r: &str) -> bool {
    (1..=64).contains(&r.len()) && r.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RolloutState {
    /// Baking: only the canary regions serve the new version.
    Canary,
    Promoted,
    RolledBack,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HealthTally {
    pub errors: u64,
    pub requests: u64,
    pub last_at_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rollout {
    pub version: u64,
    #[serde(flatten)]
    pub guard: Guard,
    pub started_ms: u64,
    pub bake_ends_ms: u64,
    pub state: RolloutState,
    /// Per canary region, what it reported since the rollout started.
    pub reports: BTreeMap<String, HealthTally>,
    pub decided_at_ms: Option<u64>,
    pub decided_by: Option<String>,
    pub reason: Option<String>,
    /// The version that undid it, when it was rolled back.
    pub rollback_version: Option<u64>,
}

impl Rollout {
    pub(super) fn start(version: u64, guard: Guard, at_ms: u64) -> Self {
        Self {
            version,
            bake_ends_ms: at_ms.saturating_add(guard.bake_ms),
            guard,
            started_ms: at_ms,
            state: RolloutState::Canary,
            reports: BTreeMap::new(),
            decided_at_ms: None,
            decided_by: None,
            reason: None,
            rollback_version: None,
        }
    }

    /// Whether replicas in `region` serve this rollout's version.
    pub fn serves(&self, region: &str) -> bool {
        self.state == RolloutState::Promoted || self.guard.canary_regions.iter().any(|r| r == region)
    }

    fn over(&self, t: &HealthTally) -> bool {
        t.requests >= self.guard.min_requests
            && u128::from(t.errors) * 1_000_000 > u128::from(self.guard.max_error_ppm) * u128::from(t.requests)
    }

    /// The first canary region whose judged error rate is over the limit.
    fn breach(&self) -> Option<(&String, &HealthTally)> {
        self.reports.iter().find(|(r, t)| self.guard.canary_regions.contains(r) && self.over(t))
    }

    /// Why it cannot be promoted at `at_ms` yet (None = it can).
    fn not_ready(&self, at_ms: u64) -> Option<String> {
        if at_ms < self.bake_ends_ms {
            return Some(format!("the bake time ends in {} ms", self.bake_ends_ms - at_ms));
        }
        let short: Vec<String> = self
            .guard
            .canary_regions
            .iter()
            .filter(|r| self.reports.get(*r).is_none_or(|t| t.requests < self.guard.min_requests))
            .map(|r| format!("{r} ({} of {})", self.reports.get(r).map_or(0, |t| t.requests), self.guard.min_requests))
            .collect();
        (!short.is_empty()).then(|| format!("waiting for requests from canary regions {}", short.join(", ")))
    }

    fn rates(&self) -> String {
        let parts: Vec<String> = self.reports.iter().map(|(r, t)| format!("{r} {}", rate(t))).collect();
        if parts.is_empty() { "no reports".into() } else { parts.join(", ") }
    }
}

fn rate(t: &HealthTally) -> String {
    let pct = if t.requests == 0 { 0.0 } else { t.errors as f64 * 100.0 / t.requests as f64 };
    format!("{pct:.2}% ({}/{})", t.errors, t.requests)
}

fn ppm_pct(ppm: u64) -> String {
    format!("{:.2}%", ppm as f64 / 10_000.0)
}

/// The commands that drive rollouts (they change a namespace only by rolling back).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum GuardCommand {
    /// What a region served since its last report; `namespace` limits it to one namespace.
    ReportHealth { region: String, namespace: Option<String>, errors: u64, requests: u64, at_ms: u64 },
    /// Promote to every region: after the bake time with evidence, or now with `force`.
    Promote { namespace: String, version: Option<u64>, force: bool, author: String, at_ms: u64 },
    /// Roll back everywhere now.
    Abort { namespace: String, version: Option<u64>, author: String, reason: String, at_ms: u64 },
}

/// A rollout with its namespace, as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RolloutView {
    pub namespace: String,
    #[serde(flatten)]
    pub rollout: Rollout,
}

impl Model {
    /// The baking rollout of `name` (optionally: of that version).
    fn baking(&self, name: &str, version: Option<u64>) -> Result<&Rollout, ConfigError> {
        let ns = self.ns(name)?;
        match &ns.rollout {
            Some(r) if r.state == RolloutState::Canary && version.is_none_or(|v| v == r.version) => Ok(r),
            other => Err(ConfigError::NoRollout {
                namespace: name.into(),
                detail: match (other, version) {
                    (Some(r), Some(v)) if r.version != v => format!(" at version {v} (the last one was {})", r.version),
                    (Some(r), _) => format!(" (version {}'s was {:?})", r.version, r.state).to_lowercase(),
                    _ => String::new(),
                },
            }),
        }
    }

    /// Apply a rollout command: all of it or (on error) nothing; answers the rollouts it touched.
    pub fn guard(&mut self, cmd: GuardCommand) -> Result<Vec<RolloutView>, ConfigError> {
        match cmd {
            GuardCommand::ReportHealth { region, namespace, errors, requests, at_ms } => {
                if !valid_region(&region) {
                    return Err(ConfigError::InvalidHealthReport(format!("`{region}` is not a region name")));
                }
                if errors > requests {
                    return Err(ConfigError::InvalidHealthReport(format!(
                        "errors ({errors}) cannot exceed requests ({requests})"
                    )));
                }
                if let Some(n) = &namespace {
                    self.ns(n)?;
                }
                let names: Vec<String> = self
                    .namespaces
                    .iter()
                    .filter(|(n, ns)| {
                        namespace.as_ref().is_none_or(|only| only == *n)
                            && ns.rollout.as_ref().is_some_and(|r| {
                                r.state == RolloutState::Canary && r.guard.canary_regions.contains(&region)
                            })
                    })
                    .map(|(n, _)| n.clone())
                    .collect();
                let mut out = Vec::new();
                for name in names {
                    let Some(r) = self.namespaces.get_mut(&name).and_then(|ns| ns.rollout.as_mut()) else { continue };
                    let t = r.reports.entry(region.clone()).or_default();
                    t.errors = t.errors.saturating_add(errors);
                    t.requests = t.requests.saturating_add(requests);
                    t.last_at_ms = at_ms;
                    let breach = r.breach().map(|(reg, t)| {
                        format!(
                            "error rate {} in canary region {reg} exceeded {} during the bake",
                            rate(t),
                            ppm_pct(r.guard.max_error_ppm)
                        )
                    });
                    out.push(match breach {
                        Some(reason) => self.decide(&name, RolloutState::RolledBack, GUARD_AUTHOR, reason, at_ms),
                        None => self.view(&name),
                    });
                }
                Ok(out.into_iter().flatten().collect())
            }
            GuardCommand::Promote { namespace, version, force, author, at_ms } => {
                let r = self.baking(&namespace, version)?;
                let reason = if force {
                    format!("promoted by {author} before the guard decided ({})", r.rates())
                } else {
                    if let Some(why) = r.not_ready(at_ms) {
                        return Err(ConfigError::RolloutNotReady { namespace, version: r.version, why });
                    }
                    format!(
                        "bake time of {} ms passed with every canary region at or under {}: {}",
                        r.guard.bake_ms,
                        ppm_pct(r.guard.max_error_ppm),
                        r.rates()
                    )
                };
                let by = if force { author } else { GUARD_AUTHOR.to_string() };
                Ok(self.decide(&namespace, RolloutState::Promoted, &by, reason, at_ms).into_iter().collect())
            }
            GuardCommand::Abort { namespace, version, author, reason, at_ms } => {
                let r = self.baking(&namespace, version)?;
                let reason = if reason.is_empty() { format!("aborted by {author} ({})", r.rates()) } else { reason };
                Ok(self.decide(&namespace, RolloutState::RolledBack, &author, reason, at_ms).into_iter().collect())
            }
        }
    }

    /// Record a decision; rolling back commits the version before the rollout as a new version.
    fn decide(&mut self, name: &str, state: RolloutState, by: &str, reason: String, at_ms: u64) -> Option<RolloutView> {
        let ns = self.namespaces.get(name)?;
        let version = ns.rollout.as_ref()?.version;
        let mut rollback_version = None;
        if state == RolloutState::RolledBack {
            // The baking version is the newest (nothing else may change the namespace meanwhile).
            let writes: BTreeMap<String, Option<StoredValue>> =
                Self::rollback_writes(ns, name, version - 1).unwrap_or_default();
            if !writes.is_empty() {
                let kind = ChangeKind::Rollback { to_version: version - 1 };
                let change = self.commit(Plan { writes, ..Plan::new(name, kind, by, &reason, at_ms) });
                rollback_version = Some(change.version);
            }
        }
        let ns = self.namespaces.get_mut(name)?;
        let r = ns.rollout.as_mut()?;
        r.state = state;
        r.decided_at_ms = Some(at_ms);
        r.decided_by = Some(by.to_string());
        r.reason = Some(reason);
        r.rollback_version = rollback_version;
        let r = r.clone();
        if let Some(c) = ns.history.iter_mut().find(|c| c.version == version) {
            c.rollout = Some(r.clone());
        }
        Some(RolloutView { namespace: name.into(), rollout: r })
    }

    fn view(&self, name: &str) -> Option<RolloutView> {
        let r = self.namespaces.get(name)?.rollout.clone()?;
        Some(RolloutView { namespace: name.into(), rollout: r })
    }

    /// The namespace's rollout: baking, or the last one decided.
    pub fn rollout(&self, name: &str) -> Result<RolloutView, ConfigError> {
        self.ns(name)?;
        self.view(name).ok_or_else(|| ConfigError::NoRollout { namespace: name.into(), detail: String::new() })
    }

    /// Baking rollouts that may be promoted at `at_ms`: (namespace, version).
    pub fn due_rollouts(&self, at_ms: u64) -> Vec<(String, u64)> {
        self.namespaces
            .iter()
            .filter_map(|(n, ns)| ns.rollout.as_ref().map(|r| (n, r)))
            .filter(|(_, r)| r.state == RolloutState::Canary && r.not_ready(at_ms).is_none())
            .map(|(n, r)| (n.clone(), r.version))
            .collect()
    }

    /// The version replicas in `region` serve: the newest, or the one before a rollout that is
    /// baking elsewhere.
    pub fn serving_version(&self, name: &str, region: &str) -> Result<u64, ConfigError> {
        let ns = self.ns(name)?;
        Ok(match &ns.rollout {
            Some(r) if r.state == RolloutState::Canary && !r.serves(region) => r.version - 1,
            _ => ns.version,
        })
    }

    /// A key as `region` sees it.
    pub fn get_for(&self, name: &str, key: &str, region: &str) -> Result<StoredValue, ConfigError> {
        let v = self.serving_version(name, region)?;
        if v == self.ns(name)?.version { self.get(name, key) } else { self.get_at(name, key, v) }
    }

    /// The keys under `prefix` as `region` sees them, and the version that is.
    pub fn list_for(
        &self,
        name: &str,
        prefix: &str,
        region: &str,
    ) -> Result<(u64, Vec<(String, StoredValue)>), ConfigError> {
        let v = self.serving_version(name, region)?;
        if v == self.ns(name)?.version {
            return Ok((v, self.list(name, prefix)?));
        }
        let all = self.state_at(name, v)?;
        Ok((v, all.into_iter().filter(|(k, _)| k.starts_with(prefix)).collect()))
    }

    /// The history as a watcher in `region` sees it: nothing past the version it serves, and
    /// no rolled-back rollout that it never served.
    pub fn history_for(
        &self,
        name: &str,
        since: u64,
        limit: usize,
        region: &str,
    ) -> Result<Vec<super::Change>, ConfigError> {
        let upto = self.serving_version(name, region)?;
        self.history(name, since, 0)?; // the compaction check
        let ns = self.ns(name)?;
        Ok(ns
            .history
            .iter()
            .filter(|c| c.version > since && c.version <= upto)
            .filter(|c| !c.rollout.as_ref().is_some_and(|r| r.state == RolloutState::RolledBack && !r.serves(region)))
            .take(limit)
            .cloned()
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{BatchOp, Command, Format};

    fn put(key: &str, n: u64) -> BatchOp {
        BatchOp::Put { key: key.into(), format: Format::Json, text: format!("{{\"n\":{n}}}") }
    }

    fn guard(canary: &[&str]) -> Guard {
        Guard {
            canary_regions: canary.iter().map(|s| s.to_string()).collect(),
            bake_ms: 1000,
            max_error_ppm: 50_000,
            min_requests: 100,
        }
    }

    /// Namespace `web` at version 2 with a = 1, then a rollout of a = 2 (version 3) to `eu`.
    fn baking() -> Model {
        let mut m = Model::default();
        let create = Command::CreateNamespace { namespace: "web".into(), schema: None, author: "t".into(), at_ms: 0 };
        m.apply(create).unwrap();
        let batch = Command::Batch {
            namespace: "web".into(),
            ops: vec![put("a", 1)],
            expected_version: None,
            author: "t".into(),
            message: String::new(),
            at_ms: 1,
        };
        m.apply(batch).unwrap();
        let start = Command::StartRollout {
            namespace: "web".into(),
            ops: vec![put("a", 2)],
            guard: guard(&["eu"]),
            expected_version: Some(2),
            author: "ana".into(),
            message: "raise a".into(),
            at_ms: 10_000,
        };
        let c = m.apply(start).unwrap();
        assert_eq!(c.version, 3);
        m
    }

    fn n(m: &Model, region: &str) -> u64 {
        m.get_for("web", "a", region).unwrap().json["n"].as_u64().unwrap()
    }

    fn report(region: &str, errors: u64, requests: u64, at_ms: u64) -> GuardCommand {
        GuardCommand::ReportHealth { region: region.into(), namespace: None, errors, requests, at_ms }
    }

    #[test]
    fn canary_regions_serve_the_rollout_and_the_rest_wait() {
        let m = baking();
        assert_eq!((n(&m, "eu"), n(&m, "us")), (2, 1));
        assert_eq!(m.serving_version("web", "us").unwrap(), 2);
        assert_eq!(m.list_for("web", "", "us").unwrap().0, 2);
        assert_eq!(m.history_for("web", 2, 10, "eu").unwrap().len(), 1);
        assert!(m.history_for("web", 2, 10, "us").unwrap().is_empty());
        let put = Command::Put {
            namespace: "web".into(),
            key: "b".into(),
            format: Format::Json,
            text: "1".into(),
            expected_version: None,
            expected_key_version: None,
            author: "t".into(),
            message: String::new(),
            at_ms: 1,
        };
        assert_eq!(m.validate(&put).unwrap_err().code(), "rollout_in_progress");
    }

    #[test]
    fn a_breaching_canary_rolls_back_everywhere_at_once() {
        let mut m = baking();
        // Below min_requests nothing is judged, however bad; a non-canary region is ignored.
        assert_eq!(m.guard(report("eu", 50, 60, 10_100)).unwrap()[0].rollout.state, RolloutState::Canary);
        assert!(m.guard(report("us", 90, 100, 10_100)).unwrap().is_empty());
        let out = m.guard(report("eu", 10, 60, 10_200)).unwrap();
        let r = &out[0].rollout;
        assert_eq!(r.state, RolloutState::RolledBack);
        assert_eq!(r.rollback_version, Some(4));
        assert_eq!(r.decided_by.as_deref(), Some(GUARD_AUTHOR));
        assert!(r.reason.as_ref().unwrap().contains("50.00% (60/120) in canary region eu"), "{:?}", r.reason);
        assert_eq!((n(&m, "eu"), n(&m, "us")), (1, 1));
        // The decision is on version 3 in the history; us never sees version 3, eu sees both.
        let h = m.history("web", 2, 10).unwrap();
        assert_eq!(h[0].rollout.as_ref().unwrap().state, RolloutState::RolledBack);
        assert_eq!(h[1].author, GUARD_AUTHOR);
        let versions =
            |region| m.history_for("web", 2, 10, region).unwrap().iter().map(|c| c.version).collect::<Vec<_>>();
        assert_eq!(versions("us"), vec![4]);
        assert_eq!(versions("eu"), vec![3, 4]);
        // The namespace takes changes again; the rollout cannot be decided twice.
        assert_eq!(m.guard(report("eu", 0, 1, 10_300)).unwrap().len(), 0);
        let abort = GuardCommand::Abort {
            namespace: "web".into(),
            version: None,
            author: "x".into(),
            reason: String::new(),
            at_ms: 0,
        };
        assert_eq!(m.guard(abort).unwrap_err().code(), "no_rollout");
    }

    #[test]
    fn promotion_needs_the_bake_time_and_evidence() {
        let mut m = baking();
        let promote = |at_ms| GuardCommand::Promote {
            namespace: "web".into(),
            version: Some(3),
            force: false,
            author: "g".into(),
            at_ms,
        };
        let e = m.guard(promote(10_500)).unwrap_err();
        assert_eq!(e.code(), "rollout_not_ready");
        assert!(e.to_string().contains("bake time ends in 500 ms"), "{e}");
        assert!(m.due_rollouts(11_000).is_empty(), "no evidence yet");
        let e = m.guard(promote(11_000)).unwrap_err();
        assert!(e.to_string().contains("eu (0 of 100)"), "{e}");
        m.guard(report("eu", 4, 100, 10_600)).unwrap(); // 4% ≤ 5%
        assert_eq!(m.due_rollouts(10_999), vec![]);
        assert_eq!(m.due_rollouts(11_000), vec![("web".to_string(), 3)]);
        let out = m.guard(promote(11_000)).unwrap();
        assert_eq!(out[0].rollout.state, RolloutState::Promoted);
        assert_eq!((n(&m, "eu"), n(&m, "us")), (2, 2));
        assert_eq!(m.history_for("web", 2, 10, "us").unwrap().len(), 1);
        assert_eq!(m.rollout("web").unwrap().rollout.state, RolloutState::Promoted);
    }

    #[test]
    fn a_forced_promotion_and_an_abort_are_recorded_with_who_and_why() {
        let mut m = baking();
        let snap = m.snapshot();
        let promote = GuardCommand::Promote {
            namespace: "web".into(),
            version: None,
            force: true,
            author: "ops".into(),
            at_ms: 10_001,
        };
        let r = m.guard(promote).unwrap().remove(0).rollout;
        assert_eq!((r.state, r.decided_by.as_deref()), (RolloutState::Promoted, Some("ops")));
        // The same start, restored from a snapshot, aborted instead.
        let mut m = Model::restore(&snap).unwrap();
        let abort = GuardCommand::Abort {
            namespace: "web".into(),
            version: Some(9),
            author: "ops".into(),
            reason: "pager".into(),
            at_ms: 1,
        };
        assert_eq!(m.guard(abort).unwrap_err().code(), "no_rollout");
        let abort = GuardCommand::Abort {
            namespace: "web".into(),
            version: Some(3),
            author: "ops".into(),
            reason: "pager".into(),
            at_ms: 1,
        };
        let r = m.guard(abort).unwrap().remove(0).rollout;
        assert_eq!(
            (r.state, r.reason.as_deref(), r.rollback_version),
            (RolloutState::RolledBack, Some("pager"), Some(4))
        );
        assert_eq!(n(&m, "eu"), 1);
    }

    #[test]
    fn bad_rollouts_and_reports_are_refused_and_change_nothing() {
        let mut m = baking();
        let before = m.snapshot();
        for (g, what) in [
            (Guard { canary_regions: vec![], ..guard(&[]) }, "canary_regions"),
            (guard(&["eu", "eu"]), "twice"),
            (guard(&["e u"]), "not a region"),
            (Guard { bake_ms: 0, ..guard(&["eu"]) }, "bake_ms"),
            (Guard { max_error_ppm: 1_000_001, ..guard(&["eu"]) }, "max_error_rate"),
            (Guard { min_requests: 0, ..guard(&["eu"]) }, "min_requests"),
        ] {
            assert!(g.check().unwrap_err().to_string().contains(what), "{what}");
        }
        assert_eq!(m.guard(report("eu", 2, 1, 0)).unwrap_err().code(), "invalid_health_report");
        assert_eq!(m.guard(report("", 0, 1, 0)).unwrap_err().code(), "invalid_health_report");
        let r = GuardCommand::ReportHealth {
            region: "eu".into(),
            namespace: Some("nope".into()),
            errors: 0,
            requests: 1,
            at_ms: 0,
        };
        assert_eq!(m.guard(r).unwrap_err().code(), "unknown_namespace");
        assert_eq!(m.snapshot(), before);
    }
}
