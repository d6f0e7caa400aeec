//! `basalt bench kv`: redis-benchmark (Debian `redis-tools`) against one Basalt node and
//! against redis-server in the same run — PING (the transport ceiling), SET, GET, INCR, ZADD;
//! 50 clients; pipeline 1 and 16 — in the same model and at equal durability: redis-server with
//! `appendonly yes` + `appendfsync everysec`, Basalt with its objects in memory and an
//! append-only log (`engines.ring.storage = "memory"`) and `fsync = "periodic"` every 1000 ms.
//! Then SET on the LSM store (`storage = "lsm"`, the default) at the same durability, SET with an
//! fsync per write, and a 3-node ring (N=3, R=W=2) driven through one node.

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use anyhow::Context;
use basalt_runtime::bench::{BenchOpts, BenchResult, CpuMeter, Report, children_cpu, only_from_env, ops_per_cpu_sec};
use basalt_runtime::process::{NodeProcess, NodeSpec, PeerProcess, free_port};

const INSTALL: &str = "scripts/install-deps redis-server redis-tools";
const PEER: &str = "redis-server 7.0 (AOF everysec)";
const CLIENTS: usize = 50;
const KEYSPACE: u64 = 100_000;

/// The random-member range of each test: 100,000 keys for the string tests; ZADD adds members
/// to one sorted set, which Basalt stores as one value (each write re-encodes it), so its set
/// is kept to 1,000 members on both sides.
fn keyspace(test: &str) -> u64 {
    if test == "zadd" { 1_000 } else { KEYSPACE }
}

/// One redis-benchmark run: (requests/s, p50 µs, p99 µs).
fn redis_benchmark(port: u16, test: &str, pipeline: usize, requests: u64) -> anyhow::Result<(f64, f64, f64)> {
    Ok(redis_benchmark_cpu(port, test, pipeline, requests, None)?.timed)
}

/// What one redis-benchmark run measured.
struct Run {
    /// Requests/s, p50 µs, p99 µs.
    timed: (f64, f64, f64),
    /// Requests per CPU-second of the server (all its threads) over the whole run; `None` when
    /// not asked for or not readable. Work per request holds up on a busy machine where
    /// throughput does not, and the load generator does not cap it.
    per_server_cpu: Option<f64>,
    /// The share of one core redis-benchmark itself used (it is single-threaded): near 100%,
    /// the load generator, not the server, set the pace.
    client_busy: Option<f64>,
}

fn redis_benchmark_cpu(
    port: u16,
    test: &str,
    pipeline: usize,
    requests: u64,
    server: Option<&CpuMeter>,
) -> anyhow::Result<Run> {
    let requests = if test == "zadd" { (requests / 2).max(2_000) } else { requests };
    let before = server.and_then(CpuMeter::used);
    let (client_before, start) = (children_cpu(), std::time::Instant::now());
    let out = std::process::Command::new("redis-benchmark")
        .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-c", &CLIENTS.to_string()])
        .args(["-n", &requests.to_string(), "-P", &pipeline.to_string(), "-r", &keyspace(test).to_string()])
        .args(["-t", test, "--csv"])
        .output()
        .with_context(|| format!("running redis-benchmark; install it with `{INSTALL}`"))?;
    let wall = start.elapsed().as_secs_f64();
    let client_busy =
        children_cpu().zip(client_before).map(|(a, b)| a.saturating_sub(b).as_secs_f64() / wall.max(1e-9));
    anyhow::ensure!(out.status.success(), "redis-benchmark failed: {}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    // "test","rps","avg_latency_ms","min_latency_ms","p50_latency_ms","p95_latency_ms","p99_latency_ms","max_latency_ms"
    let line = text
        .lines()
        .find(|l| l.starts_with('"') && !l.starts_with("\"test\""))
        .with_context(|| format!("no result from redis-benchmark: {text}"))?;
    let f: Vec<f64> = line.split(',').skip(1).map(|x| x.trim_matches('"').parse().unwrap_or(0.0)).collect();
    anyhow::ensure!(f.len() >= 6, "unexpected redis-benchmark output: {line}");
    let per_server_cpu =
        server.and_then(CpuMeter::used).zip(before).map(|(a, b)| ops_per_cpu_sec(requests, a.saturating_sub(b)));
    Ok(Run { timed: (f[0], f[3] * 1000.0, f[5] * 1000.0), per_server_cpu, client_busy })
}

async fn wait_ping(port: u16, what: &str) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let ok = std::process::Command::new("redis-cli")
            .args(["-p", &port.to_string(), "PING"])
            .output()
            .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("PONG"));
        if ok {
            return Ok(());
        }
        anyhow::ensure!(tokio::time::Instant::now() < deadline, "{what} did not answer PING");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn basalt_node(
    opts: &BenchOpts,
    dir: &Path,
    id: u64,
    fsync: &str,
    storage: &str,
    join: Option<&str>,
) -> anyhow::Result<(NodeProcess, u16)> {
    let port = free_port()?;
    let mut spec = NodeSpec::new(&opts.exe, dir.join(format!("basalt-{id}-{fsync}-{storage}")))
        .arg("--node-id")
        .arg(id.to_string())
        .arg("--resp-addr")
        .arg(format!("127.0.0.1:{port}"))
        .arg("--log-level")
        .arg("warn");
    for s in [
        format!("fsync=\"{fsync}\""),
        "fsync_interval_ms=1000".into(),
        format!("engines.ring.storage=\"{storage}\""),
        "engines.consensus.enabled=false".into(),
        "systems.config.enabled=false".into(),
    ] {
        spec = spec.arg("--set").arg(s);
    }
    if let Some(j) = join {
        spec = spec.arg("--join").arg(j);
    }
    let node = NodeProcess::start(spec, Duration::from_secs(60)).await?;
    wait_ping(port, "the Basalt node").await?;
    Ok((node, port))
}

