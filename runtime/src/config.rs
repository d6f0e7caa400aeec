//! The node's configuration: built-in defaults, then a TOML file, then `BASALT_*` environment
//! variables, then command-line flags — each layer overriding the one before.
//!
//! Layers are merged as TOML tables before anything is deserialized, so a typo in any layer is
//! caught by `deny_unknown_fields` and reported with the key that is wrong.
//!
//! Environment variables map onto keys: `BASALT_HTTP_ADDR` sets `http_addr`, and a double
//! underscore descends into a table: `BASALT_HTTP__BODY_LIMIT_BYTES` sets `http.body_limit_bytes`,
//! `BASALT_SYSTEMS__IDS__GENERATORS` sets `systems.ids.generators`. `BASALT_CONFIG` names the
//! file (it is not a key), and `BASALT_BENCH_*` variables belong to `basalt bench` (a benchmark's
//! nodes inherit them), so neither is read as a setting.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};

use crate::transport::TransportConfig;

/// The most `worker_threads` a node takes.
pub const WORKER_THREADS_MAX: usize = 1024;

/// Prefix of every environment variable the node reads.
pub const ENV_PREFIX: &str = "BASALT_";
/// The environment variable naming the config file.
pub const ENV_CONFIG_FILE: &str = "BASALT_CONFIG";

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NodeConfig {
    /// Where the embedded store keeps its files.
    pub data_dir: PathBuf,
    /// The HTTP listener (every system's `/v1/<system>/…` routes, health and metrics).
    pub http_addr: SocketAddr,
    /// This node's id in a cluster; unique per cluster and stable across restarts.
    pub node_id: u64,
    /// The internal transport's listener (engine-to-engine traffic).
    pub peer_addr: SocketAddr,
    /// The HTTP address of a member of an existing cluster to join on first start.
    pub join: Option<String>,
    /// Allow `PUT /v1/node/faults` (drop, delay, partition per peer). For fault tests and
    /// benchmarks; never enable in production.
    pub fault_injection: bool,
    /// `pretty` for people, `json` for log pipelines.
    pub log_format: LogFormat,
    /// A tracing filter, e.g. `info` or `basalt_ids=debug,info`.
    pub log_level: String,
    /// When acknowledged writes reach the disk.
    pub fsync: FsyncPolicy,
    /// With `fsync = "periodic"`: how often the journal is synced.
    pub fsync_interval_ms: u64,
    /// How long shutdown waits for in-flight requests and background tasks.
    pub shutdown_grace_ms: u64,
    /// Threads running the node's async tasks; 0 (the default) is one per core. Fewer when
    /// several nodes share a machine's cores (a benchmark's cluster on one host).
    pub worker_threads: usize,
    /// Let the kernel back the node's memory with transparent huge pages. Off by default, as
    /// Redis advises: the allocator asks for huge pages, so the first touch of each 2 MiB region
    /// zeroes all of it on the thread that touched it — 7–8% of a coord node's CPU under
    /// 100 writing clients, and stalls that doubled that benchmark's p99.
    pub transparent_huge_pages: bool,
    /// Added to the wall clock everywhere the node reads it. For fault tests that skew a node's
    /// clock; leave at 0 in production.
    pub clock_offset_ms: i64,
    pub http: HttpConfig,
    pub transport: TransportConfig,
    /// One table per engine, keyed by the engine's name (`[engines.consensus]`).
    pub engines: BTreeMap<String, toml::Table>,
    /// One table per system, keyed by the system's name (`[systems.ids]`). Every system has an
    /// `enabled` key (default true); the rest is the system's own.
    pub systems: BTreeMap<String, toml::Table>,
}

