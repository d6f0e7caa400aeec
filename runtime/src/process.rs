//! Real node processes for tests, benchmarks and the fault harness: start `basalt serve` on a
//! data dir with an OS-chosen port, wait until it is ready, and kill, pause or stop it.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use anyhow::{Context, bail};
use nix::sys::signal::Signal;
use nix::unistd::Pid;

use crate::node::{NodeInfo, node_info_path};

/// How a node process is started; kept so it can be restarted the same way.
#[derive(Debug, Clone)]
pub struct NodeSpec {
    pub exe: PathBuf,
    pub data_dir: PathBuf,
    /// Extra `serve` arguments (e.g. `--set`, `--http-addr`).
    pub args: Vec<String>,
    /// Extra environment (e.g. `BASALT_CLOCK_OFFSET_MS`).
    pub env: Vec<(String, String)>,
}

impl NodeSpec {
    pub fn new(exe: impl Into<PathBuf>, data_dir: impl Into<PathBuf>) -> Self {
        Self { exe: exe.into(), data_dir: data_dir.into(), args: Vec::new(), env: Vec::new() }
    }

    pub fn arg(mut self, a: impl Into<String>) -> Self {
        self.args.push(a.into());
        self
    }

    pub fn env(mut self, k: impl Into<String>, v: impl Into<String>) -> Self {
        self.env.push((k.into(), v.into()));
        self
    }
}

/// A running `basalt serve`. Dropping it kills the process.
#[derive(Debug)]
pub struct NodeProcess {
    pub spec: NodeSpec,
    child: Child,
    pub http_addr: String,
    pub peer_addr: String,
}

