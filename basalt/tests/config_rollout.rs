//! S03 guarded rollouts through real processes: three nodes in three regions (r1, r2, r3). A
//! change goes to the canary region first; a breaching health report rolls it back everywhere
//! at once; a healthy one is promoted by the leader when the bake time is over; every decision
//! is in the history, and regions outside the canary never see a rolled-back version.

mod common;

use basalt_harness::cluster::Cluster;
use common::*;
use serde_json::{Value, json};

fn regions(id: usize) -> Vec<String> {
    vec!["--set".into(), format!("systems.config.region=\"r{id}\"")]
}

async fn value_in(url: &str, key: &str) -> Option<u64> {
    let (s, b) = send(client().get(format!("{url}/v1/config/ns/g/keys/{key}?consistency=stale"))).await;
    if s != 200 {
        return None;
    }
    b["value"]["n"].as_u64()
}

/// Wait until node `id` serves `n` for `key`.
async fn wait_value(c: &Cluster, id: usize, key: &str, n: u64) {
    let url = c.url(id);
    c.wait_for(&format!("node {id} to serve {key}={n}"), || {
        let url = url.clone();
        async move { value_in(&url, key).await == Some(n) }
    })
    .await;
}

async fn report(url: &str, region: &str, errors: u64, requests: u64) -> (u16, Value) {
    send(client().post(format!("{url}/v1/config/health")).json(&json!({
        "region": region, "namespace": "g", "errors": errors, "requests": requests
    })))
    .await
}

async fn start_rollout(url: &str, n: u64, bake_ms: u64) -> u64 {
    let (s, b) =
        send(client().post(format!("{url}/v1/config/ns/g/rollouts")).header("x-author", "alice").json(&json!({
            "ops": [{"op": "put", "key": "k", "format": "json", "value": format!("{{\"n\": {n}}}")}],
            "canary_regions": ["r1"], "bake_ms": bake_ms, "max_error_rate": 0.1, "min_requests": 10,
            "message": format!("try n={n}")
        })))
        .await;
    assert_eq!(s, 201, "{b}");
    b["version"].as_u64().unwrap()
}

async fn rollout_state(url: &str) -> Value {
    send(client().get(format!("{url}/v1/config/ns/g/rollout"))).await.1
}

#[tokio::test]
async fn a_breaching_canary_is_rolled_back_everywhere_and_a_healthy_one_promoted() {
    let c = Cluster::start_with(EXE, 3, regions).await;
    let url = c.url(c.leader().await);
    let (s, b) = send(client().put(format!("{url}/v1/config/ns/g"))).await;
    assert_eq!(s, 201, "{b}");
    let (s, b) = send(
        client()
            .put(format!("{url}/v1/config/ns/g/keys/k"))
            .header("content-type", "application/json")
            .body("{\"n\": 1}"),
    )
    .await;
    assert_eq!(s, 200, "{b}");
    let before = b["version"].as_u64().unwrap();

    // 1. A rollout: the canary region r1 serves it, r2 and r3 keep the version before.
    let bad = start_rollout(&url, 2, 600_000).await;
    assert_eq!(bad, before + 1);
    wait_value(&c, 1, "k", 2).await;
    for id in [2, 3] {
        // Node `id` serves the same value before and after it learns of the rollout: wait until
        // it has applied the rollout (its newest version), then check what it serves.
        let url = c.url(id);
        c.wait_for(&format!("node {id} to learn of version {bad}"), || {
            let url = url.clone();
            async move {
                let (_, l) = send(client().get(format!("{url}/v1/config/ns/g/keys?consistency=stale"))).await;
                l["newest_version"].as_u64() == Some(bad)
            }
        })
        .await;
        wait_value(&c, id, "k", 1).await;
        let (_, l) = send(client().get(format!("{url}/v1/config/ns/g/keys?consistency=stale"))).await;
        assert_eq!((l["version"].as_u64(), l["newest_version"].as_u64()), (Some(before), Some(bad)), "{l}");
    }
    let r = rollout_state(&c.url(1)).await;
    assert_eq!((r["rollout"]["state"].as_str(), r["serving_here"].as_bool()), (Some("canary"), Some(true)), "{r}");
    assert_eq!(rollout_state(&c.url(2)).await["serving_here"], false);

    // The namespace takes no other change while the rollout bakes; promotion needs evidence.
    let (s, b) = send(
        client().put(format!("{url}/v1/config/ns/g/keys/other")).header("content-type", "application/json").body("1"),
    )
    .await;
    assert_eq!((s, b["error"]["code"].as_str()), (409, Some("rollout_in_progress")), "{b}");
    // Bad reports change nothing.
    let (s, b) = report(&url, "r1", 11, 10).await;
    assert_eq!((s, b["error"]["code"].as_str()), (400, Some("invalid_health_report")), "{b}");

    // 2. The canary region reports 5 errors in 40 requests (12.5% > 10%): rolled back at once,
    //    everywhere, as a new version authored by the guard.
    let (s, b) = report(&c.url(1), "r1", 5, 40).await;
    assert_eq!(s, 200, "{b}");
    for id in 1..=3 {
        wait_value(&c, id, "k", 1).await;
    }
    let r = rollout_state(&url).await["rollout"].clone();
    assert_eq!(r["state"], "rolled_back", "{r}");
    let rollback_version = r["rollback_version"].as_u64().unwrap();
    assert_eq!(rollback_version, bad + 1);
    assert_eq!(r["decided_by"], "basalt-guard");
    assert!(r["reason"].as_str().unwrap().contains("r1"), "{r}");
    let (_, h) = send(client().get(format!("{url}/v1/config/ns/g/history?since={before}"))).await;
    let changes = h["changes"].as_array().unwrap();
    assert_eq!(changes[0]["version"].as_u64(), Some(bad), "{h}");
    assert_eq!(changes[0]["rollout"]["state"], "rolled_back", "{h}");
    assert_eq!((changes[1]["version"].as_u64(), changes[1]["author"].as_str()), (Some(bad + 1), Some("basalt-guard")));

    // r2 never served the bad version: its watch skips it. r1 did, and sees both.
    let watched = |id: usize| {
        let u = c.url(id);
        async move {
            let (s, w) = send(client().get(format!("{u}/v1/config/ns/g/watch?since={before}&timeout_ms=1000"))).await;
            assert_eq!(s, 200, "{w}");
            w["changes"].as_array().unwrap().iter().map(|c| c["version"].as_u64().unwrap()).collect::<Vec<_>>()
        }
    };
    assert_eq!(watched(2).await, vec![bad + 1]);
    assert_eq!(watched(1).await, vec![bad, bad + 1]);

    // 3. A healthy rollout with a short bake is promoted by the leader without anyone asking.
    let good = start_rollout(&url, 3, 1500).await;
    wait_value(&c, 1, "k", 3).await;
    let (s, b) = report(&c.url(1), "r1", 0, 100).await;
    assert_eq!(s, 200, "{b}");
    for id in 1..=3 {
        wait_value(&c, id, "k", 3).await;
    }
    let r = rollout_state(&c.url(3)).await;
    assert_eq!((r["rollout"]["state"].as_str(), r["rollout"]["version"].as_u64()), (Some("promoted"), Some(good)));
    assert_eq!(r["rollout"]["decided_by"], "basalt-guard", "{r}");
    assert!(r["rollout"]["decided_at_ms"].as_u64().unwrap() >= r["rollout"]["bake_ends_ms"].as_u64().unwrap());
    // The namespace takes changes again.
    let (s, b) = send(
        client().put(format!("{url}/v1/config/ns/g/keys/other")).header("content-type", "application/json").body("1"),
    )
    .await;
    assert_eq!(s, 200, "{b}");
}

