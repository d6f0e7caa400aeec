//! `basalt bench ids`: IDs per second in-process (per kind, batched and one at a time) and over
//! HTTP, with the `uuid` crate's own `Uuid::now_v7()` measured in the same run as the reference.
//!
//! In-process scenarios drive the pure generators directly with the wall clock and an
//! unlimited reservation: they measure the generator, not the fsync of the high-water mark
//! (which the service amortises to a few fsyncs per second, off the request path).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use basalt_idgen::{Refusal, Snowflake, SnowflakeLayout, UlidGen, UuidV7Gen};
use basalt_runtime::bench::{BenchOpts, BenchResult, Measured, Report, measure_async, measure_threads};
use basalt_runtime::process::{NodeProcess, NodeSpec};
use rand::SeedableRng;
use rand::rngs::SmallRng;

const PEER: &str = "uuid crate Uuid::now_v7()";
const BATCH: usize = 4096;
const CALLS_PER_SAMPLE: u64 = 256;
/// Worker ids per node in the default config (`systems.ids.generators`).
const GENERATORS: u32 = 8;

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

/// The shards one bench thread owns: `GENERATORS` split across `threads`.
fn shards_for(thread: usize, threads: usize) -> Vec<Snowflake> {
    let layout = SnowflakeLayout::default();
    (0..GENERATORS)
        .filter(|w| *w as usize % threads == thread)
        .map(|w| Snowflake::new(layout, w, 0, u64::MAX, 1_000).expect("valid worker"))
        .collect()
}

/// Take IDs from the thread's shards, moving on when one is out of sequence for this
/// millisecond; spins only when all of them are (the layout's real capacity limit).
fn snowflake_batch(thread: usize, threads: usize) -> impl FnMut() -> u64 {
    let mut shards = shards_for(thread, threads);
    let mut buf = vec![0u64; BATCH];
    let mut at = 0;
    move || {
        loop {
            let now = now_ms();
            for _ in 0..shards.len() {
                let this = at;
                at = (at + 1) % shards.len();
                if let Ok(n) = shards[this].fill(now, &mut buf) {
                    std::hint::black_box(&buf[..n]);
                    return n as u64;
                }
            }
            std::hint::spin_loop();
        }
    }
}

fn snowflake_one_by_one(thread: usize, threads: usize) -> impl FnMut() -> u64 {
    let mut shards = shards_for(thread, threads);
    let mut at = 0;
    move || {
        let mut n = 0;
        while n < CALLS_PER_SAMPLE {
            match shards[at].next_id(now_ms()) {
                Ok(id) => {
                    std::hint::black_box(id);
                    n += 1;
                }
                Err(Refusal::Wait { .. }) => at = (at + 1) % shards.len(),
                Err(e) => panic!("bench generator refused: {e}"),
            }
        }
        n
    }
}

fn uuidv7_one_by_one() -> impl FnMut() -> u64 {
    let mut g = UuidV7Gen::new(0, u64::MAX, 1_000);
    let mut rng = SmallRng::from_os_rng();
    move || {
        let mut n = 0;
        while n < CALLS_PER_SAMPLE {
            if let Ok(id) = g.next(now_ms(), &mut rng) {
                std::hint::black_box(id);
                n += 1;
            }
        }
        n
    }
}

fn peer_one_by_one() -> impl FnMut() -> u64 {
    || {
        for _ in 0..CALLS_PER_SAMPLE {
            std::hint::black_box(uuid::Uuid::now_v7());
        }
        CALLS_PER_SAMPLE
    }
}

fn random_batch(kind: &'static str) -> impl FnMut() -> u64 {
    let mut ulid = UlidGen::new(0, u64::MAX, 1_000);
    let mut uuid = UuidV7Gen::new(0, u64::MAX, 1_000);
    let mut rng = SmallRng::from_os_rng();
    let mut buf = vec![0u128; BATCH];
    move || {
        let now = now_ms();
        let r = if kind == "ulid" { ulid.fill(now, &mut rng, &mut buf) } else { uuid.fill(now, &mut rng, &mut buf) };
        r.map(|n| {
            std::hint::black_box(&buf[..n]);
            n as u64
        })
        .unwrap_or(0)
    }
}

