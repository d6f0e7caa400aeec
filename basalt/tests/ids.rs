//! S01 through the real binary: every kind, bad input, concurrent uniqueness, and the restart
//! with the clock set back after `kill -9`.

mod common;

use std::collections::HashSet;
use std::process::Command;

use common::*;

async fn issue(url: &str, kind: &str, count: usize) -> Vec<String> {
    let (s, body) = send(client().post(format!("{url}/v1/ids?kind={kind}&count={count}"))).await;
    assert_eq!(s, 200, "{body}");
    body.as_array().unwrap().iter().map(|v| v.as_str().unwrap().to_string()).collect()
}

async fn decode(url: &str, id: &str) -> serde_json::Value {
    let (s, body) = send(client().get(format!("{url}/v1/ids/{id}/decode"))).await;
    assert_eq!(s, 200, "{id}: {body}");
    body
}

async fn max_timestamp(url: &str, ids: &[String]) -> u64 {
    let mut max = 0;
    for id in ids {
        max = max.max(decode(url, id).await["timestamp_ms"].as_u64().unwrap());
    }
    max
}

#[tokio::test]
async fn every_kind_issues_decodable_unique_ids() {
    let dir = tempfile::tempdir().unwrap();
    let node = start(spec(dir.path())).await;
    let url = node.url();
    let before = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64;
    for (kind, len) in [("snowflake", None), ("ulid", Some(26)), ("uuidv7", Some(36))] {
        let ids = issue(&url, kind, 5000).await;
        assert_eq!(ids.len(), 5000);
        assert_eq!(ids.iter().collect::<HashSet<_>>().len(), 5000, "{kind}: duplicates");
        if let Some(len) = len {
            assert!(ids.iter().all(|i| i.len() == len), "{kind}: {:?}", &ids[..3]);
            let mut sorted = ids.clone();
            sorted.sort();
            assert_eq!(sorted, ids, "{kind}: one generator per kind is monotonic");
        }
        let d = decode(&url, &ids[0]).await;
        assert_eq!(d["kind"], kind, "{d}");
        let ts = d["timestamp_ms"].as_u64().unwrap();
        assert!(ts + 5_000 >= before && ts <= before + 60_000, "{kind} timestamp {ts} vs {before}");
        assert!(d["timestamp"].as_str().unwrap().ends_with('Z'));
    }
    let one = issue(&url, "snowflake", 1).await;
    let d = decode(&url, &one[0]).await;
    let status = send(client().get(format!("{url}/v1/ids/status"))).await.1;
    let workers: Vec<u64> =
        status["leases"].as_array().unwrap().iter().map(|l| l["worker"].as_u64().unwrap()).collect();
    assert_eq!(workers.len(), 8);
    assert!(workers.contains(&d["worker"].as_u64().unwrap()), "{d} not from {workers:?}");
    assert!(status["leases"][0]["fencing"].as_u64().unwrap() >= 1);
}

#[tokio::test]
async fn bad_input_gets_a_400_that_says_what_is_wrong() {
    let dir = tempfile::tempdir().unwrap();
    let node = start(spec(dir.path())).await;
    let url = node.url();
    let c = client();
    let cases = [
        ("POST", "/v1/ids?kind=twitter", "invalid_kind", "snowflake"),
        ("POST", "/v1/ids?count=0", "invalid_count", "100000"),
        ("POST", "/v1/ids?count=100001", "invalid_count", "100000"),
        ("POST", "/v1/ids?count=-5", "invalid_count", "-5"),
        ("POST", "/v1/ids?count=ten", "invalid_count", "ten"),
        ("POST", "/v1/ids?cuont=3", "invalid_query", "cuont"),
        ("GET", "/v1/ids/hello/decode", "invalid_id", ""),
        ("GET", "/v1/ids/99999999999999999999999/decode", "invalid_id", ""),
        ("GET", "/v1/ids/18446744073709551615/decode", "invalid_id", ""),
        ("GET", "/v1/ids/01ARZ3NDEKTSV4RRFFQ69G5FA!/decode", "invalid_id", ""),
        ("GET", "/v1/ids/123e4567-e89b-42d3-a456-426614174000/decode", "invalid_id", "version"),
        ("GET", "/v1/ids/123/decode?kind=ulid", "invalid_id", ""),
    ];
    for (method, path, code, mentions) in cases {
        let req = if method == "POST" { c.post(format!("{url}{path}")) } else { c.get(format!("{url}{path}")) };
        let (s, body) = send(req).await;
        assert_eq!(s, 400, "{method} {path}: {body}");
        assert_eq!(body["error"]["code"], code, "{method} {path}: {body}");
        let msg = body["error"]["message"].as_str().unwrap();
        assert!(
            msg.to_lowercase().contains(&mentions.to_lowercase()),
            "{method} {path}: `{msg}` should mention `{mentions}`"
        );
    }
    assert_eq!(issue(&url, "snowflake", 100_000).await.len(), 100_000, "the limit itself is allowed");
}

