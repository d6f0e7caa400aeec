//! `basalt dev cluster` starts a local cluster in the foreground and stops it cleanly on
//! Ctrl-C (SIGINT).

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

#[tokio::test]
async fn dev_cluster_forms_and_stops_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    // Every port the dev cluster derives from its base (HTTP, peer, RESP, etcd, rate-limit
    // gRPC for nodes 1–3), claimed as the harness claims its nodes' ports, so that no other
    // test's cluster can hold one (the base used to be picked from the pid alone, inside the
    // harness's range).
    let offsets: Vec<u16> = (0..5u16).flat_map(|k| (1..=3u16).map(move |id| k * 100 + id)).collect();
    let base = basalt_harness::cluster::free_port_block(&offsets);
    let mut child = Command::new(EXE)
        .args(["dev", "cluster", "--nodes", "3", "--base-port", &base.to_string(), "--data-dir"])
        .arg(dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut seen = Vec::new();
    for line in lines.by_ref() {
        let line = line.unwrap();
        let done = line.contains("nodes running");
        seen.push(line);
        if done {
            break;
        }
    }
    assert!(seen.iter().filter(|l| l.starts_with("node ")).count() == 3, "{seen:?}");
    let url = format!("http://127.0.0.1:{}", base + 1);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let (_, s) = send(client().get(format!("{url}/v1/cluster"))).await;
        if s["members"].as_array().is_some_and(|m| m.iter().filter(|x| x["voter"] == true).count() == 3) {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "no 3-voter cluster: {s}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    kill(Pid::from_raw(child.id() as i32), Signal::SIGINT).unwrap();
    let status = child.wait().unwrap();
    assert!(status.success(), "{status}");
    assert!(lines.any(|l| l.is_ok_and(|l| l.contains("stopped"))));
    for id in 1..=3 {
        let log = std::fs::read_to_string(dir.path().join(format!("node-{id}/node.log"))).unwrap();
        assert!(log.contains("stopped cleanly"), "node {id}: {log}");
    }
}
