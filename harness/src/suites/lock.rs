//! `lock`: S05's locks, elections and leases through the etcd API, used as a careful client
//! uses them, while the nemesis kills, pauses and cuts off members. Each client, again and
//! again: grants a lease (2 s) on a member picked at random and keeps it alive; then either
//! takes the v3lock `chaos-lock` with it and writes the protected resource `chaos-res` in a txn
//! guarded by its lock key (the write happens only while the key exists — etcd's way of
//! fencing with a lock), or campaigns in the v3election `chaos-elect` and, elected, proclaims
//! a value (which the server writes only while the candidate's key exists); unlocks or
//! resigns, and revokes. Then, once the cluster has healed, a watch from revision 1 replays
//! both queues and the resource, and:
//!
//! - **mutual exclusion**: every guarded write (to the resource, or a proclamation) was made
//!   while its writer's key was the oldest in its queue — the holder, or the leader — at that
//!   revision; a value nobody wrote, or one written twice, fails;
//! - **no lost write**: every guarded write acknowledged is in the replay at the revision its
//!   reply named, and none refused is;
//! - **no false grant**: every key a Lock or Campaign call returned held the lock (led) at some
//!   revision between its creation and the revision the reply carried;
//! - **no early expiry**: a key its client had not released was not deleted before its lease
//!   could have expired — a TTL after the last keep-alive the server acknowledged was sent, as
//!   observed by a watch held open through the run (which sees a deletion after it commits, so
//!   this cannot fire on a correct server);
//! - **no false leader**: every leader an election read reported — a `Leader` call, or an
//!   `Observe` stream held open on a member through the run — was the leader, with that value,
//!   at the revision its answer carried; an `Observe` stream's revisions never go back;
//! - the watch held open through the run saw exactly the replay.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use basalt_lincheck::Verdict;
use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, LockOptions, ProclaimOptions, ResignOptions, Txn, TxnOp,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;

use super::watch::{Followed, Seen, check, first_read, follow, followed_matches, replay};
use super::{SuiteOpts, SuiteReport, run_nemesis_holding};
use crate::cluster::Cluster;

const NAME: &str = "chaos-lock";
/// The v3election name: a leader's proclamations are its guarded writes.
const ELECTION: &str = "chaos-elect";
const RESOURCE: &str = "chaos-res";
/// Both the lock's keys and the resource.
const WATCHED: &str = "chaos-";
const TTL_SECS: i64 = 2;
/// How long a client waits on any one call (a Lock waits its turn within it).
const CALL: Duration = Duration::from_secs(4);

/// The guarded write's outcome.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
enum Write {
    /// Not attempted (the lock was not taken).
    #[default]
    None,
    /// Applied at this revision.
    Acked(i64),
    /// The guard failed: the lock key was gone, nothing written.
    Refused,
    /// No answer: it may or may not have happened.
    Unknown,
}

/// One client's go at the lock (times in ns since the run started).
#[derive(Debug, Clone, Default, Serialize)]
struct Attempt {
    client: u64,
    node: usize,
    lease: i64,
    ttl: i64,
    /// When the request whose answer last renewed the lease (its grant, then keep-alives the
    /// server answered with a TTL) was sent: the lease cannot expire before this plus `ttl`.
    renewed_ns: u64,
    key: Option<String>,
    /// The revision the Lock reply carried.
    locked_rev: i64,
    value: Option<String>,
    write: Write,
    /// When the client first asked to let go (Unlock or Resign, or Revoke after a failed
    /// Lock or Campaign).
    released_ns: Option<u64>,
    /// A v3election campaign (`chaos-elect`, the write a Proclaim) rather than a v3lock.
    election: bool,
}

type Attempts = Arc<Mutex<Vec<Attempt>>>;

/// A leader an election read reported: `Leader` (`stream` None) or one message of an
/// `Observe` stream (numbered from 0 in the run).
#[derive(Debug, Clone, Serialize)]
struct Reported {
    node: usize,
    stream: Option<u64>,
    key: String,
    value: String,
    /// The revision the answer's header carried.
    rev: i64,
}

