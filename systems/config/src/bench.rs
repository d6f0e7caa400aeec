//! `basalt bench config`: linearizable writes and reads on a 3-node Basalt cluster, and the same
//! workload against a 3-node etcd cluster (Debian `etcd-server`, through its v3 JSON gateway) in
//! the same run. Both sides fsync every acknowledged write on a quorum and are driven over
//! HTTP/JSON by the same client with the same concurrency.

use std::time::Duration;

use anyhow::Context;
use basalt_runtime::bench::{BenchOpts, BenchResult, Measured, Report, measure_async};
use basalt_runtime::process::{NodeProcess, NodeSpec, etcd_cluster, raft_cluster};

const PEER: &str = "etcd 3.4 (3 nodes, v3 JSON gateway)";
const INSTALL: &str = "scripts/install-deps etcd-server etcd-client";
const KEYS: u64 = 1000;

fn b64(s: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(s)
}

async fn basalt_cluster(opts: &BenchOpts, dir: &std::path::Path) -> anyhow::Result<Vec<NodeProcess>> {
    let (nodes, _) = raft_cluster(&opts.exe, dir, 3, |_| Vec::new()).await?;
    let r = reqwest::Client::new().put(format!("{}/v1/config/ns/bench", nodes[0].url())).send().await?;
    anyhow::ensure!(r.status().is_success(), "creating the namespace: {}", r.text().await?);
    Ok(nodes)
}

async fn run_load(
    opts: &BenchOpts,
    name: &str,
    urls: Vec<String>,
    make: fn(&reqwest::Client, &str, u64) -> reqwest::RequestBuilder,
) -> Measured {
    let client = reqwest::Client::builder().pool_max_idle_per_host(opts.concurrency).build().unwrap_or_default();
    let counter = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    measure_async(opts, name, opts.concurrency, move |worker| {
        let (client, urls, counter) = (client.clone(), urls.clone(), counter.clone());
        async move {
            let n = counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            let url = &urls[worker % urls.len()];
            let r = make(&client, url, n).send().await?;
            anyhow::ensure!(r.status().is_success(), "status {}", r.status());
            let _ = r.bytes().await?;
            Ok(1)
        }
    })
    .await
}

fn basalt_put(c: &reqwest::Client, url: &str, n: u64) -> reqwest::RequestBuilder {
    c.put(format!("{url}/v1/config/ns/bench/keys/k{}", n % KEYS))
        .header("content-type", "application/json")
        .body(format!("{{\"n\":{n}}}"))
}

fn basalt_get(c: &reqwest::Client, url: &str, n: u64) -> reqwest::RequestBuilder {
    c.get(format!("{url}/v1/config/ns/bench/keys/k{}", n % 10))
}

fn etcd_put(c: &reqwest::Client, url: &str, n: u64) -> reqwest::RequestBuilder {
    let body =
        serde_json::json!({"key": b64(&format!("bench/k{}", n % KEYS)), "value": b64(&format!("{{\"n\":{n}}}"))});
    c.post(format!("{url}/v3/kv/put")).json(&body)
}

fn etcd_get(c: &reqwest::Client, url: &str, n: u64) -> reqwest::RequestBuilder {
    c.post(format!("{url}/v3/kv/range")).json(&serde_json::json!({"key": b64(&format!("bench/k{}", n % 10))}))
}

const REGIONS: u64 = 20;
const VOTERS: u64 = 3;
const DELAY_MIN_MS: u64 = 10;
const DELAY_MAX_MS: u64 = 150;

