//! The store on the ring: every write is the `kv` updater run on a home replica of the key;
//! every read is a quorum read resolved to the newest entry.

use std::sync::{Arc, Mutex};

use basalt_ring::dvv::Dot;
use basalt_ring::hlc::{Hlc, HlcClock};
use basalt_ring_engine::{Obj, Quorum, RingError, RingHandle, Updater};
use serde::{Deserialize, Serialize};

use crate::model::{self, Entry, Reply, WriteOp};

pub const UPDATER: &str = "kv";

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UpdateArg {
    pub op: WriteOp,
    pub now_ms: u64,
    pub at: Hlc,
}

/// An [`Entry`] whose data is a string or nothing, decoded with the string borrowed from the
/// encoding. Field for field the same encoding as `Entry` (a test holds them together); any
/// other kind of data fails to decode (an unknown variant), and the caller decodes an `Entry`.
#[derive(Deserialize)]
struct StrEntry<'a> {
    at: Hlc,
    expires_at_ms: Option<u64>,
    #[serde(borrow)]
    data: Option<StrData<'a>>,
}

/// `model::Data` with only its first variant, `Str`.
#[derive(Deserialize)]
enum StrData<'a> {
    Str(&'a [u8]),
}

pub fn decode_entries(obj: &Obj) -> Vec<Entry> {
    obj.values().filter_map(|v| postcard::from_bytes::<Entry>(v).ok()).collect()
}

/// The `kv` updater: resolve the key's entry, apply the operation, and stamp the result after
/// everything it replaces.
///
/// Big hashes and sorted sets are kept decoded between writes ([`Decoded`]), so a write to one
/// changes the collection in place instead of decoding, copying and re-building it: what is
/// left per write is one encoding of the new value (a memory copy's cost) for the store.
pub struct KvUpdater {
    decoded: Mutex<Decoded>,
    /// What `Decoded` keeps (values of at least this many bytes), to skip its lock otherwise.
    min_bytes: usize,
    /// Plain SETs over a small value skip decoding it ([`KvUpdater::blind_sets`]); off only in
    /// the tests that check it changes nothing.
    blind_sets: bool,
}

/// A plain SET replaces a value of fewer encoded bytes than this without decoding it.
const BLIND_SET_OLD_MAX: usize = 512;

/// Values of at least this many encoded bytes are kept decoded.
const DECODED_MIN_BYTES: usize = 512;

/// Decoded entries by key, each valid only for the exact sibling it was decoded from: the same
/// dot, the same stamp (the encoding's first field) and the same encoded length. A dot names
/// one write, so a stale entry can never be taken for the current one — not even if a store
/// failure made this node issue a dot twice (the second write has another stamp).
struct Decoded {
    map: std::collections::HashMap<Vec<u8>, (Dot, Hlc, usize, Entry), foldhash::fast::RandomState>,
    bytes: usize,
    max_bytes: usize,
    min_bytes: usize,
}

/// A decoded collection's memory, roughly, from its encoded size.
fn decoded_cost(len: usize) -> usize {
    len * 4
}

impl Decoded {
    /// The decoded entry of `value`, the object's one sibling, if kept (taken out: the caller
    /// changes it and puts it back).
    fn take(&mut self, key: &[u8], dot: Dot, value: &[u8]) -> Option<Entry> {
        let (d, at, len, _) = self.map.get(key)?;
        let stamp = postcard::take_from_bytes::<Hlc>(value).ok().map(|(h, _)| h);
        let valid = *d == dot && *len == value.len() && stamp == Some(*at);
        let (_, _, len, e) = self.map.remove(key)?;
        self.bytes -= decoded_cost(len);
        valid.then_some(e)
    }

