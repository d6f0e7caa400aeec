//! Suites: a workload, a nemesis and a checker, named after what they test.
//!
//! `kv`: on a ring-only cluster (N=3, R=W=2), clients SET unique keys through the Redis
//! protocol on random nodes while the nemesis kills, pauses, partitions, slows, skews clocks
//! and makes nodes leave and rejoin the ring; after healing, every acknowledged write must be
//! read back (lincheck's no-lost-writes invariant).
//!
//! `config`: concurrent clients read and write a few S03 keys (linearizable reads, writes to
//! any node) on a real cluster while the nemesis kills, pauses and isolates nodes; the history
//! is checked for linearizability as a set of registers, one per key.
//!
//! `coord`: the same for S05 through the etcd v3 API and the `etcd-client` crate (Range, Put
//! and compare-and-set Txns), and then a watch from revision 1 must replay every acknowledged
//! write at its revision, once ([`coord`]).

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use basalt_lincheck::{Budget, Op, Outcome, Register, RegisterOp, RegisterRet, Verdict};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;

use crate::cluster::Cluster;
use crate::nemesis::{Fault, Kind, Nemesis};
use crate::timeline::{self, Band};
use crate::{client, send};

#[derive(Debug, Clone)]
pub struct SuiteOpts {
    pub exe: PathBuf,
    pub nodes: usize,
    pub duration: Duration,
    pub seed: u64,
    pub clients: usize,
    pub keys: usize,
    /// Where a failing run writes its history and timeline.
    pub out_dir: PathBuf,
    /// The kinds of fault the nemesis draws from.
    pub nemeses: Vec<Kind>,
    /// Extra arguments for every node (`--set key=value` pairs).
    pub node_args: Vec<String>,
    /// `coord`: read with etcd's `serializable` option — whatever the member has applied, no
    /// read barrier — which may be stale and must be caught (a deliberate bug for the checker).
    pub serializable_reads: bool,
}

/// A fault and when it was in force (ns since the run started).
#[derive(Debug, Clone, Serialize)]
pub struct FaultSpan {
    pub start_ns: u64,
    pub end_ns: u64,
    #[serde(flatten)]
    pub fault: Fault,
}

#[derive(Debug, Clone, Serialize)]
pub struct SuiteReport {
    pub suite: String,
    pub seed: u64,
    pub ops: usize,
    pub ok: usize,
    pub info: usize,
    pub fail: usize,
    pub faults: Vec<FaultSpan>,
    pub verdict: Verdict,
    pub explanation: Option<String>,
    pub history_file: Option<PathBuf>,
    pub timeline_file: Option<PathBuf>,
    /// What else the suite counted and checked, by name (e.g. the `lock` suite's leader reads).
    #[serde(skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub counts: std::collections::BTreeMap<&'static str, usize>,
}

type RegOp = Op<RegisterOp, RegisterRet>;

mod coord;
mod lock;
mod watch;
pub use coord::coord;
pub use lock::lock;

/// The seeded fault schedule every suite runs beside its workload: a fault every 0.5–1.5 s,
/// held 0.5–1.5 s, undone, until 3 s before the end (so the last one heals in time).
async fn run_nemesis(c: &mut Cluster, opts: &SuiteOpts, start: Instant, deadline: Instant) -> Vec<FaultSpan> {
    run_nemesis_holding(c, opts, start, deadline, 500..1500).await
}

