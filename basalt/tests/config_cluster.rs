//! S02 + S03 through real processes: a 3-node cluster loses its leader to `kill -9` in the
//! middle of a stream of writes, a partitioned node catches up by itself, every node restarts,
//! a node joins and another leaves under load — and no acknowledged change is ever lost, no
//! node diverges.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use basalt_harness::cluster::Cluster;
use common::*;

async fn create_ns(url: &str, ns: &str) {
    let (s, b) = send(client().put(format!("{url}/v1/config/ns/{ns}"))).await;
    assert_eq!(s, 201, "{b}");
}

/// Put `key = {"n": n}`; Some(version) when acknowledged, None when the outcome is unknown or
/// refused (no leader).
async fn put(url: &str, ns: &str, key: &str, n: u64) -> Option<u64> {
    let r = client()
        .put(format!("{url}/v1/config/ns/{ns}/keys/{key}"))
        .header("content-type", "application/json")
        .body(format!("{{\"n\": {n}}}"))
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .ok()?;
    if !r.status().is_success() {
        return None;
    }
    r.json::<serde_json::Value>().await.ok()?["version"].as_u64()
}

async fn read_all(url: &str, ns: &str, consistency: &str) -> Option<(u64, String, BTreeMap<String, u64>)> {
    let (s, b) = send(client().get(format!("{url}/v1/config/ns/{ns}/keys?consistency={consistency}"))).await;
    if s != 200 {
        return None;
    }
    let keys = b["keys"]
        .as_array()?
        .iter()
        .map(|k| (k["key"].as_str().unwrap().to_string(), k["value"]["n"].as_u64().unwrap()))
        .collect();
    Some((b["version"].as_u64()?, b["content_hash"].as_str()?.to_string(), keys))
}

/// Every live node reaches the same version and content hash, and it holds every
/// acknowledged write.
async fn assert_converged(c: &Cluster, ns: &str, acked: &BTreeMap<String, u64>) {
    let leader = c.leader().await;
    let (version, hash, keys) = read_all(&c.url(leader), ns, "linearizable").await.expect("linearizable read");
    for (k, n) in acked {
        assert_eq!(keys.get(k), Some(n), "acknowledged write {k}={n} lost");
    }
    for id in c.live() {
        let url = c.url(id);
        let (v, h) = (version, hash.clone());
        c.wait_for(&format!("node {id} to converge to version {v}"), || {
            let (url, h) = (url.clone(), h.clone());
            async move { read_all(&url, ns, "stale").await.is_some_and(|(vv, hh, _)| vv == v && hh == h) }
        })
        .await;
    }
}

#[tokio::test]
async fn leader_killed_during_writes_loses_nothing_acknowledged() {
    let mut c = Cluster::start(EXE, 3).await;
    create_ns(&c.url(1), "app").await;
    let mut acked = BTreeMap::new();
    let mut killed = None;
    for i in 0..60u64 {
        if i == 20 {
            let leader = c.leader().await;
            c.kill9(leader);
            killed = Some(leader);
        }
        let live = c.live();
        let via = live[i as usize % live.len()];
        let key = format!("k{}", i % 10);
        if put(&c.url(via), "app", &key, i).await.is_some() {
            acked.insert(key, i);
        }
    }
    assert!(acked.len() >= 8, "most writes should succeed, got {acked:?}");
    c.restart(killed.unwrap()).await;
    assert_converged(&c, "app", &acked).await;
}

