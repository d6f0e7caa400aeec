//! `basalt bench coord`: a 3-node Basalt cluster and a 3-node etcd cluster (Debian's
//! `etcd-server`, fsync on as always) on loopback in the same run, driven by the same gRPC
//! client (generated from this crate's protos) with the same concurrency: put throughput and
//! p99 with 1 and 100 clients, linearizable ranges, watch event latency, lock
//! acquire/release (v3lock) and lease keep-alives — each as Basalt/etcd. On both sides the single client writes to
//! the leader (found as `etcdctl endpoint status` finds it), and many clients spread over the
//! members from the leader on.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use basalt_runtime::bench::{
    BenchOpts, BenchResult, CpuMeter, Measured, Report, measure_async, only_from_env, ops_per_cpu_sec,
};
use basalt_runtime::process::{etcd_cluster, raft_cluster};
use tonic::transport::Channel;

use crate::pb::etcdserverpb as pb;
use crate::pb::etcdserverpb::kv_client::KvClient;
use crate::pb::etcdserverpb::lease_client::LeaseClient;
use crate::pb::etcdserverpb::maintenance_client::MaintenanceClient;
use crate::pb::etcdserverpb::watch_client::WatchClient;
use crate::pb::v3lockpb::lock_client::LockClient;
use crate::pb::v3lockpb::{LockRequest, UnlockRequest};

const INSTALL: &str = "scripts/install-deps etcd-server etcd-client";
const PEER: &str = "etcd 3.4 (3 nodes)";
const KEYS: u64 = 1000;
const MANY: usize = 100;

async fn channels(endpoints: &[String]) -> anyhow::Result<Vec<Channel>> {
    let mut out = Vec::new();
    for e in endpoints {
        out.push(Channel::from_shared(e.clone())?.connect().await.with_context(|| format!("connecting to {e}"))?);
    }
    Ok(out)
}

/// The channels with the leader's first, asked of each member the way etcdctl's `endpoint
/// status` asks (the member whose id is the leader it reports). Both sides then send the
/// single-client puts and the watched writes to their leader, and the rest the same way round.
async fn leader_first(mut chans: Vec<Channel>) -> anyhow::Result<Vec<Channel>> {
    for i in 0..chans.len() {
        let s = MaintenanceClient::new(chans[i].clone()).status(pb::StatusRequest {}).await?.into_inner();
        if s.header.is_some_and(|h| h.member_id == s.leader) {
            chans.rotate_left(i);
            return Ok(chans);
        }
    }
    anyhow::bail!("no member says it is the leader")
}

fn value() -> Vec<u8> {
    vec![b'v'; 256]
}

async fn puts(opts: &BenchOpts, name: &str, chans: &[Channel], clients: usize) -> Measured {
    let counter = Arc::new(AtomicU64::new(0));
    let chans = chans.to_vec();
    measure_async(opts, name, clients, move |w| {
        let (mut kv, counter) = (KvClient::new(chans[w % chans.len()].clone()), counter.clone());
        async move {
            let n = counter.fetch_add(1, Ordering::Relaxed) % KEYS;
            kv.put(pb::PutRequest { key: format!("bench/{n}").into_bytes(), value: value(), ..Default::default() })
                .await?;
            Ok(1)
        }
    })
    .await
}

async fn ranges(opts: &BenchOpts, name: &str, chans: &[Channel], clients: usize) -> Measured {
    let counter = Arc::new(AtomicU64::new(0));
    let chans = chans.to_vec();
    measure_async(opts, name, clients, move |w| {
        let (mut kv, counter) = (KvClient::new(chans[w % chans.len()].clone()), counter.clone());
        async move {
            let n = counter.fetch_add(1, Ordering::Relaxed) % KEYS;
            let r = kv.range(pb::RangeRequest { key: format!("bench/{n}").into_bytes(), ..Default::default() }).await?;
            anyhow::ensure!(!r.into_inner().kvs.is_empty(), "a seeded key was missing");
            Ok(1)
        }
    })
    .await
}