/// [`run_nemesis`] with each fault held for `hold_ms` (drawn from the range).
async fn run_nemesis_holding(
    c: &mut Cluster,
    opts: &SuiteOpts,
    start: Instant,
    deadline: Instant,
    hold_ms: std::ops::Range<u64>,
) -> Vec<FaultSpan> {
    let mut nemesis = Nemesis::new(opts.seed, opts.nemeses.clone());
    let mut rng = StdRng::seed_from_u64(opts.seed ^ 0x5eed);
    let mut faults = Vec::new();
    while Instant::now() + Duration::from_secs(3) < deadline {
        tokio::time::sleep(Duration::from_millis(rng.random_range(500..1500))).await;
        let start_ns = start.elapsed().as_nanos() as u64;
        let f = nemesis.strike(c).await;
        tokio::time::sleep(Duration::from_millis(rng.random_range(hold_ms.clone()))).await;
        nemesis.undo(c, &f).await;
        faults.push(FaultSpan { start_ns, end_ns: start.elapsed().as_nanos() as u64, fault: f });
    }
    faults
}

pub async fn config(opts: &SuiteOpts) -> anyhow::Result<SuiteReport> {
    let mut c = Cluster::start_with_args(&opts.exe, opts.nodes, opts.node_args.clone()).await;
    let leader = c.leader().await;
    let (s, b) = send(client().put(format!("{}/v1/config/ns/chaos", c.url(leader)))).await;
    anyhow::ensure!(s == 201, "creating the namespace: {s} {b}");
    let urls: Vec<String> = (1..=opts.nodes).map(|id| c.url(id)).collect();
    let start = Instant::now();
    let deadline = start + opts.duration;
    let history: Arc<Mutex<Vec<RegOp>>> = Arc::default();
    let mut clients = Vec::new();
    for id in 0..opts.clients as u64 {
        let (urls, history, keys, seed) = (urls.clone(), history.clone(), opts.keys, opts.seed);
        clients.push(tokio::spawn(async move {
            let mut rng = StdRng::seed_from_u64(seed.wrapping_add(id + 1));
            let http = client();
            let mut n = 0u64;
            while Instant::now() < deadline {
                let key = format!("k{}", rng.random_range(0..keys));
                let url = &urls[rng.random_range(0..urls.len())];
                n += 1;
                let invoke = start.elapsed().as_nanos() as u64;
                let (input, outcome) = if rng.random_bool(0.5) {
                    let r = http.get(format!("{url}/v1/config/ns/chaos/keys/{key}")).send().await;
                    (RegisterOp::Read, read_outcome(r, start).await)
                } else {
                    let v = format!("c{id}-{n}");
                    let r = http
                        .put(format!("{url}/v1/config/ns/chaos/keys/{key}"))
                        .header("content-type", "application/json")
                        .body(format!("\"{v}\""))
                        .send()
                        .await;
                    (RegisterOp::Write(v), write_outcome(r, start).await)
                };
                history.lock().unwrap_or_else(|e| e.into_inner()).push(Op {
                    client: id,
                    key,
                    input,
                    invoke_ns: invoke,
                    outcome,
                });
            }
        }));
    }
    let faults = run_nemesis(&mut c, opts, start, deadline).await;
    for t in clients {
        let _ = t.await;
    }
    let ops = history.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let (mut report, stuck) = judge_registers("config", opts, &ops, faults);
    if report.verdict != Verdict::Ok {
        write_failure(&mut report, opts, &ops, None, &stuck)?;
    }
    Ok(report)
}

/// Judge a register history (linearizable, one register per key) and report on it; with the
/// stuck points of the search, for a failing run's timeline.
fn judge_registers(
    suite: &str,
    opts: &SuiteOpts,
    ops: &[RegOp],
    faults: Vec<FaultSpan>,
) -> (SuiteReport, Vec<(u64, u64)>) {
    let count = |p: fn(&Outcome<RegisterRet>) -> bool| ops.iter().filter(|o| p(&o.outcome)).count();
    let result = basalt_lincheck::check(&Register, &prune_unobserved_unknown_writes(ops), Budget::default());
    let explanation = result.per_key.iter().find_map(|(k, r)| r.explanation.as_ref().map(|e| format!("key {k}: {e}")));
    let stuck = result.per_key.values().filter_map(|r| r.stuck).collect();
    let report = SuiteReport {
        suite: suite.into(),
        seed: opts.seed,
        ops: ops.len(),
        ok: count(|o| matches!(o, Outcome::Ok { .. })),
        info: count(|o| matches!(o, Outcome::Info)),
        fail: count(|o| matches!(o, Outcome::Fail { .. })),
        faults,
        verdict: result.valid,
        explanation,
        history_file: None,
        timeline_file: None,
        counts: Default::default(),
    };
    (report, stuck)
}

