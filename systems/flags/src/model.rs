//! The replicated state of the flag service, as a pure, deterministic state machine: projects,
//! their environments, each environment's flags and segments (a [`FlagSet`] with a version that
//! grows by one per change), the audit history, the deltas streamed to SDKs, and scheduled
//! changes.
//!
//! Every command carries the proposer's time (`at_ms`) and author, so applying it needs no clock
//! and gives the same state on every replica. A change is validated against the whole
//! environment (references, prerequisite cycles) before anything is written: a refused command
//! changes nothing.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;

use basalt_flags_core::{Delta, Flag, FlagSet, FlagStore, Segment, Snapshot, ValidationError};
use serde::{Deserialize, Serialize};

use crate::diff::{FieldChange, diff};

/// Audit entries kept per environment (older ones are dropped first).
pub const HISTORY_MAX: usize = 10_000;
/// Deltas kept per environment for streams that resume; a client further behind gets a snapshot.
pub const DELTAS_MAX: usize = 1_000;
/// Pending scheduled changes, in all.
pub const SCHEDULED_MAX: usize = 10_000;
/// Outcomes of scheduled changes kept.
pub const SCHEDULE_LOG_MAX: usize = 1_000;

/// Why a command or read was refused.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum FlagsError {
    #[error("`{name}` is not a valid {what} (1-{max} characters of A-Z a-z 0-9 - _ . :)")]
    InvalidName { what: &'static str, name: String, max: usize },
    #[error("invalid definition: {0}")]
    Invalid(ValidationError),
    #[error("cannot remove it: {0}")]
    InUse(ValidationError),
    #[error("no project `{0}`")]
    ProjectNotFound(String),
    #[error("no environment `{1}` in project `{0}`")]
    EnvironmentNotFound(String, String),
    #[error("no flag `{0}` in this environment")]
    FlagNotFound(String),
    #[error("no segment `{0}` in this environment")]
    SegmentNotFound(String),
    #[error("no scheduled change {0}")]
    ScheduleNotFound(u64),
    #[error("{0} already exists")]
    Exists(String),
    #[error("the environment is at version {actual}, not the expected {expected}")]
    VersionConflict { expected: u64, actual: u64 },
    #[error("{0}")]
    Limit(String),
}

impl FlagsError {
    pub fn code(&self) -> &'static str {
        match self {
            FlagsError::InvalidName { .. } => "invalid_name",
            FlagsError::Invalid(_) => "invalid_definition",
            FlagsError::InUse(_) => "in_use",
            FlagsError::ProjectNotFound(_) => "project_not_found",
            FlagsError::EnvironmentNotFound(..) => "environment_not_found",
            FlagsError::FlagNotFound(_) => "flag_not_found",
            FlagsError::SegmentNotFound(_) => "segment_not_found",
            FlagsError::ScheduleNotFound(_) => "schedule_not_found",
            FlagsError::Exists(_) => "already_exists",
            FlagsError::VersionConflict { .. } => "version_conflict",
            FlagsError::Limit(_) => "limit_reached",
        }
    }

    pub fn http_status(&self) -> u16 {
        match self {
            FlagsError::InvalidName { .. } | FlagsError::Invalid(_) => 400,
            FlagsError::ProjectNotFound(_)
            | FlagsError::EnvironmentNotFound(..)
            | FlagsError::FlagNotFound(_)
            | FlagsError::SegmentNotFound(_)
            | FlagsError::ScheduleNotFound(_) => 404,
            FlagsError::InUse(_)
            | FlagsError::Exists(_)
            | FlagsError::VersionConflict { .. }
            | FlagsError::Limit(_) => 409,
        }
    }

    /// The offending field's path, for definition errors.
    pub fn field(&self) -> Option<&str> {
        match self {
            FlagsError::Invalid(v) | FlagsError::InUse(v) => Some(v.path.as_str()).filter(|p| !p.is_empty()),
            _ => None,
        }
    }
}

pub type Result<T, E = FlagsError> = std::result::Result<T, E>;

/// Names of projects, environments, flags and segments: what fits in a URL path unescaped.
pub fn check_name(what: &'static str, name: &str, max: usize) -> Result<()> {
    let ok = (1..=max).contains(&name.len()) && name.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b));
    if ok { Ok(()) } else { Err(FlagsError::InvalidName { what, name: name.to_owned(), max }) }
}

