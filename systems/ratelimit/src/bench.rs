//! `basalt bench ratelimit`: decisions per second and latency — in process (the algorithm
//! alone), over HTTP (`/v1/ratelimit/check` on one node), and over RESP: Basalt's
//! `CL.THROTTLE` against redis-server running the usual sliding-window Lua limiter (ZSET per
//! key, EVALSHA), driven by the same client, keys and concurrency in the same run — one command
//! per round trip, then pipelines of 16.

use std::sync::Arc;
use std::time::Duration;

use basalt_ratelimit_core::{Limiter, TokenBucket, TokenBucketConfig};
use basalt_resp::Frame;
use basalt_runtime::bench::{BenchOpts, BenchResult, Report, measure_async, measure_threads};
use basalt_runtime::process::{NodeProcess, NodeSpec, PeerProcess, free_port};
use basalt_runtime::redis::Redis;

const INSTALL: &str = "scripts/install-deps redis-server";
const KEYS: u64 = 1000;
const CONNS: usize = 50;

/// The sliding-window limiter people write in Lua: drop entries older than the window, count,
/// admit (and record) under the limit.
const LUA: &str = "local k = KEYS[1] local now = tonumber(ARGV[1]) local window = tonumber(ARGV[2]) \
local limit = tonumber(ARGV[3]) redis.call('ZREMRANGEBYSCORE', k, 0, now - window) \
local n = redis.call('ZCARD', k) if n < limit then redis.call('ZADD', k, now, ARGV[4]) \
redis.call('PEXPIRE', k, window) return 1 end return 0";

async fn connections(addr: &str) -> anyhow::Result<Arc<Vec<tokio::sync::Mutex<Redis>>>> {
    let mut v = Vec::new();
    for _ in 0..CONNS {
        v.push(tokio::sync::Mutex::new(Redis::connect(addr, Duration::from_secs(5)).await?));
    }
    Ok(Arc::new(v))
}

async fn wait_ping(addr: &str) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(mut c) = Redis::connect(addr, Duration::from_secs(1)).await
            && matches!(c.cmd(&[b"PING"]).await, Ok(Frame::Simple(_)))
        {
            return Ok(());
        }
        anyhow::ensure!(tokio::time::Instant::now() < deadline, "{addr} did not answer PING");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn result(name: &str, m: &basalt_runtime::bench::Measured) -> BenchResult {
    let mut r = BenchResult::from_measured(name, m);
    r.unit = "decisions/s".into();
    r
}