/// A failed register suite's evidence in `opts.out_dir`: its report and history
/// (`chaos-<suite>-seed-<seed>.json`) and a timeline of the operations and faults (`.html`).
/// `served_by`, when known, names the node each operation went to (in history order).
fn write_failure(
    report: &mut SuiteReport,
    opts: &SuiteOpts,
    ops: &[RegOp],
    served_by: Option<&[usize]>,
    stuck: &[(u64, u64)],
) -> anyhow::Result<()> {
    std::fs::create_dir_all(&opts.out_dir)?;
    let stem = format!("chaos-{}-seed-{}", report.suite, opts.seed);
    let path = opts.out_dir.join(format!("{stem}.json"));
    let body = serde_json::json!({ "report": &report, "history": ops, "served_by": served_by });
    std::fs::write(&path, serde_json::to_vec_pretty(&body)?)?;
    report.history_file = Some(path);
    let bands: Vec<Band> =
        report.faults.iter().map(|f| Band { start_ns: f.start_ns, end_ns: f.end_ns, label: f.fault.label() }).collect();
    let title = format!("basalt chaos {} --seed {}: {:?}", report.suite, opts.seed, report.verdict);
    let page = timeline::render(&title, report.explanation.as_deref().unwrap_or(""), ops, &bands, stuck);
    let path = opts.out_dir.join(format!("{stem}.html"));
    std::fs::write(&path, page)?;
    report.timeline_file = Some(path);
    Ok(())
}

/// Every written value is unique, so a write (or compare-and-set) whose outcome is unknown can
/// be dropped when nothing could have observed it: no read ever returned its value, and no
/// failed compare-and-set on its key ended after it began (a failed CAS observes only that the
/// value was not the one expected — which such a write, had it happened, may be why). A dropped
/// write may never have happened and explains nothing. Keeping every such write makes the
/// search exponential.
fn prune_unobserved_unknown_writes(ops: &[RegOp]) -> Vec<RegOp> {
    let seen: std::collections::HashSet<&str> = ops
        .iter()
        .filter_map(|o| match &o.outcome {
            Outcome::Ok { output: RegisterRet::Value(Some(v)), .. } => Some(v.as_str()),
            _ => None,
        })
        .collect();
    let mut last_cas_failed: std::collections::HashMap<&str, u64> = std::collections::HashMap::new();
    for o in ops {
        if let Outcome::Ok { output: RegisterRet::CasFailed, complete_ns } = &o.outcome {
            let t = last_cas_failed.entry(o.key.as_str()).or_default();
            *t = (*t).max(*complete_ns);
        }
    }
    ops.iter()
        .filter(|o| match (&o.input, &o.outcome) {
            (RegisterOp::Write(v) | RegisterOp::Cas { new: v, .. }, Outcome::Info) => {
                seen.contains(v.as_str()) || last_cas_failed.get(o.key.as_str()).is_some_and(|t| *t > o.invoke_ns)
            }
            _ => true,
        })
        .cloned()
        .collect()
}

