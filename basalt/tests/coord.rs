//! S05 through the real binary and real etcd clients: `etcdctl` (Debian's etcd-client) scripted,
//! the `etcd-client` crate over every service (KV, Watch, Lease, Lock, Election, Maintenance,
//! Cluster) with etcd's errors, fencing against a lock holder paused past its lease, and leases
//! never expiring early across a leader change.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use basalt_harness::cluster::Cluster;
use basalt_harness::wait_until;
use common::*;
use etcd_client::{
    Client, Compare, CompareOp, EventType, GetOptions, LeaseTimeToLiveOptions, LockOptions, PutOptions, ResignOptions,
    SortOrder, SortTarget, Txn, TxnOp, WatchOptions,
};

async fn etcd_addr(url: &str) -> String {
    send(client().get(format!("{url}/v1/coord"))).await.1["etcd_addr"].as_str().expect("etcd_addr").to_owned()
}

async fn connect(addr: &str) -> Client {
    Client::connect([addr], None).await.expect("etcd client connects")
}

fn etcdctl(addr: &str, args: &[&str]) -> String {
    let out = Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={addr}"))
        .args(args)
        .output()
        .expect("etcdctl installed (scripts/install-deps)");
    assert!(out.status.success(), "etcdctl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap().trim_end().to_owned()
}

fn etcdctl_stdin(addr: &str, args: &[&str], input: &str) -> String {
    use std::io::Write;
    let mut child = Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .arg(format!("--endpoints={addr}"))
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "etcdctl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap().trim_end().to_owned()
}

fn grpc_message(e: etcd_client::Error) -> (tonic::Code, String) {
    match e {
        etcd_client::Error::GRpcStatus(s) => (s.code(), s.message().to_owned()),
        other => panic!("expected a gRPC status, got {other}"),
    }
}

#[tokio::test]
async fn etcdctl_works_unchanged() {
    let c = Cluster::start(EXE, 1).await;
    let addr = etcd_addr(&c.url(1)).await;
    let e = |args: &[&str]| etcdctl(&addr, args);
    assert_eq!(e(&["put", "app/a", "1"]), "OK");
    assert_eq!(e(&["put", "app/b", "2"]), "OK");
    assert_eq!(e(&["get", "app/a"]), "app/a\n1");
    assert_eq!(e(&["get", "--prefix", "app/", "--keys-only"]), "app/a\n\napp/b");
    let rev: serde_json::Value = serde_json::from_str(&e(&["get", "app/a", "-w", "json"])).unwrap();
    let created = rev["kvs"][0]["create_revision"].as_i64().unwrap();
    assert_eq!(e(&["put", "app/a", "changed"]), "OK");
    assert_eq!(e(&["get", "app/a", &format!("--rev={created}")]), "app/a\n1", "a historical read");
    assert_eq!(e(&["del", "app/b"]), "1");
    let txn = "value(\"app/a\") = \"changed\"\n\nput app/t yes\n\nput app/t no\n\n";
    assert_eq!(etcdctl_stdin(&addr, &["txn"], txn), "SUCCESS\n\nOK");
    assert_eq!(e(&["get", "app/t", "--print-value-only"]), "yes");

    // watch: a background etcdctl sees a later put.
    let mut watch = Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .args([format!("--endpoints={addr}"), "watch".into(), "app/w".into()])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let watch_out = watch.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        use std::io::BufRead;
        std::io::BufReader::new(watch_out).lines().take(3).map(Result::unwrap).collect::<Vec<_>>()
    });
    // The watch may start after the first put; keep writing until it has seen one.
    let mut n = 0;
    while !reader.is_finished() {
        e(&["put", "app/w", &format!("v{n}")]);
        n += 1;
        std::thread::sleep(Duration::from_millis(50));
        assert!(n < 200, "etcdctl watch saw nothing");
    }
    let lines = reader.join().unwrap();
    assert_eq!(lines[0], "PUT");
    assert_eq!(lines[1], "app/w");
    let _ = watch.kill();
    let _ = watch.wait();

    // leases: grant, attach, keep alive once, time to live, revoke deletes the key.
    let granted = e(&["lease", "grant", "30"]);
    let id = granted.split_whitespace().nth(1).unwrap().to_owned();
    assert!(granted.ends_with("granted with TTL(30s)"), "{granted}");
    assert_eq!(e(&["put", "app/leased", "x", &format!("--lease={id}")]), "OK");
    assert!(e(&["lease", "keep-alive", "--once", &id]).contains("keepalived with TTL(30)"));
    let ttl = e(&["lease", "timetolive", &id, "--keys"]);
    assert!(ttl.contains("attached keys([app/leased])"), "{ttl}");
    assert!(e(&["lease", "list"]).contains(&id));
    assert!(e(&["lease", "revoke", &id]).contains("revoked"));
    assert_eq!(e(&["get", "app/leased"]), "");

    // lock and elect (etcdctl's client-side recipes: txn, watch, lease keep-alive).
    let held = e(&["lock", "app-lock", "--", "sh", "-c", "echo $ETCD_LOCK_KEY $ETCD_LOCK_REV"]);
    let (key, rev) = held.split_once(' ').unwrap();
    assert!(key.starts_with("app-lock/"), "{held}");
    assert!(rev.parse::<i64>().unwrap() > 0, "{held}");
    let mut elect = Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .args([format!("--endpoints={addr}"), "elect".into(), "app-election".into(), "alice".into()])
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // `elect -l` observes: it prints the leader's key and value, then every change.
    let mut observe = Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .args([format!("--endpoints={addr}"), "elect".into(), "-l".into(), "app-election".into()])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let observed = observe.stdout.take().unwrap();
    let leader = {
        use std::io::BufRead;
        std::io::BufReader::new(observed).lines().take(2).map(Result::unwrap).collect::<Vec<_>>().join(" ")
    };
    let _ = observe.kill();
    let _ = observe.wait();
    let _ = elect.kill();
    let _ = elect.wait();
    assert!(leader.starts_with("app-election/") && leader.ends_with("alice"), "{leader}");

    // endpoint status and member list.
    let status = e(&["endpoint", "status", "-w", "json"]);
    assert!(status.contains("\"leader\":1"), "{status}");
    let members = e(&["member", "list"]);
    assert!(members.contains("basalt-1") && members.contains(&format!("http://{addr}")), "{members}");
    // compaction: an old revision is then refused with etcd's message.
    e(&["compact", &(created + 1).to_string()]);
    let out = Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .args([format!("--endpoints={addr}"), "get".into(), "app/a".into(), format!("--rev={created}")])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("required revision has been compacted"));
}

