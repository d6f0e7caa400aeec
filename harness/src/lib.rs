//! The fault harness (`basalt chaos`, and the fault tests): start real `basalt` processes on
//! loopback ([`cluster`]), run clients that record what they saw, break things on a seeded
//! schedule ([`nemesis`]), and judge the history with `basalt_lincheck` ([`suites`]).

pub mod cluster;
pub mod nemesis;
pub mod suites;
pub mod timeline;

use std::time::Duration;

pub const START_TIMEOUT: Duration = Duration::from_secs(60);

pub fn client() -> reqwest::Client {
    reqwest::Client::builder().timeout(Duration::from_secs(10)).build().unwrap_or_default()
}

/// (status, parsed JSON body — or the text as a JSON string).
pub async fn send(req: reqwest::RequestBuilder) -> (u16, serde_json::Value) {
    match req.send().await {
        Ok(resp) => {
            let status = resp.status().as_u16();
            let text = resp.text().await.unwrap_or_default();
            (status, serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text)))
        }
        Err(e) => (0, serde_json::Value::String(e.to_string())),
    }
}

/// Wait (up to 60 s) until `pred` holds, polling every 20 ms; panics naming `what` otherwise.
pub async fn wait_until<F, Fut>(what: &str, mut pred: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while !pred().await {
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