    fn put(&mut self, key: &[u8], dot: Dot, len: usize, e: Entry) {
        if len < self.min_bytes || decoded_cost(len) > self.max_bytes {
            return;
        }
        if let Some((_, _, old, _)) = self.map.remove(key) {
            self.bytes -= decoded_cost(old);
        }
        while self.bytes + decoded_cost(len) > self.max_bytes {
            let Some(k) = self.map.keys().next().cloned() else { break };
            if let Some((_, _, old, _)) = self.map.remove(&k) {
                self.bytes -= decoded_cost(old);
            }
        }
        self.bytes += decoded_cost(len);
        self.map.insert(key.to_vec(), (dot, e.at, len, e));
    }
}

impl KvUpdater {
    pub fn new(decoded_bytes_max: usize) -> Self {
        Self::keeping(decoded_bytes_max, DECODED_MIN_BYTES)
    }

    fn keeping(max_bytes: usize, min_bytes: usize) -> Self {
        Self {
            decoded: Mutex::new(Decoded { map: Default::default(), bytes: 0, max_bytes, min_bytes }),
            min_bytes,
            blind_sets: true,
        }
    }

    /// A run of plain SETs — no condition, no GET, no KEEPTTL — over nothing or over one small
    /// live value: what they leave does not depend on that value, only on its stamp (each write
    /// is stamped after what it replaces, the stamp being the encoding's first field), so it is
    /// not decoded. Answers `None` (nothing done) when the run or the object is anything else.
    /// The same replies and object as the general path (tested).
    fn blind_sets(
        &self,
        key: &[u8],
        obj: &mut Obj,
        actor: u64,
        args: &mut [Result<UpdateArg, String>],
    ) -> Option<Vec<Result<Vec<u8>, String>>> {
        use model::{Cond, Ttl};
        let blind = |a: &Result<UpdateArg, String>| {
            matches!(
                a,
                Ok(UpdateArg {
                    op: WriteOp::Set { cond: Cond::Always, get: false, ttl: Ttl::Clear | Ttl::At(_), .. },
                    ..
                })
            )
        };
        if !self.blind_sets || args.is_empty() || !args.iter().all(blind) {
            return None;
        }
        let mut stamp = match obj.siblings.as_slice() {
            [] => None,
            [(_, Some(v))] if v.len() < BLIND_SET_OLD_MAX => Some(postcard::take_from_bytes::<Hlc>(v).ok()?.0),
            _ => return None,
        };
        let ok = postcard::to_allocvec(&Reply::Ok).ok()?;
        let mut last = None;
        for a in args.iter_mut() {
            let Ok(UpdateArg { op: WriteOp::Set { value, ttl, .. }, at, .. }) = a else { return None };
            let mut at = *at;
            if let Some(c) = stamp
                && c >= at
            {
                at = Hlc { wall_ms: c.wall_ms, logical: c.logical + 1, node: at.node };
            }
            stamp = Some(at);
            last = Some((at, if let Ttl::At(ms) = ttl { Some(*ms) } else { None }, value));
        }
        let (at, expires_at_ms, value) = last?;
        let e = Entry { at, expires_at_ms, data: Some(model::Data::Str(std::mem::take(value))) };
        let v = match to_vec_sized(&e, entry_size_hint(&e, None)) {
            Ok(v) => v,
            Err(err) => return Some(args.iter().map(|_| Err(format!("ERR {err}"))).collect()),
        };
        let len = v.len();
        let dot = write_over_own(obj, actor, Some(v));
        if len >= self.min_bytes {
            self.decoded().put(key, dot, len, e);
        }
        Some(args.iter().map(|_| Ok(ok.clone())).collect())
    }