const NAME_MAX: usize = 64;
const KEY_MAX: usize = 200;

/// A change to one environment's definitions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "action", rename_all = "snake_case", deny_unknown_fields)]
pub enum Change {
    PutFlag {
        flag: Flag,
    },
    DeleteFlag {
        key: String,
    },
    /// Turn a flag on or off (off serves its `off_variant`).
    SetEnabled {
        key: String,
        enabled: bool,
    },
    PutSegment {
        segment: Segment,
    },
    DeleteSegment {
        key: String,
    },
}

impl Change {
    fn action(&self) -> &'static str {
        match self {
            Change::PutFlag { .. } => "put_flag",
            Change::DeleteFlag { .. } => "delete_flag",
            Change::SetEnabled { enabled: true, .. } => "enable_flag",
            Change::SetEnabled { enabled: false, .. } => "disable_flag",
            Change::PutSegment { .. } => "put_segment",
            Change::DeleteSegment { .. } => "delete_segment",
        }
    }

    /// `("flag" | "segment", key)`.
    fn target(&self) -> (&'static str, &str) {
        match self {
            Change::PutFlag { flag } => ("flag", &flag.key),
            Change::DeleteFlag { key } | Change::SetEnabled { key, .. } => ("flag", key),
            Change::PutSegment { segment } => ("segment", &segment.key),
            Change::DeleteSegment { key } => ("segment", key),
        }
    }

    /// What can be checked without the environment: key syntax, and that a flag or segment
    /// compiles on its own. (References are checked against the environment when applied.)
    pub fn check(&self) -> Result<()> {
        let (what, key) = self.target();
        check_name(if what == "flag" { "flag key" } else { "segment key" }, key, KEY_MAX)?;
        match self {
            Change::PutFlag { flag } => basalt_flags_core::compile(flag.clone()).map(drop).map_err(FlagsError::Invalid),
            Change::PutSegment { segment } => {
                basalt_flags_core::compile_segment(segment.clone()).map(drop).map_err(FlagsError::Invalid)
            }
            _ => Ok(()),
        }
    }
}

/// A replicated command: who, when (the proposer's clock), and what.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Command {
    pub at_ms: u64,
    pub author: String,
    #[serde(default)]
    pub message: String,
    pub op: Op,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum Op {
    CreateProject {
        project: String,
        #[serde(default)]
        description: String,
    },
    /// A new environment, empty or a copy of another of the same project.
    CreateEnvironment {
        project: String,
        environment: String,
        sdk_key: String,
        #[serde(default)]
        copy_from: Option<String>,
    },
    Change {
        project: String,
        environment: String,
        change: Change,
        #[serde(default)]
        expected_version: Option<u64>,
    },
    /// The kill switch: turn `flag` off in every listed environment (none listed: every
    /// environment of the project that has it), in one entry.
    Kill {
        project: String,
        flag: String,
        #[serde(default)]
        environments: Vec<String>,
    },
    Schedule {
        project: String,
        environment: String,
        run_at_ms: u64,
        change: Change,
    },
    CancelSchedule {
        id: u64,
    },
    /// Apply every scheduled change due at `at_ms` (the leader proposes it when one is due).
    RunDue,
}

/// One entry of an environment's audit history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// The environment version this change produced.
    pub version: u64,
    pub at_ms: u64,
    pub author: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
    pub action: String,
    /// `flag` or `segment` (or `environment` for a copy).
    pub kind: String,
    pub key: String,
    /// `api`, `kill_switch`, `schedule:<id>` or `copy:<environment>`.
    pub source: String,
    pub changes: Vec<FieldChange>,
}

/// A scheduled change, waiting.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Scheduled {
    pub id: u64,
    pub project: String,
    pub environment: String,
    pub run_at_ms: u64,
    pub change: Change,
    pub author: String,
    pub created_at_ms: u64,
}

