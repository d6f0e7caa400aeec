//! The in-memory backend: a namespace's data in a hash map with its keys in order beside it
//! (for scans), every change appended to a log file (`<data_dir>/memlog/<name>.log`) — Redis's
//! AOF model.
//!
//! **Format.** The file starts with [`MAGIC`]; then records, each
//! `len: u32 LE | crc32(payload): u32 LE | crc32(the first 8 bytes): u32 LE | payload`, the
//! payload a run of entries `1 | klen: u32 | key | vlen: u32 | value` (put) or
//! `2 | klen: u32 | key` (delete). One `put`, `delete` or `write_batch` is one record, written
//! with one `write` to the OS (no userspace buffer), so it is all or nothing after a crash.
//! The header has its own checksum so a damaged length is told from a torn tail.
//!
//! **Durability.** The store's fsync thread calls [`MemLog::sync`] beside fjall's journal, so the
//! node's fsync policy covers these files exactly as it covers fjall.
//!
//! **Recovery.** Replay every record. A torn or checksum-failing *last* record (the process
//! died mid-write) is cut off with a warning; damage anywhere before the tail refuses to open,
//! naming the file and offset.
//!
//! **Rewrite.** When the log passes `rewrite_min_bytes` and `rewrite_ratio` × the live data, a
//! std thread writes the live data to a fresh file and swaps it in while writes go on:
//! 1. Under the writer lock (which orders every append), a *pending* buffer starts: every
//!    record appended from then on is also copied into it.
//! 2. Off the lock, the map is copied to `<name>.log.tmp` in chunks (each under the map's read
//!    lock for a moment, so writers go on between chunks), then the pending records are moved
//!    over in rounds until little is left. The copy is *fuzzy* — a chunk may already hold
//!    writes made after step 1 — and that is exact all the same: records are blind puts and
//!    deletes of whole values, so replaying every record since step 1, in order, over any mix
//!    of before- and after-states of each key ends in the same map as the live one.
//! 3. Under the lock, the rest of the pending records are written to the new file, which becomes
//!    the append target — and the old file keeps receiving every record too (a *tee*), so
//!    whichever of the two the name points at after a crash holds every write.
//! 4. Off the lock: fsync the new file, rename it over the old name, fsync the directory; then,
//!    under the lock, stop the tee. While the tee runs, `sync` fsyncs both files, so an
//!    acknowledged write is on disk under either name.
//!
//! Nothing here fsyncs under the writer lock, so writers never wait for the disk.

use std::collections::{BTreeSet, HashMap};
use std::fs::{File, OpenOptions};
use std::io::{BufReader, BufWriter, Read, Write};
use std::ops::Bound;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock, Weak};

use super::{KeyValue, StorageError};

/// A byte-string key held inline when it is short (most keys are), so a hash-map probe
/// compares it where it sits instead of following a pointer to a cold allocation. Hashes,
/// compares and orders as the bytes it holds (`Borrow<[u8]>`).
#[derive(Clone)]
pub enum InlineKey {
    Inline { len: u8, bytes: [u8; INLINE_KEY] },
    Heap(Box<[u8]>),
}

/// The longest key held inline (the type is 32 bytes).
const INLINE_KEY: usize = 30;

impl InlineKey {
    pub fn new(key: &[u8]) -> Self {
        if key.len() <= INLINE_KEY {
            let mut bytes = [0u8; INLINE_KEY];
            bytes[..key.len()].copy_from_slice(key);
            InlineKey::Inline { len: key.len() as u8, bytes }
        } else {
            InlineKey::Heap(key.into())
        }
    }

    pub fn as_slice(&self) -> &[u8] {
        match self {
            InlineKey::Inline { len, bytes } => &bytes[..usize::from(*len)],
            InlineKey::Heap(b) => b,
        }
    }
}

impl std::borrow::Borrow<[u8]> for InlineKey {
    fn borrow(&self) -> &[u8] {
        self.as_slice()
    }
}

impl std::hash::Hash for InlineKey {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.as_slice().hash(state)
    }
}

