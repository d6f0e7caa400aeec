//! S04 through the real binary: the admin API (validation with field paths, audit diffs,
//! conditional writes, scheduled changes, environment copies, the kill switch), OFREP, the Rust
//! SDK (streaming, resume after a restart without a snapshot, last known flags while offline),
//! propagation after the consensus leader is killed, and the kill switch reaching 20 connected
//! SDKs. The PyPI OpenFeature OFREP provider is tested in `flags_ofrep_python`.

mod common;

use std::time::Duration;

use basalt_flags_sdk::{ClientOptions, EvalContext, FlagsClient};
use basalt_harness::cluster::Cluster;
use basalt_harness::wait_until;
use common::*;
use serde_json::{Value, json};

const ENV: &str = "/v1/flags/projects/shop/environments";

fn bool_flag(enabled: bool) -> Value {
    json!({
        "kind": "boolean",
        "variants": {"on": true, "off": false},
        "enabled": enabled,
        "off_variant": "off",
        "fallthrough": {"variant": "off"},
        "rules": [{"id": "pros", "clauses": [{"attribute": "plan", "op": "equals", "values": ["pro"]}], "serve": {"variant": "on"}}],
    })
}

/// Create project `shop` with environment `env` on `url`; answers the SDK key.
async fn setup(url: &str, env: &str) -> String {
    let (s, b) = send(client().post(format!("{url}/v1/flags/projects")).json(&json!({"project": "shop"}))).await;
    assert!(s == 201 || b["error"]["code"] == "already_exists", "{s} {b}");
    let (s, b) = send(client().post(format!("{url}{ENV}")).json(&json!({"environment": env}))).await;
    assert_eq!(s, 201, "{b}");
    b["sdk_key"].as_str().unwrap().to_owned()
}

async fn put_flag(url: &str, env: &str, key: &str, flag: &Value) -> (u16, Value) {
    send(client().put(format!("{url}{ENV}/{env}/flags/{key}")).header("x-author", "ann").json(flag)).await
}

async fn ofrep(url: &str, key: Option<&str>, sdk: &str, body: Value) -> (u16, Value) {
    let path = key.map_or("/ofrep/v1/evaluate/flags".to_owned(), |k| format!("/ofrep/v1/evaluate/flags/{k}"));
    send(client().post(format!("{url}{path}")).bearer_auth(sdk).json(&body)).await
}

