//! `basalt bench flags`:
//!
//! - SDK evaluations in process: a `basalt-flags-sdk` client fed by a real node, evaluating a
//!   flag with a targeting rule, a segment and a percentage rollout, one context per call
//!   (each call timed alone, so the percentiles include the timer's own ~20-40 ns);
//! - OFREP single-flag evaluations over HTTP on one node;
//! - propagation: a change written to the Raft leader of a 3-node cluster, until each of 20
//!   connected SDKs (spread over the three nodes) holds it — on loopback, and with a WAN delay
//!   matrix injected on the leader's links to the two followers.
//!
//! There is no peer in this run: the aim is the distance from the injected floor.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use basalt_flags_sdk::{ClientOptions, EvalContext, FlagsClient};
use basalt_runtime::bench::{BenchOpts, BenchResult, Measured, Report, measure_async, measure_threads};
use basalt_runtime::process::{NodeProcess, raft_cluster};
use serde_json::{Value, json};

const SDKS: usize = 20;
/// One-way delays from the leader to follower 1 and follower 2 (ms).
const WAN_MS: [u64; 2] = [30, 90];

fn flag() -> Value {
    json!({
        "kind": "string",
        "variants": {"control": "control", "treatment": "treatment", "beta": "beta"},
        "enabled": true,
        "off_variant": "control",
        "rules": [
            {"id": "beta-testers", "clauses": [{"attribute": "targetingKey", "op": "in_segment", "values": ["beta"]}], "serve": {"variant": "beta"}},
            {"id": "eu-pro", "clauses": [
                {"attribute": "country", "op": "in", "values": ["FR", "DE", "ES", "IT"]},
                {"attribute": "plan", "op": "equals", "values": ["pro"]}],
             "serve": {"rollout": {"weights": [["treatment", 50000], ["control", 50000]]}}}
        ],
        "fallthrough": {"rollout": {"weights": [["treatment", 10000], ["control", 90000]]}},
    })
}

async fn ok(r: reqwest::RequestBuilder) -> anyhow::Result<Value> {
    let r = r.send().await?;
    let status = r.status();
    let body: Value = r.json().await.unwrap_or(Value::Null);
    anyhow::ensure!(status.is_success(), "{status}: {body}");
    Ok(body)
}

/// Project `bench`, environment `prod`, the segment and the flag; answers the SDK key.
async fn setup(http: &reqwest::Client, url: &str) -> anyhow::Result<String> {
    ok(http.post(format!("{url}/v1/flags/projects")).json(&json!({"project": "bench"}))).await?;
    let env =
        ok(http.post(format!("{url}/v1/flags/projects/bench/environments")).json(&json!({"environment": "prod"})))
            .await?;
    let key = env["sdk_key"].as_str().ok_or_else(|| anyhow::anyhow!("no sdk_key in {env}"))?.to_owned();
    let base = format!("{url}/v1/flags/projects/bench/environments/prod");
    let beta: Vec<String> = (0..100).map(|i| format!("user-{i}")).collect();
    ok(http.put(format!("{base}/segments/beta")).json(&json!({"included": beta}))).await?;
    ok(http.put(format!("{base}/flags/experiment")).json(&flag())).await?;
    Ok(key)
}

fn contexts() -> Vec<EvalContext> {
    let countries = ["FR", "US", "DE", "JP"];
    (0..4096)
        .map(|i| {
            EvalContext::with_key(format!("user-{i}"))
                .attr("country", countries[i % 4])
                .attr("plan", if i % 3 == 0 { "pro" } else { "free" })
        })
        .collect()
}

async fn sdk(urls: Vec<String>, key: &str) -> anyhow::Result<FlagsClient> {
    let c = FlagsClient::start(ClientOptions::new(urls, key));
    c.ready(Duration::from_secs(30)).await?;
    Ok(c)
}

