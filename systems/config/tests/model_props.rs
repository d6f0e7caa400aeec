//! Properties of the pure S03 model: determinism across replicas and across snapshot/restore,
//! rollback equals the state at that version, every rejected command changes nothing, and no
//! input makes it panic.

use basalt_config::model::{BatchOp, Command, ConfigError, Format, Model};
use proptest::prelude::*;

fn put(ns: &str, key: &str, text: &str) -> Command {
    Command::Put {
        namespace: ns.into(),
        key: key.into(),
        format: Format::Json,
        text: text.into(),
        expected_version: None,
        expected_key_version: None,
        author: "t".into(),
        message: String::new(),
        at_ms: 1,
    }
}

fn create(ns: &str, schema: Option<&str>) -> Command {
    Command::CreateNamespace { namespace: ns.into(), schema: schema.map(str::to_string), author: "t".into(), at_ms: 0 }
}

fn op() -> impl Strategy<Value = Command> {
    let key = prop::sample::select(vec!["a", "b", "c/d", "e"]);
    prop_oneof![
        (key.clone(), 0..5i64).prop_map(|(k, n)| put("ns", k, &format!("{{\"n\": {n}}}"))),
        key.clone().prop_map(|k| Command::Delete {
            namespace: "ns".into(),
            key: k.into(),
            expected_version: None,
            author: "t".into(),
            message: String::new(),
            at_ms: 2,
        }),
        (key.clone(), key, 0..5i64).prop_map(|(k1, k2, n)| Command::Batch {
            namespace: "ns".into(),
            ops: vec![
                BatchOp::Put { key: k1.into(), format: Format::Yaml, text: format!("n: {n}") },
                BatchOp::Put { key: k2.into(), format: Format::Toml, text: format!("n = {n}") },
            ],
            expected_version: None,
            author: "t".into(),
            message: String::new(),
            at_ms: 3,
        }),
        (1..20u64).prop_map(|v| Command::Rollback {
            namespace: "ns".into(),
            to_version: v,
            expected_version: None,
            author: "t".into(),
            message: String::new(),
            at_ms: 4,
        }),
    ]
}

fn replies(m: &mut Model, cmds: &[Command]) -> Vec<Result<u64, String>> {
    cmds.iter().map(|c| m.apply(c.clone()).map(|ch| ch.version).map_err(|e| e.code().to_string())).collect()
}