#[tokio::test]
async fn admin_api_audit_schedules_copies_kill_switch_and_ofrep() {
    let mut c = Cluster::start(EXE, 1).await;
    let url = c.url(1);
    let sdk = setup(&url, "prod").await;

    // Bad definitions: 400 with the path of the offending field; nothing stored.
    let mut bad = bool_flag(true);
    bad["rules"][0]["clauses"][0]["op"] = json!("equal");
    let (s, b) = put_flag(&url, "prod", "checkout", &bad).await;
    assert_eq!((s, b["error"]["code"].as_str()), (400, Some("invalid_definition")), "{b}");
    assert_eq!(b["error"]["field"], "rules[0].clauses[0].op", "{b}");
    let mut bad = bool_flag(true);
    bad["rules"][0]["serve"] = json!({"variant": "maybe"});
    let (s, b) = put_flag(&url, "prod", "checkout", &bad).await;
    assert_eq!(s, 400, "{b}");
    assert_eq!(b["error"]["field"], "rules[0].serve.variant", "{b}");
    let mut bad = bool_flag(true);
    bad["key"] = json!("other");
    assert_eq!(put_flag(&url, "prod", "checkout", &bad).await.1["error"]["code"], "key_mismatch");
    let (s, b) = put_flag(&url, "prod", "bad key!", &bool_flag(true)).await;
    assert_eq!((s, b["error"]["code"].as_str()), (400, Some("invalid_name")), "{b}");
    let (_, env) = send(client().get(format!("{url}{ENV}/prod"))).await;
    assert_eq!(env["version"], 0, "nothing was stored: {env}");

    // A good flag, then a conditional write with a stale version.
    let (s, b) = put_flag(&url, "prod", "checkout", &bool_flag(true)).await;
    assert_eq!((s, b["version"].as_u64()), (200, Some(1)), "{b}");
    let stale = client().post(format!("{url}{ENV}/prod/flags/checkout/disable?expected_version=0"));
    let (s, b) = send(stale).await;
    assert_eq!((s, b["error"]["code"].as_str()), (409, Some("version_conflict")), "{b}");

    // A prerequisite on a missing flag is refused with its path; deleting a needed flag is `in_use`.
    let mut dep = bool_flag(true);
    dep["prerequisites"] = json!([{"flag": "nope", "variant": "on"}]);
    let (s, b) = put_flag(&url, "prod", "dep", &dep).await;
    assert_eq!(s, 400, "{b}");
    assert_eq!(b["error"]["field"], "flags[\"dep\"].prerequisites[0].flag", "{b}");
    dep["prerequisites"] = json!([{"flag": "checkout", "variant": "on"}]);
    assert_eq!(put_flag(&url, "prod", "dep", &dep).await.0, 200);
    let (s, b) = send(client().delete(format!("{url}{ENV}/prod/flags/checkout"))).await;
    assert_eq!((s, b["error"]["code"].as_str()), (409, Some("in_use")), "{b}");
    assert_eq!(send(client().delete(format!("{url}{ENV}/prod/flags/dep"))).await.0, 200);

    // OFREP: single, errors, bulk with ETag.
    let (s, b) = ofrep(&url, Some("checkout"), &sdk, json!({"context": {"targetingKey": "u1", "plan": "pro"}})).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(
        (b["value"].as_bool(), b["reason"].as_str(), b["variant"].as_str()),
        (Some(true), Some("TARGETING_MATCH"), Some("on"))
    );
    assert_eq!(b["metadata"]["ruleId"], "pros");
    let (s, b) = ofrep(&url, Some("checkout"), &sdk, json!({"context": {"targetingKey": "u1", "plan": "free"}})).await;
    assert_eq!((s, b["value"].as_bool(), b["reason"].as_str()), (200, Some(false), Some("DEFAULT")), "{b}");
    let (s, b) = ofrep(&url, Some("missing"), &sdk, json!({"context": {}})).await;
    assert_eq!((s, b["errorCode"].as_str(), b["key"].as_str()), (404, Some("FLAG_NOT_FOUND"), Some("missing")), "{b}");
    let (s, b) = ofrep(&url, Some("checkout"), &sdk, json!({"context": "nope"})).await;
    assert_eq!((s, b["errorCode"].as_str()), (400, Some("INVALID_CONTEXT")), "{b}");
    let (s, b) = ofrep(&url, Some("checkout"), "sdk-wrong", json!({})).await;
    assert_eq!(s, 401, "{b}");
    let (s, _) = send(client().post(format!("{url}/ofrep/v1/evaluate/flags/checkout")).json(&json!({}))).await;
    assert_eq!(s, 401, "no key and no default environment");
    let split = json!({"kind": "string", "variants": {"a": "A", "b": "B"}, "enabled": true, "off_variant": "a",
        "fallthrough": {"rollout": {"weights": [["a", 50000], ["b", 50000]]}}});
    assert_eq!(put_flag(&url, "prod", "split", &split).await.0, 200);
    let (s, b) = ofrep(&url, Some("split"), &sdk, json!({"context": {"plan": "pro"}})).await;
    assert_eq!((s, b["errorCode"].as_str()), (400, Some("TARGETING_KEY_MISSING")), "{b}");
    let bulk = |ctx: Value, tag: Option<String>| {
        let mut r =
            client().post(format!("{url}/ofrep/v1/evaluate/flags")).bearer_auth(&sdk).json(&json!({"context": ctx}));
        if let Some(t) = tag {
            r = r.header("if-none-match", t);
        }
        r.send()
    };
    let r = bulk(json!({"targetingKey": "u9"}), None).await.unwrap();
    let tag = r.headers()["etag"].to_str().unwrap().to_owned();
    let b: Value = r.json().await.unwrap();
    assert_eq!(b["flags"].as_array().unwrap().len(), 2, "{b}");
    assert_eq!(bulk(json!({"targetingKey": "u9"}), Some(tag.clone())).await.unwrap().status(), 304);
    assert_eq!(bulk(json!({"targetingKey": "u10"}), Some(tag.clone())).await.unwrap().status(), 200);

    // The audit history: who, what, and the field diff.
    assert_eq!(
        send(client().post(format!("{url}{ENV}/prod/flags/checkout/disable")).header("x-author", "bob")).await.0,
        200
    );
    let (_, h) = send(client().get(format!("{url}{ENV}/prod/history?key=checkout"))).await;
    let last = h.as_array().unwrap().last().unwrap().clone();
    assert_eq!((last["author"].as_str(), last["action"].as_str()), (Some("bob"), Some("disable_flag")), "{h}");
    assert!(
        last["changes"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["path"] == "enabled" && c["before"] == true && c["after"] == false),
        "{last}"
    );
    // The bulk ETag moved with the environment.
    assert_eq!(bulk(json!({"targetingKey": "u9"}), Some(tag)).await.unwrap().status(), 200);

    // A scheduled change runs when due (the leader proposes it).
    let (s, b) = send(client().post(format!("{url}{ENV}/prod/schedules")).json(&json!({
        "run_in_ms": 300, "change": {"action": "set_enabled", "key": "checkout", "enabled": true}})))
    .await;
    assert_eq!(s, 201, "{b}");
    let (s, b) = send(client().post(format!("{url}{ENV}/prod/schedules")).json(&json!({
        "run_in_ms": 300, "change": {"action": "set_enabled", "key": "checkout"}})))
    .await;
    assert_eq!((s, b["error"]["code"].as_str()), (400, Some("invalid_definition")), "{b}");
    wait_until("the scheduled enable", || async {
        send(client().get(format!("{url}{ENV}/prod/flags/checkout"))).await.1["enabled"] == true
    })
    .await;
    let (_, log) = send(client().get(format!("{url}/v1/flags/schedules/log"))).await;
    assert!(log[0]["version"].is_u64(), "{log}");

    // Copy an environment; the kill switch turns the flag off in both at once.
    let (s, b) =
        send(client().post(format!("{url}{ENV}")).json(&json!({"environment": "staging", "copy_from": "prod"}))).await;
    assert_eq!((s, b["flags"].as_u64()), (201, Some(2)), "{b}");
    let staging_sdk = b["sdk_key"].as_str().unwrap().to_owned();
    let (s, b) =
        send(client().post(format!("{url}/v1/flags/projects/shop/flags/checkout/kill")).header("x-author", "oncall"))
            .await;
    assert_eq!((s, b.as_array().map(Vec::len)), (200, Some(2)), "{b}");
    for key in [&sdk, &staging_sdk] {
        let (s, b) = ofrep(&url, Some("checkout"), key, json!({"context": {"plan": "pro"}})).await;
        assert_eq!((s, b["reason"].as_str(), b["value"].as_bool()), (200, Some("DISABLED"), Some(false)), "{b}");
    }

    // Polling with ETag.
    let r = client().get(format!("{url}/v1/flags/snapshot")).bearer_auth(&sdk).send().await.unwrap();
    let tag = r.headers()["etag"].to_str().unwrap().to_owned();
    let r = client().get(format!("{url}{ENV}/prod/snapshot")).header("if-none-match", &tag).send().await.unwrap();
    assert_eq!(r.status(), 304);

    // The leader's delta push is a node-to-node route: not on the public address.
    assert_eq!(send(client().post(format!("{url}/flags/push")).body("[]")).await.0, 404);

    // Everything survives kill -9.
    let (_, before) = send(client().get(format!("{url}{ENV}/prod/flags"))).await;
    c.kill9(1);
    c.restart(1).await;
    let url = c.url(1);
    wait_until("the restarted node answers", || async {
        send(client().get(format!("{url}{ENV}/prod/flags"))).await.0 == 200
    })
    .await;
    assert_eq!(send(client().get(format!("{url}{ENV}/prod/flags"))).await.1, before);
}