#[tokio::test]
async fn partitioned_node_catches_up_by_itself() {
    let c = Cluster::start(EXE, 3).await;
    create_ns(&c.url(1), "p").await;
    let leader = c.leader().await;
    let victim = (1..=3).find(|id| *id != leader).unwrap();
    c.isolate(victim).await;
    let mut acked = BTreeMap::new();
    for i in 0..20u64 {
        if put(&c.url(leader), "p", &format!("k{i}"), i).await.is_some() {
            acked.insert(format!("k{i}"), i);
        }
    }
    assert_eq!(acked.len(), 20, "a majority is up: every write succeeds");
    // The isolated node cannot serve a linearizable read…
    let (s, _) =
        send(client().get(format!("{}/v1/config/ns/p/keys", c.url(victim))).timeout(Duration::from_secs(15))).await;
    assert_eq!(s, 503, "an isolated node must not answer a linearizable read");
    let state_of = |v: &serde_json::Value, id: usize| {
        v["replicas"].as_array().unwrap().iter().find(|r| r["node_id"] == id as u64).unwrap()["state"].clone()
    };
    let (_, regions) = send(client().get(format!("{}/v1/config/regions", c.url(leader)))).await;
    assert_eq!(state_of(&regions, victim), "lagging", "{regions}");
    assert_eq!(state_of(&regions, leader), "in_sync", "{regions}");
    c.heal().await;
    assert_converged(&c, "p", &acked).await;
    let (_, regions) = send(client().get(format!("{}/v1/config/regions", c.url(leader)))).await;
    for id in 1..=3 {
        assert_eq!(state_of(&regions, id), "in_sync", "{regions}");
    }
}

#[tokio::test]
async fn every_node_restarted_keeps_its_state() {
    let mut c = Cluster::start(EXE, 3).await;
    create_ns(&c.url(1), "r").await;
    let mut acked = BTreeMap::new();
    for i in 0..15u64 {
        let v = put(&c.url(1 + (i as usize % 3)), "r", &format!("k{i}"), i).await;
        assert!(v.is_some(), "write {i}");
        acked.insert(format!("k{i}"), i);
    }
    for id in 1..=3 {
        c.kill9(id);
    }
    for id in 1..=3 {
        c.restart(id).await;
    }
    assert_converged(&c, "r", &acked).await;
}

/// Snapshots every 20 entries, 5 kept behind each: a follower killed while 150 writes commit
/// comes back behind the leader's purged log, so it can only catch up from a snapshot the
/// leader sends; then every node is killed and restarted and rebuilds the same state from its
/// own snapshot and the log after it.
#[tokio::test]
async fn a_follower_behind_the_purged_log_catches_up_from_a_snapshot() {
    let settings = ["engines.consensus.snapshot_every_entries=20", "engines.consensus.log_kept_behind_snapshot=5"];
    let args = settings.iter().flat_map(|s| ["--set".to_string(), s.to_string()]).collect();
    let mut c = Cluster::start_with_args(EXE, 3, args).await;
    create_ns(&c.url(1), "snap").await;
    let leader = c.leader().await;
    let behind = c.live().into_iter().find(|id| *id != leader).unwrap();
    let had = c.status(behind).await["last_log_index"].as_u64().unwrap_or(0);
    c.kill9(behind);
    let mut acked = BTreeMap::new();
    for i in 0..150u64 {
        let key = format!("k{}", i % 40);
        assert!(put(&c.url(leader), "snap", &key, i).await.is_some(), "write {i}");
        acked.insert(key, i);
    }
    let snapshot = c.status(leader).await["snapshot_index"].as_u64().unwrap_or(0);
    assert!(snapshot > had + 5 + 20, "the leader's log before {snapshot} is purged; the follower has up to {had}");
    c.restart(behind).await;
    assert_converged(&c, "snap", &acked).await;
    c.wait_for("the follower to hold a snapshot", || {
        let url = c.url(behind);
        async move {
            let s: serde_json::Value = send(client().get(format!("{url}/v1/cluster"))).await.1;
            s["snapshot_index"].as_u64().is_some_and(|i| i >= snapshot)
        }
    })
    .await;
    for id in 1..=3 {
        c.kill9(id);
    }
    for id in 1..=3 {
        c.restart(id).await;
    }
    assert_converged(&c, "snap", &acked).await;
}