async fn locks(opts: &BenchOpts, name: &str, chans: &[Channel], clients: usize) -> anyhow::Result<Measured> {
    // One lease per client, each client its own lock name (acquire + release, uncontended).
    let mut leases = Vec::new();
    for w in 0..clients {
        let mut l = LeaseClient::new(chans[w % chans.len()].clone());
        leases.push(l.lease_grant(pb::LeaseGrantRequest { ttl: 60, id: 0 }).await?.into_inner().id);
    }
    let leases = Arc::new(leases);
    let chans = chans.to_vec();
    Ok(measure_async(opts, name, clients, move |w| {
        let (mut lk, leases) = (LockClient::new(chans[w % chans.len()].clone()), leases.clone());
        async move {
            let key = lk
                .lock(LockRequest { name: format!("lock/{w}").into_bytes(), lease: leases[w] })
                .await?
                .into_inner()
                .key;
            lk.unlock(UnlockRequest { key }).await?;
            Ok(1)
        }
    })
    .await)
}

/// Lease keep-alives: each client keeps its own lease alive over its own `LeaseKeepAlive`
/// stream (as etcd's clients do, one stream per client), one request in flight, on the member
/// its channel goes to. A keep-alive counts when its answer carries a TTL.
async fn keep_alives(opts: &BenchOpts, name: &str, chans: &[Channel], clients: usize) -> anyhow::Result<Measured> {
    type KeepAlive =
        (tokio::sync::mpsc::Sender<pb::LeaseKeepAliveRequest>, tonic::Streaming<pb::LeaseKeepAliveResponse>);
    let mut streams = Vec::new();
    for w in 0..clients {
        let mut l = LeaseClient::new(chans[w % chans.len()].clone());
        let id = l.lease_grant(pb::LeaseGrantRequest { ttl: 60, id: 0 }).await?.into_inner().id;
        // The first keep-alive goes with the call: etcd sends the stream's headers only with
        // its first answer, and the call returns once they arrive.
        let (tx, rx) = tokio::sync::mpsc::channel(1);
        tx.send(pb::LeaseKeepAliveRequest { id }).await?;
        let mut answers = l.lease_keep_alive(tokio_stream::wrappers::ReceiverStream::new(rx)).await?.into_inner();
        answers.message().await?.context("the keep-alive stream ended")?;
        streams.push((id, tokio::sync::Mutex::new((tx, answers))));
    }
    let streams: Arc<Vec<(i64, tokio::sync::Mutex<KeepAlive>)>> = Arc::new(streams);
    Ok(measure_async(opts, name, clients, move |w| {
        let streams = streams.clone();
        async move {
            let (id, stream) = &streams[w];
            let mut guard = stream.lock().await;
            let (tx, answers) = &mut *guard;
            tx.send(pb::LeaseKeepAliveRequest { id: *id }).await.context("the keep-alive stream closed")?;
            let r = answers.message().await?.context("the keep-alive stream ended")?;
            anyhow::ensure!(r.ttl > 0, "lease {id:x} was not renewed (TTL {})", r.ttl);
            Ok(1)
        }
    })
    .await)
}

/// Writes through the leader, one at a time; a watcher on a follower times each event's arrival.
async fn watch_latency(opts: &BenchOpts, chans: &[Channel]) -> anyhow::Result<Measured> {
    let (tx, rx) = tokio::sync::mpsc::channel::<pb::WatchRequest>(1);
    let create =
        pb::WatchCreateRequest { key: b"watched/".to_vec(), range_end: b"watched0".to_vec(), ..Default::default() };
    tx.send(pb::WatchRequest { request_union: Some(pb::watch_request::RequestUnion::CreateRequest(create)) }).await?;
    let mut watch = WatchClient::new(chans[1 % chans.len()].clone());
    let mut stream = watch.watch(tokio_stream::wrappers::ReceiverStream::new(rx)).await?.into_inner();
    let created = stream.message().await?.context("the watch stream ended")?;
    anyhow::ensure!(created.created, "the watch was not created: {created:?}");
    let mut kv = KvClient::new(chans[0].clone());
    let mut hist = hdrhistogram::Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3)?;
    let writes = (opts.duration.as_millis() as u64 / 10).clamp(50, 500);
    for n in 0..writes {
        let t0 = Instant::now();
        let rev = kv
            .put(pb::PutRequest {
                key: format!("watched/{}", n % 10).into_bytes(),
                value: value(),
                ..Default::default()
            })
            .await?
            .into_inner()
            .header
            .map_or(0, |h| h.revision);
        loop {
            let resp = tokio::time::timeout(Duration::from_secs(10), stream.message())
                .await
                .context("no watch event within 10 s")??
                .context("the watch stream ended")?;
            if resp.events.iter().any(|e| e.kv.as_ref().is_some_and(|kv| kv.mod_revision >= rev)) {
                break;
            }
        }
        let _ = hist.record(t0.elapsed().as_nanos().max(1) as u64);
    }
    drop(tx);
    Ok(Measured { ops: writes, errors: 0, elapsed: Duration::from_secs(1), hist })
}