fn sdk(urls: Vec<String>, key: &str) -> FlagsClient {
    let mut o = ClientOptions::new(urls, key);
    o.idle_timeout = Duration::from_secs(3);
    o.reconnect_max = Duration::from_millis(500);
    FlagsClient::start(o)
}

#[tokio::test]
async fn the_sdk_streams_keeps_its_flags_offline_and_resumes_without_a_snapshot() {
    let mut c = Cluster::start_with_args(EXE, 1, vec!["--set".into(), "systems.flags.keepalive_ms=500".into()]).await;
    let url = c.url(1);
    let key = setup(&url, "prod").await;
    put_flag(&url, "prod", "checkout", &bool_flag(true)).await;
    let client_sdk = sdk(vec![url.clone()], &key);
    client_sdk.ready(Duration::from_secs(10)).await.unwrap();
    let pro = EvalContext::with_key("u1").attr("plan", "pro");
    assert!(client_sdk.bool_value("checkout", &pro, false));
    assert!(!client_sdk.bool_value("missing", &pro, false));

    // A change arrives as a delta.
    send(client().post(format!("{url}{ENV}/prod/flags/checkout/disable"))).await;
    assert!(client_sdk.wait_for_version(2, Duration::from_secs(10)).await);
    assert!(!client_sdk.bool_value("checkout", &pro, true));
    assert_eq!((client_sdk.stats().snapshots, client_sdk.stats().deltas), (1, 1));

    // The server dies: the SDK keeps serving what it knew.
    c.kill9(1);
    wait_until("the SDK notices", || async { !client_sdk.stats().connected }).await;
    assert!(!client_sdk.bool_value("checkout", &pro, true), "last known flags while offline");

    // Back up; changes resume from the version the SDK holds, without a snapshot.
    c.restart(1).await;
    let url = c.url(1);
    wait_until("a write after the restart", || async {
        send(client().post(format!("{url}{ENV}/prod/flags/checkout/enable"))).await.0 == 200
    })
    .await;
    assert!(client_sdk.wait_for_version(3, Duration::from_secs(20)).await, "{}", client_sdk.last_error());
    assert!(client_sdk.bool_value("checkout", &pro, false));
    let stats = client_sdk.stats();
    assert_eq!(stats.snapshots, 1, "resumed with deltas: {stats:?}");
    assert!(stats.connects >= 2, "{stats:?}");
}

