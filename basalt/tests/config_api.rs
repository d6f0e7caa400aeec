//! S03's HTTP API on one node: formats, schema, compare-and-set, history, rollback, watches,
//! and a clear 4xx for every kind of bad input, with nothing partly applied.

mod common;

use std::time::Duration;

use common::*;

async fn put_raw(url: &str, path: &str, ct: &str, body: &str) -> (u16, serde_json::Value) {
    send(client().put(format!("{url}{path}")).header("content-type", ct).body(body.to_string())).await
}

#[tokio::test]
async fn formats_versions_history_and_rollback() {
    let dir = tempfile::tempdir().unwrap();
    let node = start(spec(dir.path())).await;
    let url = node.url();
    assert_eq!(send(client().put(format!("{url}/v1/config/ns/web"))).await.0, 201);
    let (s, b) =
        put_raw(&url, "/v1/config/ns/web/keys/limits", "application/json", r#"{"rps": 100, "burst": [1, 2]}"#).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["version"], 2);
    let (s, b) = put_raw(
        &url,
        "/v1/config/ns/web/keys/limits?author=ana&message=raise",
        "application/yaml",
        "rps: 200\nburst: [1, 2]\n",
    )
    .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["version"], 3);
    assert_eq!(b["author"], "ana");
    let (s, b) = put_raw(&url, "/v1/config/ns/web/keys/db/pool", "application/toml", "size = 10\n").await;
    assert_eq!(s, 200, "{b}");

    let (s, b) = send(client().get(format!("{url}/v1/config/ns/web/keys/limits"))).await;
    assert_eq!(s, 200);
    assert_eq!(b["value"], serde_json::json!({"rps": 200, "burst": [1, 2]}));
    assert_eq!(b["format"], "yaml");
    let (_, b) = send(client().get(format!("{url}/v1/config/ns/web/keys/limits?version=2"))).await;
    assert_eq!(b["value"]["rps"], 100);
    let (_, b) = send(client().get(format!("{url}/v1/config/ns/web/keys/db/pool"))).await;
    assert_eq!(b["value"]["size"], 10);

    let (_, h) = send(client().get(format!("{url}/v1/config/ns/web/history"))).await;
    let changes = h["changes"].as_array().unwrap();
    assert_eq!(changes.len(), 4, "{h}");
    let diff = &changes[2]["keys"][0]["diff"];
    assert!(diff.to_string().contains("/rps"), "{diff}");

    let (_, before) = send(client().get(format!("{url}/v1/config/ns/web?consistency=stale"))).await;
    let (s, b) =
        send(client().post(format!("{url}/v1/config/ns/web/rollback")).json(&serde_json::json!({"to_version": 2})))
            .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["version"], 5);
    let (_, b) = send(client().get(format!("{url}/v1/config/ns/web/keys/limits"))).await;
    assert_eq!(b["value"]["rps"], 100);
    assert_eq!(send(client().get(format!("{url}/v1/config/ns/web/keys/db/pool"))).await.0, 404);
    let (_, after) = send(client().get(format!("{url}/v1/config/ns/web"))).await;
    assert_ne!(before["content_hash"], after["content_hash"]);
}

