//! A structural JSON diff for the audit history: which fields a change touched, with their old
//! and new values.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// One changed field: its path (`rules[0].serve`), the value before (absent if added) and after
/// (absent if removed).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FieldChange {
    pub path: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub before: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<Value>,
}

/// The fields that differ between `before` and `after`, depth first in key order. Objects are
/// compared key by key; arrays element by element when they have the same length (else whole);
/// anything else whole.
pub fn diff(before: Option<&Value>, after: Option<&Value>) -> Vec<FieldChange> {
    let mut out = Vec::new();
    walk(String::new(), before, after, &mut out);
    out
}

fn join(path: &str, key: &str) -> String {
    let simple = !key.is_empty() && key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    match (path.is_empty(), simple) {
        (true, true) => key.to_owned(),
        (false, true) => format!("{path}.{key}"),
        (_, false) => format!("{path}[{}]", Value::from(key)),
    }
}

fn walk(path: String, before: Option<&Value>, after: Option<&Value>, out: &mut Vec<FieldChange>) {
    match (before, after) {
        (Some(a), Some(b)) if a == b => {}
        (Some(Value::Object(a)), Some(Value::Object(b))) => {
            let keys: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
            for k in keys {
                walk(join(&path, k), a.get(k), b.get(k), out);
            }
        }
        (Some(Value::Array(a)), Some(Value::Array(b))) if a.len() == b.len() => {
            for (i, (x, y)) in a.iter().zip(b).enumerate() {
                walk(format!("{path}[{i}]"), Some(x), Some(y), out);
            }
        }
        (None, None) => {}
        (before, after) => out.push(FieldChange { path, before: before.cloned(), after: after.cloned() }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn names_each_changed_field() {
        let a = json!({"enabled": true, "rules": [{"id": "r1", "serve": {"variant": "on"}}], "salt": "x"});
        let b = json!({"enabled": false, "rules": [{"id": "r1", "serve": {"variant": "off"}}], "new key": 1});
        let d = diff(Some(&a), Some(&b));
        let paths: Vec<&str> = d.iter().map(|c| c.path.as_str()).collect();
        assert_eq!(paths, ["enabled", "[\"new key\"]", "rules[0].serve.variant", "salt"]);
        assert_eq!(d[0].before, Some(json!(true)));
        assert_eq!(d[3].after, None);
    }

    #[test]
    fn creation_and_deletion_are_one_change_of_the_whole() {
        let a = json!({"k": 1});
        assert_eq!(
            diff(None, Some(&a)),
            vec![FieldChange { path: String::new(), before: None, after: Some(a.clone()) }]
        );
        assert_eq!(diff(Some(&a), None).len(), 1);
        assert!(diff(Some(&a), Some(&a)).is_empty());
    }
}
