//! [`IdempotencyTable`]: idempotency keys with Stripe's semantics, as replicated state.
//!
//! A request carrying an `Idempotency-Key` calls [`IdempotencyTable::begin`] with its scope (the
//! merchant or API key: keys of different scopes never collide), the key, a fingerprint of the
//! request (a hash of method, path and canonical parameters) and `now_ms`:
//!
//! | entry for (scope, key)                       | [`Begin`]                                  | upstream |
//! |----------------------------------------------|--------------------------------------------|----------|
//! | none (or expired)                            | `Fresh { token, recovered: false }`        | run it   |
//! | other fingerprint                            | `Mismatch`                                 | 422      |
//! | same fingerprint, completed                  | `Replay(response)`                         | replay   |
//! | same fingerprint, in flight, locked recently | `InFlight`                                 | 409      |
//! | same fingerprint, in flight, lock timed out  | `Fresh { token: new, recovered: true }`    | run it   |
//!
//! The owner of a `Fresh` token then calls [`IdempotencyTable::complete`] with the response to
//! store (it is replayed to every retry until the key expires), or
//! [`IdempotencyTable::abandon`] when the request failed before doing anything (validation
//! errors are not stored: the key becomes free again, as with Stripe).
//!
//! # Decisions
//!
//! - **Takeover of a stuck key.** An in-flight entry whose owner died would block its key for
//!   24 h. So `begin` on an in-flight entry locked longer than `lock_timeout_ms` ago takes it
//!   over: it returns `Fresh` with a *new* token and `recovered: true`. Tokens fence: the old
//!   owner's `complete`/`abandon` then fails with [`IdempotencyError::StaleToken`], so exactly
//!   one response is ever stored. `recovered` tells the new owner that an earlier attempt may
//!   have done part of the work — payments resolve that through the intent's provider attempt
//!   (query, never charge twice), not through this table.
//! - **The fingerprint is compared first**: a different request under a used key is a client bug
//!   that no retry fixes, so it is `Mismatch` even while the key is in flight.
//! - **Expiry** is 24 h (`ttl_ms`) after the key's *first* use, whatever its state; a takeover
//!   does not extend it. An expired entry is treated as absent by `begin` even before
//!   [`IdempotencyTable::expire`] removes it, so answers never depend on when the sweep ran.
//! - **Tokens** come from a counter in the state (no randomness), so replicas agree.
//! - **Limits**: keys and scopes are 1–255 characters with no control characters; at most
//!   `entries_max` entries (`begin` refuses new keys beyond it); stored bodies at most
//!   `response_body_max_bytes`.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

/// The longest key or scope, in characters (Stripe's limit).
pub const KEY_LEN_MAX: usize = 255;

/// 24 hours.
pub const DAY_MS: u64 = 24 * 60 * 60 * 1000;

/// The table's limits and timeouts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdempotencyConfig {
    /// How long after its first use a key is remembered (default 24 h).
    pub ttl_ms: u64,
    /// How long an in-flight entry is protected before another request may take it over
    /// (default 60 s). At most `ttl_ms`.
    pub lock_timeout_ms: u64,
    /// The most entries the table holds (default 1 000 000).
    pub entries_max: usize,
    /// The largest response body stored (default 1 MiB).
    pub response_body_max_bytes: usize,
}

impl Default for IdempotencyConfig {
    fn default() -> Self {
        IdempotencyConfig {
            ttl_ms: DAY_MS,
            lock_timeout_ms: 60_000,
            entries_max: 1_000_000,
            response_body_max_bytes: 1 << 20,
        }
    }
}

/// A hash of the request (method, path, canonical parameters) computed by the caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Fingerprint(pub [u8; 32]);

/// Proof of ownership of an in-flight key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct AttemptToken(pub u64);

/// A response kept for replay.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoredResponse {
    /// The HTTP status.
    pub status: u16,
    /// Headers to replay, in order.
    pub headers: Vec<(String, String)>,
    /// The body (the payments API answers JSON, so text).
    pub body: String,
}

/// What [`IdempotencyTable::begin`] decided.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Begin {
    /// Run the request; finish with `complete` or `abandon` and this token. `recovered`: the
    /// key was taken over from an owner whose lock timed out (it may have done part of the work).
    Fresh {
        /// The owner's token.
        token: AttemptToken,
        /// Whether this is a takeover.
        recovered: bool,
    },
    /// Another request with this key is running (409 upstream).
    InFlight,
    /// The request completed before: replay this.
    Replay(StoredResponse),
    /// The key was used with a different request (422 upstream).
    Mismatch,
}

/// Which string was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KeyField {
    /// The scope.
    Scope,
    /// The idempotency key.
    Key,
}

impl KeyField {
    fn name(self) -> &'static str {
        match self {
            KeyField::Scope => "scope",
            KeyField::Key => "idempotency key",
        }
    }
}

