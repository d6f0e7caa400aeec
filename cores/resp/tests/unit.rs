//! Example-based tests: error strings, inline quoting, empty commands, encodings, reply parsing.

use basalt_resp::{
    Frame, Limits, MAX_REPLY_DEPTH, Proto, ProtocolError, encode, encode_request, format_double, parse_reply,
    parse_request, parse_request_split,
};
use bytes::{Bytes, BytesMut};

fn req(buf: &[u8]) -> Result<Option<(Vec<Bytes>, usize)>, ProtocolError> {
    let limits = Limits::default();
    let copied = parse_request(buf, &limits);
    // The zero-copy variant must agree, and leave the unconsumed bytes in place.
    let mut bm = BytesMut::from(buf);
    match (&copied, parse_request_split(&mut bm, &limits)) {
        (Ok(Some((args, used))), Ok(Some(split))) => {
            assert_eq!(args, &split);
            assert_eq!(&bm[..], &buf[*used..]);
        }
        (Ok(None), Ok(None)) | (Err(_), Err(_)) => assert_eq!(&bm[..], buf),
        (a, b) => panic!("parse_request {a:?} vs parse_request_split {b:?}"),
    }
    copied
}

fn args(buf: &[u8]) -> (Vec<String>, usize) {
    let (args, used) = req(buf).unwrap().unwrap();
    (args.iter().map(|a| String::from_utf8_lossy(a).into_owned()).collect(), used)
}

fn err(buf: &[u8]) -> String {
    req(buf).unwrap_err().to_string()
}

