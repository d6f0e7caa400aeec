//! The node itself through the real binary: configuration layers, health, metrics, the error
//! shape, limits, and a graceful stop on SIGTERM.

mod common;

use std::process::Command;
use std::time::Duration;

use common::*;

#[test]
fn print_config_applies_file_env_and_flags_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("basalt.toml");
    std::fs::write(&file, "log_level = \"debug\"\nhttp_addr = \"127.0.0.1:1111\"\n[systems.ids]\ngenerators = 2\n")
        .unwrap();
    let out = Command::new(EXE)
        .args(["serve", "--print-config", "--config"])
        .arg(&file)
        .args(["--http-addr", "127.0.0.1:3333", "--set", "systems.ids.reservation_ms=250"])
        .env("BASALT_HTTP_ADDR", "127.0.0.1:2222")
        .env("BASALT_LOG_LEVEL", "warn")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    let cfg: toml::Table = toml::from_str(&text).unwrap();
    assert_eq!(cfg["http_addr"].as_str(), Some("127.0.0.1:3333"), "flag wins");
    assert_eq!(cfg["log_level"].as_str(), Some("warn"), "env beats file");
    assert_eq!(cfg["systems"]["ids"]["generators"].as_integer(), Some(2), "file beats default");
    assert_eq!(cfg["systems"]["ids"]["reservation_ms"].as_integer(), Some(250), "--set");
    assert_eq!(cfg["fsync"].as_str(), Some("always"));
}

#[test]
fn bad_config_is_a_clear_error_not_a_panic() {
    let out =
        Command::new(EXE).args(["serve", "--print-config", "--set", "systems.ids.generatorz=2"]).output().unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("generatorz") && !err.contains("panicked"), "{err}");
    let out = Command::new(EXE).args(["serve", "--http-addr", "not-an-addr", "--print-config"]).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("http_addr"));
    // The rate-limit layer's key and the RLS listener are checked before anything starts.
    for (args, names) in [
        (&["--set", "http.rate_limit.key=\"cookie\""][..], "http.rate_limit.key"),
        (&["--rls-addr", "nowhere"][..], "systems.ratelimit.grpc_addr"),
    ] {
        let out = Command::new(EXE).args(["serve", "--print-config"]).args(args).output().unwrap();
        assert!(!out.status.success(), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(names) && !err.contains("panicked"), "{args:?}: {err}");
    }
}

/// A member that never campaigns cannot be its cluster's only voter (it would never elect
/// itself after a restart): a node bootstrapping with `stands_for_election = false`, or
/// restarting with it as its single-node cluster's voter, stops at start with an error naming
/// the setting; the refused bootstrap wrote nothing, so the node then starts with the default.
#[tokio::test]
async fn a_lone_voter_that_never_campaigns_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let refused = || spec(dir.path()).arg("--set").arg("engines.consensus.stands_for_election=false");
    let check = |err: anyhow::Error| {
        let err = format!("{err:#}");
        assert!(
            err.contains("stands_for_election") && err.contains("only voter") && !err.contains("panicked"),
            "{err}"
        );
    };
    check(basalt_runtime::process::NodeProcess::start(refused(), START_TIMEOUT).await.unwrap_err());
    let mut node = start(spec(dir.path())).await;
    assert!(node.terminate(Duration::from_secs(30)).await.unwrap().success());
    check(basalt_runtime::process::NodeProcess::start(refused(), START_TIMEOUT).await.unwrap_err());
}

/// `basalt chaos` refuses what it cannot run before starting anything, naming the argument.
#[test]
fn bad_chaos_arguments_are_clear_errors() {
    for (args, says) in [
        (&["chaos", "ledger"][..], "no suite `ledger`; suites: config, coord, kv, lock"),
        (&["chaos", "coord", "--nemesis", "kill,fire"][..], "no nemesis `fire`"),
        (&["chaos", "config", "--serializable-reads"][..], "--serializable-reads is for the coord suite"),
        (&["chaos", "coord", "--nodes", "2"][..], "--nodes must be from 3 to 7"),
    ] {
        let out = Command::new(EXE).args(args).output().unwrap();
        assert!(!out.status.success(), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(says) && !err.contains("panicked"), "{args:?}: {err}");
    }
}

#[test]
fn version_and_help_read_well() {
    let out = Command::new(EXE).arg("version").output().unwrap();
    assert!(String::from_utf8(out.stdout).unwrap().starts_with("basalt "));
    let out = Command::new(EXE).arg("--help").output().unwrap();
    let help = String::from_utf8(out.stdout).unwrap();
    for word in ["serve", "bench", "version", "BASALT_"] {
        assert!(help.contains(word), "--help lacks {word}: {help}");
    }
}