#[tokio::test]
async fn the_etcd_client_crate_over_every_service() {
    let c = Cluster::start(EXE, 1).await;
    let addr = etcd_addr(&c.url(1)).await;
    let mut cl = connect(&addr).await;

    // KV: put with prev_kv, ranges with sort/limit/count/keys-only, historical reads, delete.
    for (k, v) in [("k/1", "c"), ("k/2", "a"), ("k/3", "b")] {
        cl.put(k, v, None).await.unwrap();
    }
    let r = cl.put("k/1", "cc", Some(PutOptions::new().with_prev_key())).await.unwrap();
    assert_eq!(r.prev_key().unwrap().value(), b"c");
    let r = cl
        .get("k/", Some(GetOptions::new().with_prefix().with_sort(SortTarget::Value, SortOrder::Descend)))
        .await
        .unwrap();
    let values: Vec<&[u8]> = r.kvs().iter().map(|kv| kv.value()).collect();
    assert_eq!(values, [&b"cc"[..], b"b", b"a"]);
    let r = cl.get("k/", Some(GetOptions::new().with_prefix().with_limit(2))).await.unwrap();
    assert_eq!((r.kvs().len(), r.more(), r.count()), (2, true, 3));
    let r = cl.get("k/", Some(GetOptions::new().with_prefix().with_count_only())).await.unwrap();
    assert_eq!((r.kvs().len(), r.count()), (0, 3));
    let r = cl.get("k/1", None).await.unwrap();
    let kv = &r.kvs()[0];
    assert_eq!((kv.version(), kv.create_revision() < kv.mod_revision()), (2, true));
    let old = cl.get("k/1", Some(GetOptions::new().with_revision(kv.create_revision()))).await.unwrap();
    assert_eq!(old.kvs()[0].value(), b"c");
    let (code, msg) = grpc_message(cl.get("k/1", Some(GetOptions::new().with_revision(10_000))).await.unwrap_err());
    assert_eq!(
        (code, msg.as_str()),
        (tonic::Code::OutOfRange, "etcdserver: mvcc: required revision is a future revision")
    );
    let d = cl.delete("k/3", Some(etcd_client::DeleteOptions::new().with_prev_key())).await.unwrap();
    assert_eq!((d.deleted(), d.prev_kvs()[0].value()), (1, &b"b"[..]));

    // Txn: compares on value, version, create and mod revision; both branches.
    let t = Txn::new()
        .when([Compare::value("k/1", CompareOp::Equal, "cc"), Compare::version("k/2", CompareOp::Equal, 1)])
        .and_then([TxnOp::put("k/ok", "yes", None)])
        .or_else([TxnOp::put("k/ok", "no", None)]);
    assert!(cl.txn(t).await.unwrap().succeeded());
    let t = Txn::new()
        .when([Compare::create_revision("k/missing", CompareOp::Greater, 0)])
        .or_else([TxnOp::get("k/ok", None)]);
    let r = cl.txn(t).await.unwrap();
    assert!(!r.succeeded());
    // Read-only, so served after a read barrier without the log: the current value, no revision.
    match &r.op_responses()[..] {
        [etcd_client::TxnOpResponse::Get(g)] => assert_eq!(g.kvs()[0].value(), b"yes"),
        other => panic!("{other:?}"),
    }
    let head = cl.get("k/ok", None).await.unwrap().header().unwrap().revision();
    assert_eq!(r.header().unwrap().revision(), head, "a read-only txn takes no revision");
    // etcd's errors, byte for byte.
    let dup = Txn::new().and_then([TxnOp::put("d", "1", None), TxnOp::put("d", "2", None)]);
    let (code, msg) = grpc_message(cl.txn(dup).await.unwrap_err());
    assert_eq!((code, msg.as_str()), (tonic::Code::InvalidArgument, "etcdserver: duplicate key given in txn request"));
    let many: Vec<TxnOp> = (0..129).map(|i| TxnOp::put(format!("m{i}"), "x", None)).collect();
    let (_, msg) = grpc_message(cl.txn(Txn::new().and_then(many)).await.unwrap_err());
    assert_eq!(msg, "etcdserver: too many operations in txn request");
    let (code, msg) = grpc_message(cl.put("big", vec![0u8; 1600 * 1024], None).await.unwrap_err());
    assert_eq!((code, msg.as_str()), (tonic::Code::InvalidArgument, "etcdserver: request is too large"));
    let (code, msg) = grpc_message(cl.put("", "x", None).await.unwrap_err());
    assert_eq!((code, msg.as_str()), (tonic::Code::InvalidArgument, "etcdserver: key is not provided"));
    let (code, msg) = grpc_message(cl.put("x", "x", Some(PutOptions::new().with_lease(999))).await.unwrap_err());
    assert_eq!((code, msg.as_str()), (tonic::Code::NotFound, "etcdserver: requested lease not found"));

    // Watch: history from a start revision with prev_kv, then live events, then cancel.
    let start = cl.get("k/1", None).await.unwrap().header().unwrap().revision();
    let mut w = cl
        .watch("w/", Some(WatchOptions::new().with_prefix().with_prev_key().with_start_revision(start)))
        .await
        .unwrap();
    cl.put("w/a", "1", None).await.unwrap();
    cl.put("w/a", "2", None).await.unwrap();
    cl.delete("w/a", None).await.unwrap();
    let mut seen = Vec::new();
    while seen.len() < 3 {
        let resp = tokio::time::timeout(Duration::from_secs(10), w.message()).await.unwrap().unwrap().unwrap();
        for ev in resp.events() {
            seen.push((ev.event_type(), ev.kv().unwrap().value().to_vec(), ev.prev_kv().map(|p| p.value().to_vec())));
        }
    }
    assert_eq!(
        seen,
        [
            (EventType::Put, b"1".to_vec(), None),
            (EventType::Put, b"2".to_vec(), Some(b"1".to_vec())),
            (EventType::Delete, vec![], Some(b"2".to_vec())),
        ]
    );

    // A watch on a compacted revision is cancelled with the compaction revision.
    let now = cl.put("w/b", "x", None).await.unwrap().header().unwrap().revision();
    cl.compact(now, None).await.unwrap();
    let mut w = cl.watch("w/", Some(WatchOptions::new().with_prefix().with_start_revision(2))).await.unwrap();
    let mut cancelled = None;
    while cancelled.is_none() {
        let resp = tokio::time::timeout(Duration::from_secs(10), w.message()).await.unwrap().unwrap().unwrap();
        if resp.canceled() {
            cancelled = Some((resp.compact_revision(), resp.cancel_reason().to_owned()));
        }
    }
    let (rev, reason) = cancelled.unwrap();
    assert_eq!(rev, now);
    assert!(reason.contains("compacted"), "{reason}");

    // Leases: grant, attach, time to live with keys, keep alive, revoke deletes the keys.
    let lease = cl.lease_grant(30, None).await.unwrap();
    cl.put("l/1", "x", Some(PutOptions::new().with_lease(lease.id()))).await.unwrap();
    let ttl = cl.lease_time_to_live(lease.id(), Some(LeaseTimeToLiveOptions::new().with_keys())).await.unwrap();
    assert_eq!((ttl.granted_ttl(), ttl.keys()), (30, &[b"l/1".to_vec()][..]));
    assert!((1..=30).contains(&ttl.ttl()), "{}", ttl.ttl());
    let (mut keeper, mut stream) = cl.lease_keep_alive(lease.id()).await.unwrap();
    keeper.keep_alive().await.unwrap();
    assert_eq!(stream.message().await.unwrap().unwrap().ttl(), 30);
    assert!(cl.leases().await.unwrap().leases().iter().any(|l| l.id() == lease.id()));
    cl.lease_revoke(lease.id()).await.unwrap();
    assert!(cl.get("l/1", None).await.unwrap().kvs().is_empty());
    assert_eq!(cl.lease_time_to_live(lease.id(), None).await.unwrap().ttl(), -1);

    // Lock (v3lock): a second locker waits until the first unlocks; tokens grow.
    let l1 = cl.lease_grant(30, None).await.unwrap().id();
    let l2 = cl.lease_grant(30, None).await.unwrap().id();
    let first = cl.lock("res", Some(LockOptions::new().with_lease(l1))).await.unwrap();
    let first_key = first.key().to_vec();
    let mut cl2 = connect(&addr).await;
    let waiter =
        tokio::spawn(
            async move { cl2.lock("res", Some(LockOptions::new().with_lease(l2))).await.unwrap().key().to_vec() },
        );
    // The second locker is queued behind the first (its key exists, it has not returned).
    wait_until("the second locker queues", || {
        let mut cl = cl.clone();
        async move { cl.get("res/", Some(GetOptions::new().with_prefix())).await.unwrap().count() == 2 }
    })
    .await;
    assert!(!waiter.is_finished(), "the lock is held");
    cl.unlock(first_key.clone()).await.unwrap();
    let second_key = tokio::time::timeout(Duration::from_secs(10), waiter).await.unwrap().unwrap();
    let rev = |key: Vec<u8>| {
        let mut cl = cl.clone();
        async move { cl.get(key, None).await.unwrap().kvs().first().map(|kv| kv.create_revision()) }
    };
    assert!(rev(second_key.clone()).await.unwrap() > 0);
    assert!(rev(first_key).await.is_none(), "unlocked");

    // Election: campaign, proclaim, leader, observe, resign hands over.
    let e1 = cl.lease_grant(30, None).await.unwrap().id();
    let e2 = cl.lease_grant(30, None).await.unwrap().id();
    let won = cl.campaign("el", "alice", e1).await.unwrap();
    let leader_key = won.leader().unwrap().clone();
    let mut observe = cl.observe("el").await.unwrap();
    let first = observe.message().await.unwrap().unwrap();
    assert_eq!(first.kv().unwrap().value(), b"alice");
    let proclaimed = cl
        .proclaim("alice-2", Some(etcd_client::ProclaimOptions::new().with_leader(leader_key.clone())))
        .await
        .unwrap();
    assert_eq!(observe.message().await.unwrap().unwrap().kv().unwrap().value(), b"alice-2");
    let now_leading = cl.leader("el").await.unwrap();
    assert_eq!(now_leading.kv().unwrap().value(), b"alice-2");
    // The reply's header is the proclamation's own revision, as etcd's.
    assert_eq!(proclaimed.header().unwrap().revision(), now_leading.kv().unwrap().mod_revision());
    let mut cl3 = connect(&addr).await;
    let bob = tokio::spawn(async move { cl3.campaign("el", "bob", e2).await.unwrap() });
    cl.resign(Some(ResignOptions::new().with_leader(leader_key))).await.unwrap();
    tokio::time::timeout(Duration::from_secs(10), bob).await.unwrap().unwrap();
    assert_eq!(observe.message().await.unwrap().unwrap().kv().unwrap().value(), b"bob");

    // Maintenance and cluster.
    let st = cl.status().await.unwrap();
    assert_eq!(st.leader(), 1);
    let members = cl.member_list().await.unwrap();
    assert_eq!(members.members().len(), 1);
    assert_eq!(members.members()[0].client_urls(), [format!("http://{addr}")]);
}