pub async fn run(opts: &BenchOpts) -> anyhow::Result<Report> {
    let mut results = Vec::new();

    // In process: one token bucket per thread, the algorithm alone.
    let cfg = TokenBucketConfig::new(1_000_000, 1_000_000, 1_000_000_000)?;
    let m = measure_threads(opts, "token bucket in process", opts.threads, |_| {
        let mut tb = TokenBucket::new(cfg);
        let t0 = std::time::Instant::now();
        move || {
            let now = t0.elapsed().as_nanos() as u64;
            std::hint::black_box(tb.check(now, 1));
            1
        }
    });
    results.push(result("token bucket, in process (per check)", &m));

    let dir = tempfile::tempdir()?;
    let resp_port = free_port()?;
    let spec = NodeSpec::new(&opts.exe, dir.path().join("basalt"))
        .arg("--resp-addr")
        .arg(format!("127.0.0.1:{resp_port}"))
        .arg("--log-level")
        .arg("warn")
        .arg("--set")
        .arg("fsync=\"periodic\"");
    let node = NodeProcess::start(spec, Duration::from_secs(60)).await?;
    let url = node.url();
    let http = basalt_runtime::reqwest::Client::builder().pool_max_idle_per_host(opts.concurrency).build()?;
    let rule =
        serde_json::json!({"limiter": {"algorithm": "gcra", "max_burst": 100, "count": 1000, "period_ms": 1000}});
    let r = http.put(format!("{url}/v1/ratelimit/rules/bench")).json(&rule).send().await?;
    anyhow::ensure!(r.status().is_success(), "creating the rule: {}", r.text().await?);
    let counter = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let m = measure_async(opts, "HTTP check", opts.concurrency, {
        let (http, url, counter) = (http.clone(), url.clone(), counter.clone());
        move |_| {
            let (http, url, counter) = (http.clone(), url.clone(), counter.clone());
            async move {
                let n = counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % KEYS;
                let r = http
                    .post(format!("{url}/v1/ratelimit/check"))
                    .json(&serde_json::json!({"rule": "bench", "key": format!("k{n}")}))
                    .send()
                    .await?;
                anyhow::ensure!(r.status() == 200 || r.status() == 429, "status {}", r.status());
                let _ = r.bytes().await?;
                Ok(1)
            }
        }
    })
    .await;
    results.push(result(&format!("HTTP /v1/ratelimit/check ({} concurrent)", opts.concurrency), &m));

    // RESP: the same keys and connections against both servers.
    anyhow::ensure!(PeerProcess::available("redis-server"), "redis-server is not installed; run `{INSTALL}`");
    let rport = free_port()?;
    let args: Vec<String> = ["--port", &rport.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let _redis = PeerProcess::start("redis-server", "redis-server", &args, &dir.path().join("redis.log"), INSTALL)?;
    let raddr = format!("127.0.0.1:{rport}");
    wait_ping(&raddr).await?;
    let sha =
        match Redis::connect(&raddr, Duration::from_secs(5)).await?.cmd(&[b"SCRIPT", b"LOAD", LUA.as_bytes()]).await? {
            Frame::Bulk(b) => String::from_utf8_lossy(&b).into_owned(),
            other => anyhow::bail!("SCRIPT LOAD answered {other:?}"),
        };
    let baddr = format!("127.0.0.1:{resp_port}");
    wait_ping(&baddr).await?;

    for depth in [1usize, 16] {
        let (basalt, peer) = resp_pair(opts, &baddr, &raddr, &sha, depth).await?;
        let what = if depth == 1 { String::new() } else { format!(", pipelines of {depth} (latency per pipeline)") };
        let mut r = result(&format!("RESP CL.THROTTLE, 1 node ({CONNS} connections{what})"), &basalt);
        r = r.with_peer(
            &format!("redis-server 7.0 + Lua sliding window (p99 {:.0} µs)", peer.percentile_us(99.0)),
            peer.ops_per_sec(),
        );
        results.push(r);
    }
    // The round-trip ceiling of one command per round trip: PING, which does nothing, on both.
    let ping = |addr: String| {
        let opts = opts.clone();
        async move {
            let conns = connections(&addr).await?;
            anyhow::Ok(
                measure_async(&opts, "PING", CONNS, move |i| {
                    let conns = conns.clone();
                    async move {
                        let reply = conns[i].lock().await.cmd(&[b"PING"]).await?;
                        anyhow::ensure!(matches!(reply, Frame::Simple(_)), "PING answered {reply:?}");
                        Ok(1)
                    }
                })
                .await,
            )
        }
    };
    let (bp, rp) = (ping(baddr.clone()).await?, ping(raddr.clone()).await?);
    let mut r = result(&format!("RESP PING, 1 node ({CONNS} connections): the round-trip ceiling"), &bp);
    r = r.with_peer(&format!("redis-server PING (p99 {:.0} µs)", rp.percentile_us(99.0)), rp.ops_per_sec());
    results.push(r);
    drop(node);

    results.push(cluster_admission(opts, dir.path()).await?);
    Ok(Report { system: "ratelimit".into(), results })
}

/// The same load on both servers: `CONNS` connections, `KEYS` keys, `depth` commands per
/// round trip — Basalt's `CL.THROTTLE`, then redis-server's Lua sliding window.
async fn resp_pair(
    opts: &BenchOpts,
    baddr: &str,
    raddr: &str,
    sha: &str,
    depth: usize,
) -> anyhow::Result<(basalt_runtime::bench::Measured, basalt_runtime::bench::Measured)> {
    let conns = connections(baddr).await?;
    let counter = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let basalt = measure_async(opts, "CL.THROTTLE", CONNS, {
        let (conns, counter) = (conns.clone(), counter.clone());
        move |i| {
            let (conns, counter) = (conns.clone(), counter.clone());
            async move {
                let keys: Vec<String> = (0..depth)
                    .map(|_| format!("rl:{}", counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % KEYS))
                    .collect();
                let cmds: Vec<[&[u8]; 6]> =
                    keys.iter().map(|k| [b"CL.THROTTLE" as &[u8], k.as_bytes(), b"100", b"1000", b"1", b"1"]).collect();
                let refs: Vec<&[&[u8]]> = cmds.iter().map(|c| &c[..]).collect();
                let mut c = conns[i].lock().await;
                for reply in c.pipeline(&refs).await? {
                    anyhow::ensure!(matches!(reply, Frame::Array(_)), "CL.THROTTLE answered {reply:?}");
                }
                Ok(depth as u64)
            }
        }
    })
    .await;
    let conns = connections(raddr).await?;
    let sha = sha.to_string();
    let peer = measure_async(opts, "Lua sliding window", CONNS, {
        let (conns, counter) = (conns.clone(), counter.clone());
        let t0 = std::time::Instant::now();
        move |i| {
            let (conns, counter, sha) = (conns.clone(), counter.clone(), sha.clone());
            async move {
                let now = t0.elapsed().as_millis().to_string();
                let ns: Vec<(String, String)> = (0..depth)
                    .map(|_| {
                        let n = counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        (format!("rl:{}", n % KEYS), n.to_string())
                    })
                    .collect();
                let cmds: Vec<[&[u8]; 8]> = ns
                    .iter()
                    .map(|(key, member)| {
                        [
                            b"EVALSHA" as &[u8],
                            sha.as_bytes(),
                            b"1",
                            key.as_bytes(),
                            now.as_bytes(),
                            b"1000",
                            b"1101",
                            member.as_bytes(),
                        ]
                    })
                    .collect();
                let refs: Vec<&[&[u8]]> = cmds.iter().map(|c| &c[..]).collect();
                let mut c = conns[i].lock().await;
                for reply in c.pipeline(&refs).await? {
                    anyhow::ensure!(matches!(reply, Frame::Integer(_)), "EVALSHA answered {reply:?}");
                }
                Ok(depth as u64)
            }
        }
    })
    .await;
    Ok((basalt, peer))
}

/// Three nodes, the connections spread over them, all asking about the same few keys at several
/// times their rate: decisions per second, and how many were admitted against the most GCRA
/// allows over the run (the burst plus the rate times the time) — the cluster-wide over- (or
/// under-) admission, measured.
async fn cluster_admission(opts: &BenchOpts, dir: &std::path::Path) -> anyhow::Result<BenchResult> {
    const HOT_KEYS: u64 = 10;
    const BURST: u64 = 100;
    const RATE: u64 = 200;
    let (nodes, _) = basalt_runtime::process::raft_cluster(&opts.exe, &dir.join("cluster"), 3, |_| {
        vec!["--set".into(), "fsync=\"periodic\"".into()]
    })
    .await?;
    let http = basalt_runtime::reqwest::Client::new();
    let mut addrs = Vec::new();
    for n in &nodes {
        let v: serde_json::Value = http.get(format!("{}/v1/kv", n.url())).send().await?.json().await?;
        addrs.push(v["resp_addr"].as_str().ok_or_else(|| anyhow::anyhow!("no resp_addr: {v}"))?.to_string());
    }
    let mut conns = Vec::new();
    for i in 0..CONNS {
        conns.push(tokio::sync::Mutex::new(Redis::connect(&addrs[i % addrs.len()], Duration::from_secs(5)).await?));
    }
    let conns = Arc::new(conns);
    let (counter, admitted) =
        (Arc::new(std::sync::atomic::AtomicU64::new(0)), Arc::new(std::sync::atomic::AtomicU64::new(0)));
    let burst = (BURST - 1).to_string();
    let rate = RATE.to_string();
    let t0 = std::time::Instant::now();
    let m = measure_async(opts, "CL.THROTTLE on 3 nodes", CONNS, {
        let (conns, counter, admitted) = (conns.clone(), counter.clone(), admitted.clone());
        move |i| {
            let (conns, counter, admitted, burst, rate) =
                (conns.clone(), counter.clone(), admitted.clone(), burst.clone(), rate.clone());
            async move {
                let key = format!("hot:{}", counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % HOT_KEYS);
                let reply = conns[i]
                    .lock()
                    .await
                    .cmd(&[b"CL.THROTTLE", key.as_bytes(), burst.as_bytes(), rate.as_bytes(), b"1"])
                    .await?;
                match reply {
                    Frame::Array(v) if v.len() == 5 => {
                        if v[0] == Frame::Integer(0) {
                            admitted.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        }
                        Ok(1)
                    }
                    other => anyhow::bail!("CL.THROTTLE answered {other:?}"),
                }
            }
        }
    })
    .await;
    let elapsed = t0.elapsed().as_secs_f64();
    let most = HOT_KEYS as f64 * (BURST as f64 + RATE as f64 * elapsed);
    let got = admitted.load(std::sync::atomic::Ordering::Relaxed) as f64;
    drop(nodes);
    Ok(result(
        &format!(
            "RESP CL.THROTTLE, 3 nodes, {HOT_KEYS} keys at {RATE}/s each: admitted {got:.0} of at most {most:.0} ({:+.2}%)",
            (got / most - 1.0) * 100.0
        ),
        &m,
    ))
}
