//! The idempotency table: Stripe's flow case by case, limits, takeover, expiry, snapshots, and a
//! model-based property test against a straightforward reference implementation.

use std::collections::BTreeMap;

use basalt_ledger_core::*;
use proptest::prelude::*;

fn fp(n: u8) -> Fingerprint {
    Fingerprint([n; 32])
}

fn response(status: u16, body: &str) -> StoredResponse {
    StoredResponse { status, headers: vec![("content-type".into(), "application/json".into())], body: body.into() }
}

fn table() -> IdempotencyTable {
    IdempotencyTable::new(IdempotencyConfig { lock_timeout_ms: 1_000, ..IdempotencyConfig::default() }).unwrap()
}

fn fresh(b: Begin) -> AttemptToken {
    match b {
        Begin::Fresh { token, .. } => token,
        other => panic!("expected Fresh, got {other:?}"),
    }
}

#[test]
fn stripe_flow() {
    let mut t = table();
    let token = fresh(t.begin("acct_1", "k1", fp(1), 0).unwrap());
    // Concurrent retry: 409; different request under the key: 422.
    assert_eq!(t.begin("acct_1", "k1", fp(1), 10).unwrap(), Begin::InFlight);
    assert_eq!(t.begin("acct_1", "k1", fp(2), 10).unwrap(), Begin::Mismatch);
    // Another scope does not collide.
    assert!(matches!(t.begin("acct_2", "k1", fp(2), 10).unwrap(), Begin::Fresh { recovered: false, .. }));
    t.complete("acct_1", "k1", token, response(200, "{\"id\":\"pi_1\"}")).unwrap();
    assert_eq!(t.begin("acct_1", "k1", fp(1), 20).unwrap(), Begin::Replay(response(200, "{\"id\":\"pi_1\"}")));
    assert_eq!(t.begin("acct_1", "k1", fp(2), 20).unwrap(), Begin::Mismatch);
    assert_eq!(t.complete("acct_1", "k1", token, response(500, "")), Err(IdempotencyError::AlreadyCompleted));
    assert_eq!(t.abandon("acct_1", "k1", token), Err(IdempotencyError::AlreadyCompleted));
    assert_eq!(t.len(), 2);
}

#[test]
fn abandoned_keys_are_free_again() {
    let mut t = table();
    let token = fresh(t.begin("s", "k", fp(1), 0).unwrap());
    t.abandon("s", "k", token).unwrap();
    assert!(t.is_empty());
    assert_eq!(t.abandon("s", "k", token), Err(IdempotencyError::NotFound));
    // Even a different request may now use the key.
    assert!(matches!(t.begin("s", "k", fp(2), 1).unwrap(), Begin::Fresh { recovered: false, .. }));
}

#[test]
fn a_stuck_key_is_taken_over_and_the_old_owner_fenced() {
    let mut t = table();
    let old = fresh(t.begin("s", "k", fp(1), 0).unwrap());
    assert_eq!(t.begin("s", "k", fp(1), 999).unwrap(), Begin::InFlight);
    let Begin::Fresh { token: new, recovered: true } = t.begin("s", "k", fp(1), 1_000).unwrap() else { panic!() };
    assert_ne!(old, new);
    assert_eq!(t.complete("s", "k", old, response(200, "old")), Err(IdempotencyError::StaleToken));
    assert_eq!(t.abandon("s", "k", old), Err(IdempotencyError::StaleToken));
    // The new owner's lock is fresh.
    assert_eq!(t.begin("s", "k", fp(1), 1_500).unwrap(), Begin::InFlight);
    t.complete("s", "k", new, response(201, "new")).unwrap();
    assert_eq!(t.begin("s", "k", fp(1), 5_000).unwrap(), Begin::Replay(response(201, "new")));
    // The takeover kept the original creation time.
    assert_eq!(t.get("s", "k").unwrap().created_at_ms, 0);
}

#[test]
fn keys_expire_after_a_day() {
    let mut t = table();
    let a = fresh(t.begin("s", "a", fp(1), 0).unwrap());
    t.complete("s", "a", a, response(200, "a")).unwrap();
    fresh(t.begin("s", "b", fp(1), 500).unwrap());
    fresh(t.begin("r", "c", fp(1), 500).unwrap());
    assert_eq!(t.expire(DAY_MS - 1), 0);
    // Expired but not yet swept: treated as absent.
    assert!(matches!(t.begin("s", "a", fp(9), DAY_MS).unwrap(), Begin::Fresh { recovered: false, .. }));
    assert_eq!(t.get("s", "a").unwrap().created_at_ms, DAY_MS);
    assert_eq!(t.len(), 3);
    assert_eq!(t.expire_at_most(DAY_MS + 500, 1), 1);
    assert_eq!(t.expire(DAY_MS + 500), 1);
    assert_eq!(t.len(), 1);
    assert!(t.get("s", "b").is_none() && t.get("r", "c").is_none());
    assert_eq!(t.expire(2 * DAY_MS), 1);
    assert!(t.is_empty());
}