/// A Proclaim's reply header names the proclamation's own revision, as etcd's does (its header
/// is the proclaiming txn's), even while other writes land between the write and the reply.
#[tokio::test]
async fn a_proclaim_answers_with_its_own_revision_while_others_write() {
    let c = Cluster::start(EXE, 1).await;
    let addr = etcd_addr(&c.url(1)).await;
    let mut cl = connect(&addr).await;
    let lease = cl.lease_grant(30, None).await.unwrap().id();
    let leader = cl.campaign("busy", "v0", lease).await.unwrap().leader().unwrap().clone();
    // Eight writers keep the queue full, so a proclamation shares its entry with puts applied
    // after it.
    let mut writing = tokio::task::JoinSet::new();
    for w in 0..8 {
        let mut writer = connect(&addr).await;
        writing.spawn(async move {
            for i in 0.. {
                writer.put(format!("noise/{w}/{}", i % 16), "x", None).await.unwrap();
            }
        });
    }
    for n in 1..=40 {
        let options = etcd_client::ProclaimOptions::new().with_leader(leader.clone());
        let said = cl.proclaim(format!("v{n}"), Some(options)).await.unwrap().header().unwrap().revision();
        let now = cl.leader("busy").await.unwrap();
        let kv = now.kv().unwrap();
        assert_eq!(kv.value(), format!("v{n}").as_bytes());
        assert_eq!(said, kv.mod_revision(), "proclamation {n}: the reply names another revision than its write's");
    }
    writing.abort_all();
}