impl Default for NodeConfig {
    fn default() -> Self {
        Self {
            data_dir: PathBuf::from("./data"),
            http_addr: SocketAddr::from(([127, 0, 0, 1], 7070)),
            node_id: 1,
            peer_addr: SocketAddr::from(([127, 0, 0, 1], 7071)),
            join: None,
            fault_injection: false,
            log_format: LogFormat::Pretty,
            log_level: "info,openraft=warn".to_string(),
            fsync: FsyncPolicy::Always,
            fsync_interval_ms: 100,
            shutdown_grace_ms: 10_000,
            worker_threads: 0,
            transparent_huge_pages: false,
            clock_offset_ms: 0,
            http: HttpConfig::default(),
            transport: TransportConfig::default(),
            engines: BTreeMap::new(),
            systems: BTreeMap::new(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Requests with a larger body get 413.
    pub body_limit_bytes: usize,
    /// A request still running after this long is answered 503 with code `timeout`.
    pub request_timeout_ms: u64,
    /// At most this many requests are served at once; the rest wait in the accept queue.
    pub concurrency_max: usize,
    /// Every public route behind a ratelimit rule (see `http::rate_limit`).
    pub rate_limit: crate::http::rate_limit::RateLimitConfig,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            body_limit_bytes: 1 << 20,
            request_timeout_ms: 30_000,
            concurrency_max: 4096,
            rate_limit: Default::default(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Pretty,
    Json,
}

impl std::str::FromStr for LogFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "pretty" => Ok(Self::Pretty),
            "json" => Ok(Self::Json),
            other => Err(format!("log format must be `pretty` or `json`, not `{other}`")),
        }
    }
}

/// When an acknowledged write is on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FsyncPolicy {
    /// A write is acknowledged only after the journal is fsync'd (group commit batches
    /// concurrent writers into one fsync). Survives power loss.
    Always,
    /// The journal is fsync'd every `fsync_interval_ms`; survives a process crash (the OS has
    /// the data), may lose that interval on power loss.
    Periodic,
    /// Never fsync explicitly; for benchmarks and throwaway nodes.
    Never,
}

/// One `key=value` override from the command line (`--set systems.ids.generators=4`).
pub type Override = (String, String);

/// Where the layers come from; `load` merges them in order.
#[derive(Debug, Default)]
pub struct ConfigSources {
    /// Defaults contributed by the plugged-in systems, keyed by system name.
    pub system_defaults: BTreeMap<String, toml::Table>,
    /// The TOML file, if any (`--config` or `BASALT_CONFIG`).
    pub file: Option<PathBuf>,
    /// `BASALT_*` variables (name, value), usually `std::env::vars()`.
    pub env: Vec<(String, String)>,
    /// Flags, already translated to dotted keys.
    pub flags: Vec<Override>,
}

impl NodeConfig {
    /// Merge defaults ← file ← environment ← flags, then validate.
    pub fn load(sources: &ConfigSources) -> anyhow::Result<Self> {
        let mut doc = toml::Table::try_from(NodeConfig::default())?;
        let mut systems = toml::Table::new();
        for (name, table) in &sources.system_defaults {
            let mut t = table.clone();
            t.entry("enabled").or_insert(toml::Value::Boolean(true));
            systems.insert(name.clone(), toml::Value::Table(t));
        }
        doc.insert("systems".into(), toml::Value::Table(systems));

        if let Some(path) = &sources.file {
            let text =
                std::fs::read_to_string(path).with_context(|| format!("reading config file {}", path.display()))?;
            let file: toml::Table =
                toml::from_str(&text).with_context(|| format!("parsing config file {}", path.display()))?;
            merge(&mut doc, file);
        }
        for (name, value) in &sources.env {
            let Some(key) = env_key(name) else { continue };
            set_dotted(&mut doc, &key, value).with_context(|| format!("environment variable {name}"))?;
        }
        for (key, value) in &sources.flags {
            set_dotted(&mut doc, key, value).with_context(|| format!("flag setting `{key}`"))?;
        }
        let config: NodeConfig =
            toml::Value::Table(doc).try_into().context("invalid configuration (defaults ← file ← BASALT_* ← flags)")?;
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> anyhow::Result<()> {
        if self.http.body_limit_bytes == 0 {
            bail!("http.body_limit_bytes must be at least 1");
        }
        if self.node_id == 0 {
            bail!("node_id must be at least 1");
        }
        if let Err(e) = self.http.rate_limit.key_by() {
            bail!(e);
        }
        if self.http.concurrency_max == 0 {
            bail!("http.concurrency_max must be at least 1");
        }
        if self.fsync == FsyncPolicy::Periodic && self.fsync_interval_ms == 0 {
            bail!("fsync_interval_ms must be at least 1 with fsync = \"periodic\"");
        }
        if self.worker_threads > WORKER_THREADS_MAX {
            bail!("worker_threads must be at most {WORKER_THREADS_MAX} (0: one per core)");
        }
        if tracing_subscriber::EnvFilter::try_new(&self.log_level).is_err() {
            bail!("log_level `{}` is not a valid tracing filter", self.log_level);
        }
        Ok(())
    }

    /// The effective configuration as TOML, for `serve --print-config`.
    pub fn to_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_else(|e| format!("# cannot render config: {e}\n"))
    }