/// What became of a scheduled change when it was due.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScheduleOutcome {
    pub id: u64,
    pub project: String,
    pub environment: String,
    pub ran_at_ms: u64,
    /// The environment version it produced, or why it could not be applied then.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Environment {
    pub sdk_key: String,
    pub created_at_ms: u64,
    set: FlagSet,
    history: VecDeque<AuditEntry>,
    deltas: VecDeque<Delta>,
    /// The compiled set (rebuilt after every change and on restore).
    #[serde(skip)]
    compiled: Arc<FlagStore>,
}

impl Environment {
    fn new(sdk_key: String, at_ms: u64, set: FlagSet) -> Result<Self> {
        let compiled = Arc::new(set.compile().map_err(FlagsError::Invalid)?);
        Ok(Environment {
            sdk_key,
            created_at_ms: at_ms,
            set,
            history: VecDeque::new(),
            deltas: VecDeque::new(),
            compiled,
        })
    }

    pub fn version(&self) -> u64 {
        self.set.version
    }

    pub fn set(&self) -> &FlagSet {
        &self.set
    }

    pub fn compiled(&self) -> &Arc<FlagStore> {
        &self.compiled
    }

    /// Applies one change as the next version, or refuses it and changes nothing.
    fn change(&mut self, change: &Change, cmd: &Command, source: &str) -> Result<AuditEntry> {
        change.check()?;
        let version = self.set.version + 1;
        let mut delta = Delta { version, ..Delta::default() };
        let (kind, key) = change.target();
        let before = match kind {
            "flag" => self.set.flags.get(key).map(to_json),
            _ => self.set.segments.get(key).map(to_json),
        };
        let removing = matches!(change, Change::DeleteFlag { .. } | Change::DeleteSegment { .. });
        match change {
            Change::PutFlag { flag } => {
                let mut flag = flag.clone();
                flag.version = version;
                delta.flags.push(flag);
            }
            Change::SetEnabled { key, enabled } => {
                let mut flag = self.set.flags.get(key).cloned().ok_or_else(|| FlagsError::FlagNotFound(key.clone()))?;
                flag.enabled = *enabled;
                flag.version = version;
                delta.flags.push(flag);
            }
            Change::DeleteFlag { key } => {
                if !self.set.flags.contains_key(key) {
                    return Err(FlagsError::FlagNotFound(key.clone()));
                }
                delta.deleted_flags.push(key.clone());
            }
            Change::PutSegment { segment } => delta.segments.push(segment.clone()),
            Change::DeleteSegment { key } => {
                if !self.set.segments.contains_key(key) {
                    return Err(FlagsError::SegmentNotFound(key.clone()));
                }
                delta.deleted_segments.push(key.clone());
            }
        }
        let mut next = self.set.clone();
        next.apply(&delta)
            .map_err(|e| FlagsError::Invalid(ValidationError { path: String::new(), message: e.to_string() }))?;
        let compiled = next.compile().map_err(if removing { FlagsError::InUse } else { FlagsError::Invalid })?;
        let after = match kind {
            "flag" => next.flags.get(key).map(to_json),
            _ => next.segments.get(key).map(to_json),
        };
        let entry = AuditEntry {
            version,
            at_ms: cmd.at_ms,
            author: cmd.author.clone(),
            message: cmd.message.clone(),
            action: change.action().to_owned(),
            kind: kind.to_owned(),
            key: key.to_owned(),
            source: source.to_owned(),
            changes: diff(before.as_ref(), after.as_ref()),
        };
        self.set = next;
        self.compiled = Arc::new(compiled);
        push_capped(&mut self.deltas, delta, DELTAS_MAX);
        push_capped(&mut self.history, entry.clone(), HISTORY_MAX);
        Ok(entry)
    }

    /// The deltas after `since`, if this environment still has all of them (else the client
    /// needs a snapshot).
    pub fn deltas_after(&self, since: u64) -> Option<Vec<Delta>> {
        if since >= self.set.version {
            return Some(Vec::new());
        }
        let first = self.deltas.front()?.version;
        if since + 1 < first {
            return None;
        }
        Some(self.deltas.iter().filter(|d| d.version > since).cloned().collect())
    }

    /// Audit entries with version > `since`, oldest first, at most `limit`; `key` filters.
    pub fn history(&self, since: u64, limit: usize, key: Option<&str>) -> Vec<AuditEntry> {
        self.history
            .iter()
            .filter(|e| e.version > since && key.is_none_or(|k| e.key == k))
            .take(limit)
            .cloned()
            .collect()
    }
}

