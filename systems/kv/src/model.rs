//! The Redis data model on the ring: what one key holds, and what each write does to it.
//! Pure: the node supplies the time and the HLC timestamp inside every operation.
//!
//! A key's value in the ring is a set of siblings (concurrent writes through different
//! coordinators). Each sibling is an [`Entry`] stamped with a hybrid logical clock; a RESP
//! client sees the one with the highest stamp (last writer wins, by HLC — so with skewed clocks
//! a write still wins over every write its coordinator had seen). Deletes are entries too
//! (`data: None`), so a delete and a concurrent write are ordered the same way everywhere.
//! Every write runs on a home replica of the key and stamps its entry after the one it
//! replaces.
//!
//! **Counters.** `INCR` and friends turn a string into a counter: a base (the value it had, and
//! the stamp of the entry it came from) plus, per actor, the sums of its increments and
//! decrements. Concurrent increments through different coordinators are siblings with the same
//! base; they merge by taking each actor's largest sums — so no increment is lost, whichever
//! order replicas meet in. A `SET` starts over (a new base, later stamp, wins as usual). To
//! clients a counter is a string holding its number.

use std::collections::BTreeMap;

use basalt_ring::hlc::Hlc;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
/// Byte strings go through `basalt_ring::bin` (the derived encoding, copied whole).
pub enum Data {
    Str(#[serde(with = "serde_bytes")] Vec<u8>),
    Counter(Counter),
    /// A `CL.THROTTLE` key: a GCRA limiter's state (the theoretical arrival time).
    Throttle(basalt_ratelimit_core::GcraState),
    Hash(#[serde(with = "basalt_ring::bin::values")] BTreeMap<Vec<u8>, Vec<u8>>),
    /// member → score.
    ZSet(#[serde(with = "basalt_ring::bin::keyed")] BTreeMap<Vec<u8>, f64>),
}

/// A PN-counter over a base value: `base + Σ (incr − decr)` over actors.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counter {
    pub base: i64,
    /// The stamp of the entry the counter started from: siblings with the same origin merge.
    pub origin: Hlc,
    /// Per actor: (sum of increments, sum of decrements), both only growing.
    pub sums: BTreeMap<u64, (u64, u64)>,
}

impl Counter {
    /// The number, or None when it does not fit an i64.
    pub fn value(&self) -> Option<i64> {
        let mut v = i128::from(self.base);
        for (p, n) in self.sums.values() {
            v += i128::from(*p) - i128::from(*n);
        }
        i64::try_from(v).ok()
    }

    fn merge(&mut self, other: &Counter) {
        for (a, (p, n)) in &other.sums {
            let e = self.sums.entry(*a).or_insert((0, 0));
            *e = (e.0.max(*p), e.1.max(*n));
        }
    }
}

impl Data {
    /// The bytes a string-typed value reads as (a counter reads as its number).
    pub fn as_str(&self) -> Option<std::borrow::Cow<'_, [u8]>> {
        match self {
            Data::Str(s) => Some(std::borrow::Cow::Borrowed(s)),
            Data::Counter(c) => Some(std::borrow::Cow::Owned(c.value().unwrap_or(0).to_string().into_bytes())),
            Data::Throttle(t) => Some(std::borrow::Cow::Owned(t.tat_ns.to_string().into_bytes())),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    pub at: Hlc,
    pub expires_at_ms: Option<u64>,
    /// None: deleted.
    pub data: Option<Data>,
}

impl Entry {
    pub fn live(&self, now_ms: u64) -> Option<&Data> {
        if self.expires_at_ms.is_some_and(|t| t <= now_ms) {
            return None;
        }
        self.data.as_ref()
    }
}

pub const WRONGTYPE: &str = "WRONGTYPE Operation against a key holding the wrong kind of value";
pub const NOT_INT: &str = "ERR value is not an integer or out of range";
pub const OVERFLOW: &str = "ERR increment or decrement would overflow";
pub const NOT_FLOAT: &str = "ERR value is not a valid float";
pub const HASH_NOT_INT: &str = "ERR hash value is not an integer";
pub const NAN_SCORE: &str = "ERR resulting score is not a number (NaN)";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Cond {
    Always,
    /// Only if the key does not exist.
    Nx,
    /// Only if it exists.
    Xx,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Ttl {
    /// Clear any expiry.
    Clear,
    Keep,
    At(u64),
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum WriteOp {
    Set {
        value: Vec<u8>,
        ttl: Ttl,
        cond: Cond,
        get: bool,
    },
    GetDel,
    Del,
    IncrBy(i64),
    IncrByFloat(f64),
    Append(Vec<u8>),
    /// EXPIRE/PEXPIRE (at a time in the past: delete) and PERSIST (`None`).
    Expire(Option<u64>),
    HSet(Vec<(Vec<u8>, Vec<u8>)>),
    HDel(Vec<Vec<u8>>),
    HIncrBy(Vec<u8>, i64),
    ZAdd {
        members: Vec<(f64, Vec<u8>)>,
        cond: Cond,
        gt: bool,
        lt: bool,
        ch: bool,
        incr: bool,
    },
    ZRem(Vec<Vec<u8>>),
    /// `CL.THROTTLE key max_burst count period quantity` (redis-cell).
    Throttle {
        max_burst: u64,
        count: u64,
        period_s: u64,
        quantity: u64,
    },
}

/// What a write answers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Reply {
    Ok,
    Nil,
    Int(i64),
    Bulk(Vec<u8>),
    Double(f64),
    Ints(Vec<i64>),
}

/// The current entry of a key among its siblings: the highest stamp — with, when that is a
/// counter, every sibling counter of the same origin merged in (no increment is lost).
pub fn resolve<'a>(siblings: impl IntoIterator<Item = &'a Entry> + Clone) -> Option<Entry> {
    let top = siblings.clone().into_iter().max_by_key(|e| e.at)?;
    let mut out = top.clone();
    if let Some(Data::Counter(c)) = &mut out.data {
        for e in siblings {
            if let Some(Data::Counter(o)) = &e.data
                && o.origin == c.origin
            {
                c.merge(o);
            }
        }
    }
    Some(out)
}

fn parse_i64(b: &[u8]) -> Option<i64> {
    let s = std::str::from_utf8(b).ok()?;
    if s.is_empty() || s.len() > 20 || s.starts_with('+') || (s.starts_with('0') && s.len() > 1) || s.starts_with("-0")
    {
        return None;
    }
    s.parse().ok()
}

pub fn parse_f64(b: &[u8]) -> Option<f64> {
    let s = std::str::from_utf8(b).ok()?.trim();
    let v = match s.to_ascii_lowercase().as_str() {
        "inf" | "+inf" | "infinity" | "+infinity" => f64::INFINITY,
        "-inf" | "-infinity" => f64::NEG_INFINITY,
        _ => s.parse().ok()?,
    };
    (!v.is_nan()).then_some(v)
}

/// Apply `op` to the key's current entry at `now_ms`; the new entry is stamped `at`.
/// Answers the new entry (None: unchanged) and the reply, or a Redis error (nothing changes).
pub fn apply(
    cur: Option<&Entry>,
    op: &WriteOp,
    now_ms: u64,
    at: Hlc,
    actor: u64,
) -> Result<(Option<Entry>, Reply), String> {
    let live = cur.and_then(|e| e.live(now_ms));
    let ttl = cur.filter(|_| live.is_some()).and_then(|e| e.expires_at_ms);
    let put = |data: Option<Data>, expires_at_ms: Option<u64>| Some(Entry { at, expires_at_ms, data });
    match op {
        WriteOp::Set { value, ttl: t, cond, get } => {
            let old = match (live.map(|d| d.as_str()), get) {
                (Some(Some(s)), true) => Reply::Bulk(s.into_owned()),
                (Some(None), true) => return Err(WRONGTYPE.into()),
                (None, true) => Reply::Nil,
                _ => Reply::Ok,
            };
            let blocked = match cond {
                Cond::Always => false,
                Cond::Nx => live.is_some(),
                Cond::Xx => live.is_none(),
            };
            if blocked {
                return Ok((None, if *get { old } else { Reply::Nil }));
            }
            let exp = match t {
                Ttl::Clear => None,
                Ttl::Keep => ttl,
                Ttl::At(ms) => Some(*ms),
            };
            Ok((put(Some(Data::Str(value.clone())), exp), old))
        }
        WriteOp::GetDel => match live.map(|d| d.as_str()) {
            Some(Some(s)) => Ok((put(None, None), Reply::Bulk(s.into_owned()))),
            Some(None) => Err(WRONGTYPE.into()),
            None => Ok((None, Reply::Nil)),
        },
        WriteOp::Del => match live {
            Some(_) => Ok((put(None, None), Reply::Int(1))),
            None => Ok((None, Reply::Int(0))),
        },
        WriteOp::IncrBy(by) => {
            let mut c = match live {
                Some(Data::Counter(c)) => c.clone(),
                Some(Data::Str(s)) => {
                    let base = parse_i64(s).ok_or(NOT_INT)?;
                    Counter { base, origin: cur.map_or(at, |e| e.at), sums: BTreeMap::new() }
                }
                Some(_) => return Err(WRONGTYPE.into()),
                // Born from nothing: one origin for every coordinator, so they merge.
                None => Counter { base: 0, origin: Hlc { wall_ms: 0, logical: 0, node: 0 }, sums: BTreeMap::new() },
            };
            let v = c.value().unwrap_or(0).checked_add(*by).ok_or(OVERFLOW)?;
            let e = c.sums.entry(actor).or_insert((0, 0));
            if *by >= 0 {
                e.0 = e.0.checked_add(by.unsigned_abs()).ok_or(OVERFLOW)?;
            } else {
                e.1 = e.1.checked_add(by.unsigned_abs()).ok_or(OVERFLOW)?;
            }
            Ok((put(Some(Data::Counter(c)), ttl), Reply::Int(v)))
        }
        WriteOp::IncrByFloat(by) => {
            let n = match live.map(|d| d.as_str()) {
                Some(Some(s)) => parse_f64(&s).ok_or(NOT_FLOAT)?,
                Some(None) => return Err(WRONGTYPE.into()),
                None => 0.0,
            };
            let v = n + by;
            if !v.is_finite() {
                return Err("ERR increment would produce NaN or Infinity".into());
            }
            let text = basalt_resp::format_double(v).into_bytes();
            Ok((put(Some(Data::Str(text.clone())), ttl), Reply::Bulk(text)))
        }
        WriteOp::Append(more) => {
            let mut s = match live.map(|d| d.as_str()) {
                Some(Some(s)) => s.into_owned(),
                Some(None) => return Err(WRONGTYPE.into()),
                None => Vec::new(),
            };
            s.extend_from_slice(more);
            let len = s.len() as i64;
            Ok((put(Some(Data::Str(s)), ttl), Reply::Int(len)))
        }
        WriteOp::Expire(at_ms) => match (live, at_ms) {
            (None, _) => Ok((None, Reply::Int(0))),
            (Some(_), Some(t)) if *t <= now_ms => Ok((put(None, None), Reply::Int(1))),
            (Some(d), Some(t)) => Ok((put(Some(d.clone()), Some(*t)), Reply::Int(1))),
            (Some(_), None) if ttl.is_none() => Ok((None, Reply::Int(0))),
            (Some(d), None) => Ok((put(Some(d.clone()), None), Reply::Int(1))),
        },
        WriteOp::HSet(_) | WriteOp::HDel(_) | WriteOp::HIncrBy(..) | WriteOp::ZAdd { .. } | WriteOp::ZRem(_) => {
            let mut c = cur.cloned();
            let (changed, reply) = apply_in_place(&mut c, op, now_ms, at, actor)?;
            Ok((if changed { c } else { None }, reply))
        }
        WriteOp::Throttle { max_burst, count, period_s, quantity } => {
            use basalt_ratelimit_core::{Gcra, GcraConfig, GcraState, Limiter};
            let cfg = GcraConfig::from_cl_throttle(*max_burst, *count, *period_s).map_err(|e| format!("ERR {e}"))?;
            let state = match live {
                Some(Data::Throttle(s)) => *s,
                Some(_) => return Err(WRONGTYPE.into()),
                None => GcraState::default(),
            };
            let mut g = Gcra::with_state(cfg, state);
            let now_ns = now_ms.saturating_mul(1_000_000);
            let d = g.check(now_ns, *quantity);
            let reply = Reply::Ints(basalt_ratelimit_core::cl_throttle_reply(&d).to_vec());
            if !d.allowed || *quantity == 0 {
                return Ok((None, reply));
            }
            // The key lives until the limiter would be full again, as redis-cell's does.
            let expires = now_ms.saturating_add(d.reset_after_ns.div_ceil(1_000_000).max(1));
            Ok((put(Some(Data::Throttle(*g.state())), Some(expires)), reply))
        }
    }
}

/// The data of `cur` if the key exists at `now_ms`, to change in place.
fn live_mut(cur: &mut Option<Entry>, now_ms: u64) -> Option<&mut Data> {
    let e = cur.as_mut()?;
    if e.expires_at_ms.is_some_and(|t| t <= now_ms) {
        return None;
    }
    e.data.as_mut()
}

/// Stamp a changed entry; with `data` None (the collection became empty) it is a delete.
fn restamp(cur: &mut Option<Entry>, at: Hlc, emptied: bool) {
    if let Some(e) = cur {
        e.at = at;
        if emptied {
            e.data = None;
            e.expires_at_ms = None;
        }
    }
}

fn fresh(at: Hlc, data: Data) -> Option<Entry> {
    Some(Entry { at, expires_at_ms: None, data: Some(data) })
}

/// ZADD's member loop: (added, changed, the last score set).
fn zadd_into(
    z: &mut BTreeMap<Vec<u8>, f64>,
    members: &[(f64, Vec<u8>)],
    cond: Cond,
    gt: bool,
    lt: bool,
    incr: bool,
) -> Result<(i64, i64, Option<f64>), String> {
    let (mut added, mut changed) = (0i64, 0i64);
    let mut last = None;
    for (score, m) in members {
        let old = z.get(m).copied();
        if (cond == Cond::Nx && old.is_some()) || (cond == Cond::Xx && old.is_none()) {
            continue;
        }
        let new = if incr { old.unwrap_or(0.0) + score } else { *score };
        if new.is_nan() {
            return Err(NAN_SCORE.into());
        }
        if let Some(o) = old
            && ((gt && new <= o) || (lt && new >= o))
        {
            continue;
        }
        last = Some(new);
        match old {
            None => {
                added += 1;
                z.insert(m.clone(), new);
            }
            Some(o) if o != new => {
                changed += 1;
                z.insert(m.clone(), new);
            }
            _ => {}
        }
    }
    Ok((added, changed, last))
}

/// [`apply`] on an entry the caller owns, changed in place: answers whether it changed (then
/// `cur` is the new entry, stamped `at`; a delete is an entry without data) and the reply.
/// Unchanged — and after an error — `cur` is as it was (property-tested), so a caller can
/// apply a run of operations to one entry. Hashes and sorted sets change in place —
/// O(log n) per field or member, the collection is never copied; other types go through
/// [`apply`].
pub fn apply_in_place(
    cur: &mut Option<Entry>,
    op: &WriteOp,
    now_ms: u64,
    at: Hlc,
    actor: u64,
) -> Result<(bool, Reply), String> {
    // Several INCR pairs (ZADD's parser never makes them) could fail half-way: use a copy.
    if let WriteOp::ZAdd { incr: true, members, .. } = op
        && members.len() > 1
    {
        let mut copy = cur.clone();
        let r = in_place(&mut copy, op, now_ms, at, actor)?;
        *cur = copy;
        return Ok(r);
    }
    in_place(cur, op, now_ms, at, actor)
}

fn in_place(cur: &mut Option<Entry>, op: &WriteOp, now_ms: u64, at: Hlc, actor: u64) -> Result<(bool, Reply), String> {
    match op {
        WriteOp::HSet(pairs) => {
            let insert = |h: &mut BTreeMap<Vec<u8>, Vec<u8>>| {
                pairs.iter().filter(|(f, v)| h.insert(f.clone(), v.clone()).is_none()).count() as i64
            };
            let added = match live_mut(cur, now_ms) {
                Some(Data::Hash(h)) => {
                    let n = insert(h);
                    restamp(cur, at, false);
                    n
                }
                Some(_) => return Err(WRONGTYPE.into()),
                None => {
                    let mut h = BTreeMap::new();
                    let n = insert(&mut h);
                    *cur = fresh(at, Data::Hash(h));
                    n
                }
            };
            Ok((true, Reply::Int(added)))
        }
        WriteOp::HDel(fields) => {
            let (removed, emptied) = match live_mut(cur, now_ms) {
                Some(Data::Hash(h)) => (fields.iter().filter(|f| h.remove(*f).is_some()).count(), h.is_empty()),
                Some(_) => return Err(WRONGTYPE.into()),
                None => (0, false),
            };
            if removed > 0 {
                restamp(cur, at, emptied);
            }
            Ok((removed > 0, Reply::Int(removed as i64)))
        }
        WriteOp::HIncrBy(field, by) => {
            let bump = |h: &mut BTreeMap<Vec<u8>, Vec<u8>>| -> Result<i64, String> {
                let n = match h.get(field) {
                    Some(v) => parse_i64(v).ok_or(HASH_NOT_INT)?,
                    None => 0,
                };
                let v = n.checked_add(*by).ok_or(OVERFLOW)?;
                h.insert(field.clone(), v.to_string().into_bytes());
                Ok(v)
            };
            let v = match live_mut(cur, now_ms) {
                Some(Data::Hash(h)) => {
                    let v = bump(h)?;
                    restamp(cur, at, false);
                    v
                }
                Some(_) => return Err(WRONGTYPE.into()),
                None => {
                    let mut h = BTreeMap::new();
                    let v = bump(&mut h)?;
                    *cur = fresh(at, Data::Hash(h));
                    v
                }
            };
            Ok((true, Reply::Int(v)))
        }
        WriteOp::ZAdd { members, cond, gt, lt, ch, incr } => {
            let (added, changed, last) = match live_mut(cur, now_ms) {
                Some(Data::ZSet(z)) => {
                    let r = zadd_into(z, members, *cond, *gt, *lt, *incr)?;
                    if r.0 + r.1 > 0 {
                        restamp(cur, at, false);
                    }
                    r
                }
                Some(_) => return Err(WRONGTYPE.into()),
                None => {
                    let mut z = BTreeMap::new();
                    let r = zadd_into(&mut z, members, *cond, *gt, *lt, *incr)?;
                    if r.0 + r.1 > 0 {
                        *cur = fresh(at, Data::ZSet(z));
                    }
                    r
                }
            };
            let reply = if *incr {
                last.map_or(Reply::Nil, Reply::Double)
            } else {
                Reply::Int(if *ch { added + changed } else { added })
            };
            Ok((added + changed > 0, reply))
        }
        WriteOp::ZRem(ms) => {
            let (removed, emptied) = match live_mut(cur, now_ms) {
                Some(Data::ZSet(z)) => (ms.iter().filter(|m| z.remove(*m).is_some()).count(), z.is_empty()),
                Some(_) => return Err(WRONGTYPE.into()),
                None => (0, false),
            };
            if removed > 0 {
                restamp(cur, at, emptied);
            }
            Ok((removed > 0, Reply::Int(removed as i64)))
        }
        _ => {
            let (new, reply) = apply(cur.as_ref(), op, now_ms, at, actor)?;
            let changed = new.is_some();
            if changed {
                *cur = new;
            }
            Ok((changed, reply))
        }
    }
}

/// A sorted set's members in Redis order: by score, then by member bytes.
pub fn zsorted(z: &BTreeMap<Vec<u8>, f64>) -> Vec<(&Vec<u8>, f64)> {
    let mut v: Vec<(&Vec<u8>, f64)> = z.iter().map(|(m, s)| (m, *s)).collect();
    v.sort_by(|a, b| a.1.total_cmp(&b.1).then_with(|| a.0.cmp(b.0)));
    v
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    #[test]
    fn concurrent_increments_through_different_replicas_all_count() {
        let start = str_entry("10", 1);
        // Two coordinators (actors 7 and 8) each increment the same version concurrently.
        let (a, _) = apply(Some(&start), &WriteOp::IncrBy(5), 0, at(2), 7).unwrap();
        let (b, _) = apply(Some(&start), &WriteOp::IncrBy(-3), 0, at(3), 8).unwrap();
        let (a, b) = (a.unwrap(), b.unwrap());
        let merged = resolve([&a, &b]).unwrap();
        assert_eq!(merged.data.as_ref().unwrap().as_str().unwrap().as_ref(), b"12");
        // Merging is order-free and idempotent.
        assert_eq!(resolve([&b, &a, &a]).unwrap().data, merged.data);
        // Another increment on the merged counter keeps both.
        let (c, r) = apply(Some(&merged), &WriteOp::IncrBy(1), 0, at(4), 7).unwrap();
        assert_eq!(r, Reply::Int(13));
        // A SET starts over: a later counter of another origin does not merge with the old one.
        let (s, _) = apply(
            c.as_ref(),
            &WriteOp::Set { value: b"0".to_vec(), ttl: Ttl::Clear, cond: Cond::Always, get: false },
            0,
            at(5),
            7,
        )
        .unwrap();
        let (d, _) = apply(s.as_ref(), &WriteOp::IncrBy(2), 0, at(6), 8).unwrap();
        let got = resolve([c.as_ref().unwrap(), d.as_ref().unwrap()]).unwrap();
        assert_eq!(got.data.unwrap().as_str().unwrap().as_ref(), b"2");
    }

    fn at(ms: u64) -> Hlc {
        Hlc { wall_ms: ms, logical: 0, node: 1 }
    }

    fn str_entry(v: &str, ms: u64) -> Entry {
        Entry { at: at(ms), expires_at_ms: None, data: Some(Data::Str(v.into())) }
    }

    #[test]
    fn set_conditions_ttl_and_get() {
        let set = |cond, get| WriteOp::Set { value: b"new".to_vec(), ttl: Ttl::Keep, cond, get };
        let cur = str_entry("old", 1);
        assert_eq!(apply(Some(&cur), &set(Cond::Nx, false), 10, at(2), 1).unwrap(), (None, Reply::Nil));
        let (e, r) = apply(Some(&cur), &set(Cond::Xx, true), 10, at(2), 1).unwrap();
        assert_eq!((e.unwrap().data, r), (Some(Data::Str(b"new".to_vec())), Reply::Bulk(b"old".to_vec())));
        assert_eq!(apply(None, &set(Cond::Xx, false), 10, at(2), 1).unwrap(), (None, Reply::Nil));
        // An expired key does not exist.
        let expired = Entry { expires_at_ms: Some(5), ..cur.clone() };
        assert_eq!(apply(Some(&expired), &set(Cond::Nx, true), 10, at(2), 1).unwrap().1, Reply::Nil);
    }

    #[test]
    fn counters_check_types_and_overflow() {
        let cur = str_entry("41", 1);
        assert_eq!(apply(Some(&cur), &WriteOp::IncrBy(1), 0, at(2), 1).unwrap().1, Reply::Int(42));
        assert_eq!(apply(Some(&str_entry("x", 1)), &WriteOp::IncrBy(1), 0, at(2), 1).unwrap_err(), NOT_INT);
        assert_eq!(
            apply(Some(&str_entry("9223372036854775807", 1)), &WriteOp::IncrBy(1), 0, at(2), 1).unwrap_err(),
            OVERFLOW
        );
        assert_eq!(apply(Some(&str_entry(" 1", 1)), &WriteOp::IncrBy(1), 0, at(2), 1).unwrap_err(), NOT_INT);
        let h = Entry { at: at(1), expires_at_ms: None, data: Some(Data::Hash(BTreeMap::new())) };
        assert_eq!(apply(Some(&h), &WriteOp::IncrBy(1), 0, at(2), 1).unwrap_err(), WRONGTYPE);
    }

    #[test]
    fn sorted_sets_follow_redis_options() {
        let add = |ms: &[(f64, &str)], cond, gt, ch, incr| WriteOp::ZAdd {
            members: ms.iter().map(|(s, m)| (*s, m.as_bytes().to_vec())).collect(),
            cond,
            gt,
            lt: false,
            ch,
            incr,
        };
        let (e, r) =
            apply(None, &add(&[(1.0, "a"), (2.0, "b")], Cond::Always, false, false, false), 0, at(1), 1).unwrap();
        assert_eq!(r, Reply::Int(2));
        let e = e.unwrap();
        let (_, r) =
            apply(Some(&e), &add(&[(0.5, "a"), (3.0, "c")], Cond::Always, true, true, false), 0, at(2), 1).unwrap();
        assert_eq!(r, Reply::Int(1), "GT keeps a's higher score; c is added");
        let (_, r) = apply(Some(&e), &add(&[(5.0, "a")], Cond::Always, false, false, true), 0, at(2), 1).unwrap();
        assert_eq!(r, Reply::Double(6.0));
        let Some(Data::ZSet(z)) = &e.data else { panic!() };
        assert_eq!(zsorted(z).iter().map(|(m, _)| m.as_slice()).collect::<Vec<_>>(), [b"a", b"b"]);
    }

    #[test]
    fn the_latest_stamp_wins_among_siblings_and_deletes_count() {
        let a = str_entry("a", 5);
        let del = Entry { at: at(7), expires_at_ms: None, data: None };
        let b = str_entry("b", 6);
        let r = resolve([&a, &del, &b]).unwrap();
        assert!(r.live(0).is_none(), "the later delete wins");
    }

    /// The copying implementation hashes and sorted sets had before they changed in place:
    /// the reference the in-place one must match.
    fn reference(cur: Option<&Entry>, op: &WriteOp, now_ms: u64, at: Hlc) -> Result<(Option<Entry>, Reply), String> {
        let live = cur.and_then(|e| e.live(now_ms));
        let ttl = cur.filter(|_| live.is_some()).and_then(|e| e.expires_at_ms);
        let put = |data: Option<Data>, expires_at_ms: Option<u64>| Some(Entry { at, expires_at_ms, data });
        match op {
            WriteOp::HSet(pairs) => {
                let mut h = match live {
                    Some(Data::Hash(h)) => h.clone(),
                    Some(_) => return Err(WRONGTYPE.into()),
                    None => BTreeMap::new(),
                };
                let added = pairs.iter().filter(|(f, v)| h.insert(f.clone(), v.clone()).is_none()).count();
                Ok((put(Some(Data::Hash(h)), ttl), Reply::Int(added as i64)))
            }
            WriteOp::HDel(fields) => {
                let mut h = match live {
                    Some(Data::Hash(h)) => h.clone(),
                    Some(_) => return Err(WRONGTYPE.into()),
                    None => return Ok((None, Reply::Int(0))),
                };
                let removed = fields.iter().filter(|f| h.remove(*f).is_some()).count();
                if removed == 0 {
                    return Ok((None, Reply::Int(0)));
                }
                let data = (!h.is_empty()).then_some(Data::Hash(h));
                let exp = if data.is_some() { ttl } else { None };
                Ok((put(data, exp), Reply::Int(removed as i64)))
            }
            WriteOp::HIncrBy(field, by) => {
                let mut h = match live {
                    Some(Data::Hash(h)) => h.clone(),
                    Some(_) => return Err(WRONGTYPE.into()),
                    None => BTreeMap::new(),
                };
                let n = match h.get(field) {
                    Some(v) => parse_i64(v).ok_or(HASH_NOT_INT)?,
                    None => 0,
                };
                let v = n.checked_add(*by).ok_or(OVERFLOW)?;
                h.insert(field.clone(), v.to_string().into_bytes());
                Ok((put(Some(Data::Hash(h)), ttl), Reply::Int(v)))
            }
            WriteOp::ZAdd { members, cond, gt, lt, ch, incr } => {
                let mut z = match live {
                    Some(Data::ZSet(z)) => z.clone(),
                    Some(_) => return Err(WRONGTYPE.into()),
                    None => BTreeMap::new(),
                };
                let (mut added, mut changed) = (0i64, 0i64);
                let mut last = None;
                for (score, m) in members {
                    let old = z.get(m).copied();
                    if (*cond == Cond::Nx && old.is_some()) || (*cond == Cond::Xx && old.is_none()) {
                        continue;
                    }
                    let new = if *incr { old.unwrap_or(0.0) + score } else { *score };
                    if new.is_nan() {
                        return Err(NAN_SCORE.into());
                    }
                    if let Some(o) = old
                        && ((*gt && new <= o) || (*lt && new >= o))
                    {
                        continue;
                    }
                    last = Some(new);
                    match old {
                        None => added += 1,
                        Some(o) if o != new => changed += 1,
                        _ => {}
                    }
                    z.insert(m.clone(), new);
                }
                let reply = if *incr {
                    last.map_or(Reply::Nil, Reply::Double)
                } else {
                    Reply::Int(if *ch { added + changed } else { added })
                };
                if added + changed == 0 {
                    return Ok((None, reply));
                }
                Ok((put(Some(Data::ZSet(z)), ttl), reply))
            }
            WriteOp::ZRem(ms) => {
                let mut z = match live {
                    Some(Data::ZSet(z)) => z.clone(),
                    Some(_) => return Err(WRONGTYPE.into()),
                    None => return Ok((None, Reply::Int(0))),
                };
                let removed = ms.iter().filter(|m| z.remove(*m).is_some()).count();
                if removed == 0 {
                    return Ok((None, Reply::Int(0)));
                }
                let data = (!z.is_empty()).then_some(Data::ZSet(z));
                let exp = if data.is_some() { ttl } else { None };
                Ok((put(data, exp), Reply::Int(removed as i64)))
            }
            _ => unreachable!("collections only"),
        }
    }

    pub(crate) mod strategies {
        use proptest::prelude::*;

        use super::super::*;

        fn name() -> impl Strategy<Value = Vec<u8>> {
            (0..6u8).prop_map(|i| vec![b'a' + i])
        }

        fn score() -> impl Strategy<Value = f64> {
            prop_oneof![(-3..4i32).prop_map(f64::from), Just(f64::INFINITY), Just(f64::NEG_INFINITY)]
        }

        fn cond() -> impl Strategy<Value = Cond> {
            prop_oneof![Just(Cond::Always), Just(Cond::Nx), Just(Cond::Xx)]
        }

        /// Collection writes on a few fields and members (so they meet), every ZADD option.
        pub fn collection_op() -> impl Strategy<Value = WriteOp> {
            prop_oneof![
                proptest::collection::vec((name(), name()), 1..4).prop_map(WriteOp::HSet),
                proptest::collection::vec(name(), 1..4).prop_map(WriteOp::HDel),
                (name(), prop_oneof![Just(i64::MAX), -3..4i64]).prop_map(|(f, by)| WriteOp::HIncrBy(f, by)),
                (proptest::collection::vec((score(), name()), 1..4), cond(), any::<(bool, bool, bool, bool)>())
                    .prop_map(|(members, cond, (gt, lt, ch, incr))| WriteOp::ZAdd { members, cond, gt, lt, ch, incr }),
                proptest::collection::vec(name(), 1..4).prop_map(WriteOp::ZRem),
            ]
        }

        /// Any write, strings included.
        pub fn any_op() -> impl Strategy<Value = WriteOp> {
            prop_oneof![
                3 => collection_op(),
                1 => (name(), any::<bool>()).prop_map(|(value, get)| WriteOp::Set { value, ttl: Ttl::Clear, cond: Cond::Always, get }),
                1 => (-2..3i64).prop_map(WriteOp::IncrBy),
                1 => Just(WriteOp::Del),
                1 => prop_oneof![Just(None), (0..40u64).prop_map(Some)].prop_map(WriteOp::Expire),
            ]
        }
    }

    proptest::proptest! {
        /// In place, hashes and sorted sets answer and end exactly as the copying
        /// implementation did — over histories, with expiry and type errors met on the way.
        #[test]
        fn in_place_collections_match_the_copying_reference(
            ops in proptest::collection::vec((strategies::any_op(), 0..50u64), 1..30),
        ) {
            let mut cur: Option<Entry> = None;
            for (i, (op, now)) in ops.into_iter().enumerate() {
                let stamp = at(100 + i as u64);
                let collection = matches!(op, WriteOp::HSet(_) | WriteOp::HDel(_) | WriteOp::HIncrBy(..) | WriteOp::ZAdd { .. } | WriteOp::ZRem(_));
                let want = if collection { reference(cur.as_ref(), &op, now, stamp) } else { apply(cur.as_ref(), &op, now, stamp, 1) };
                let mut mine = cur.clone();
                let got = apply_in_place(&mut mine, &op, now, stamp, 1);
                match (want, got) {
                    (Err(w), Err(g)) => {
                        proptest::prop_assert_eq!(w, g);
                        proptest::prop_assert_eq!(&mine, &cur, "an error leaves the entry as it was");
                    }
                    (Ok((new, wr)), Ok((changed, gr))) => {
                        proptest::prop_assert_eq!(&wr, &gr);
                        proptest::prop_assert_eq!(new.is_some(), changed);
                        match new {
                            Some(n) => {
                                proptest::prop_assert_eq!(Some(&n), mine.as_ref());
                                cur = Some(n);
                            }
                            None => proptest::prop_assert_eq!(&mine, &cur, "unchanged means untouched"),
                        }
                    }
                    (w, g) => proptest::prop_assert!(false, "reference {w:?}, in place {g:?}"),
                }
            }
        }
    }
}