pub async fn run(opts: &BenchOpts) -> anyhow::Result<Report> {
    let t = opts.threads.max(1);
    let mut results = Vec::new();

    let m = measure_threads(opts, "snowflake batch", t, |i| snowflake_batch(i, t));
    results.push(BenchResult::from_measured(&format!("snowflake in-process, batch {BATCH}, {t} threads"), &m));

    let peer1 = measure_threads(opts, "peer now_v7, 1 thread", 1, |_| peer_one_by_one());
    let ours1 = measure_threads(opts, "snowflake one by one, 1 thread", 1, |_| snowflake_one_by_one(0, 1));
    results.push(row("snowflake in-process, one by one, 1 thread", &ours1, &peer1));
    let uuid1 = measure_threads(opts, "uuidv7 one by one, 1 thread", 1, |_| uuidv7_one_by_one());
    results.push(row("uuidv7 in-process, one by one, 1 thread", &uuid1, &peer1));

    let peer_t = measure_threads(opts, "peer now_v7", t, |_| peer_one_by_one());
    let ours_t = measure_threads(opts, "snowflake one by one", t, |i| snowflake_one_by_one(i, t));
    results.push(row(&format!("snowflake in-process, one by one, {t} threads"), &ours_t, &peer_t));

    for kind in ["ulid", "uuidv7"] {
        let m = measure_threads(opts, kind, 1, |_| random_batch(kind));
        results.push(BenchResult::from_measured(&format!("{kind} in-process, batch {BATCH}, 1 thread"), &m));
    }

    let dir = tempfile_dir()?;
    let (url, _node) = match &opts.url {
        Some(u) => (u.trim_end_matches('/').to_string(), None),
        None => {
            let spec = NodeSpec::new(&opts.exe, dir.join("node")).arg("--log-level").arg("warn");
            let node =
                NodeProcess::start(spec, Duration::from_secs(30)).await.context("starting a node to benchmark")?;
            (node.url(), Some(node))
        }
    };
    let client = reqwest::Client::builder().pool_max_idle_per_host(opts.concurrency.max(1)).build()?;
    for (kind, count) in [("snowflake", 1000usize), ("snowflake", 1), ("uuidv7", 1000)] {
        let (client, target) = (client.clone(), format!("{url}/v1/ids?kind={kind}&count={count}"));
        let name = format!("http {kind}, {count} per request, {} concurrent", opts.concurrency);
        let m = measure_async(opts, &name, opts.concurrency, move |_| {
            let (client, target) = (client.clone(), target.clone());
            async move {
                let resp = client.post(&target).send().await?;
                anyhow::ensure!(resp.status().is_success(), "status {}", resp.status());
                let _ = resp.bytes().await?;
                Ok(count as u64)
            }
        })
        .await;
        anyhow::ensure!(m.ops > 0, "no request to {url} succeeded ({} errors)", m.errors);
        results.push(BenchResult::from_measured(&name, &m));
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(Report { system: "ids".into(), results })
}

/// One-by-one rows time samples of `CALLS_PER_SAMPLE` calls; report per-ID latency.
fn row(name: &str, ours: &Measured, peer: &Measured) -> BenchResult {
    let mut r = BenchResult::from_measured(name, ours).with_peer(PEER, peer.ops_per_sec());
    let per = CALLS_PER_SAMPLE as f64;
    r.p50_us = (r.p50_us / per * 1000.0).round() / 1000.0;
    r.p99_us = (r.p99_us / per * 1000.0).round() / 1000.0;
    r
}

fn tempfile_dir() -> anyhow::Result<std::path::PathBuf> {
    let dir = std::env::temp_dir().join(format!("basalt-bench-ids-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}