#[tokio::test]
async fn a_node_joins_and_another_leaves_under_load() {
    let mut c = Cluster::start(EXE, 3).await;
    create_ns(&c.url(1), "m").await;
    let mut acked = BTreeMap::new();
    for i in 0..40u64 {
        if i == 10 {
            let id = c.add_node().await;
            assert_eq!(id, 4);
            c.wait_voters(4).await;
        }
        if i == 25 {
            let leader = c.leader().await;
            let gone = (1..=4).find(|id| *id != leader).unwrap();
            let (s, b) = send(client().delete(format!("{}/v1/cluster/members/{gone}", c.url(leader)))).await;
            assert_eq!(s, 200, "{b}");
            c.kill9(gone);
            c.wait_voters(3).await;
        }
        let live = c.live();
        if let Some(v) = put(&c.url(live[i as usize % live.len()]), "m", &format!("k{}", i % 7), i).await {
            assert!(v > 0);
            acked.insert(format!("k{}", i % 7), i);
        }
    }
    assert!(acked.len() >= 5);
    assert_converged(&c, "m", &acked).await;
}

#[tokio::test]
async fn cluster_cli_reports_and_transfers_leadership() {
    let c = Cluster::start(EXE, 3).await;
    let leader = c.leader().await;
    let target = (1..=3).find(|id| *id != leader).unwrap();
    let out = std::process::Command::new(EXE)
        .args(["cluster", "transfer", "--url", &c.url(leader), &target.to_string()])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(c.leader().await, target);
    let out = std::process::Command::new(EXE).args(["cluster", "status", "--url", &c.url(1)]).output().unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["leader_id"], target as u64);
    assert_eq!(v["members"].as_array().unwrap().len(), 3);
    let bad = std::process::Command::new(EXE).args(["cluster", "promote", "--url", &c.url(1), "42"]).output().unwrap();
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("42"));
}

