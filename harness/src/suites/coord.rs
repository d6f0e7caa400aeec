//! `coord`: S05 through the etcd v3 API and the `etcd-client` crate. Clients on every node read
//! (linearizable Range), Put and compare-and-set (a Txn comparing the value, whose failure
//! branch reads it: a failed one is recorded as the read it was) a few keys while the nemesis
//! kills, pauses and isolates nodes. A reply wrong on its face — a failed compare that read
//! the very value it compared with — fails the run outright. Then, once the cluster has healed:
//!
//! - the history, one register per key, must be linearizable (an acknowledged write lost to a
//!   `kill -9`, or a stale read from a cut-off member, fails it);
//! - a watch from revision 1 must replay the keys' whole history: revisions strictly
//!   increasing, every acknowledged write at the revision its reply gave and with its value,
//!   no write applied twice, no value nobody wrote, and each key's last event is what a read
//!   returns now;
//! - a watch held open through the whole run (resumed on another member from the next revision
//!   whenever its stream broke) must have seen exactly that replay.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use basalt_lincheck::{Op, Outcome, RegisterOp, RegisterRet, Verdict};
use etcd_client::{Client, Compare, CompareOp, ConnectOptions, GetOptions, Txn, TxnOp, TxnOpResponse};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::watch::{Followed, check, first_read, follow, followed_matches, replay};
use super::{RegOp, SuiteOpts, SuiteReport, judge_registers, run_nemesis, write_failure};
use crate::cluster::Cluster;

const PREFIX: &str = "chaos/";

/// A write the server acknowledged: the revision its reply named, the key and the value.
#[derive(Debug, Clone)]
struct Acked {
    revision: i64,
    key: String,
    value: String,
}

