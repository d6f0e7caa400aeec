//! The fault harness through real processes: short seeded sweeps on S03 (config) and S05 (coord,
//! the etcd API; lock, its locks and leases) that must stay linearizable under every nemesis, S13 (kv) losing no
//! acknowledged write, and a deliberately injected bug that the harness must catch (with its
//! history and timeline written).

mod common;

use std::time::Duration;

use basalt_harness::nemesis::Kind;
use basalt_harness::suites::{SuiteOpts, SuiteReport};
use basalt_lincheck::Verdict;

fn opts(seed: u64, secs: u64, nemesis: &str, out: &std::path::Path) -> SuiteOpts {
    SuiteOpts {
        exe: common::EXE.into(),
        nodes: 3,
        duration: Duration::from_secs(secs),
        seed,
        clients: 4,
        keys: 3,
        out_dir: out.to_path_buf(),
        nemeses: Kind::parse_list(nemesis).unwrap(),
        node_args: Vec::new(),
        serializable_reads: false,
    }
}

fn summary(r: &SuiteReport) -> String {
    let faults: Vec<String> = r.faults.iter().map(|f| f.fault.label()).collect();
    format!("seed {} ops {} ok {} faults [{}]", r.seed, r.ops, r.ok, faults.join("; "))
}

/// Three seeds, each with a different mix of faults; every history must be linearizable.
#[tokio::test]
async fn config_registers_stay_linearizable_under_a_seeded_sweep() {
    let out = tempfile::tempdir().unwrap();
    for (seed, nemesis) in [
        (20261124, "kill,kill-leader,pause,power"),
        (20261125, "partition"),
        (20261126, "latency,clock,membership,kill"),
    ] {
        let r = basalt_harness::suites::config(&opts(seed, 10, nemesis, out.path())).await.unwrap();
        eprintln!("{nemesis}: {}", summary(&r));
        assert!(r.faults.len() >= 2, "the nemesis should strike several times: {}", summary(&r));
        assert!(r.ok >= 50, "too few completed operations to mean anything: {}", summary(&r));
        assert_eq!(r.verdict, Verdict::Ok, "{}: {:?} (history: {:?})", summary(&r), r.explanation, r.history_file);
    }
}

/// With linearizable reads answered locally (no read barrier) an isolated or lagging replica
/// serves stale values: the checker must say so, and the run must leave its history and a
/// timeline that points at the operation.
#[tokio::test]
async fn a_deliberate_stale_read_bug_is_caught() {
    let out = tempfile::tempdir().unwrap();
    let mut o = opts(7, 8, "isolate,halves", out.path());
    o.node_args = vec!["--set".into(), "systems.config.unsafe_local_reads=true".into()];
    let r = basalt_harness::suites::config(&o).await.unwrap();
    assert_eq!(r.verdict, Verdict::Illegal, "the bug went unnoticed: {}", summary(&r));
    assert!(r.explanation.as_deref().is_some_and(|e| e.contains("could not place")), "{:?}", r.explanation);
    let history = std::fs::read_to_string(r.history_file.as_ref().expect("history written")).unwrap();
    assert!(history.contains("\"history\""));
    let page = std::fs::read_to_string(r.timeline_file.as_ref().expect("timeline written")).unwrap();
    assert!(page.contains("could not be linearized") && page.contains("<svg"), "the timeline marks the operation");
}

/// The ring through S13: SETs of unique keys on a 3-node ring (N=3, R=W=2) while nodes are
/// killed, paused, partitioned and leave and rejoin; every acknowledged write is read back.
#[tokio::test]
async fn kv_loses_no_acknowledged_write_under_faults() {
    let out = tempfile::tempdir().unwrap();
    let r =
        basalt_harness::suites::kv(&opts(20261127, 10, "kill,pause,partition,membership", out.path())).await.unwrap();
    eprintln!("kv: {}", summary(&r));
    assert!(r.faults.len() >= 2, "{}", summary(&r));
    assert!(r.ok >= 100, "too few acknowledged writes to mean anything: {}", summary(&r));
    assert_eq!(r.verdict, Verdict::Ok, "{}: {:?}", summary(&r), r.explanation);
}

/// Serializable reads (etcd's option to read a member's own state, no read barrier) from a
/// member cut off from the others are stale: the coord checker must say so.
#[tokio::test]
async fn coord_catches_stale_serializable_reads() {
    let out = tempfile::tempdir().unwrap();
    let r = basalt_harness::suites::coord(&SuiteOpts {
        serializable_reads: true,
        ..opts(7, 8, "isolate,halves", out.path())
    })
    .await
    .unwrap();
    assert_eq!(r.verdict, Verdict::Illegal, "stale reads went unnoticed: {}", summary(&r));
    assert!(r.explanation.as_deref().is_some_and(|e| e.contains("could not place")), "{:?}", r.explanation);
    assert!(r.history_file.as_ref().is_some_and(|p| p.exists()), "the history is written");
}

/// S05 through the etcd API and the `etcd-client` crate: reads, puts and compare-and-set txns
/// on every node while nodes are killed (-9), paused and cut off; the history must be
/// linearizable and a watch from revision 1 must replay every acknowledged write, once.
#[tokio::test]
async fn coord_stays_linearizable_and_its_watch_replays_every_acknowledged_write() {
    let out = tempfile::tempdir().unwrap();
    for (seed, nemesis) in
        [(20261128, "kill-leader,power,pause"), (20261129, "isolate,isolate-leader,halves,membership")]
    {
        let r = basalt_harness::suites::coord(&opts(seed, 10, nemesis, out.path())).await.unwrap();
        eprintln!("{nemesis}: {}", summary(&r));
        assert!(r.faults.len() >= 2, "the nemesis should strike several times: {}", summary(&r));
        assert!(r.ok >= 50, "too few completed operations to mean anything: {}", summary(&r));
        assert_eq!(r.verdict, Verdict::Ok, "{}: {:?} (history: {:?})", summary(&r), r.explanation, r.history_file);
    }
}

/// S05's locks and leases as a fenced client uses them: clients on every member take the
/// v3lock with a lease kept alive, write a resource guarded by their lock key, and let go,
/// while the leader is cut off, paused, killed and loses power. The replay must show every
/// guarded write made by the lock's holder at that revision, no grant to a key that never
/// held the lock, no acknowledged write lost, no lease expired before a TTL after its last
/// renewal, and every leader a `Leader` call or an `Observe` stream reported leading at the
/// revision its answer carried.
#[tokio::test]
async fn locks_exclude_and_leases_never_expire_early_under_faults() {
    let out = tempfile::tempdir().unwrap();
    let nemesis = "isolate-leader,pause,kill-leader,power";
    let r = basalt_harness::suites::lock(&opts(20261130, 20, nemesis, out.path())).await.unwrap();
    eprintln!("{nemesis}: {}", summary(&r));
    assert!(r.faults.len() >= 3, "the nemesis should strike several times: {}", summary(&r));
    assert!(r.ok >= 15, "too few guarded writes to mean anything: {}", summary(&r));
    for read in ["leader_reads", "observed_leaders"] {
        assert!(r.counts.get(read).is_some_and(|&n| n >= 5), "too few {read} to mean anything: {:?}", r.counts);
    }
    assert_eq!(r.verdict, Verdict::Ok, "{}: {:?} (history: {:?})", summary(&r), r.explanation, r.history_file);
}