/// The lock holder (etcdctl running a script) is paused past its lease; another client takes
/// the lock and writes; the first one's late write carries an older fencing token and is refused.
#[tokio::test]
async fn a_lock_holder_paused_past_its_lease_is_fenced_off() {
    let c = Cluster::start(EXE, 1).await;
    let url = c.url(1);
    let addr = etcd_addr(&url).await;
    let dir = tempfile::tempdir().unwrap();
    let (token_file, go_file, status_file) =
        (dir.path().join("token"), dir.path().join("go"), dir.path().join("status"));
    let script = format!(
        "echo $ETCD_LOCK_REV > {t}.tmp && mv {t}.tmp {t}; while [ ! -f {g} ]; do sleep 0.02; done; \
         curl -s -o /dev/null -w '%{{http_code}}' -X PUT -H \"x-fencing-token: $ETCD_LOCK_REV\" --data late {url}/v1/coord/fenced/ledger > {s}",
        t = token_file.display(),
        g = go_file.display(),
        s = status_file.display(),
    );
    use std::os::unix::process::CommandExt;
    let mut holder = Command::new("etcdctl")
        .env("ETCDCTL_API", "3")
        .args([
            format!("--endpoints={addr}"),
            "lock".into(),
            "--ttl=2".into(),
            "ledger-lock".into(),
            "--".into(),
            "sh".into(),
            "-c".into(),
            script,
        ])
        .process_group(0)
        .spawn()
        .unwrap();
    wait_until("the first holder has the lock", || async { token_file.exists() }).await;
    let token1: i64 = std::fs::read_to_string(&token_file).unwrap().trim().parse().unwrap();
    // The holder writes while it holds the lock.
    let r = client()
        .put(format!("{url}/v1/coord/fenced/ledger"))
        .header("x-fencing-token", token1)
        .body("first")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    // Pause the holder (etcdctl and its script): its keep-alives stop.
    let pgid = nix::unistd::Pid::from_raw(-(holder.id() as i32));
    nix::sys::signal::kill(pgid, nix::sys::signal::Signal::SIGSTOP).unwrap();
    let paused_at = Instant::now();

    // A second client waits for the lock; it gets it once the paused holder's lease expires.
    let mut cl = connect(&addr).await;
    let lease = cl.lease_grant(30, None).await.unwrap().id();
    let got = cl.lock("ledger-lock", Some(LockOptions::new().with_lease(lease))).await.unwrap();
    assert!(paused_at.elapsed() >= Duration::from_secs(1), "the lock was taken before the lease could expire");
    let token2 = cl.get(got.key(), None).await.unwrap().kvs()[0].create_revision();
    assert!(token2 > token1);
    let r = client()
        .put(format!("{url}/v1/coord/fenced/ledger"))
        .header("x-fencing-token", token2)
        .body("second")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);

    // The first holder wakes up and writes with its old token: refused.
    nix::sys::signal::kill(pgid, nix::sys::signal::Signal::SIGCONT).unwrap();
    std::fs::write(&go_file, "").unwrap();
    wait_until("the late write's answer", || async {
        std::fs::read_to_string(&status_file).is_ok_and(|s| s.len() == 3)
    })
    .await;
    assert_eq!(std::fs::read_to_string(&status_file).unwrap(), "409");
    let (_, res) = send(client().get(format!("{url}/v1/coord/fenced/ledger"))).await;
    assert_eq!(
        (res["value"].as_str(), res["token"].as_i64(), res["refused"].as_u64()),
        (Some("second"), Some(token2), Some(1)),
        "{res}"
    );
    let _ = holder.kill();
    let _ = holder.wait();
}