    /// A system's table (its defaults merged with what the layers set).
    pub fn system_table(&self, name: &str) -> toml::Table {
        self.systems.get(name).cloned().unwrap_or_default()
    }

    /// An engine's table.
    pub fn engine_table(&self, name: &str) -> toml::Table {
        self.engines.get(name).cloned().unwrap_or_default()
    }

    pub fn system_enabled(&self, name: &str) -> bool {
        self.systems.get(name).and_then(|t| t.get("enabled")).and_then(toml::Value::as_bool).unwrap_or(true)
    }
}

/// The config file named by `--config`, else by `BASALT_CONFIG`, else none.
pub fn config_file(flag: Option<&Path>, env: &[(String, String)]) -> Option<PathBuf> {
    flag.map(Path::to_path_buf)
        .or_else(|| env.iter().find(|(k, _)| k == ENV_CONFIG_FILE).map(|(_, v)| PathBuf::from(v)))
}

/// `BASALT_HTTP__BODY_LIMIT_BYTES` → `http.body_limit_bytes`; `None` for other variables (and
/// for `BASALT_CONFIG` and the benchmarks' `BASALT_BENCH_*`).
fn env_key(name: &str) -> Option<String> {
    let rest = name.strip_prefix(ENV_PREFIX)?;
    if name == ENV_CONFIG_FILE || rest.is_empty() || rest.starts_with("BENCH_") {
        return None;
    }
    Some(rest.split("__").map(str::to_ascii_lowercase).collect::<Vec<_>>().join("."))
}

/// Set `a.b.c = value`, where `value` is read as a TOML value if it is one (a number, a
/// boolean, an array) and as a string otherwise.
fn set_dotted(doc: &mut toml::Table, key: &str, raw: &str) -> anyhow::Result<()> {
    let parts: Vec<&str> = key.split('.').collect();
    if parts.iter().any(|p| p.is_empty()) {
        bail!("`{key}` is not a valid key");
    }
    let value = parse_scalar(raw);
    let (last, parents) = parts.split_last().expect("split yields at least one part");
    let mut table = doc;
    for p in parents {
        let entry = table.entry(p.to_string()).or_insert_with(|| toml::Value::Table(toml::Table::new()));
        table = match entry {
            toml::Value::Table(t) => t,
            _ => bail!("`{key}`: `{p}` is a value, not a table"),
        };
    }
    table.insert(last.to_string(), value);
    Ok(())
}

fn parse_scalar(raw: &str) -> toml::Value {
    toml::from_str::<toml::Table>(&format!("v = {raw}"))
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(raw.to_string()))
}