#[tokio::test]
async fn bad_input_is_a_clear_4xx_and_changes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let node = start(spec(dir.path())).await;
    let url = node.url();
    let schema = serde_json::json!({"schema": {"type": "object", "properties": {"rps": {"type": "integer", "minimum": 1}}, "required": ["rps"]}});
    let (s, b) = send(client().put(format!("{url}/v1/config/ns/guarded")).json(&schema)).await;
    assert_eq!(s, 201, "{b}");
    assert_eq!(put_raw(&url, "/v1/config/ns/guarded/keys/a", "application/json", r#"{"rps": 5}"#).await.0, 200);
    let (_, before) = send(client().get(format!("{url}/v1/config/ns/guarded"))).await;

    let big = format!("{{\"x\": \"{}\"}}", "y".repeat(300 * 1024));
    let cases: Vec<(&str, String, &str, String, u16, &str)> = vec![
        ("PUT", "/v1/config/ns/guarded/keys/a".into(), "application/json", r#"{"rps": 5"#.into(), 422, "invalid_value"),
        ("PUT", "/v1/config/ns/guarded/keys/a".into(), "application/yaml", "rps: [".into(), 422, "invalid_value"),
        ("PUT", "/v1/config/ns/guarded/keys/a".into(), "application/toml", "rps = ".into(), 422, "invalid_value"),
        (
            "PUT",
            "/v1/config/ns/guarded/keys/a".into(),
            "application/json",
            r#"{"rps": 0}"#.into(),
            422,
            "schema_violation",
        ),
        (
            "PUT",
            "/v1/config/ns/guarded/keys/a?expected_version=1".into(),
            "application/json",
            r#"{"rps": 7}"#.into(),
            409,
            "version_mismatch",
        ),
        (
            "PUT",
            "/v1/config/ns/nope/keys/a".into(),
            "application/json",
            r#"{"rps": 7}"#.into(),
            404,
            "unknown_namespace",
        ),
        ("PUT", "/v1/config/ns/guarded/keys/a".into(), "application/json", big, 413, "value_too_large"),
        (
            "PUT",
            "/v1/config/ns/guarded/keys/a?format=xml".into(),
            "application/json",
            "{}".into(),
            400,
            "invalid_format",
        ),
        ("PUT", "/v1/config/ns/bad%20name".into(), "application/json", String::new(), 400, "invalid_namespace_name"),
    ];
    for (method, path, ct, body, status, code) in cases {
        let req =
            client().request(method.parse().unwrap(), format!("{url}{path}")).header("content-type", ct).body(body);
        let (s, b) = send(req).await;
        assert_eq!(s, status, "{method} {path}: {b}");
        assert_eq!(b["error"]["code"], code, "{method} {path}: {b}");
        assert!(!b["error"]["message"].as_str().unwrap_or("").is_empty());
    }
    let (s, b) = send(
        client().post(format!("{url}/v1/config/ns/guarded/rollback")).json(&serde_json::json!({"to_version": 99})),
    )
    .await;
    assert_eq!((s, b["error"]["code"].as_str()), (404, Some("unknown_version")), "{b}");
    let (_, after) = send(client().get(format!("{url}/v1/config/ns/guarded"))).await;
    assert_eq!(before, after, "a rejected write changed the namespace");
}

#[tokio::test]
async fn batches_are_one_version_all_or_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let node = start(spec(dir.path())).await;
    let url = node.url();
    assert_eq!(send(client().put(format!("{url}/v1/config/ns/b"))).await.0, 201);
    let ok = serde_json::json!({"ops": [
        {"op": "put", "key": "a", "value": "{\"x\": 1}"},
        {"op": "put", "key": "b", "format": "yaml", "value": "x: 2"},
    ], "message": "two at once"});
    let (s, b) = send(client().post(format!("{url}/v1/config/ns/b/batch")).json(&ok)).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["version"], 2);
    assert_eq!(b["keys"].as_array().unwrap().len(), 2);
    // One bad op rejects the whole batch: `a` keeps its value, `c` is not created.
    let bad = serde_json::json!({"ops": [
        {"op": "put", "key": "c", "value": "{}"},
        {"op": "put", "key": "a", "value": "{not json"},
    ]});
    let (s, b) = send(client().post(format!("{url}/v1/config/ns/b/batch")).json(&bad)).await;
    assert_eq!((s, b["error"]["code"].as_str()), (422, Some("invalid_value")), "{b}");
    let (_, b) = send(client().get(format!("{url}/v1/config/ns/b/keys"))).await;
    assert_eq!(b["version"], 2);
    assert_eq!(b["keys"].as_array().unwrap().len(), 2);
    let (s, b) = send(
        client()
            .post(format!("{url}/v1/config/ns/b/batch"))
            .json(&serde_json::json!({"ops": [{"op": "delete", "key": "a"}, {"op": "delete", "key": "a"}]})),
    )
    .await;
    assert_eq!((s, b["error"]["code"].as_str()), (400, Some("duplicate_key_in_batch")), "{b}");
    let (s, b) = send(
        client()
            .post(format!("{url}/v1/config/ns/b/batch"))
            .json(&serde_json::json!({"ops": [{"op": "rename", "key": "a"}]})),
    )
    .await;
    assert_eq!((s, b["error"]["code"].as_str()), (422, Some("invalid_json")), "{b}");
}