/// A lease's keys outlive a leader change: the new leader gives every lease its full TTL again.
#[tokio::test]
async fn a_leader_change_never_expires_a_lease_early() {
    let mut c = Cluster::start(EXE, 3).await;
    let leader = c.leader().await;
    let follower = (1..=3).find(|id| *id != leader).unwrap();
    let addr = etcd_addr(&c.url(follower)).await;
    let mut cl = connect(&addr).await;
    const TTL: i64 = 3;
    let lease = cl.lease_grant(TTL, None).await.unwrap().id();
    cl.put("session", "alive", Some(PutOptions::new().with_lease(lease))).await.unwrap();
    let (mut keeper, mut stream) = cl.lease_keep_alive(lease).await.unwrap();
    keeper.keep_alive().await.unwrap();
    assert_eq!(stream.message().await.unwrap().unwrap().ttl(), TTL);
    let last_keepalive = Instant::now();

    c.kill9(leader);
    // Through the follower: the key must exist until at least TTL after the last keep-alive.
    let mut expired_at = None;
    while expired_at.is_none() {
        match cl.get("session", None).await {
            Ok(r) if r.kvs().is_empty() => expired_at = Some(last_keepalive.elapsed()),
            _ => tokio::time::sleep(Duration::from_millis(50)).await,
        }
        assert!(last_keepalive.elapsed() < Duration::from_secs(30), "the lease never expired");
    }
    let expired_at = expired_at.unwrap();
    assert!(
        expired_at >= Duration::from_secs(TTL as u64),
        "expired {expired_at:?} after the last keep-alive (TTL {TTL} s)"
    );
}

/// Three members led by node 1, where node 3 never campaigns, so the next leader is node 2;
/// generous request timeouts so a slow machine cannot turn the election's time into errors.
async fn node_2_leads_next() -> Cluster {
    let c = Cluster::start_with(EXE, 3, |id| {
        let mut args = vec!["--set".to_string(), "engines.consensus.request_timeout_ms=30000".to_string()];
        if id == 3 {
            args.extend(["--set".to_string(), "engines.consensus.stands_for_election=false".to_string()]);
        }
        args
    })
    .await;
    assert_eq!(c.leader().await, 1, "node 1 bootstraps and leads");
    c
}