/// Why a table operation was refused. Refusals change nothing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdempotencyError {
    /// An empty key or scope.
    #[error("the {} must not be empty", .0.name())]
    Empty(KeyField),
    /// A key or scope over [`KEY_LEN_MAX`] characters.
    #[error("the {} is {len} characters long; the limit is {KEY_LEN_MAX}", .field.name())]
    TooLong {
        /// Which string.
        field: KeyField,
        /// Its length in characters.
        len: usize,
    },
    /// A key or scope with a control character.
    #[error("the {} must contain only printable characters", .0.name())]
    NotPrintable(KeyField),
    /// The table holds `entries_max` entries.
    #[error("too many idempotency keys in use (limit {0})")]
    TableFull(usize),
    /// No entry for this key (never used, abandoned or expired).
    #[error("no request in flight with this idempotency key")]
    NotFound,
    /// The entry is completed already.
    #[error("the request with this idempotency key has already completed")]
    AlreadyCompleted,
    /// The token is not the current owner's (the key was taken over).
    #[error("the idempotency key was taken over by another request")]
    StaleToken,
    /// A response body over `response_body_max_bytes`.
    #[error("the response body is {len} bytes; the limit is {max}")]
    ResponseTooLarge {
        /// The body's length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A configuration that cannot work.
    #[error("invalid idempotency configuration: {0}")]
    InvalidConfig(&'static str),
}

impl IdempotencyError {
    /// The stable snake_case code.
    pub fn code(&self) -> &'static str {
        match self {
            IdempotencyError::Empty(_) | IdempotencyError::TooLong { .. } | IdempotencyError::NotPrintable(_) => {
                "idempotency_key_invalid"
            }
            IdempotencyError::TableFull(_) => "idempotency_table_full",
            IdempotencyError::NotFound => "idempotency_key_not_found",
            IdempotencyError::AlreadyCompleted => "idempotency_key_completed",
            IdempotencyError::StaleToken => "idempotency_token_stale",
            IdempotencyError::ResponseTooLarge { .. } => "idempotency_response_too_large",
            IdempotencyError::InvalidConfig(_) => "invalid_config",
        }
    }
}

/// The state of one key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EntryState {
    /// A request holds the key.
    InFlight {
        /// The owner's token.
        token: AttemptToken,
        /// When the current owner took it.
        locked_at_ms: u64,
    },
    /// Done; replayed to retries.
    Completed(StoredResponse),
}

/// One key's entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Entry {
    /// The request's fingerprint.
    pub fingerprint: Fingerprint,
    /// The key's first use.
    pub created_at_ms: u64,
    /// When it is forgotten (`created_at_ms + ttl_ms`).
    pub expires_at_ms: u64,
    /// In flight or completed.
    pub state: EntryState,
}

/// The table. Serialized as configuration, token counter and entries (scope → key → entry); the
/// expiry index is rebuilt on load.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "TableSnapshot")]
pub struct IdempotencyTable {
    config: IdempotencyConfig,
    next_token: u64,
    entries: BTreeMap<String, BTreeMap<String, Entry>>,
    #[serde(skip)]
    len: usize,
    #[serde(skip)]
    by_expiry: BTreeSet<(u64, String, String)>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TableSnapshot {
    config: IdempotencyConfig,
    next_token: u64,
    entries: BTreeMap<String, BTreeMap<String, Entry>>,
}

impl TryFrom<TableSnapshot> for IdempotencyTable {
    type Error = IdempotencyError;
    fn try_from(s: TableSnapshot) -> Result<Self, IdempotencyError> {
        let mut table = IdempotencyTable::new(s.config)?;
        table.next_token = s.next_token;
        for (scope, keys) in s.entries {
            for (key, entry) in keys {
                check(KeyField::Scope, &scope)?;
                check(KeyField::Key, &key)?;
                table.by_expiry.insert((entry.expires_at_ms, scope.clone(), key.clone()));
                table.entries.entry(scope.clone()).or_default().insert(key, entry);
                table.len += 1;
            }
        }
        Ok(table)
    }
}

fn check(field: KeyField, s: &str) -> Result<(), IdempotencyError> {
    if s.is_empty() {
        return Err(IdempotencyError::Empty(field));
    }
    let len = s.chars().count();
    if len > KEY_LEN_MAX {
        return Err(IdempotencyError::TooLong { field, len });
    }
    if s.chars().any(char::is_control) {
        return Err(IdempotencyError::NotPrintable(field));
    }
    Ok(())
}

impl IdempotencyTable {
    /// An empty table. `ttl_ms` and `lock_timeout_ms` must be non-zero, the lock timeout at most
    /// the TTL, and `entries_max` non-zero.
    pub fn new(config: IdempotencyConfig) -> Result<IdempotencyTable, IdempotencyError> {
        if config.ttl_ms == 0 || config.lock_timeout_ms == 0 {
            return Err(IdempotencyError::InvalidConfig("ttl_ms and lock_timeout_ms must be greater than zero"));
        }
        if config.lock_timeout_ms > config.ttl_ms {
            return Err(IdempotencyError::InvalidConfig("lock_timeout_ms must not exceed ttl_ms"));
        }
        if config.entries_max == 0 {
            return Err(IdempotencyError::InvalidConfig("entries_max must be greater than zero"));
        }
        Ok(IdempotencyTable { config, next_token: 1, entries: BTreeMap::new(), len: 0, by_expiry: BTreeSet::new() })
    }