    fn decoded(&self) -> std::sync::MutexGuard<'_, Decoded> {
        self.decoded.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Updater for KvUpdater {
    /// The write just made to `key` was not stored: its kept decoding describes an object the
    /// replica does not hold, and the next write reuses its dot — with a stamp derived from the
    /// same older value, possibly the same one, and an encoding possibly as long — so it goes.
    fn forget(&self, key: &[u8]) {
        let mut d = self.decoded();
        if let Some((_, _, len, _)) = d.map.remove(key) {
            d.bytes -= decoded_cost(len);
        }
    }

    fn apply(&self, key: &[u8], obj: &mut Obj, actor: u64, arg: &[u8]) -> Result<Vec<u8>, String> {
        self.apply_many(key, obj, actor, &[arg]).pop().unwrap_or_else(|| Err("ERR no reply".into()))
    }

    /// The key's operations one after the other on its decoded entry, then one new value (one
    /// encoding, one dot) if any of them changed it.
    fn apply_many(&self, key: &[u8], obj: &mut Obj, actor: u64, args: &[&[u8]]) -> Vec<Result<Vec<u8>, String>> {
        let mut parsed: Vec<Result<UpdateArg, String>> = args
            .iter()
            .map(|a| postcard::from_bytes::<UpdateArg>(a).map_err(|e| format!("ERR bad update: {e}")))
            .collect();
        if let Some(out) = self.blind_sets(key, obj, actor, &mut parsed) {
            return out;
        }
        // One live sibling (the usual case): its kept decoding, or decode it alone.
        let single = match obj.siblings.as_slice() {
            [(dot, Some(v))] => Some((*dot, v.as_slice())),
            _ => None,
        };
        let kept = single.and_then(|(dot, v)| self.decoded().take(key, dot, v));
        let mut cur = match (kept, single) {
            (Some(e), _) => Some(e),
            (None, Some((_, v))) => postcard::from_bytes::<Entry>(v).ok(),
            (None, None) => model::resolve(&decode_entries(obj)),
        };
        let mut changed = false;
        let mut out = Vec::with_capacity(args.len());
        for arg in parsed {
            let arg = match arg {
                Ok(a) => a,
                Err(e) => {
                    out.push(Err(e));
                    continue;
                }
            };
            let mut at = arg.at;
            if let Some(c) = &cur
                && c.at >= at
            {
                at = Hlc { wall_ms: c.at.wall_ms, logical: c.at.logical + 1, node: at.node };
            }
            // An error leaves `cur` as it was (`apply_in_place`'s contract).
            out.push(model::apply_in_place(&mut cur, &arg.op, arg.now_ms, at, actor).and_then(|(c, reply)| {
                changed |= c;
                postcard::to_allocvec(&reply).map_err(|e| e.to_string())
            }));
        }
        match (changed, cur) {
            // A delete is a ring tombstone (collectable once every replica has it); it
            // supersedes what this replica holds, and a write it never saw survives it.
            (true, Some(e)) => {
                let value = match e.data {
                    None => None,
                    Some(_) => match to_vec_sized(&e, entry_size_hint(&e, single.map(|(_, v)| v.len()))) {
                        Ok(v) => Some(v),
                        Err(err) => return args.iter().map(|_| Err(format!("ERR {err}"))).collect(),
                    },
                };
                let len = value.as_ref().map(Vec::len);
                let dot = write_over_own(obj, actor, value);
                if let Some(len) = len {
                    self.decoded().put(key, dot, len, e);
                }
            }
            (true, None) => {
                return args.iter().map(|_| Err("ERR internal: a change without an entry".into())).collect();
            }
            (false, Some(e)) => {
                if let Some((dot, v)) = single {
                    self.decoded().put(key, dot, v.len(), e);
                }
            }
            (false, None) => {}
        }
        out
    }
}

/// postcard's encoding into a buffer of about the right size (no regrowing on the way).
fn to_vec_sized<T: Serialize>(v: &T, capacity: usize) -> postcard::Result<Vec<u8>> {
    postcard::to_extend(v, Vec::with_capacity(capacity))
}

/// About what an entry's encoding takes (`old`: the encoded size of the value it replaces).
fn entry_size_hint(e: &Entry, old: Option<usize>) -> usize {
    match &e.data {
        Some(model::Data::Str(v)) => v.len() + 40,
        _ => old.unwrap_or(0) + 64,
    }
}

fn op_size_hint(op: &WriteOp) -> usize {
    match op {
        WriteOp::Set { value, .. } => value.len() + 48,
        _ => 64,
    }
}

/// `obj.write(actor, &obj.vv.clone(), value)` — a write whose context is everything this
/// replica holds — without copying the version vector (merging a vector into itself changes
/// nothing). Tested against the copying form.
fn write_over_own(obj: &mut Obj, actor: u64, value: Option<Vec<u8>>) -> Dot {
    let dot = Dot { node: actor, counter: obj.vv.get(actor) + 1 };
    let vv = &obj.vv;
    obj.siblings.retain(|(d, _)| !vv.covers(*d));
    obj.siblings.push((dot, value));
    obj.siblings.sort_by_key(|(d, _)| *d);
    obj.vv.0.insert(actor, dot.counter);
    dot
}

/// A namespace's own read and write quorums (`systems.kv.namespaces.<name> = {r, w}`): for
/// keys named `<name>:…`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NamespaceQuorum {
    pub r: usize,
    pub w: usize,
}

