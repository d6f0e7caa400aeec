//! Redis commands: parse the arguments (with Redis's own error replies), run them on the
//! store, and answer a RESP frame.

use std::collections::BTreeMap;
use std::sync::Arc;

use basalt_resp::{Frame, Proto, format_double};
use basalt_ring_engine::RingError;
use bytes::Bytes;

use crate::model::{self, Cond, Data, Entry, Reply, Ttl, WriteOp};
use crate::service::KvService;

pub const REDIS_VERSION: &str = "7.0.15";

/// Per-connection state.
#[derive(Debug, Default)]
pub struct Conn {
    pub proto: Proto,
    pub name: Option<Bytes>,
    pub id: u64,
    pub quit: bool,
    /// Commands other systems serve on this port (the rate limiter's `CL.THROTTLE`).
    pub services: basalt_runtime::services::Services,
}

fn syntax() -> Frame {
    Frame::err("ERR syntax error")
}

fn arity(name: &str) -> Frame {
    Frame::err(format!("ERR wrong number of arguments for '{}' command", name.to_ascii_lowercase()))
}

fn not_int() -> Frame {
    Frame::err(model::NOT_INT)
}

fn ring_err(e: RingError) -> Frame {
    match e {
        RingError::Rejected(m) => Frame::err(m),
        RingError::Unavailable { what, needed, got } => {
            Frame::err(format!("CLUSTERDOWN {what}: needed {needed} replicas, {got} answered"))
        }
        other => Frame::err(format!("ERR {other}")),
    }
}

fn int_arg(b: &[u8]) -> Option<i64> {
    let s = std::str::from_utf8(b).ok()?;
    s.parse::<i64>().ok().filter(|_| !s.starts_with('+') && !s.is_empty())
}

/// A command or option name in upper case, as `String::from_utf8_lossy(b).to_ascii_uppercase()`
/// gives it — held inline (no allocation per command) when it is short UTF-8.
pub enum Upper {
    Inline([u8; UPPER_INLINE], u8),
    Heap(String),
}

const UPPER_INLINE: usize = 32;

impl Upper {
    pub fn as_str(&self) -> &str {
        match self {
            // Checked UTF-8 when made (ASCII upper-casing keeps it so).
            Upper::Inline(b, n) => std::str::from_utf8(&b[..usize::from(*n)]).unwrap_or_default(),
            Upper::Heap(s) => s,
        }
    }
}