#[tokio::test]
async fn operators_promote_or_abort_by_hand_and_bad_rollouts_are_refused() {
    let c = Cluster::start_with(EXE, 3, regions).await;
    let url = c.url(c.leader().await);
    let (s, _) = send(client().put(format!("{url}/v1/config/ns/g"))).await;
    assert_eq!(s, 201);
    for (body, status, code) in [
        (json!({"ops": [], "canary_regions": ["r1"], "bake_ms": 10, "max_error_rate": 0.1}), 400, "empty_batch"),
        (
            json!({"ops": [{"op": "put", "key": "k", "value": "1"}], "canary_regions": [], "bake_ms": 10,
                   "max_error_rate": 0.1}),
            400,
            "invalid_rollout",
        ),
        (
            json!({"ops": [{"op": "put", "key": "k", "value": "1"}], "canary_regions": ["r1"], "bake_ms": 10,
                   "max_error_rate": 1.5}),
            400,
            "invalid_rollout",
        ),
        (
            json!({"ops": [{"op": "put", "key": "k", "value": "{"}], "canary_regions": ["r1"], "bake_ms": 10,
                   "max_error_rate": 0.1}),
            422,
            "invalid_value",
        ),
    ] {
        let (s, b) = send(client().post(format!("{url}/v1/config/ns/g/rollouts")).json(&body)).await;
        assert_eq!((s, b["error"]["code"].as_str()), (status, Some(code)), "{body} -> {b}");
    }
    let (s, b) = send(client().post(format!("{url}/v1/config/ns/g/rollout/promote"))).await;
    assert_eq!((s, b["error"]["code"].as_str()), (409, Some("no_rollout")), "{b}");
    let (_, ns) = send(client().get(format!("{url}/v1/config/ns/g"))).await;
    assert_eq!(ns["version"].as_u64(), Some(1), "refused rollouts changed nothing: {ns}");

    // Forced promotion, through a follower (forwarded to the leader).
    let v = start_rollout(&url, 7, 600_000).await;
    let follower = (1..=3).find(|id| c.url(*id) != url).unwrap();
    let (s, b) =
        send(client().post(format!("{}/v1/config/ns/g/rollout/promote", c.url(follower))).header("x-author", "bob"))
            .await;
    assert_eq!(s, 200, "{b}");
    for id in 1..=3 {
        wait_value(&c, id, "k", 7).await;
    }
    let r = rollout_state(&url).await["rollout"].clone();
    assert_eq!(
        (r["state"].as_str(), r["decided_by"].as_str(), r["version"].as_u64()),
        (Some("promoted"), Some("bob"), Some(v))
    );

    // Abort by hand, with a reason that lands in the history.
    let v2 = start_rollout(&url, 8, 600_000).await;
    wait_value(&c, 1, "k", 8).await;
    let (s, b) =
        send(client().post(format!("{url}/v1/config/ns/g/rollout/abort")).json(&json!({"reason": "pager went off"})))
            .await;
    assert_eq!(s, 200, "{b}");
    for id in 1..=3 {
        wait_value(&c, id, "k", 7).await;
    }
    let (_, h) = send(client().get(format!("{url}/v1/config/ns/g/history?since={}", v2 - 1))).await;
    let entry = &h["changes"][0];
    assert_eq!((entry["version"].as_u64(), entry["rollout"]["state"].as_str()), (Some(v2), Some("rolled_back")), "{h}");
    assert_eq!(entry["rollout"]["reason"], "pager went off");
}