pub struct KvService {
    pub ring: RingHandle,
    pub namespaces: std::collections::BTreeMap<String, NamespaceQuorum>,
    hlc: Mutex<HlcClock>,
    clock: basalt_runtime::Clock,
}

impl KvService {
    pub fn new(
        ring: RingHandle,
        node_id: u64,
        clock: basalt_runtime::Clock,
        namespaces: std::collections::BTreeMap<String, NamespaceQuorum>,
        decoded_bytes_max: usize,
    ) -> Arc<Self> {
        ring.coord.register(UPDATER, Arc::new(KvUpdater::new(decoded_bytes_max)));
        Arc::new(Self { ring, namespaces, hlc: Mutex::new(HlcClock::new(node_id)), clock })
    }

    pub fn now_ms(&self) -> u64 {
        self.clock.now_ms()
    }

    /// The quorum for `key`: its namespace's (the part before the first `:`), else the ring's.
    pub fn quorum(&self, key: &[u8]) -> Quorum {
        let q = self.ring.quorum();
        let ns = key.iter().position(|b| *b == b':').map(|i| &key[..i]);
        match ns.and_then(|n| std::str::from_utf8(n).ok()).and_then(|n| self.namespaces.get(n)) {
            Some(nq) => Quorum { n: q.n, r: nq.r, w: nq.w },
            None => q,
        }
    }

    /// A timestamp for a write coordinated through this node.
    pub fn stamp(&self) -> Hlc {
        let now = self.now_ms();
        self.hlc.lock().unwrap_or_else(|e| e.into_inner()).now(now)
    }

    pub async fn write(&self, key: &[u8], op: WriteOp) -> Result<Reply, RingError> {
        let now_ms = self.now_ms();
        let at = self.stamp();
        let cap = op_size_hint(&op);
        let arg = to_vec_sized(&UpdateArg { op, now_ms, at }, cap).map_err(|e| RingError::Internal(e.to_string()))?;
        let bytes = self.ring.coord.update(UPDATER, key, &arg, self.quorum(key)).await?;
        postcard::from_bytes(&bytes).map_err(|e| RingError::Internal(e.to_string()))
    }

    /// Several writes, in order, as one: runs of keys this node coordinates go to the store as
    /// one batch with one sync (a pipeline's writes). Each answers as [`KvService::write`].
    pub async fn write_batch(&self, ops: Vec<(Vec<u8>, WriteOp)>) -> Vec<Result<Reply, RingError>> {
        let mut batch = Vec::with_capacity(ops.len());
        for (key, op) in ops {
            let now_ms = self.now_ms();
            let at = self.stamp();
            let cap = op_size_hint(&op);
            let arg = to_vec_sized(&UpdateArg { op, now_ms, at }, cap).unwrap_or_default();
            let q = self.quorum(&key);
            batch.push((key, arg, q));
        }
        self.ring
            .coord
            .update_batch(UPDATER, batch)
            .await
            .into_iter()
            .map(|r| r.and_then(|b| postcard::from_bytes(&b).map_err(|e| RingError::Internal(e.to_string()))))
            .collect()
    }

