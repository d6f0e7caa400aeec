//! Acknowledged writes survive SIGKILL. The test re-runs this test binary as a child process
//! that writes and acknowledges (prints) keys as fast as the disk allows; the parent kills it
//! with SIGKILL mid-stream, reopens the store, and checks every acknowledged key is there.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use basalt_runtime::Store;
use basalt_runtime::config::FsyncPolicy;

const CHILD_ENV: &str = "DURABILITY_CHILD_DIR";
const WRITERS: u32 = 4;

fn value_for(writer: u32, i: u32) -> Vec<u8> {
    format!("value-{writer}-{i}-{}", "x".repeat((i % 64) as usize)).into_bytes()
}

/// Not a test on its own: the writer the parent runs and kills.
#[tokio::test]
#[ignore = "run by acknowledged_writes_survive_sigkill as its child"]
async fn child_writer() {
    let dir = std::env::var(CHILD_ENV).expect("child dir");
    let store = Store::open(dir.as_ref(), FsyncPolicy::Always, Duration::from_millis(100)).unwrap();
    let ns = store.namespace("durability").unwrap();
    let mut tasks = Vec::new();
    for w in 0..WRITERS {
        let ns = ns.clone();
        tasks.push(tokio::spawn(async move {
            for i in 0.. {
                let key = format!("{w}/{i:08}");
                ns.put(&key, value_for(w, i)).unwrap();
                ns.sync().await.unwrap();
                println!("ack {w} {i}");
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
}

#[test]
fn acknowledged_writes_survive_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "child_writer", "--ignored", "--nocapture", "--test-threads", "1"])
        .env(CHILD_ENV, dir.path())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut acked: Vec<(u32, u32)> = Vec::new();
    for line in BufReader::new(child.stdout.take().unwrap()).lines() {
        let line = line.unwrap();
        if let Some(rest) = line.strip_prefix("ack ") {
            let (w, i) = rest.split_once(' ').unwrap();
            acked.push((w.parse().unwrap(), i.parse().unwrap()));
            if acked.len() >= 400 {
                break;
            }
        }
    }
    child.kill().unwrap(); // SIGKILL: no destructor, no flush
    child.wait().unwrap();
    assert!(acked.len() >= 400, "the child stopped early after {} acks", acked.len());

    let store = Store::open(dir.path(), FsyncPolicy::Always, Duration::from_millis(100)).unwrap();
    let ns = store.namespace("durability").unwrap();
    for (w, i) in &acked {
        let got = ns.get(format!("{w}/{i:08}")).unwrap();
        assert_eq!(got.as_deref(), Some(value_for(*w, *i).as_slice()), "acknowledged write {w}/{i} lost");
    }
}