#[tokio::test]
async fn watches_resume_without_gaps_or_duplicates() {
    let dir = tempfile::tempdir().unwrap();
    let node = start(spec(dir.path())).await;
    let url = node.url();
    assert_eq!(send(client().put(format!("{url}/v1/config/ns/w"))).await.0, 201);
    // A long-poll started alongside the writes returns them, whether it arrived first or not.
    let waiter = {
        let url = url.clone();
        tokio::spawn(
            async move { send(client().get(format!("{url}/v1/config/ns/w/watch?since=1&timeout_ms=20000"))).await },
        )
    };
    for i in 0..5 {
        assert_eq!(
            put_raw(&url, &format!("/v1/config/ns/w/keys/k{i}"), "application/json", &i.to_string()).await.0,
            200
        );
    }
    let (s, b) = waiter.await.unwrap();
    assert_eq!(s, 200, "{b}");
    let first: Vec<u64> = b["changes"].as_array().unwrap().iter().map(|c| c["version"].as_u64().unwrap()).collect();
    assert!(!first.is_empty() && first[0] == 2, "{first:?}");
    // Resume from where it stopped: the rest, in order, nothing twice.
    let mut seen = first.clone();
    let mut since = *first.last().unwrap();
    while since < 6 {
        let (_, b) = send(client().get(format!("{url}/v1/config/ns/w/watch?since={since}&timeout_ms=5000"))).await;
        for c in b["changes"].as_array().unwrap() {
            seen.push(c["version"].as_u64().unwrap());
        }
        since = b["next_since"].as_u64().unwrap();
    }
    assert_eq!(seen, vec![2, 3, 4, 5, 6]);

    // SSE from a Last-Event-ID: the events after it, ids in order.
    let resp = client()
        .get(format!("{url}/v1/config/ns/w/watch"))
        .header("accept", "text/event-stream")
        .header("last-event-id", "4")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let mut body = String::new();
    let mut resp = resp;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while body.matches("id: ").count() < 2 {
        let chunk = tokio::time::timeout_at(deadline, resp.chunk()).await.expect("events in time").unwrap().unwrap();
        body.push_str(&String::from_utf8_lossy(&chunk));
    }
    let ids: Vec<&str> = body.lines().filter_map(|l| l.strip_prefix("id: ")).collect();
    assert_eq!(ids, vec!["5", "6"], "{body}");
}

#[tokio::test]
async fn single_node_restart_reapplies_committed_writes() {
    // A restarted node rebuilds its state from the snapshot and the committed log (openraft
    // issue #1246 was a restarted node that did not re-apply what was committed).
    let dir = tempfile::tempdir().unwrap();
    let mut node = start(spec(dir.path())).await;
    let url = node.url();
    assert_eq!(send(client().put(format!("{url}/v1/config/ns/d"))).await.0, 201);
    for i in 0..10 {
        assert_eq!(
            put_raw(&url, &format!("/v1/config/ns/d/keys/k{i}"), "application/json", &i.to_string()).await.0,
            200
        );
    }
    node.kill9().unwrap();
    let node = start(spec(dir.path())).await;
    let (s, b) = send(client().get(format!("{}/v1/config/ns/d/keys", node.url()))).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["keys"].as_array().unwrap().len(), 10, "{b}");
    assert_eq!(b["version"], 11);
}
