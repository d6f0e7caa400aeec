//! `basalt cluster …` (membership through any node's HTTP API) and `basalt dev cluster`
//! (a local N-node cluster in the foreground).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use basalt_runtime::process::{NodeProcess, NodeSpec};
use clap::{Args, Subcommand};

#[derive(Subcommand)]
pub enum ClusterCommand {
    /// This node's view: state, term, leader, members and replication.
    Status(Target),
    /// Add a node as a learner (it catches up), and with --voter promote it.
    Add {
        #[command(flatten)]
        target: Target,
        /// The new node's id.
        #[arg(long)]
        node_id: u64,
        /// The new node's peer listener (HOST:PORT).
        #[arg(long)]
        peer_addr: String,
        /// The new node's HTTP listener (HOST:PORT).
        #[arg(long)]
        http_addr: String,
        /// Promote to voter once caught up.
        #[arg(long)]
        voter: bool,
    },
    /// Make a learner a voter.
    Promote {
        #[command(flatten)]
        target: Target,
        node_id: u64,
    },
    /// Remove a node from the cluster.
    Remove {
        #[command(flatten)]
        target: Target,
        node_id: u64,
    },
    /// Hand leadership to another voter.
    Transfer {
        #[command(flatten)]
        target: Target,
        node_id: u64,
    },
}

#[derive(Args)]
pub struct Target {
    /// Any node's HTTP address.
    #[arg(long, default_value = "http://127.0.0.1:7070")]
    url: String,
}

#[derive(Subcommand)]
pub enum DevCommand {
    /// Start N nodes on loopback (node 1 bootstraps, the others join), print their
    /// addresses, and stop them all cleanly on Ctrl-C.
    Cluster(DevClusterArgs),
}

#[derive(Args)]
pub struct DevClusterArgs {
    #[arg(long, default_value_t = 3)]
    nodes: u64,
    /// Where the nodes keep their data (`<dir>/node-<id>`).
    #[arg(long, default_value = "./data/dev-cluster")]
    data_dir: PathBuf,
    /// HTTP ports are BASE+id, peer ports BASE+100+id.
    #[arg(long, default_value_t = 7100)]
    base_port: u16,
    /// Extra `serve` arguments for every node (repeatable), e.g. `--arg=--set --arg=fsync=\"never\"`.
    #[arg(long = "arg", allow_hyphen_values = true)]
    args: Vec<String>,
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread().enable_all().build()?)
}

async fn call(method: reqwest::Method, url: String, body: Option<serde_json::Value>) -> anyhow::Result<()> {
    let client = reqwest::Client::builder().timeout(Duration::from_secs(90)).build()?;
    let mut req = client.request(method, &url);
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.with_context(|| format!("calling {url}"))?;
    let status = resp.status();
    let text = resp.text().await?;
    let pretty = serde_json::from_str::<serde_json::Value>(&text)
        .ok()
        .and_then(|v| serde_json::to_string_pretty(&v).ok())
        .unwrap_or(text);
    anyhow::ensure!(status.is_success(), "{status}: {pretty}");
    println!("{pretty}");
    Ok(())
}

pub fn run_cluster(cmd: ClusterCommand) -> anyhow::Result<()> {
    use reqwest::Method;
    let (method, url, body) = match cmd {
        ClusterCommand::Status(t) => (Method::GET, format!("{}/v1/cluster", t.url), None),
        ClusterCommand::Add { target, node_id, peer_addr, http_addr, voter } => (
            Method::POST,
            format!("{}/v1/cluster/members", target.url),
            Some(
                serde_json::json!({"node_id": node_id, "peer_addr": peer_addr, "http_addr": http_addr, "voter": voter}),
            ),
        ),
        ClusterCommand::Promote { target, node_id } => {
            (Method::POST, format!("{}/v1/cluster/members/{node_id}/promote", target.url), None)
        }
        ClusterCommand::Remove { target, node_id } => {
            (Method::DELETE, format!("{}/v1/cluster/members/{node_id}", target.url), None)
        }
        ClusterCommand::Transfer { target, node_id } => (
            Method::POST,
            format!("{}/v1/cluster/transfer", target.url),
            Some(serde_json::json!({ "node_id": node_id })),
        ),
    };
    runtime()?.block_on(call(method, url, body))
}

pub fn run_dev(cmd: DevCommand) -> anyhow::Result<()> {
    let DevCommand::Cluster(a) = cmd;
    anyhow::ensure!((1..=9).contains(&a.nodes), "--nodes must be from 1 to 9");
    let exe = std::env::current_exe()?;
    runtime()?.block_on(async move {
        // Listening for Ctrl-C from the start, not from when the nodes are up: an early one is
        // kept, and the nodes are stopped once started, instead of this process dying under
        // them (the default action) and leaving them running.
        let mut interrupt = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())?;
        let mut nodes = Vec::new();
        for id in 1..=a.nodes {
            let http = format!("127.0.0.1:{}", a.base_port + id as u16);
            let peer = format!("127.0.0.1:{}", a.base_port + 100 + id as u16);
            let resp = format!("127.0.0.1:{}", a.base_port + 200 + id as u16);
            let etcd = format!("127.0.0.1:{}", a.base_port + 300 + id as u16);
            let rls = format!("127.0.0.1:{}", a.base_port + 400 + id as u16);
            let mut spec = NodeSpec::new(&exe, a.data_dir.join(format!("node-{id}")))
                .arg("--node-id")
                .arg(id.to_string())
                .arg("--http-addr")
                .arg(&http)
                .arg("--peer-addr")
                .arg(&peer)
                .arg("--resp-addr")
                .arg(&resp)
                .arg("--etcd-addr")
                .arg(&etcd)
                .arg("--rls-addr")
                .arg(&rls);
            if id > 1 {
                spec = spec.arg("--join").arg(format!("127.0.0.1:{}", a.base_port + 1));
            }
            spec.args.extend(a.args.iter().cloned());
            let node = NodeProcess::start(spec, Duration::from_secs(60)).await?;
            println!(
                "node {id}: http://{http}  peer {peer}  redis {resp}  etcd {etcd}  rls {rls}  data {}  log {}/node.log",
                node.data_dir().display(),
                node.data_dir().display()
            );
            nodes.push(node);
        }
        println!(
            "{} nodes running; `basalt cluster status --url http://127.0.0.1:{}`; Ctrl-C stops them.",
            a.nodes,
            a.base_port + 1
        );
        interrupt.recv().await;
        for n in nodes.iter_mut().rev() {
            let _ = n.terminate(Duration::from_secs(15)).await;
        }
        println!("stopped");
        Ok(())
    })
}