/// Recursively overlay `top` onto `base`: tables merge, everything else replaces.
fn merge(base: &mut toml::Table, top: toml::Table) {
    for (k, v) in top {
        match (base.get_mut(&k), v) {
            (Some(toml::Value::Table(b)), toml::Value::Table(t)) => merge(b, t),
            (_, v) => {
                base.insert(k, v);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sources() -> ConfigSources {
        let mut ids = toml::Table::new();
        ids.insert("generators".into(), toml::Value::Integer(8));
        ConfigSources { system_defaults: [("ids".to_string(), ids)].into(), ..Default::default() }
    }

    #[test]
    fn defaults_bind_loopback() {
        let c = NodeConfig::load(&sources()).unwrap();
        assert_eq!(c.http_addr.to_string(), "127.0.0.1:7070");
        assert_eq!(c.fsync, FsyncPolicy::Always);
        assert!(c.system_enabled("ids"));
        assert_eq!(c.system_table("ids")["generators"].as_integer(), Some(8));
    }

    #[test]
    fn precedence_is_file_then_env_then_flags() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("basalt.toml");
        std::fs::write(
            &file,
            "http_addr = \"127.0.0.1:9001\"\nlog_level = \"debug\"\nfsync = \"never\"\n[systems.ids]\ngenerators = 2\n",
        )
        .unwrap();
        let mut s = sources();
        s.file = Some(file);
        s.env = vec![
            ("BASALT_HTTP_ADDR".into(), "127.0.0.1:9002".into()),
            ("BASALT_LOG_LEVEL".into(), "warn".into()),
            ("BASALT_SYSTEMS__IDS__GENERATORS".into(), "3".into()),
            ("PATH".into(), "/bin".into()),
            // A benchmark's own variable, inherited by the nodes it starts: not a setting.
            ("BASALT_BENCH_KV_ONLY".into(), "set".into()),
        ];
        s.flags = vec![("http_addr".into(), "127.0.0.1:9003".into())];
        let c = NodeConfig::load(&s).unwrap();
        assert_eq!(c.http_addr.to_string(), "127.0.0.1:9003", "flag beats env and file");
        assert_eq!(c.log_level, "warn", "env beats file");
        assert_eq!(c.fsync, FsyncPolicy::Never, "file beats default");
        assert_eq!(c.system_table("ids")["generators"].as_integer(), Some(3));
    }

    #[test]
    fn unknown_keys_are_rejected_by_name() {
        let mut s = sources();
        s.env = vec![("BASALT_HTTP_ADRR".into(), "127.0.0.1:1".into())];
        let err = format!("{:#}", NodeConfig::load(&s).unwrap_err());
        assert!(err.contains("http_adrr"), "{err}");
    }

    #[test]
    fn bad_values_say_what_is_wrong() {
        let mut s = sources();
        s.flags = vec![("fsync".into(), "sometimes".into())];
        let err = format!("{:#}", NodeConfig::load(&s).unwrap_err());
        assert!(err.contains("fsync") || err.contains("sometimes"), "{err}");
        let mut s = sources();
        s.flags = vec![("http.body_limit_bytes".into(), "0".into())];
        assert!(format!("{:#}", NodeConfig::load(&s).unwrap_err()).contains("body_limit_bytes"));
        let mut s = sources();
        s.flags = vec![("worker_threads".into(), "100000".into())];
        assert!(format!("{:#}", NodeConfig::load(&s).unwrap_err()).contains("worker_threads"));
        let mut s = sources();
        s.flags = vec![("worker_threads".into(), "-1".into())];
        assert!(format!("{:#}", NodeConfig::load(&s).unwrap_err()).contains("worker_threads"));
        let mut s = sources();
        s.flags = vec![("worker_threads".into(), "2".into())];
        assert_eq!(NodeConfig::load(&s).unwrap().worker_threads, 2);
    }

    #[test]
    fn print_config_round_trips() {
        let c = NodeConfig::load(&sources()).unwrap();
        let back: NodeConfig = toml::from_str(&c.to_toml()).unwrap();
        assert_eq!(back.http_addr, c.http_addr);
        assert_eq!(back.system_table("ids"), c.system_table("ids"));
    }
}