impl PartialEq for InlineKey {
    fn eq(&self, other: &Self) -> bool {
        self.as_slice() == other.as_slice()
    }
}

impl Eq for InlineKey {}

impl PartialOrd for InlineKey {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for InlineKey {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.as_slice().cmp(other.as_slice())
    }
}

impl std::fmt::Debug for InlineKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?}", self.as_slice())
    }
}

/// A namespace's data: values in a hash map (a point read or an overwrite costs one hash and
/// no key comparisons), and the keys in order beside it, touched only when a key is added or
/// removed (for scans and ranges).
#[derive(Default)]
struct Map {
    values: HashMap<InlineKey, Vec<u8>, foldhash::fast::RandomState>,
    order: BTreeSet<InlineKey>,
}

impl Map {
    fn len(&self) -> usize {
        self.values.len()
    }

    fn get(&self, key: &[u8]) -> Option<&Vec<u8>> {
        self.values.get(key)
    }

    /// Put `value` under `key`; answers the old value's length if the key was there. An existing
    /// key keeps its allocation (most writes overwrite a key) unless it is much too big.
    fn put(&mut self, key: &[u8], value: &[u8]) -> Option<usize> {
        if let Some(slot) = self.values.get_mut(key) {
            let old = slot.len();
            if slot.capacity() > 2 * value.len() + 64 {
                *slot = value.to_vec();
            } else {
                slot.clear();
                slot.extend_from_slice(value);
            }
            return Some(old);
        }
        let k = InlineKey::new(key);
        self.order.insert(k.clone());
        self.values.insert(k, value.to_vec());
        None
    }

    fn remove(&mut self, key: &[u8]) -> Option<Vec<u8>> {
        let (k, v) = self.values.remove_entry(key)?;
        self.order.remove(k.as_slice());
        Some(v)
    }

    /// The entries with keys in the range, in key order.
    fn range<'a>(
        &'a self,
        from: Bound<&[u8]>,
        to: Bound<&[u8]>,
    ) -> impl DoubleEndedIterator<Item = (&'a [u8], &'a Vec<u8>)> + 'a {
        self.order.range::<[u8], _>((from, to)).filter_map(|k| self.values.get(k.as_slice()).map(|v| (k.as_slice(), v)))
    }

    fn iter(&self) -> impl Iterator<Item = (&[u8], &Vec<u8>)> {
        self.values.iter().map(|(k, v)| (k.as_slice(), v))
    }
}

/// The first bytes of every memlog file (format version 1).
pub const MAGIC: &[u8; 8] = b"BSLTMLG1";
const HEADER: usize = 12;
const PUT: u8 = 1;
const DEL: u8 = 2;
/// What an entry costs in a rewritten log beyond its key and value (tag and two lengths).
const ENTRY_OVERHEAD: u64 = 9;
/// Records of a rewrite are cut at about this size.
const REWRITE_RECORD_BYTES: usize = 1 << 20;
/// Keys copied per hold of the map's read lock in step 2 of a rewrite.
const REWRITE_CHUNK_KEYS: usize = 1024;
/// The pending records left for the writer lock in step 3 of a rewrite.
const SWITCH_BYTES: usize = 256 * 1024;

/// When a namespace's log is rewritten.
#[derive(Debug, Clone, Copy)]
pub struct MemLogOptions {
    /// Never rewrite a log smaller than this.
    pub rewrite_min_bytes: u64,
    /// Rewrite once the log is this many times the live data.
    pub rewrite_ratio: u64,
}

impl Default for MemLogOptions {
    fn default() -> Self {
        Self { rewrite_min_bytes: 64 * 1024 * 1024, rewrite_ratio: 2 }
    }
}

/// What a memlog namespace holds and has done.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct MemLogStats {
    pub keys: usize,
    /// The log file's size.
    pub log_bytes: u64,
    /// What a rewritten log would hold (keys, values and their framing).
    pub live_bytes: u64,
    /// Rewrites completed since open.
    pub rewrites: u64,
    /// Whether a rewrite is running.
    pub rewriting: bool,
}