#[tokio::test]
async fn health_metrics_errors_and_limits() {
    let dir = tempfile::tempdir().unwrap();
    let node = start(spec(dir.path()).arg("--set").arg("http.body_limit_bytes=1024")).await;
    let url = node.url();
    let c = client();
    assert_eq!(send(c.get(format!("{url}/healthz"))).await, (200, serde_json::json!({"status": "ok"})));
    assert_eq!(send(c.get(format!("{url}/readyz"))).await.0, 200);

    let (s, body) = send(c.get(format!("{url}/v1/nothing/here"))).await;
    assert_eq!(s, 404);
    assert_eq!(body["error"]["code"], "not_found");
    assert!(body["error"]["message"].as_str().unwrap().contains("/v1/nothing/here"));

    let (s, body) = send(c.post(format!("{url}/v1/ids")).body(vec![b'x'; 4096])).await;
    assert_eq!(s, 413, "{body}");
    assert_eq!(body["error"]["code"], "payload_too_large");

    let (s, body) = send(c.delete(format!("{url}/v1/ids"))).await;
    assert_eq!(s, 405, "{body}");
    assert_eq!(body["error"]["code"], "method_not_allowed");

    let resp = c.post(format!("{url}/v1/ids")).send().await.unwrap();
    assert!(resp.headers().contains_key("x-request-id"));

    let ok = metric(&url, r#"basalt_http_requests_total{method="POST",route="/v1/ids",status="200"}"#).await;
    assert_eq!(ok, Some(1.0));
    let text = c.get(format!("{url}/metrics")).send().await.unwrap().text().await.unwrap();
    assert!(text.contains(r#"basalt_http_request_duration_seconds_count{method="POST",route="/v1/ids"}"#), "{text}");
    assert!(text.contains("basalt_ids_issued_total"), "{text}");
}

#[tokio::test]
async fn sigterm_stops_cleanly_and_flushes() {
    let dir = tempfile::tempdir().unwrap();
    let mut node = start(spec(dir.path())).await;
    let url = node.url();
    let c = client();
    // Keep requests in flight while the signal arrives: none may fail with a reset.
    let load = tokio::spawn(async move {
        let c = client();
        let mut ok = 0;
        for _ in 0..200 {
            match c.post(format!("{url}/v1/ids?count=100")).send().await {
                Ok(r) if r.status().is_success() => ok += 1,
                Ok(r) => panic!("request failed during drain: {}", r.status()),
                Err(_) => break, // the listener has closed: new connections are refused
            }
        }
        ok
    });
    assert_eq!(send(c.post(format!("{}/v1/ids", node.url()))).await.0, 200);
    let status = node.terminate(Duration::from_secs(30)).await.unwrap();
    assert!(status.success(), "exit status {status}; log:\n{}", node.log());
    assert!(load.await.unwrap() >= 1);
    assert!(node.log().contains("stopped cleanly"), "{}", node.log());
    assert!(!node.data_dir().join("node.json").exists());
}

/// The node's fault controls answer only with `fault_injection = true`, and refuse bad bodies
/// in the node's error shape; the disk stall holds a durable write until it is lifted.
#[tokio::test]
async fn fault_controls_are_guarded_and_check_their_input() {
    let dir = tempfile::tempdir().unwrap();
    let plain = start(spec(dir.path())).await;
    for (path, body) in [
        ("/v1/node/disk", serde_json::json!({"fsync_stalled": true})),
        ("/v1/node/faults", serde_json::json!({"peers": {}})),
        ("/v1/node/clock", serde_json::json!({"offset_ms": 5})),
    ] {
        let (s, b) = send(client().put(format!("{}{path}", plain.url())).json(&body)).await;
        assert_eq!((s, b["error"]["code"].as_str()), (403, Some("fault_injection_disabled")), "{path}: {b}");
    }
    let (s, b) = send(client().get(format!("{}/v1/node/disk", plain.url()))).await;
    assert_eq!((s, b["error"]["code"].as_str()), (403, Some("fault_injection_disabled")), "{b}");
    drop(plain);

    let dir = tempfile::tempdir().unwrap();
    let node = start(spec(dir.path()).arg("--set").arg("fault_injection=true")).await;
    let url = node.url();
    for bad in
        [serde_json::json!({"fsync_stalled": "yes"}), serde_json::json!({"stalled": true}), serde_json::json!({})]
    {
        let (s, b) = send(client().put(format!("{url}/v1/node/disk")).json(&bad)).await;
        assert!((400..500).contains(&s) && b["error"]["code"].is_string(), "{bad}: {s} {b}");
    }
    // A stalled disk holds a durable write (a Raft entry; fsync = "always" is the default)
    // until released.
    let (s, b) =
        send(client().put(format!("{url}/v1/node/disk")).json(&serde_json::json!({"fsync_stalled": true}))).await;
    assert_eq!((s, b["fsync_stalled"].as_bool()), (200, Some(true)), "{b}");
    let write = tokio::spawn({
        let url = url.clone();
        async move { send(client().put(format!("{url}/v1/config/ns/stalled"))).await }
    });
    // The write waits for the disk (and says so on `GET /v1/node/disk`)…
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (s, b) = send(client().get(format!("{url}/v1/node/disk"))).await;
        assert_eq!((s, b["fsync_stalled"].as_bool()), (200, Some(true)), "{b}");
        if b["syncs_waiting"].as_u64() > Some(0) {
            break;
        }
        assert!(!write.is_finished(), "a durable write finished without waiting for the stalled disk");
        assert!(tokio::time::Instant::now() < deadline, "no write waited for the stalled disk: {b}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // …and is not answered while it is stalled.
    assert!(!write.is_finished(), "a durable write finished while the disk was stalled");
    let (s, _) =
        send(client().put(format!("{url}/v1/node/disk")).json(&serde_json::json!({"fsync_stalled": false}))).await;
    assert_eq!(s, 200);
    let (s, b) = write.await.unwrap();
    assert!((200..300).contains(&s), "{s} {b}");
}

/// The node asks the kernel for no transparent huge pages unless told to
/// (`transparent_huge_pages`): the kernel's own view of the process says which.
#[tokio::test]
async fn transparent_huge_pages_are_off_unless_asked_for() {
    fn thp_enabled(pid: u32) -> String {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc status");
        let line = status.lines().find(|l| l.starts_with("THP_enabled:")).expect("THP_enabled in /proc status");
        line["THP_enabled:".len()..].trim().to_string()
    }
    let dir = tempfile::tempdir().unwrap();
    let node = start(spec(&dir.path().join("off"))).await;
    assert_eq!(thp_enabled(node.pid()), "0");
    let node = start(spec(&dir.path().join("on")).arg("--set").arg("transparent_huge_pages=true")).await;
    assert_eq!(thp_enabled(node.pid()), "1");
}