proptest! {
    #[test]
    fn replicas_agree_and_snapshots_change_nothing(cmds in prop::collection::vec(op(), 1..40), cut in 0usize..40) {
        // Replicas share the history limit (it is configuration, and part of the snapshot).
        let mut a = Model::with_history_max(5);
        let mut b = Model::with_history_max(5);
        a.apply(create("ns", None)).unwrap();
        b.apply(create("ns", None)).unwrap();
        let ra = replies(&mut a, &cmds);
        let cut = cut.min(cmds.len());
        let rb1 = replies(&mut b, &cmds[..cut]);
        let mut b = Model::restore(&b.snapshot()).unwrap();
        let rb2 = replies(&mut b, &cmds[cut..]);
        let rb: Vec<_> = rb1.into_iter().chain(rb2).collect();
        prop_assert_eq!(&ra, &rb, "a snapshot/restore in the middle changed a reply");
        let mut c = Model::with_history_max(5);
        c.apply(create("ns", None)).unwrap();
        replies(&mut c, &cmds);
        prop_assert_eq!(a.snapshot(), c.snapshot(), "two replicas diverged");
        prop_assert_eq!(a.snapshot(), b.snapshot(), "the restored replica diverged");
    }

    #[test]
    fn rollback_restores_exactly_the_state_at_that_version(cmds in prop::collection::vec(op(), 1..30), pick in 0u64..1000) {
        let mut m = Model::default();
        m.apply(create("ns", None)).unwrap();
        replies(&mut m, &cmds);
        let current = m.namespace("ns").unwrap().version;
        let v = 1 + pick % current;
        let expected = m.state_at("ns", v).unwrap();
        let hash_then = {
            let mut probe = Model::default();
            probe.apply(create("ns", None)).unwrap();
            probe.content_hash("ns").unwrap()
        };
        match m.apply(Command::Rollback { namespace: "ns".into(), to_version: v, expected_version: Some(current), author: "t".into(), message: String::new(), at_ms: 9 }) {
            Ok(change) => {
                prop_assert_eq!(change.version, current + 1);
                let now: Vec<(String, serde_json::Value)> = m.list("ns", "").unwrap().into_iter().map(|(k, s)| (k, s.json)).collect();
                let then: Vec<(String, serde_json::Value)> = expected.into_iter().map(|(k, s)| (k, s.json)).collect();
                prop_assert_eq!(now, then);
                if v == 1 { prop_assert_eq!(m.content_hash("ns").unwrap(), hash_then); }
            }
            Err(ConfigError::NothingToRollBack { .. }) => {
                let now: Vec<String> = m.list("ns", "").unwrap().into_iter().map(|(k, s)| format!("{k}={}", s.json)).collect();
                let then: Vec<String> = expected.into_iter().map(|(k, s)| format!("{k}={}", s.json)).collect();
                prop_assert_eq!(now, then);
            }
            Err(e) => prop_assert!(false, "unexpected {e}"),
        }
    }

    #[test]
    fn arbitrary_input_is_rejected_cleanly_and_changes_nothing(ns in ".{0,140}", key in ".{0,270}", text in ".{0,200}", fmt in 0u8..3) {
        let mut m = Model::default();
        m.apply(create("ns", Some(r#"{"type":"object"}"#))).unwrap();
        let before = m.snapshot();
        let format = [Format::Json, Format::Yaml, Format::Toml][fmt as usize];
        for cmd in [
            Command::Put { namespace: ns.clone(), key: key.clone(), format, text: text.clone(), expected_version: None, expected_key_version: None, author: "t".into(), message: String::new(), at_ms: 1 },
            Command::Put { namespace: "ns".into(), key: key.clone(), format, text: text.clone(), expected_version: None, expected_key_version: None, author: "t".into(), message: String::new(), at_ms: 1 },
            create(&ns, Some(&text)),
        ] {
            let snapshot = m.snapshot();
            if let Err(e) = m.apply(cmd) {
                prop_assert!(!e.code().is_empty() && (400..500).contains(&e.http_status()));
                prop_assert_eq!(m.snapshot(), snapshot, "a rejected command changed the state");
            }
        }
        let _ = before;
    }
}

#[test]
fn every_error_code_has_its_case() {
    let mut m = Model::with_history_max(3);
    m.apply(create("ns", Some(r#"{"type":"object","properties":{"n":{"type":"integer"}}}"#))).unwrap();
    m.apply(put("ns", "a", r#"{"n": 1}"#)).unwrap();
    let big = format!("\"{}\"", "x".repeat(300 * 1024));
    let cases: Vec<(Command, &str, u16)> = vec![
        (create("bad name", None), "invalid_namespace_name", 400),
        (put("ns", "/lead", "{}"), "invalid_key", 400),
        (put("nope", "a", "{}"), "unknown_namespace", 404),
        (create("ns", None), "namespace_exists", 409),
        (put("ns", "a", "{"), "invalid_value", 422),
        (put("ns", "a", r#"{"n": "x"}"#), "schema_violation", 422),
        (create("other", Some("{\"type\": 12}")), "invalid_schema", 400),
        (put("ns", "a", &big), "value_too_large", 413),
        (
            Command::Delete {
                namespace: "ns".into(),
                key: "zz".into(),
                expected_version: None,
                author: "t".into(),
                message: String::new(),
                at_ms: 1,
            },
            "unknown_key",
            404,
        ),
        (
            Command::Put {
                namespace: "ns".into(),
                key: "a".into(),
                format: Format::Json,
                text: "{}".into(),
                expected_version: Some(1),
                expected_key_version: None,
                author: "t".into(),
                message: String::new(),
                at_ms: 1,
            },
            "version_mismatch",
            409,
        ),
        (
            Command::Put {
                namespace: "ns".into(),
                key: "a".into(),
                format: Format::Json,
                text: "{}".into(),
                expected_version: None,
                expected_key_version: Some(0),
                author: "t".into(),
                message: String::new(),
                at_ms: 1,
            },
            "version_mismatch",
            409,
        ),
        (
            Command::Rollback {
                namespace: "ns".into(),
                to_version: 9,
                expected_version: None,
                author: "t".into(),
                message: String::new(),
                at_ms: 1,
            },
            "unknown_version",
            404,
        ),
        (
            Command::Rollback {
                namespace: "ns".into(),
                to_version: 2,
                expected_version: None,
                author: "t".into(),
                message: String::new(),
                at_ms: 1,
            },
            "nothing_to_roll_back",
            409,
        ),
        (
            Command::Batch {
                namespace: "ns".into(),
                ops: vec![],
                expected_version: None,
                author: "t".into(),
                message: String::new(),
                at_ms: 1,
            },
            "empty_batch",
            400,
        ),
        (
            Command::Batch {
                namespace: "ns".into(),
                ops: (0..1001).map(|i| BatchOp::Delete { key: format!("k{i}") }).collect(),
                expected_version: None,
                author: "t".into(),
                message: String::new(),
                at_ms: 1,
            },
            "batch_too_large",
            413,
        ),
        (
            Command::Batch {
                namespace: "ns".into(),
                ops: vec![
                    BatchOp::Put { key: "q".into(), format: Format::Json, text: "{}".into() },
                    BatchOp::Put { key: "q".into(), format: Format::Json, text: "{}".into() },
                ],
                expected_version: None,
                author: "t".into(),
                message: String::new(),
                at_ms: 1,
            },
            "duplicate_key_in_batch",
            400,
        ),
    ];
    for (cmd, code, status) in cases {
        let before = m.snapshot();
        let e = m.apply(cmd.clone()).expect_err(code);
        assert_eq!((e.code(), e.http_status()), (code, status), "{cmd:?}: {e}");
        assert!(!e.to_string().is_empty());
        assert_eq!(m.snapshot(), before, "{code} changed the state");
        assert_eq!(m.validate(&cmd).unwrap_err(), e, "validate and apply agree");
    }
    // Compaction: with 3 changes kept, the first versions are gone.
    for i in 0..5 {
        m.apply(put("ns", "a", &format!("{{\"n\": {i}}}"))).unwrap();
    }
    assert_eq!(m.get_at("ns", "a", 1).unwrap_err().code(), "version_compacted");
    assert_eq!(m.history("ns", 0, 10).unwrap_err().code(), "version_compacted");
    let v = m.namespace("ns").unwrap().version;
    assert_eq!(m.get_at("ns", "a", v - 1).unwrap().json["n"], 3);
}

#[test]
fn formats_canonicalize_to_the_same_json_and_diffs_name_paths() {
    let mut m = Model::default();
    m.apply(create("ns", None)).unwrap();
    let json = r#"{"db": {"pool": 10, "hosts": ["a", "b"]}, "on": true}"#;
    let yaml = "db:\n  pool: 10\n  hosts: [a, b]\non: true\n";
    let toml = "on = true\n[db]\npool = 10\nhosts = [\"a\", \"b\"]\n";
    for (k, f, t) in [("j", Format::Json, json), ("y", Format::Yaml, yaml), ("t", Format::Toml, toml)] {
        m.apply(Command::Put {
            namespace: "ns".into(),
            key: k.into(),
            format: f,
            text: t.into(),
            expected_version: None,
            expected_key_version: None,
            author: "t".into(),
            message: String::new(),
            at_ms: 1,
        })
        .unwrap();
    }
    let j = m.get("ns", "j").unwrap().json;
    assert_eq!(m.get("ns", "y").unwrap().json, j);
    assert_eq!(m.get("ns", "t").unwrap().json, j);
    let change = m.apply(put("ns", "j", r#"{"db": {"pool": 20, "hosts": ["a", "b"]}, "new": 1}"#)).unwrap();
    let ops: Vec<(String, String)> = change.keys[0].diff.iter().map(|d| (d.op.clone(), d.path.clone())).collect();
    assert_eq!(
        ops,
        vec![("replace".into(), "/db/pool".into()), ("remove".into(), "/on".into()), ("add".into(), "/new".into())]
    );
}
