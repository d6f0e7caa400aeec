//! `basalt`: the node binary. `serve` runs a node, `bench` measures a system, `version` says
//! which build this is. Every system is listed once, in `plugs()`.

mod cluster;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use basalt_runtime::bench::BenchOpts;
use basalt_runtime::config::config_file;
use basalt_runtime::node::CancellationToken;
use basalt_runtime::{Plug, plug};
use clap::{Args, Parser, Subcommand};

/// The engines systems stand on.
fn engines() -> Vec<Box<dyn basalt_runtime::engine::Engine>> {
    vec![Box::new(basalt_consensus::ConsensusEngine::new()), Box::new(basalt_ring_engine::RingEngine::new())]
}

/// Every system this node can run — adding a system is one line here.
fn plugs() -> Vec<Plug> {
    vec![
        plug::<basalt_ids::Ids>(),
        plug::<basalt_config::ConfigSystem>(),
        plug::<basalt_kv::KvSystem>(),
        plug::<basalt_ratelimit::RateLimitSystem>(),
        plug::<basalt_flags::FlagsSystem>(),
        plug::<basalt_payments::PaymentsSystem>(),
        plug::<basalt_coord::CoordSystem>(),
    ]
}

#[derive(Parser)]
#[command(
    name = "basalt",
    about = "Basalt: the distributed systems of the whiteboard, as one node you can run, break and measure.",
    long_about = None,
    after_help = "Start a node with `basalt serve`, then try:\n  curl -X POST 'http://127.0.0.1:7070/v1/ids?kind=snowflake&count=3'\n\nConfiguration comes from built-in defaults, then a TOML file (--config or BASALT_CONFIG), then BASALT_* environment variables, then flags; later layers win. `basalt serve --print-config` shows the result.",
    disable_version_flag = true
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a node in the foreground until SIGINT or SIGTERM.
    Serve(ServeArgs),
    /// Measure a system (throughput and latency percentiles), with its peer where one exists.
    Bench(BenchArgs),
    /// Run a fault-injection suite: a real cluster, clients recording a history, a nemesis,
    /// and a checker. Prints the seed; a failing run writes its history as JSON.
    Chaos(ChaosArgs),
    /// Inspect and change cluster membership through any node's HTTP API.
    #[command(subcommand)]
    Cluster(cluster::ClusterCommand),
    /// Tools for development: a local multi-node cluster in the foreground.
    #[command(subcommand)]
    Dev(cluster::DevCommand),
    /// Run the simulated payment provider for S32 (its own process, so its records outlive
    /// nodes killed in tests): prints `{"addr": …}` once listening.
    PaymentsProvider {
        #[arg(long, default_value = "127.0.0.1:0")]
        addr: String,
        /// Where its records are kept (JSON lines, reloaded at start).
        #[arg(long, value_name = "FILE")]
        data: Option<PathBuf>,
    },
    /// Print the version.
    Version,
}

#[derive(Args)]
struct ServeArgs {
    /// A TOML config file (also BASALT_CONFIG).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Where the node keeps its data [default: ./data].
    #[arg(long, value_name = "DIR")]
    data_dir: Option<PathBuf>,
    /// The HTTP listener [default: 127.0.0.1:7070]; port 0 picks a free one.
    #[arg(long, value_name = "HOST:PORT")]
    http_addr: Option<String>,
    /// This node's id in a cluster [default: 1]; unique and stable.
    #[arg(long, value_name = "N")]
    node_id: Option<u64>,
    /// The internal transport's listener [default: 127.0.0.1:7071].
    #[arg(long, value_name = "HOST:PORT")]
    peer_addr: Option<String>,
    /// The Redis-protocol listener of the kv system [default: 127.0.0.1:6380]; port 0 picks one.
    #[arg(long, value_name = "HOST:PORT")]
    resp_addr: Option<String>,
    /// The etcd v3 gRPC listener of the coord system [default: 127.0.0.1:2389]; port 0 picks one.
    #[arg(long, value_name = "HOST:PORT")]
    etcd_addr: Option<String>,
    /// Envoy's rate limit service (gRPC) of the ratelimit system [default: 127.0.0.1:8081];
    /// port 0 picks one.
    #[arg(long, value_name = "HOST:PORT")]
    rls_addr: Option<String>,
    /// Join the cluster that the node at this HTTP address belongs to.
    #[arg(long, value_name = "HOST:PORT")]
    join: Option<String>,
    /// `pretty` or `json` [default: pretty].
    #[arg(long, value_name = "FORMAT")]
    log_format: Option<String>,
    /// A tracing filter such as `info` or `basalt_ids=debug,info` [default: info].
    #[arg(long, value_name = "FILTER")]
    log_level: Option<String>,
    /// Set any config key, e.g. `--set systems.ids.generators=4` (repeatable).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    set: Vec<String>,
    /// Print the effective configuration as TOML and exit.
    #[arg(long)]
    print_config: bool,
}