#[tokio::test]
async fn changes_and_the_kill_switch_reach_every_sdk_after_the_leader_is_killed() {
    let mut c = Cluster::start_with_args(EXE, 3, vec!["--set".into(), "systems.flags.keepalive_ms=500".into()]).await;
    let key = setup(&c.url(1), "prod").await;
    put_flag(&c.url(1), "prod", "checkout", &bool_flag(true)).await;
    let urls: Vec<String> = (1..=3).map(|i| c.url(i)).collect();
    // 20 SDKs, spread over the three nodes (each knows all three for failover).
    let sdks: Vec<FlagsClient> = (0..20)
        .map(|i| {
            let mut u = urls.clone();
            u.rotate_left(i % 3);
            sdk(u, &key)
        })
        .collect();
    for s in &sdks {
        s.ready(Duration::from_secs(20)).await.unwrap();
    }

    let leader = c.leader().await;
    c.kill9(leader);
    let alive = c.live()[0];
    let url = c.url(alive);
    // The change waits for a new leader (503 no_leader until then).
    let mut flag = bool_flag(true);
    flag["fallthrough"] = json!({"variant": "on"});
    wait_until("a write through a survivor", || async { put_flag(&url, "prod", "checkout", &flag).await.0 == 200 })
        .await;
    let free = EvalContext::with_key("u2").attr("plan", "free");
    for (i, s) in sdks.iter().enumerate() {
        assert!(s.wait_for_version(2, Duration::from_secs(30)).await, "SDK {i}: {}", s.last_error());
        assert!(s.bool_value("checkout", &free, false), "SDK {i}");
    }

    // The kill switch reaches every connected SDK.
    let (s, b) = send(client().post(format!("{url}/v1/flags/projects/shop/flags/checkout/kill"))).await;
    assert_eq!(s, 200, "{b}");
    for (i, s) in sdks.iter().enumerate() {
        assert!(s.wait_for_version(3, Duration::from_secs(30)).await, "SDK {i}: {}", s.last_error());
        let d = s.bool_details("checkout", &free, true);
        assert_eq!((d.value, d.reason), (false, basalt_flags_sdk::Reason::Disabled), "SDK {i}");
    }
}