    /// The configuration.
    pub fn config(&self) -> &IdempotencyConfig {
        &self.config
    }

    /// The number of entries (including expired ones not yet removed).
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the table has no entries.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The entry for (scope, key), expired or not.
    pub fn get(&self, scope: &str, key: &str) -> Option<&Entry> {
        self.entries.get(scope).and_then(|keys| keys.get(key))
    }

    /// Decides what a request with this key does (see the module documentation).
    pub fn begin(
        &mut self,
        scope: &str,
        key: &str,
        fingerprint: Fingerprint,
        now_ms: u64,
    ) -> Result<Begin, IdempotencyError> {
        check(KeyField::Scope, scope)?;
        check(KeyField::Key, key)?;
        let lock_timeout_ms = self.config.lock_timeout_ms;
        let token = AttemptToken(self.next_token);
        match self.get(scope, key) {
            Some(e) if now_ms >= e.expires_at_ms => {
                self.remove(scope, key);
            }
            Some(e) if e.fingerprint != fingerprint => return Ok(Begin::Mismatch),
            Some(Entry { state: EntryState::Completed(response), .. }) => return Ok(Begin::Replay(response.clone())),
            Some(Entry { state: EntryState::InFlight { locked_at_ms, .. }, .. }) => {
                if now_ms.saturating_sub(*locked_at_ms) < lock_timeout_ms {
                    return Ok(Begin::InFlight);
                }
                if let Some(e) = self.entry_mut(scope, key) {
                    e.state = EntryState::InFlight { token, locked_at_ms: now_ms };
                }
                self.next_token += 1;
                return Ok(Begin::Fresh { token, recovered: true });
            }
            None => {}
        }
        if self.len >= self.config.entries_max {
            return Err(IdempotencyError::TableFull(self.config.entries_max));
        }
        let expires_at_ms = now_ms.saturating_add(self.config.ttl_ms);
        let entry = Entry {
            fingerprint,
            created_at_ms: now_ms,
            expires_at_ms,
            state: EntryState::InFlight { token, locked_at_ms: now_ms },
        };
        self.entries.entry(scope.to_owned()).or_default().insert(key.to_owned(), entry);
        self.by_expiry.insert((expires_at_ms, scope.to_owned(), key.to_owned()));
        self.len += 1;
        self.next_token += 1;
        Ok(Begin::Fresh { token, recovered: false })
    }

    /// Stores the response of the request holding `token`; retries replay it until expiry.
    pub fn complete(
        &mut self,
        scope: &str,
        key: &str,
        token: AttemptToken,
        response: StoredResponse,
    ) -> Result<(), IdempotencyError> {
        let max = self.config.response_body_max_bytes;
        if response.body.len() > max {
            return Err(IdempotencyError::ResponseTooLarge { len: response.body.len(), max });
        }
        let entry = self.owned_entry(scope, key, token)?;
        entry.state = EntryState::Completed(response);
        Ok(())
    }

    /// Frees the key held by `token` without storing anything (the request failed before doing
    /// anything, e.g. validation): the next request with the key runs afresh.
    pub fn abandon(&mut self, scope: &str, key: &str, token: AttemptToken) -> Result<(), IdempotencyError> {
        self.owned_entry(scope, key, token)?;
        self.remove(scope, key);
        Ok(())
    }

    /// Removes every entry expired at `now_ms`, oldest first; returns how many.
    pub fn expire(&mut self, now_ms: u64) -> usize {
        self.expire_at_most(now_ms, usize::MAX)
    }

    /// [`IdempotencyTable::expire`], removing at most `max` entries (bounded work per call).
    pub fn expire_at_most(&mut self, now_ms: u64, max: usize) -> usize {
        let mut removed = 0;
        while removed < max {
            match self.by_expiry.first() {
                Some((at, scope, key)) if *at <= now_ms => {
                    let (scope, key) = (scope.clone(), key.clone());
                    self.remove(&scope, &key);
                    removed += 1;
                }
                _ => break,
            }
        }
        removed
    }

    fn entry_mut(&mut self, scope: &str, key: &str) -> Option<&mut Entry> {
        self.entries.get_mut(scope).and_then(|keys| keys.get_mut(key))
    }

    fn owned_entry(&mut self, scope: &str, key: &str, token: AttemptToken) -> Result<&mut Entry, IdempotencyError> {
        let entry = self.entry_mut(scope, key).ok_or(IdempotencyError::NotFound)?;
        match entry.state {
            EntryState::Completed(_) => Err(IdempotencyError::AlreadyCompleted),
            EntryState::InFlight { token: owner, .. } if owner != token => Err(IdempotencyError::StaleToken),
            EntryState::InFlight { .. } => Ok(entry),
        }
    }

    fn remove(&mut self, scope: &str, key: &str) {
        let Some(keys) = self.entries.get_mut(scope) else { return };
        let Some(entry) = keys.remove(key) else { return };
        if keys.is_empty() {
            self.entries.remove(scope);
        }
        self.by_expiry.remove(&(entry.expires_at_ms, scope.to_owned(), key.to_owned()));
        self.len -= 1;
    }
}
