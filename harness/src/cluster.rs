//! A real N-node cluster on loopback for end-to-end and fault tests: node 1 bootstraps, the
//! others join; nodes can be killed, restarted on the same data and ports, paused, isolated.

use std::time::Duration;

use basalt_runtime::process::{NodeProcess, NodeSpec};

use crate::{START_TIMEOUT, client, send};

pub type NodeArgs = std::sync::Arc<dyn Fn(usize) -> Vec<String> + Send + Sync>;

pub struct Cluster {
    exe: std::path::PathBuf,
    pub dir: tempfile::TempDir,
    pub nodes: Vec<Option<NodeProcess>>,
    /// Each node's spec, kept so a killed node restarts on the same data and ports.
    specs: Vec<NodeSpec>,
    /// Extra arguments for node `id` (e.g. its region).
    node_args: NodeArgs,
    /// Which engine holds the cluster together: Raft (the default) or the ring alone.
    pub ring_only: bool,
}

/// The settings a ring-only node runs with in the harness: no Raft, no config system, and
/// fast gossip and repair so faults are noticed and healed within a test's time.
pub const RING_ONLY_ARGS: [&str; 12] = [
    "--set",
    "engines.consensus.enabled=false",
    "--set",
    "systems.config.enabled=false",
    "--set",
    "engines.ring.gossip_ms=100",
    "--set",
    "engines.ring.suspect_ms=1000",
    "--set",
    "engines.ring.ae_ms=500",
    "--set",
    "engines.ring.handoff_ms=300",
];

/// A listening port for a node. Ports come from below Linux's ephemeral range (32768+), so no
/// outgoing connection can take a killed node's port before it restarts.
///
/// Test processes run in parallel and each hands out ports before its nodes bind them, so a
/// probe alone races: two processes can probe the same free port and both pass it on. Each port
/// is therefore claimed with an exclusive lock on a file named after it (in the temp dir), held
/// for the life of the test process and dropped by the kernel when it exits, however it exits;
/// a claimed port is also probed, for listeners that are not ours. The (empty) files stay:
/// removing one could let two processes lock different files of the same name.
fn free_port() -> u16 {
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicU32, Ordering};
    const LOW: u32 = 10_000;
    const SPAN: u32 = 22_000;
    static NEXT: AtomicU32 = AtomicU32::new(0);
    static HELD: Mutex<Vec<std::fs::File>> = Mutex::new(Vec::new());
    let dir = std::env::temp_dir().join("basalt-harness-ports");
    std::fs::create_dir_all(&dir).expect("the port lock dir can be made");
    let start = std::process::id().wrapping_mul(7_919) % SPAN;
    let candidates = std::iter::repeat_with(|| (LOW + (start + NEXT.fetch_add(1, Ordering::Relaxed)) % SPAN) as u16);
    let (port, lock) = claim_port(&dir, candidates.take(SPAN as usize)).expect("a free port below 32000");
    HELD.lock().unwrap_or_else(|e| e.into_inner()).push(lock);
    port
}

/// A base port such that every `base + offset` is free and claimed for the life of the test
/// process, as [`free_port`] claims one: for a process that derives its ports from a base
/// (`basalt dev cluster --base-port`), so that no other test's nodes take one of them.
pub fn free_port_block(offsets: &[u16]) -> u16 {
    use std::sync::Mutex;
    static HELD: Mutex<Vec<std::fs::File>> = Mutex::new(Vec::new());
    let dir = std::env::temp_dir().join("basalt-harness-ports");
    std::fs::create_dir_all(&dir).expect("the port lock dir can be made");
    let top = offsets.iter().copied().max().unwrap_or(0);
    let first = 10_000 + (std::process::id().wrapping_mul(7_919) % 20_000) as u16;
    let bases = (first..32_000 - top).chain(10_000..first).step_by(7);
    for base in bases {
        let mut claimed = Vec::new();
        for off in offsets {
            match claim_port(&dir, std::iter::once(base + off)) {
                Some((_, file)) => claimed.push(file),
                None => break,
            }
        }
        if claimed.len() == offsets.len() {
            HELD.lock().unwrap_or_else(|e| e.into_inner()).extend(claimed);
            return base;
        }
    }
    panic!("no free block of ports below 32000");
}

/// The first of `candidates` whose lock file in `dir` this process could lock and which no one
/// listens on, with the locked file (the claim lasts as long as it is open).
fn claim_port(dir: &std::path::Path, candidates: impl Iterator<Item = u16>) -> Option<(u16, std::fs::File)> {
    for port in candidates {
        let opened =
            std::fs::OpenOptions::new().create(true).truncate(false).write(true).open(dir.join(port.to_string()));
        if let Ok(file) = opened
            && file.try_lock().is_ok()
            && std::net::TcpListener::bind(("127.0.0.1", port)).is_ok()
        {
            return Some((port, file));
        }
    }
    None
}

