//! The pure model of S03: namespaces of validated, versioned keys, as a deterministic state
//! machine.
//!
//! **Determinism.** It runs inside the consensus engine on every node: the same commands in the
//! same order must give byte-identical state and replies everywhere. So it uses ordered maps
//! only, never reads a clock (times arrive inside commands as `at_ms`), and never draws a
//! random number. A command is validated completely before anything changes: `apply` is all or
//! nothing.
//!
//! **Versions.** Each namespace has a version counter; every change (creation, put, delete,
//! batch, rollback, schema change) is version+1 and an immutable [`Change`] in its history,
//! carrying author, message, time, and per key the value before and after with a diff.
//!
//! **History and old versions.** The state at any retained version is rebuilt by replaying the
//! history from a base state. At most `history_max` changes are kept per namespace; older ones
//! are folded into the base, after which versions before the base answer `version_compacted`.
//!
//! **Hashes.** A namespace's content hash (the wrapping sum of FNV-1a 64 hashes of each key and
//! its canonical JSON, so it is independent of order and updated per write) lets replicas and
//! regions compare what they hold without shipping it. It is recomputed from the keys on
//! restore, so a corrupted snapshot cannot carry a wrong hash along.

use std::collections::{BTreeMap, VecDeque};
use std::str::FromStr;
use std::sync::{Arc, OnceLock};

use serde::{Deserialize, Serialize};
use serde_json::Value;

pub mod audit;
pub mod rollout;
pub use audit::Digest;
pub use rollout::{Guard, GuardCommand, HealthTally, Rollout, RolloutState, RolloutView};

pub const VALUE_BYTES_MAX: usize = 256 * 1024;
pub const SCHEMA_BYTES_MAX: usize = 64 * 1024;
pub const HISTORY_MAX: usize = 10_000;
pub const BATCH_OPS_MAX: usize = 1_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    Json,
    Yaml,
    Toml,
}

