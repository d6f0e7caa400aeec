//! S32 through the real binary: the Stripe-shaped API with idempotency keys (replay byte for
//! byte, 422 on other parameters, 409 while in flight, validation failures not stored), the
//! ledger API (batches, linked chains, overdraft limits, two-phase transfers, reversals,
//! history), merchant webhooks through the outbox, PyPI `stripe` unchanged, and a randomized
//! fault test: many clients retrying with the same keys while the simulated provider times out
//! after charging, fails and reorders webhooks, and nodes (leaders included) are killed with
//! -9 — after every step the provider never charged an intent twice, the ledger balances,
//! every captured payment is posted exactly once and every intent is terminal or recoverable.

use std::collections::{BTreeMap, HashMap};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use basalt_harness::cluster::Cluster;
use basalt_harness::wait_until;
use serde_json::{Value, json};

const EXE: &str = env!("CARGO_BIN_EXE_basalt");

/// The simulated provider as its own process (killed on drop).
struct ProviderProc {
    child: Child,
    url: String,
}

impl ProviderProc {
    fn start(dir: &std::path::Path) -> Self {
        let mut child = Command::new(EXE)
            .args(["payments-provider", "--addr", "127.0.0.1:0", "--data"])
            .arg(dir.join("provider.jsonl"))
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("provider starts");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        let v: Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("provider said {line:?}: {e}"));
        Self { child, url: format!("http://{}", v["addr"].as_str().unwrap()) }
    }
}

impl Drop for ProviderProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn client() -> reqwest::Client {
    reqwest::Client::builder().timeout(Duration::from_secs(15)).build().unwrap()
}

/// (status, body text, replayed header).
async fn post_form(url: &str, path: &str, key: Option<&str>, form: &str) -> (u16, String, bool) {
    let mut r = client()
        .post(format!("{url}{path}"))
        .header("content-type", "application/x-www-form-urlencoded")
        .bearer_auth("sk_test_1")
        .body(form.to_owned());
    if let Some(k) = key {
        r = r.header("idempotency-key", k);
    }
    match r.send().await {
        Ok(resp) => {
            let s = resp.status().as_u16();
            let replayed = resp.headers().get("idempotent-replayed").is_some();
            (s, resp.text().await.unwrap_or_default(), replayed)
        }
        Err(e) => (0, e.to_string(), false),
    }
}

async fn get(url: &str) -> (u16, Value) {
    match client().get(url).send().await {
        Ok(r) => {
            let s = r.status().as_u16();
            let t = r.text().await.unwrap_or_default();
            (s, serde_json::from_str(&t).unwrap_or(Value::String(t)))
        }
        Err(e) => (0, Value::String(e.to_string())),
    }
}

async fn post_json(url: &str, body: &Value) -> (u16, Value) {
    match client().post(url).json(body).send().await {
        Ok(r) => {
            let s = r.status().as_u16();
            let t = r.text().await.unwrap_or_default();
            (s, serde_json::from_str(&t).unwrap_or(Value::String(t)))
        }
        Err(e) => (0, Value::String(e.to_string())),
    }
}

fn provider_args(provider: &str) -> Vec<String> {
    vec![
        "--set".into(),
        format!("systems.payments.provider_url=\"{provider}\""),
        "--set".into(),
        "systems.payments.provider_timeout_ms=500".into(),
        "--set".into(),
        "systems.payments.inline_grace_ms=1000".into(),
        "--set".into(),
        "systems.payments.request_wait_ms=4000".into(),
    ]
}

/// A merchant endpoint: answers 200 to every POST and keeps the bodies.
async fn merchant_endpoint() -> (String, Arc<Mutex<Vec<Value>>>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hooks", listener.local_addr().unwrap());
    let got: Arc<Mutex<Vec<Value>>> = Arc::default();
    let seen = got.clone();
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            let seen = seen.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 8192];
                loop {
                    let Ok(n) = sock.read(&mut chunk).await else { return };
                    if n == 0 {
                        return;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    let text = String::from_utf8_lossy(&buf).to_string();
                    let Some((head, body)) = text.split_once("\r\n\r\n") else { continue };
                    let len = head
                        .lines()
                        .find_map(|l| {
                            l.to_ascii_lowercase()
                                .strip_prefix("content-length:")
                                .map(|v| v.trim().parse().unwrap_or(0))
                        })
                        .unwrap_or(0usize);
                    if body.len() < len {
                        continue;
                    }
                    if let Ok(v) = serde_json::from_str(&body[..len]) {
                        seen.lock().unwrap().push(v);
                    }
                    let _ = sock.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n").await;
                    buf.clear();
                }
            });
        }
    });
    (url, got)
}

