//! S13 with the ring's objects in memory and an append-only log (`engines.ring.storage =
//! "memory"`), through a real process: every write acknowledged over Redis survives `kill -9`
//! (fsync "always"), and the node refuses to start on the other backend over existing data.

mod common;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use basalt_resp::Frame;
use basalt_runtime::process::{NodeProcess, NodeSpec};
use common::*;

fn node_spec(dir: &std::path::Path, storage: &str) -> NodeSpec {
    let mut spec = NodeSpec::new(EXE, dir.join("node")).arg("--node-id").arg("1");
    for a in basalt_harness::cluster::RING_ONLY_ARGS {
        spec = spec.arg(a);
    }
    spec.arg("--set").arg(format!("engines.ring.storage=\"{storage}\"")).arg("--set").arg("fsync=\"always\"")
}

async fn resp_addr(node: &NodeProcess) -> String {
    let (_, b) = send(client().get(format!("{}/v1/kv", node.url()))).await;
    b["resp_addr"].as_str().unwrap().to_string()
}

async fn connect(addr: &str) -> basalt_runtime::redis::Redis {
    basalt_runtime::redis::Redis::connect(addr, Duration::from_secs(10)).await.unwrap()
}

#[tokio::test]
async fn a_memory_mode_node_keeps_every_acknowledged_write_through_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let spec = node_spec(dir.path(), "memory");
    let mut node = start(spec.clone()).await;
    let (_, ring) = send(client().get(format!("{}/v1/ring", node.url()))).await;
    assert_eq!(ring["storage"], "memory", "{ring}");
    let addr = resp_addr(&node).await;

    // Writers: single SETs, pipelined SETs (one batch each), and INCRs, each writer on its own
    // keys; a write counts once its reply has arrived.
    let acked: Arc<Mutex<BTreeMap<String, String>>> = Arc::default();
    let counters: Arc<Mutex<BTreeMap<String, i64>>> = Arc::default();
    let mut tasks = Vec::new();
    for w in 0..4u32 {
        let (addr, acked, counters) = (addr.clone(), acked.clone(), counters.clone());
        tasks.push(tokio::spawn(async move {
            let mut c = connect(&addr).await;
            for i in 0u32.. {
                let key = format!("w{w}:{}", i % 500);
                let value = format!("v{i}-{}", "x".repeat((i % 40) as usize));
                let ok = match i % 3 {
                    0 => matches!(c.cmd(&[b"SET", key.as_bytes(), value.as_bytes()]).await, Ok(Frame::Simple(s)) if s == "OK"),
                    1 => {
                        let k2 = format!("w{w}:p{}", i % 300);
                        let cmds: [&[&[u8]]; 2] =
                            [&[b"SET", key.as_bytes(), value.as_bytes()], &[b"SET", k2.as_bytes(), value.as_bytes()]];
                        match c.pipeline(&cmds).await {
                            Ok(r) if r.iter().all(|f| matches!(f, Frame::Simple(s) if s == "OK")) => {
                                acked.lock().unwrap().insert(k2, value.clone());
                                true
                            }
                            _ => false,
                        }
                    }
                    _ => {
                        let ck = format!("c{w}");
                        match c.cmd(&[b"INCR", ck.as_bytes()]).await {
                            Ok(Frame::Integer(n)) => {
                                counters.lock().unwrap().insert(ck, n);
                                continue;
                            }
                            _ => return,
                        }
                    }
                };
                if !ok {
                    return; // the node is gone
                }
                acked.lock().unwrap().insert(key, value);
            }
        }));
    }
    // Kill once enough writes are acknowledged (mid-stream: the writers are still going).
    basalt_harness::wait_until("2,000 acknowledged writes", || async { acked.lock().unwrap().len() >= 2_000 }).await;
    node.kill9().unwrap();
    for t in tasks {
        t.await.unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    let counters = counters.lock().unwrap().clone();

    // Restart on the same data dir: the log is replayed; every acknowledged write is there.
    node = start(spec.clone()).await;
    let addr = resp_addr(&node).await;
    let mut c = connect(&addr).await;
    for (k, v) in &acked {
        // A later write to the key may have been applied but not acknowledged before the kill:
        // the value read is the acknowledged one or a later one of the same writer.
        match c.cmd(&[b"GET", k.as_bytes()]).await.unwrap() {
            Frame::Bulk(b) => {
                let got = String::from_utf8(b.to_vec()).unwrap();
                let n = |s: &str| s[1..].split('-').next().unwrap().parse::<u32>().unwrap();
                assert!(n(&got) >= n(v), "key {k}: acknowledged {v}, read {got}");
            }
            other => panic!("key {k}: acknowledged {v}, read {other:?}"),
        }
    }
    for (k, n) in &counters {
        match c.cmd(&[b"GET", k.as_bytes()]).await.unwrap() {
            Frame::Bulk(b) => {
                let got: i64 = String::from_utf8(b.to_vec()).unwrap().parse().unwrap();
                assert!(got >= *n, "counter {k}: acknowledged {n}, read {got}");
            }
            other => panic!("counter {k}: acknowledged {n}, read {other:?}"),
        }
    }
    let (_, ring) = send(client().get(format!("{}/v1/ring", node.url()))).await;
    assert!(ring["memlog"]["keys"].as_u64().unwrap() >= acked.len() as u64, "{ring}");

    // The same data dir on the LSM backend is refused, clearly.
    node.terminate(Duration::from_secs(30)).await.unwrap();
    let err = NodeProcess::start(node_spec(dir.path(), "lsm"), START_TIMEOUT).await.unwrap_err();
    let err = format!("{err:#}");
    assert!(err.contains("engines.ring.storage") && err.contains("holds data in the in-memory store"), "{err}");
}

#[tokio::test]
async fn a_bad_storage_value_fails_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let err = NodeProcess::start(node_spec(dir.path(), "disk"), START_TIMEOUT).await.unwrap_err();
    let err = format!("{err:#}");
    assert!(err.contains("engines.ring") && err.contains("disk") && err.contains("memory"), "{err}");
}