pub async fn coord(opts: &SuiteOpts) -> anyhow::Result<SuiteReport> {
    let mut c = Cluster::start_with_args(&opts.exe, opts.nodes, opts.node_args.clone()).await;
    let mut addrs = Vec::new();
    for id in 1..=opts.nodes {
        addrs.push(etcd_addr(&c, id).await?);
    }
    let start = Instant::now();
    let deadline = start + opts.duration;
    // Each operation, with the node (1-based) it went to.
    let history: Arc<Mutex<Vec<(RegOp, usize)>>> = Arc::default();
    let acked: Arc<Mutex<Vec<Acked>>> = Arc::default();
    // Answers wrong on their face, whatever the history: a failed compare that read the very
    // value it compared with, or a failed txn without its failure branch's answer.
    let anomalies: Arc<Mutex<Vec<String>>> = Arc::default();
    let followed: Followed = Arc::default();
    let follower = tokio::spawn(follow(addrs.clone(), PREFIX, opts.seed, Instant::now(), followed.clone()));
    let mut clients = Vec::new();
    for id in 0..opts.clients as u64 {
        // One etcd client per node, each bound to that node only (as a client pinned to one
        // endpoint is), connected while every node is up; tonic reconnects after a restart.
        let mut conns = Vec::new();
        for a in &addrs {
            conns.push(connect(a).await?);
        }
        let (history, acked, keys, seed) = (history.clone(), acked.clone(), opts.keys, opts.seed);
        let anomalies = anomalies.clone();
        let serializable = opts.serializable_reads;
        clients.push(tokio::spawn(async move {
            let mut rng = StdRng::seed_from_u64(seed.wrapping_add(id + 1));
            let mut last_seen: HashMap<String, Option<String>> = HashMap::new();
            let mut n = 0u64;
            while Instant::now() < deadline {
                let key = format!("{PREFIX}k{}", rng.random_range(0..keys));
                let node = rng.random_range(0..conns.len());
                let kv = &mut conns[node];
                n += 1;
                let invoke = start.elapsed().as_nanos() as u64;
                let now = || start.elapsed().as_nanos() as u64;
                let value = format!("c{id}-{n}");
                let roll = rng.random_range(0..4);
                let (input, outcome) = if roll < 2 {
                    let options = serializable.then(|| GetOptions::new().with_serializable());
                    let outcome = match kv.get(key.as_str(), options).await {
                        Ok(r) => {
                            let v = r.kvs().first().map(|kv| String::from_utf8_lossy(kv.value()).into_owned());
                            last_seen.insert(key.clone(), v.clone());
                            Outcome::Ok { output: RegisterRet::Value(v), complete_ns: now() }
                        }
                        // A read that did not answer observed nothing.
                        Err(_) => Outcome::Fail { complete_ns: now() },
                    };
                    (RegisterOp::Read, outcome)
                } else if roll == 2 {
                    let outcome = match kv.put(key.as_str(), value.as_str(), None).await {
                        Ok(r) => {
                            let revision = r.header().map_or(0, |h| h.revision());
                            acked.lock().unwrap_or_else(|e| e.into_inner()).push(Acked {
                                revision,
                                key: key.clone(),
                                value: value.clone(),
                            });
                            Outcome::Ok { output: RegisterRet::Written, complete_ns: now() }
                        }
                        Err(e) => write_error(&e, now()),
                    };
                    (RegisterOp::Write(value), outcome)
                } else {
                    // Compare-and-set; a failed one reads the value it found (its txn's failure
                    // branch, in the same revision), so it goes in the history as that read.
                    let expect = last_seen.get(&key).cloned().flatten();
                    let when = match &expect {
                        Some(v) => Compare::value(key.as_str(), CompareOp::Equal, v.as_str()),
                        None => Compare::version(key.as_str(), CompareOp::Equal, 0),
                    };
                    let txn = Txn::new()
                        .when([when])
                        .and_then([TxnOp::put(key.as_str(), value.as_str(), None)])
                        .or_else([TxnOp::get(key.as_str(), None)]);
                    let cas = RegisterOp::Cas { expect: expect.clone(), new: value.clone() };
                    match kv.txn(txn).await {
                        Ok(r) if r.succeeded() => {
                            let revision = r.header().map_or(0, |h| h.revision());
                            acked.lock().unwrap_or_else(|e| e.into_inner()).push(Acked {
                                revision,
                                key: key.clone(),
                                value: value.clone(),
                            });
                            (cas, Outcome::Ok { output: RegisterRet::CasOk, complete_ns: now() })
                        }
                        Ok(r) => {
                            let read = now();
                            let found = match r.op_responses().into_iter().next() {
                                Some(TxnOpResponse::Get(g)) => {
                                    Ok(g.kvs().first().map(|kv| String::from_utf8_lossy(kv.value()).into_owned()))
                                }
                                other => Err(format!("a failed txn on {key} answered {other:?}, not its read")),
                            };
                            match found {
                                Ok(found) => {
                                    if found == expect {
                                        let mut a = anomalies.lock().unwrap_or_else(|e| e.into_inner());
                                        a.push(format!(
                                            "a txn comparing {key} with {expect:?} failed, yet read {found:?} in \
                                             the same revision"
                                        ));
                                    }
                                    last_seen.insert(key.clone(), found.clone());
                                    (
                                        RegisterOp::Read,
                                        Outcome::Ok { output: RegisterRet::Value(found), complete_ns: read },
                                    )
                                }
                                Err(e) => {
                                    anomalies.lock().unwrap_or_else(|e| e.into_inner()).push(e);
                                    (RegisterOp::Read, Outcome::Fail { complete_ns: read })
                                }
                            }
                        }
                        Err(e) => (cas, write_error(&e, now())),
                    }
                };
                let failed = !matches!(outcome, Outcome::Ok { .. });
                let op = Op { client: id, key, input, invoke_ns: invoke, outcome };
                history.lock().unwrap_or_else(|e| e.into_inner()).push((op, node + 1));
                if failed {
                    // A killed node refuses at once: do not spin on it.
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        }));
    }
    let faults = run_nemesis(&mut c, opts, start, deadline).await;
    for t in clients {
        let _ = t.await;
    }
    let (ops, served_by): (Vec<RegOp>, Vec<usize>) =
        history.lock().unwrap_or_else(|e| e.into_inner()).iter().cloned().unzip();
    let acked = acked.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let (mut report, stuck) = judge_registers("coord", opts, &ops, faults);
    if let Some(a) = anomalies.lock().unwrap_or_else(|e| e.into_inner()).first() {
        report.verdict = Verdict::Illegal;
        report.explanation = Some(a.clone());
    }
    if report.verdict == Verdict::Ok {
        let attempted: HashSet<String> = ops.iter().filter_map(|o| written_value(&o.input)).collect();
        if let Err(e) = replay_check(&c, &addrs, &acked, &attempted, &followed).await {
            report.verdict = Verdict::Illegal;
            report.explanation = Some(e);
        }
    }
    follower.abort();
    if report.verdict != Verdict::Ok {
        write_failure(&mut report, opts, &ops, Some(&served_by), &stuck)?;
        c.save_logs(&opts.out_dir, &format!("chaos-coord-seed-{}", opts.seed))?;
    }
    Ok(report)
}

pub(super) async fn etcd_addr(c: &Cluster, id: usize) -> anyhow::Result<String> {
    let (status, body) = crate::send(crate::client().get(format!("{}/v1/coord", c.url(id)))).await;
    anyhow::ensure!(status == 200, "node {id}: GET /v1/coord answered {status} {body}");
    body["etcd_addr"].as_str().map(str::to_string).ok_or_else(|| anyhow::anyhow!("node {id}: no etcd_addr in {body}"))
}

async fn connect(addr: &str) -> anyhow::Result<etcd_client::KvClient> {
    let options =
        ConnectOptions::new().with_connect_timeout(Duration::from_secs(2)).with_timeout(Duration::from_secs(4));
    Ok(Client::connect([addr], Some(options)).await?.kv_client())
}

/// A write that failed. etcd's "no leader" is a refusal (nothing was proposed, and Basalt says
/// the same of a proposal cut from a deposed leader's log), so the write did not happen; any
/// other error — a timeout, a dropped connection, "request timed out" — leaves it unknown.
fn write_error(e: &etcd_client::Error, complete_ns: u64) -> Outcome<RegisterRet> {
    match e {
        etcd_client::Error::GRpcStatus(s)
            if s.code() == tonic::Code::Unavailable && s.message() == "etcdserver: no leader" =>
        {
            Outcome::Fail { complete_ns }
        }
        _ => Outcome::Info,
    }
}

fn written_value(op: &RegisterOp) -> Option<String> {
    match op {
        RegisterOp::Write(v) | RegisterOp::Cas { new: v, .. } => Some(v.clone()),
        RegisterOp::Read => None,
    }
}

/// The watch check (see the module docs), against the first node that answers.
async fn replay_check(
    c: &Cluster,
    addrs: &[String],
    acked: &[Acked],
    attempted: &HashSet<String>,
    followed: &Followed,
) -> Result<(), String> {
    c.leader().await;
    let (mut client, read) = first_read(addrs, PREFIX).await?;
    let now: BTreeMap<String, (i64, String)> = read
        .kvs()
        .iter()
        .map(|kv| {
            let k = String::from_utf8_lossy(kv.key()).into_owned();
            (k, (kv.mod_revision(), String::from_utf8_lossy(kv.value()).into_owned()))
        })
        .collect();
    let Some(target) = now.values().map(|(rev, _)| *rev).max() else {
        return if acked.is_empty() {
            Ok(())
        } else {
            Err(format!("{} writes acknowledged, no key left", acked.len()))
        };
    };
    let replayed = replay(&mut client, PREFIX, target).await?;
    for e in &replayed {
        check(e.put, || format!("a delete event at {}: nothing deletes", e.rev))?;
    }
    let events: Vec<(i64, String, String)> = replayed.iter().map(|e| (e.rev, e.key.clone(), e.value.clone())).collect();
    for w in events.windows(2) {
        check(w[0].0 < w[1].0, || format!("revisions out of order: {:?} then {:?}", w[0], w[1]))?;
    }
    let mut values = HashSet::new();
    for (rev, key, value) in &events {
        check(attempted.contains(value), || format!("revision {rev}: {key} = {value}, never written"))?;
        check(values.insert(value.as_str()), || format!("{value} applied twice (again at {rev})"))?;
    }
    let by_rev: HashMap<i64, (&str, &str)> = events.iter().map(|(r, k, v)| (*r, (k.as_str(), v.as_str()))).collect();
    for a in acked {
        check(by_rev.get(&a.revision) == Some(&(a.key.as_str(), a.value.as_str())), || {
            format!(
                "acknowledged {} = {} at revision {}, but the watch has {:?} there",
                a.key,
                a.value,
                a.revision,
                by_rev.get(&a.revision)
            )
        })?;
    }
    let mut last: BTreeMap<&str, (i64, &str)> = BTreeMap::new();
    for (rev, key, value) in &events {
        last.insert(key, (*rev, value));
    }
    for (key, (rev, value)) in &now {
        check(last.get(key.as_str()) == Some(&(*rev, value.as_str())), || {
            format!("{key} reads {value} (revision {rev}) but its last event is {:?}", last.get(key.as_str()))
        })?;
    }
    // The watch held open through the faults must have seen exactly the replay.
    followed_matches(followed, &replayed, target).await
}