impl Cluster {
    /// Start `n` nodes: node 1 bootstraps, the others join it; wait until all are voters.
    pub async fn start(exe: impl Into<std::path::PathBuf>, n: usize) -> Self {
        Self::start_with(exe, n, |_| Vec::new()).await
    }

    /// Like [`Cluster::start`], giving every node the same extra arguments.
    pub async fn start_with_args(exe: impl Into<std::path::PathBuf>, n: usize, args: Vec<String>) -> Self {
        Self::start_with(exe, n, move |_| args.clone()).await
    }

    /// Like [`Cluster::start`], giving node `id` the extra arguments `node_args(id)`.
    pub async fn start_with(
        exe: impl Into<std::path::PathBuf>,
        n: usize,
        node_args: impl Fn(usize) -> Vec<String> + Send + Sync + 'static,
    ) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let node_args: NodeArgs = std::sync::Arc::new(node_args);
        let mut c = Cluster { exe: exe.into(), dir, nodes: Vec::new(), specs: Vec::new(), node_args, ring_only: false };
        for _ in 0..n {
            c.add_node().await;
        }
        c.wait_voters(n).await;
        c
    }

    /// A cluster held together by the ring engine only (no Raft): `n` nodes, every one with
    /// [`RING_ONLY_ARGS`] and `args`; waits until every node sees every other alive.
    pub async fn start_ring(exe: impl Into<std::path::PathBuf>, n: usize, args: Vec<String>) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut all: Vec<String> = RING_ONLY_ARGS.iter().map(|s| s.to_string()).collect();
        all.extend(args);
        let node_args: NodeArgs = std::sync::Arc::new(move |_| all.clone());
        let mut c = Cluster { exe: exe.into(), dir, nodes: Vec::new(), specs: Vec::new(), node_args, ring_only: true };
        for _ in 0..n {
            c.add_node().await;
        }
        c.wait_ring_alive().await;
        c
    }

    /// Every live node sees every live node alive in the ring.
    pub async fn wait_ring_alive(&self) {
        let want = self.live().len();
        self.wait_for(&format!("{want} live ring members"), || async {
            let mut ok = true;
            for id in self.live() {
                let (_, b) = send(client().get(format!("{}/v1/ring", self.url(id)))).await;
                let alive = b["members"].as_array().map_or(0, |m| m.iter().filter(|x| x["alive"] == true).count());
                ok &= alive >= want;
            }
            ok
        })
        .await;
    }

    /// The Redis-protocol address of node `id`.
    pub async fn resp_addr(&self, id: usize) -> String {
        let (_, b) = send(client().get(format!("{}/v1/kv", self.url(id)))).await;
        b["resp_addr"].as_str().unwrap_or_default().to_string()
    }

    /// Ring membership: node `id` leaves (its data moves to the others) or comes back.
    pub async fn ring_leave(&self, id: usize, leave: bool) -> bool {
        let path = if leave { "leave" } else { "rejoin" };
        let (s, _) = send(client().post(format!("{}/v1/ring/{path}", self.url(id)))).await;
        s == 200
    }

    /// Start one more node that joins through node 1 (or the first live node).
    pub async fn add_node(&mut self) -> usize {
        let id = self.nodes.len() + 1;
        // Fixed ports per node, so a restarted node keeps the address its peers know.
        let mut spec = NodeSpec::new(&self.exe, self.dir.path().join(format!("node-{id}")))
            .arg("--node-id")
            .arg(id.to_string())
            .arg("--http-addr")
            .arg(format!("127.0.0.1:{}", free_port()))
            .arg("--peer-addr")
            .arg(format!("127.0.0.1:{}", free_port()))
            // Clients' ports too, so a client finds a restarted node where it was.
            .arg("--resp-addr")
            .arg(format!("127.0.0.1:{}", free_port()))
            .arg("--etcd-addr")
            .arg(format!("127.0.0.1:{}", free_port()))
            .arg("--set")
            .arg("fault_injection=true")
            .arg("--set")
            .arg("engines.consensus.heartbeat_ms=50")
            .arg("--set")
            .arg("engines.consensus.election_timeout_min_ms=300")
            .arg("--set")
            .arg("engines.consensus.election_timeout_max_ms=600");
        for a in (self.node_args)(id) {
            spec = spec.arg(a);
        }
        if let Some(seed) = self.nodes.iter().flatten().next() {
            spec = spec.arg("--join").arg(seed.http_addr.clone());
        }
        self.specs.push(spec.clone());
        self.nodes.push(Some(NodeProcess::start(spec, START_TIMEOUT).await.expect("node starts")));
        id
    }

    pub fn url(&self, id: usize) -> String {
        self.nodes[id - 1].as_ref().expect("node is running").url()
    }

    /// Fault injection, with [`Cluster::revert_disk`]: copy node `id`'s data directory aside
    /// as it is now, the node frozen (SIGSTOP) meanwhile so the copy is one moment's state.
    /// Taken while its disk is stalled ([`Cluster::stall_disk`]), the copy holds everything the
    /// disk durably does: nothing has been synced since.
    pub fn image_disk(&self, id: usize) -> std::io::Result<()> {
        let image = self.dir.path().join(format!("node-{id}.image"));
        let _ = std::fs::remove_dir_all(&image);
        let running = self.nodes[id - 1].is_some();
        if running {
            self.pause(id);
        }
        let copied = copy_dir(&self.specs[id - 1].data_dir, &image);
        if running {
            self.resume(id);
        }
        copied
    }

    /// Put node `id`'s data directory back as [`Cluster::image_disk`] copied it (the node must
    /// be down, e.g. after [`Cluster::kill9`]): a power loss, which takes everything the node
    /// wrote after its last fsync — the page cache included, which a `kill -9` alone keeps.
    pub fn revert_disk(&self, id: usize) -> std::io::Result<()> {
        assert!(self.nodes[id - 1].is_none(), "node {id} must be down to lose its disk's unsynced writes");
        let data = &self.specs[id - 1].data_dir;
        std::fs::remove_dir_all(data)?;
        copy_dir(&self.dir.path().join(format!("node-{id}.image")), data)
    }

    /// Copy every node's log (all its runs, restarts included) to `dir` as
    /// `<stem>-node-<id>.log`, for a failed run's evidence; the files written.
    pub fn save_logs(&self, dir: &std::path::Path, stem: &str) -> std::io::Result<Vec<std::path::PathBuf>> {
        std::fs::create_dir_all(dir)?;
        let mut out = Vec::new();
        for (i, spec) in self.specs.iter().enumerate() {
            let to = dir.join(format!("{stem}-node-{}.log", i + 1));
            if std::fs::copy(spec.data_dir.join("node.log"), &to).is_ok() {
                out.push(to);
            }
        }
        Ok(out)
    }

    pub fn live(&self) -> Vec<usize> {
        (1..=self.nodes.len()).filter(|id| self.nodes[id - 1].is_some()).collect()
    }

    pub async fn status(&self, id: usize) -> serde_json::Value {
        send(client().get(format!("{}/v1/cluster", self.url(id)))).await.1
    }

    /// Wait (up to 60 s) until `pred` holds, polling every 20 ms.
    pub async fn wait_for<F, Fut>(&self, what: &str, pred: F)
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        crate::wait_until(what, pred).await
    }

    pub async fn wait_voters(&self, n: usize) {
        let first = self.live()[0];
        self.wait_for(&format!("{n} voters"), || async {
            let s = self.status(first).await;
            s["members"].as_array().is_some_and(|m| m.iter().filter(|x| x["voter"] == true).count() == n)
                && s["leader_id"].is_u64()
        })
        .await;
    }

    /// The node that says it is the leader (waiting up to 60 s for one).
    pub async fn leader(&self) -> usize {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            for id in self.live() {
                if self.status(id).await["state"] == "leader" {
                    return id;
                }
            }
            assert!(tokio::time::Instant::now() < deadline, "no leader within 60 s");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn kill9(&mut self, id: usize) {
        let mut node = self.nodes[id - 1].take().expect("node is running");
        node.kill9().unwrap();
    }

    /// Start a killed node again on its data dir and ports. It is already a member, so it
    /// starts without `--join`.
    pub async fn restart(&mut self, id: usize) {
        self.restart_with(id, &[]).await;
    }

    /// Like [`Cluster::restart`], with `extra` arguments for this start only.
    pub async fn restart_with(&mut self, id: usize, extra: &[&str]) {
        let spec = self.specs[id - 1].clone();
        let mut args = Vec::new();
        let mut it = spec.args.iter();
        while let Some(a) = it.next() {
            if a == "--join" {
                it.next();
            } else {
                args.push(a.clone());
            }
        }
        args.extend(extra.iter().map(|a| a.to_string()));
        let spec = NodeSpec { args, ..spec };
        self.nodes[id - 1] = Some(NodeProcess::start(spec, START_TIMEOUT).await.expect("node restarts"));
    }

    /// SIGSTOP / SIGCONT.
    pub fn pause(&self, id: usize) {
        self.nodes[id - 1].as_ref().expect("node is running").pause().unwrap();
    }

    pub fn resume(&self, id: usize) {
        self.nodes[id - 1].as_ref().expect("node is running").resume().unwrap();
    }

    /// Cut `id` off from every other node, both directions (through the fault hook).
    pub async fn isolate(&self, id: usize) {
        let links: Vec<(usize, usize)> = (1..=self.nodes.len()).filter(|p| *p != id).map(|p| (id, p)).collect();
        self.cut(&links).await;
    }

    /// Cut exactly these links, both directions, and heal every other (through the fault hook
    /// of each live node).
    pub async fn cut(&self, links: &[(usize, usize)]) {
        self.set_peer_rules(|me, peer| {
            links
                .iter()
                .any(|&(a, b)| (a, b) == (me, peer) || (b, a) == (me, peer))
                .then(|| serde_json::json!({"drop_out": true, "drop_in": true}))
        })
        .await;
    }

    /// Delay everything node `id` sends to its peers by `ms`.
    pub async fn slow(&self, id: usize, ms: u64) {
        self.set_peer_rules(|me, _| (me == id).then(|| serde_json::json!({"delay_ms": ms}))).await;
    }

    async fn set_peer_rules(&self, rule: impl Fn(usize, usize) -> Option<serde_json::Value>) {
        let n = self.nodes.len();
        for me in self.live() {
            let peers: serde_json::Map<String, serde_json::Value> =
                (1..=n).filter(|p| *p != me).filter_map(|p| rule(me, p).map(|r| (p.to_string(), r))).collect();
            let (s, b) = send(
                client().put(format!("{}/v1/node/faults", self.url(me))).json(&serde_json::json!({"peers": peers})),
            )
            .await;
            assert_eq!(s, 200, "{b}");
        }
    }

    /// Stall node `id`'s disk syncs (every fsync waits until `false` again): a slow disk.
    pub async fn stall_disk(&self, id: usize, stalled: bool) {
        let (s, b) = send(
            client().put(format!("{}/v1/node/disk", self.url(id))).json(&serde_json::json!({"fsync_stalled": stalled})),
        )
        .await;
        assert_eq!(s, 200, "{b}");
    }

    /// Node `id`'s disk: `{"fsync_stalled": bool, "syncs_waiting": n}`.
    pub async fn disk(&self, id: usize) -> serde_json::Value {
        let (s, b) = send(client().get(format!("{}/v1/node/disk", self.url(id)))).await;
        assert_eq!(s, 200, "{b}");
        b
    }

    /// Set node `id`'s clock offset (the injectable clock), in ms from the real time.
    pub async fn skew_clock(&self, id: usize, offset_ms: i64) {
        let (s, b) = send(
            client().put(format!("{}/v1/node/clock", self.url(id))).json(&serde_json::json!({"offset_ms": offset_ms})),
        )
        .await;
        assert_eq!(s, 200, "{b}");
    }

    /// Remove node `id` from the Raft membership (it keeps running, outside the group).
    /// Answers whether the cluster accepted it.
    pub async fn remove_member(&self, id: usize) -> bool {
        let leader = self.leader().await;
        let (s, _) = send(client().delete(format!("{}/v1/cluster/members/{id}", self.url(leader)))).await;
        s == 200
    }

    /// Add node `id` back as a voter with its own data, retrying (up to 60 s) through leader
    /// changes until the membership has it.
    pub async fn readd_member(&self, id: usize) {
        let node = self.nodes[id - 1].as_ref().expect("node is running");
        let body = serde_json::json!({"node_id": id, "http_addr": node.http_addr, "peer_addr": node.peer_addr,
            "voter": true});
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        loop {
            let leader = self.leader().await;
            let (s, _) = send(client().post(format!("{}/v1/cluster/members", self.url(leader))).json(&body)).await;
            let st = self.status(leader).await;
            let voter = st["members"]
                .as_array()
                .is_some_and(|m| m.iter().any(|x| x["node_id"] == id as u64 && x["voter"] == true));
            if s == 200 && voter {
                return;
            }
            assert!(tokio::time::Instant::now() < deadline, "node {id} could not rejoin: {st}");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    pub async fn heal(&self) {
        for id in self.live() {
            let (s, b) =
                send(client().put(format!("{}/v1/node/faults", self.url(id))).json(&serde_json::json!({"peers": {}})))
                    .await;
            assert_eq!(s, 200, "{b}");
        }
    }
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_dir(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), target)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::claim_port;

    #[test]
    fn a_port_claimed_elsewhere_or_listened_on_is_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let busy = listener.local_addr().unwrap().port();
        let (first, held) = claim_port(dir.path(), 20_000..30_000).unwrap();
        // Another claimant (a separate open file, as another process has) cannot take it.
        assert_ne!(claim_port(dir.path(), [first].into_iter()).map(|c| c.0), Some(first));
        let (next, _held2) = claim_port(dir.path(), [first, busy].into_iter().chain(first + 1..30_000)).unwrap();
        assert!(next != first && next != busy, "skipped the claimed {first} and the listened-on {busy}: {next}");
        drop(held);
        assert_eq!(claim_port(dir.path(), [first].into_iter()).map(|c| c.0), Some(first), "a released claim is free");
    }
}