/// A write the server acknowledged is Ok; a definite refusal (nothing was written: no leader,
/// a 4xx, a refused connection) is Fail; anything else — a timeout, a reset, `unknown_outcome`
/// — is Info: it may or may not have taken effect.
async fn write_outcome(r: reqwest::Result<reqwest::Response>, start: Instant) -> Outcome<RegisterRet> {
    let now = || start.elapsed().as_nanos() as u64;
    match r {
        Ok(resp) if resp.status().is_success() => Outcome::Ok { output: RegisterRet::Written, complete_ns: now() },
        Ok(resp) => {
            let status = resp.status().as_u16();
            let body: serde_json::Value = resp.json().await.unwrap_or_default();
            let code = body["error"]["code"].as_str().unwrap_or("");
            if (400..500).contains(&status) || code == "no_leader" || code == "not_running" {
                Outcome::Fail { complete_ns: now() }
            } else {
                Outcome::Info
            }
        }
        Err(e) if e.is_connect() => Outcome::Fail { complete_ns: now() },
        Err(_) => Outcome::Info,
    }
}

/// A read that answered is Ok with what it saw (404: the key is empty); a read that did not
/// answer observed nothing and is dropped (Fail).
async fn read_outcome(r: reqwest::Result<reqwest::Response>, start: Instant) -> Outcome<RegisterRet> {
    let now = || start.elapsed().as_nanos() as u64;
    let Ok(resp) = r else { return Outcome::Fail { complete_ns: now() } };
    match resp.status().as_u16() {
        200 => {
            let body: serde_json::Value = resp.json().await.unwrap_or_default();
            let v = body["value"].as_str().map(str::to_string);
            Outcome::Ok { output: RegisterRet::Value(v), complete_ns: now() }
        }
        404 => Outcome::Ok { output: RegisterRet::Value(None), complete_ns: now() },
        _ => Outcome::Fail { complete_ns: now() },
    }
}

