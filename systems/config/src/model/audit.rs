//! What divergence repair needs from the model: each namespace's version with a hash
//! recomputed from what is actually held, the hash a replica *recorded* for any retained
//! version (so replicas at different versions can still be compared), and — for fault
//! injection only — a way to make one replica's content wrong without a version change.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{ConfigError, Model, StoredValue, content_hash, entry_hash, hex};

/// One namespace as this replica holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Digest {
    pub name: String,
    pub version: u64,
    /// Recomputed from the keys, not the hash kept up to date on writes.
    pub content_hash: String,
}

impl Model {
    /// Every namespace's version and freshly recomputed content hash.
    pub fn digests(&self) -> Vec<Digest> {
        self.namespaces
            .iter()
            .map(|(n, ns)| Digest { name: n.clone(), version: ns.version, content_hash: hex(content_hash(&ns.keys)) })
            .collect()
    }

    /// The content hash this replica recorded when it made `version` of `ns` (None when it has
    /// not reached it, or the entry was compacted away).
    pub fn recorded_hash(&self, ns: &str, version: u64) -> Option<String> {
        let n = self.namespaces.get(ns)?;
        if version == n.version {
            return Some(hex(n.hash));
        }
        let first = n.history.front()?.version;
        let i = usize::try_from(version.checked_sub(first)?).ok()?;
        n.history.get(i).filter(|c| c.version == version).map(|c| c.content_hash.clone())
    }

    /// Fault injection: overwrite `key` in this replica only, with no version and no history —
    /// the state a bug or bit rot would leave. The kept hash follows, so the replica reports
    /// what it really holds.
    pub fn corrupt(&mut self, ns: &str, key: &str, value: Value) -> Result<(), ConfigError> {
        super::check_key(key)?;
        self.ns(ns)?;
        let n = self.namespaces.get_mut(ns).expect("checked above");
        let version = n.version;
        let new = StoredValue { format: super::Format::Json, text: value.to_string(), json: value, version };
        if let Some(old) = n.keys.get(key) {
            n.hash = n.hash.wrapping_sub(entry_hash(key, old));
        }
        n.hash = n.hash.wrapping_add(entry_hash(key, &new));
        n.keys.insert(key.into(), new);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Command;

    fn model_with(n: u64) -> Model {
        let mut m = Model::default();
        m.apply(Command::CreateNamespace { namespace: "a".into(), schema: None, author: "t".into(), at_ms: 0 })
            .unwrap();
        for i in 0..n {
            m.apply(Command::Put {
                namespace: "a".into(),
                key: format!("k{}", i % 3),
                format: crate::model::Format::Json,
                text: i.to_string(),
                expected_version: None,
                expected_key_version: None,
                author: "t".into(),
                message: String::new(),
                at_ms: i,
            })
            .unwrap();
        }
        m
    }

    #[test]
    fn recorded_hashes_match_what_each_version_held() {
        let m = model_with(6);
        for v in 1..=7 {
            let held = hex(content_hash(&m.state_at("a", v).unwrap()));
            assert_eq!(m.recorded_hash("a", v), Some(held), "version {v}");
        }
        assert_eq!(m.recorded_hash("a", 8), None);
        assert_eq!(m.recorded_hash("a", 0), None);
        assert_eq!(m.recorded_hash("nope", 1), None);
        assert_eq!(m.digests()[0].content_hash, m.recorded_hash("a", 7).unwrap());
    }

    #[test]
    fn a_corrupted_replica_reports_a_different_hash_at_the_same_version() {
        let good = model_with(4);
        let mut bad = model_with(4);
        bad.corrupt("a", "k1", serde_json::json!("rot")).unwrap();
        let (g, b) = (&good.digests()[0], &bad.digests()[0]);
        assert_eq!(g.version, b.version);
        assert_ne!(g.content_hash, b.content_hash);
        // The kept hash follows the content: later writes stay consistent.
        assert_eq!(bad.recorded_hash("a", b.version).unwrap(), b.content_hash);
        assert!(bad.corrupt("missing", "k", Value::Null).is_err());
        // Restoring a good snapshot repairs it exactly.
        let fixed = Model::restore(&good.snapshot()).unwrap();
        assert_eq!(fixed.digests(), good.digests());
    }
}