fn strs(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

#[test]
fn limits_default_to_redis_values() {
    let l = Limits::default();
    assert_eq!((l.max_bulk_len, l.max_args, l.max_inline_len), (512 << 20, 1 << 20, 64 << 10));
}

#[test]
fn multibulk_request() {
    let buf = b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$0\r\n\r\nrest";
    assert_eq!(args(buf), (strs(&["SET", "k", ""]), buf.len() - 4));
    // Payloads are taken by length: CRLF inside is data.
    assert_eq!(args(b"*1\r\n$4\r\na\r\nb\r\n"), (strs(&["a\r\nb"]), 14));
}

#[test]
fn empty_commands() {
    assert_eq!(args(b"*0\r\n"), (vec![], 4));
    assert_eq!(args(b"*-1\r\n*1"), (vec![], 5));
    assert_eq!(args(b"\r\n"), (vec![], 2));
    assert_eq!(args(b"\n"), (vec![], 1));
    assert_eq!(args(b"   \t \r\nPING\r\n"), (vec![], 7));
    assert_eq!(req(b"").unwrap(), None);
}

#[test]
fn invalid_multibulk_length() {
    let msg = "ERR Protocol error: invalid multibulk length";
    for buf in [
        &b"*x\r\n"[..],
        b"*\r\n",
        b"*-2\r\n",
        b"*01\r\n",
        b"*+1\r\n",
        b"*1 \r\n",
        b"*1\rX",
        b"*99999999999999999999\r\n",
    ] {
        assert_eq!(err(buf), msg, "{:?}", String::from_utf8_lossy(buf));
    }
    assert_eq!(err(format!("*{}\r\n", 1024 * 1024 + 1).as_bytes()), msg);
    assert_eq!(req(format!("*{}\r\n", 1024 * 1024).as_bytes()).unwrap(), None, "at the limit: waits for args");
    let small = Limits { max_args: 2, ..Limits::default() };
    assert_eq!(parse_request(b"*3\r\n", &small).unwrap_err(), ProtocolError::InvalidMultibulkLength);
}

#[test]
fn invalid_bulk_length() {
    let msg = "ERR Protocol error: invalid bulk length";
    for buf in [&b"*1\r\n$x\r\n"[..], b"*1\r\n$-1\r\n", b"*1\r\n$\r\n", b"*1\r\n$03\r\nfoo\r\n", b"*1\r\n$3\rX"] {
        assert_eq!(err(buf), msg, "{:?}", String::from_utf8_lossy(buf));
    }
    assert_eq!(err(format!("*1\r\n${}\r\n", 512 * 1024 * 1024 + 1).as_bytes()), msg);
    assert_eq!(req(format!("*1\r\n${}\r\n", 512 * 1024 * 1024).as_bytes()).unwrap(), None);
    let small = Limits { max_bulk_len: 3, ..Limits::default() };
    assert_eq!(parse_request(b"*1\r\n$4\r\n", &small).unwrap_err(), ProtocolError::InvalidBulkLength);
    assert!(parse_request(b"*1\r\n$3\r\nfoo\r\n", &small).unwrap().is_some());
}

#[test]
fn expected_dollar() {
    assert_eq!(err(b"*1\r\n:3\r\n"), "ERR Protocol error: expected '$', got ':'");
    assert_eq!(err(b"*2\r\n$1\r\na\r\nb"), "ERR Protocol error: expected '$', got 'b'");
    // CR/LF are shown as spaces so the error reply stays on one line, as Redis does.
    assert_eq!(err(b"*1\r\n\r\n"), "ERR Protocol error: expected '$', got ' '");
    assert_eq!(ProtocolError::ExpectedDollar(b'\n').to_string(), "ERR Protocol error: expected '$', got ' '");
}

#[test]
fn too_big_count_strings_and_inline() {
    let long = vec![b'1'; 64 * 1024 + 1];
    let mbulk = [&b"*"[..], &long].concat();
    assert_eq!(err(&mbulk), "ERR Protocol error: too big mbulk count string");
    assert_eq!(req(&mbulk[..64 * 1024]).unwrap(), None, "short enough: keeps waiting");
    let bulk = [&b"*1\r\n$"[..], &long].concat();
    assert_eq!(err(&bulk), "ERR Protocol error: too big bulk count string");
    assert_eq!(req(&bulk[..4 + 64 * 1024]).unwrap(), None);

    let line = vec![b'a'; 64 * 1024];
    assert_eq!(args(&[&line[..], b"\r\n"].concat()).0.len(), 1, "exactly the limit is accepted, with CRLF");
    assert_eq!(args(&[&line[..], b"\n"].concat()).0.len(), 1, "and with LF");
    assert_eq!(req(&[&line[..], b"\r"].concat()).unwrap(), None);
    let over = [&line[..], b"a"].concat();
    assert_eq!(err(&[&over[..], b"\n"].concat()), "ERR Protocol error: too big inline request");
    assert_eq!(err(&[&over[..], b"a"].concat()), "ERR Protocol error: too big inline request");
    assert_eq!(err(&over), "ERR Protocol error: too big inline request", "limit + 1 bytes, not ending in CR");
}

#[test]
fn bulk_not_terminated() {
    let msg = "ERR Protocol error: expected CRLF after bulk data";
    assert_eq!(err(b"*1\r\n$3\r\nfooXY"), msg);
    assert_eq!(err(b"*1\r\n$3\r\nfoo\rY"), msg);
    assert_eq!(err(b"*1\r\n$3\r\nfooX"), msg, "detected as soon as the bad byte arrives");
    assert_eq!(req(b"*1\r\n$3\r\nfoo\r").unwrap(), None);
}

#[test]
fn inline_quoting() {
    assert_eq!(args(b"set \"a b\" 'c d' \"\\x41\"\r\n").0, strs(&["set", "a b", "c d", "A"]));
    assert_eq!(args(b"set k 'it\\'s'\n").0, strs(&["set", "k", "it's"]));
    assert_eq!(args(b"echo \"\\x00\\xff\"\n").0.len(), 2);
    let (raw, _) = req(b"echo \"\\x00\\xfF\\n\"\n").unwrap().unwrap();
    assert_eq!(&raw[1][..], b"\x00\xff\n");
    let msg = "ERR Protocol error: unbalanced quotes in request";
    assert_eq!(err(b"set \"a b\r\n"), msg);
    assert_eq!(err(b"set 'a\n"), msg);
    assert_eq!(err(b"set \"a\"b\n"), msg);
    assert_eq!(err(b"set 'a'b\n"), msg);
}

#[test]
fn inline_crlf_and_lf() {
    assert_eq!(args(b"PING\r\n"), (strs(&["PING"]), 6));
    assert_eq!(args(b"PING\n"), (strs(&["PING"]), 5));
    assert_eq!(args(b"GET a\nGET b\n"), (strs(&["GET", "a"]), 6));
    // A lone CR is whitespace inside the line, not a terminator.
    assert_eq!(args(b"GET\ra\n"), (strs(&["GET", "a"]), 6));
    // Like Redis (a C string), a NUL byte ends the inline line.
    assert_eq!(args(b"GET a\0b c\n"), (strs(&["GET", "a"]), 10));
    // Every strict prefix of an inline request waits for more.
    let line = b"set \"a b\" 'c d'\r\n";
    for n in 0..line.len() {
        assert_eq!(req(&line[..n]).unwrap(), None, "prefix {n}");
    }
}

#[test]
fn pipelined_inline_and_multibulk() {
    let mut buf = BytesMut::from(&b"PING\r\n*2\r\n$4\r\nECHO\r\n$2\r\nhi\r\nQUIT\n"[..]);
    let l = Limits::default();
    let mut seen = vec![];
    while let Some(a) = parse_request_split(&mut buf, &l).unwrap() {
        seen.push(a);
    }
    assert!(buf.is_empty());
    assert_eq!(
        seen,
        vec![vec![Bytes::from("PING")], vec![Bytes::from("ECHO"), Bytes::from("hi")], vec![Bytes::from("QUIT")]]
    );
}

fn enc(frame: &Frame, proto: Proto) -> Vec<u8> {
    let mut out = BytesMut::new();
    encode(frame, proto, &mut out);
    out.to_vec()
}

#[test]
fn encodings_resp2_and_resp3() {
    use Proto::{Resp2, Resp3};
    let map = Frame::Map(vec![(Frame::bulk("a"), Frame::Integer(1))]);
    let verbatim = Frame::Verbatim { format: *b"txt", text: Bytes::from("hi") };
    let cases: Vec<(Frame, &[u8], &[u8])> = vec![
        (Frame::ok(), b"+OK\r\n", b"+OK\r\n"),
        (Frame::err("WRONGTYPE Operation"), b"-WRONGTYPE Operation\r\n", b"-WRONGTYPE Operation\r\n"),
        (Frame::err("ERR a\r\nb"), b"-ERR a  b\r\n", b"-ERR a  b\r\n"),
        (Frame::Integer(i64::MIN), b":-9223372036854775808\r\n", b":-9223372036854775808\r\n"),
        (Frame::bulk(&b"a\r\nb"[..]), b"$4\r\na\r\nb\r\n", b"$4\r\na\r\nb\r\n"),
        (Frame::bulk(""), b"$0\r\n\r\n", b"$0\r\n\r\n"),
        (Frame::Null, b"$-1\r\n", b"_\r\n"),
        (Frame::NullArray, b"*-1\r\n", b"_\r\n"),
        (Frame::Array(vec![Frame::Integer(1), Frame::Null]), b"*2\r\n:1\r\n$-1\r\n", b"*2\r\n:1\r\n_\r\n"),
        (Frame::Double(1.5), b"$3\r\n1.5\r\n", b",1.5\r\n"),
        (Frame::Double(f64::NEG_INFINITY), b"$4\r\n-inf\r\n", b",-inf\r\n"),
        (Frame::Boolean(true), b":1\r\n", b"#t\r\n"),
        (Frame::Boolean(false), b":0\r\n", b"#f\r\n"),
        (map, b"*2\r\n$1\r\na\r\n:1\r\n", b"%1\r\n$1\r\na\r\n:1\r\n"),
        (Frame::Set(vec![Frame::Integer(2)]), b"*1\r\n:2\r\n", b"~1\r\n:2\r\n"),
        (Frame::Push(vec![Frame::bulk("m")]), b"*1\r\n$1\r\nm\r\n", b">1\r\n$1\r\nm\r\n"),
        (verbatim, b"$2\r\nhi\r\n", b"=6\r\ntxt:hi\r\n"),
        (
            Frame::BigNumber("-12345678901234567890".into()),
            b"$21\r\n-12345678901234567890\r\n",
            b"(-12345678901234567890\r\n",
        ),
    ];
    for (frame, r2, r3) in cases {
        assert_eq!(enc(&frame, Resp2), r2, "{frame:?} in RESP2");
        assert_eq!(enc(&frame, Resp3), r3, "{frame:?} in RESP3");
    }
}

#[test]
fn encode_request_is_multibulk() {
    let mut out = BytesMut::new();
    encode_request(&[b"GET", b"", b"a\r\n"], &mut out);
    assert_eq!(&out[..], b"*3\r\n$3\r\nGET\r\n$0\r\n\r\n$3\r\na\r\n\r\n");
    encode_request(&[], &mut out);
    assert!(out.ends_with(b"*0\r\n"));
}

#[test]
fn doubles_format_like_redis_7_2() {
    let cases: &[(f64, &str)] = &[
        (1.5, "1.5"),
        (3.0, "3"),
        (-2.0, "-2"),
        (0.0, "0"),
        (-0.0, "-0"),
        (f64::INFINITY, "inf"),
        (f64::NEG_INFINITY, "-inf"),
        (f64::NAN, "nan"),
        (0.1, "0.1"),
        (1.1, "1.1"),
        (-2.5, "-2.5"),
        (123456.789, "123456.789"),
        (0.0001, "0.0001"),
        (0.00001, "0.00001"),
        (1e-7, "1e-7"),
        (1.5e-7, "1.5e-7"),
        (1.25e-5, "1.25e-5"),
        (1.5e-5, "0.000015"),
        (0.000125, "0.000125"),
        (4e18, "4000000000000000000"),
        (5e18, "5e+18"),
        (1e20, "1e+20"),
        (1.2345678901234568e21, "1234567890123456800000"),
        (1.5e20, "1.5e+20"),
        (1e300, "1e+300"),
        (-1.7976931348623157e308, "-1.7976931348623157e+308"),
        (5e-324, "5e-324"),
    ];
    for &(d, want) in cases {
        assert_eq!(format_double(d), want, "{d:e}");
    }
}

#[test]
fn reply_parsing_specifics() {
    let one = |b: &[u8]| parse_reply(b).unwrap().unwrap();
    assert_eq!(one(b"$-1\r\n"), (Frame::Null, 5));
    assert_eq!(one(b"*-1\r\n"), (Frame::NullArray, 5));
    assert_eq!(one(b"_\r\n"), (Frame::Null, 3));
    assert_eq!(one(b"!3\r\nERR\r\n"), (Frame::err("ERR"), 9));
    assert_eq!(one(b"|1\r\n+key\r\n+val\r\n:7\r\n"), (Frame::Integer(7), 20), "attributes are skipped");
    assert_eq!(one(b",1e+20\r\n").0, Frame::Double(1e20));
    assert_eq!(parse_reply(b"$3\r\nfo").unwrap(), None);
    assert_eq!(parse_reply(b"$3\r\nfooX").unwrap_err(), ProtocolError::BulkNotTerminated);
    assert_eq!(parse_reply(b"$?\r\n").unwrap_err(), ProtocolError::InvalidReply("streamed types are not supported"));
    assert_eq!(parse_reply(b"@\r\n").unwrap_err(), ProtocolError::InvalidReply("unknown type byte"));
    assert_eq!(parse_reply(b"#x\r\n").unwrap_err(), ProtocolError::InvalidReply("invalid boolean"));
    assert_eq!(
        parse_reply(b"=2\r\nab\r\n").unwrap_err(),
        ProtocolError::InvalidReply("verbatim string without a format")
    );
    assert_eq!(parse_reply(b"*-2\r\n").unwrap_err(), ProtocolError::InvalidReply("invalid length"));
    assert_eq!(parse_reply(b":1\rx").unwrap_err(), ProtocolError::InvalidReply("CR not followed by LF"));
}

#[test]
fn reply_nesting_is_bounded() {
    let deep = b"*1\r\n".repeat(MAX_REPLY_DEPTH + 1);
    assert_eq!(
        parse_reply(&[&deep[..], b":1\r\n"].concat()).unwrap_err(),
        ProtocolError::InvalidReply("nesting too deep")
    );
    let ok = [&b"*1\r\n".repeat(MAX_REPLY_DEPTH)[..], b":1\r\n"].concat();
    assert_eq!(parse_reply(&ok).unwrap().unwrap().1, ok.len());
    // A long chain of attributes must not recurse.
    let attrs = [&b"|0\r\n".repeat(200_000)[..], b":1\r\n"].concat();
    assert_eq!(parse_reply(&attrs).unwrap().unwrap(), (Frame::Integer(1), attrs.len()));
}