#[derive(Args)]
struct BenchArgs {
    /// The system to measure (e.g. `ids`).
    system: String,
    /// Measured time per scenario, e.g. `5s`, `500ms`.
    #[arg(long, default_value = "5s", value_parser = humantime_duration)]
    duration: Duration,
    /// Unmeasured warm-up per scenario.
    #[arg(long, default_value = "1s", value_parser = humantime_duration)]
    warmup: Duration,
    /// Benchmark a running node instead of starting one.
    #[arg(long)]
    url: Option<String>,
    /// Print exactly one JSON object instead of a table.
    #[arg(long)]
    json: bool,
    /// Threads for in-process scenarios [default: the number of cores].
    #[arg(long)]
    threads: Option<usize>,
    /// Concurrent requests for over-the-network scenarios.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
}

#[derive(Args)]
struct ChaosArgs {
    /// The suite: `config` (linearizable registers on S03 under every nemesis), `coord` (the
    /// same for S05 through the etcd API and client, then a watch replays every acknowledged
    /// write), `lock` (S05's locks and leases: mutual exclusion as the fenced resource saw it,
    /// no false grant, no early expiry) or `kv` (no lost acknowledged write on the ring, N=3
    /// R=W=2).
    suite: String,
    #[arg(long, default_value = "60s", value_parser = humantime_duration)]
    duration: Duration,
    /// The seed for clients and nemesis [default: random, printed].
    #[arg(long)]
    seed: Option<u64>,
    #[arg(long, default_value_t = 3)]
    nodes: usize,
    #[arg(long, default_value_t = 4)]
    clients: usize,
    #[arg(long, default_value_t = 3)]
    keys: usize,
    /// Where a failing run writes its history (JSON) and timeline (HTML).
    #[arg(long, default_value = "./chaos-out")]
    out: PathBuf,
    /// The faults to draw from: `all`, `partition`, or a list of kill, kill-leader, pause,
    /// isolate, isolate-leader, halves, bridge, latency, clock, membership, power.
    #[arg(long, default_value = "all")]
    nemesis: String,
    /// A setting for every node, as for `serve --set` (repeatable), e.g. a deliberate bug:
    /// `--set systems.config.unsafe_local_reads=true`.
    #[arg(long = "set")]
    set: Vec<String>,
    /// `coord`: read with etcd's `serializable` option (a member's own state, no read barrier),
    /// which may be stale under faults: a deliberate bug the checker must catch.
    #[arg(long)]
    serializable_reads: bool,
}

fn chaos(a: ChaosArgs) -> anyhow::Result<()> {
    anyhow::ensure!(
        ["config", "coord", "kv", "lock"].contains(&a.suite.as_str()),
        "no suite `{}`; suites: config, coord, kv, lock",
        a.suite
    );
    anyhow::ensure!(
        !a.serializable_reads || a.suite == "coord",
        "--serializable-reads is for the coord suite (etcd's read option); `{}` has no such reads",
        a.suite
    );
    anyhow::ensure!((3..=7).contains(&a.nodes), "--nodes must be from 3 to 7");
    let seed = a.seed.unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(1, |d| d.as_nanos() as u64)
    });
    let nemeses = basalt_harness::nemesis::Kind::parse_list(&a.nemesis).map_err(|e| anyhow::anyhow!(e))?;
    let names: Vec<&str> = nemeses.iter().map(|k| k.name()).collect();
    eprintln!("basalt chaos {} --seed {seed} --duration {:?} --nemesis {}", a.suite, a.duration, names.join(","));
    basalt_runtime::logging::init(basalt_runtime::config::LogFormat::Pretty, "warn");
    let opts = basalt_harness::suites::SuiteOpts {
        exe: std::env::current_exe()?,
        nodes: a.nodes,
        duration: a.duration,
        seed,
        clients: a.clients.max(1),
        keys: a.keys.max(1),
        out_dir: a.out,
        nemeses,
        node_args: a.set.iter().flat_map(|kv| ["--set".to_string(), kv.clone()]).collect(),
        serializable_reads: a.serializable_reads,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let report = match a.suite.as_str() {
        "kv" => runtime.block_on(basalt_harness::suites::kv(&opts))?,
        "coord" => runtime.block_on(basalt_harness::suites::coord(&opts))?,
        "lock" => runtime.block_on(basalt_harness::suites::lock(&opts))?,
        _ => runtime.block_on(basalt_harness::suites::config(&opts))?,
    };
    println!("{}", serde_json::to_string_pretty(&report)?);
    anyhow::ensure!(
        report.verdict == basalt_lincheck::Verdict::Ok,
        "seed {seed}: {:?} — {}",
        report.verdict,
        report.explanation.unwrap_or_default()
    );
    Ok(())
}