/// Write `writes` changes to the leader one after another; each sample is the time from
/// sending a write until one SDK holds its version.
async fn propagation(opts: &BenchOpts, wan: bool) -> anyhow::Result<Measured> {
    let dir = tempfile::tempdir()?;
    // openraft 0.9 uses the heartbeat interval as the append-entries timeout: across a WAN it
    // must exceed the longest round trip.
    let args = |_| {
        [
            "--set",
            "fault_injection=true",
            "--set",
            "engines.consensus.heartbeat_ms=400",
            "--set",
            "engines.consensus.election_timeout_min_ms=1500",
            "--set",
            "engines.consensus.election_timeout_max_ms=3000",
            "--set",
            "fsync=\"always\"",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    };
    let (nodes, leader) = raft_cluster(&opts.exe, dir.path(), 3, args).await?;
    let http = reqwest::Client::new();
    let urls: Vec<String> = nodes.iter().map(NodeProcess::url).collect();
    let leader_url = urls[(leader - 1) as usize].clone();
    let key = setup(&http, &leader_url).await?;
    if wan {
        let followers: Vec<u64> = (1..=3).filter(|id| *id != leader).collect();
        let peers: serde_json::Map<String, Value> =
            followers.iter().zip(WAN_MS).map(|(id, ms)| (id.to_string(), json!({"delay_ms": ms}))).collect();
        ok(http.put(format!("{leader_url}/v1/node/faults")).json(&json!({"peers": peers}))).await?;
    }
    let mut clients = Vec::new();
    for i in 0..SDKS {
        clients.push(sdk(vec![urls[i % 3].clone()], &key).await?);
    }
    let seen: Arc<Mutex<Vec<(u64, Instant)>>> = Arc::default();
    let mut watchers = Vec::new();
    for c in &clients {
        let mut rx = c.subscribe();
        let seen = seen.clone();
        watchers.push(tokio::spawn(async move {
            while rx.changed().await.is_ok() {
                let v = *rx.borrow_and_update();
                seen.lock().unwrap_or_else(|e| e.into_inner()).push((v, Instant::now()));
            }
        }));
    }
    let base = format!("{leader_url}/v1/flags/projects/bench/environments/prod/flags/experiment");
    let writes = (opts.duration.as_millis() as u64 / 100).clamp(10, 100);
    let mut hist = hdrhistogram::Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3)?;
    let mut count = 0;
    for n in 0..writes {
        seen.lock().unwrap_or_else(|e| e.into_inner()).clear();
        let t0 = Instant::now();
        let action = if n % 2 == 0 { "disable" } else { "enable" };
        let r = ok(http.post(format!("{base}/{action}"))).await?;
        let version = r["version"].as_u64().ok_or_else(|| anyhow::anyhow!("no version in {r}"))?;
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let got: Vec<Instant> = seen
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .iter()
                .filter(|(v, _)| *v == version)
                .map(|(_, at)| *at)
                .collect();
            if got.len() >= SDKS {
                for at in got {
                    let _ = hist.record(at.saturating_duration_since(t0).as_nanos().max(1) as u64);
                    count += 1;
                }
                break;
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "only {} of {SDKS} SDKs saw version {version} within 10 s",
                got.len()
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
    for w in watchers {
        w.abort();
    }
    drop(clients);
    drop(nodes);
    Ok(Measured { ops: count, errors: 0, elapsed: Duration::from_secs(1), hist })
}

pub async fn run(opts: &BenchOpts) -> anyhow::Result<Report> {
    anyhow::ensure!(opts.url.is_none(), "bench flags starts its own nodes; --url is not supported");
    let mut results = Vec::new();
    {
        let dir = tempfile::tempdir()?;
        let (nodes, _) = raft_cluster(&opts.exe, dir.path(), 1, |_| Vec::new()).await?;
        let url = nodes[0].url();
        let http = reqwest::Client::builder().pool_max_idle_per_host(opts.concurrency).build()?;
        let key = setup(&http, &url).await?;

        let client = sdk(vec![url.clone()], &key).await?;
        let ctxs = contexts();
        let sdk_threads = opts.threads;
        let m = measure_threads(opts, "SDK evaluation", sdk_threads, |t| {
            let (client, ctxs) = (&client, &ctxs);
            let mut i = t * 997;
            move || {
                i = (i + 1) % ctxs.len();
                std::hint::black_box(client.string_value("experiment", &ctxs[i], "control"));
                1
            }
        });
        let mut r = BenchResult::from_measured(&format!("SDK evaluation, in process ({sdk_threads} threads)"), &m);
        r.unit = "evals/s".into();
        results.push(r);
        results.push(BenchResult {
            name: "SDK evaluation p99, one call timed alone".into(),
            unit: "ns".into(),
            value: (m.percentile_us(99.0) * 1000.0).round(),
            p50_us: m.percentile_us(50.0),
            p99_us: m.percentile_us(99.0),
            peer: None,
            peer_value: None,
            ratio: None,
        });

        let bodies: Arc<Vec<String>> = Arc::new(
            ctxs.iter()
                .map(|c| {
                    let mut flat = serde_json::Map::new();
                    if let Some(k) = &c.targeting_key {
                        flat.insert("targetingKey".into(), Value::from(k.as_str()));
                    }
                    flat.extend(c.attributes.clone());
                    json!({"context": flat}).to_string()
                })
                .collect(),
        );
        let counter = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let m = measure_async(opts, "OFREP evaluation", opts.concurrency, {
            let (http, url, key, bodies, counter) =
                (http.clone(), url.clone(), key.clone(), bodies.clone(), counter.clone());
            move |_| {
                let (http, url, key, bodies, counter) =
                    (http.clone(), url.clone(), key.clone(), bodies.clone(), counter.clone());
                async move {
                    let i = counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % bodies.len();
                    let r = http
                        .post(format!("{url}/ofrep/v1/evaluate/flags/experiment"))
                        .bearer_auth(&key)
                        .header("content-type", "application/json")
                        .body(bodies[i].clone())
                        .send()
                        .await?;
                    anyhow::ensure!(r.status() == 200, "status {}", r.status());
                    let _ = r.bytes().await?;
                    Ok(1)
                }
            }
        })
        .await;
        let mut r =
            BenchResult::from_measured(&format!("OFREP evaluation over HTTP ({} concurrent)", opts.concurrency), &m);
        r.unit = "evals/s".into();
        results.push(r);
        drop(client);
        drop(nodes);
    }

    for (wan, label) in [(false, "loopback".to_owned()), (true, format!("WAN {}/{} ms", WAN_MS[0], WAN_MS[1]))] {
        let m = propagation(opts, wan).await?;
        let (p50, p99) = (m.percentile_us(50.0).round(), m.percentile_us(99.0).round());
        results.push(BenchResult::ms(&format!("propagation to {SDKS} SDKs, {label} (p50 ms)"), p50, p50, p99));
        results.push(BenchResult::ms(&format!("propagation to {SDKS} SDKs, {label} (p99 ms)"), p99, p50, p99));
    }
    let floor_us = (WAN_MS[1] * 1000) as f64;
    results.push(BenchResult::ms("WAN floor: the slowest injected one-way delay (ms)", floor_us, floor_us, floor_us));
    Ok(Report { system: "flags".into(), results })
}