#[tokio::test]
async fn concurrent_requests_never_share_an_id() {
    let dir = tempfile::tempdir().unwrap();
    // 2 generators × 256 IDs per ms (8 sequence bits): every 2,000-ID request outruns a
    // millisecond, so shards hand over and requests wait — the contended path is exercised.
    let node = start(
        spec(dir.path())
            .arg("--set")
            .arg("systems.ids.generators=2")
            .arg("--set")
            .arg("systems.ids.sequence_bits=8")
            .arg("--set")
            .arg("systems.ids.worker_bits=14"),
    )
    .await;
    let url = node.url();
    let mut tasks = Vec::new();
    for t in 0..16 {
        let url = url.clone();
        tasks.push(tokio::spawn(async move {
            let mut all = Vec::new();
            for _ in 0..20 {
                all.extend(issue(&url, if t % 4 == 0 { "ulid" } else { "snowflake" }, 2000).await);
            }
            all
        }));
    }
    let mut seen = HashSet::new();
    for t in tasks {
        for id in t.await.unwrap() {
            assert!(seen.insert(id.clone()), "duplicate {id}");
        }
    }
    assert_eq!(seen.len(), 16 * 20 * 2000);
    assert!(metric(&url, "basalt_ids_waits_total").await.unwrap() > 0.0);
}

/// The restart case: IDs acknowledged, `kill -9`, the node comes back with its clock a minute
/// behind. It must refuse rather than issue an ID for a timestamp it may already have used; a
/// small step back is waited out; and once the clock is right every new ID is above the old.
#[tokio::test]
async fn restart_with_clock_set_back_refuses_below_the_high_water_mark() {
    let dir = tempfile::tempdir().unwrap();
    let mut node = start(spec(dir.path())).await;
    let url = node.url();
    let mut before = Vec::new();
    for kind in ["snowflake", "ulid", "uuidv7"] {
        before.push((kind, issue(&url, kind, 1000).await));
    }
    let mut old_max = 0;
    for (_, ids) in &before {
        old_max = old_max.max(max_timestamp(&url, &ids[ids.len() - 1..]).await);
    }
    node.kill9().unwrap();

    // A minute back: refused, with the reason, a Retry-After and a metric.
    let mut back = start(spec(dir.path()).env("BASALT_CLOCK_OFFSET_MS", "-60000")).await;
    let burl = back.url();
    for kind in ["snowflake", "ulid", "uuidv7"] {
        let resp = client().post(format!("{burl}/v1/ids?kind={kind}")).send().await.unwrap();
        assert_eq!(resp.status().as_u16(), 503, "{kind}");
        assert!(resp.headers().contains_key("retry-after"));
        let body: serde_json::Value = resp.json().await.unwrap();
        assert_eq!(body["error"]["code"], "clock_behind", "{body}");
        assert!(body["error"]["message"].as_str().unwrap().contains("behind"), "{body}");
    }
    let refused = metric(&burl, r#"basalt_ids_refusals_total{reason="clock_behind"}"#).await;
    assert_eq!(refused, Some(3.0));
    back.kill9().unwrap();

    // 300 ms back: within max_clock_wait_ms, so requests wait it out and succeed.
    let slow = start(spec(dir.path()).env("BASALT_CLOCK_OFFSET_MS", "-300")).await;
    let surl = slow.url();
    for (kind, old) in &before {
        let new = issue(&surl, kind, 1000).await;
        let new_min = new.iter().min().unwrap();
        if *kind != "snowflake" {
            assert!(new_min > old.iter().max().unwrap(), "{kind}: {new_min} not above the old IDs");
        }
        let mut min_ts = u64::MAX;
        for id in new.iter().take(50) {
            min_ts = min_ts.min(decode(&surl, id).await["timestamp_ms"].as_u64().unwrap());
        }
        assert!(min_ts > old_max, "{kind}: new timestamp {min_ts} <= old {old_max}");
    }
}

#[test]
fn bench_prints_exactly_one_json_object() {
    let out = Command::new(EXE)
        .args([
            "bench",
            "ids",
            "--json",
            "--duration",
            "150ms",
            "--warmup",
            "20ms",
            "--concurrency",
            "2",
            "--threads",
            "2",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8(out.stdout).unwrap();
    let v: serde_json::Value = serde_json::from_str(text.trim()).expect("exactly one JSON object on stdout");
    assert_eq!(v["system"], "ids");
    let results = v["results"].as_array().unwrap();
    assert!(results.len() >= 7, "{v}");
    for r in results {
        assert!(r["value"].as_f64().unwrap() > 0.0, "{r}");
        assert_eq!(r["unit"], "ops/s");
        assert!(r["p50_us"].as_f64().is_some() && r["p99_us"].as_f64().is_some());
    }
    assert!(results.iter().any(|r| r["peer"] == "uuid crate Uuid::now_v7()" && r["ratio"].as_f64().is_some()));
    let bad = Command::new(EXE).args(["bench", "nosuch"]).output().unwrap();
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("ids"));
}