/// The `kv` suite (see the module docs).
pub async fn kv(opts: &SuiteOpts) -> anyhow::Result<SuiteReport> {
    use std::collections::{BTreeMap, HashSet};

    use basalt_resp::Frame;
    use basalt_runtime::redis::Redis;

    let mut c = Cluster::start_ring(&opts.exe, opts.nodes, opts.node_args.clone()).await;
    let mut addrs = Vec::new();
    for id in 1..=opts.nodes {
        addrs.push(c.resp_addr(id).await);
    }
    let start = Instant::now();
    let deadline = start + opts.duration;
    #[derive(Default)]
    struct Tally {
        acked: Vec<(String, String)>,
        ok: usize,
        info: usize,
        fail: usize,
    }
    let tally: Arc<Mutex<Tally>> = Arc::default();
    let mut clients = Vec::new();
    for id in 0..opts.clients as u64 {
        let (addrs, tally, seed) = (addrs.clone(), tally.clone(), opts.seed);
        clients.push(tokio::spawn(async move {
            let mut rng = StdRng::seed_from_u64(seed.wrapping_add(id + 1));
            let mut conns: BTreeMap<usize, Redis> = BTreeMap::new();
            let mut n = 0u64;
            while Instant::now() < deadline {
                n += 1;
                let node = rng.random_range(0..addrs.len());
                let (key, value) = (format!("c{id}-{n}"), format!("v{id}-{n}"));
                if let std::collections::btree_map::Entry::Vacant(e) = conns.entry(node) {
                    match Redis::connect(&addrs[node], Duration::from_secs(3)).await {
                        Ok(r) => {
                            e.insert(r);
                        }
                        Err(_) => {
                            tally.lock().unwrap_or_else(|e| e.into_inner()).fail += 1;
                            tokio::time::sleep(Duration::from_millis(20)).await;
                            continue;
                        }
                    }
                }
                let conn = conns.get_mut(&node).expect("connected above");
                let r = conn.cmd(&[b"SET", key.as_bytes(), value.as_bytes()]).await;
                let mut t = tally.lock().unwrap_or_else(|e| e.into_inner());
                match r {
                    Ok(Frame::Simple(s)) if s == "OK" => {
                        t.ok += 1;
                        t.acked.push((key, value));
                    }
                    Ok(_) => t.info += 1, // refused (e.g. too few replicas): it may still land
                    Err(_) => {
                        t.info += 1;
                        conns.remove(&node);
                    }
                }
            }
        }));
    }
    let faults = run_nemesis(&mut c, opts, start, deadline).await;
    for t in clients {
        let _ = t.await;
    }
    // Healed: every acknowledged write must be readable (give repair a little time).
    c.wait_ring_alive().await;
    let acked = std::mem::take(&mut tally.lock().unwrap_or_else(|e| e.into_inner()).acked);
    let addr = c.resp_addr(1).await;
    let mut final_state: BTreeMap<String, HashSet<String>> = BTreeMap::new();
    let read_deadline = Instant::now() + Duration::from_secs(30);
    let mut conn = Redis::connect(&addr, Duration::from_secs(5)).await?;
    for (k, v) in &acked {
        loop {
            let got = match conn.cmd(&[b"GET", k.as_bytes()]).await {
                Ok(Frame::Bulk(b)) => Some(String::from_utf8_lossy(&b).into_owned()),
                Ok(_) => None,
                Err(_) => {
                    conn = Redis::connect(&addr, Duration::from_secs(5)).await?;
                    None
                }
            };
            if got.as_deref() == Some(v.as_str()) || Instant::now() > read_deadline {
                if let Some(g) = got {
                    final_state.entry(k.clone()).or_default().insert(g);
                }
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let check = basalt_lincheck::invariants::no_lost_writes(&acked, &final_state);
    let t = tally.lock().unwrap_or_else(|e| e.into_inner());
    let mut report = SuiteReport {
        suite: "kv".into(),
        seed: opts.seed,
        ops: t.ok + t.info + t.fail,
        ok: t.ok,
        info: t.info,
        fail: t.fail,
        faults,
        verdict: if check.is_ok() { Verdict::Ok } else { Verdict::Illegal },
        explanation: check.err().map(|e| e.to_string()),
        history_file: None,
        timeline_file: None,
        counts: Default::default(),
    };
    drop(t);
    if report.verdict != Verdict::Ok {
        std::fs::create_dir_all(&opts.out_dir)?;
        let path = opts.out_dir.join(format!("chaos-kv-seed-{}.json", opts.seed));
        std::fs::write(&path, serde_json::to_vec_pretty(&serde_json::json!({ "report": &report, "acked": acked }))?)?;
        report.history_file = Some(path);
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(client: u64, input: RegisterOp, invoke_ns: u64, outcome: Outcome<RegisterRet>) -> RegOp {
        Op { client, key: "k".into(), input, invoke_ns, outcome }
    }

    #[test]
    fn an_unknown_write_that_may_explain_a_failed_cas_is_kept() {
        let ok = |output, complete_ns| Outcome::Ok { output, complete_ns };
        let ops = vec![
            op(0, RegisterOp::Write("a".into()), 0, ok(RegisterRet::Written, 10)),
            op(1, RegisterOp::Read, 11, ok(RegisterRet::Value(Some("a".into())), 12)),
            // Never read back, outcome unknown: only this write explains the failed CAS below.
            op(0, RegisterOp::Write("b".into()), 13, Outcome::Info),
            op(1, RegisterOp::Cas { expect: Some("a".into()), new: "c".into() }, 20, ok(RegisterRet::CasFailed, 30)),
            // Begun after every failed CAS ended and never read: nothing could have seen it.
            op(2, RegisterOp::Write("d".into()), 40, Outcome::Info),
        ];
        let pruned = prune_unobserved_unknown_writes(&ops);
        assert_eq!(pruned.len(), 4, "only the write begun after the failed CAS is dropped: {pruned:?}");
        assert!(!pruned.iter().any(|o| o.input == RegisterOp::Write("d".into())));
        let r = basalt_lincheck::check(&Register, &pruned, Budget::default());
        assert_eq!(r.valid, Verdict::Ok, "{:?}", r.per_key);
    }
}
