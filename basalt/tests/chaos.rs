//! A short seeded run of the `config` chaos suite: kill -9, pause and partition while clients
//! read and write; the recorded history must be linearizable.

mod common;

use std::time::Duration;

#[tokio::test]
async fn config_registers_stay_linearizable_under_faults() {
    let out = tempfile::tempdir().unwrap();
    let opts = basalt_harness::suites::SuiteOpts {
        exe: common::EXE.into(),
        nodes: 3,
        duration: Duration::from_secs(12),
        seed: 20261124,
        clients: 4,
        keys: 3,
        out_dir: out.path().to_path_buf(),
    };
    let r = basalt_harness::suites::config(&opts).await.unwrap();
    assert!(r.faults.len() >= 2, "the nemesis should strike several times: {r:?}");
    assert!(r.ok >= 50, "too few completed operations to mean anything: {r:?}");
    assert_eq!(
        r.verdict,
        basalt_lincheck::Verdict::Ok,
        "seed {}: {:?} (history: {:?})",
        r.seed,
        r.explanation,
        r.history_file
    );
}