impl FromStr for Format {
    type Err = ConfigError;
    fn from_str(s: &str) -> Result<Self, ConfigError> {
        match s.to_ascii_lowercase().as_str() {
            "json" => Ok(Format::Json),
            "yaml" | "yml" => Ok(Format::Yaml),
            "toml" => Ok(Format::Toml),
            other => Err(ConfigError::InvalidFormat(format!("`{other}` is not a format; use json, yaml or toml"))),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredValue {
    pub format: Format,
    /// The text as written.
    pub text: String,
    /// The parsed value, canonical JSON.
    pub json: Value,
    /// The namespace version that set it.
    pub version: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum BatchOp {
    Put { key: String, format: Format, text: String },
    Delete { key: String },
}

/// A write. Values and schemas travel as text and are parsed when applied, so every node
/// parses the same bytes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    CreateNamespace {
        namespace: String,
        schema: Option<String>,
        author: String,
        at_ms: u64,
    },
    SetSchema {
        namespace: String,
        schema: Option<String>,
        expected_version: Option<u64>,
        author: String,
        message: String,
        at_ms: u64,
    },
    Put {
        namespace: String,
        key: String,
        format: Format,
        text: String,
        expected_version: Option<u64>,
        /// The version at which the key last changed; 0 = the key must not exist.
        expected_key_version: Option<u64>,
        author: String,
        message: String,
        at_ms: u64,
    },
    Delete {
        namespace: String,
        key: String,
        expected_version: Option<u64>,
        author: String,
        message: String,
        at_ms: u64,
    },
    Rollback {
        namespace: String,
        to_version: u64,
        expected_version: Option<u64>,
        author: String,
        message: String,
        at_ms: u64,
    },
    /// Several puts and deletes in one namespace as one version, all or nothing.
    Batch {
        namespace: String,
        ops: Vec<BatchOp>,
        expected_version: Option<u64>,
        author: String,
        message: String,
        at_ms: u64,
    },
    /// A batch that goes to the canary regions first: the other regions keep serving the version
    /// before it until it is promoted (or it is rolled back everywhere). See [`rollout`].
    StartRollout {
        namespace: String,
        ops: Vec<BatchOp>,
        guard: Guard,
        expected_version: Option<u64>,
        author: String,
        message: String,
        at_ms: u64,
    },
}

/// One JSON-Patch-like operation (RFC 6902 shape, RFC 6901 paths).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DiffOp {
    pub op: String,
    pub path: String,
    #[serde(default)]
    pub value: Option<Value>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KeyChange {
    pub key: String,
    pub before: Option<StoredValue>,
    pub after: Option<StoredValue>,
    pub diff: Vec<DiffOp>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ChangeKind {
    Create,
    Put,
    Delete,
    Batch,
    Rollback {
        to_version: u64,
    },
    Schema,
    /// A batch started as a guarded rollout.
    Rollout,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Change {
    pub namespace: String,
    pub version: u64,
    pub at_ms: u64,
    pub author: String,
    pub message: String,
    pub kind: ChangeKind,
    pub keys: Vec<KeyChange>,
    /// The namespace's content hash after this change.
    pub content_hash: String,
    /// For a change started as a guarded rollout: the rollout and, once made, its decision
    /// (the one part of a change that is updated after it is made).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rollout: Option<Rollout>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NamespaceInfo {
    pub name: String,
    pub version: u64,
    pub keys: usize,
    pub content_hash: String,
    pub has_schema: bool,
    /// The oldest version whose state can still be read.
    pub oldest_version: u64,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ConfigError {
    #[error("invalid namespace name `{0}`: use 1-128 characters of A-Z a-z 0-9 . _ -")]
    InvalidNamespaceName(String),
    #[error("invalid key `{0}`: use 1-256 characters of A-Z a-z 0-9 . _ - /, not starting or ending with /")]
    InvalidKey(String),
    #[error("{0}")]
    InvalidFormat(String),
    #[error("namespace `{0}` does not exist")]
    UnknownNamespace(String),
    #[error("namespace `{0}` already exists")]
    NamespaceExists(String),
    #[error("key `{key}` does not exist in namespace `{namespace}`")]
    UnknownKey { namespace: String, key: String },
    #[error("invalid {format} value: {message}")]
    InvalidValue { format: &'static str, message: String },
    #[error("schema violation at `{path}`: {message}")]
    SchemaViolation { path: String, message: String },
    #[error("invalid JSON Schema: {0}")]
    InvalidSchema(String),
    #[error("the value is {size} bytes; the limit is {max}")]
    ValueTooLarge { size: usize, max: usize },
    #[error("expected version {expected} but the {what} is at version {current}")]
    VersionMismatch { what: &'static str, expected: u64, current: u64 },
    #[error("namespace `{namespace}` has no version {version} (it is at {current})")]
    UnknownVersion { namespace: String, version: u64, current: u64 },
    #[error("version {version} of `{namespace}` is no longer kept; the oldest is {oldest}")]
    VersionCompacted { namespace: String, version: u64, oldest: u64 },
    #[error("namespace `{namespace}` is already at version {version}'s content; nothing to roll back")]
    NothingToRollBack { namespace: String, version: u64 },
    #[error("a batch needs at least one operation")]
    EmptyBatch,
    #[error("a batch may hold at most {max} operations, not {len}")]
    BatchTooLarge { len: usize, max: usize },
    #[error("key `{0}` appears twice in the batch")]
    DuplicateKeyInBatch(String),
    #[error(
        "namespace `{namespace}` has a guarded rollout of version {version} baking in [{canary_regions}]; \
         wait for its decision, or promote or abort it"
    )]
    RolloutInProgress { namespace: String, version: u64, canary_regions: String },
    #[error("invalid rollout: {0}")]
    InvalidRollout(String),
    #[error("namespace `{namespace}` has no rollout baking{detail}")]
    NoRollout { namespace: String, detail: String },
    #[error("the rollout of `{namespace}` version {version} cannot be promoted yet: {why}")]
    RolloutNotReady { namespace: String, version: u64, why: String },
    #[error("invalid health report: {0}")]
    InvalidHealthReport(String),
}

impl ConfigError {
    pub fn code(&self) -> &'static str {
        match self {
            Self::InvalidNamespaceName(_) => "invalid_namespace_name",
            Self::InvalidKey(_) => "invalid_key",
            Self::InvalidFormat(_) => "invalid_format",
            Self::UnknownNamespace(_) => "unknown_namespace",
            Self::NamespaceExists(_) => "namespace_exists",
            Self::UnknownKey { .. } => "unknown_key",
            Self::InvalidValue { .. } => "invalid_value",
            Self::SchemaViolation { .. } => "schema_violation",
            Self::InvalidSchema(_) => "invalid_schema",
            Self::ValueTooLarge { .. } => "value_too_large",
            Self::VersionMismatch { .. } => "version_mismatch",
            Self::UnknownVersion { .. } => "unknown_version",
            Self::VersionCompacted { .. } => "version_compacted",
            Self::NothingToRollBack { .. } => "nothing_to_roll_back",
            Self::EmptyBatch => "empty_batch",
            Self::BatchTooLarge { .. } => "batch_too_large",
            Self::DuplicateKeyInBatch(_) => "duplicate_key_in_batch",
            Self::RolloutInProgress { .. } => "rollout_in_progress",
            Self::InvalidRollout(_) => "invalid_rollout",
            Self::NoRollout { .. } => "no_rollout",
            Self::RolloutNotReady { .. } => "rollout_not_ready",
            Self::InvalidHealthReport(_) => "invalid_health_report",
        }
    }

    pub fn http_status(&self) -> u16 {
        match self {
            Self::InvalidNamespaceName(_)
            | Self::InvalidKey(_)
            | Self::InvalidFormat(_)
            | Self::InvalidSchema(_)
            | Self::EmptyBatch
            | Self::DuplicateKeyInBatch(_)
            | Self::InvalidRollout(_)
            | Self::InvalidHealthReport(_) => 400,
            Self::UnknownNamespace(_) | Self::UnknownKey { .. } | Self::UnknownVersion { .. } => 404,
            Self::NamespaceExists(_)
            | Self::VersionMismatch { .. }
            | Self::NothingToRollBack { .. }
            | Self::RolloutInProgress { .. }
            | Self::NoRollout { .. }
            | Self::RolloutNotReady { .. } => 409,
            Self::VersionCompacted { .. } => 410,
            Self::ValueTooLarge { .. } | Self::BatchTooLarge { .. } => 413,
            Self::InvalidValue { .. } | Self::SchemaViolation { .. } => 422,
        }
    }
}

/// A compiled JSON Schema (boon), cached beside its text and rebuilt after a restore.
struct Compiled {
    schemas: boon::Schemas,
    index: boon::SchemaIndex,
}

#[derive(Default, Serialize, Deserialize)]
struct Namespace {
    version: u64,
    keys: BTreeMap<String, StoredValue>,
    schema: Option<String>,
    history: VecDeque<Change>,
    /// The state at `base_version`, from which older-than-current states are replayed.
    base_version: u64,
    base_keys: BTreeMap<String, StoredValue>,
    /// `content_hash(&keys)`, kept up to date on every write.
    hash: u64,
    /// The namespace's guarded rollout: baking (`Canary`), or the last one decided.
    #[serde(default)]
    rollout: Option<Rollout>,
    #[serde(skip)]
    compiled: OnceLock<Option<Arc<Compiled>>>,
}

impl Namespace {
    fn validator(&self) -> Result<Option<Arc<Compiled>>, ConfigError> {
        if let Some(c) = self.compiled.get() {
            return Ok(c.clone());
        }
        let compiled = match &self.schema {
            Some(text) => Some(Arc::new(compile_schema(text)?)),
            None => None,
        };
        Ok(self.compiled.get_or_init(|| compiled).clone())
    }

    fn state_at(&self, name: &str, version: u64) -> Result<BTreeMap<String, StoredValue>, ConfigError> {
        if version > self.version || version == 0 {
            return Err(ConfigError::UnknownVersion { namespace: name.into(), version, current: self.version });
        }
        if version == self.version {
            return Ok(self.keys.clone());
        }
        if version < self.base_version.max(1) {
            return Err(ConfigError::VersionCompacted { namespace: name.into(), version, oldest: self.base_version });
        }
        let mut keys = self.base_keys.clone();
        for change in self.history.iter().take_while(|c| c.version <= version) {
            for kc in &change.keys {
                match &kc.after {
                    Some(v) => keys.insert(kc.key.clone(), v.clone()),
                    None => keys.remove(&kc.key),
                };
            }
        }
        Ok(keys)
    }
}

/// The whole configuration state.
pub struct Model {
    namespaces: BTreeMap<String, Namespace>,
    history_max: usize,
}

impl Default for Model {
    fn default() -> Self {
        Self::with_history_max(HISTORY_MAX)
    }
}

#[derive(Serialize, Deserialize)]
struct Snapshot {
    namespaces: BTreeMap<String, Namespace>,
    history_max: usize,
}

fn check_namespace_name(ns: &str) -> Result<(), ConfigError> {
    let ok = (1..=128).contains(&ns.len()) && ns.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
    if ok { Ok(()) } else { Err(ConfigError::InvalidNamespaceName(ns.into())) }
}

fn check_key(key: &str) -> Result<(), ConfigError> {
    let ok = (1..=256).contains(&key.len())
        && key.bytes().all(|b| b.is_ascii_alphanumeric() || b"._-/".contains(&b))
        && !key.starts_with('/')
        && !key.ends_with('/');
    if ok { Ok(()) } else { Err(ConfigError::InvalidKey(key.into())) }
}

/// Parse `text` in `format` to canonical JSON.
pub fn parse_value(format: Format, text: &str) -> Result<Value, ConfigError> {
    if text.len() > VALUE_BYTES_MAX {
        return Err(ConfigError::ValueTooLarge { size: text.len(), max: VALUE_BYTES_MAX });
    }
    match format {
        Format::Json => {
            serde_json::from_str(text).map_err(|e| ConfigError::InvalidValue { format: "json", message: e.to_string() })
        }
        Format::Yaml => serde_norway::from_str::<Value>(text)
            .map_err(|e| ConfigError::InvalidValue { format: "yaml", message: e.to_string() }),
        Format::Toml => toml::from_str::<toml::Table>(text)
            .map(|t| toml_to_json(toml::Value::Table(t)))
            .map_err(|e| ConfigError::InvalidValue { format: "toml", message: e.to_string().trim().to_string() }),
    }
}

fn toml_to_json(v: toml::Value) -> Value {
    match v {
        toml::Value::String(s) => Value::String(s),
        toml::Value::Integer(i) => Value::from(i),
        toml::Value::Float(f) => serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number),
        toml::Value::Boolean(b) => Value::Bool(b),
        toml::Value::Datetime(d) => Value::String(d.to_string()),
        toml::Value::Array(a) => Value::Array(a.into_iter().map(toml_to_json).collect()),
        toml::Value::Table(t) => Value::Object(t.into_iter().map(|(k, v)| (k, toml_to_json(v))).collect()),
    }
}

fn compile_schema(text: &str) -> Result<Compiled, ConfigError> {
    if text.len() > SCHEMA_BYTES_MAX {
        return Err(ConfigError::InvalidSchema(format!(
            "the schema is {} bytes; the limit is {SCHEMA_BYTES_MAX}",
            text.len()
        )));
    }
    let value: Value = serde_json::from_str(text).map_err(|e| ConfigError::InvalidSchema(e.to_string()))?;
    let mut schemas = boon::Schemas::new();
    let mut compiler = boon::Compiler::new();
    compiler.add_resource("urn:basalt:schema", value).map_err(|e| ConfigError::InvalidSchema(e.to_string()))?;
    let index = compiler
        .compile("urn:basalt:schema", &mut schemas)
        .map_err(|e| ConfigError::InvalidSchema(format!("{e:#}")))?;
    Ok(Compiled { schemas, index })
}

fn check_schema(compiled: &Compiled, key: &str, value: &Value) -> Result<(), ConfigError> {
    compiled.schemas.validate(value, compiled.index).map_err(|e| {
        // The innermost cause names the failing instance location most precisely.
        let mut leaf = &e;
        while let Some(next) = leaf.causes.first() {
            leaf = next;
        }
        ConfigError::SchemaViolation {
            path: format!("{key}{}", leaf.instance_location),
            message: format!("{}", leaf.kind),
        }
    })
}

fn escape(token: &str) -> String {
    token.replace('~', "~0").replace('/', "~1")
}

/// A structural diff: objects by key, anything else replaced whole.
pub fn diff(before: &Value, after: &Value) -> Vec<DiffOp> {
    fn walk(path: &str, a: &Value, b: &Value, out: &mut Vec<DiffOp>) {
        if a == b {
            return;
        }
        match (a, b) {
            (Value::Object(x), Value::Object(y)) => {
                for (k, va) in x {
                    let p = format!("{path}/{}", escape(k));
                    match y.get(k) {
                        Some(vb) => walk(&p, va, vb, out),
                        None => out.push(DiffOp { op: "remove".into(), path: p, value: None }),
                    }
                }
                for (k, vb) in y {
                    if !x.contains_key(k) {
                        out.push(DiffOp {
                            op: "add".into(),
                            path: format!("{path}/{}", escape(k)),
                            value: Some(vb.clone()),
                        });
                    }
                }
            }
            _ => out.push(DiffOp { op: "replace".into(), path: path.into(), value: Some(b.clone()) }),
        }
    }
    let mut out = Vec::new();
    walk("", before, after, &mut out);
    out
}

fn key_change(key: &str, before: Option<StoredValue>, after: Option<StoredValue>) -> KeyChange {
    let diff = match (&before, &after) {
        (Some(b), Some(a)) => diff(&b.json, &a.json),
        (None, Some(a)) => vec![DiffOp { op: "add".into(), path: String::new(), value: Some(a.json.clone()) }],
        (Some(_), None) => vec![DiffOp { op: "remove".into(), path: String::new(), value: None }],
        (None, None) => Vec::new(),
    };
    KeyChange { key: key.into(), before, after, diff }
}

/// FNV-1a 64 of one entry: `key \0 canonical-json`.
fn entry_hash(key: &str, v: &StoredValue) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    let mut feed = |bytes: &[u8]| {
        for b in bytes {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    };
    feed(key.as_bytes());
    feed(&[0]);
    feed(v.json.to_string().as_bytes());
    h
}

/// A namespace's content hash: the wrapping sum of its entries' hashes — independent of order,
/// so it is updated per write in O(1) instead of rehashing every key.
fn content_hash(keys: &BTreeMap<String, StoredValue>) -> u64 {
    keys.iter().fold(0u64, |acc, (k, v)| acc.wrapping_add(entry_hash(k, v)))
}

fn hex(h: u64) -> String {
    format!("{h:016x}")
}

/// What a validated command will do, before anything is changed.
struct Plan {
    namespace: String,
    kind: ChangeKind,
    /// New values (None = delete) per key.
    writes: BTreeMap<String, Option<StoredValue>>,
    /// Schema change: Some(new schema text or None).
    schema: Option<Option<String>>,
    /// A guarded rollout this change starts (its version goes to the canary regions first).
    rollout: Option<Rollout>,
    author: String,
    message: String,
    at_ms: u64,
}

impl Plan {
    fn new(namespace: &str, kind: ChangeKind, author: &str, message: &str, at_ms: u64) -> Self {
        Self {
            namespace: namespace.into(),
            kind,
            writes: BTreeMap::new(),
            schema: None,
            rollout: None,
            author: author.into(),
            message: message.into(),
            at_ms,
        }
    }
}

impl Model {
    pub fn with_history_max(history_max: usize) -> Self {
        Self { namespaces: BTreeMap::new(), history_max: history_max.max(1) }
    }

    fn ns(&self, name: &str) -> Result<&Namespace, ConfigError> {
        check_namespace_name(name)?;
        self.namespaces.get(name).ok_or_else(|| ConfigError::UnknownNamespace(name.into()))
    }

    /// A namespace that may take a change now: none while a guarded rollout is baking.
    fn ns_writable(&self, name: &str) -> Result<&Namespace, ConfigError> {
        let ns = self.ns(name)?;
        match &ns.rollout {
            Some(r) if r.state == RolloutState::Canary => Err(ConfigError::RolloutInProgress {
                namespace: name.into(),
                version: r.version,
                canary_regions: r.guard.canary_regions.join(", "),
            }),
            _ => Ok(ns),
        }
    }

    fn check_expected(ns: &Namespace, expected: Option<u64>) -> Result<(), ConfigError> {
        match expected {
            Some(e) if e != ns.version => {
                Err(ConfigError::VersionMismatch { what: "namespace", expected: e, current: ns.version })
            }
            _ => Ok(()),
        }
    }

    fn stored(
        key: &str,
        format: Format,
        text: &str,
        version: u64,
        schema: Option<&Compiled>,
    ) -> Result<StoredValue, ConfigError> {
        check_key(key)?;
        let json = parse_value(format, text)?;
        if let Some(c) = schema {
            check_schema(c, key, &json)?;
        }
        Ok(StoredValue { format, text: text.to_string(), json, version })
    }

    /// The writes of a batch of puts and deletes, validated.
    fn batch_writes(
        ns: &Namespace,
        name: &str,
        ops: &[BatchOp],
    ) -> Result<BTreeMap<String, Option<StoredValue>>, ConfigError> {
        if ops.is_empty() {
            return Err(ConfigError::EmptyBatch);
        }
        if ops.len() > BATCH_OPS_MAX {
            return Err(ConfigError::BatchTooLarge { len: ops.len(), max: BATCH_OPS_MAX });
        }
        let schema = ns.validator()?;
        let mut writes = BTreeMap::new();
        for op in ops {
            let (key, value) = match op {
                BatchOp::Put { key, format, text } => {
                    (key, Some(Self::stored(key, *format, text, ns.version + 1, schema.as_deref())?))
                }
                BatchOp::Delete { key } => {
                    check_key(key)?;
                    if !ns.keys.contains_key(key) {
                        return Err(ConfigError::UnknownKey { namespace: name.into(), key: key.clone() });
                    }
                    (key, None)
                }
            };
            if writes.insert(key.clone(), value).is_some() {
                return Err(ConfigError::DuplicateKeyInBatch(key.clone()));
            }
        }
        Ok(writes)
    }

    /// The writes that bring a namespace back to its state at `to_version`.
    fn rollback_writes(
        ns: &Namespace,
        name: &str,
        to_version: u64,
    ) -> Result<BTreeMap<String, Option<StoredValue>>, ConfigError> {
        let target = ns.state_at(name, to_version)?;
        let mut writes = BTreeMap::new();
        for (k, v) in &ns.keys {
            match target.get(k) {
                None => {
                    writes.insert(k.clone(), None);
                }
                Some(t) if t.json != v.json || t.format != v.format || t.text != v.text => {
                    writes.insert(k.clone(), Some(StoredValue { version: ns.version + 1, ..t.clone() }));
                }
                Some(_) => {}
            }
        }
        for (k, t) in &target {
            if !ns.keys.contains_key(k) {
                writes.insert(k.clone(), Some(StoredValue { version: ns.version + 1, ..t.clone() }));
            }
        }
        Ok(writes)
    }

    /// Check everything a command needs, and work out what it will change.
    fn plan(&self, cmd: &Command) -> Result<Plan, ConfigError> {
        match cmd {
            Command::CreateNamespace { namespace, schema, author, at_ms } => {
                check_namespace_name(namespace)?;
                if self.namespaces.contains_key(namespace) {
                    return Err(ConfigError::NamespaceExists(namespace.clone()));
                }
                if let Some(s) = schema {
                    compile_schema(s)?;
                }
                Ok(Plan {
                    schema: Some(schema.clone()),
                    ..Plan::new(namespace, ChangeKind::Create, author, "", *at_ms)
                })
            }
            Command::SetSchema { namespace, schema, expected_version, author, message, at_ms } => {
                let ns = self.ns_writable(namespace)?;
                Self::check_expected(ns, *expected_version)?;
                if let Some(s) = schema {
                    let c = compile_schema(s)?;
                    for (k, v) in &ns.keys {
                        check_schema(&c, k, &v.json)?;
                    }
                }
                Ok(Plan {
                    schema: Some(schema.clone()),
                    ..Plan::new(namespace, ChangeKind::Schema, author, message, *at_ms)
                })
            }
            Command::Put {
                namespace,
                key,
                format,
                text,
                expected_version,
                expected_key_version,
                author,
                message,
                at_ms,
            } => {
                let ns = self.ns_writable(namespace)?;
                check_key(key)?;
                Self::check_expected(ns, *expected_version)?;
                if let Some(e) = expected_key_version {
                    let current = ns.keys.get(key).map_or(0, |v| v.version);
                    if *e != current {
                        return Err(ConfigError::VersionMismatch { what: "key", expected: *e, current });
                    }
                }
                let schema = ns.validator()?;
                let v = Self::stored(key, *format, text, ns.version + 1, schema.as_deref())?;
                Ok(Plan {
                    writes: [(key.clone(), Some(v))].into(),
                    ..Plan::new(namespace, ChangeKind::Put, author, message, *at_ms)
                })
            }
            Command::Delete { namespace, key, expected_version, author, message, at_ms } => {
                let ns = self.ns_writable(namespace)?;
                check_key(key)?;
                Self::check_expected(ns, *expected_version)?;
                if !ns.keys.contains_key(key) {
                    return Err(ConfigError::UnknownKey { namespace: namespace.clone(), key: key.clone() });
                }
                Ok(Plan {
                    writes: [(key.clone(), None)].into(),
                    ..Plan::new(namespace, ChangeKind::Delete, author, message, *at_ms)
                })
            }
            Command::Batch { namespace, ops, expected_version, author, message, at_ms } => {
                let ns = self.ns_writable(namespace)?;
                Self::check_expected(ns, *expected_version)?;
                let writes = Self::batch_writes(ns, namespace, ops)?;
                Ok(Plan { writes, ..Plan::new(namespace, ChangeKind::Batch, author, message, *at_ms) })
            }
            Command::StartRollout { namespace, ops, guard, expected_version, author, message, at_ms } => {
                let ns = self.ns_writable(namespace)?;
                Self::check_expected(ns, *expected_version)?;
                guard.check()?;
                let writes = Self::batch_writes(ns, namespace, ops)?;
                let rollout = Rollout::start(ns.version + 1, guard.clone(), *at_ms);
                Ok(Plan {
                    writes,
                    rollout: Some(rollout),
                    ..Plan::new(namespace, ChangeKind::Rollout, author, message, *at_ms)
                })
            }
            Command::Rollback { namespace, to_version, expected_version, author, message, at_ms } => {
                let ns = self.ns_writable(namespace)?;
                Self::check_expected(ns, *expected_version)?;
                let writes = Self::rollback_writes(ns, namespace, *to_version)?;
                if writes.is_empty() {
                    return Err(ConfigError::NothingToRollBack { namespace: namespace.clone(), version: *to_version });
                }
                let kind = ChangeKind::Rollback { to_version: *to_version };
                Ok(Plan { writes, ..Plan::new(namespace, kind, author, message, *at_ms) })
            }
        }
    }

    /// The same checks `apply` makes, changing nothing.
    pub fn validate(&self, cmd: &Command) -> Result<(), ConfigError> {
        self.plan(cmd).map(|_| ())
    }

    /// Apply a command: all of it, or (on error) nothing.
    pub fn apply(&mut self, cmd: Command) -> Result<Change, ConfigError> {
        let plan = self.plan(&cmd)?;
        Ok(self.commit(plan))
    }

    /// Make a validated plan the namespace's next version.
    fn commit(&mut self, plan: Plan) -> Change {
        let history_max = self.history_max;
        let ns = self.namespaces.entry(plan.namespace.clone()).or_default();
        ns.version += 1;
        if let Some(schema) = plan.schema {
            ns.schema = schema;
            ns.compiled = OnceLock::new();
        }
        let mut keys = Vec::new();
        for (k, after) in plan.writes {
            let before = match &after {
                Some(v) => ns.keys.insert(k.clone(), v.clone()),
                None => ns.keys.remove(&k),
            };
            if let Some(b) = &before {
                ns.hash = ns.hash.wrapping_sub(entry_hash(&k, b));
            }
            if let Some(a) = &after {
                ns.hash = ns.hash.wrapping_add(entry_hash(&k, a));
            }
            keys.push(key_change(&k, before, after));
        }
        debug_assert_eq!(ns.hash, content_hash(&ns.keys));
        if plan.rollout.is_some() {
            ns.rollout = plan.rollout.clone();
        }
        let change = Change {
            namespace: plan.namespace,
            version: ns.version,
            at_ms: plan.at_ms,
            author: plan.author,
            message: plan.message,
            kind: plan.kind,
            keys,
            content_hash: hex(ns.hash),
            rollout: plan.rollout,
        };
        ns.history.push_back(change.clone());
        while ns.history.len() > history_max {
            let Some(old) = ns.history.pop_front() else { break };
            for kc in old.keys {
                match kc.after {
                    Some(v) => ns.base_keys.insert(kc.key, v),
                    None => ns.base_keys.remove(&kc.key),
                };
            }
            ns.base_version = old.version;
        }
        change
    }

    pub fn namespaces(&self) -> Vec<NamespaceInfo> {
        self.namespaces.iter().map(|(n, ns)| Self::info(n, ns)).collect()
    }

    fn info(name: &str, ns: &Namespace) -> NamespaceInfo {
        NamespaceInfo {
            name: name.into(),
            version: ns.version,
            keys: ns.keys.len(),
            content_hash: hex(ns.hash),
            has_schema: ns.schema.is_some(),
            oldest_version: ns.base_version,
        }
    }

    pub fn namespace(&self, name: &str) -> Result<NamespaceInfo, ConfigError> {
        Ok(Self::info(name, self.ns(name)?))
    }

    pub fn get(&self, ns: &str, key: &str) -> Result<StoredValue, ConfigError> {
        check_key(key)?;
        self.ns(ns)?
            .keys
            .get(key)
            .cloned()
            .ok_or_else(|| ConfigError::UnknownKey { namespace: ns.into(), key: key.into() })
    }

    pub fn get_at(&self, ns: &str, key: &str, version: u64) -> Result<StoredValue, ConfigError> {
        check_key(key)?;
        self.state_at(ns, version)?
            .remove(key)
            .ok_or_else(|| ConfigError::UnknownKey { namespace: ns.into(), key: key.into() })
    }

    pub fn list(&self, ns: &str, prefix: &str) -> Result<Vec<(String, StoredValue)>, ConfigError> {
        let ns = self.ns(ns)?;
        Ok(ns
            .keys
            .range(prefix.to_string()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect())
    }

    pub fn state_at(&self, ns: &str, version: u64) -> Result<BTreeMap<String, StoredValue>, ConfigError> {
        self.ns(ns)?.state_at(ns, version)
    }

    /// Changes with version > `since`, ascending, at most `limit`. A `since` below the oldest
    /// retained change answers `version_compacted`, so a watcher knows it missed changes.
    pub fn history(&self, ns: &str, since: u64, limit: usize) -> Result<Vec<Change>, ConfigError> {
        let n = self.ns(ns)?;
        if since < n.base_version {
            return Err(ConfigError::VersionCompacted { namespace: ns.into(), version: since, oldest: n.base_version });
        }
        Ok(n.history.iter().filter(|c| c.version > since).take(limit).cloned().collect())
    }

    pub fn content_hash(&self, ns: &str) -> Result<String, ConfigError> {
        Ok(hex(self.ns(ns)?.hash))
    }

    pub fn snapshot(&self) -> Vec<u8> {
        let snap = SnapshotRef { namespaces: &self.namespaces, history_max: self.history_max };
        serde_json::to_vec(&snap).unwrap_or_default()
    }

    pub fn restore(bytes: &[u8]) -> Result<Model, ConfigError> {
        if bytes.is_empty() {
            return Ok(Model::default());
        }
        let s: Snapshot = serde_json::from_slice(bytes)
            .map_err(|e| ConfigError::InvalidValue { format: "snapshot", message: e.to_string() })?;
        let mut namespaces = s.namespaces;
        for ns in namespaces.values_mut() {
            ns.hash = content_hash(&ns.keys);
        }
        Ok(Model { namespaces, history_max: s.history_max })
    }
}

#[derive(Serialize)]
struct SnapshotRef<'a> {
    namespaces: &'a BTreeMap<String, Namespace>,
    history_max: usize,
}