fn humantime_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("`{s}` is not a duration like 5s or 500ms: {e}"))
}

/// mimalloc instead of glibc's malloc: allocation was 11–16% of the node's CPU in the kv and
/// coord profiles, much of it glibc's free-list consolidation.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(args) => serve(args),
        Command::Bench(args) => bench(args),
        Command::Cluster(c) => cluster::run_cluster(c),
        Command::Chaos(a) => chaos(a),
        Command::Dev(c) => cluster::run_dev(c),
        Command::PaymentsProvider { addr, data } => basalt_payments::run_simulated_provider(&addr, data),
        Command::Version => {
            println!("basalt {}", env!("CARGO_PKG_VERSION"));
            Ok(())
        }
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let plugs = plugs();
    let mut sources = basalt_runtime::node::sources_for(&plugs)?;
    sources.env = std::env::vars().filter(|(k, _)| k.starts_with(basalt_runtime::config::ENV_PREFIX)).collect();
    sources.file = config_file(args.config.as_deref(), &sources.env);
    let flags = [
        ("data_dir", args.data_dir.map(|p| p.display().to_string())),
        ("http_addr", args.http_addr),
        ("peer_addr", args.peer_addr),
        ("join", args.join),
        ("systems.kv.resp_addr", args.resp_addr),
        ("systems.coord.etcd_addr", args.etcd_addr),
        ("systems.ratelimit.grpc_addr", args.rls_addr),
        ("log_format", args.log_format),
        ("log_level", args.log_level),
    ];
    for (key, value) in flags {
        if let Some(v) = value {
            // Quoted so that values are always strings, whatever they look like.
            sources.flags.push((key.to_string(), toml_string(&v)));
        }
    }
    if let Some(id) = args.node_id {
        sources.flags.push(("node_id".into(), id.to_string()));
    }
    for kv in &args.set {
        let (k, v) = kv.split_once('=').with_context(|| format!("--set expects KEY=VALUE, got `{kv}`"))?;
        sources.flags.push((k.trim().to_string(), v.trim().to_string()));
    }
    let config = basalt_runtime::node::load_config(&plugs, &sources)?;
    if args.print_config {
        print!("{}", config.to_toml());
        return Ok(());
    }
    basalt_runtime::logging::init(config.log_format, &config.log_level);
    basalt_runtime::node::prepare_process(&config)?;
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    if config.worker_threads > 0 {
        runtime.worker_threads(config.worker_threads);
    }
    let runtime = runtime.enable_all().build()?;
    runtime.block_on(basalt_runtime::node::run(config, engines(), plugs, CancellationToken::new()))
}

/// A TOML basic string (JSON's escapes are a subset of TOML's).
fn toml_string(v: &str) -> String {
    serde_json::to_string(v).unwrap_or_else(|_| format!("\"{v}\""))
}

fn bench(args: BenchArgs) -> anyhow::Result<()> {
    let plugs = plugs();
    let names: Vec<&str> = plugs.iter().map(|p| p.name).collect();
    let plug = plugs
        .iter()
        .find(|p| p.name == args.system)
        .with_context(|| format!("no system `{}`; systems: {}", args.system, names.join(", ")))?;
    let opts = BenchOpts {
        duration: args.duration,
        warmup: args.warmup,
        url: args.url,
        threads: args.threads.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get())),
        concurrency: args.concurrency.max(1),
        exe: std::env::current_exe().context("locating the basalt executable")?,
        progress: true,
    };
    basalt_runtime::logging::init(basalt_runtime::config::LogFormat::Pretty, "warn");
    let fut = plug.bench(&opts).with_context(|| format!("system `{}` has no benchmark yet", args.system))?;
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let report = runtime.block_on(fut)?;
    if args.json {
        println!("{}", report.to_json());
    } else {
        print!("{}", report.table());
    }
    Ok(())
}