pub(crate) struct MemLog {
    name: String,
    dir: PathBuf,
    path: PathBuf,
    tmp: PathBuf,
    opts: MemLogOptions,
    map: RwLock<Map>,
    writer: Mutex<Writer>,
    rewrites: AtomicU64,
    /// Held (an exclusive `flock`) for the memlog's life and by a running rewrite: one writer
    /// per file, and no reopen while a rewrite thread could still rename over the log.
    lock: Arc<File>,
}

struct Writer {
    file: Arc<File>,
    len: u64,
    live: u64,
    /// A rewrite's step 1–2: the records appended since it copied the map.
    pending: Option<Vec<u8>>,
    /// A rewrite's step 3–4: the old file, still receiving every record, and its length.
    tee: Option<(Arc<File>, u64)>,
    /// A write failed and could not be undone: the file may end in a partial record.
    failed: Option<String>,
}

fn io_err(path: &Path, what: &str, e: std::io::Error) -> StorageError {
    StorageError::Log(format!("{what} {}: {e}", path.display()))
}

fn entry_bytes(k: &[u8], v: &[u8]) -> u64 {
    ENTRY_OVERHEAD + k.len() as u64 + v.len() as u64
}

fn put_entry(buf: &mut Vec<u8>, k: &[u8], v: &[u8]) {
    buf.push(PUT);
    buf.extend_from_slice(&(k.len() as u32).to_le_bytes());
    buf.extend_from_slice(k);
    buf.extend_from_slice(&(v.len() as u32).to_le_bytes());
    buf.extend_from_slice(v);
}

fn del_entry(buf: &mut Vec<u8>, k: &[u8]) {
    buf.push(DEL);
    buf.extend_from_slice(&(k.len() as u32).to_le_bytes());
    buf.extend_from_slice(k);
}

/// Frame a payload built after `HEADER` reserved bytes at the start of `buf`.
fn seal(buf: &mut [u8]) {
    let len = (buf.len() - HEADER) as u32;
    let crc = crc32fast::hash(&buf[HEADER..]);
    buf[0..4].copy_from_slice(&len.to_le_bytes());
    buf[4..8].copy_from_slice(&crc.to_le_bytes());
    let hcrc = crc32fast::hash(&buf[0..8]);
    buf[8..12].copy_from_slice(&hcrc.to_le_bytes());
}

/// Apply one record's payload to the map. `Err` names what is malformed.
fn apply_payload(map: &mut Map, mut p: &[u8]) -> Result<(), &'static str> {
    fn take<'a>(p: &mut &'a [u8], n: usize) -> Result<&'a [u8], &'static str> {
        if p.len() < n {
            return Err("an entry runs past its record");
        }
        let (a, b) = p.split_at(n);
        *p = b;
        Ok(a)
    }
    fn len(p: &mut &[u8]) -> Result<usize, &'static str> {
        let b = take(p, 4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
    }
    while !p.is_empty() {
        let tag = take(&mut p, 1)?[0];
        let n = len(&mut p)?;
        let k = take(&mut p, n)?;
        match tag {
            PUT => {
                let n = len(&mut p)?;
                let v = take(&mut p, n)?;
                map.put(k, v);
            }
            DEL => {
                map.remove(k);
            }
            _ => return Err("unknown entry tag"),
        }
    }
    Ok(())
}