/// A leader cut off from the others does not know it has been replaced. It must not renew a
/// lease on its own clock while the new leader runs the lease out on its: a keep-alive through
/// it must fail, never answer a TTL, once the others have elected a new leader — and the lease
/// still expires on the majority side a TTL after the last renewal that did succeed.
#[tokio::test]
async fn a_leader_cut_off_from_the_others_renews_no_lease() {
    let c = Cluster::start(EXE, 3).await;
    let old = c.leader().await;
    let other = (1..=3).find(|id| *id != old).unwrap();
    let mut cl = connect(&etcd_addr(&c.url(old)).await).await;
    let mut majority = connect(&etcd_addr(&c.url(other)).await).await;
    const TTL: i64 = 3;
    let lease = cl.lease_grant(TTL, None).await.unwrap().id();
    cl.put("held", "yes", Some(PutOptions::new().with_lease(lease))).await.unwrap();
    // Opening the stream renews once (the client reads that answer itself).
    let (mut keeper, mut stream) = cl.lease_keep_alive(lease).await.unwrap();
    keeper.keep_alive().await.unwrap();
    assert_eq!(stream.message().await.unwrap().unwrap().ttl(), TTL, "renewed while it leads");
    let mut last_renewal = Instant::now();

    c.isolate(old).await;
    c.wait_for("a new leader among the others", || async {
        c.status(other).await["leader_id"].as_u64().is_some_and(|l| l != old as u64)
    })
    .await;
    // Past the lease's whole TTL, keep-alives through the old leader are all refused.
    let until = Instant::now() + Duration::from_secs(TTL as u64 + 1);
    let mut open = Some((keeper, stream));
    let mut refused = 0;
    while Instant::now() < until {
        let sent = Instant::now();
        let wait = Duration::from_secs(10);
        let renewed = match open.as_mut() {
            Some((keeper, stream)) => {
                keeper.keep_alive().await.is_ok()
                    && matches!(tokio::time::timeout(wait, stream.message()).await, Ok(Ok(Some(r))) if r.ttl() > 0)
            }
            // Opening a stream renews once (an answer without a TTL is an error).
            None => match tokio::time::timeout(wait, cl.lease_keep_alive(lease)).await {
                Ok(Ok(ks)) => {
                    open = Some(ks);
                    true
                }
                _ => false,
            },
        };
        if renewed {
            // A renewal may pass only before the first refusal (while the old leader could
            // still confirm its lead); none after it.
            assert!(refused == 0, "the cut-off old leader renewed the lease after refusing to");
            last_renewal = sent;
        } else {
            refused += 1;
            open = None;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert!(refused > 0, "every keep-alive through the cut-off old leader was answered");
    // On the majority side the key lives until a TTL after the last renewal that succeeded.
    let mut gone_after = None;
    while gone_after.is_none() {
        if majority.get("held", None).await.is_ok_and(|r| r.kvs().is_empty()) {
            gone_after = Some(last_renewal.elapsed());
        }
        assert!(last_renewal.elapsed() < Duration::from_secs(30), "the lease never expired");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(gone_after.unwrap() >= Duration::from_secs(TTL as u64), "expired {gone_after:?} after the last renewal");
}

/// A lease expiry the leader decided, still queued when it loses the lead, is forwarded to the
/// next leader with the rest of its queue — and must not count there: the new leader gave the
/// lease a full TTL when it took over, and the client has renewed it since. (Without the
/// expiry's term check the forwarded expiry deleted the key of a lease kept alive.)
#[tokio::test]
async fn a_lease_expiry_queued_on_a_leader_that_loses_the_lead_does_not_count() {
    let c = node_2_leads_next().await;
    let old_url = c.url(1);
    let mut on_old = connect(&etcd_addr(&old_url).await).await;
    let mut on_new = connect(&etcd_addr(&c.url(2)).await).await;
    const TTL: i64 = 2;
    let lease = on_new.lease_grant(TTL, None).await.unwrap().id();
    let granted = Instant::now();
    on_new.put("held", "yes", Some(PutOptions::new().with_lease(lease))).await.unwrap();

    // Node 1's disk stalls: a write holds its one batch slot, and the expiry node 1 decides
    // when the lease runs out (nobody keeps it alive yet) waits in its queue behind it.
    c.stall_disk(1, true).await;
    let last_before = c.status(1).await["last_log_index"].as_u64().unwrap_or(0);
    let stuck =
        tokio::spawn(async move { on_old.put("stuck", "x", None).await.map(|r| r.header().unwrap().revision()) });
    let queued = || {
        let url = old_url.clone();
        async move { metric(&url, "basalt_consensus_batch_queued").await.unwrap_or(0.0) }
    };
    // The write is in node 1's log or queue.
    let last = |s: serde_json::Value| s["last_log_index"].as_u64().unwrap_or(0);
    c.wait_for("the stuck write proposed", || async { last(c.status(1).await) > last_before || queued().await >= 1.0 })
        .await;
    let before = queued().await;
    // The lease runs out on node 1's clock (its keeper looks every 100 ms): its expiry joins
    // the queue. (The other systems' periodic proposals queue there too; they do no harm.)
    let expired = Duration::from_millis(TTL as u64 * 1000 + 600);
    c.wait_for("the lease's deadline on node 1 to pass and its expiry to queue", || async {
        granted.elapsed() >= expired && queued().await > before
    })
    .await;
    assert!(!stuck.is_finished(), "the write holding node 1's batch slot is still stuck");

    // Node 2 takes over (every lease gets its full TTL there) and the client renews through it.
    c.isolate(1).await;
    c.wait_for("node 2 leads", || async { c.status(2).await["state"] == "leader" }).await;
    let (mut keeper, mut stream) = on_new.lease_keep_alive(lease).await.unwrap();
    let renewing = tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_millis(400)).await;
            if keeper.keep_alive().await.is_err() {
                return;
            }
            match stream.message().await {
                Ok(Some(r)) if r.ttl() > 0 => {}
                other => panic!("the lease was not renewed on the new leader: {other:?}"),
            }
        }
    });
    // Node 1 comes back; its queue — the stuck write and the expiry — goes to node 2.
    c.heal().await;
    c.stall_disk(1, false).await;
    tokio::time::timeout(Duration::from_secs(60), stuck).await.unwrap().unwrap().expect("the stuck write lands");
    // A write through node 1 after its queue has drained (it proposes in order).
    let mut again = connect(&etcd_addr(&c.url(1)).await).await;
    again.put("after", "x", None).await.unwrap();
    let held = on_new.get("held", None).await.unwrap();
    assert_eq!(held.kvs().len(), 1, "the deposed leader's expiry deleted a lease kept alive on the new leader");
    assert!(!renewing.is_finished(), "still renewing");
    renewing.abort();
}