/// Propagation to `REGIONS` regions: 3 voters and 17 edge replicas (each a region's read replica),
/// the leader's outbound traffic to each delayed by one entry of a 10–150 ms matrix through the
/// transport's fault hook. A watcher per region long-polls its own replica; a sample is the
/// time from sending a write to the leader until that region's replica has applied it.
async fn propagation(opts: &BenchOpts, dir: &std::path::Path) -> anyhow::Result<(Measured, u64)> {
    let mut nodes: Vec<NodeProcess> = Vec::new();
    for id in 1..=REGIONS {
        let region = if id <= VOTERS { format!("core-{id}") } else { format!("edge-{id}") };
        let mut spec = NodeSpec::new(&opts.exe, dir.join(format!("region-{id}")))
            .arg("--node-id")
            .arg(id.to_string())
            .arg("--log-level")
            .arg("warn")
            .arg("--set")
            .arg("fault_injection=true")
            .arg("--set")
            .arg(format!("systems.config.region=\"{region}\""))
            // openraft 0.9 uses the heartbeat interval as the append-entries timeout: across a
            // WAN it must exceed the longest round trip (here 150 ms one way).
            .arg("--set")
            .arg("engines.consensus.heartbeat_ms=400")
            .arg("--set")
            .arg("engines.consensus.election_timeout_min_ms=1500")
            .arg("--set")
            .arg("engines.consensus.election_timeout_max_ms=3000");
        match nodes.first() {
            // Regions beyond the voters are edge replicas of node 1 (the first leader).
            Some(first) if id > VOTERS => {
                spec = spec
                    .arg("--set")
                    .arg("engines.consensus.enabled=false")
                    .arg("--set")
                    .arg(format!("systems.config.edge_of=\"{}\"", first.http_addr));
            }
            Some(first) => spec = spec.arg("--join").arg(first.http_addr.clone()),
            None => {}
        }
        nodes.push(NodeProcess::start(spec, Duration::from_secs(60)).await?);
    }
    let client = reqwest::Client::builder().pool_max_idle_per_host(64).build()?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    let leader = loop {
        let s: serde_json::Value = client.get(format!("{}/v1/cluster", nodes[0].url())).send().await?.json().await?;
        let members = s["members"].as_array().map_or(0, Vec::len);
        if members == VOTERS as usize
            && let Some(l) = s["leader_id"].as_u64()
        {
            break l;
        }
        anyhow::ensure!(tokio::time::Instant::now() < deadline, "the {REGIONS}-region cluster did not form: {s}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let leader_url = nodes[(leader - 1) as usize].url();
    // The delay matrix: the k-th other region is DELAY_MIN + k·step ms away from the leader.
    let others: Vec<u64> = (1..=REGIONS).filter(|id| *id != leader).collect();
    let span = (others.len() as u64 - 1).max(1);
    let delay = |k: u64| DELAY_MIN_MS + k * (DELAY_MAX_MS - DELAY_MIN_MS) / span;
    let peers: serde_json::Map<String, serde_json::Value> = others
        .iter()
        .enumerate()
        .map(|(k, id)| (id.to_string(), serde_json::json!({"delay_ms": delay(k as u64)})))
        .collect();
    let floor_ms = delay(span);
    client
        .put(format!("{leader_url}/v1/node/faults"))
        .json(&serde_json::json!({"peers": peers}))
        .send()
        .await?
        .error_for_status()?;
    client.put(format!("{leader_url}/v1/config/ns/prop")).send().await?.error_for_status()?;
    // Every region (members and edges) has the namespace before the clock starts.
    for node in &nodes {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while !client
            .get(format!("{}/v1/config/ns/prop?consistency=stale", node.url()))
            .send()
            .await?
            .status()
            .is_success()
        {
            anyhow::ensure!(tokio::time::Instant::now() < deadline, "region at {} never saw the namespace", node.url());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    // One watcher per region, on that region's own replica.
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::<(u64, u64, std::time::Instant)>::new()));
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut watchers = Vec::new();
    for (i, node) in nodes.iter().enumerate() {
        let (client, url, seen, stop) = (client.clone(), node.url(), seen.clone(), stop.clone());
        watchers.push(tokio::spawn(async move {
            let mut since = 1u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let r = client.get(format!("{url}/v1/config/ns/prop/watch?since={since}&timeout_ms=1000")).send().await;
                let Ok(r) = r else { continue };
                let Ok(v) = r.json::<serde_json::Value>().await else { continue };
                let now = std::time::Instant::now();
                for c in v["changes"].as_array().into_iter().flatten() {
                    if let Some(ver) = c["version"].as_u64() {
                        seen.lock().unwrap_or_else(|e| e.into_inner()).push((i as u64, ver, now));
                        since = since.max(ver);
                    }
                }
            }
        }));
    }
    // Writes one after another, paced so each one's propagation is measured on a quiet cluster.
    let mut sent = std::collections::BTreeMap::new();
    let writes = (opts.duration.as_millis() as u64 / 100).clamp(10, 200);
    for n in 0..writes {
        let t0 = std::time::Instant::now();
        let r = client
            .put(format!("{leader_url}/v1/config/ns/prop/keys/k{}", n % 10))
            .header("content-type", "application/json")
            .body(format!("{{\"n\":{n}}}"))
            .send()
            .await?;
        let v: serde_json::Value = r.json().await?;
        let version = v["version"].as_u64().ok_or_else(|| anyhow::anyhow!("write failed: {v}"))?;
        sent.insert(version, t0);
        tokio::time::sleep(Duration::from_millis(DELAY_MAX_MS)).await;
    }
    // Wait until every region has seen the last write (or give up after 10 s).
    let last = *sent.keys().last().unwrap_or(&0);
    let wait_end = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let done = {
            let s = seen.lock().unwrap_or_else(|e| e.into_inner());
            (0..REGIONS).all(|r| s.iter().any(|(reg, v, _)| *reg == r && *v == last))
        };
        if done || tokio::time::Instant::now() > wait_end {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for w in watchers {
        let _ = w.await;
    }
    let mut hist = hdrhistogram::Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3)?;
    let samples = seen.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let mut count = 0;
    for (_, version, at) in &samples {
        if let Some(t0) = sent.get(version) {
            let _ = hist.record(at.saturating_duration_since(*t0).as_nanos().max(1) as u64);
            count += 1;
        }
    }
    let expected = sent.len() as u64 * REGIONS;
    if count < expected {
        let per_region: Vec<usize> = (0..REGIONS)
            .map(|r| samples.iter().filter(|(reg, v, _)| *reg == r && sent.contains_key(v)).count())
            .collect();
        anyhow::bail!(
            "only {count} of {expected} (write, region) deliveries were seen within 10 s; per region: {per_region:?}; versions sent: {:?}",
            sent.keys().collect::<Vec<_>>()
        );
    }
    Ok((Measured { ops: count, errors: 0, elapsed: Duration::from_secs(1), hist }, floor_ms))
}

pub async fn run(opts: &BenchOpts) -> anyhow::Result<Report> {
    anyhow::ensure!(opts.url.is_none(), "bench config starts its own 3-node clusters; --url is not supported");
    let dir = std::env::temp_dir().join(format!("basalt-bench-config-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let mut results = Vec::new();
    {
        let nodes = basalt_cluster(opts, &dir).await.context("starting the Basalt cluster")?;
        let urls: Vec<String> = nodes.iter().map(NodeProcess::url).collect();
        // Seed the keys the read scenario reads.
        let c = reqwest::Client::new();
        for n in 0..10 {
            basalt_put(&c, &urls[0], n).send().await?.error_for_status()?;
        }
        let w = run_load(opts, "basalt writes", urls.clone(), basalt_put).await;
        let r = run_load(opts, "basalt linearizable reads", urls, basalt_get).await;
        anyhow::ensure!(w.ops > 0 && r.ops > 0, "no Basalt request succeeded ({} + {} errors)", w.errors, r.errors);
        results.push(("writes", w));
        results.push(("linearizable reads", r));
    }
    let (prop, floor_ms) = propagation(opts, &dir).await.context("the propagation scenario")?;
    let (procs, urls) = etcd_cluster(&dir, 3, INSTALL).await?;
    let c = reqwest::Client::new();
    for n in 0..10 {
        etcd_put(&c, &urls[0], n).send().await?.error_for_status()?;
    }
    let ew = run_load(opts, "etcd writes", urls.clone(), etcd_put).await;
    let er = run_load(opts, "etcd linearizable reads", urls, etcd_get).await;
    drop(procs);
    let _ = std::fs::remove_dir_all(&dir);
    let c = opts.concurrency;
    let report = vec![
        BenchResult::from_measured(&format!("config writes, 3 nodes, {c} concurrent"), &results[0].1)
            .with_peer(PEER, ew.ops_per_sec()),
        BenchResult::from_measured(&format!("config linearizable reads, 3 nodes, {c} concurrent"), &results[1].1)
            .with_peer(PEER, er.ops_per_sec()),
        BenchResult::from_measured(&format!("etcd writes, 3 nodes, {c} concurrent (peer detail)"), &ew),
        BenchResult::from_measured(&format!("etcd linearizable reads, 3 nodes, {c} concurrent (peer detail)"), &er),
    ];
    let mut report = report;
    let p50 = prop.percentile_us(50.0).round();
    let p99 = prop.percentile_us(99.0).round();
    let max = prop.percentile_us(100.0).round();
    report.push(BenchResult::ms(
        &format!("config propagation to {REGIONS} regions (p50 ms; delay matrix {DELAY_MIN_MS}-{DELAY_MAX_MS} ms)"),
        p50,
        p50,
        p99,
    ));
    report.push(BenchResult::ms(
        &format!("config propagation max over all {} (write, region) pairs (ms)", prop.ops),
        max,
        p50,
        p99,
    ));
    let floor_us = (floor_ms * 1000) as f64;
    report.push(BenchResult::ms(
        "physical floor: the slowest injected one-way delay (ms)",
        floor_us,
        floor_us,
        floor_us,
    ));
    Ok(Report { system: "config".into(), results: report })
}

#[cfg(test)]
mod tests {
    #[test]
    fn etcd_keys_are_standard_base64() {
        assert_eq!(super::b64(""), "");
        assert_eq!(super::b64("bench/k1"), "YmVuY2gvazE=");
    }
}