fn to_json<T: Serialize>(v: &T) -> serde_json::Value {
    serde_json::to_value(v).unwrap_or(serde_json::Value::Null)
}

fn push_capped<T>(q: &mut VecDeque<T>, item: T, max: usize) {
    q.push_back(item);
    while q.len() > max {
        q.pop_front();
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Project {
    pub description: String,
    pub created_at_ms: u64,
    pub environments: BTreeMap<String, Environment>,
}

/// What a change produced in one environment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Applied {
    pub project: String,
    pub environment: String,
    pub version: u64,
    pub audit: AuditEntry,
}

/// An environment as listed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EnvironmentView {
    pub project: String,
    pub environment: String,
    pub version: u64,
    pub sdk_key: String,
    pub created_at_ms: u64,
    pub flags: usize,
    pub segments: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProjectView {
    pub project: String,
    pub description: String,
    pub created_at_ms: u64,
    pub environments: Vec<String>,
}

/// The whole replicated state.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Model {
    projects: BTreeMap<String, Project>,
    /// SDK key → (project, environment).
    sdk_keys: BTreeMap<String, (String, String)>,
    scheduled: BTreeMap<u64, Scheduled>,
    schedule_log: VecDeque<ScheduleOutcome>,
    /// The deltas the last applied command produced: `(project, environment, delta)`.
    #[serde(skip)]
    outbox: Vec<(String, String, Delta)>,
}

impl Model {
    /// The deltas produced since the last call, in the order they were made.
    pub fn take_outbox(&mut self) -> Vec<(String, String, Delta)> {
        std::mem::take(&mut self.outbox)
    }

    fn record(&mut self, project: &str, environment: &str) {
        if let Ok(d) = self.env(project, environment).map(|e| e.deltas.back().cloned())
            && let Some(d) = d
        {
            self.outbox.push((project.to_owned(), environment.to_owned(), d));
        }
    }