/// Fsync a directory (so a rename or a new file in it is durable).
fn sync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Replay `path` into a map. Answers the map and the length of the valid log (shorter than the
/// file when a torn tail must be cut off).
fn replay(path: &Path) -> anyhow::Result<(Map, u64)> {
    let file = File::open(path).map_err(|e| anyhow::anyhow!("opening {}: {e}", path.display()))?;
    let file_len = file.metadata()?.len();
    let mut r = BufReader::with_capacity(1 << 20, file);
    let mut map = Map::default();
    let show = path.display();
    if file_len < MAGIC.len() as u64 {
        let mut head = Vec::new();
        r.read_to_end(&mut head)?;
        anyhow::ensure!(MAGIC.starts_with(&head), "{show} is not a memlog file (it does not start with {MAGIC:?})");
        return Ok((map, 0));
    }
    let mut head = [0u8; 8];
    r.read_exact(&mut head)?;
    anyhow::ensure!(&head == MAGIC, "{show} is not a memlog file (it does not start with {MAGIC:?})");
    let mut pos = MAGIC.len() as u64;
    let mut payload = Vec::new();
    let torn = |pos: u64, why: &str| {
        tracing::warn!(file = %show, offset = pos, dropped_bytes = file_len - pos, "memlog: cutting off a torn last record ({why})");
    };
    loop {
        let rem = file_len - pos;
        if rem == 0 {
            return Ok((map, pos));
        }
        if rem < HEADER as u64 {
            torn(pos, "a partial header");
            return Ok((map, pos));
        }
        let mut h = [0u8; HEADER];
        r.read_exact(&mut h)?;
        let len = u64::from(u32::from_le_bytes([h[0], h[1], h[2], h[3]]));
        let crc = u32::from_le_bytes([h[4], h[5], h[6], h[7]]);
        let hcrc = u32::from_le_bytes([h[8], h[9], h[10], h[11]]);
        if crc32fast::hash(&h[0..8]) != hcrc {
            // A crash can leave zeros past the last write on some filesystems: a zero tail is
            // torn; anything else is damage.
            let mut rest = Vec::new();
            r.read_to_end(&mut rest)?;
            if h.iter().chain(rest.iter()).all(|b| *b == 0) {
                torn(pos, "a zero-filled tail");
                return Ok((map, pos));
            }
            anyhow::bail!(
                "memlog {show} is corrupt: the record header at offset {pos} fails its checksum \
                 ({} bytes follow); refusing to open rather than lose data",
                rem
            );
        }
        if rem < HEADER as u64 + len {
            torn(pos, "a partial record");
            return Ok((map, pos));
        }
        payload.resize(len as usize, 0);
        r.read_exact(&mut payload)?;
        let end = pos + HEADER as u64 + len;
        if crc32fast::hash(&payload) != crc {
            if end == file_len {
                torn(pos, "its checksum fails");
                return Ok((map, pos));
            }
            anyhow::bail!(
                "memlog {show} is corrupt: the record at offset {pos} ({len} bytes) fails its checksum and \
                 {} bytes follow it; refusing to open rather than lose data",
                file_len - end
            );
        }
        if let Err(why) = apply_payload(&mut map, &payload) {
            anyhow::bail!("memlog {show} is corrupt: the record at offset {pos} is malformed ({why})");
        }
        pos = end;
    }
}

fn open_append(path: &Path) -> std::io::Result<File> {
    OpenOptions::new().append(true).open(path)
}

impl MemLog {
    /// Open (or create) the log of namespace `name` under `dir` (`<data_dir>/memlog`) and
    /// replay it.
    pub(crate) fn open(dir: &Path, name: &str, opts: MemLogOptions) -> anyhow::Result<Arc<Self>> {
        std::fs::create_dir_all(dir).map_err(|e| anyhow::anyhow!("creating {}: {e}", dir.display()))?;
        let lock_path = dir.join(format!("{name}.lock"));
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| anyhow::anyhow!("opening {}: {e}", lock_path.display()))?;
        lock.try_lock().map_err(|_| {
            anyhow::anyhow!("memlog {} is in use (is another node using this data dir?)", lock_path.display())
        })?;
        let path = dir.join(format!("{name}.log"));
        let tmp = dir.join(format!("{name}.log.tmp"));
        // A rewrite that did not finish: the old log is complete, the new one is not.
        if tmp.exists() {
            std::fs::remove_file(&tmp).map_err(|e| anyhow::anyhow!("removing {}: {e}", tmp.display()))?;
        }
        let (map, valid) = if path.exists() { replay(&path)? } else { (Map::default(), 0) };
        if valid < MAGIC.len() as u64 {
            // New, or torn before its header was whole: write a fresh empty log atomically.
            let mut f = File::create(&tmp)?;
            f.write_all(MAGIC)?;
            f.sync_all()?;
            std::fs::rename(&tmp, &path)?;
            sync_dir(dir)?;
        } else {
            let f = OpenOptions::new().write(true).open(&path)?;
            if f.metadata()?.len() != valid {
                f.set_len(valid)?;
                f.sync_all()?;
            }
        }
        let file = open_append(&path).map_err(|e| anyhow::anyhow!("opening {}: {e}", path.display()))?;
        let len = file.metadata()?.len();
        let live = map.iter().map(|(k, v)| entry_bytes(k, v)).sum();
        Ok(Arc::new(Self {
            name: name.to_string(),
            dir: dir.to_path_buf(),
            path,
            tmp,
            opts,
            map: RwLock::new(map),
            writer: Mutex::new(Writer { file: Arc::new(file), len, live, pending: None, tee: None, failed: None }),
            rewrites: AtomicU64::new(0),
            lock: Arc::new(lock),
        }))
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    fn map(&self) -> std::sync::RwLockReadGuard<'_, Map> {
        self.map.read().unwrap_or_else(|e| e.into_inner())
    }

    fn writer(&self) -> MutexGuard<'_, Writer> {
        self.writer.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn get(&self, key: &[u8]) -> Option<Vec<u8>> {
        self.map().get(key).cloned()
    }

    /// Append one record of puts then deletes, and apply it to the map.
    pub(crate) fn commit(self: &Arc<Self>, puts: &[(&[u8], &[u8])], deletes: &[&[u8]]) -> Result<(), StorageError> {
        if puts.is_empty() && deletes.is_empty() {
            return Ok(());
        }
        let size: usize = HEADER
            + puts.iter().map(|(k, v)| 9 + k.len() + v.len()).sum::<usize>()
            + deletes.iter().map(|k| 5 + k.len()).sum::<usize>();
        if size - HEADER > u32::MAX as usize || puts.iter().any(|(k, v)| k.len().max(v.len()) > u32::MAX as usize) {
            return Err(StorageError::Log(format!("a write of {size} bytes is too large for memlog {}", self.name)));
        }
        let mut rec = Vec::with_capacity(size);
        rec.resize(HEADER, 0);
        for (k, v) in puts {
            put_entry(&mut rec, k, v);
        }
        for k in deletes {
            del_entry(&mut rec, k);
        }
        seal(&mut rec);

        let mut w = self.writer();
        if let Some(why) = &w.failed {
            return Err(StorageError::Log(format!("memlog {} refuses writes: {why}", self.path.display())));
        }
        self.append(&mut w, &rec)?;
        {
            let mut map = self.map.write().unwrap_or_else(|e| e.into_inner());
            let mut live = w.live as i128;
            for (k, v) in puts {
                live += i128::from(entry_bytes(k, v));
                if let Some(old) = map.put(k, v) {
                    live -= i128::from(ENTRY_OVERHEAD + k.len() as u64 + old as u64);
                }
            }
            for k in deletes {
                if let Some(old) = map.remove(k) {
                    live -= i128::from(entry_bytes(k, &old));
                }
            }
            w.live = live.max(0) as u64;
        }
        self.maybe_rewrite(&mut w);
        Ok(())
    }

    /// One `write` of a whole record to the file (and to the old file while a rewrite's tee
    /// runs). A failed write is undone by truncation; if that fails too, the log refuses all
    /// further writes (it may end in a partial record that later records would bury).
    fn append(&self, w: &mut Writer, rec: &[u8]) -> Result<(), StorageError> {
        let undo = |w: &mut Writer, e: std::io::Error, tee_written: bool| {
            let mut ok = w.file.set_len(w.len).is_ok();
            if tee_written && let Some((old, old_len)) = &w.tee {
                ok &= old.set_len(*old_len).is_ok();
            }
            if !ok {
                w.failed = Some(format!("a failed append could not be undone: {e}"));
            }
            io_err(&self.path, "appending to", e)
        };
        if let Some((old, _)) = &w.tee
            && let Err(e) = (&**old).write_all(rec)
        {
            return Err(undo(w, e, true));
        }
        if let Err(e) = (&*w.file).write_all(rec) {
            return Err(undo(w, e, true));
        }
        w.len += rec.len() as u64;
        if let Some((_, old_len)) = &mut w.tee {
            *old_len += rec.len() as u64;
        }
        if let Some(p) = &mut w.pending {
            p.extend_from_slice(rec);
        }
        Ok(())
    }

    /// Start a rewrite if the log is big enough and none runs (the caller holds the writer).
    fn maybe_rewrite(self: &Arc<Self>, w: &mut Writer) {
        if w.pending.is_some()
            || w.tee.is_some()
            || w.failed.is_some()
            || w.len < self.opts.rewrite_min_bytes
            || w.len < w.live.saturating_mul(self.opts.rewrite_ratio)
        {
            return;
        }
        // Step 1: the pending buffer starts under the writer lock.
        w.pending = Some(Vec::new());
        let me = Arc::downgrade(self);
        let lock = self.lock.clone();
        let spawned = std::thread::Builder::new().name("basalt-memlog-rewrite".into()).spawn(move || {
            rewrite(me);
            drop(lock);
        });
        if let Err(e) = spawned {
            tracing::warn!(error = %e, "memlog: could not start a rewrite thread");
            w.pending = None;
        }
    }

    /// Make every record appended so far durable (fdatasync). Called by the store's fsync
    /// thread, never from async code.
    pub(crate) fn sync(&self) -> std::io::Result<()> {
        let (file, tee) = {
            let w = self.writer();
            (w.file.clone(), w.tee.as_ref().map(|(f, _)| f.clone()))
        };
        file.sync_data()?;
        if let Some(old) = tee {
            old.sync_data()?;
        }
        Ok(())
    }

    pub(crate) fn stats(&self) -> MemLogStats {
        let w = self.writer();
        MemLogStats {
            keys: self.map().len(),
            log_bytes: w.len,
            live_bytes: w.live,
            rewrites: self.rewrites.load(Ordering::SeqCst),
            rewriting: w.pending.is_some() || w.tee.is_some(),
        }
    }

    pub(crate) fn scan_prefix(&self, prefix: &[u8]) -> Vec<KeyValue> {
        let map = self.map();
        let upper = prefix_end(prefix);
        let range = map.range(Bound::Included(prefix), upper.as_deref().map_or(Bound::Unbounded, Bound::Excluded));
        range.map(|(k, v)| (k.to_vec(), v.clone())).collect()
    }

    pub(crate) fn range(&self, from: &[u8], to: &[u8], limit: usize) -> Vec<KeyValue> {
        if from >= to {
            return Vec::new();
        }
        let map = self.map();
        map.range(Bound::Included(from), Bound::Excluded(to))
            .take(limit)
            .map(|(k, v)| (k.to_vec(), v.clone()))
            .collect()
    }

    pub(crate) fn last_with_prefix(&self, prefix: &[u8]) -> Option<KeyValue> {
        let map = self.map();
        let upper = prefix_end(prefix);
        map.range(Bound::Included(prefix), upper.as_deref().map_or(Bound::Unbounded, Bound::Excluded))
            .next_back()
            .map(|(k, v)| (k.to_vec(), v.clone()))
    }

    pub(crate) fn keys_in(&self, from: &[u8], to: &[u8]) -> Vec<Vec<u8>> {
        if from >= to {
            return Vec::new();
        }
        let map = self.map();
        map.order
            .range::<[u8], _>((Bound::Included(from), Bound::Excluded(to)))
            .map(|k| k.as_slice().to_vec())
            .collect()
    }
}

