//! S13 through real processes: a ring of Basalt nodes speaking the Redis protocol. A node
//! killed during writes loses no acknowledged write; a node that was down gets its hinted
//! writes; a wiped replica is rebuilt by anti-entropy; concurrent writers make siblings.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use basalt_resp::Frame;
use basalt_runtime::process::{NodeProcess, NodeSpec};
use common::*;

/// The runtime's RESP client, taking `&str` arguments.
struct Redis(basalt_runtime::redis::Redis);

impl Redis {
    async fn connect(addr: &str) -> std::io::Result<Self> {
        basalt_runtime::redis::Redis::connect(addr, Duration::from_secs(10)).await.map(Redis)
    }

    async fn cmd(&mut self, args: &[&str]) -> std::io::Result<Frame> {
        let a: Vec<&[u8]> = args.iter().map(|s| s.as_bytes()).collect();
        self.0.cmd(&a).await
    }
}

struct Ring {
    dir: tempfile::TempDir,
    nodes: Vec<Option<NodeProcess>>,
    specs: Vec<NodeSpec>,
}

/// The harness's ring-only settings, plus a short tombstone grace and fault injection.
fn ring_args() -> impl Iterator<Item = &'static str> {
    basalt_harness::cluster::RING_ONLY_ARGS.into_iter().chain([
        "--set",
        "engines.ring.tombstone_grace_ms=300",
        "--set",
        "fault_injection=true",
    ])
}

impl Ring {
    async fn start(n: usize) -> Self {
        Self::start_with(n, &[]).await
    }