    /// The key's current entry, if it exists now.
    pub async fn read(&self, key: &[u8]) -> Result<Option<Entry>, RingError> {
        let obj = self.ring.coord.get_shared(key, self.quorum(key)).await?;
        Ok(self.current(&obj))
    }

    /// `key`'s object when this node's replica alone answers the read at once (see
    /// `Coordinator::get_local`); `None` when the read needs other replicas ([`Self::read`]).
    pub fn read_local(&self, key: &[u8]) -> Option<Result<Arc<Obj>, RingError>> {
        self.ring.coord.get_local(key, self.quorum(key))
    }

    /// The live string a Redis client sees in `obj`, borrowed from it (no decoding copy):
    /// `Some(None)` when its one sibling is deleted or expired, `None` when `obj` is anything
    /// but one sibling holding a string or nothing (then [`Self::current`] decides).
    pub fn current_str<'a>(&self, obj: &'a Obj) -> Option<Option<&'a [u8]>> {
        let [(_, Some(v))] = obj.siblings.as_slice() else { return None };
        let e = postcard::from_bytes::<StrEntry<'_>>(v).ok()?;
        self.hlc.lock().unwrap_or_else(|e| e.into_inner()).observe(e.at);
        let expired = e.expires_at_ms.is_some_and(|t| t <= self.now_ms());
        Some(e.data.filter(|_| !expired).map(|StrData::Str(s)| s))
    }

    /// The entry a Redis client sees in `obj`: the newest live sibling, if any.
    pub fn current(&self, obj: &Obj) -> Option<Entry> {
        let now = self.now_ms();
        // One live sibling (the usual case) is the entry; several are resolved.
        let current = match obj.siblings.as_slice() {
            [(_, Some(v))] => postcard::from_bytes::<Entry>(v).ok(),
            _ => model::resolve(&decode_entries(obj)),
        };
        if let Some(e) = current {
            self.hlc.lock().unwrap_or_else(|e| e.into_inner()).observe(e.at);
            if e.live(now).is_some() {
                return Some(e);
            }
        }
        None
    }

    /// The keys this node's replica holds that exist now.
    pub fn local_keys(&self) -> anyhow::Result<Vec<Vec<u8>>> {
        let now = self.now_ms();
        Ok(self
            .ring
            .coord
            .replica
            .all()?
            .into_iter()
            .filter(|(_, o)| model::resolve(&decode_entries(o)).is_some_and(|e| e.live(now).is_some()))
            .map(|(k, _)| k)
            .collect())
    }

    /// Every key in the cluster that exists now: the union of every live member's replica.
    pub async fn all_keys(&self) -> Vec<Vec<u8>> {
        let mut keys: std::collections::BTreeSet<Vec<u8>> = self.local_keys().unwrap_or_default().into_iter().collect();
        let m = self.ring.membership();
        let http = basalt_runtime::reqwest::Client::new();
        for peer in m.peers().into_iter().filter(|p| m.alive(p.node_id)) {
            let url = format!("http://{}/v1/kv/_local/keys", peer.http_addr);
            if let Ok(r) = http.get(url).send().await
                && let Ok(v) = r.json::<Vec<String>>().await
            {
                use base64::Engine;
                for k in v {
                    if let Ok(b) = base64::engine::general_purpose::STANDARD.decode(k) {
                        keys.insert(b);
                    }
                }
            }
        }
        keys.into_iter().collect()
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::model::tests::strategies::any_op;

    #[derive(Debug, Clone)]
    enum Step {
        Op(WriteOp),
        /// Several operations handed over together (a pipeline, or writers combined).
        Many(Vec<WriteOp>),
        /// The engine hands back an earlier object: a write whose store batch failed never
        /// happened, and the next one reuses its dot.
        Rollback(usize),
        /// Another coordinator's write arrives (a sibling) through a merge.
        Sibling(WriteOp),
    }

    /// Any operation, or often a plain SET (with or without an expiry, small or big).
    fn op() -> impl Strategy<Value = WriteOp> {
        use crate::model::{Cond, Ttl};
        let value = prop_oneof![
            4 => proptest::collection::vec(any::<u8>(), 0..8),
            1 => proptest::collection::vec(any::<u8>(), 500..700),
        ];
        let ttl = prop_oneof![Just(Ttl::Clear), (0..3000u64).prop_map(Ttl::At)];
        prop_oneof![
            3 => any_op(),
            2 => (value, ttl).prop_map(|(value, ttl)| WriteOp::Set { value, ttl, cond: Cond::Always, get: false }),
        ]
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            6 => op().prop_map(Step::Op),
            2 => proptest::collection::vec(op(), 1..6).prop_map(Step::Many),
            1 => any::<usize>().prop_map(Step::Rollback),
            1 => op().prop_map(Step::Sibling),
        ]
    }

    fn arg(op: WriteOp, i: u64, node: u64) -> Vec<u8> {
        let at = Hlc { wall_ms: 1000 + i, logical: 0, node };
        postcard::to_allocvec(&UpdateArg { op, now_ms: 1000 + i / 10, at }).unwrap()
    }

    proptest! {
        /// A write over everything a replica holds is the core's `write` with the object's own
        /// context, for any object (siblings from several actors, tombstones, merges).
        #[test]
        fn writing_over_the_own_context_is_the_cores_write(
            steps in proptest::collection::vec((1..5u64, any::<bool>(), proptest::option::of(any::<u8>())), 0..12),
            actor in 1..6u64,
            value in proptest::option::of(any::<u8>()),
        ) {
            // Build an object with concurrent siblings: writes with empty or own contexts, merged.
            let mut o = Obj::default();
            for (a, blind, v) in steps {
                let mut other = o.clone();
                let ctx = if blind { Default::default() } else { other.vv.clone() };
                other.write(a, &ctx, v.map(|b| vec![b]));
                o.merge(&other);
            }
            let mut want = o.clone();
            let ctx = want.vv.clone();
            let want_dot = want.write(actor, &ctx, value.map(|b| vec![b]));
            let dot = write_over_own(&mut o, actor, value.map(|b| vec![b]));
            prop_assert_eq!(dot, want_dot);
            prop_assert_eq!(o, want);
        }

        /// Keeping decodings between writes, and plain SETs that skip decoding what they
        /// replace, change no reply and no object: the same history through an updater that
        /// keeps every value decoded, one that keeps none, and one that keeps none and decodes
        /// every value — with rolled-back writes (reused dots) and concurrent siblings on the way.
        #[test]
        fn kept_decodings_change_nothing(steps in proptest::collection::vec(step(), 1..50)) {
            let kept = KvUpdater::keeping(1 << 20, 0);
            let plain = KvUpdater::keeping(0, 0);
            let decoding = KvUpdater { blind_sets: false, ..KvUpdater::keeping(0, 0) };
            let (mut a, mut b) = (Obj::default(), Obj::default());
            let mut history = vec![a.clone()];
            for (i, s) in steps.into_iter().enumerate() {
                let i = i as u64;
                match s {
                    Step::Op(op) => {
                        let arg = arg(op, i, 1);
                        let mut c = b.clone();
                        let ra = kept.apply(b"k", &mut a, 7, &arg);
                        let rb = plain.apply(b"k", &mut b, 7, &arg);
                        let rc = decoding.apply(b"k", &mut c, 7, &arg);
                        prop_assert_eq!(&ra, &rb);
                        prop_assert_eq!(&a, &b);
                        prop_assert_eq!(&rb, &rc);
                        prop_assert_eq!(&b, &c);
                    }
                    Step::Many(ops) => {
                        // Together through the keeping updater; one at a time through the other:
                        // the same replies, the same value (the dots differ: one write, not many).
                        let args: Vec<Vec<u8>> = ops.into_iter().enumerate().map(|(j, op)| arg(op, i * 10 + j as u64, 1)).collect();
                        let refs: Vec<&[u8]> = args.iter().map(Vec::as_slice).collect();
                        let mut c = a.clone();
                        let ra = kept.apply_many(b"k", &mut a, 7, &refs);
                        let rc = decoding.apply_many(b"k", &mut c, 7, &refs);
                        prop_assert_eq!(&ra, &rc);
                        prop_assert_eq!(&a, &c);
                        let rb: Vec<_> = refs.iter().map(|x| plain.apply(b"k", &mut b, 7, x)).collect();
                        prop_assert_eq!(ra, rb);
                        prop_assert_eq!(a.values().collect::<Vec<_>>(), b.values().collect::<Vec<_>>());
                        b = a.clone();
                    }
                    Step::Rollback(back) => {
                        // The engine's part of a failed store write: the updaters forget it.
                        a = history[back % history.len()].clone();
                        b = a.clone();
                        for u in [&kept, &plain, &decoding] {
                            u.forget(b"k");
                        }
                    }
                    Step::Sibling(op) => {
                        let mut other = history[history.len() / 2].clone();
                        let _ = plain.apply(b"k", &mut other, 9, &arg(op, i, 2));
                        a.merge(&other);
                        b.merge(&other);
                    }
                }
                history.push(a.clone());
            }
        }

        /// The borrowed string view decodes every entry holding a string or nothing exactly as
        /// `Entry` does, and refuses every other kind (so the caller decodes an `Entry`).
        #[test]
        fn the_string_view_reads_entries_as_entry_does(
            ops in proptest::collection::vec((crate::model::tests::strategies::any_op(), 0..50u64), 1..12),
            expires in proptest::option::of(any::<u64>()),
            big in proptest::collection::vec(any::<u8>(), 0..300),
        ) {
            use crate::model::Data;
            let mut entries = vec![Entry { at: Hlc { wall_ms: 7, logical: 1, node: 2 }, expires_at_ms: expires, data: Some(Data::Str(big)) }];
            let mut cur: Option<Entry> = None;
            for (i, (op, now)) in ops.into_iter().enumerate() {
                let stamp = Hlc { wall_ms: 100 + i as u64, logical: i as u32, node: 3 };
                if let Ok((new, _)) = crate::model::apply(cur.as_ref(), &op, now, stamp, 1) {
                    cur = new;
                }
                entries.extend(cur.clone());
            }
            for e in entries {
                let bytes = postcard::to_allocvec(&e).unwrap();
                match (postcard::from_bytes::<StrEntry<'_>>(&bytes), &e.data) {
                    (Ok(v), Some(Data::Str(s))) => {
                        prop_assert_eq!((v.at, v.expires_at_ms), (e.at, e.expires_at_ms));
                        prop_assert!(matches!(v.data, Some(StrData::Str(b)) if b == s.as_slice()));
                    }
                    (Ok(v), None) => prop_assert!(v.data.is_none() && (v.at, v.expires_at_ms) == (e.at, e.expires_at_ms)),
                    (Err(_), Some(d)) => prop_assert!(!matches!(d, Data::Str(_)), "a string entry refused"),
                    (Ok(_), Some(d)) => prop_assert!(false, "decoded {:?} as a string", d),
                    (Err(e), None) => prop_assert!(false, "a deleted entry refused: {}", e),
                }
            }
        }
    }
}
