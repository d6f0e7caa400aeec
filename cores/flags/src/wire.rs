//! What a flag server sends to streaming SDKs: a [`Snapshot`] of an environment, then
//! [`Delta`]s, each carrying the environment version it leads to. The server's stream, its
//! polling endpoint and the SDK share these types, so they cannot drift apart.
//!
//! On the wire (Server-Sent Events) an event named [`EVENT_SNAPSHOT`] carries a snapshot and one
//! named [`EVENT_DELTA`] a delta; the SSE `id` is the version, so a client resumes with
//! `Last-Event-ID`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::compile::ValidationError;
use crate::model::{Flag, Segment};
use crate::store::FlagStore;

/// The SSE event name of a [`Snapshot`].
pub const EVENT_SNAPSHOT: &str = "snapshot";
/// The SSE event name of a [`Delta`].
pub const EVENT_DELTA: &str = "delta";

/// One environment's flags and segments at `version`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Snapshot {
    pub project: String,
    pub environment: String,
    /// The environment's version: it grows by one with every change.
    pub version: u64,
    #[serde(default)]
    pub flags: Vec<Flag>,
    #[serde(default)]
    pub segments: Vec<Segment>,
}

/// The change from `version - 1` to `version`: flags and segments written (whole) and keys
/// deleted.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Delta {
    pub version: u64,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub flags: Vec<Flag>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub segments: Vec<Segment>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub deleted_flags: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub deleted_segments: Vec<String>,
}

/// An environment's definitions by key, as a client or server keeps them between events.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct FlagSet {
    pub version: u64,
    pub flags: BTreeMap<String, Flag>,
    pub segments: BTreeMap<String, Segment>,
}

/// Why a delta could not be applied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeltaError {
    /// The delta does not follow the set's version: the client missed events and needs a
    /// snapshot.
    #[error("delta to version {got} does not follow version {have}")]
    Gap { have: u64, got: u64 },
    /// The result is not a consistent environment.
    #[error("{0}")]
    Invalid(ValidationError),
}

impl FlagSet {
    pub fn from_snapshot(s: Snapshot) -> Self {
        FlagSet {
            version: s.version,
            flags: s.flags.into_iter().map(|f| (f.key.clone(), f)).collect(),
            segments: s.segments.into_iter().map(|s| (s.key.clone(), s)).collect(),
        }
    }

    pub fn to_snapshot(&self, project: &str, environment: &str) -> Snapshot {
        Snapshot {
            project: project.to_owned(),
            environment: environment.to_owned(),
            version: self.version,
            flags: self.flags.values().cloned().collect(),
            segments: self.segments.values().cloned().collect(),
        }
    }

    /// Applies a delta that follows this set's version; on error the set is unchanged.
    pub fn apply(&mut self, delta: &Delta) -> Result<(), DeltaError> {
        if delta.version != self.version + 1 {
            return Err(DeltaError::Gap { have: self.version, got: delta.version });
        }
        for key in &delta.deleted_flags {
            self.flags.remove(key);
        }
        for key in &delta.deleted_segments {
            self.segments.remove(key);
        }
        for f in &delta.flags {
            self.flags.insert(f.key.clone(), f.clone());
        }
        for s in &delta.segments {
            self.segments.insert(s.key.clone(), s.clone());
        }
        self.version = delta.version;
        Ok(())
    }

    /// Compiles and cross-validates the set.
    pub fn compile(&self) -> Result<FlagStore, ValidationError> {
        FlagStore::new(self.flags.values().cloned(), self.segments.values().cloned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{FlagKind, Serve};

    fn flag(key: &str, on: bool) -> Flag {
        Flag {
            key: key.into(),
            variants: [("on".to_owned(), true.into()), ("off".to_owned(), false.into())].into(),
            kind: FlagKind::Boolean,
            enabled: on,
            off_variant: "off".into(),
            fallthrough: Serve::Variant("on".into()),
            rules: vec![],
            prerequisites: vec![],
            salt: String::new(),
            version: 0,
        }
    }

    #[test]
    fn deltas_apply_in_order_and_gaps_are_refused() {
        let mut set =
            FlagSet::from_snapshot(Snapshot { version: 3, flags: vec![flag("a", true)], ..Default::default() });
        let d4 =
            Delta { version: 4, flags: vec![flag("b", true)], deleted_flags: vec!["a".into()], ..Default::default() };
        let d6 = Delta { version: 6, ..Default::default() };
        assert_eq!(set.apply(&d6), Err(DeltaError::Gap { have: 3, got: 6 }));
        set.apply(&d4).unwrap();
        assert_eq!(set.version, 4);
        assert_eq!(set.flags.keys().collect::<Vec<_>>(), ["b"]);
        assert!(set.compile().unwrap().get("b").is_some());
        let back = FlagSet::from_snapshot(set.to_snapshot("p", "e"));
        assert_eq!(back, set);
    }

    #[test]
    fn a_delta_round_trips_and_omits_empty_lists() {
        let d = Delta { version: 9, deleted_segments: vec!["s".into()], ..Default::default() };
        let json = serde_json::to_string(&d).unwrap();
        assert_eq!(json, r#"{"version":9,"deleted_segments":["s"]}"#);
        assert_eq!(serde_json::from_str::<Delta>(&json).unwrap(), d);
    }
}