    async fn start_with(n: usize, extra: &[&'static str]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut r = Ring { dir, nodes: Vec::new(), specs: Vec::new() };
        for id in 1..=n {
            let mut spec =
                NodeSpec::new(EXE, r.dir.path().join(format!("node-{id}"))).arg("--node-id").arg(id.to_string());
            for a in ring_args().chain(extra.iter().copied()) {
                spec = spec.arg(a);
            }
            if let Some(first) = r.nodes.first().and_then(|n| n.as_ref()) {
                spec = spec.arg("--join").arg(first.http_addr.clone());
            }
            r.specs.push(spec.clone());
            r.nodes.push(Some(NodeProcess::start(spec, START_TIMEOUT).await.unwrap()));
        }
        r.wait_alive(n).await;
        r
    }

    /// One more node, joining through node 1.
    async fn add(&mut self) -> usize {
        let id = self.nodes.len() + 1;
        let mut spec =
            NodeSpec::new(EXE, self.dir.path().join(format!("node-{id}"))).arg("--node-id").arg(id.to_string());
        for a in ring_args() {
            spec = spec.arg(a);
        }
        spec = spec.arg("--join").arg(self.nodes[0].as_ref().unwrap().http_addr.clone());
        self.specs.push(spec.clone());
        self.nodes.push(Some(NodeProcess::start(spec, START_TIMEOUT).await.unwrap()));
        id
    }

    fn url(&self, id: usize) -> String {
        self.nodes[id - 1].as_ref().unwrap().url()
    }

    fn live(&self) -> Vec<usize> {
        (1..=self.nodes.len()).filter(|i| self.nodes[i - 1].is_some()).collect()
    }

    async fn resp_addr(&self, id: usize) -> String {
        let (_, b) = send(client().get(format!("{}/v1/kv", self.url(id)))).await;
        b["resp_addr"].as_str().unwrap().to_string()
    }

    /// Every live node sees `n` live members.
    async fn wait_alive(&self, n: usize) {
        wait(&format!("{n} live ring members"), || async {
            let mut ok = true;
            for id in self.live() {
                let (_, b) = send(client().get(format!("{}/v1/ring", self.url(id)))).await;
                let alive = b["members"].as_array().map_or(0, |m| m.iter().filter(|x| x["alive"] == true).count());
                ok &= alive == n;
            }
            ok
        })
        .await;
    }

    fn kill9(&mut self, id: usize) {
        self.nodes[id - 1].take().unwrap().kill9().unwrap();
    }

    async fn restart(&mut self, id: usize) {
        let spec = self.specs[id - 1].clone();
        self.nodes[id - 1] = Some(NodeProcess::start(spec, START_TIMEOUT).await.unwrap());
    }

    async fn local_keys(&self, id: usize) -> BTreeSet<String> {
        use base64::Engine;
        let (_, b) = send(client().get(format!("{}/v1/kv/_local/keys", self.url(id)))).await;
        b.as_array()
            .into_iter()
            .flatten()
            .filter_map(|k| base64::engine::general_purpose::STANDARD.decode(k.as_str()?).ok())
            .map(|k| String::from_utf8(k).unwrap())
            .collect()
    }
}

use basalt_harness::wait_until as wait;

/// SET through a fresh connection to `addr`; true when acknowledged.
async fn set(addr: &str, k: &str, v: &str) -> bool {
    let Ok(mut c) = Redis::connect(addr).await else { return false };
    matches!(c.cmd(&["SET", k, v]).await, Ok(Frame::Simple(s)) if s == "OK")
}

async fn get(addr: &str, k: &str) -> Option<String> {
    let mut c = Redis::connect(addr).await.ok()?;
    match c.cmd(&["GET", k]).await.ok()? {
        Frame::Bulk(b) => Some(String::from_utf8(b.to_vec()).unwrap()),
        _ => None,
    }
}

#[tokio::test]
async fn no_acknowledged_write_is_lost_when_a_node_is_killed_and_it_is_rebuilt_after_a_wipe() {
    kill_and_wipe(&[]).await;
}

/// The same with the objects in memory and an append-only log (`engines.ring.storage`).
#[tokio::test]
async fn no_acknowledged_write_is_lost_when_a_node_is_killed_and_it_is_rebuilt_after_a_wipe_in_memory_mode() {
    kill_and_wipe(&["--set", "engines.ring.storage=\"memory\""]).await;
}

async fn kill_and_wipe(extra: &[&'static str]) {
    let mut r = Ring::start_with(3, extra).await;
    let mut addrs = BTreeMap::new();
    for id in 1..=3 {
        addrs.insert(id, r.resp_addr(id).await);
    }
    let mut acked = BTreeMap::new();
    for i in 0..90u32 {
        if i == 30 {
            r.kill9(2);
        }
        let via = r.live()[i as usize % r.live().len()];
        let (k, v) = (format!("k{}", i % 40), format!("v{i}"));
        if set(&addrs[&via], &k, &v).await {
            acked.insert(k, v);
        }
    }
    assert_eq!(acked.len(), 40, "with R=W=2 of N=3 every write succeeds while one node is down");
    // Every acknowledged write is read back, from either live node.
    for (k, v) in &acked {
        for id in r.live() {
            assert_eq!(get(&addrs[&id], k).await.as_deref(), Some(v.as_str()), "key {k} via node {id}");
        }
    }
    // The killed node comes back and anti-entropy gives it what it missed.
    r.restart(2).await;
    r.wait_alive(3).await;
    let want: BTreeSet<String> = acked.keys().cloned().collect();
    wait("node 2 to hold every key again", || async { r.local_keys(2).await == want }).await;
    let addr2 = r.resp_addr(2).await;
    for (k, v) in &acked {
        assert_eq!(get(&addr2, k).await.as_deref(), Some(v.as_str()));
    }

    // Node 3's data directory is wiped: it comes back empty, with a new actor id, and is rebuilt.
    let (_, before) = send(client().get(format!("{}/v1/ring", r.url(3)))).await;
    r.kill9(3);
    std::fs::remove_dir_all(r.dir.path().join("node-3")).unwrap();
    r.restart(3).await;
    let (_, after) = send(client().get(format!("{}/v1/ring", r.url(3)))).await;
    assert_ne!(before["actor"], after["actor"], "a wiped node never reuses its old dots");
    r.wait_alive(3).await;
    wait("the wiped node to be rebuilt", || async { r.local_keys(3).await == want }).await;
}

/// For each key, how many live nodes hold it locally.
async fn holders(r: &Ring) -> BTreeMap<String, usize> {
    let mut count: BTreeMap<String, usize> = BTreeMap::new();
    for id in r.live() {
        for k in r.local_keys(id).await {
            *count.entry(k).or_default() += 1;
        }
    }
    count
}

#[tokio::test]
async fn writes_while_a_replica_is_down_are_handed_to_it_and_leave_the_stand_in() {
    let mut r = Ring::start(4).await;
    let addr1 = r.resp_addr(1).await;
    r.kill9(4);
    r.wait_alive(3).await;
    let keys: Vec<String> = (0..60).map(|i| format!("h{i}")).collect();
    for k in &keys {
        assert!(set(&addr1, k, "x").await, "sloppy quorum: writes go on with a node down");
    }
    // Some writes were taken by a stand-in for node 4 (every key has 3 home replicas of 4).
    r.restart(4).await;
    r.wait_alive(4).await;
    // Eventually every key is on exactly N = 3 nodes: node 4 got its hints, the stand-ins let go.
    // (Right after the restart every key is on nodes 1-3 and node 4 is empty: also 3 each, so
    // wait for node 4 to hold its share first.)
    wait("each key on exactly its 3 home replicas", || async {
        let c = holders(&r).await;
        r.local_keys(4).await.len() > keys.len() / 2 && c.len() == keys.len() && c.values().all(|n| *n == 3)
    })
    .await;
    let mut handed = 0;
    for id in 1..=4 {
        let (_, b) = send(client().get(format!("{}/v1/ring", r.url(id)))).await;
        handed += b["repair"]["handed_off"].as_u64().unwrap();
    }
    assert!(handed > 0, "some writes went through a stand-in and were handed off");
}

#[tokio::test]
async fn concurrent_writers_make_siblings_and_a_write_that_saw_both_resolves_them() {
    let r = Ring::start(3).await;
    let put = |id: usize, body: &'static str, ctx: Option<String>| {
        let url = format!("{}/v1/kv/keys/cart", r.url(id));
        async move {
            let mut req = client().put(url).body(body);
            if let Some(c) = ctx {
                req = req.header("x-context", c);
            }
            send(req).await
        }
    };
    let (s, b) = put(1, "apple", None).await;
    assert_eq!(s, 200, "{b}");
    let ctx = b["context"].as_str().unwrap().to_string();
    // Two clients read the same version and write through different nodes.
    let (s1, _) = put(1, "apple,pear", Some(ctx.clone())).await;
    let (s2, _) = put(2, "apple,plum", Some(ctx)).await;
    assert_eq!((s1, s2), (200, 200));
    let (_, b) = send(client().get(format!("{}/v1/kv/keys/cart?r=3", r.url(3)))).await;
    let mut vals: Vec<String> =
        b["siblings"].as_array().unwrap().iter().map(|s| s["value"].as_str().unwrap().to_string()).collect();
    vals.sort();
    assert_eq!(vals, ["apple,pear", "apple,plum"], "neither write is lost: {b}");
    // The RESP view picks one deterministically (the later stamp).
    let got = get(&r.resp_addr(3).await, "cart").await.unwrap();
    assert!(vals.contains(&got));
    // A client that read both writes the merge; one value remains.
    let (s, b) = put(3, "apple,pear,plum", Some(b["context"].as_str().unwrap().to_string())).await;
    assert_eq!(s, 200, "{b}");
    let (_, b) = send(client().get(format!("{}/v1/kv/keys/cart?r=3", r.url(1)))).await;
    assert_eq!(b["siblings"].as_array().unwrap().len(), 1, "{b}");
    assert_eq!(b["siblings"][0]["value"], "apple,pear,plum");
    // Bad quorums and contexts are refused clearly.
    let (s, b) = send(client().get(format!("{}/v1/kv/keys/cart?r=9", r.url(1)))).await;
    assert_eq!((s, b["error"]["code"].as_str()), (400, Some("invalid_quorum")), "{b}");
    let (s, b) = send(client().put(format!("{}/v1/kv/keys/cart", r.url(1))).header("x-context", "%%%").body("x")).await;
    assert_eq!((s, b["error"]["code"].as_str()), (400, Some("invalid_context")), "{b}");
}

/// A node joins and another leaves while writes go on: every acknowledged key stays readable,
/// and in the end each key sits on exactly its three home replicas — none on the node that left.
#[tokio::test]
async fn a_node_joins_and_another_leaves_under_load() {
    let mut r = Ring::start(3).await;
    let addr1 = r.resp_addr(1).await;
    let mut acked = BTreeMap::new();
    for i in 0..160u32 {
        if i == 40 {
            let id = r.add().await;
            assert_eq!(id, 4);
            r.wait_alive(4).await;
        }
        if i == 100 {
            let (s, b) = send(client().post(format!("{}/v1/ring/leave", r.url(2)))).await;
            assert_eq!(s, 200, "{b}");
        }
        let (k, v) = (format!("m{}", i % 70), format!("v{i}"));
        if set(&addr1, &k, &v).await {
            acked.insert(k, v);
        }
    }
    assert_eq!(acked.len(), 70, "every write succeeds through a join and a leave");
    let addr4 = r.resp_addr(4).await;
    for (k, v) in &acked {
        assert_eq!(get(&addr1, k).await.as_deref(), Some(v.as_str()), "{k} via node 1");
        assert_eq!(get(&addr4, k).await.as_deref(), Some(v.as_str()), "{k} via node 4");
    }
    wait("every key on exactly 3 nodes, none on the node that left", || async {
        let c = holders(&r).await;
        let on_2 = r.local_keys(2).await;
        c.len() == acked.len() && on_2.is_empty() && c.values().all(|n| *n == 3)
    })
    .await;
}

async fn ring_status(r: &Ring, id: usize) -> serde_json::Value {
    send(client().get(format!("{}/v1/ring", r.url(id)))).await.1
}

/// A deleted key's tombstone is collected only when every member holds it (or nothing): while
/// a node that still has the old value is paused, nothing is collected; once it is back and
/// has the tombstone, the key disappears from every replica — and stays deleted.
#[tokio::test]
async fn tombstones_are_collected_only_when_every_member_has_them() {
    let r = Ring::start(3).await;
    let addr1 = r.resp_addr(1).await;
    // A key whose deciding replica (the first home replica) is not the node we pause.
    let mut gone = String::new();
    for i in 0.. {
        gone = format!("gone{i}");
        let (_, p) = send(client().get(format!("{}/v1/ring/placement/{gone}", r.url(1)))).await;
        if p["home"][0] != 3 {
            break;
        }
    }
    let gone = gone.as_str();
    assert!(set(&addr1, gone, "old").await && set(&addr1, "kept", "v").await);
    for id in 1..=3 {
        wait("both keys on every replica", || async { ring_status(&r, id).await["stored_objects"] == 2 }).await;
    }
    r.nodes[2].as_ref().unwrap().pause().unwrap();
    let mut c = Redis::connect(&addr1).await.unwrap();
    assert_eq!(c.cmd(&["DEL", gone]).await.unwrap(), Frame::Integer(1));
    assert_eq!(get(&addr1, gone).await, None);
    // The decider finds the tombstone due, twice, and is blocked by node 3 both times…
    let (_, p) = send(client().get(format!("{}/v1/ring/placement/{gone}", r.url(1)))).await;
    let decider = p["home"][0].as_u64().unwrap() as usize;
    let blocked = |v: serde_json::Value| v["repair"]["tombstones_blocked"].as_u64().unwrap_or(0);
    wait("two blocked collection rounds", || async { blocked(ring_status(&r, decider).await) >= 2 }).await;
    // …so the tombstone is still there on the nodes that are up.
    for id in [1, 2] {
        assert_eq!(ring_status(&r, id).await["stored_objects"], 2, "node {id} collected too early");
    }
    r.nodes[2].as_ref().unwrap().resume().unwrap();
    for id in 1..=3 {
        wait("the tombstone collected everywhere", || async { ring_status(&r, id).await["stored_objects"] == 1 }).await;
    }
    let mut collected = 0;
    for id in 1..=3 {
        collected += ring_status(&r, id).await["repair"]["tombstones_collected"].as_u64().unwrap();
    }
    assert!(collected >= 1);
    // The old value never comes back, and the other key is untouched.
    for id in 1..=3 {
        let a = r.resp_addr(id).await;
        assert_eq!(get(&a, gone).await, None, "node {id}");
        assert_eq!(get(&a, "kept").await.as_deref(), Some("v"));
    }
}

/// Namespaces choose their own quorums: `strict:` keys need all three replicas, `cache:` keys
/// one; other keys the ring's R=W=2.
#[tokio::test]
async fn namespaces_have_their_own_quorums() {
    let extra = [
        "--set",
        "systems.kv.namespaces.strict.r=1",
        "--set",
        "systems.kv.namespaces.strict.w=3",
        "--set",
        "systems.kv.namespaces.cache.r=1",
        "--set",
        "systems.kv.namespaces.cache.w=1",
    ];
    let mut r = Ring::start_with(3, &extra).await;
    let addr1 = r.resp_addr(1).await;
    assert!(set(&addr1, "strict:a", "1").await, "all three up: a strict write succeeds");
    r.kill9(3);
    r.wait_alive(2).await;
    let mut c = Redis::connect(&addr1).await.unwrap();
    match c.cmd(&["SET", "strict:b", "1"]).await.unwrap() {
        Frame::Error(e) => assert!(e.starts_with("CLUSTERDOWN") && e.contains("needed 3"), "{e}"),
        other => panic!("a strict write with a replica down must fail: {other:?}"),
    }
    assert!(set(&addr1, "plain", "1").await, "W=2 of 3 with one down");
    assert_eq!(get(&addr1, "strict:a").await.as_deref(), Some("1"), "R=1");
    r.kill9(2);
    r.wait_alive(1).await;
    assert!(set(&addr1, "cache:x", "1").await, "W=1 with two down");
    assert_eq!(get(&addr1, "cache:x").await.as_deref(), Some("1"));
    match c.cmd(&["GET", "plain"]).await.unwrap() {
        Frame::Error(e) => assert!(e.starts_with("CLUSTERDOWN"), "{e}"),
        other => panic!("R=2 with two down must fail: {other:?}"),
    }
}

/// INCR through every node at once — and with the first home replica cut off from another
/// node, so two replicas coordinate increments of the same key concurrently: every increment
/// counts, on every node.
#[tokio::test]
async fn concurrent_increments_through_different_coordinators_all_count() {
    let r = Ring::start(3).await;
    let (_, p) = send(client().get(format!("{}/v1/ring/placement/hits", r.url(1)))).await;
    let home: Vec<usize> = p["home"].as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as usize).collect();
    // The second home replica cannot reach the first: it coordinates increments itself, while
    // the first coordinates those sent to it and to the third node.
    for (me, other) in [(home[0], home[1]), (home[1], home[0])] {
        let body = serde_json::json!({"peers": {other.to_string(): {"drop_out": true, "drop_in": true}}});
        let (s, b) = send(client().put(format!("{}/v1/node/faults", r.url(me))).json(&body)).await;
        assert_eq!(s, 200, "{b}");
    }
    let mut tasks = Vec::new();
    for id in 1..=3 {
        let addr = r.resp_addr(id).await;
        tasks.push(tokio::spawn(async move {
            let mut c = Redis::connect(&addr).await.unwrap();
            let mut acked = 0;
            for _ in 0..40 {
                if matches!(c.cmd(&["INCR", "hits"]).await.unwrap(), Frame::Integer(_)) {
                    acked += 1;
                }
            }
            acked
        }));
    }
    let mut acked = 0;
    for t in tasks {
        acked += t.await.unwrap();
    }
    assert_eq!(acked, 120, "W=2 is reachable from every node");
    for id in 1..=3 {
        let (s, b) =
            send(client().put(format!("{}/v1/node/faults", r.url(id))).json(&serde_json::json!({"peers": {}}))).await;
        assert_eq!(s, 200, "{b}");
    }
    for id in 1..=3 {
        let addr = r.resp_addr(id).await;
        wait("every increment counted", || async { get(&addr, "hits").await.as_deref() == Some("120") }).await;
    }
}