    pub fn snapshot(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// The state from [`snapshot`](Self::snapshot) bytes (empty bytes: the empty state).
    pub fn restore(bytes: &[u8]) -> anyhow::Result<Model> {
        if bytes.is_empty() {
            return Ok(Model::default());
        }
        let mut m: Model = serde_json::from_slice(bytes)?;
        for p in m.projects.values_mut() {
            for e in p.environments.values_mut() {
                e.compiled =
                    Arc::new(e.set.compile().map_err(|e| anyhow::anyhow!("a stored environment is invalid: {e}"))?);
            }
        }
        Ok(m)
    }

    /// Applies a command; `index` (the log index) names scheduled changes. The reply is JSON.
    pub fn apply(&mut self, index: u64, cmd: &Command) -> Result<serde_json::Value> {
        Ok(match &cmd.op {
            Op::CreateProject { project, description } => {
                check_name("project name", project, NAME_MAX)?;
                if self.projects.contains_key(project) {
                    return Err(FlagsError::Exists(format!("project `{project}`")));
                }
                let p = Project {
                    description: description.clone(),
                    created_at_ms: cmd.at_ms,
                    environments: BTreeMap::new(),
                };
                self.projects.insert(project.clone(), p);
                to_json(&self.project(project)?)
            }
            Op::CreateEnvironment { project, environment, sdk_key, copy_from } => {
                check_name("environment name", environment, NAME_MAX)?;
                check_name("SDK key", sdk_key, KEY_MAX)?;
                if self.sdk_keys.contains_key(sdk_key) {
                    return Err(FlagsError::Exists("an environment with this SDK key".into()));
                }
                let p = self.projects.get_mut(project).ok_or_else(|| FlagsError::ProjectNotFound(project.clone()))?;
                if p.environments.contains_key(environment) {
                    return Err(FlagsError::Exists(format!("environment `{project}/{environment}`")));
                }
                let env = match copy_from {
                    None => Environment::new(sdk_key.clone(), cmd.at_ms, FlagSet::default())?,
                    Some(from) => {
                        let src = p
                            .environments
                            .get(from)
                            .ok_or_else(|| FlagsError::EnvironmentNotFound(project.clone(), from.clone()))?;
                        let set =
                            FlagSet { version: 1, flags: src.set.flags.clone(), segments: src.set.segments.clone() };
                        let mut env = Environment::new(sdk_key.clone(), cmd.at_ms, set)?;
                        env.history.push_back(AuditEntry {
                            version: 1,
                            at_ms: cmd.at_ms,
                            author: cmd.author.clone(),
                            message: cmd.message.clone(),
                            action: "copy_environment".into(),
                            kind: "environment".into(),
                            key: from.clone(),
                            source: format!("copy:{from}"),
                            changes: Vec::new(),
                        });
                        env
                    }
                };
                p.environments.insert(environment.clone(), env);
                self.sdk_keys.insert(sdk_key.clone(), (project.clone(), environment.clone()));
                to_json(&self.environment_view(project, environment)?)
            }
            Op::Change { project, environment, change, expected_version } => {
                let env = self.env_mut(project, environment)?;
                if let Some(expected) = *expected_version
                    && expected != env.version()
                {
                    return Err(FlagsError::VersionConflict { expected, actual: env.version() });
                }
                let audit = env.change(change, cmd, "api")?;
                self.record(project, environment);
                to_json(&Applied {
                    project: project.clone(),
                    environment: environment.clone(),
                    version: audit.version,
                    audit,
                })
            }
            Op::Kill { project, flag, environments } => to_json(&self.kill(cmd, project, flag, environments)?),
            Op::Schedule { project, environment, run_at_ms, change } => {
                change.check()?;
                self.env_mut(project, environment)?;
                if self.scheduled.len() >= SCHEDULED_MAX {
                    return Err(FlagsError::Limit(format!("{SCHEDULED_MAX} scheduled changes are already waiting")));
                }
                let s = Scheduled {
                    id: index,
                    project: project.clone(),
                    environment: environment.clone(),
                    run_at_ms: *run_at_ms,
                    change: change.clone(),
                    author: cmd.author.clone(),
                    created_at_ms: cmd.at_ms,
                };
                self.scheduled.insert(index, s.clone());
                to_json(&s)
            }
            Op::CancelSchedule { id } => to_json(&self.scheduled.remove(id).ok_or(FlagsError::ScheduleNotFound(*id))?),
            Op::RunDue => to_json(&self.run_due(cmd)),
        })
    }

    fn kill(&mut self, cmd: &Command, project: &str, flag: &str, only: &[String]) -> Result<Vec<Applied>> {
        let p = self.projects.get_mut(project).ok_or_else(|| FlagsError::ProjectNotFound(project.to_owned()))?;
        for e in only {
            if !p.environments.contains_key(e) {
                return Err(FlagsError::EnvironmentNotFound(project.to_owned(), e.clone()));
            }
        }
        let targets: Vec<String> = p
            .environments
            .iter()
            .filter(|(name, env)| (only.is_empty() || only.contains(name)) && env.set.flags.contains_key(flag))
            .map(|(name, _)| name.clone())
            .collect();
        if targets.is_empty() {
            return Err(FlagsError::FlagNotFound(flag.to_owned()));
        }
        // Turning a flag off never breaks references, so no environment can refuse: all or none.
        let change = Change::SetEnabled { key: flag.to_owned(), enabled: false };
        let mut out = Vec::new();
        for name in targets {
            if let Some(env) = p.environments.get_mut(&name) {
                let audit = env.change(&change, cmd, "kill_switch")?;
                out.push(Applied { project: project.to_owned(), environment: name, version: audit.version, audit });
            }
        }
        for a in &out {
            self.record(project, &a.environment);
        }
        Ok(out)
    }

    fn run_due(&mut self, cmd: &Command) -> Vec<ScheduleOutcome> {
        let mut due: Vec<&Scheduled> = self.scheduled.values().filter(|s| s.run_at_ms <= cmd.at_ms).collect();
        due.sort_by_key(|s| (s.run_at_ms, s.id));
        let due: Vec<Scheduled> = due.into_iter().cloned().collect();
        let mut out = Vec::new();
        for s in due {
            self.scheduled.remove(&s.id);
            let as_cmd = Command { at_ms: cmd.at_ms, author: s.author.clone(), message: String::new(), op: Op::RunDue };
            let result = self
                .env_mut(&s.project, &s.environment)
                .and_then(|env| env.change(&s.change, &as_cmd, &format!("schedule:{}", s.id)));
            if result.is_ok() {
                self.record(&s.project, &s.environment);
            }
            let outcome = ScheduleOutcome {
                id: s.id,
                project: s.project,
                environment: s.environment,
                ran_at_ms: cmd.at_ms,
                version: result.as_ref().ok().map(|a| a.version),
                error: result.err().map(|e| e.to_string()),
            };
            push_capped(&mut self.schedule_log, outcome.clone(), SCHEDULE_LOG_MAX);
            out.push(outcome);
        }
        out
    }

    fn env_mut(&mut self, project: &str, environment: &str) -> Result<&mut Environment> {
        let p = self.projects.get_mut(project).ok_or_else(|| FlagsError::ProjectNotFound(project.to_owned()))?;
        p.environments
            .get_mut(environment)
            .ok_or_else(|| FlagsError::EnvironmentNotFound(project.to_owned(), environment.to_owned()))
    }

    pub fn env(&self, project: &str, environment: &str) -> Result<&Environment> {
        let p = self.projects.get(project).ok_or_else(|| FlagsError::ProjectNotFound(project.to_owned()))?;
        p.environments
            .get(environment)
            .ok_or_else(|| FlagsError::EnvironmentNotFound(project.to_owned(), environment.to_owned()))
    }

    /// The environment an SDK key belongs to.
    pub fn by_sdk_key(&self, key: &str) -> Option<(&str, &str)> {
        self.sdk_keys.get(key).map(|(p, e)| (p.as_str(), e.as_str()))
    }

    pub fn projects(&self) -> Vec<ProjectView> {
        self.projects.keys().filter_map(|p| self.project(p).ok()).collect()
    }

    pub fn project(&self, name: &str) -> Result<ProjectView> {
        let p = self.projects.get(name).ok_or_else(|| FlagsError::ProjectNotFound(name.to_owned()))?;
        Ok(ProjectView {
            project: name.to_owned(),
            description: p.description.clone(),
            created_at_ms: p.created_at_ms,
            environments: p.environments.keys().cloned().collect(),
        })
    }

    pub fn environment_view(&self, project: &str, environment: &str) -> Result<EnvironmentView> {
        let e = self.env(project, environment)?;
        Ok(EnvironmentView {
            project: project.to_owned(),
            environment: environment.to_owned(),
            version: e.version(),
            sdk_key: e.sdk_key.clone(),
            created_at_ms: e.created_at_ms,
            flags: e.set.flags.len(),
            segments: e.set.segments.len(),
        })
    }

    pub fn snapshot_of(&self, project: &str, environment: &str) -> Result<Snapshot> {
        Ok(self.env(project, environment)?.set.to_snapshot(project, environment))
    }

    pub fn scheduled(&self) -> Vec<Scheduled> {
        self.scheduled.values().cloned().collect()
    }

    pub fn schedule_log(&self) -> Vec<ScheduleOutcome> {
        self.schedule_log.iter().cloned().collect()
    }

    /// When the earliest scheduled change is due.
    pub fn next_due(&self) -> Option<u64> {
        self.scheduled.values().map(|s| s.run_at_ms).min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use basalt_flags_core::{EvalContext, FlagKind, Prerequisite, Reason, Serve};

    fn cmd(at_ms: u64, op: Op) -> Command {
        Command { at_ms, author: "ann".into(), message: String::new(), op }
    }

    fn flag(key: &str) -> Flag {
        Flag {
            key: key.into(),
            variants: [("on".to_owned(), true.into()), ("off".to_owned(), false.into())].into(),
            kind: FlagKind::Boolean,
            enabled: true,
            off_variant: "off".into(),
            fallthrough: Serve::Variant("on".into()),
            rules: vec![],
            prerequisites: vec![],
            salt: String::new(),
            version: 0,
        }
    }

    fn change(env: &str, change: Change) -> Op {
        Op::Change { project: "p".into(), environment: env.into(), change, expected_version: None }
    }

    fn model() -> Model {
        let mut m = Model::default();
        m.apply(1, &cmd(1, Op::CreateProject { project: "p".into(), description: String::new() })).unwrap();
        for (i, env) in ["prod", "staging"].iter().enumerate() {
            let op = Op::CreateEnvironment {
                project: "p".into(),
                environment: (*env).into(),
                sdk_key: format!("key-{env}"),
                copy_from: None,
            };
            m.apply(2 + i as u64, &cmd(2, op)).unwrap();
        }
        m
    }

    fn on(m: &Model, env: &str, key: &str) -> bool {
        m.env("p", env).unwrap().compiled().evaluate(key, &EvalContext::with_key("u")).value == true
    }

    #[test]
    fn a_change_bumps_the_version_records_a_diff_and_a_delta() {
        let mut m = model();
        m.apply(5, &cmd(10, change("prod", Change::PutFlag { flag: flag("a") }))).unwrap();
        let off = change("prod", Change::SetEnabled { key: "a".into(), enabled: false });
        let r = m.apply(6, &cmd(11, off)).unwrap();
        assert_eq!(r["version"], 2);
        let env = m.env("p", "prod").unwrap();
        let h = env.history(0, 10, None);
        assert_eq!(h.len(), 2);
        assert_eq!(h[1].action, "disable_flag");
        let paths: Vec<&str> = h[1].changes.iter().map(|c| c.path.as_str()).collect();
        assert_eq!(paths, ["enabled", "version"]);
        assert_eq!(env.deltas_after(0).unwrap().len(), 2);
        assert!(!env.deltas_after(1).unwrap()[0].flags[0].enabled);
        assert!(!on(&m, "prod", "a"));
    }

    #[test]
    fn a_refused_change_changes_nothing() {
        let mut m = model();
        let mut bad = flag("b");
        bad.prerequisites.push(Prerequisite { flag: "missing".into(), variant: "on".into() });
        let e = m.apply(5, &cmd(10, change("prod", Change::PutFlag { flag: bad }))).unwrap_err();
        assert_eq!(e.code(), "invalid_definition");
        assert_eq!(e.field(), Some("flags[\"b\"].prerequisites[0].flag"));
        assert_eq!(m.env("p", "prod").unwrap().version(), 0);
        assert!(m.env("p", "prod").unwrap().history(0, 10, None).is_empty());

        // Deleting a flag another one needs is refused as `in_use`.
        m.apply(6, &cmd(10, change("prod", Change::PutFlag { flag: flag("a") }))).unwrap();
        let mut dep = flag("b");
        dep.prerequisites.push(Prerequisite { flag: "a".into(), variant: "on".into() });
        m.apply(7, &cmd(10, change("prod", Change::PutFlag { flag: dep }))).unwrap();
        let e = m.apply(8, &cmd(10, change("prod", Change::DeleteFlag { key: "a".into() }))).unwrap_err();
        assert_eq!(e.code(), "in_use");
        assert_eq!(m.env("p", "prod").unwrap().version(), 2);

        let stale = Op::Change {
            project: "p".into(),
            environment: "prod".into(),
            change: Change::DeleteFlag { key: "b".into() },
            expected_version: Some(1),
        };
        assert_eq!(m.apply(9, &cmd(10, stale)).unwrap_err().code(), "version_conflict");
        assert_eq!(
            m.apply(9, &cmd(10, change("prod", Change::DeleteFlag { key: "zz".into() }))).unwrap_err().code(),
            "flag_not_found"
        );
    }

    #[test]
    fn the_kill_switch_turns_a_flag_off_in_every_environment_at_once() {
        let mut m = model();
        m.apply(5, &cmd(10, change("prod", Change::PutFlag { flag: flag("a") }))).unwrap();
        m.apply(6, &cmd(10, change("staging", Change::PutFlag { flag: flag("a") }))).unwrap();
        let r = m.apply(7, &cmd(11, Op::Kill { project: "p".into(), flag: "a".into(), environments: vec![] })).unwrap();
        assert_eq!(r.as_array().unwrap().len(), 2);
        assert!(!on(&m, "prod", "a") && !on(&m, "staging", "a"));
        assert_eq!(m.env("p", "prod").unwrap().history(0, 10, None)[1].source, "kill_switch");
        let none = Op::Kill { project: "p".into(), flag: "zz".into(), environments: vec![] };
        assert_eq!(m.apply(8, &cmd(11, none)).unwrap_err().code(), "flag_not_found");
    }

    #[test]
    fn scheduled_changes_run_when_due_and_record_their_outcome() {
        let mut m = model();
        m.apply(5, &cmd(10, change("prod", Change::PutFlag { flag: flag("a") }))).unwrap();
        let s = Op::Schedule {
            project: "p".into(),
            environment: "prod".into(),
            run_at_ms: 100,
            change: Change::SetEnabled { key: "a".into(), enabled: false },
        };
        m.apply(6, &cmd(10, s)).unwrap();
        let doomed = Op::Schedule {
            project: "p".into(),
            environment: "prod".into(),
            run_at_ms: 150,
            change: Change::DeleteFlag { key: "gone".into() },
        };
        m.apply(7, &cmd(10, doomed)).unwrap();
        assert_eq!(m.next_due(), Some(100));
        assert!(m.apply(8, &cmd(50, Op::RunDue)).unwrap().as_array().unwrap().is_empty());
        assert!(on(&m, "prod", "a"));
        let ran = m.apply(9, &cmd(200, Op::RunDue)).unwrap();
        assert_eq!(ran[0]["version"], 2);
        assert!(ran[1]["error"].as_str().unwrap().contains("gone"));
        assert!(!on(&m, "prod", "a"));
        assert_eq!(m.next_due(), None);
        assert_eq!(m.schedule_log().len(), 2);
        assert_eq!(m.env("p", "prod").unwrap().history(1, 10, None)[0].source, "schedule:6");
    }

    #[test]
    fn copying_an_environment_copies_its_definitions_and_restores_compile() {
        let mut m = model();
        let mut f = flag("a");
        f.fallthrough =
            Serve::Rollout { bucket_by: None, weights: vec![("on".into(), 50_000), ("off".into(), 50_000)] };
        m.apply(5, &cmd(10, change("prod", Change::PutFlag { flag: f }))).unwrap();
        let copy = Op::CreateEnvironment {
            project: "p".into(),
            environment: "qa".into(),
            sdk_key: "key-qa".into(),
            copy_from: Some("prod".into()),
        };
        m.apply(6, &cmd(10, copy)).unwrap();
        assert_eq!(m.by_sdk_key("key-qa"), Some(("p", "qa")));
        let restored = Model::restore(&m.snapshot()).unwrap();
        let ctx = EvalContext::with_key("user-7");
        let a = m.env("p", "prod").unwrap().compiled().evaluate("a", &ctx);
        let b = restored.env("p", "qa").unwrap().compiled().evaluate("a", &ctx);
        assert_eq!((a.value, a.reason), (b.value, Reason::Split));
        let dup = Op::CreateEnvironment {
            project: "p".into(),
            environment: "x".into(),
            sdk_key: "key-qa".into(),
            copy_from: None,
        };
        assert_eq!(m.apply(7, &cmd(10, dup)).unwrap_err().code(), "already_exists");
    }

    #[test]
    fn deltas_beyond_the_kept_window_need_a_snapshot() {
        let mut m = model();
        for i in 0..(DELTAS_MAX as u64 + 5) {
            let on = Change::PutFlag { flag: flag(&format!("f{}", i % 3)) };
            m.apply(10 + i, &cmd(10, change("prod", on))).unwrap();
        }
        let env = m.env("p", "prod").unwrap();
        assert!(env.deltas_after(0).is_none());
        assert_eq!(env.deltas_after(env.version() - 3).unwrap().len(), 3);
        assert_eq!(env.deltas_after(5).map(|d| d.len()), Some(DELTAS_MAX));
    }

    #[test]
    fn names_are_checked() {
        let mut m = model();
        let e =
            m.apply(5, &cmd(1, Op::CreateProject { project: "a b".into(), description: String::new() })).unwrap_err();
        assert_eq!(e.code(), "invalid_name");
        let e = m.apply(5, &cmd(1, change("prod", Change::PutFlag { flag: flag("") }))).unwrap_err();
        assert_eq!(e.code(), "invalid_name");
    }
}