#[test]
fn limits() {
    let mut t = table();
    let long = "x".repeat(KEY_LEN_MAX);
    assert!(t.begin("s", &long, fp(1), 0).is_ok());
    let too_long = "é".repeat(KEY_LEN_MAX + 1);
    assert_eq!(
        t.begin("s", &too_long, fp(1), 0),
        Err(IdempotencyError::TooLong { field: KeyField::Key, len: KEY_LEN_MAX + 1 })
    );
    // Length is in characters: 255 two-byte characters are fine.
    assert!(t.begin("s", &"é".repeat(KEY_LEN_MAX), fp(1), 0).is_ok());
    assert_eq!(t.begin("s", "", fp(1), 0), Err(IdempotencyError::Empty(KeyField::Key)));
    assert_eq!(t.begin("", "k", fp(1), 0), Err(IdempotencyError::Empty(KeyField::Scope)));
    assert_eq!(t.begin("s", "a\nb", fp(1), 0), Err(IdempotencyError::NotPrintable(KeyField::Key)));
    let e = t.begin("s", "", fp(1), 0).unwrap_err();
    assert_eq!(
        (e.code(), e.to_string().as_str()),
        ("idempotency_key_invalid", "the idempotency key must not be empty")
    );
    assert!(t.begin("s", "with space ✓", fp(1), 0).is_ok());

    let config = IdempotencyConfig { entries_max: 2, response_body_max_bytes: 4, ..IdempotencyConfig::default() };
    let mut t = IdempotencyTable::new(config).unwrap();
    let k = fresh(t.begin("s", "1", fp(1), 0).unwrap());
    fresh(t.begin("s", "2", fp(1), 0).unwrap());
    assert_eq!(t.begin("s", "3", fp(1), 0), Err(IdempotencyError::TableFull(2)));
    // Existing keys still answer.
    assert_eq!(t.begin("s", "1", fp(1), 0).unwrap(), Begin::InFlight);
    assert_eq!(
        t.complete("s", "1", k, response(200, "12345")),
        Err(IdempotencyError::ResponseTooLarge { len: 5, max: 4 })
    );
    t.complete("s", "1", k, response(200, "1234")).unwrap();

    let bad = |c: IdempotencyConfig| IdempotencyTable::new(c).unwrap_err().code();
    assert_eq!(bad(IdempotencyConfig { ttl_ms: 0, ..config }), "invalid_config");
    assert_eq!(bad(IdempotencyConfig { lock_timeout_ms: DAY_MS + 1, ..config }), "invalid_config");
    assert_eq!(bad(IdempotencyConfig { entries_max: 0, ..config }), "invalid_config");
}

#[test]
fn snapshots_round_trip() {
    let mut t = table();
    let a = fresh(t.begin("s", "a", fp(1), 0).unwrap());
    t.complete("s", "a", a, response(200, "a")).unwrap();
    fresh(t.begin("r", "b", fp(2), 7).unwrap());
    let json = serde_json::to_string(&t).unwrap();
    let mut back: IdempotencyTable = serde_json::from_str(&json).unwrap();
    assert_eq!(back, t);
    assert_eq!(back.expire(DAY_MS + 7), 2);
    let bad = json.replace("\"a\":", "\"\":");
    assert!(serde_json::from_str::<IdempotencyTable>(&bad).is_err());
}

// ---------------------------------------------------------------------------------------------
// Model-based test.

/// A model entry: fingerprint, creation time, owner (token, lock time), stored response.
type ModelEntry = (Fingerprint, u64, Option<(AttemptToken, u64)>, Option<StoredResponse>);

/// The reference: a flat map and linear scans, written from the specification.
#[derive(Debug, Default)]
struct Model {
    next_token: u64,
    entries: BTreeMap<(String, String), ModelEntry>,
}

const TTL: u64 = 100_000;
const LOCK: u64 = 10_000;
const MAX: usize = 5;

impl Model {
    fn begin(&mut self, s: &str, k: &str, f: Fingerprint, now: u64) -> Result<Begin, IdempotencyError> {
        let id = (s.to_owned(), k.to_owned());
        if let Some((_, created, _, _)) = self.entries.get(&id)
            && now >= created + TTL
        {
            self.entries.remove(&id);
        }
        let token = AttemptToken(self.next_token + 1);
        let full = self.entries.len() >= MAX;
        match self.entries.get_mut(&id) {
            Some((fp, ..)) if *fp != f => Ok(Begin::Mismatch),
            Some((_, _, _, Some(r))) => Ok(Begin::Replay(r.clone())),
            Some((_, _, Some((_, locked)), None)) if now - *locked < LOCK => Ok(Begin::InFlight),
            Some((_, _, owner, None)) => {
                *owner = Some((token, now));
                self.next_token += 1;
                Ok(Begin::Fresh { token, recovered: true })
            }
            None if full => Err(IdempotencyError::TableFull(MAX)),
            None => {
                self.entries.insert(id, (f, now, Some((token, now)), None));
                self.next_token += 1;
                Ok(Begin::Fresh { token, recovered: false })
            }
        }
    }