/// A row of requests per second from one redis-benchmark run (no peer yet).
fn row(name: String, (value, p50, p99): (f64, f64, f64)) -> BenchResult {
    BenchResult {
        name,
        unit: "req/s".into(),
        value: value.round(),
        p50_us: p50.round(),
        p99_us: p99.round(),
        peer: None,
        peer_value: None,
        ratio: None,
    }
}

/// The rows `BASALT_BENCH_KV_ONLY` may name (for iterating: only those rows of the one-node table,
/// at both pipelines, and nothing else).
const ROWS: [&str; 5] = ["ping", "set", "get", "incr", "zadd"];

/// Requests per run, scaled to the measured duration (at least a few thousand): about the
/// duration at Basalt's pace, so each run lasts seconds, not a fraction of one.
fn requests(opts: &BenchOpts, pipeline: usize) -> u64 {
    let per_sec = if pipeline > 1 { 300_000 } else { 50_000 };
    ((opts.duration.as_secs_f64() * per_sec as f64) as u64).max(5_000)
}

pub async fn run(opts: &BenchOpts) -> anyhow::Result<Report> {
    anyhow::ensure!(PeerProcess::available("redis-server"), "redis-server is not installed; run `{INSTALL}`");
    anyhow::ensure!(PeerProcess::available("redis-benchmark"), "redis-benchmark is not installed; run `{INSTALL}`");
    let dir = tempfile::tempdir()?;
    let rport = free_port()?;
    let rdir = dir.path().join("redis");
    std::fs::create_dir_all(&rdir)?;
    let args: Vec<String> = [
        "--port",
        &rport.to_string(),
        "--bind",
        "127.0.0.1",
        "--dir",
        &rdir.display().to_string(),
        "--appendonly",
        "yes",
        "--appendfsync",
        "everysec",
        "--save",
        "",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let _redis = PeerProcess::start("redis-server", "redis-server", &args, &dir.path().join("redis.log"), INSTALL)?;
    wait_ping(rport, "redis-server").await?;
    let (node, bport) = basalt_node(opts, dir.path(), 1, "periodic", "memory", None).await?;
    let (bcpu, rcpu) = (CpuMeter::new([node.pid()]), CpuMeter::new([_redis.pid()]));

    let mut results = Vec::new();
    // Requests per server CPU-second, one row per test after the throughput rows.
    let mut per_cpu = Vec::new();
    // The peer's req/s per (test, pipeline), for the LSM rows' ratios.
    let mut peer: HashMap<(&str, usize), f64> = HashMap::new();
    // `BASALT_BENCH_KV_ONLY=set,incr` (for iterating): only those rows of the one-node memory
    // table, at both pipelines; nothing else.
    let only = only_from_env("BASALT_BENCH_KV_ONLY", &ROWS)?;
    for pipeline in [1usize, 16] {
        for test in ["ping_mbulk", "set", "get", "incr", "zadd"] {
            if only.as_ref().is_some_and(|o| !o.iter().any(|t| t == test || (t == "ping" && test == "ping_mbulk"))) {
                continue;
            }
            let n = requests(opts, pipeline);
            // Interleaved in the same run, Basalt first then the peer, on the same keyspace.
            let mine = redis_benchmark_cpu(bport, test, pipeline, n, Some(&bcpu))?;
            let theirs = redis_benchmark_cpu(rport, test, pipeline, n, Some(&rcpu))?;
            let ((b, b50, b99), (r, _, r99)) = (mine.timed, theirs.timed);
            peer.insert((test, pipeline), r);
            // How busy the load generator was, against each server: ~100% means it set the pace.
            let busy = match (mine.client_busy, theirs.client_busy) {
                (Some(m), Some(t)) => format!("; redis-benchmark {:.0}% / {:.0}% busy", m * 100.0, t * 100.0),
                _ => String::new(),
            };
            let name = if test == "ping_mbulk" {
                format!("PING P{pipeline} (transport ceiling; peer p99 {r99:.0} µs{busy})")
            } else {
                format!(
                    "{} P{pipeline} (1 node, memory+log, fsync 1/s; peer p99 {r99:.0} µs{busy})",
                    test.to_uppercase()
                )
            };
            results.push(row(name, (b, b50, b99)).with_peer(PEER, r));
            if let (Some(bc), Some(rc)) = (mine.per_server_cpu, theirs.per_server_cpu) {
                let what = if test == "ping_mbulk" { "PING".to_string() } else { test.to_uppercase() };
                let mut res = row(format!("{what} P{pipeline}: per server CPU-second"), (bc, 0.0, 0.0));
                res.unit = "req/CPU-s".into();
                per_cpu.push(res.with_peer(&format!("{PEER} ({:.2} µs CPU each)", 1e6 / rc.max(1e-9)), rc));
            }
        }
    }
    results.append(&mut per_cpu);
    drop(node);
    if only.is_some() {
        return Ok(Report { system: "kv".into(), results });
    }

    // The same SETs on the LSM store (the default `engines.ring.storage`), same durability.
    let (_lsm, lport) = basalt_node(opts, dir.path(), 1, "periodic", "lsm", None).await?;
    for pipeline in [1usize, 16] {
        let measured = redis_benchmark(lport, "set", pipeline, requests(opts, pipeline))?;
        let res = row(format!("SET P{pipeline} (1 node, LSM store, fsync 1/s)"), measured);
        results.push(res.with_peer(PEER, peer[&("set", pipeline)]));
    }
    drop(_lsm);

    // Every acknowledged write fsync'd first (no peer mode is equivalent: appendfsync always).
    let (_strict, sport) = basalt_node(opts, dir.path(), 1, "always", "memory", None).await?;
    let measured = redis_benchmark(sport, "set", 1, requests(opts, 1) / 2)?;
    results.push(row("SET P1 (1 node, memory+log, fsync every write)".into(), measured));
    drop(_strict);

    // A 3-node ring, N=3 R=W=2, driven through node 1 (writes and reads touch 2 of 3 replicas).
    let (first, p1) = basalt_node(opts, dir.path(), 1, "periodic", "memory", None).await?;
    let join = first.http_addr.clone();
    let (_n2, _) = basalt_node(opts, dir.path(), 2, "periodic", "memory", Some(&join)).await?;
    let (_n3, _) = basalt_node(opts, dir.path(), 3, "periodic", "memory", Some(&join)).await?;
    let client = basalt_runtime::reqwest::Client::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let v: serde_json::Value = client.get(format!("{}/v1/ring", first.url())).send().await?.json().await?;
        let alive = v["members"].as_array().map_or(0, |m| m.iter().filter(|x| x["alive"] == true).count());
        if alive == 3 {
            break;
        }
        anyhow::ensure!(tokio::time::Instant::now() < deadline, "the 3-node ring did not form: {v}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for test in ["set", "get"] {
        let measured = redis_benchmark(p1, test, 1, requests(opts, 1))?;
        results.push(row(format!("{} P1 (3-node ring, N=3 R=W=2, memory+log)", test.to_uppercase()), measured));
    }
    Ok(Report { system: "kv".into(), results })
}
