//! Shared by the end-to-end tests: start the real `basalt` binary on a temp dir.
#![allow(dead_code)]

use std::time::Duration;

use basalt_runtime::process::{NodeProcess, NodeSpec};

pub const EXE: &str = env!("CARGO_BIN_EXE_basalt");
pub const START_TIMEOUT: Duration = Duration::from_secs(60);

pub fn spec(dir: &std::path::Path) -> NodeSpec {
    NodeSpec::new(EXE, dir.join("node"))
}

pub async fn start(spec: NodeSpec) -> NodeProcess {
    NodeProcess::start(spec, START_TIMEOUT).await.expect("node starts")
}

pub fn client() -> reqwest::Client {
    reqwest::Client::new()
}

/// (status, parsed JSON body).
pub async fn send(req: reqwest::RequestBuilder) -> (u16, serde_json::Value) {
    let resp = req.send().await.expect("request sent");
    let status = resp.status().as_u16();
    let text = resp.text().await.expect("body");
    (status, serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text)))
}

/// The value of one Prometheus sample line, e.g. `basalt_ids_refusals_total{reason="clock_behind"}`.
pub async fn metric(url: &str, series: &str) -> Option<f64> {
    let text = client().get(format!("{url}/metrics")).send().await.ok()?.text().await.ok()?;
    text.lines().find_map(|l| l.strip_prefix(series).and_then(|rest| rest.trim().parse().ok()))
}