type Reports = Arc<Mutex<Vec<Reported>>>;

fn report(reports: &Reports, r: Reported) {
    reports.lock().unwrap_or_else(|e| e.into_inner()).push(r);
}

fn reported(node: usize, stream: Option<u64>, r: &etcd_client::LeaderResponse) -> Option<Reported> {
    let kv = r.kv()?;
    Some(Reported {
        node,
        stream,
        key: String::from_utf8_lossy(kv.key()).into_owned(),
        value: String::from_utf8_lossy(kv.value()).into_owned(),
        rev: r.header().map_or(0, |h| h.revision()),
    })
}

fn edit(attempts: &Attempts, i: usize, f: impl FnOnce(&mut Attempt)) {
    f(&mut attempts.lock().unwrap_or_else(|e| e.into_inner())[i]);
}

pub async fn lock(opts: &SuiteOpts) -> anyhow::Result<SuiteReport> {
    let mut c = Cluster::start_with_args(&opts.exe, opts.nodes, opts.node_args.clone()).await;
    let mut addrs = Vec::new();
    for id in 1..=opts.nodes {
        addrs.push(super::coord::etcd_addr(&c, id).await?);
    }
    let start = Instant::now();
    let deadline = start + opts.duration;
    let now = move || start.elapsed().as_nanos() as u64;
    let attempts: Attempts = Arc::default();
    let followed: Followed = Arc::default();
    let follower = tokio::spawn(follow(addrs.clone(), WATCHED, opts.seed, start, followed.clone()));
    let reports: Reports = Arc::default();
    let observer = tokio::spawn(observe(addrs.clone(), opts.seed, deadline, reports.clone()));
    let mut clients = Vec::new();
    for id in 0..opts.clients as u64 {
        let mut conns = Vec::new();
        for a in &addrs {
            let options = ConnectOptions::new().with_connect_timeout(Duration::from_secs(2));
            conns.push(Client::connect([a.as_str()], Some(options)).await?);
        }
        let (attempts, reports, seed) = (attempts.clone(), reports.clone(), opts.seed);
        clients.push(tokio::spawn(async move {
            let mut rng = StdRng::seed_from_u64(seed.wrapping_add(id + 1));
            let mut n = 0u64;
            while Instant::now() < deadline {
                n += 1;
                let node = rng.random_range(0..conns.len());
                let cl = &mut conns[node];
                let i = {
                    let mut a = attempts.lock().unwrap_or_else(|e| e.into_inner());
                    a.push(Attempt { client: id, node: node + 1, ..Attempt::default() });
                    a.len() - 1
                };
                let sent = now();
                let lease = match tokio::time::timeout(CALL, cl.lease_grant(TTL_SECS, None)).await {
                    Ok(Ok(g)) => g,
                    _ => {
                        // A lease granted unanswered holds no key and expires by itself.
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let (lease_id, ttl) = (lease.id(), lease.ttl());
                edit(&attempts, i, |a| {
                    a.lease = lease_id;
                    a.ttl = ttl;
                    a.renewed_ns = sent;
                });
                let keeper = tokio::spawn(keep_alive(cl.clone(), lease_id, ttl, attempts.clone(), i, start));
                let value = format!("c{id}-{n}");
                if rng.random_bool(0.5) {
                    // A lock, and a write to the resource guarded by the lock's key.
                    let options = LockOptions::new().with_lease(lease_id);
                    if let Ok(Ok(r)) = tokio::time::timeout(CALL, cl.lock(NAME, Some(options))).await {
                        let key = String::from_utf8_lossy(r.key()).into_owned();
                        edit(&attempts, i, |a| {
                            a.key = Some(key.clone());
                            a.locked_rev = r.header().map_or(0, |h| h.revision());
                            a.value = Some(value.clone());
                        });
                        let guarded = Txn::new()
                            .when([Compare::version(key.as_str(), CompareOp::Greater, 0)])
                            .and_then([TxnOp::put(RESOURCE, value.as_str(), None)]);
                        let write = match tokio::time::timeout(CALL, cl.txn(guarded)).await {
                            Ok(Ok(r)) if r.succeeded() => Write::Acked(r.header().map_or(0, |h| h.revision())),
                            Ok(Ok(_)) => Write::Refused,
                            _ => Write::Unknown,
                        };
                        edit(&attempts, i, |a| a.write = write);
                        hold(&mut rng).await;
                        edit(&attempts, i, |a| a.released_ns = Some(now()));
                        let _ = tokio::time::timeout(CALL, cl.unlock(key.as_str())).await;
                    } else {
                        edit(&attempts, i, |a| a.released_ns = Some(now()));
                    }
                } else {
                    // A campaign, and a proclamation once elected (the server makes it only
                    // while this candidate leads).
                    edit(&attempts, i, |a| a.election = true);
                    let campaign = tokio::time::timeout(CALL, cl.campaign(ELECTION, format!("{value}-new"), lease_id));
                    match campaign.await {
                        Ok(Ok(r)) if r.leader().is_some() => {
                            let leader = r.leader().cloned().unwrap_or_default();
                            edit(&attempts, i, |a| {
                                a.key = Some(String::from_utf8_lossy(leader.key()).into_owned());
                                a.locked_rev = r.header().map_or(0, |h| h.revision());
                                a.value = Some(value.clone());
                            });
                            let options = ProclaimOptions::new().with_leader(leader.clone());
                            let write =
                                match tokio::time::timeout(CALL, cl.proclaim(value.as_str(), Some(options))).await {
                                    Ok(Ok(r)) => Write::Acked(r.header().map_or(0, |h| h.revision())),
                                    Ok(Err(etcd_client::Error::GRpcStatus(s)))
                                        if s.code() == tonic::Code::FailedPrecondition =>
                                    {
                                        Write::Refused
                                    }
                                    _ => Write::Unknown,
                                };
                            edit(&attempts, i, |a| a.write = write);
                            hold(&mut rng).await;
                            edit(&attempts, i, |a| a.released_ns = Some(now()));
                            let options = ResignOptions::new().with_leader(leader);
                            let _ = tokio::time::timeout(CALL, cl.resign(Some(options))).await;
                        }
                        _ => edit(&attempts, i, |a| a.released_ns = Some(now())),
                    }
                }
                if rng.random_bool(0.3) {
                    // Who leads the election now (a linearizable read, as etcd's is).
                    if let Ok(Ok(r)) = tokio::time::timeout(CALL, cl.leader(ELECTION)).await {
                        report(&reports, reported(node + 1, None, &r).unwrap_or_else(|| no_kv(node + 1)));
                    }
                }
                keeper.abort();
                let _ = tokio::time::timeout(CALL, cl.lease_revoke(lease_id)).await;
            }
        }));
    }
    // Faults held up to 5 s: long enough for the others to elect a new leader and for a
    // lease to run out on its clock while the old one is cut off or stopped.
    let faults = run_nemesis_holding(&mut c, opts, start, deadline, 500..5000).await;
    for t in clients {
        let _ = t.await;
    }
    let _ = observer.await;
    let attempts = attempts.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let reports = reports.lock().unwrap_or_else(|e| e.into_inner()).clone();
    c.leader().await;
    let (mut events, result) = match first_read(&addrs, WATCHED).await {
        Ok((mut client, read)) => {
            let target = read.header().map_or(0, |h| h.revision());
            match replay(&mut client, WATCHED, target).await {
                Ok(events) => {
                    let seen = followed.lock().unwrap_or_else(|e| e.into_inner()).clone();
                    let mut r = judge(&attempts, &events, &seen, &reports);
                    if r.is_ok() {
                        r = followed_matches(&followed, &events, target).await;
                    }
                    (events, r)
                }
                Err(e) => (Vec::new(), Err(e)),
            }
        }
        Err(e) => (Vec::new(), Err(e)),
    };
    follower.abort();
    let acked = attempts.iter().filter(|a| matches!(a.write, Write::Acked(_))).count();
    let unknown = attempts.iter().filter(|a| a.write == Write::Unknown).count();
    let mut report = SuiteReport {
        suite: "lock".into(),
        seed: opts.seed,
        ops: attempts.len(),
        ok: acked,
        info: unknown,
        fail: attempts.len() - acked - unknown,
        faults,
        verdict: if result.is_ok() { Verdict::Ok } else { Verdict::Illegal },
        explanation: result.err(),
        history_file: None,
        timeline_file: None,
        counts: [
            ("leader_reads", reports.iter().filter(|r| r.stream.is_none()).count()),
            ("observed_leaders", reports.iter().filter(|r| r.stream.is_some()).count()),
        ]
        .into(),
    };
    if report.verdict != Verdict::Ok {
        std::fs::create_dir_all(&opts.out_dir)?;
        let path = opts.out_dir.join(format!("chaos-lock-seed-{}.json", opts.seed));
        for e in &mut events {
            e.observed_ns = 0;
        }
        let body = serde_json::json!({ "report": &report, "attempts": attempts, "reports": reports, "replay": events });
        std::fs::write(&path, serde_json::to_vec_pretty(&body)?)?;
        report.history_file = Some(path);
        c.save_logs(&opts.out_dir, &format!("chaos-lock-seed-{}", opts.seed))?;
    }
    Ok(report)
}

/// A `Leader` answer without a key (etcd answers "no leader" with an error instead): reported
/// as a leader nobody could have been, so the checker names it.
fn no_kv(node: usize) -> Reported {
    Reported { node, stream: None, key: "(none)".into(), value: String::new(), rev: 0 }
}

/// Holds `Observe` open on one member after another (the next on any error, or every few
/// seconds), recording every leader reported, until `deadline`.
async fn observe(addrs: Vec<String>, seed: u64, deadline: Instant, reports: Reports) {
    let mut rng = StdRng::seed_from_u64(seed ^ 0x0b5e);
    let mut stream_no = 0u64;
    while Instant::now() < deadline {
        let node = rng.random_range(0..addrs.len());
        let options = ConnectOptions::new().with_connect_timeout(Duration::from_secs(2));
        let until = (Instant::now() + Duration::from_millis(rng.random_range(1000..4000))).min(deadline);
        let stream = async {
            let mut cl = Client::connect([addrs[node].as_str()], Some(options)).await?;
            let mut stream = cl.observe(ELECTION).await?;
            let n = stream_no;
            while let Some(r) = stream.message().await? {
                if let Some(r) = reported(node + 1, Some(n), &r) {
                    report(&reports, r);
                }
            }
            Ok::<_, etcd_client::Error>(())
        };
        let _ = tokio::time::timeout_at(until.into(), stream).await;
        stream_no += 1;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Holds the lock or the lead a moment, so that faults strike holders too.
async fn hold(rng: &mut StdRng) {
    tokio::time::sleep(Duration::from_millis(rng.random_range(0..100))).await;
}

/// Keeps `lease` alive through one member, as etcd's clients do (a third of the TTL apart),
/// recording when each request the server renewed on was sent; on an error it opens a new
/// stream.
async fn keep_alive(mut cl: Client, lease: i64, ttl: i64, attempts: Attempts, i: usize, start: Instant) {
    let every = Duration::from_millis((ttl.max(1) as u64) * 1000 / 3);
    loop {
        let sent = start.elapsed().as_nanos() as u64;
        // Opening the stream sends a first keep-alive, and the client reads its answer: it
        // opens only if the server renewed the lease (an answer without a TTL is an error).
        if let Ok(Ok((mut keeper, mut stream))) = tokio::time::timeout(CALL, cl.lease_keep_alive(lease)).await {
            edit(&attempts, i, |a| a.renewed_ns = a.renewed_ns.max(sent));
            loop {
                tokio::time::sleep(every).await;
                let sent = start.elapsed().as_nanos() as u64;
                if keeper.keep_alive().await.is_err() {
                    break;
                }
                match tokio::time::timeout(CALL, stream.message()).await {
                    Ok(Ok(Some(r))) if r.ttl() > 0 => edit(&attempts, i, |a| a.renewed_ns = a.renewed_ns.max(sent)),
                    // The lease is gone: nothing left to keep.
                    Ok(Ok(Some(_))) => return,
                    _ => break,
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The checks in the module docs, on the replay (`events`, from revision 1) and what the
/// open watch saw (`followed`, with when it saw each event).
fn judge(attempts: &[Attempt], events: &[Seen], followed: &[Seen], reports: &[Reported]) -> Result<(), String> {
    for w in events.windows(2) {
        check(w[0].rev <= w[1].rev, || format!("revisions out of order: {:?} then {:?}", w[0], w[1]))?;
    }
    // A waiter's key exists before its Lock or Campaign call answers (or whether or not it
    // does): find its client by the lease the key is named after.
    let by_lease: HashMap<i64, &Attempt> = attempts.iter().filter(|a| a.lease != 0).map(|a| (a.lease, a)).collect();
    let by_value: HashMap<&str, &Attempt> =
        attempts.iter().filter_map(|a| a.value.as_deref().map(|v| (v, a))).collect();
    // The lock's and the election's queues: live keys by create revision. For each key, the
    // revision it held the lock (or led) from; each guarded write's revision.
    let queue_of =
        |key: &str| [NAME, ELECTION].into_iter().find(|n| key.strip_prefix(n).is_some_and(|k| k.starts_with('/')));
    let mut queues: HashMap<&str, BTreeMap<i64, &str>> = HashMap::new();
    let mut created: HashMap<&str, i64> = HashMap::new();
    let mut held_from: HashMap<&str, i64> = HashMap::new();
    let mut deleted: HashMap<&str, i64> = HashMap::new();
    let mut written: HashMap<&str, i64> = HashMap::new();
    // Each election key's value, and the election's leader (key, value) from each revision on
    // where it changed.
    let mut values: HashMap<&str, &str> = HashMap::new();
    let mut leaders: BTreeMap<i64, Option<(&str, &str)>> = BTreeMap::new();
    // A guarded write at `rev` (the resource's, or a proclamation) by the holder of `name`.
    let mut guarded = |queues: &HashMap<&str, BTreeMap<i64, &str>>, name: &str, rev: i64, e: &Seen| {
        let (&value, writer) = by_value
            .get_key_value(e.value.as_str())
            .filter(|(_, w)| w.election == (name == ELECTION))
            .ok_or_else(|| format!("revision {rev}: {} = {}, which no holder of {name} wrote", e.key, e.value))?;
        check(written.insert(value, rev).is_none(), || format!("{value} written twice (again at {rev})"))?;
        let holder = queues.get(name).and_then(|q| q.values().next().copied());
        check(holder == writer.key.as_deref(), || {
            format!(
                "revision {rev}: client {} wrote {} = {} holding {:?}, but {name} was held by {holder:?}: two \
                 holders at once",
                writer.client, e.key, e.value, writer.key
            )
        })
    };
    let mut i = 0;
    while i < events.len() {
        let rev = events[i].rev;
        let at_rev = events[i..].iter().take_while(|e| e.rev == rev).count();
        for e in &events[i..i + at_rev] {
            if let Some(name) = queue_of(&e.key) {
                if !e.put {
                    let c = created.get(e.key.as_str()).copied();
                    let q = queues.entry(name).or_default();
                    check(c.is_some_and(|c| q.remove(&c).is_some()), || {
                        format!("{} deleted at {rev} but not queued", e.key)
                    })?;
                    deleted.insert(&e.key, rev);
                } else if e.create_rev == rev {
                    values.insert(&e.key, &e.value);
                    check(!created.contains_key(e.key.as_str()), || {
                        format!("{} created twice (again at {rev})", e.key)
                    })?;
                    created.insert(&e.key, e.create_rev);
                    queues.entry(name).or_default().insert(e.create_rev, &e.key);
                } else {
                    // A leader's proclamation: only the leader's key may change.
                    check(name == ELECTION, || format!("{} changed at {rev}: nothing writes a lock key", e.key))?;
                    guarded(&queues, name, rev, e)?;
                    values.insert(&e.key, &e.value);
                }
            } else if e.key == RESOURCE {
                check(e.put, || format!("the resource was deleted at {rev}: nothing deletes it"))?;
                guarded(&queues, NAME, rev, e)?;
            } else {
                return Err(format!("an event on {} at {rev}: nothing writes there", e.key));
            }
        }
        for q in queues.values() {
            if let Some(holder) = q.values().next() {
                held_from.entry(holder).or_insert(rev);
            }
        }
        let leader =
            queues.get(ELECTION).and_then(|q| q.values().next()).map(|&k| (k, values.get(k).copied().unwrap_or("")));
        if leaders.values().next_back().copied().flatten() != leader {
            leaders.insert(rev, leader);
        }
        i += at_rev;
    }
    for a in attempts {
        let (Some(key), Some(value)) = (a.key.as_deref(), a.value.as_deref()) else { continue };
        match a.write {
            Write::Acked(rev) => check(written.get(value) == Some(&rev), || {
                format!(
                    "client {}'s guarded write {value} was acknowledged at {rev}; the replay has it at {:?}",
                    a.client,
                    written.get(value)
                )
            })?,
            Write::Refused => check(!written.contains_key(value), || {
                format!("client {}'s guarded write {value} was refused, yet the replay has it", a.client)
            })?,
            Write::None | Write::Unknown => {}
        }
        let from = held_from.get(key).copied();
        check(from.is_some_and(|f| f <= a.locked_rev), || {
            format!(
                "client {} was granted {key} (lock reply at revision {}), but the replay has it holding the lock from \
                 {from:?} (created at {:?})",
                a.client,
                a.locked_rev,
                created.get(key)
            )
        })?;
    }
    // No false leader: each report matches the replay's leader at the revision it carried.
    let mut stream_revs: HashMap<u64, i64> = HashMap::new();
    for r in reports {
        let at = leaders.range(..=r.rev).next_back().and_then(|(_, l)| *l);
        check(at == Some((r.key.as_str(), r.value.as_str())), || {
            format!(
                "{} on member {} reported {} = {:?} as the leader at revision {}, but the replay has {at:?} leading \
                 then",
                if r.stream.is_some() { "Observe" } else { "Leader" },
                r.node,
                r.key,
                r.value,
                r.rev
            )
        })?;
        if let Some(n) = r.stream {
            let last = stream_revs.insert(n, r.rev).unwrap_or(0);
            check(last <= r.rev, || {
                format!("an Observe stream on member {} went back from revision {last} to {}", r.node, r.rev)
            })?;
        }
    }
    // No early expiry: a deletion its client did not ask for, seen before the lease could end.
    let seen_at: HashMap<(i64, &str), u64> =
        followed.iter().filter(|s| !s.put).map(|s| ((s.rev, s.key.as_str()), s.observed_ns)).collect();
    for (key, rev) in &deleted {
        let lease = key.rsplit('/').next().and_then(|l| i64::from_str_radix(l, 16).ok());
        let (Some(a), Some(observed)) = (lease.and_then(|l| by_lease.get(&l)), seen_at.get(&(*rev, *key))) else {
            continue;
        };
        let earliest = a.renewed_ns + (a.ttl.max(0) as u64) * 1_000_000_000;
        let released = a.released_ns.is_some_and(|r| r <= *observed);
        check(released || *observed >= earliest, || {
            format!(
                "client {}'s {key} (lease {:x}, TTL {} s) was deleted at revision {rev} and seen {} ms into the run, \
                 {} ms before its lease could expire: the server renewed it on a keep-alive sent at {} ms, and the \
                 client had not let go",
                a.client,
                a.lease,
                a.ttl,
                observed / 1_000_000,
                (earliest - observed) / 1_000_000,
                a.renewed_ns / 1_000_000
            )
        })?;
    }
    Ok(())
}