impl NodeProcess {
    /// Start a node and wait (up to `timeout`) until `/readyz` answers 200.
    pub async fn start(spec: NodeSpec, timeout: Duration) -> anyhow::Result<Self> {
        std::fs::create_dir_all(&spec.data_dir)?;
        let info_path = node_info_path(&spec.data_dir);
        let _ = std::fs::remove_file(&info_path);
        let log = std::fs::OpenOptions::new().create(true).append(true).open(spec.data_dir.join("node.log"))?;
        let mut cmd = Command::new(&spec.exe);
        cmd.arg("serve").arg("--data-dir").arg(&spec.data_dir);
        if !spec.args.iter().any(|a| a == "--http-addr") {
            cmd.args(["--http-addr", "127.0.0.1:0"]);
        }
        if !spec.args.iter().any(|a| a == "--peer-addr") {
            cmd.args(["--peer-addr", "127.0.0.1:0"]);
        }
        if !spec.args.iter().any(|a| a == "--resp-addr" || a.starts_with("systems.kv.resp_addr")) {
            cmd.args(["--resp-addr", "127.0.0.1:0"]);
        }
        if !spec.args.iter().any(|a| a == "--etcd-addr" || a.starts_with("systems.coord.etcd_addr")) {
            cmd.args(["--etcd-addr", "127.0.0.1:0"]);
        }
        if !spec.args.iter().any(|a| a == "--rls-addr" || a.starts_with("systems.ratelimit.grpc_addr")) {
            cmd.args(["--rls-addr", "127.0.0.1:0"]);
        }
        cmd.args(&spec.args)
            .envs(spec.env.iter().cloned())
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        let mut child = cmd.spawn().with_context(|| format!("starting {}", spec.exe.display()))?;
        let deadline = tokio::time::Instant::now() + timeout;
        let client = reqwest::Client::new();
        loop {
            if let Some(status) = child.try_wait()? {
                bail!("node exited during start ({status}); log:\n{}", tail_log(&spec.data_dir));
            }
            if let Ok(bytes) = std::fs::read(&info_path)
                && let Ok(info) = serde_json::from_slice::<NodeInfo>(&bytes)
                && info.pid == child.id()
            {
                let ready = client.get(format!("http://{}/readyz", info.http_addr)).send().await;
                if ready.is_ok_and(|r| r.status().is_success()) {
                    return Ok(Self { spec, child, http_addr: info.http_addr, peer_addr: info.peer_addr });
                }
            }
            if tokio::time::Instant::now() > deadline {
                let _ = child.kill();
                bail!("node not ready after {timeout:?}; log:\n{}", tail_log(&spec.data_dir));
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.http_addr)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGKILL: no chance to flush anything.
    pub fn kill9(&mut self) -> anyhow::Result<ExitStatus> {
        self.child.kill()?;
        Ok(self.child.wait()?)
    }

    /// SIGTERM, then wait up to `timeout` for a clean exit (SIGKILL after that).
    pub async fn terminate(&mut self, timeout: Duration) -> anyhow::Result<ExitStatus> {
        self.signal(Signal::SIGTERM)?;
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(s) = self.child.try_wait()? {
                return Ok(s);
            }
            if tokio::time::Instant::now() > deadline {
                self.child.kill()?;
                bail!("node did not stop within {timeout:?} of SIGTERM");
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// SIGSTOP / SIGCONT.
    pub fn pause(&self) -> anyhow::Result<()> {
        self.signal(Signal::SIGSTOP)
    }

    pub fn resume(&self) -> anyhow::Result<()> {
        self.signal(Signal::SIGCONT)
    }

    pub fn signal(&self, sig: Signal) -> anyhow::Result<()> {
        let pid = Pid::from_raw(i32::try_from(self.child.id())?);
        nix::sys::signal::kill(pid, sig).with_context(|| format!("sending {sig} to {pid}"))?;
        Ok(())
    }

    pub fn log(&self) -> String {
        tail_log(&self.spec.data_dir)
    }

    pub fn data_dir(&self) -> &Path {
        &self.spec.data_dir
    }
}

impl Drop for NodeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn tail_log(dir: &Path) -> String {
    let text = std::fs::read_to_string(dir.join("node.log")).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

/// A peer server (etcd, redis-server …) started by a benchmark; killed when dropped.
#[derive(Debug)]
pub struct PeerProcess {
    child: Child,
    pub name: String,
    log: PathBuf,
}

impl PeerProcess {
    /// Start `program args…`, logging to `log`. Fails with the install command when the
    /// program is missing.
    pub fn start(name: &str, program: &str, args: &[String], log: &Path, install_hint: &str) -> anyhow::Result<Self> {
        let out = std::fs::File::create(log)?;
        let child = Command::new(program)
            .args(args)
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .map_err(|e| {
                anyhow::anyhow!("cannot start the peer `{program}` ({e}); install it with `{install_hint}`")
            })?;
        Ok(Self { child, name: name.to_string(), log: log.to_path_buf() })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Whether `program` is on PATH.
    pub fn available(program: &str) -> bool {
        Command::new(program).arg("--version").stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok()
    }

    pub fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }
}

impl Drop for PeerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A free loopback port (bound and released; a small race that harnesses accept).
pub fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Start `n` real nodes as one Raft cluster for a benchmark: node 1 bootstraps, the others join
/// it, each node given `node_args(id)`; returns once all `n` are voters and a leader is known,
/// with that leader's id.
///
/// The nodes share this machine's cores, so each gets its share of them as worker threads
/// (`shared_worker_threads`) rather than one per core each, as `worker_threads` advises for
/// nodes on one host; `node_args` can set it otherwise.
pub async fn raft_cluster(
    exe: &Path,
    dir: &Path,
    n: u64,
    node_args: impl Fn(u64) -> Vec<String>,
) -> anyhow::Result<(Vec<NodeProcess>, u64)> {
    let mut nodes: Vec<NodeProcess> = Vec::new();
    for id in 1..=n {
        let mut spec = NodeSpec::new(exe, dir.join(format!("basalt-{id}")))
            .arg("--node-id")
            .arg(id.to_string())
            .arg("--log-level")
            .arg("warn")
            .arg("--set")
            .arg(format!("worker_threads={}", shared_worker_threads(n)));
        for a in node_args(id) {
            spec = spec.arg(a);
        }
        if let Some(first) = nodes.first() {
            spec = spec.arg("--join").arg(first.http_addr.clone());
        }
        nodes.push(NodeProcess::start(spec, Duration::from_secs(60)).await?);
    }
    let client = reqwest::Client::new();
    let url = nodes[0].url();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    loop {
        let s: serde_json::Value = client.get(format!("{url}/v1/cluster")).send().await?.json().await?;
        let voters = s["members"].as_array().map_or(0, |m| m.iter().filter(|x| x["voter"] == true).count());
        if voters as u64 == n
            && let Some(leader) = s["leader_id"].as_u64()
        {
            return Ok((nodes, leader));
        }
        anyhow::ensure!(tokio::time::Instant::now() < deadline, "the {n}-node cluster did not form: {s}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Worker threads for each of `nodes` nodes sharing this machine: its cores split between them,
/// at least one each.
fn shared_worker_threads(nodes: u64) -> usize {
    let cores = std::thread::available_parallelism().map_or(1, |c| c.get());
    (cores / nodes.max(1) as usize).max(1)
}

/// Start an `n`-member etcd cluster (Debian's `etcd-server`) for a benchmark's peer side, fsync
/// on as etcd always does; returns once every member answers `/health`, with the client URLs.
pub async fn etcd_cluster(dir: &Path, n: usize, install_hint: &str) -> anyhow::Result<(Vec<PeerProcess>, Vec<String>)> {
    anyhow::ensure!(PeerProcess::available("etcd"), "etcd is not installed; run `{install_hint}`");
    let ports: Vec<(u16, u16)> = (0..n).map(|_| Ok((free_port()?, free_port()?))).collect::<anyhow::Result<_>>()?;
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
            install_hint,
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