#[tokio::test]
async fn stripe_api_idempotency_ledger_and_webhooks() {
    let dir = tempfile::tempdir().unwrap();
    let provider = ProviderProc::start(dir.path());
    let mut c = Cluster::start_with_args(EXE, 1, provider_args(&provider.url)).await;
    let url = c.url(1);
    let (hooks, received) = merchant_endpoint().await;
    let (s, b) = client()
        .put(format!("{url}/v1/payments/webhook_endpoints"))
        .json(&json!({"urls": [hooks]}))
        .send()
        .await
        .map(|r| (r.status().as_u16(), r))
        .unwrap();
    assert_eq!(s, 200, "{:?}", b.text().await);

    // Validation failures: Stripe's errors, and the key stays free.
    let (s, b, _) = post_form(&url, "/v1/payment_intents", Some("k-1"), "amount=abc&currency=usd").await;
    assert_eq!(s, 400, "{b}");
    let e: Value = serde_json::from_str(&b).unwrap();
    assert_eq!(
        (e["error"]["type"].as_str(), e["error"]["code"].as_str(), e["error"]["param"].as_str()),
        (Some("invalid_request_error"), Some("parameter_invalid_integer"), Some("amount")),
        "{b}"
    );
    for (form, code) in [
        ("currency=usd", "parameter_missing"),
        ("amount=0&currency=usd", "amount_too_small"),
        ("amount=100000000&currency=usd", "amount_too_large"),
        ("amount=100&currency=xyz", "invalid_currency"),
        ("amount=100&currency=usd&bogus=1", "parameter_unknown"),
        ("amount=100&currency=usd&capture_method=later", "parameter_invalid"),
    ] {
        let (s, b, _) = post_form(&url, "/v1/payment_intents", Some("k-1"), form).await;
        let e: Value = serde_json::from_str(&b).unwrap();
        assert_eq!((s, e["error"]["code"].as_str()), (400, Some(code)), "{form}: {b}");
    }

    // The key's first valid use runs; the same request replays byte for byte; other
    // parameters are 422.
    let form = "amount=2000&currency=usd&payment_method=pm_card_visa&metadata[order]=7";
    let (s, first, replayed) = post_form(&url, "/v1/payment_intents", Some("k-1"), form).await;
    assert_eq!((s, replayed), (200, false), "{first}");
    let pi: Value = serde_json::from_str(&first).unwrap();
    assert_eq!((pi["object"].as_str(), pi["status"].as_str()), (Some("payment_intent"), Some("requires_confirmation")));
    assert_eq!(pi["metadata"]["order"], "7");
    let id = pi["id"].as_str().unwrap().to_owned();
    let (s, again, replayed) = post_form(&url, "/v1/payment_intents", Some("k-1"), form).await;
    assert_eq!((s, replayed, &again), (200, true, &first));
    let (s, b, _) = post_form(&url, "/v1/payment_intents", Some("k-1"), "amount=2001&currency=usd").await;
    let e: Value = serde_json::from_str(&b).unwrap();
    assert_eq!((s, e["error"]["type"].as_str()), (422, Some("idempotency_error")), "{b}");

    // A confirm in flight (the provider is slow): the same key meanwhile is 409.
    post_json(&format!("{}/faults", provider.url), &json!({"delay_ms": 400})).await;
    let confirm = {
        let (url, id) = (url.clone(), id.clone());
        tokio::spawn(
            async move { post_form(&url, &format!("/v1/payment_intents/{id}/confirm"), Some("k-2"), "").await },
        )
    };
    wait_until("the confirm waits on the provider", || async {
        get(&format!("{url}/v1/payments/audit")).await.1["waiters"] == 1
    })
    .await;
    let (s, b, _) = post_form(&url, &format!("/v1/payment_intents/{id}/confirm"), Some("k-2"), "").await;
    let e: Value = serde_json::from_str(&b).unwrap();
    assert_eq!((s, e["error"]["code"].as_str()), (409, Some("idempotency_key_in_use")), "{b}");
    let (s, confirmed, _) = confirm.await.unwrap();
    assert_eq!(s, 200, "{confirmed}");
    let v: Value = serde_json::from_str(&confirmed).unwrap();
    assert_eq!((v["status"].as_str(), v["amount_received"].as_u64()), (Some("succeeded"), Some(2000)), "{v}");
    let (_, replay, replayed) = post_form(&url, &format!("/v1/payment_intents/{id}/confirm"), Some("k-2"), "").await;
    assert_eq!((replay, replayed), (confirmed.clone(), true));
    post_json(&format!("{}/faults", provider.url), &json!({})).await;

    // A decline is an error produced during execution: stored and replayed (402).
    let form = "amount=300&currency=eur&payment_method=pm_card_chargeDeclined&confirm=true";
    let (s, declined, _) = post_form(&url, "/v1/payment_intents", Some("k-3"), form).await;
    let e: Value = serde_json::from_str(&declined).unwrap();
    assert_eq!(
        (s, e["error"]["type"].as_str(), e["error"]["decline_code"].as_str()),
        (402, Some("card_error"), Some("generic_decline")),
        "{declined}"
    );
    assert_eq!(e["error"]["payment_intent"]["status"], "requires_payment_method");
    assert_eq!(post_form(&url, "/v1/payment_intents", Some("k-3"), form).await.1, declined);
    // A state error is stored too.
    let (s, b, _) = post_form(&url, &format!("/v1/payment_intents/{id}/cancel"), Some("k-4"), "").await;
    assert_eq!(s, 400, "{b}");
    assert!(b.contains("payment_intent_unexpected_state"), "{b}");

    // Refunds: partial, then more than is left.
    let (s, b, _) = post_form(&url, "/v1/refunds", Some("k-5"), &format!("payment_intent={id}&amount=500")).await;
    let r: Value = serde_json::from_str(&b).unwrap();
    assert_eq!((s, r["object"].as_str(), r["status"].as_str()), (200, Some("refund"), Some("succeeded")), "{b}");
    let (s, b, _) = post_form(&url, "/v1/refunds", Some("k-6"), &format!("payment_intent={id}&amount=1501")).await;
    assert_eq!(s, 400, "{b}");
    assert_eq!(get(&format!("{url}/v1/refunds/{}", r["id"].as_str().unwrap())).await.1["amount"], 500);

    // Manual capture, then cancel of another authorization (its hold is voided).
    let (_, b, _) = post_form(
        &url,
        "/v1/payment_intents",
        None,
        "amount=900&currency=usd&payment_method=pm_card_visa&capture_method=manual&confirm=true",
    )
    .await;
    let held: Value = serde_json::from_str(&b).unwrap();
    assert_eq!(held["status"], "requires_capture", "{b}");
    let (_, b, _) = post_form(
        &url,
        &format!("/v1/payment_intents/{}/capture", held["id"].as_str().unwrap()),
        None,
        "amount_to_capture=600",
    )
    .await;
    let cap: Value = serde_json::from_str(&b).unwrap();
    assert_eq!((cap["status"].as_str(), cap["amount_received"].as_u64()), (Some("succeeded"), Some(600)), "{b}");
    let (_, b, _) = post_form(
        &url,
        "/v1/payment_intents",
        None,
        "amount=700&currency=usd&payment_method=pm_card_visa&capture_method=manual&confirm=true",
    )
    .await;
    let held2: Value = serde_json::from_str(&b).unwrap();
    let (_, b, _) = post_form(
        &url,
        &format!("/v1/payment_intents/{}/cancel", held2["id"].as_str().unwrap()),
        None,
        "cancellation_reason=requested_by_customer",
    )
    .await;
    assert!(b.contains("\"status\":\"canceled\""), "{b}");

    // The ledger API: accounts, an overdraft refused, a linked chain that fails as a whole,
    // two-phase transfers, a reversal, history.
    let accounts = r#"[{"id": 1, "currency": "USD", "flags": {"debits_must_not_exceed_credits": true, "history": true}},
        {"id": 2, "currency": "USD", "flags": {"history": true}}, {"id": 3, "currency": "USD"}]"#;
    let r: Value = client()
        .post(format!("{url}/v1/payments/ledger/accounts"))
        .body(accounts)
        .header("content-type", "application/json")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(r.as_array().unwrap().iter().all(|x| x["result"] == "ok"), "{r}");
    let transfers = |body: &str| {
        let (url, body) = (url.clone(), body.to_owned());
        async move {
            let r = client()
                .post(format!("{url}/v1/payments/ledger/transfers"))
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await
                .unwrap();
            let v: Value = r.json().await.unwrap();
            v.as_array()
                .map(|a| a.iter().map(|x| x["result"].as_str().unwrap_or("?").to_owned()).collect::<Vec<_>>())
                .unwrap_or_else(|| vec![v.to_string()])
        }
    };
    assert_eq!(
        transfers(
            r#"[{"id": 10, "debit_account_id": 1, "credit_account_id": 2, "amount": 5, "currency": "USD", "code": 1}]"#
        )
        .await,
        ["exceeds_credits"]
    );
    assert_eq!(transfers(r#"[{"id": 11, "debit_account_id": 2, "credit_account_id": 1, "amount": 100, "currency": "USD", "code": 1}]"#).await, ["ok"]);
    let chain = r#"[{"id": 12, "debit_account_id": 1, "credit_account_id": 3, "amount": 60, "currency": "USD", "code": 1, "flags": {"linked": true}},
        {"id": 13, "debit_account_id": 1, "credit_account_id": 3, "amount": 60, "currency": "USD", "code": 1},
        {"id": 14, "debit_account_id": 1, "credit_account_id": 3, "amount": 30, "currency": "USD", "code": 1, "flags": {"pending": true}, "timeout_ms": 60000}]"#;
    assert_eq!(transfers(chain).await, ["linked_event_failed", "exceeds_credits", "ok"]);
    assert_eq!(
        transfers(
            r#"[{"id": 15, "pending_id": 14, "currency": "USD", "amount": 20, "flags": {"post_pending": true}}]"#
        )
        .await,
        ["ok"]
    );
    assert_eq!(
        transfers(
            r#"[{"id": 15, "pending_id": 14, "currency": "USD", "amount": 20, "flags": {"post_pending": true}}]"#
        )
        .await,
        ["exists"]
    );
    assert_eq!(
        transfers(r#"[{"id": 16, "pending_id": 14, "currency": "USD", "flags": {"void_pending": true}}]"#).await,
        ["pending_transfer_already_posted"]
    );
    assert_eq!(
        transfers(r#"[{"id": 17, "reversal_of": 11, "currency": "USD"}]"#).await,
        ["exceeds_credits"],
        "account 1 spent 20 of it"
    );
    assert_eq!(transfers(r#"[{"id": 18, "reversal_of": 15, "currency": "USD"}]"#).await, ["ok"]);
    let (s, b) = client().post(format!("{url}/v1/payments/ledger/transfers")).header("content-type", "application/json")
        .body(format!(r#"[{{"id": {}, "debit_account_id": 2, "credit_account_id": 1, "amount": 1, "currency": "USD", "code": 1}}]"#, u128::MAX - 5))
        .send().await.map(|r| (r.status().as_u16(), r)).unwrap();
    assert_eq!(s, 400, "reserved ids are refused: {:?}", b.text().await);
    let (_, a1) = get(&format!("{url}/v1/payments/ledger/accounts/1")).await;
    assert_eq!(
        (a1["credits_posted"].as_u64(), a1["debits_posted"].as_u64(), a1["credits_pending"].as_u64()),
        (Some(120), Some(20), Some(0)),
        "{a1}"
    );
    let (_, statement) = get(&format!("{url}/v1/payments/ledger/accounts/1/transfers")).await;
    let st = statement.as_array().unwrap();
    assert_eq!(st.iter().map(|t| t["id"].as_u64().unwrap()).collect::<Vec<_>>(), [11, 14, 15, 18], "{statement}");
    let after_11 = st[0]["timestamp"].as_u64().unwrap();
    let (_, then) = get(&format!("{url}/v1/payments/ledger/accounts/1?at={after_11}")).await;
    assert_eq!(
        (then["balances_at"]["credits_posted"].as_u64(), then["balances_at"]["debits_posted"].as_u64()),
        (Some(100), Some(0)),
        "{then}"
    );

    // Merchant webhooks come out of the outbox.
    wait_until("the merchant receives payment_intent.succeeded for the first intent", || async {
        received
            .lock()
            .unwrap()
            .iter()
            .any(|e| e["type"] == "payment_intent.succeeded" && e["data"]["object"]["id"] == id.as_str())
    })
    .await;
    let (_, audit) = get(&format!("{url}/v1/payments/audit")).await;
    assert_eq!(audit["ok"], true, "{audit}");

    // Everything survives kill -9; keys still replay.
    c.kill9(1);
    c.restart(1).await;
    let url = c.url(1);
    wait_until("the restarted node answers", || async {
        get(&format!("{url}/v1/payment_intents/{id}")).await.0 == 200
    })
    .await;
    let (_, replay, replayed) = post_form(&url, &format!("/v1/payment_intents/{id}/confirm"), Some("k-2"), "").await;
    assert_eq!((replay, replayed), (confirmed, true));
    let (_, a1b) = get(&format!("{url}/v1/payments/ledger/accounts/1")).await;
    assert_eq!(a1b, a1);
    let (_, audit) = get(&format!("{url}/v1/payments/audit")).await;
    assert_eq!(audit["ok"], true, "{audit}");
}

/// PyPI `stripe`, unchanged, pointed at a node with `stripe.api_base`.
#[tokio::test]
async fn the_stripe_python_client_works_unchanged() {
    let c = Cluster::start(EXE, 1).await;
    let url = c.url(1);
    let script = r#"
import sys, stripe
stripe.api_key = "sk_test_basalt"
stripe.api_base = sys.argv[1]
pi = stripe.PaymentIntent.create(amount=2000, currency="usd", payment_method="pm_card_visa",
    capture_method="manual", metadata={"order": "7"}, idempotency_key="order-7")
print(pi.object, pi.status, pi.amount, pi.currency, pi.metadata["order"], pi.client_secret.startswith(pi.id))
pi = stripe.PaymentIntent.confirm(pi.id, idempotency_key="order-7-confirm")
print(pi.status, pi.amount_capturable, pi.latest_charge.startswith("ch_"))
pi = pi.capture(idempotency_key="order-7-capture")
print(pi.status, pi.amount_received)
again = stripe.PaymentIntent.create(amount=2000, currency="usd", payment_method="pm_card_visa",
    capture_method="manual", metadata={"order": "7"}, idempotency_key="order-7")
print(again.id == pi.id, again.status, again.last_response.headers.get("Idempotent-Replayed"))
print(stripe.PaymentIntent.retrieve(pi.id).status)
try:
    stripe.PaymentIntent.create(amount=-1, currency="usd")
except stripe.error.InvalidRequestError as e:
    print("invalid", e.http_status, e.code, e.param)
try:
    stripe.PaymentIntent.create(amount=100, currency="usd", payment_method="pm_card_chargeDeclined", confirm=True)
except stripe.error.CardError as e:
    print("declined", e.http_status, e.code, e.error.decline_code)
r = stripe.Refund.create(payment_intent=pi.id, amount=500, idempotency_key="refund-1")
print(r.object, r.status, r.amount)
"#;
    let out = std::process::Command::new("python3").arg("-c").arg(script).arg(&url).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}\n{stdout}", String::from_utf8_lossy(&out.stderr));
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(
        lines,
        [
            "payment_intent requires_confirmation 2000 usd 7 True",
            "requires_capture 2000 True",
            "succeeded 2000",
            "True requires_confirmation true",
            "succeeded",
            "invalid 400 parameter_invalid_integer amount",
            "declined 402 card_declined generic_decline",
            "refund succeeded 500",
        ],
        "{stdout}"
    );
}

// ---------------------------------------------------------------------------------------------
// The randomized fault test.

/// xorshift64*: the test's only randomness, from the printed seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

#[derive(Default)]
struct Shared {
    urls: RwLock<Vec<Option<String>>>,
    done: AtomicU64,
    /// The first definite answer per idempotency key (status, body).
    answers: Mutex<HashMap<String, (u16, String)>>,
    /// Intents created, with their capture method.
    intents: Mutex<Vec<(String, bool)>>,
    violations: Mutex<Vec<String>>,
}

impl Shared {
    fn url(&self, rng: &mut Rng) -> Option<String> {
        let urls: Vec<String> = self.urls.read().unwrap().iter().flatten().cloned().collect();
        (!urls.is_empty()).then(|| urls[rng.below(urls.len() as u64) as usize].clone())
    }
}

/// Send with one key until a definite answer (not a connection error, 5xx or 409), to any
/// live node; every definite answer for a key must be the first one, byte for byte.
async fn request(sh: &Shared, rng: &mut Rng, path: &str, key: &str, form: &str) -> Option<(u16, Value)> {
    for _ in 0..60 {
        let Some(url) = sh.url(rng) else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let (s, body, _) = post_form(&url, path, Some(key), form).await;
        if s == 0 || s >= 500 || s == 409 {
            tokio::time::sleep(Duration::from_millis(20 + rng.below(80))).await;
            continue;
        }
        let mut answers = sh.answers.lock().unwrap();
        match answers.get(key) {
            Some((s0, b0)) if (*s0, b0.as_str()) != (s, body.as_str()) => {
                sh.violations.lock().unwrap().push(format!("key {key}: first {s0} {b0}, then {s} {body}"))
            }
            Some(_) => {}
            None => {
                answers.insert(key.to_owned(), (s, body.clone()));
            }
        }
        return Some((s, serde_json::from_str(&body).unwrap_or(Value::Null)));
    }
    None
}

async fn client_loop(sh: Arc<Shared>, id: u64, seed: u64, stop: Arc<std::sync::atomic::AtomicBool>) {
    let mut rng = Rng(seed ^ (id + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
    let mut n = 0;
    while !stop.load(Ordering::Relaxed) {
        n += 1;
        let key = format!("c{id}-{n}");
        let existing: Vec<(String, bool)> = sh.intents.lock().unwrap().clone();
        let roll = rng.below(10);
        if roll < 5 || existing.is_empty() {
            let manual = rng.below(2) == 0;
            let pm = if rng.below(6) == 0 { "pm_card_chargeDeclined" } else { "pm_card_visa" };
            let form = format!(
                "amount={}&currency=usd&payment_method={pm}&confirm=true&capture_method={}",
                100 + rng.below(900),
                if manual { "manual" } else { "automatic" }
            );
            if let Some((_, v)) = request(&sh, &mut rng, "/v1/payment_intents", &key, &form).await {
                let id = v["id"].as_str().or(v["error"]["payment_intent"]["id"].as_str());
                if let Some(id) = id {
                    sh.intents.lock().unwrap().push((id.to_owned(), manual));
                }
            }
        } else {
            let (pi, manual) = existing[rng.below(existing.len() as u64) as usize].clone();
            let (path, form) = match roll {
                5 | 6 if manual => (format!("/v1/payment_intents/{pi}/capture"), String::new()),
                7 if manual => (format!("/v1/payment_intents/{pi}/cancel"), String::new()),
                _ => ("/v1/refunds".to_owned(), format!("payment_intent={pi}&amount={}", 1 + rng.below(300))),
            };
            request(&sh, &mut rng, &path, &key, &form).await;
        }
        sh.done.fetch_add(1, Ordering::Relaxed);
    }
}

/// The provider never charged an intent twice; captures at most once per authorization.
async fn check_provider(provider: &str) -> Result<(), String> {
    let (s, records) = get(&format!("{provider}/v1/records")).await;
    if s != 200 {
        return Err(format!("provider records: {s} {records}"));
    }
    let mut charged: BTreeMap<String, usize> = BTreeMap::new();
    let mut captured: BTreeMap<String, usize> = BTreeMap::new();
    for r in records.as_array().unwrap() {
        let intent = r["intent"].as_str().unwrap().to_owned();
        match (r["kind"].as_str().unwrap(), r["status"].as_str().unwrap()) {
            ("charge" | "authorize", "succeeded" | "authorized" | "captured") => {
                *charged.entry(intent).or_default() += 1
            }
            ("capture", "succeeded") => *captured.entry(intent).or_default() += 1,
            _ => {}
        }
    }
    for (i, n) in charged.iter().chain(&captured) {
        if *n > 1 {
            return Err(format!("the provider moved money {n} times for {i}: {records}"));
        }
    }
    Ok(())
}

/// The ledger balances, every captured payment is posted exactly once, every open attempt or
/// pending refund has a job that will resolve it (terminal or recoverable).
async fn check_basalt(sh: &Shared) -> Result<(), String> {
    // Right after a leader's death no node can answer a linearizable read: poll until one does.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while tokio::time::Instant::now() < deadline {
        let urls: Vec<String> = sh.urls.read().unwrap().iter().flatten().cloned().collect();
        for url in urls {
            let (s, audit) = get(&format!("{url}/v1/payments/audit")).await;
            if s == 200 {
                return if audit["ok"] == true { Ok(()) } else { Err(format!("audit: {audit}")) };
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Err("no node could answer the audit within 30 s".into())
}

#[tokio::test]
async fn randomized_faults_kill9_and_leader_changes_never_charge_twice() {
    let seed = std::env::var("PAYMENTS_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64 | 1
    });
    eprintln!("randomized payments fault test: PAYMENTS_SEED={seed}");
    let dir = tempfile::tempdir().unwrap();
    let provider = ProviderProc::start(dir.path());
    let mut c = Cluster::start_with_args(EXE, 3, provider_args(&provider.url)).await;
    let hooks: Vec<String> = (1..=3).map(|i| format!("{}/v1/payments/provider/webhooks", c.url(i))).collect();
    post_json(&format!("{}/webhooks", provider.url), &json!({"urls": hooks})).await;
    post_json(
        &format!("{}/faults", provider.url),
        &json!({"timeout_after_charge_rate": 0.15, "error_rate": 0.1, "delay_ms": 5, "duplicate_webhooks": true,
            "reorder_webhooks": true, "timeout_sleep_ms": 800}),
    )
    .await;
    let sh = Arc::new(Shared::default());
    *sh.urls.write().unwrap() = (1..=3).map(|i| Some(c.url(i))).collect();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let clients: Vec<_> = (0..6).map(|i| tokio::spawn(client_loop(sh.clone(), i, seed, stop.clone()))).collect();

    let mut rng = Rng(seed);
    let progress = |n: u64| {
        let sh = sh.clone();
        async move {
            let from = sh.done.load(Ordering::Relaxed);
            wait_until(&format!("{n} more client operations"), || {
                let sh = sh.clone();
                async move { sh.done.load(Ordering::Relaxed) >= from + n }
            })
            .await;
        }
    };
    let check = |step: String| {
        let (sh, provider) = (sh.clone(), provider.url.clone());
        async move {
            if let Err(e) = check_provider(&provider).await {
                panic!("seed {seed}, after {step}: {e}");
            }
            if let Err(e) = check_basalt(&sh).await {
                panic!("seed {seed}, after {step}: {e}");
            }
            let v = sh.violations.lock().unwrap().clone();
            assert!(v.is_empty(), "seed {seed}, after {step}: replays differ: {v:?}");
        }
    };
    progress(20).await;
    check("warm-up".into()).await;
    for round in 0..5 {
        let victim = if round % 2 == 0 { c.leader().await } else { 1 + rng.below(3) as usize };
        c.kill9(victim);
        sh.urls.write().unwrap()[victim - 1] = None;
        check(format!("round {round}: kill -9 of node {victim}")).await;
        progress(20).await;
        check(format!("round {round}: progress without node {victim}")).await;
        c.restart(victim).await;
        sh.urls.write().unwrap()[victim - 1] = Some(c.url(victim));
        progress(20).await;
        check(format!("round {round}: node {victim} back")).await;
    }
    stop.store(true, Ordering::Relaxed);
    for t in clients {
        t.await.unwrap();
    }

    let (_, injected) = get(&format!("{}/faults", provider.url)).await;
    let n = |k: &str| injected["injected"][k].as_u64().unwrap_or(0);
    assert!(
        n("timeouts_after_charge") > 0 && n("errors_before") + n("errors_after") > 0,
        "faults were injected: {injected}"
    );
    // Faults off: every job drains, nothing stays in processing, reconciliation finds no drift.
    post_json(&format!("{}/faults", provider.url), &json!({})).await;
    let url = c.url(c.leader().await);
    wait_until("every provider job is done", || async {
        let (_, a) = get(&format!("{url}/v1/payments/audit")).await;
        a["jobs"] == 0 && a["waiters"] == 0 && a["intents"]["processing"].is_null()
    })
    .await;
    check("the end".into()).await;
    let (s, report) =
        client().post(format!("{url}/v1/payments/reconcile")).send().await.map(|r| (r.status().as_u16(), r)).unwrap();
    let report: Value = report.json().await.unwrap();
    assert_eq!(s, 200, "{report}");
    assert_eq!(report["drift"], json!([]), "seed {seed}: {report}");
    let (_, audit) = get(&format!("{url}/v1/payments/audit")).await;
    let ops = sh.done.load(Ordering::Relaxed);
    eprintln!(
        "seed {seed}: {ops} client operations, {} intents; provider {injected}; audit {audit}",
        sh.intents.lock().unwrap().len()
    );
    assert!(ops >= 220, "the clients made progress through the faults");
}