impl std::ops::Deref for Upper {
    type Target = str;
    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl PartialEq<&str> for Upper {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

pub fn upper(b: &[u8]) -> Upper {
    if b.len() <= UPPER_INLINE && std::str::from_utf8(b).is_ok() {
        let mut buf = [0u8; UPPER_INLINE];
        buf[..b.len()].copy_from_slice(b);
        buf[..b.len()].make_ascii_uppercase();
        return Upper::Inline(buf, b.len() as u8);
    }
    Upper::Heap(String::from_utf8_lossy(b).to_ascii_uppercase())
}

fn reply_frame(r: Reply) -> Frame {
    match r {
        Reply::Ok => Frame::ok(),
        Reply::Nil => Frame::Null,
        Reply::Int(i) => Frame::Integer(i),
        Reply::Bulk(b) => Frame::Bulk(b.into()),
        Reply::Double(d) => Frame::Double(d),
        Reply::Ints(v) => Frame::Array(v.into_iter().map(Frame::Integer).collect()),
    }
}

fn score_frame(d: f64) -> Frame {
    Frame::Double(d)
}

/// A command that is one write to one key (most write commands), parsed: run alone through
/// [`KvService::write`], or with its neighbours in a pipeline through
/// [`KvService::write_batch`]. `Reply` is a command refused before it touches the store
/// (wrong arity, syntax, a bad number): it answers at its place in the pipeline.
pub enum Planned {
    Write { key: Bytes, op: WriteOp, shape: Shape },
    Reply(Frame),
}

/// How a planned write's reply is shown.
#[derive(Debug, Clone, Copy)]
pub enum Shape {
    Plain,
    /// SETNX: 1 if set, else 0.
    SetNx,
    /// HMSET: `OK` unless an error.
    HmSet,
}

impl Shape {
    pub fn finish(self, r: Result<Reply, RingError>) -> Frame {
        match (self, r) {
            (_, Err(e)) => ring_err(e),
            (Shape::Plain, Ok(r)) => reply_frame(r),
            (Shape::SetNx, Ok(r)) => Frame::Integer(i64::from(r == Reply::Ok)),
            (Shape::HmSet, Ok(_)) => Frame::ok(),
        }
    }
}

impl Planned {
    fn write(key: &Bytes, op: WriteOp) -> Self {
        Planned::Write { key: key.clone(), op, shape: Shape::Plain }
    }
}

/// Parse `cmd` (upper case) with arguments `a` if it is a one-key write; None otherwise.
pub fn plan(svc: &KvService, cmd: &str, a: &[Bytes]) -> Option<Planned> {
    let n = a.len();
    let fail = |f: Frame| Some(Planned::Reply(f));
    macro_rules! need {
        ($cond:expr) => {
            if !($cond) {
                return fail(arity(cmd));
            }
        };
    }
    let w = |key: &Bytes, op: WriteOp| Some(Planned::write(key, op));
    match cmd {
        "SET" => {
            need!(n >= 2);
            let mut cond = Cond::Always;
            let mut ttl = Ttl::Clear;
            let mut get = false;
            let mut i = 2;
            while i < n {
                let opt = upper(&a[i]);
                match opt.as_str() {
                    "NX" if cond == Cond::Always => cond = Cond::Nx,
                    "XX" if cond == Cond::Always => cond = Cond::Xx,
                    "GET" => get = true,
                    "KEEPTTL" if ttl == Ttl::Clear => ttl = Ttl::Keep,
                    "EX" | "PX" | "EXAT" | "PXAT" if ttl == Ttl::Clear && i + 1 < n => {
                        let Some(v) = int_arg(&a[i + 1]) else { return fail(not_int()) };
                        if v <= 0 {
                            return fail(Frame::err("ERR invalid expire time in 'set' command"));
                        }
                        let v = v as u64;
                        let now = svc.now_ms();
                        ttl = Ttl::At(match opt.as_str() {
                            "EX" => now.saturating_add(v.saturating_mul(1000)),
                            "PX" => now.saturating_add(v),
                            "EXAT" => v.saturating_mul(1000),
                            _ => v,
                        });
                        i += 1;
                    }
                    _ => return fail(syntax()),
                }
                i += 1;
            }
            w(&a[0], WriteOp::Set { value: a[1].to_vec(), ttl, cond, get })
        }
        "SETNX" => {
            need!(n == 2);
            let op = WriteOp::Set { value: a[1].to_vec(), ttl: Ttl::Clear, cond: Cond::Nx, get: false };
            Some(Planned::Write { key: a[0].clone(), op, shape: Shape::SetNx })
        }
        "GETDEL" => {
            need!(n == 1);
            w(&a[0], WriteOp::GetDel)
        }
        "DEL" | "UNLINK" if n == 1 => w(&a[0], WriteOp::Del),
        "INCR" | "DECR" => {
            need!(n == 1);
            w(&a[0], WriteOp::IncrBy(if cmd == "INCR" { 1 } else { -1 }))
        }
        "INCRBY" | "DECRBY" => {
            need!(n == 2);
            let Some(by) = int_arg(&a[1]) else { return fail(not_int()) };
            let by = if cmd == "INCRBY" { Some(by) } else { by.checked_neg() };
            let Some(by) = by else { return fail(Frame::err(model::OVERFLOW)) };
            w(&a[0], WriteOp::IncrBy(by))
        }
        "INCRBYFLOAT" => {
            need!(n == 2);
            let Some(by) = model::parse_f64(&a[1]) else { return fail(Frame::err(model::NOT_FLOAT)) };
            w(&a[0], WriteOp::IncrByFloat(by))
        }
        "APPEND" => {
            need!(n == 2);
            w(&a[0], WriteOp::Append(a[1].to_vec()))
        }
        "EXPIRE" | "PEXPIRE" | "EXPIREAT" | "PEXPIREAT" => {
            need!(n == 2);
            let Some(v) = int_arg(&a[1]) else { return fail(not_int()) };
            let now = svc.now_ms() as i64;
            let at = match cmd {
                "EXPIRE" => now.saturating_add(v.saturating_mul(1000)),
                "PEXPIRE" => now.saturating_add(v),
                "EXPIREAT" => v.saturating_mul(1000),
                _ => v,
            };
            w(&a[0], WriteOp::Expire(Some(at.max(0) as u64)))
        }
        "PERSIST" => {
            need!(n == 1);
            w(&a[0], WriteOp::Expire(None))
        }
        "HSET" | "HMSET" => {
            need!(n >= 3 && n % 2 == 1);
            let pairs = a[1..].chunks(2).map(|p| (p[0].to_vec(), p[1].to_vec())).collect();
            let shape = if cmd == "HMSET" { Shape::HmSet } else { Shape::Plain };
            Some(Planned::Write { key: a[0].clone(), op: WriteOp::HSet(pairs), shape })
        }
        "HDEL" => {
            need!(n >= 2);
            w(&a[0], WriteOp::HDel(a[1..].iter().map(|f| f.to_vec()).collect()))
        }
        "HINCRBY" => {
            need!(n == 3);
            let Some(by) = int_arg(&a[2]) else { return fail(not_int()) };
            w(&a[0], WriteOp::HIncrBy(a[1].to_vec(), by))
        }
        "ZADD" => Some(zadd(a)),
        "ZINCRBY" => {
            need!(n == 3);
            let Some(by) = model::parse_f64(&a[1]) else { return fail(Frame::err(model::NOT_FLOAT)) };
            let op = WriteOp::ZAdd {
                members: vec![(by, a[2].to_vec())],
                cond: Cond::Always,
                gt: false,
                lt: false,
                ch: false,
                incr: true,
            };
            w(&a[0], op)
        }
        "ZREM" => {
            need!(n >= 2);
            w(&a[0], WriteOp::ZRem(a[1..].iter().map(|m| m.to_vec()).collect()))
        }
        _ => None,
    }
}

/// Run one command.
pub async fn execute(svc: &Arc<KvService>, conn: &mut Conn, args: Vec<Bytes>) -> Frame {
    let Some(first) = args.first() else { return Frame::Null };
    let cmd = upper(first);
    let a = &args[1..];
    let n = a.len();
    let write = |key: &Bytes, op: WriteOp| {
        let svc = svc.clone();
        let key = key.to_vec();
        async move { svc.write(&key, op).await.map(reply_frame).unwrap_or_else(ring_err) }
    };
    macro_rules! need {
        ($cond:expr) => {
            if !($cond) {
                return arity(&cmd);
            }
        };
    }
    match plan(svc, &cmd, a) {
        Some(Planned::Reply(f)) => return f,
        Some(Planned::Write { key, op, shape }) => return shape.finish(svc.write(&key, op).await),
        None => {}
    }
    match cmd.as_str() {
        "PING" => match n {
            0 => Frame::Simple("PONG".into()),
            1 => Frame::Bulk(a[0].clone()),
            _ => arity(&cmd),
        },
        "ECHO" => {
            need!(n == 1);
            Frame::Bulk(a[0].clone())
        }
        "QUIT" => {
            conn.quit = true;
            Frame::ok()
        }
        "SELECT" => {
            need!(n == 1);
            match int_arg(&a[0]) {
                Some(0) => Frame::ok(),
                Some(_) => Frame::err("ERR DB index is out of range"),
                None => not_int(),
            }
        }
        "AUTH" => {
            need!(n == 1 || n == 2);
            Frame::err(
                "ERR AUTH <password> called without any password configured for the default user. Are you sure your configuration is correct?",
            )
        }
        "HELLO" => hello(conn, a),
        "CLIENT" => client(conn, a),
        "COMMAND" => Frame::Array(Vec::new()),
        "CONFIG" => {
            need!(n >= 2);
            match upper(&a[0]).as_str() {
                "GET" => Frame::Array(Vec::new()),
                "SET" | "RESETSTAT" | "REWRITE" => Frame::ok(),
                _ => {
                    Frame::err(format!("ERR unknown subcommand '{}'. Try CONFIG HELP.", String::from_utf8_lossy(&a[0])))
                }
            }
        }
        "INFO" => {
            let m = svc.ring.membership();
            let text = format!(
                "# Server\r\nredis_version:{REDIS_VERSION}\r\nbasalt_version:{}\r\nredis_mode:cluster-basalt\r\n\r\n# Replication\r\nrole:master\r\n\r\n# Cluster\r\nring_members:{}\r\nring_n:{}\r\nring_r:{}\r\nring_w:{}\r\n",
                env!("CARGO_PKG_VERSION"),
                m.table().len(),
                svc.ring.config.n,
                svc.ring.config.r,
                svc.ring.config.w
            );
            Frame::Verbatim { format: *b"txt", text: text.into() }
        }
        "DBSIZE" => Frame::Integer(svc.all_keys().await.len() as i64),
        "FLUSHDB" | "FLUSHALL" => {
            for k in svc.all_keys().await {
                if let Err(e) = svc.write(&k, WriteOp::Del).await {
                    return ring_err(e);
                }
            }
            Frame::ok()
        }
        "KEYS" => {
            need!(n == 1);
            let keys = svc.all_keys().await;
            Frame::Array(keys.into_iter().filter(|k| glob(&a[0], k)).map(|k| Frame::Bulk(k.into())).collect())
        }
        "SCAN" => {
            need!(n >= 1);
            if int_arg(&a[0]).is_none_or(|c| c < 0) {
                return Frame::err("ERR invalid cursor");
            }
            let mut pattern: Option<&Bytes> = None;
            let mut i = 1;
            while i < n {
                match upper(&a[i]).as_str() {
                    "MATCH" if i + 1 < n => pattern = Some(&a[i + 1]),
                    "COUNT" if i + 1 < n => {
                        if int_arg(&a[i + 1]).is_none_or(|c| c < 1) {
                            return syntax();
                        }
                    }
                    "TYPE" if i + 1 < n => {}
                    _ => return syntax(),
                }
                i += 2;
            }
            // One pass returns everything (cursor 0): allowed by SCAN's contract.
            let keys = svc.all_keys().await;
            let keys = keys.into_iter().filter(|k| pattern.is_none_or(|p| glob(p, k)));
            Frame::Array(vec![Frame::bulk("0"), Frame::Array(keys.map(|k| Frame::Bulk(k.into())).collect())])
        }
        // ---- strings
        "GET" => {
            need!(n == 1);
            get_reply(svc.read(&a[0]).await)
        }
        "MGET" => {
            need!(n >= 1);
            let futs = a.iter().map(|k| {
                read(svc, k, |d| match d.and_then(Data::as_str) {
                    Some(s) => Frame::Bulk(s.into_owned().into()),
                    None => Frame::Null,
                })
            });
            let out = futures_util::future::join_all(futs).await;
            if let Some(e) = out.iter().find(|f| matches!(f, Frame::Error(m) if !m.starts_with("WRONGTYPE"))) {
                return e.clone();
            }
            Frame::Array(out)
        }
        "MSET" => {
            need!(n >= 2 && n.is_multiple_of(2));
            let futs = a.chunks(2).map(|kv| {
                write(&kv[0], WriteOp::Set { value: kv[1].to_vec(), ttl: Ttl::Clear, cond: Cond::Always, get: false })
            });
            let out = futures_util::future::join_all(futs).await;
            out.into_iter().find(|f| matches!(f, Frame::Error(_))).unwrap_or_else(Frame::ok)
        }
        "STRLEN" => {
            need!(n == 1);
            read(svc, &a[0], |d| match d.map(Data::as_str) {
                Some(Some(s)) => Frame::Integer(s.len() as i64),
                Some(None) => Frame::err(model::WRONGTYPE),
                None => Frame::Integer(0),
            })
            .await
        }
        // ---- keys
        "DEL" | "UNLINK" => {
            need!(n >= 1);
            let futs = a.iter().map(|k| write(k, WriteOp::Del));
            let out = futures_util::future::join_all(futs).await;
            if let Some(e) = out.iter().find(|f| matches!(f, Frame::Error(_))) {
                return e.clone();
            }
            Frame::Integer(out.iter().map(|f| if let Frame::Integer(i) = f { *i } else { 0 }).sum())
        }
        "EXISTS" => {
            need!(n >= 1);
            let futs = a.iter().map(|k| read(svc, k, |d| Frame::Integer(i64::from(d.is_some()))));
            let out = futures_util::future::join_all(futs).await;
            if let Some(e) = out.iter().find(|f| matches!(f, Frame::Error(_))) {
                return e.clone();
            }
            Frame::Integer(out.iter().map(|f| if let Frame::Integer(i) = f { *i } else { 0 }).sum())
        }
        "TTL" | "PTTL" => {
            need!(n == 1);
            let now = svc.now_ms();
            match svc.read(&a[0]).await {
                Ok(None) => Frame::Integer(-2),
                Ok(Some(Entry { expires_at_ms: None, .. })) => Frame::Integer(-1),
                Ok(Some(Entry { expires_at_ms: Some(t), .. })) => {
                    let ms = t.saturating_sub(now) as i64;
                    Frame::Integer(if cmd == "TTL" { (ms + 500) / 1000 } else { ms })
                }
                Err(e) => ring_err(e),
            }
        }
        "TYPE" => {
            need!(n == 1);
            read(svc, &a[0], |d| {
                Frame::Simple(
                    match d {
                        Some(Data::Str(_) | Data::Counter(_) | Data::Throttle(_)) => "string",
                        Some(Data::Hash(_)) => "hash",
                        Some(Data::ZSet(_)) => "zset",
                        None => "none",
                    }
                    .into(),
                )
            })
            .await
        }
        // ---- rate limiting: the ratelimit system's in-memory limiters when it runs on this
        // node; otherwise redis-cell's way, the limiter's state as the key's value.
        "CL.THROTTLE" => {
            if let Some(h) = conn.services.resp_command("CL.THROTTLE") {
                return h(a.to_vec()).await;
            }
            need!(n == 4 || n == 5);
            let nums: Vec<Option<i64>> = a[1..].iter().map(|x| int_arg(x)).collect();
            if nums.iter().any(|x| x.is_none_or(|v| v < 0)) {
                return Frame::err("ERR value is not an integer or out of range");
            }
            let v: Vec<u64> = nums.into_iter().map(|x| x.unwrap_or(0) as u64).collect();
            let op = WriteOp::Throttle {
                max_burst: v[0],
                count: v[1],
                period_s: v[2],
                quantity: v.get(3).copied().unwrap_or(1),
            };
            write(&a[0], op).await
        }
        // ---- hashes
        "HGET" => {
            need!(n == 2);
            let f = a[1].to_vec();
            read(svc, &a[0], move |d| match d {
                Some(Data::Hash(h)) => h.get(&f).map_or(Frame::Null, |v| Frame::Bulk(v.clone().into())),
                Some(_) => Frame::err(model::WRONGTYPE),
                None => Frame::Null,
            })
            .await
        }
        "HMGET" => {
            need!(n >= 2);
            let fields: Vec<Vec<u8>> = a[1..].iter().map(|f| f.to_vec()).collect();
            read(svc, &a[0], move |d| match d {
                Some(Data::Hash(h)) => Frame::Array(
                    fields.iter().map(|f| h.get(f).map_or(Frame::Null, |v| Frame::Bulk(v.clone().into()))).collect(),
                ),
                Some(_) => Frame::err(model::WRONGTYPE),
                None => Frame::Array(fields.iter().map(|_| Frame::Null).collect()),
            })
            .await
        }
        "HGETALL" => {
            need!(n == 1);
            read(svc, &a[0], |d| match d {
                Some(Data::Hash(h)) => Frame::Map(
                    h.iter().map(|(k, v)| (Frame::Bulk(k.clone().into()), Frame::Bulk(v.clone().into()))).collect(),
                ),
                Some(_) => Frame::err(model::WRONGTYPE),
                None => Frame::Map(Vec::new()),
            })
            .await
        }
        "HLEN" => {
            need!(n == 1);
            read(svc, &a[0], |d| match d {
                Some(Data::Hash(h)) => Frame::Integer(h.len() as i64),
                Some(_) => Frame::err(model::WRONGTYPE),
                None => Frame::Integer(0),
            })
            .await
        }
        // ---- sorted sets
        "ZSCORE" => {
            need!(n == 2);
            let m = a[1].to_vec();
            read(svc, &a[0], move |d| match d {
                Some(Data::ZSet(z)) => z.get(&m).map_or(Frame::Null, |s| score_frame(*s)),
                Some(_) => Frame::err(model::WRONGTYPE),
                None => Frame::Null,
            })
            .await
        }
        "ZCARD" => {
            need!(n == 1);
            read(svc, &a[0], |d| match d {
                Some(Data::ZSet(z)) => Frame::Integer(z.len() as i64),
                Some(_) => Frame::err(model::WRONGTYPE),
                None => Frame::Integer(0),
            })
            .await
        }
        "ZRANK" | "ZREVRANK" => {
            need!(n == 2);
            let (m, rev) = (a[1].to_vec(), cmd == "ZREVRANK");
            read(svc, &a[0], move |d| match d {
                Some(Data::ZSet(z)) => {
                    let sorted = model::zsorted(z);
                    match sorted.iter().position(|(x, _)| **x == m) {
                        Some(i) => Frame::Integer(if rev { (sorted.len() - 1 - i) as i64 } else { i as i64 }),
                        None => Frame::Null,
                    }
                }
                Some(_) => Frame::err(model::WRONGTYPE),
                None => Frame::Null,
            })
            .await
        }
        "ZRANGE" | "ZREVRANGE" => {
            need!(n == 3 || n == 4);
            let (Some(start), Some(stop)) = (int_arg(&a[1]), int_arg(&a[2])) else { return not_int() };
            let scores = match a.get(3) {
                None => false,
                Some(o) if upper(o) == "WITHSCORES" => true,
                Some(_) => return syntax(),
            };
            let (rev, proto) = (cmd == "ZREVRANGE", conn.proto);
            read(svc, &a[0], move |d| match d {
                Some(Data::ZSet(z)) => {
                    let mut sorted = model::zsorted(z);
                    if rev {
                        sorted.reverse();
                    }
                    let len = sorted.len() as i64;
                    let norm = |i: i64| if i < 0 { (len + i).max(0) } else { i };
                    let (s, e) = (norm(start), norm(stop).min(len - 1));
                    if s > e || s >= len {
                        return Frame::Array(Vec::new());
                    }
                    let slice = &sorted[s as usize..=e as usize];
                    let mut out = Vec::new();
                    for (m, sc) in slice {
                        let member = Frame::Bulk((*m).clone().into());
                        match (scores, proto) {
                            (false, _) => out.push(member),
                            (true, Proto::Resp3) => out.push(Frame::Array(vec![member, score_frame(*sc)])),
                            (true, Proto::Resp2) => {
                                out.push(member);
                                out.push(Frame::bulk(format_double(*sc)));
                            }
                        }
                    }
                    Frame::Array(out)
                }
                Some(_) => Frame::err(model::WRONGTYPE),
                None => Frame::Array(Vec::new()),
            })
            .await
        }
        _ => {
            let shown: String =
                a.iter().take(20).map(|x| format!("'{}' ", String::from_utf8_lossy(&x[..x.len().min(128)]))).collect();
            Frame::err(format!(
                "ERR unknown command '{}', with args beginning with: {shown}",
                String::from_utf8_lossy(&first[..first.len().min(128)])
            ))
        }
    }
}

/// GET's reply to what a read found.
fn get_reply(found: Result<Option<Entry>, RingError>) -> Frame {
    match found {
        // A string is answered with the decoded bytes themselves (no second copy).
        Ok(Some(Entry { data: Some(Data::Str(s)), .. })) => Frame::Bulk(s.into()),
        Ok(e) => match e.as_ref().and_then(|e| e.data.as_ref()).map(Data::as_str) {
            Some(Some(s)) => Frame::Bulk(s.into_owned().into()),
            Some(None) => Frame::err(model::WRONGTYPE),
            None => Frame::Null,
        },
        Err(e) => ring_err(e),
    }
}

/// Answer `args` in place if it is a GET this node's replica alone answers (one replica per
/// key, this node's): no task, and a string is copied once, from the stored object into `out`.
/// False (and nothing written) when it is anything else; then [`execute`] runs it.
pub fn answer_now(svc: &KvService, args: &[Bytes], proto: Proto, out: &mut bytes::BytesMut) -> bool {
    let [cmd, key] = args else { return false };
    if !cmd.eq_ignore_ascii_case(b"GET") {
        return false;
    }
    match svc.read_local(key) {
        None => false,
        Some(Err(e)) => {
            basalt_resp::encode(&ring_err(e), proto, out);
            true
        }
        Some(Ok(obj)) => {
            match svc.current_str(&obj) {
                Some(Some(s)) => basalt_resp::encode_bulk(s, out),
                Some(None) => basalt_resp::encode(&Frame::Null, proto, out),
                None => basalt_resp::encode(&get_reply(Ok(svc.current(&obj))), proto, out),
            }
            true
        }
    }
}

async fn read(svc: &Arc<KvService>, key: &Bytes, f: impl FnOnce(Option<&Data>) -> Frame) -> Frame {
    match svc.read(key).await {
        Ok(e) => f(e.as_ref().and_then(|e| e.data.as_ref())),
        Err(e) => ring_err(e),
    }
}

fn zadd(a: &[Bytes]) -> Planned {
    let fail = Planned::Reply;
    if a.len() < 3 {
        return fail(arity("zadd"));
    }
    let (mut cond, mut gt, mut lt, mut ch, mut incr) = (Cond::Always, false, false, false, false);
    let mut i = 1;
    while i < a.len() {
        match upper(&a[i]).as_str() {
            "NX" => cond = Cond::Nx,
            "XX" => cond = Cond::Xx,
            "GT" => gt = true,
            "LT" => lt = true,
            "CH" => ch = true,
            "INCR" => incr = true,
            _ => break,
        }
        i += 1;
    }
    let rest = &a[i..];
    if rest.is_empty() || !rest.len().is_multiple_of(2) {
        return fail(syntax());
    }
    if (cond == Cond::Nx && (gt || lt)) || (gt && lt) {
        return fail(Frame::err("ERR GT, LT, and/or NX options at the same time are not compatible"));
    }
    if incr && rest.len() != 2 {
        return fail(Frame::err("ERR INCR option supports a single increment-element pair"));
    }
    let mut members = Vec::new();
    for p in rest.chunks(2) {
        let Some(s) = model::parse_f64(&p[0]) else { return fail(Frame::err(model::NOT_FLOAT)) };
        members.push((s, p[1].to_vec()));
    }
    Planned::write(&a[0], WriteOp::ZAdd { members, cond, gt, lt, ch, incr })
}

fn hello(conn: &mut Conn, a: &[Bytes]) -> Frame {
    let mut i = 0;
    if let Some(v) = a.first() {
        match int_arg(v) {
            Some(2) => conn.proto = Proto::Resp2,
            Some(3) => conn.proto = Proto::Resp3,
            Some(_) => return Frame::err("NOPROTO unsupported protocol version"),
            None => return Frame::err("ERR Protocol version is not an integer or out of range"),
        }
        i = 1;
    }
    while i < a.len() {
        match upper(&a[i]).as_str() {
            "AUTH" if i + 2 < a.len() => {
                return Frame::err("WRONGPASS invalid username-password pair or user is disabled.");
            }
            "SETNAME" if i + 1 < a.len() => {
                conn.name = Some(a[i + 1].clone());
                i += 2;
            }
            _ => return syntax(),
        }
    }
    let mut m = BTreeMap::new();
    m.insert("server", Frame::bulk("redis"));
    m.insert("version", Frame::bulk(REDIS_VERSION));
    m.insert("proto", Frame::Integer(if conn.proto == Proto::Resp3 { 3 } else { 2 }));
    m.insert("id", Frame::Integer(conn.id as i64));
    m.insert("mode", Frame::bulk("standalone"));
    m.insert("role", Frame::bulk("master"));
    m.insert("modules", Frame::Array(Vec::new()));
    Frame::Map(m.into_iter().map(|(k, v)| (Frame::bulk(k), v)).collect())
}

fn client(conn: &mut Conn, a: &[Bytes]) -> Frame {
    let Some(sub) = a.first() else { return arity("client") };
    match (upper(sub).as_str(), a.len()) {
        ("SETNAME", 2) => {
            if a[1].iter().any(|b| *b == b' ' || *b == b'\n') {
                return Frame::err("ERR Client names cannot contain spaces, newlines or special characters.");
            }
            conn.name = (!a[1].is_empty()).then(|| a[1].clone());
            Frame::ok()
        }
        ("GETNAME", 1) => conn.name.clone().map_or(Frame::Null, Frame::Bulk),
        ("ID", 1) => Frame::Integer(conn.id as i64),
        ("SETINFO", 3) => Frame::ok(),
        ("SETNAME" | "GETNAME" | "ID" | "SETINFO", _) => arity(&format!("client|{}", upper(sub).to_ascii_lowercase())),
        _ => Frame::err(format!("ERR unknown subcommand '{}'. Try CLIENT HELP.", String::from_utf8_lossy(sub))),
    }
}

/// Redis's glob: `*`, `?`, `[abc]`, `[^a-z]`, `\x`.
pub fn glob(pattern: &[u8], s: &[u8]) -> bool {
    fn m(p: &[u8], s: &[u8]) -> bool {
        match (p.first(), s.first()) {
            (None, None) => true,
            (None, Some(_)) => false,
            (Some(b'*'), _) => m(&p[1..], s) || (!s.is_empty() && m(p, &s[1..])),
            (Some(_), None) => false,
            (Some(b'?'), Some(_)) => m(&p[1..], &s[1..]),
            (Some(b'['), Some(c)) => {
                let mut i = 1;
                let neg = p.get(1) == Some(&b'^');
                if neg {
                    i += 1;
                }
                let mut hit = false;
                while i < p.len() && p[i] != b']' {
                    if p[i] == b'\\' && i + 1 < p.len() {
                        hit |= p[i + 1] == *c;
                        i += 2;
                    } else if i + 2 < p.len() && p[i + 1] == b'-' && p[i + 2] != b']' {
                        let (lo, hi) = (p[i].min(p[i + 2]), p[i].max(p[i + 2]));
                        hit |= (lo..=hi).contains(c);
                        i += 3;
                    } else {
                        hit |= p[i] == *c;
                        i += 1;
                    }
                }
                if i >= p.len() {
                    return false; // unterminated class: no match, as Redis
                }
                hit != neg && m(&p[i + 1..], &s[1..])
            }
            (Some(b'\\'), Some(c)) if p.len() > 1 => p[1] == *c && m(&p[2..], &s[1..]),
            (Some(x), Some(c)) => x == c && m(&p[1..], &s[1..]),
        }
    }
    m(pattern, s)
}

#[cfg(test)]
mod tests {
    use super::glob;

    proptest::proptest! {
        /// The inline upper-casing gives what the allocating one gave, for any bytes (short,
        /// long, not UTF-8).
        #[test]
        fn upper_is_the_lossy_ascii_upper_case(b in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..40)) {
            let got = super::upper(&b);
            proptest::prop_assert_eq!(got.as_str(), String::from_utf8_lossy(&b).to_ascii_uppercase());
        }
    }

    #[test]
    fn upper_of_command_names() {
        assert_eq!(super::upper(b"set").as_str(), "SET");
        assert_eq!(super::upper("zädd".as_bytes()).as_str(), "ZäDD");
    }

    #[test]
    fn glob_matches_like_redis() {
        assert!(glob(b"*", b"anything"));
        assert!(glob(b"user:*", b"user:42"));
        assert!(!glob(b"user:*", b"usr:42"));
        assert!(glob(b"h?llo", b"hello"));
        assert!(glob(b"h[ae]llo", b"hallo"));
        assert!(!glob(b"h[^e]llo", b"hello"));
        assert!(glob(b"h[a-c]llo", b"hbllo"));
        assert!(glob(b"a\\*b", b"a*b"));
        assert!(!glob(b"a\\*b", b"axb"));
    }
}
