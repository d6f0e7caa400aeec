//! S13's Redis front with real clients: redis-cli (one-shot commands, RESP3 via `-3`, a
//! pipelined batch through `--pipe`), redis-py, and raw bytes for protocol errors.

mod common;

use std::io::{Read, Write};
use std::process::{Command, Stdio};

use common::*;

async fn node() -> (tempfile::TempDir, basalt_runtime::process::NodeProcess, String) {
    let dir = tempfile::tempdir().unwrap();
    let n = start(spec(dir.path()).arg("--set").arg("systems.config.enabled=false")).await;
    let (_, b) = send(client().get(format!("{}/v1/kv", n.url()))).await;
    let addr = b["resp_addr"].as_str().unwrap().to_string();
    (dir, n, addr)
}

fn cli(addr: &str, args: &[&str]) -> String {
    let (host, port) = addr.rsplit_once(':').unwrap();
    let out =
        Command::new("redis-cli").args(["-h", host, "-p", port]).args(args).output().expect("redis-cli installed");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap().trim_end().to_string()
}

#[tokio::test]
async fn redis_cli_speaks_to_it() {
    let (_d, _n, addr) = node().await;
    let c = |args: &[&str]| cli(&addr, args);
    assert_eq!(c(&["PING"]), "PONG");
    assert_eq!(c(&["SET", "greeting", "hello world"]), "OK");
    assert_eq!(c(&["GET", "greeting"]), "hello world");
    assert_eq!(c(&["APPEND", "greeting", "!"]), "12");
    assert_eq!(c(&["SET", "n", "41"]), "OK");
    assert_eq!(c(&["INCR", "n"]), "42");
    assert_eq!(c(&["INCRBY", "n", "-50"]), "-8");
    assert_eq!(c(&["INCR", "greeting"]), "ERR value is not an integer or out of range");
    assert_eq!(c(&["SET", "tmp", "x", "PX", "100000"]), "OK");
    assert!(c(&["PTTL", "tmp"]).parse::<i64>().unwrap() > 90_000);
    assert_eq!(c(&["PERSIST", "tmp"]), "1");
    assert_eq!(c(&["TTL", "tmp"]), "-1");
    assert_eq!(c(&["TTL", "missing"]), "-2");
    // An expired string is gone for GET too (answered in place from the node's replica).
    assert_eq!(c(&["SET", "brief", "x", "PX", "1"]), "OK");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while c(&["PTTL", "brief"]) != "-2" {
        assert!(std::time::Instant::now() < deadline, "a 1 ms expiry never passed");
    }
    assert_eq!(c(&["GET", "brief"]), "");
    assert_eq!(c(&["SET", "tmp", "y", "NX"]), "");
    assert_eq!(c(&["SET", "tmp", "y", "XX", "GET"]), "x");
    assert_eq!(c(&["MSET", "a", "1", "b", "2"]), "OK");
    assert_eq!(c(&["MGET", "a", "b", "nope"]), "1\n2"); // the nil prints as an empty last line
    assert_eq!(c(&["HSET", "user:1", "name", "ada", "age", "36"]), "2");
    assert_eq!(c(&["HINCRBY", "user:1", "age", "1"]), "37");
    assert_eq!(c(&["HGETALL", "user:1"]), "age\n37\nname\nada");
    assert_eq!(c(&["HMGET", "user:1", "name", "x"]), "ada");
    assert_eq!(c(&["HDEL", "user:1", "age", "x"]), "1");
    assert_eq!(c(&["HLEN", "user:1"]), "1");
    assert_eq!(c(&["ZADD", "board", "10", "ann", "30", "bob", "20", "cy"]), "3");
    assert_eq!(c(&["ZINCRBY", "board", "15", "ann"]), "25");
    assert_eq!(c(&["ZREVRANGE", "board", "0", "1", "WITHSCORES"]), "bob\n30\nann\n25");
    assert_eq!(c(&["ZRANK", "board", "cy"]), "0");
    assert_eq!(c(&["ZSCORE", "board", "ann"]), "25");
    assert_eq!(c(&["ZCARD", "board"]), "3");
    assert_eq!(c(&["ZREM", "board", "cy", "zed"]), "1");
    assert_eq!(c(&["TYPE", "board"]), "zset");
    assert_eq!(c(&["GET", "board"]), "WRONGTYPE Operation against a key holding the wrong kind of value");
    assert_eq!(c(&["EXISTS", "a", "b", "nope"]), "2");
    assert_eq!(c(&["DEL", "a", "b", "nope"]), "2");
    assert_eq!(c(&["SELECT", "1"]), "ERR DB index is out of range");
    assert_eq!(c(&["GET"]), "ERR wrong number of arguments for 'get' command");
    assert_eq!(c(&["SET", "k", "v", "EX", "0"]), "ERR invalid expire time in 'set' command");
    assert_eq!(c(&["SET", "k", "v", "BOGUS"]), "ERR syntax error");
    assert!(c(&["NOSUCH", "x"]).starts_with("ERR unknown command 'NOSUCH', with args beginning with: 'x'"));
    // redis-cell's CL.THROTTLE (served by the ratelimit system): a burst of 15 + 1, then 30 per 60 s.
    assert_eq!(c(&["CL.THROTTLE", "limit:ip", "15", "30", "60", "1"]), "0\n16\n15\n-1\n2");
    for _ in 0..15 {
        assert!(c(&["CL.THROTTLE", "limit:ip", "15", "30", "60", "1"]).starts_with("0\n16\n"));
    }
    let refused: Vec<i64> =
        c(&["CL.THROTTLE", "limit:ip", "15", "30", "60", "1"]).lines().map(|l| l.parse().unwrap()).collect();
    assert_eq!(&refused[..3], &[1, 16, 0], "the 17th is limited");
    assert!(refused[3] >= 1 && refused[3] <= 2, "retry after about 2 s: {refused:?}");
    assert!(c(&["CL.THROTTLE", "limit:ip", "15", "30", "0", "1"]).starts_with("ERR"), "a zero period is refused");
    assert_eq!(c(&["CL.THROTTLE", "limit:ip", "15", "x", "60"]), "ERR value is not an integer or out of range");
    assert_eq!(c(&["DEL", "limit:ip"]), "0", "the limiter is the rate limiter's, not a key of the store");
    let mut keys: Vec<String> = c(&["KEYS", "*"]).lines().map(str::to_string).collect();
    keys.sort();
    assert_eq!(keys, ["board", "greeting", "n", "tmp", "user:1"]);
    assert_eq!(c(&["DBSIZE"]), "5");
    // RESP3: HELLO 3, then maps and doubles come back in their own types.
    assert!(c(&["-3", "HGETALL", "user:1"]).contains("name"));
    // On the wire: after HELLO 3 a score is a RESP3 double, a hash a map.
    let mut s = std::net::TcpStream::connect(&addr).unwrap();
    s.write_all(b"HELLO 3\r\nZSCORE board ann\r\nHGETALL user:1\r\nQUIT\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    assert!(out.starts_with("%7\r\n"), "{out}");
    assert!(out.ends_with(",25\r\n%1\r\n$4\r\nname\r\n$3\r\nada\r\n+OK\r\n"), "{out}");
}

#[tokio::test]
async fn a_pipelined_batch_through_redis_cli_pipe() {
    let (_d, _n, addr) = node().await;
    let (host, port) = addr.rsplit_once(':').unwrap();
    let mut child = Command::new("redis-cli")
        .args(["-h", host, "-p", port, "--pipe"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut input = String::new();
    for i in 0..500 {
        input.push_str(&format!("*3\r\n$3\r\nSET\r\n${}\r\np{i}\r\n$1\r\nv\r\n", format!("p{i}").len()));
    }
    child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
    let mut out = String::new();
    child.stdout.take().unwrap().read_to_string(&mut out).unwrap();
    assert!(child.wait().unwrap().success());
    assert!(out.contains("errors: 0, replies: 500"), "{out}");
    assert_eq!(cli(&addr, &["DBSIZE"]), "500");
}

/// A pipeline in one write: its writes go to the store as one batch, yet every command
/// answers as it would alone, in order — writes and reads of the same key interleaved,
/// refusals and type errors in the middle changing nothing (the expected bytes are
/// redis-server 7.0's own answer to the same input).
#[tokio::test]
async fn a_pipeline_answers_in_order_exactly_as_one_command_at_a_time() {
    let (_d, _n, addr) = node().await;
    let cmds: &[&[&str]] = &[
        &["SET", "pk", "1"],
        &["INCR", "pk"],
        &["INCRBY", "pk", "x"],
        &["INCR", "pk"],
        &["GET", "pk"],
        &["SET", "pk", "v", "NX"],
        &["SETNX", "pk2", "a"],
        &["SETNX", "pk2", "b"],
        &["APPEND", "pk2", "c"],
        &["GET", "pk2"],
        &["HSET", "ph", "f", "1", "g", "2"],
        &["HINCRBY", "ph", "f", "5"],
        &["HMSET", "ph", "h", "3"],
        &["INCR", "ph"],
        &["ZADD", "pz", "1", "a", "2", "b"],
        &["ZADD", "pz", "XX", "CH", "5", "a", "1", "c"],
        &["ZINCRBY", "pz", "1.5", "b"],
        &["ZADD", "pz", "NX", "GT", "1", "a"],
        &["ZREM", "pz", "b", "nope"],
        &["ZRANGE", "pz", "0", "-1", "WITHSCORES"],
        &["HGETALL", "ph"],
        &["GET", "ph"],
        &["DEL", "pk"],
        &["GET", "pk"],
        &["GETDEL", "pk2"],
        &["EXISTS", "pk", "pk2"],
        &["SET"],
    ];
    let mut input = String::new();
    for c in cmds {
        input.push_str(&format!("*{}\r\n", c.len()));
        for a in *c {
            input.push_str(&format!("${}\r\n{a}\r\n", a.len()));
        }
    }
    input.push_str("*1\r\n$4\r\nQUIT\r\n");
    let mut s = std::net::TcpStream::connect(&addr).unwrap();
    s.write_all(input.as_bytes()).unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let want = [
        "+OK",
        ":2",
        "-ERR value is not an integer or out of range",
        ":3",
        "$1\r\n3",
        "$-1",
        ":1",
        ":0",
        ":2",
        "$2\r\nac",
        ":2",
        ":6",
        "+OK",
        "-WRONGTYPE Operation against a key holding the wrong kind of value",
        ":2",
        ":1",
        "$3\r\n3.5",
        "-ERR GT, LT, and/or NX options at the same time are not compatible",
        ":1",
        "*2\r\n$1\r\na\r\n$1\r\n5",
        "*6\r\n$1\r\nf\r\n$1\r\n6\r\n$1\r\ng\r\n$1\r\n2\r\n$1\r\nh\r\n$1\r\n3",
        "-WRONGTYPE Operation against a key holding the wrong kind of value",
        ":1",
        "$-1",
        "$2\r\nac",
        ":0",
        "-ERR wrong number of arguments for 'set' command",
        "+OK",
    ]
    .map(|r| format!("{r}\r\n"))
    .concat();
    assert_eq!(out, want);
}

#[tokio::test]
async fn redis_py_works_including_pipelines() {
    let (_d, _n, addr) = node().await;
    let (host, port) = addr.rsplit_once(':').unwrap();
    let script = r#"
import sys, redis
r = redis.Redis(host=sys.argv[1], port=int(sys.argv[2]), decode_responses=True)
assert r.ping()
r.set("py", "thon", ex=60)
assert r.get("py") == "thon"
assert 0 < r.ttl("py") <= 60
p = r.pipeline(transaction=False)
for i in range(100):
    p.incr("counter")
assert p.execute()[-1] == 100
r.hset("h", mapping={"a": "1", "b": "2"})
assert r.hgetall("h") == {"a": "1", "b": "2"}
r.zadd("z", {"x": 1.5, "y": 0.5})
assert r.zrange("z", 0, -1, withscores=True) == [("y", 0.5), ("x", 1.5)]
try:
    r.lpush("h", "x")
    raise SystemExit("unknown command accepted")
except redis.exceptions.ResponseError as e:
    assert "unknown command" in str(e), e
r3 = redis.Redis(host=sys.argv[1], port=int(sys.argv[2]), protocol=3, decode_responses=True)
assert r3.zscore("z", "x") == 1.5
assert r3.hgetall("h") == {"a": "1", "b": "2"}
print("ok")
"#;
    let out = Command::new("python3").arg("-c").arg(script).arg(host).arg(port).output().unwrap();
    assert!(out.status.success(), "{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
}

#[tokio::test]
async fn protocol_errors_get_redis_replies_and_close_the_connection() {
    let (_d, _n, addr) = node().await;
    for (input, want) in [
        (&b"*1\r\n$-5\r\n"[..], "-ERR Protocol error: invalid bulk length\r\n"),
        (b"*x\r\n", "-ERR Protocol error: invalid multibulk length\r\n"),
        (b"*1\r\n:1\r\n", "-ERR Protocol error: expected '$', got ':'\r\n"),
        (b"SET \"unbalanced\r\n", "-ERR Protocol error: unbalanced quotes in request\r\n"),
    ] {
        let mut s = std::net::TcpStream::connect(&addr).unwrap();
        s.write_all(input).unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).unwrap(); // the server closes after the error
        assert_eq!(out, want);
    }
    // Inline commands work (telnet-style), and the node is still fine.
    let mut s = std::net::TcpStream::connect(&addr).unwrap();
    s.write_all(b"PING\r\nECHO \"a b\"\r\nQUIT\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    assert_eq!(out, "+PONG\r\n$3\r\na b\r\n+OK\r\n");
}