/// Membership through etcd's API: `etcdctl move-leader` hands leadership to another member,
/// `member remove` takes one out, and the errors are etcd's.
#[tokio::test]
async fn etcdctl_moves_the_leader_and_removes_a_member() {
    let c = Cluster::start(EXE, 3).await;
    let leader = c.leader().await;
    let mut addrs = Vec::new();
    for id in 1..=3 {
        addrs.push(etcd_addr(&c.url(id)).await);
    }
    let all = addrs.join(",");
    let target = (1..=3).find(|id| *id != leader).unwrap();
    // Generous timeouts: a leader change on a loaded machine can take longer than etcdctl's 5 s.
    let out = etcdctl(&all, &["--command-timeout=30s", "move-leader", &format!("{target:x}")]);
    assert!(out.contains("Leadership transferred"), "{out}");
    c.wait_for("the new leader", || async { c.leader().await == target }).await;

    // etcd's errors: a transferee or a member that does not exist.
    let mut cl = connect(&addrs[target - 1]).await;
    let (code, msg) = grpc_message(cl.move_leader(99).await.unwrap_err());
    assert_eq!((code, msg.as_str()), (tonic::Code::FailedPrecondition, "etcdserver: bad leader transferee"));
    let (code, msg) = grpc_message(cl.member_remove(99).await.unwrap_err());
    assert_eq!((code, msg.as_str()), (tonic::Code::NotFound, "etcdserver: member not found"));
    let (code, msg) = grpc_message(cl.member_promote(leader as u64).await.unwrap_err());
    assert_eq!(
        (code, msg.as_str()),
        (tonic::Code::FailedPrecondition, "etcdserver: can only promote a learner member")
    );

    // Remove the old leader (now a follower); two members stay, and writes go on.
    let out = etcdctl(&addrs[target - 1], &["--command-timeout=30s", "member", "remove", &format!("{leader:x}")]);
    assert!(out.contains("removed from cluster"), "{out}");
    let list = etcdctl(&addrs[target - 1], &["member", "list"]);
    assert_eq!(list.lines().count(), 2, "{list}");
    assert!(!list.contains(&format!("basalt-{leader},")), "{list}");
    assert_eq!(etcdctl(&addrs[target - 1], &["--command-timeout=30s", "put", "after", "removal"]), "OK");
}

/// An uncontended lock taken through a follower returns once the write commits — the
/// transaction that queues the key also reads who owns the lock — without waiting for that
/// follower to apply it: here the follower's disk is stalled, so it cannot.
#[tokio::test]
async fn an_uncontended_lock_does_not_wait_for_the_followers_own_apply() {
    let c = Cluster::start(EXE, 3).await;
    let leader = c.leader().await;
    let follower = (1..=3).find(|id| *id != leader).unwrap();
    let mut cl = connect(&etcd_addr(&c.url(follower)).await).await;
    let lease = cl.lease_grant(30, None).await.unwrap().id();

    c.stall_disk(follower, true).await;
    let held =
        tokio::time::timeout(Duration::from_secs(20), cl.lock("quick", Some(LockOptions::new().with_lease(lease))))
            .await
            .expect("the lock waited for the follower's stalled disk")
            .unwrap();
    let key = held.key().to_vec();
    let header_rev = held.header().unwrap().revision();
    let mut leader_cl = connect(&etcd_addr(&c.url(leader)).await).await;
    let on_leader = leader_cl.get(key.clone(), None).await.unwrap();
    let kv = on_leader.kvs().first().expect("the lock key is committed");
    assert!(header_rev >= kv.create_revision(), "the header is not behind the lock's own revision");
    let local = cl.get(key.clone(), Some(GetOptions::new().with_serializable())).await.unwrap();
    assert!(local.kvs().is_empty(), "the follower has not applied the lock (its disk is stalled)");

    c.stall_disk(follower, false).await;
    cl.unlock(key).await.unwrap();
}

/// Writes forwarded by followers join the leader's own batch. With the leader's disk stalled
/// its entries in flight cannot finish, so writes sent to all three members wait in the
/// leader's one queue — the followers' forwarded ones too — and go out together once it
/// catches up: every write is acknowledged once, each with its own revision, in a handful of
/// Raft entries. Fails if the leader proposes forwarded batches on their own (they would never
/// wait in its queue, and would take an entry each).
#[tokio::test]
async fn writes_forwarded_by_followers_share_the_leaders_entries() {
    const EACH: usize = 20;
    let c = Cluster::start(EXE, 3).await;
    let leader = c.leader().await;
    let leader_url = c.url(leader);
    let mut clients = Vec::new();
    for id in 1..=3 {
        clients.push(connect(&etcd_addr(&c.url(id)).await).await);
    }
    let before = c.status(leader).await["last_log_index"].as_u64().unwrap();

    c.stall_disk(leader, true).await;
    let mut writes = tokio::task::JoinSet::new();
    for (member, cl) in clients.iter().enumerate() {
        for i in 0..EACH {
            let mut cl = cl.clone();
            writes.spawn(async move {
                let key = format!("fwd/{member}/{i}");
                cl.put(key.clone(), key, None).await.map(|r| r.header().unwrap().revision())
            });
        }
    }
    // One proposal holds the leader's one batch slot (written, not yet on its disk), and one
    // each follower's (forwarded as a batch of one). Everything else that reached the leader
    // waits in its queue: its own writes and what the followers forwarded (each follower's
    // other writes wait in that follower's queue). Without the followers' writes the leader's
    // queue holds at most its own EACH.
    let want = (EACH + 1) as f64;
    c.wait_for(&format!("{want} commands queued on the leader"), || {
        let url = leader_url.clone();
        async move { metric(&url, "basalt_consensus_batch_queued").await.is_some_and(|v| v >= want) }
    })
    .await;

    c.stall_disk(leader, false).await;
    let mut revisions = Vec::new();
    while let Some(w) = writes.join_next().await {
        revisions.push(w.unwrap().expect("every write is acknowledged"));
    }
    revisions.sort_unstable();
    revisions.dedup();
    assert_eq!(revisions.len(), 3 * EACH, "each write has its own revision");
    let all = clients[0].get("fwd/", Some(GetOptions::new().with_prefix())).await.unwrap();
    assert_eq!(all.kvs().len(), 3 * EACH, "every write is applied once");

    // The held entry, one for the leader's queue, a few for what the followers queued
    // meanwhile: a handful of entries for all of them, not one per write or per forward.
    let entries = c.status(leader).await["last_log_index"].as_u64().unwrap() - before;
    assert!(entries <= 8, "{} writes took {entries} Raft entries", 3 * EACH);
}