/// OpenFeature's Python SDK with the PyPI OFREP provider, unchanged, against a node.
#[tokio::test]
async fn the_openfeature_python_ofrep_provider_works_unchanged() {
    let c = Cluster::start(EXE, 1).await;
    let url = c.url(1);
    let key = setup(&url, "prod").await;
    put_flag(&url, "prod", "checkout", &bool_flag(true)).await;
    put_flag(&url, "prod", "off-flag", &bool_flag(false)).await;
    let banner = json!({"kind": "string", "variants": {"a": "hello", "b": "bonjour"}, "enabled": true,
        "off_variant": "a", "fallthrough": {"variant": "a"},
        "rules": [{"id": "fr", "clauses": [{"attribute": "country", "op": "in", "values": ["FR", "BE"]}], "serve": {"variant": "b"}}]});
    put_flag(&url, "prod", "banner", &banner).await;
    let limit = json!({"kind": "number", "variants": {"low": 10, "high": 100}, "enabled": true, "off_variant": "low",
        "fallthrough": {"variant": "high"}});
    put_flag(&url, "prod", "limit", &limit).await;
    let script = r#"
import sys
from openfeature import api
from openfeature.evaluation_context import EvaluationContext
from openfeature.contrib.provider.ofrep import OFREPProvider

url, key = sys.argv[1], sys.argv[2]
api.set_provider(OFREPProvider(url, headers_factory=lambda: {"Authorization": f"Bearer {key}"}))
c = api.get_client()
pro = EvaluationContext(targeting_key="u1", attributes={"plan": "pro", "country": "FR"})
free = EvaluationContext(targeting_key="u2", attributes={"plan": "free"})
d = c.get_boolean_details("checkout", False, pro)
print("checkout-pro", d.value, d.reason, d.variant)
d = c.get_boolean_details("checkout", True, free)
print("checkout-free", d.value, d.reason)
d = c.get_boolean_details("off-flag", True, pro)
print("off-flag", d.value, d.reason)
d = c.get_string_details("banner", "x", pro)
print("banner", d.value, d.reason)
d = c.get_integer_details("limit", 0, free)
print("limit", d.value)
d = c.get_boolean_details("missing", True, pro)
print("missing", d.value, d.error_code)
"#;
    let out = std::process::Command::new("python3").arg("-c").arg(script).arg(&url).arg(&key).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}\n{stdout}", String::from_utf8_lossy(&out.stderr));
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(
        lines,
        [
            "checkout-pro True TARGETING_MATCH on",
            "checkout-free False DEFAULT",
            "off-flag False DISABLED",
            "banner bonjour TARGETING_MATCH",
            "limit 100",
            "missing True FLAG_NOT_FOUND",
        ],
        "{stdout}"
    );
}
