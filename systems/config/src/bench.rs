//! `basalt bench config`: linearizable writes and reads on a 3-node Basalt cluster, and the same
//! workload against a 3-node etcd cluster (Debian `etcd-server`, through its v3 JSON gateway) in
//! the same run. Both sides fsync every acknowledged write on a quorum and are driven over
//! HTTP/JSON by the same client with the same concurrency.

use std::time::Duration;

use anyhow::Context;
use basalt_runtime::bench::{BenchOpts, BenchResult, Measured, Report, measure_async};
use basalt_runtime::process::{NodeProcess, NodeSpec, PeerProcess, free_port};

const PEER: &str = "etcd 3.4 (3 nodes, v3 JSON gateway)";
const INSTALL: &str = "scripts/install-deps etcd-server etcd-client";
const KEYS: u64 = 1000;

fn b64(s: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(s)
}

async fn basalt_cluster(opts: &BenchOpts, dir: &std::path::Path) -> anyhow::Result<Vec<NodeProcess>> {
    let mut nodes: Vec<NodeProcess> = Vec::new();
    for id in 1..=3u64 {
        let mut spec = NodeSpec::new(&opts.exe, dir.join(format!("basalt-{id}")))
            .arg("--node-id")
            .arg(id.to_string())
            .arg("--log-level")
            .arg("warn");
        if let Some(first) = nodes.first() {
            spec = spec.arg("--join").arg(first.http_addr.clone());
        }
        nodes.push(NodeProcess::start(spec, Duration::from_secs(60)).await?);
    }
    let client = reqwest::Client::new();
    let url = nodes[0].url();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let s: serde_json::Value = client.get(format!("{url}/v1/cluster")).send().await?.json().await?;
        let voters = s["members"].as_array().map_or(0, |m| m.iter().filter(|x| x["voter"] == true).count());
        if voters == 3 && s["leader_id"].is_u64() {
            break;
        }
        anyhow::ensure!(tokio::time::Instant::now() < deadline, "the Basalt cluster did not form: {s}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let r = client.put(format!("{url}/v1/config/ns/bench")).send().await?;
    anyhow::ensure!(r.status().is_success(), "creating the namespace: {}", r.text().await?);
    Ok(nodes)
}

async fn etcd_cluster(dir: &std::path::Path) -> anyhow::Result<(Vec<PeerProcess>, Vec<String>)> {
    anyhow::ensure!(PeerProcess::available("etcd"), "etcd is not installed; run `{INSTALL}`");
    let ports: Vec<(u16, u16)> = (0..3).map(|_| Ok((free_port()?, free_port()?))).collect::<anyhow::Result<_>>()?;
    let initial: Vec<String> =
        ports.iter().enumerate().map(|(i, (_, p))| format!("e{i}=http://127.0.0.1:{p}")).collect();
    let mut procs = Vec::new();
    let mut urls = Vec::new();
    for (i, (client_port, peer_port)) in ports.iter().enumerate() {
        let args: Vec<String> = [
            "--name".into(),
            format!("e{i}"),
            "--data-dir".into(),
            dir.join(format!("etcd-{i}")).display().to_string(),
            "--listen-client-urls".into(),
            format!("http://127.0.0.1:{client_port}"),
            "--advertise-client-urls".into(),
            format!("http://127.0.0.1:{client_port}"),
            "--listen-peer-urls".into(),
            format!("http://127.0.0.1:{peer_port}"),
            "--initial-advertise-peer-urls".into(),
            format!("http://127.0.0.1:{peer_port}"),
            "--initial-cluster".into(),
            initial.join(","),
            "--initial-cluster-state".into(),
            "new".into(),
            "--log-level".into(),
            "error".into(),
        ]
        .into();
        procs.push(PeerProcess::start(
            &format!("etcd-{i}"),
            "etcd",
            &args,
            &dir.join(format!("etcd-{i}.log")),
            INSTALL,
        )?);
        urls.push(format!("http://127.0.0.1:{client_port}"));
    }
    let client = reqwest::Client::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    for u in &urls {
        loop {
            let ok = client.get(format!("{u}/health")).send().await.ok().filter(|r| r.status().is_success()).is_some();
            if ok {
                break;
            }
            anyhow::ensure!(
                tokio::time::Instant::now() < deadline,
                "etcd did not become healthy: {}",
                procs[0].log_tail()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    Ok((procs, urls))
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
    let (procs, urls) = etcd_cluster(&dir).await?;
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