/// A leader loses its lead while a follower's forwarded writes wait in its queue, and that
/// follower becomes the leader. The queued writes come back "not the leader" (nothing of them
/// was written) and the follower proposes them itself; the old leader's own queued writes go
/// to the new leader. Every write is acknowledged, once. (Were the old leader to forward the
/// follower's writes on to the new leader, they would come back to the follower whose one batch
/// slot waits on them: a stall until the request timeout, and an error for each of them.)
#[tokio::test]
async fn forwarded_writes_queued_on_a_leader_that_loses_the_lead_are_written_once() {
    const EACH: usize = 10;
    let c = node_2_leads_next().await;
    let old_url = c.url(1);
    let clients = [connect(&etcd_addr(&c.url(1)).await).await, connect(&etcd_addr(&c.url(2)).await).await];

    c.stall_disk(1, true).await;
    let mut writes = tokio::task::JoinSet::new();
    for (member, cl) in clients.iter().enumerate() {
        for i in 0..EACH {
            let mut cl = cl.clone();
            writes.spawn(async move {
                let key = format!("moved/{}/{i}", member + 1);
                cl.put(key.clone(), key, None).await.map(|r| r.header().unwrap().revision())
            });
        }
    }
    // One write holds node 1's batch slot; node 1's other writes and node 2's forwarded one
    // wait in node 1's queue (node 2's others in its own).
    let want = EACH as f64;
    c.wait_for(&format!("{want} commands queued on node 1"), || {
        let url = old_url.clone();
        async move { metric(&url, "basalt_consensus_batch_queued").await.is_some_and(|v| v >= want) }
    })
    .await;

    c.isolate(1).await;
    c.wait_for("node 2 leads", || async { c.status(2).await["state"] == "leader" }).await;
    c.heal().await;
    c.stall_disk(1, false).await;

    let mut revisions = Vec::new();
    while let Some(w) = tokio::time::timeout(Duration::from_secs(60), writes.join_next()).await.expect("writes finish")
    {
        revisions.push(w.unwrap().expect("every write is acknowledged"));
    }
    revisions.sort_unstable();
    revisions.dedup();
    assert_eq!(revisions.len(), 2 * EACH, "each write has its own revision");
    let mut reader = clients[1].clone();
    let all = reader.get("moved/", Some(GetOptions::new().with_prefix())).await.unwrap();
    assert_eq!(all.kvs().len(), 2 * EACH, "every write is applied");
    assert!(all.kvs().iter().all(|kv| kv.version() == 1), "and applied once");

    // A member that never campaigns is not made leader by a transfer either: refused, by name.
    let (s, b) =
        send(client().post(format!("{}/v1/cluster/transfer", c.url(2))).json(&serde_json::json!({"node_id": 3}))).await;
    assert_eq!(s, 409, "{b}");
    assert!(b["error"]["message"].as_str().is_some_and(|m| m.contains("stands_for_election")), "{b}");
    assert_eq!(c.status(2).await["state"], "leader", "node 2 still leads");
}

/// A progress notification's revision promises that every event at or below it is already on
/// the stream (Kubernetes' consistent reads from its watch cache rely on this). A follower's
/// watch is asked for progress right after each write the leader acknowledged: the write's
/// event must always arrive before the notification that covers it.
#[tokio::test]
async fn a_progress_notification_never_overtakes_the_events_it_covers() {
    let c = Cluster::start(EXE, 3).await;
    let leader = c.leader().await;
    let follower = (1..=3).find(|id| *id != leader).unwrap();
    let mut writer = connect(&etcd_addr(&c.url(leader)).await).await;
    let mut watcher = connect(&etcd_addr(&c.url(follower)).await).await;
    let mut stream = watcher.watch("prog/", Some(WatchOptions::new().with_prefix())).await.unwrap();
    let mut seen = 0;
    for i in 0..300 {
        let rev = writer.put(format!("prog/{}", i % 8), "v", None).await.unwrap().header().unwrap().revision();
        stream.request_progress().await.unwrap();
        loop {
            let r = tokio::time::timeout(Duration::from_secs(10), stream.message())
                .await
                .expect("the watch answers within 10 s")
                .unwrap()
                .expect("the watch stream stays open");
            if let Some(e) = r.events().last() {
                seen = e.kv().unwrap().mod_revision().max(seen);
                continue;
            }
            if r.created() {
                continue;
            }
            let at = r.header().unwrap().revision();
            assert!(at >= rev, "write {i}: progress at {at}, below the acknowledged write's revision {rev}");
            assert!(
                seen >= rev,
                "write {i} at revision {rev}: the progress notification (at {at}) came before its event (events \
                 seen up to {seen})"
            );
            break;
        }
    }
}