/// An edge replica follows the cluster by push, refuses writes, comes back after `kill -9`
/// with a snapshot, repairs a gap left by lost pushes, and follows another member when its own
/// dies — all by itself.
#[tokio::test]
async fn edge_replica_follows_resyncs_and_repairs_gaps() {
    let mut c = Cluster::start(EXE, 3).await;
    let leader = c.leader().await;
    let lurl = c.url(leader);
    create_ns(&lurl, "e").await;
    let mut acked = BTreeMap::new();
    for i in 0..5u64 {
        assert!(put(&lurl, "e", &format!("k{i}"), i).await.is_some());
        acked.insert(format!("k{i}"), i);
    }
    let dir = tempfile::tempdir().unwrap();
    let edge_spec = basalt_runtime::process::NodeSpec::new(EXE, dir.path().join("edge"))
        .arg("--node-id")
        .arg("9")
        .arg("--set")
        .arg("engines.consensus.enabled=false")
        .arg("--set")
        .arg(format!("systems.config.edge_of=\"{}\"", lurl.trim_start_matches("http://")))
        .arg("--set")
        .arg("systems.config.region=\"edge-x\"");
    let mut edge = basalt_runtime::process::NodeProcess::start(edge_spec.clone(), START_TIMEOUT).await.unwrap();

    async fn converged(leader: &str, edge: &str) -> bool {
        let (Some(a), Some(b)) = (read_all(leader, "e", "stale").await, read_all(edge, "e", "stale").await) else {
            return false;
        };
        a.0 == b.0 && a.1 == b.1
    }
    let wait = |edge_url: String| {
        let lurl = lurl.clone();
        async move {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
            while !converged(&lurl, &edge_url).await {
                assert!(tokio::time::Instant::now() < deadline, "the edge did not converge");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    wait(edge.url()).await;
    for i in 5..10u64 {
        assert!(put(&lurl, "e", &format!("k{i}"), i).await.is_some());
    }
    wait(edge.url()).await;

    // Writes go to the cluster, not to an edge.
    let (s, b) = send(
        client()
            .put(format!("{}/v1/config/ns/e/keys/x", edge.url()))
            .header("content-type", "application/json")
            .body("1"),
    )
    .await;
    assert_eq!((s, b["error"]["code"].as_str()), (403, Some("read_only_replica")), "{b}");
    // Pushes arrive on the peer listener only: a client cannot inject entries into an edge.
    let (s, _) = send(client().post(format!("{}/v1/config/edge/push", edge.url())).body(vec![0u8, 1, 0])).await;
    assert_eq!(s, 404);

    // The regions view lists the edge.
    let (_, regions) = send(client().get(format!("{lurl}/v1/config/regions"))).await;
    let e = regions["replicas"].as_array().unwrap().iter().find(|r| r["node_id"] == 9).cloned().expect("edge listed");
    assert_eq!((e["region"].as_str(), e["state"].as_str()), (Some("edge-x"), Some("in_sync")), "{regions}");

    // Lost pushes: the gap is noticed and repaired from a snapshot, without help.
    let (s, _) = send(
        client().put(format!("{lurl}/v1/node/faults")).json(&serde_json::json!({"peers": {"9": {"drop_out": true}}})),
    )
    .await;
    assert_eq!(s, 200);
    for i in 10..13u64 {
        assert!(put(&lurl, "e", &format!("k{i}"), i).await.is_some());
    }
    let (s, _) = send(client().put(format!("{lurl}/v1/node/faults")).json(&serde_json::json!({"peers": {}}))).await;
    assert_eq!(s, 200);
    assert!(put(&lurl, "e", "k13", 13).await.is_some());
    wait(edge.url()).await;

    // Killed and restarted, it comes back with the whole state.
    edge.kill9().unwrap();
    for i in 14..16u64 {
        assert!(put(&lurl, "e", &format!("k{i}"), i).await.is_some());
    }
    let edge = basalt_runtime::process::NodeProcess::start(edge_spec, START_TIMEOUT).await.unwrap();
    wait(edge.url()).await;
    let (_, _, keys) = read_all(&edge.url(), "e", "stale").await.unwrap();
    assert_eq!(keys.len(), 16);

    // The member it follows dies: it moves to another member and keeps up.
    c.kill9(leader);
    let next = c.leader().await;
    let nurl = c.url(next);
    for i in 16..18u64 {
        assert!(put(&nurl, "e", &format!("k{i}"), i).await.is_some());
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !converged(&nurl, &edge.url()).await {
        assert!(tokio::time::Instant::now() < deadline, "the edge did not follow another member");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(read_all(&edge.url(), "e", "stale").await.unwrap().2.len(), 18);
}

/// A replica whose content goes wrong without a version change (fault injection: a key
/// overwritten in one replica only) shows as `divergent` in the regions view and is repaired by
/// itself — a follower while writes go on, then the leader (outvoted by the others), then an
/// edge replica — and nothing acknowledged is lost.
#[tokio::test]
async fn a_divergent_replica_is_found_and_repaired_by_itself() {
    let c = Cluster::start(EXE, 3).await;
    let leader = c.leader().await;
    let lurl = c.url(leader);
    create_ns(&lurl, "d").await;
    let mut acked = BTreeMap::new();
    for i in 0..5u64 {
        assert!(put(&lurl, "d", &format!("k{i}"), i).await.is_some());
        acked.insert(format!("k{i}"), i);
    }
    let corrupt = |url: String, pause_ms: u64| async move {
        let body = serde_json::json!({"namespace": "d", "key": "k1", "value": {"n": 666}, "pause_repair_ms": pause_ms});
        let (s, b) = send(client().post(format!("{url}/v1/config/local/corrupt")).json(&body)).await;
        assert_eq!(s, 200, "{b}");
    };
    let repairs =
        |url: String| async move { send(client().get(format!("{url}/v1/config/local"))).await.1["repairs"].as_u64() };
    let state_of = |v: &serde_json::Value, id: u64| {
        v["replicas"].as_array().unwrap().iter().find(|r| r["node_id"] == id).unwrap()["state"].clone()
    };

    // A follower goes wrong; the regions view says so while its repairs are held back. Every
    // replica has applied every write first: a replica still behind shows as `lagging`.
    assert_converged(&c, "d", &acked).await;
    let f = (1..=3).find(|id| *id != leader).unwrap();
    corrupt(c.url(f), 5_000).await;
    let (_, regions) = send(client().get(format!("{lurl}/v1/config/regions"))).await;
    assert_eq!(state_of(&regions, f as u64), "divergent", "{regions}");
    assert_eq!(state_of(&regions, leader as u64), "in_sync", "{regions}");
    // Writes go on while it repairs itself.
    let mut i = 5;
    let furl = c.url(f);
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(60);
    while repairs(furl.clone()).await != Some(1) {
        if put(&lurl, "d", &format!("w{}", i % 4), i).await.is_some() {
            acked.insert(format!("w{}", i % 4), i);
        }
        i += 1;
        assert!(tokio::time::Instant::now() < deadline, "the follower was not repaired within 60 s");
    }
    assert_converged(&c, "d", &acked).await;

    // The leader goes wrong: the two others outvote it.
    corrupt(lurl.clone(), 0).await;
    c.wait_for("the leader to repair itself", || {
        let u = lurl.clone();
        async move { repairs(u).await == Some(1) }
    })
    .await;
    assert_converged(&c, "d", &acked).await;

    // An edge replica goes wrong: the member it follows sets it right.
    let dir = tempfile::tempdir().unwrap();
    let spec = basalt_runtime::process::NodeSpec::new(EXE, dir.path().join("edge"))
        .arg("--node-id")
        .arg("9")
        .arg("--set")
        .arg("engines.consensus.enabled=false")
        .arg("--set")
        .arg("fault_injection=true")
        .arg("--set")
        .arg(format!("systems.config.edge_of=\"{}\"", lurl.trim_start_matches("http://")));
    let edge = basalt_runtime::process::NodeProcess::start(spec, START_TIMEOUT).await.unwrap();
    let eurl = edge.url();
    let (lv, lh, _) = read_all(&lurl, "d", "stale").await.unwrap();
    c.wait_for("the edge to sync", || {
        let (u, lh) = (eurl.clone(), lh.clone());
        async move { read_all(&u, "d", "stale").await.is_some_and(|(v, h, _)| v == lv && h == lh) }
    })
    .await;
    corrupt(eurl.clone(), 0).await;
    c.wait_for("the edge to repair itself", || {
        let (u, lh) = (eurl.clone(), lh.clone());
        async move {
            repairs(u.clone()).await == Some(1) && read_all(&u, "d", "stale").await.is_some_and(|(_, h, _)| h == lh)
        }
    })
    .await;
    let (_, _, keys) = read_all(&eurl, "d", "stale").await.unwrap();
    assert_eq!(keys.get("k1"), Some(&1));
}

/// Three nodes with namespace `d`: the cluster, its leader and the two followers.
async fn three_nodes_with_a_namespace() -> (Cluster, usize, Vec<usize>) {
    let c = Cluster::start(EXE, 3).await;
    create_ns(&c.url(1), "d").await;
    let leader = c.leader().await;
    let followers = (1..=3).filter(|id| *id != leader).collect();
    (c, leader, followers)
}

/// Wait until the leader has entries after `before` and has seen every follower acknowledge
/// (so hold on its disk) all of them.
async fn followers_hold_entries_after(c: &Cluster, leader: usize, before: u64) {
    let leader_url = c.url(leader);
    // The leader's log must also have stopped growing for half a second: another entry (a
    // member's start-up registration, say) can pass `before` while the test's own write is
    // still on its way, and the test would go on without it.
    let seen = std::sync::Mutex::new((0u64, Instant::now()));
    c.wait_for("both followers to acknowledge the entry, and the log to settle", || {
        let (url, seen) = (leader_url.clone(), &seen);
        async move {
            let Ok(r) = client().get(format!("{url}/v1/cluster")).send().await else { return false };
            let Ok(s) = r.json::<serde_json::Value>().await else { return false };
            let last = s["last_log_index"].as_u64().unwrap_or(0);
            let held = last > before
                && s["members"].as_array().is_some_and(|m| {
                    m.iter()
                        .filter(|x| x["node_id"] != leader as u64)
                        .all(|x| x["matched_index"].as_u64() >= Some(last))
                });
            let mut seen = seen.lock().unwrap();
            if seen.0 != last {
                *seen = (last, Instant::now());
            }
            held && seen.1.elapsed() >= Duration::from_millis(500)
        }
    })
    .await;
}

fn index_of(v: &serde_json::Value, key: &str) -> u64 {
    v[key].as_u64().unwrap_or_else(|| panic!("no {key} in {v}"))
}

/// The leader sends its entries on while its own fsync runs, but nothing is acknowledged to a
/// client, and no follower applies it, before the leader's copy is on disk: with the leader's
/// disk stalled, both followers hold the write on their disks and still nobody applies it.
#[tokio::test]
async fn nothing_is_acknowledged_or_applied_before_the_leaders_own_copy_is_on_disk() {
    let (c, leader, followers) = three_nodes_with_a_namespace().await;
    let before = index_of(&c.status(leader).await, "last_log_index");

    c.stall_disk(leader, true).await;
    let write = tokio::spawn({
        let url = c.url(leader);
        async move { put(&url, "d", "k", 7).await }
    });
    // The entry reaches both followers' disks (the leader saw them acknowledge it)…
    followers_hold_entries_after(&c, leader, before).await;
    let target = index_of(&c.status(leader).await, "last_log_index");
    // …yet while the leader's own copy is not on disk nobody applies it and the client waits.
    for f in &followers {
        let s = c.status(*f).await;
        assert!(index_of(&s, "applied_index") < target, "follower {f} applied before the leader's fsync: {s}");
    }
    assert!(index_of(&c.status(leader).await, "applied_index") < target, "the leader applied before its fsync");
    assert!(!write.is_finished(), "the write was acknowledged before the leader's copy was on disk");

    c.stall_disk(leader, false).await;
    let version = write.await.unwrap();
    assert!(version.is_some(), "the write is acknowledged once the leader's disk catches up");
    let cr = &c;
    for f in followers {
        c.wait_for(&format!("follower {f} to apply the write"), || async move {
            cr.status(f).await["applied_index"].as_u64() >= Some(target)
        })
        .await;
    }
}

/// A follower acknowledges an entry only once it is on its own disk: with both followers' disks
/// stalled the entry reaches them, yet the leader counts no follower as holding it, applies
/// nothing and does not answer the client; one follower's disk coming back is enough.
#[tokio::test]
async fn a_follower_acknowledges_an_entry_only_once_it_is_on_its_disk() {
    let (c, leader, followers) = three_nodes_with_a_namespace().await;
    let before = index_of(&c.status(leader).await, "last_log_index");

    for f in &followers {
        c.stall_disk(*f, true).await;
    }
    let write = tokio::spawn({
        let url = c.url(leader);
        async move { put(&url, "d", "k", 7).await }
    });
    let cr = &c;
    for f in followers.iter().copied() {
        // The entry is written on the follower, which now waits for its disk.
        c.wait_for(&format!("follower {f} to wait for its disk"), || async move {
            cr.disk(f).await["syncs_waiting"].as_u64() > Some(0)
        })
        .await;
    }
    let s = c.status(leader).await;
    let target = index_of(&s, "last_log_index");
    assert!(target > before, "the leader holds the entry: {s}");
    let matched: Vec<u64> = s["members"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|x| x["node_id"] != leader as u64)
        .map(|x| x["matched_index"].as_u64().unwrap_or(0))
        .collect();
    assert!(matched.iter().all(|m| *m < target), "a follower acknowledged an entry not on its disk: {s}");
    assert!(index_of(&s, "applied_index") < target, "the leader applied without a follower's durable copy: {s}");
    assert!(!write.is_finished(), "the write was acknowledged with no follower's copy on disk");

    c.stall_disk(followers[0], false).await;
    assert!(write.await.unwrap().is_some(), "one follower's disk is enough for the write");
    c.stall_disk(followers[1], false).await;
    let f = followers[1];
    c.wait_for(&format!("follower {f} to apply the write"), || async move {
        cr.status(f).await["applied_index"].as_u64() >= Some(target)
    })
    .await;
}

/// A leader that loses power while its own copy of an entry is not yet on disk (the followers
/// hold theirs) restarts without that entry. Were it to lead on in its old term, its next entry would
/// take the lost one's log id; the followers, already holding an entry under that id, would keep
/// theirs, and the replicas would diverge. It restarts as a follower instead: a member with the
/// whole log leads, the entry is kept (it was committed), and every node converges.
#[tokio::test]
async fn a_leader_restarted_without_its_unsynced_entries_does_not_lead_on_in_its_old_term() {
    // Node 1 bootstraps and leads; node 2 never campaigns and node 3 only after 4 s of silence,
    // so the restarted node 1 is back before anyone else campaigns.
    let mut c = Cluster::start_with(EXE, 3, |id| {
        let set = |kv: &str| vec!["--set".to_string(), kv.to_string()];
        let mut args = Vec::new();
        match id {
            2 => args.extend(set("engines.consensus.stands_for_election=false")),
            3 => {
                args.extend(set("engines.consensus.election_timeout_min_ms=4000"));
                args.extend(set("engines.consensus.election_timeout_max_ms=4500"));
            }
            _ => {}
        }
        args
    })
    .await;
    assert_eq!(c.leader().await, 1, "node 1 bootstraps and leads");
    create_ns(&c.url(1), "d").await;
    let before = index_of(&c.status(1).await, "last_log_index");

    c.stall_disk(1, true).await;
    c.image_disk(1).unwrap();
    let write = tokio::spawn({
        let url = c.url(1);
        async move { put(&url, "d", "unsynced", 1).await }
    });
    followers_hold_entries_after(&c, 1, before).await;
    let target = index_of(&c.status(1).await, "last_log_index");
    // Node 1 loses power: its disk holds what it held when it stalled.
    c.kill9(1);
    assert_eq!(write.await.unwrap(), None, "not acknowledged: the leader's copy never reached its disk");
    c.revert_disk(1).unwrap();
    // It comes back not campaigning, so node 3 — whose log is whole — is the one that can lead
    // next (were node 1 to campaign, its shorter log could never win and its ever higher terms
    // would keep unseating the slow node 3). openraft restores a leader regardless.
    c.restart_with(1, &["--set", "engines.consensus.stands_for_election=false"]).await;
    assert!(
        index_of(&c.status(1).await, "last_log_index") < target,
        "the restarted leader lost its unsynced entry {target} (else this test shows nothing)"
    );

    let leader = c.leader().await;
    let url = c.url(leader);
    c.wait_for("a write after the restart to be acknowledged", || async { put(&url, "d", "after", 2).await.is_some() })
        .await;
    assert_converged(&c, "d", &BTreeMap::from([("after".to_string(), 2)])).await;
    let (_, _, keys) = read_all(&c.url(leader), "d", "linearizable").await.expect("a linearizable read");
    assert_eq!(keys.get("unsynced"), Some(&1), "the entry the followers held was committed: it is kept");
}