/// The smallest key greater than every key starting with `prefix` (`None`: no such key).
fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

/// Steps 2–4 of a rewrite, on its own thread. Holds the memlog only weakly between steps, so
/// a store that is dropped meanwhile ends it (the old log stays complete; the temp file is
/// removed at the next open).
fn rewrite(me: Weak<MemLog>) {
    let Some(log) = me.upgrade() else { return };
    let (tmp_path, dir, path, name) = (log.tmp.clone(), log.dir.clone(), log.path.clone(), log.name.clone());
    drop(log);
    let result = (|| -> std::io::Result<bool> {
        // Step 2: the (fuzzy) copy in chunks, then the pending records in rounds.
        let _ = std::fs::remove_file(&tmp_path);
        let tmp = OpenOptions::new().create_new(true).append(true).open(&tmp_path)?;
        let mut len = MAGIC.len() as u64;
        {
            let mut out = BufWriter::with_capacity(1 << 20, &tmp);
            out.write_all(MAGIC)?;
            let mut rec = vec![0u8; HEADER];
            let mut after: Option<Vec<u8>> = None;
            loop {
                let Some(log) = me.upgrade() else { return Ok(false) };
                let chunk: Vec<KeyValue> = {
                    let map = log.map();
                    let from = after.as_deref().map_or(Bound::Unbounded, Bound::Excluded);
                    map.range(from, Bound::Unbounded)
                        .take(REWRITE_CHUNK_KEYS)
                        .map(|(k, v)| (k.to_vec(), v.clone()))
                        .collect()
                };
                drop(log);
                let Some((last, _)) = chunk.last() else { break };
                after = Some(last.clone());
                for (k, v) in &chunk {
                    put_entry(&mut rec, k, v);
                    if rec.len() >= REWRITE_RECORD_BYTES {
                        seal(&mut rec);
                        out.write_all(&rec)?;
                        len += rec.len() as u64;
                        rec.truncate(HEADER);
                    }
                }
            }
            if rec.len() > HEADER {
                seal(&mut rec);
                out.write_all(&rec)?;
                len += rec.len() as u64;
            }
            out.flush()?;
        }
        tmp.sync_data()?;
        let tmp = Arc::new(tmp);
        let mut rounds = 0;
        loop {
            let Some(log) = me.upgrade() else { return Ok(false) };
            let mut w = log.writer();
            let Some(pending) = w.pending.as_mut() else { return Ok(false) };
            let chunk = std::mem::take(pending);
            rounds += 1;
            if chunk.len() <= SWITCH_BYTES || rounds >= 8 {
                // Step 3: the rest, and the switch with the tee, under the lock.
                (&*tmp).write_all(&chunk)?;
                len += chunk.len() as u64;
                let old = std::mem::replace(&mut w.file, tmp.clone());
                let old_len = std::mem::replace(&mut w.len, len);
                w.tee = Some((old, old_len));
                w.pending = None;
                break;
            }
            drop(w);
            drop(log);
            (&*tmp).write_all(&chunk)?;
            len += chunk.len() as u64;
        }
        // Step 4: the new file is durable before its name replaces the old one's.
        tmp.sync_data()?;
        std::fs::rename(&tmp_path, &path)?;
        sync_dir(&dir)?;
        if let Some(log) = me.upgrade() {
            // Out of the lock before it is closed: the last close of the old (unlinked) file
            // frees its pages and blocks, which can take milliseconds.
            let old = log.writer().tee.take();
            drop(old);
            log.rewrites.fetch_add(1, Ordering::SeqCst);
        }
        Ok(true)
    })();
    match result {
        Ok(true) => tracing::debug!(namespace = %name, "memlog: rewrite done"),
        Ok(false) => {
            let _ = std::fs::remove_file(&tmp_path);
        }
        Err(e) => {
            tracing::warn!(namespace = %name, error = %e, "memlog: rewrite failed; the old log stays");
            if let Some(log) = me.upgrade() {
                let mut w = log.writer();
                w.pending = None;
                // Failed after the switch: the old file got every record (the tee). If the
                // rename did not happen, its name still points at the old file: go back to it.
                if let Some((old, old_len)) = w.tee.take()
                    && tmp_path.exists()
                {
                    w.file = old;
                    w.len = old_len;
                }
            }
            let _ = std::fs::remove_file(&tmp_path);
        }
    }
}