    fn finish(
        &mut self,
        s: &str,
        k: &str,
        token: AttemptToken,
        r: Option<StoredResponse>,
    ) -> Result<(), IdempotencyError> {
        let id = (s.to_owned(), k.to_owned());
        match self.entries.get_mut(&id) {
            None => Err(IdempotencyError::NotFound),
            Some((_, _, _, Some(_))) => Err(IdempotencyError::AlreadyCompleted),
            Some((_, _, owner, None)) if owner.map(|o| o.0) != Some(token) => Err(IdempotencyError::StaleToken),
            Some(entry) => {
                match r {
                    Some(r) => entry.3 = Some(r),
                    None => {
                        self.entries.remove(&id);
                    }
                }
                Ok(())
            }
        }
    }

    fn expire(&mut self, now: u64) -> usize {
        let before = self.entries.len();
        self.entries.retain(|_, (_, created, _, _)| now < *created + TTL);
        before - self.entries.len()
    }
}

#[derive(Debug, Clone)]
enum Op {
    Begin { scope: u8, key: u8, fp: u8 },
    Complete { scope: u8, key: u8, token: u64, status: u16 },
    Abandon { scope: u8, key: u8, token: u64 },
    Expire,
}

fn ops() -> impl Strategy<Value = Vec<(u64, Op)>> {
    let dt = prop_oneof![4 => 0u64..3_000, 2 => 3_000u64..15_000, 1 => 50_000u64..120_000];
    let op = prop_oneof![
        4 => (0u8..2, 0u8..4, 0u8..2).prop_map(|(scope, key, fp)| Op::Begin { scope, key, fp }),
        3 => (0u8..2, 0u8..4, 0u64..12, 200u16..202).prop_map(|(scope, key, token, status)| Op::Complete { scope, key, token, status }),
        2 => (0u8..2, 0u8..4, 0u64..12).prop_map(|(scope, key, token)| Op::Abandon { scope, key, token }),
        1 => Just(Op::Expire),
    ];
    prop::collection::vec((dt, op), 1..60)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn the_table_behaves_like_the_model(ops in ops()) {
        let config = IdempotencyConfig { ttl_ms: TTL, lock_timeout_ms: LOCK, entries_max: MAX, response_body_max_bytes: 64 };
        let mut table = IdempotencyTable::new(config).unwrap();
        let mut model = Model::default();
        let name = |i: u8| format!("n{i}");
        let mut now = 0u64;
        for (dt, op) in ops {
            now += dt;
            match op {
                Op::Begin { scope, key, fp: f } => {
                    let (s, k) = (name(scope), name(key));
                    prop_assert_eq!(table.begin(&s, &k, fp(f), now), model.begin(&s, &k, fp(f), now));
                }
                Op::Complete { scope, key, token, status } => {
                    let (s, k, r) = (name(scope), name(key), response(status, "b"));
                    prop_assert_eq!(
                        table.complete(&s, &k, AttemptToken(token), r.clone()),
                        model.finish(&s, &k, AttemptToken(token), Some(r))
                    );
                }
                Op::Abandon { scope, key, token } => {
                    let (s, k) = (name(scope), name(key));
                    prop_assert_eq!(table.abandon(&s, &k, AttemptToken(token)), model.finish(&s, &k, AttemptToken(token), None));
                }
                Op::Expire => prop_assert_eq!(table.expire(now), model.expire(now)),
            }
            prop_assert_eq!(table.len(), model.entries.len());
            for ((s, k), (f, created, owner, done)) in &model.entries {
                let e = table.get(s, k).unwrap();
                prop_assert_eq!((e.fingerprint, e.created_at_ms, e.expires_at_ms), (*f, *created, created + TTL));
                let state = match (owner, done) {
                    (_, Some(r)) => EntryState::Completed(r.clone()),
                    (Some((token, locked_at_ms)), None) => EntryState::InFlight { token: *token, locked_at_ms: *locked_at_ms },
                    (None, None) => unreachable!(),
                };
                prop_assert_eq!(&e.state, &state);
            }
        }
        let back: IdempotencyTable = serde_json::from_str(&serde_json::to_string(&table).unwrap()).unwrap();
        prop_assert_eq!(back, table);
    }
}