/// A scenario's result and the servers' CPU time during its measured window.
/// A scenario's measurement, the CPU the servers used in its window, and the CPU this process
/// (the load generator, the same for both sides) used in it.
type WithCpu = (Measured, Option<Duration>, Option<Duration>);

/// Run `scenario` and meter the servers' CPU and the load generator's over its window.
async fn metered<T>(
    opts: &BenchOpts,
    servers: &CpuMeter,
    scenario: impl std::future::Future<Output = T>,
) -> (T, Option<Duration>, Option<Duration>) {
    let client = CpuMeter::new([std::process::id()]);
    let ((out, server_cpu), client_cpu) = client.during(opts, servers.during(opts, scenario)).await;
    (out, server_cpu, client_cpu)
}

/// Each scenario's result; `None` for one `BASALT_BENCH_COORD_ONLY` left out.
struct Side {
    put1: Option<WithCpu>,
    put_many: Option<WithCpu>,
    range: Option<WithCpu>,
    watch: Option<Measured>,
    lock: Option<WithCpu>,
    keep_alive: Option<WithCpu>,
}

/// The scenarios, by the names `BASALT_BENCH_COORD_ONLY` takes (for iterating on some of them).
const SCENARIOS: [&str; 6] = ["put1", "put", "range", "watch", "lock", "keepalive"];

async fn run_side(
    opts: &BenchOpts,
    label: &str,
    endpoints: &[String],
    servers: &CpuMeter,
    only: Option<&[String]>,
) -> anyhow::Result<Side> {
    let on = |s: &str| only.is_none_or(|o| o.iter().any(|t| t == s));
    let chans = leader_first(channels(endpoints).await?).await?;
    let mut kv = KvClient::new(chans[0].clone());
    for n in 0..KEYS {
        kv.put(pb::PutRequest { key: format!("bench/{n}").into_bytes(), value: value(), ..Default::default() }).await?;
    }
    let mut side = Side { put1: None, put_many: None, range: None, watch: None, lock: None, keep_alive: None };
    if on("put1") {
        side.put1 = Some(metered(opts, servers, puts(opts, &format!("{label} put, 1 client"), &chans, 1)).await);
    }
    if on("put") {
        side.put_many =
            Some(metered(opts, servers, puts(opts, &format!("{label} put, {MANY} clients"), &chans, MANY)).await);
    }
    if on("range") {
        let name = format!("{label} linearizable range, {MANY} clients");
        side.range = Some(metered(opts, servers, ranges(opts, &name, &chans, MANY)).await);
    }
    if on("watch") {
        side.watch = Some(watch_latency(opts, &chans).await?);
    }
    if on("lock") {
        let (lock, cpu, client) =
            metered(opts, servers, locks(opts, &format!("{label} lock + unlock, 16 clients"), &chans, 16)).await;
        side.lock = Some((lock?, cpu, client));
    }
    if on("keepalive") {
        let name = format!("{label} lease keep-alive, {MANY} clients");
        let (m, cpu, client) = metered(opts, servers, keep_alives(opts, &name, &chans, MANY)).await;
        side.keep_alive = Some((m?, cpu, client));
    }
    Ok(side)
}

