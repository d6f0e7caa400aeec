//! S06 through the real binary: rules over HTTP (replicated on the consensus engine), decisions
//! with RateLimit headers, overrides, shadow mode, hot reload keeping state, concurrency
//! release, and bad input.

mod common;

use basalt_harness::cluster::Cluster;
use common::*;
use serde_json::json;

async fn check(url: &str, rule: &str, key: &str) -> (u16, serde_json::Value, reqwest::header::HeaderMap) {
    let r = client()
        .post(format!("{url}/v1/ratelimit/check"))
        .json(&json!({"rule": rule, "key": key}))
        .send()
        .await
        .unwrap();
    let (s, h) = (r.status().as_u16(), r.headers().clone());
    (s, r.json().await.unwrap(), h)
}

async fn put_rule(url: &str, name: &str, rule: serde_json::Value) -> (u16, serde_json::Value) {
    send(client().put(format!("{url}/v1/ratelimit/rules/{name}")).json(&rule)).await
}

#[tokio::test]
async fn decisions_headers_overrides_shadow_reload_and_errors() {
    let dir = tempfile::tempdir().unwrap();
    let n = start(spec(dir.path())).await;
    let url = n.url();
    let bucket = |cap: u64| json!({"algorithm": "token_bucket", "capacity": cap, "refill": cap, "period_ms": 60_000});
    let (s, b) = put_rule(&url, "api", json!({"limiter": bucket(3), "overrides": {"vip": bucket(10)}})).await;
    assert_eq!(s, 200, "{b}");
    for want in [2, 1, 0] {
        let (s, b, h) = check(&url, "api", "alice").await;
        assert_eq!((s, b["remaining"].as_u64()), (200, Some(want)), "{b}");
        assert_eq!(h["ratelimit-limit"], "3");
    }
    let (s, b, h) = check(&url, "api", "alice").await;
    assert_eq!(s, 429, "{b}");
    assert_eq!(b["allowed"], false);
    let retry: u64 = h["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=20).contains(&retry), "a token every 20 s: retry after {retry}");
    // Another key has its own bucket; the override key a bigger one.
    assert_eq!(check(&url, "api", "bob").await.0, 200);
    assert_eq!(check(&url, "api", "vip").await.1["remaining"], 9);

    // Hot reload: a bigger bucket keeps what alice spent.
    let (s, _) = put_rule(&url, "api", json!({"limiter": bucket(5)})).await;
    assert_eq!(s, 200);
    let (s, b, _) = check(&url, "api", "alice").await;
    assert_eq!(s, 429, "the reload did not forget alice's spending: {b}");

    // Shadow mode decides and counts, never blocks.
    put_rule(
        &url,
        "trial",
        json!({"limiter": {"algorithm": "fixed_window", "limit": 1, "period_ms": 60_000}, "shadow": true}),
    )
    .await;
    assert_eq!(check(&url, "trial", "k").await.1["would_block"], false);
    let (s, b, _) = check(&url, "trial", "k").await;
    assert_eq!((s, b["allowed"].as_bool(), b["would_block"].as_bool()), (200, Some(true), Some(true)), "{b}");

    // Concurrency: acquire twice, refuse the third, release one.
    put_rule(&url, "inflight", json!({"limiter": {"algorithm": "concurrency", "limit": 2}})).await;
    assert_eq!(check(&url, "inflight", "job").await.0, 200);
    assert_eq!(check(&url, "inflight", "job").await.0, 200);
    assert_eq!(check(&url, "inflight", "job").await.0, 429);
    let (s, _) =
        send(client().post(format!("{url}/v1/ratelimit/release")).json(&json!({"rule": "inflight", "key": "job"})))
            .await;
    assert_eq!(s, 200);
    assert_eq!(check(&url, "inflight", "job").await.0, 200);

    // Bad input: clear errors, nothing stored.
    let (s, b) =
        put_rule(&url, "bad", json!({"limiter": {"algorithm": "fixed_window", "limit": 5, "period_ms": 0}})).await;
    assert_eq!((s, b["error"]["code"].as_str()), (400, Some("invalid_rule")), "{b}");
    assert!(b["error"]["message"].as_str().unwrap().contains("period"), "{b}");
    let (s, b) = put_rule(&url, "bad", json!({"limiter": {"algorithm": "magic"}})).await;
    assert_eq!(s, 422, "an unknown algorithm is a body that does not parse: {b}");
    assert!(b["error"]["message"].as_str().unwrap().contains("magic"), "{b}");
    let (s, _) = send(client().get(format!("{url}/v1/ratelimit/rules/bad"))).await;
    assert_eq!(s, 404, "refused rules are not stored");
    let (s, b, _) = check(&url, "nope", "k").await;
    assert_eq!((s, b["error"]["code"].as_str()), (404, Some("unknown_rule")), "{b}");
    let (s, b) =
        send(client().post(format!("{url}/v1/ratelimit/check")).json(&json!({"rule": "api", "key": "k", "cost": -1})))
            .await;
    assert_eq!(s, 422, "a negative cost is refused: {b}");
    assert!(b["error"]["message"].as_str().unwrap().contains("cost"), "{b}");
    let (s, b) =
        send(client().post(format!("{url}/v1/ratelimit/release")).json(&json!({"rule": "api", "key": "k"}))).await;
    assert_eq!((s, b["error"]["code"].as_str()), (400, Some("not_a_concurrency_rule")), "{b}");
}

#[tokio::test]
async fn rules_are_replicated_to_every_node() {
    let c = Cluster::start(EXE, 3).await;
    let leader = c.leader().await;
    let (s, b) = put_rule(
        &c.url(leader),
        "shared",
        json!({"limiter": {"algorithm": "gcra", "max_burst": 1, "count": 1, "period_ms": 60_000}, "scope": "node"}),
    )
    .await;
    assert_eq!(s, 200, "{b}");
    for id in 1..=3 {
        let url = c.url(id);
        c.wait_for(&format!("node {id} to have the rule"), || {
            let url = url.clone();
            async move { send(client().get(format!("{url}/v1/ratelimit/rules/shared"))).await.0 == 200 }
        })
        .await;
        // A node-scope rule: each node counts alone, two per node.
        assert_eq!(check(&url, "shared", "k").await.0, 200);
        assert_eq!(check(&url, "shared", "k").await.0, 200);
        assert_eq!(check(&url, "shared", "k").await.0, 429);
    }
}

/// A cluster-scope rule on 3 nodes: clients on every node at once never get more than the
/// rule's limit in total (every unit is first admitted by the key's owner), and little less;
/// when the owner is cut off, `closed` refuses and `open` decides locally.
#[tokio::test]
async fn cluster_scope_never_over_admits_and_fails_open_or_closed() {
    let c = Cluster::start(EXE, 3).await;
    let leader = c.leader().await;
    let window = |limit: u64| json!({"algorithm": "fixed_window", "limit": limit, "period_ms": 600_000});
    for (name, mode) in [("shared", "open"), ("strict", "closed")] {
        let (s, b) = put_rule(&c.url(leader), name, json!({"limiter": window(30), "on_unreachable": mode})).await;
        assert_eq!(s, 200, "{b}");
    }
    for id in 1..=3 {
        let url = c.url(id);
        c.wait_for("the rules everywhere", || {
            let url = url.clone();
            async move { send(client().get(format!("{url}/v1/ratelimit/rules/strict"))).await.0 == 200 }
        })
        .await;
    }
    // 3 clients per node, 30 checks each: 270 asks for a limit of 30.
    let mut tasks = Vec::new();
    for id in 1..=3 {
        for _ in 0..3 {
            let url = c.url(id);
            tasks.push(tokio::spawn(async move {
                let mut ok = 0u64;
                for _ in 0..30 {
                    if check(&url, "shared", "tenant-1").await.0 == 200 {
                        ok += 1;
                    }
                }
                ok
            }));
        }
    }
    let mut admitted = 0;
    for t in tasks {
        admitted += t.await.unwrap();
    }
    assert!(admitted <= 30, "over-admission: {admitted} admitted for a limit of 30");
    assert!(admitted >= 24, "at most the unspent allowances are lost: {admitted}");

    // Cut the owner of ("strict", "k") off: another node refuses (closed) …
    let (_, b, _) = check(&c.url(1), "strict", "k").await;
    let owner = b["owner"].as_u64().unwrap() as usize;
    let other = (1..=3).find(|id| *id != owner).unwrap();
    c.isolate(owner).await;
    let (s, b, _) = check(&c.url(other), "strict", "k").await;
    assert_eq!((s, b["degraded"].as_str()), (429, Some("owner_unreachable")), "{b}");
    // … and the open rule decides there alone.
    let (_, b, _) = check(&c.url(1), "shared", "k2").await;
    let owner2 = b["owner"].as_u64().unwrap() as usize;
    c.heal().await;
    c.isolate(owner2).await;
    let other2 = (1..=3).find(|id| *id != owner2).unwrap();
    let (s, b, _) = check(&c.url(other2), "shared", "k2").await;
    assert_eq!((s, b["degraded"].as_str()), (200, Some("decided_locally")), "{b}");
    c.heal().await;

    // CL.THROTTLE on every node's RESP port counts once for the cluster: a burst of 10 (and one
    // more per hour) asked for 30 times across the three nodes admits exactly 10.
    let mut admitted = 0;
    for i in 0..30 {
        let url = c.url(1 + i % 3);
        let resp = send(client().get(format!("{url}/v1/kv"))).await.1["resp_addr"].as_str().unwrap().to_owned();
        let mut r = basalt_runtime::redis::Redis::connect(&resp, std::time::Duration::from_secs(5)).await.unwrap();
        match r.cmd(&[b"CL.THROTTLE", b"login:alice", b"9", b"1", b"3600"]).await.unwrap() {
            basalt_resp::Frame::Array(v) if v.len() == 5 => {
                assert_eq!(v[1], basalt_resp::Frame::Integer(10), "{v:?}");
                if v[0] == basalt_resp::Frame::Integer(0) {
                    admitted += 1;
                }
            }
            other => panic!("not redis-cell's reply: {other:?}"),
        }
    }
    assert_eq!(admitted, 10, "the cluster admits the burst once, not once per node");
}

/// Descriptor hierarchies over HTTP, Envoy's RLS through Envoy's own Python data-plane API, and
/// the HTTP layer that puts a node's routes behind a rule.
#[tokio::test]
async fn descriptors_envoy_rls_and_the_http_layer() {
    let dir = tempfile::tempdir().unwrap();
    let n = start(
        spec(dir.path())
            .arg("--set")
            .arg("http.rate_limit.rule=\"edge\"")
            .arg("--set")
            .arg("http.rate_limit.key=\"header:x-api-key\""),
    )
    .await;
    let url = n.url();
    let window = |limit: u64| json!({"algorithm": "fixed_window", "limit": limit, "period_ms": 60_000});
    let get_root = |key: &'static str| client().get(format!("{url}/")).header("x-api-key", key).send();

    // The layer: with its rule missing every route says why; with it, two per key.
    let r = get_root("a").await.unwrap();
    assert_eq!(r.status(), 503);
    assert!(r.text().await.unwrap().contains("no rule `edge`"));
    assert_eq!(put_rule(&url, "edge", json!({"limiter": window(2)})).await.0, 200);
    for left in ["1", "0"] {
        let r = get_root("a").await.unwrap();
        assert_eq!((r.status().as_u16(), r.headers()["ratelimit-remaining"].to_str().unwrap()), (200, left));
    }
    let r = get_root("a").await.unwrap();
    assert_eq!(r.status(), 429);
    assert!(r.headers().contains_key("retry-after"));
    assert_eq!(r.json::<serde_json::Value>().await.unwrap()["error"]["code"], "rate_limited");
    assert_eq!(get_root("b").await.unwrap().status(), 200, "another key counts alone");
    assert_eq!(send(client().get(format!("{url}/healthz"))).await.0, 200);

    // A hierarchy: 5 per tenant, 2 per API key within it.
    let d = |keys: &[&str]| json!({"keys": keys});
    assert_eq!(put_rule(&url, "tenant", json!({"limiter": window(5), "descriptor": d(&["tenant"])})).await.0, 200);
    // `overrides` name a level's joined key: acme's `vip` key gets 3.
    let rule =
        json!({"limiter": window(2), "descriptor": d(&["tenant", "api_key"]), "overrides": {"acme/vip": window(3)}});
    let (s, b) = put_rule(&url, "key", rule).await;
    assert_eq!(s, 200, "{b}");
    let (s, b) = put_rule(&url, "dup", json!({"limiter": window(9), "descriptor": d(&["tenant"])})).await;
    assert_eq!((s, b["error"]["code"].as_str()), (400, Some("invalid_rule")), "{b}");
    assert!(b["error"]["message"].as_str().unwrap().contains("already limited by rule `tenant`"), "{b}");
    let desc = |api_key: &str| {
        let body = json!({"descriptor": [["tenant", "acme"], ["api_key", api_key], ["route", "/orders"]]});
        send(client().post(format!("{url}/v1/ratelimit/check")).json(&body))
    };
    for _ in 0..2 {
        let (s, b) = desc("k1").await;
        assert_eq!((s, b["levels"].as_array().unwrap().len()), (200, 2), "{b}");
    }
    let (s, b) = desc("k1").await;
    assert_eq!((s, b["binding"].as_str()), (429, Some("key")), "the API key's own limit binds: {b}");
    assert_eq!(b["levels"][0]["key"], "acme");
    assert_eq!(b["levels"][1]["key"], "acme/k1");
    assert_eq!(desc("k2").await.0, 200, "another API key of the tenant has its own 2");
    // k1's refused third request passed the tenant's level and counts there (as in Envoy's
    // service): k1 3 + k2 1 + k3 1 spend the tenant's 5.
    let (s, b) = desc("k3").await;
    assert_eq!((s, b["levels"][0]["remaining"].as_u64()), (200, Some(0)), "{b}");
    let (s, b) = desc("k4").await;
    assert_eq!((s, b["binding"].as_str()), (429, Some("tenant")), "{b}");
    let (_, b) = desc("vip").await;
    assert_eq!((b["levels"][1]["key"].as_str(), b["levels"][1]["limit"].as_u64()), (Some("acme/vip"), Some(3)), "{b}");
    let too_long: Vec<[String; 2]> = (0..17).map(|i| [format!("k{i}"), "v".into()]).collect();
    let (s, b) = send(client().post(format!("{url}/v1/ratelimit/check")).json(&json!({"descriptor": too_long}))).await;
    assert_eq!((s, b["error"]["code"].as_str()), (400, Some("invalid_descriptor")), "{b}");
    for bad in [
        json!({"descriptor": []}),
        json!({"rule": "tenant"}),
        json!({"rule": "tenant", "key": "x", "descriptor": [["a", "b"]]}),
    ] {
        let (s, b) = send(client().post(format!("{url}/v1/ratelimit/check")).json(&bad)).await;
        assert_eq!(s, 400, "{bad} → {b}");
    }

    // Envoy's RLS: one remote address per minute in domain `envoy`.
    let rls = send(client().get(format!("{url}/v1/ratelimit"))).await.1["grpc_addr"].as_str().unwrap().to_owned();
    let rule = json!({"limiter": window(1), "descriptor": {"domain": "envoy", "keys": ["remote_address"]}});
    assert_eq!(put_rule(&url, "per_ip", rule).await.0, 200);
    let rule = json!({"limiter": window(3), "descriptor": {"domain": "envoy", "keys": ["user"]}});
    assert_eq!(put_rule(&url, "per_user", rule).await.0, 200);
    let script = r#"
import sys, grpc
from envoy_data_plane.envoy.service.ratelimit.v3 import RateLimitRequest, RateLimitServiceSyncStub
from envoy_data_plane.envoy.extensions.common.ratelimit.v3 import RateLimitDescriptor, RateLimitDescriptorEntry
stub = RateLimitServiceSyncStub(grpc.insecure_channel(sys.argv[1]))
def ask(key, value, domain="envoy", hits=1):
    d = RateLimitDescriptor(entries=[RateLimitDescriptorEntry(key=key, value=value)])
    return stub.should_rate_limit(RateLimitRequest(domain=domain, descriptors=[d], hits_addend=hits))
for _ in range(2):
    r = ask("remote_address", "10.0.0.1")
    s = r.statuses[0]
    print(r.overall_code.name, s.code.name, s.current_limit.requests_per_unit, s.current_limit.unit.name, s.limit_remaining)
print(ask("remote_address", "10.0.0.2").overall_code.name)
print(ask("path", "/x").overall_code.name, ask("remote_address", "10.0.0.1", "other").overall_code.name)
# hits_addend is the cost; the binding status's RateLimit headers come back for the proxy.
for _ in range(2):
    r = ask("user", "ann", hits=2)
    h = {x.key: x.value for x in r.response_headers_to_add}
    print(r.overall_code.name, r.statuses[0].limit_remaining, h.get("ratelimit-limit"), h.get("ratelimit-remaining"))
for bad in ([], [RateLimitDescriptor(entries=[])]):
    try:
        stub.should_rate_limit(RateLimitRequest(domain="envoy", descriptors=bad))
    except grpc.RpcError as e:
        print(e.code().name)
"#;
    let out = std::process::Command::new("python3").arg("-c").arg(script).arg(&rls).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}\n{stdout}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(
        stdout.lines().collect::<Vec<_>>(),
        [
            "OK OK 1 MINUTE 0",
            "OVER_LIMIT OVER_LIMIT 1 MINUTE 0",
            "OK",
            "OK OK",
            "OK 1 3 1",
            "OVER_LIMIT 1 3 1",
            "INVALID_ARGUMENT",
            "INVALID_ARGUMENT"
        ],
        "{stdout}"
    );
}