pub async fn run(opts: &BenchOpts) -> anyhow::Result<Report> {
    anyhow::ensure!(opts.url.is_none(), "bench coord starts its own clusters; --url is not supported");
    let only = only_from_env("BASALT_BENCH_COORD_ONLY", &SCENARIOS)?;
    let dir = tempfile::tempdir()?;
    std::fs::create_dir_all(dir.path().join("basalt"))?;
    std::fs::create_dir_all(dir.path().join("etcd"))?;
    let basalt = {
        let (nodes, _) = raft_cluster(&opts.exe, &dir.path().join("basalt"), 3, |_| Vec::new()).await?;
        let servers = CpuMeter::new(nodes.iter().map(|n| n.pid()));
        let http = reqwest::Client::new();
        let mut endpoints = Vec::new();
        for n in &nodes {
            let v: serde_json::Value = http.get(format!("{}/v1/coord", n.url())).send().await?.json().await?;
            let addr = v["etcd_addr"].as_str().context("no etcd_addr")?;
            endpoints.push(format!("http://{addr}"));
        }
        run_side(opts, "basalt", &endpoints, &servers, only.as_deref()).await.context("the Basalt side")?
    };
    let etcd = {
        let (procs, urls) = etcd_cluster(&dir.path().join("etcd"), 3, INSTALL).await?;
        let servers = CpuMeter::new(procs.iter().map(|p| p.pid()));
        run_side(opts, "etcd", &urls, &servers, only.as_deref()).await.context("the etcd side")?
    };
    let row = |name: &str, b: &Option<WithCpu>, e: &Option<WithCpu>, unit: &str| {
        let (b, e) = (b.as_ref()?, e.as_ref()?);
        let mut r = BenchResult::from_measured(name, &b.0);
        r.unit = unit.into();
        Some(r.with_peer(&format!("{PEER} (p99 {:.0} µs)", e.0.percentile_us(99.0)), e.0.ops_per_sec()))
    };
    // Work per request: requests per CPU-second of the three servers together (all threads),
    // in the same measured window. It holds up on a busy machine where throughput does not.
    // The name also carries the load generator's CPU per request against each side: on two
    // cores it shares the machine with the servers, and its share caps the throughput ratio.
    let per_cpu = |name: &str, b: &Option<WithCpu>, e: &Option<WithCpu>, unit: &str| {
        let (b, e) = (b.as_ref()?, e.as_ref()?);
        let (Some(bc), Some(ec)) = (b.1, e.1) else { return None };
        let each = |ops: u64, cpu: Option<Duration>| cpu.map(|c| 1e6 / ops_per_cpu_sec(ops, c).max(1e-9));
        let name = match (each(b.0.ops, b.2), each(e.0.ops, e.2)) {
            (Some(cb), Some(ce)) => format!("{name} (load generator {cb:.0} / {ce:.0} µs CPU each)"),
            _ => name.to_string(),
        };
        let mut r = BenchResult::from_measured(&name, &b.0);
        r.value = ops_per_cpu_sec(b.0.ops, bc).round();
        r.unit = unit.into();
        (r.p50_us, r.p99_us) = (0.0, 0.0);
        Some(r.with_peer(
            &format!("{PEER} ({:.0} µs CPU each)", 1e6 / ops_per_cpu_sec(e.0.ops, ec).max(1e-9)),
            ops_per_cpu_sec(e.0.ops, ec),
        ))
    };
    let lat = |name: &str, m: &Option<Measured>| {
        m.as_ref().map(|m| BenchResult::ms(name, m.percentile_us(50.0), m.percentile_us(50.0), m.percentile_us(99.0)))
    };
    Ok(Report {
        system: "coord".into(),
        results: vec![
            row("put, 1 client (to the leader), 3 nodes, fsync", &basalt.put1, &etcd.put1, "puts/s"),
            row(&format!("put, {MANY} clients, 3 nodes, fsync"), &basalt.put_many, &etcd.put_many, "puts/s"),
            row(&format!("linearizable range, {MANY} clients"), &basalt.range, &etcd.range, "ranges/s"),
            row("lock + unlock (v3lock), 16 clients", &basalt.lock, &etcd.lock, "pairs/s"),
            row(&format!("lease keep-alive, {MANY} clients"), &basalt.keep_alive, &etcd.keep_alive, "keep-alives/s"),
            lat("watch event latency, basalt (p50 ms; write on the leader, watch on a follower)", &basalt.watch),
            lat("watch event latency, etcd (p50 ms; same)", &etcd.watch),
        ]
        .into_iter()
        .flatten()
        .chain(
            [
                per_cpu("put, 1 client: per server CPU-second", &basalt.put1, &etcd.put1, "puts"),
                per_cpu(
                    &format!("put, {MANY} clients: per server CPU-second"),
                    &basalt.put_many,
                    &etcd.put_many,
                    "puts",
                ),
                per_cpu("linearizable range: per server CPU-second", &basalt.range, &etcd.range, "ranges"),
                per_cpu("lock + unlock: per server CPU-second", &basalt.lock, &etcd.lock, "pairs"),
                per_cpu("lease keep-alive: per server CPU-second", &basalt.keep_alive, &etcd.keep_alive, "keep-alives"),
            ]
            .into_iter()
            .flatten(),
        )
        .collect(),
    })
}
