//! Property tests: request round trips, prefixes, pipelining, frame round trips in RESP3 and
//! RESP2, and fuzzing (random bytes plus a deterministic mutation loop) for panics.

use basalt_resp::{
    Frame, Limits, Proto, encode, encode_request, format_double, parse_reply, parse_request, parse_request_split,
};
use bytes::{Bytes, BytesMut};
use proptest::collection::vec;
use proptest::prelude::*;

fn encoded(args: &[Vec<u8>]) -> Vec<u8> {
    let refs: Vec<&[u8]> = args.iter().map(Vec::as_slice).collect();
    let mut out = BytesMut::new();
    encode_request(&refs, &mut out);
    out.to_vec()
}

/// Arguments biased towards the awkward: empty, CR/LF, `$`/`*`, binary.
fn arg() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        vec(any::<u8>(), 0..40),
        vec(prop::sample::select(vec![b'\r', b'\n', b'$', b'*', b'0', b'-', b' ', 0u8]), 0..12),
        Just(Vec::new()),
    ]
}

fn args() -> impl Strategy<Value = Vec<Vec<u8>>> {
    vec(arg(), 1..8)
}

fn leaf() -> impl Strategy<Value = Frame> {
    prop_oneof![
        "[^\r\n]{0,12}".prop_map(Frame::Simple),
        "[^\r\n]{0,12}".prop_map(Frame::Error),
        any::<i64>().prop_map(Frame::Integer),
        vec(any::<u8>(), 0..24).prop_map(|v| Frame::Bulk(v.into())),
        Just(Frame::Null),
        Just(Frame::NullArray),
        any::<f64>().prop_map(Frame::Double),
        prop_oneof![Just(f64::NAN), Just(f64::INFINITY), Just(-0.0), Just(1e300), Just(5e-324), Just(0.1)]
            .prop_map(Frame::Double),
        any::<bool>().prop_map(Frame::Boolean),
        (any::<[u8; 3]>(), vec(any::<u8>(), 0..16))
            .prop_map(|(format, text)| Frame::Verbatim { format, text: text.into() }),
        "-?[1-9][0-9]{0,40}".prop_map(Frame::BigNumber),
    ]
}

fn frame() -> impl Strategy<Value = Frame> {
    leaf().prop_recursive(4, 48, 5, |inner| {
        prop_oneof![
            vec(inner.clone(), 0..5).prop_map(Frame::Array),
            vec((inner.clone(), inner.clone()), 0..4).prop_map(Frame::Map),
            vec(inner.clone(), 0..5).prop_map(Frame::Set),
            vec(inner, 0..5).prop_map(Frame::Push),
        ]
    })
}

fn enc(frame: &Frame, proto: Proto) -> Vec<u8> {
    let mut out = BytesMut::new();
    encode(frame, proto, &mut out);
    out.to_vec()
}

/// What a RESP3 round trip should give: both nulls are `_`.
fn resp3_view(f: &Frame) -> Frame {
    match f {
        Frame::NullArray => Frame::Null,
        Frame::Array(v) => Frame::Array(v.iter().map(resp3_view).collect()),
        Frame::Set(v) => Frame::Set(v.iter().map(resp3_view).collect()),
        Frame::Push(v) => Frame::Push(v.iter().map(resp3_view).collect()),
        Frame::Map(v) => Frame::Map(v.iter().map(|(k, v)| (resp3_view(k), resp3_view(v))).collect()),
        other => other.clone(),
    }
}

/// The documented RESP2 downgrade, written out independently of the encoder.
fn resp2_view(f: &Frame) -> Frame {
    match f {
        Frame::Double(d) => Frame::Bulk(format_double(*d).into()),
        Frame::Boolean(b) => Frame::Integer(i64::from(*b)),
        Frame::Map(v) => Frame::Array(v.iter().flat_map(|(k, v)| [resp2_view(k), resp2_view(v)]).collect()),
        Frame::Array(v) | Frame::Set(v) | Frame::Push(v) => Frame::Array(v.iter().map(resp2_view).collect()),
        Frame::Verbatim { text, .. } => Frame::Bulk(text.clone()),
        Frame::BigNumber(s) => Frame::Bulk(Bytes::from(s.clone())),
        other => other.clone(),
    }
}

/// Structural equality with doubles compared bitwise, NaN equal to any NaN.
fn same(a: &Frame, b: &Frame) -> bool {
    let all = |x: &[Frame], y: &[Frame]| x.len() == y.len() && x.iter().zip(y).all(|(p, q)| same(p, q));
    match (a, b) {
        (Frame::Double(x), Frame::Double(y)) => (x.is_nan() && y.is_nan()) || x.to_bits() == y.to_bits(),
        (Frame::Array(x), Frame::Array(y)) | (Frame::Set(x), Frame::Set(y)) | (Frame::Push(x), Frame::Push(y)) => {
            all(x, y)
        }
        (Frame::Map(x), Frame::Map(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|((k1, v1), (k2, v2))| same(k1, k2) && same(v1, v2))
        }
        _ => a == b,
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 192, failure_persistence: None, ..ProptestConfig::default() })]

    /// (a) encode_request then parse_request gives back the arguments and consumes everything,
    /// through both the copying and the splitting entry points.
    #[test]
    fn request_round_trip(args in args()) {
        let buf = encoded(&args);
        let (got, used) = parse_request(&buf, &Limits::default()).unwrap().unwrap();
        prop_assert_eq!(used, buf.len());
        prop_assert_eq!(&got, &args);
        let mut bm = BytesMut::from(&buf[..]);
        let split = parse_request_split(&mut bm, &Limits::default()).unwrap().unwrap();
        prop_assert_eq!(&split, &args);
        prop_assert!(bm.is_empty());
    }

    /// (b) every strict prefix of an encoded request needs more bytes.
    #[test]
    fn request_prefixes_need_more(args in args()) {
        let buf = encoded(&args);
        for n in 0..buf.len() {
            prop_assert_eq!(parse_request(&buf[..n], &Limits::default()), Ok(None), "prefix {}", n);
        }
    }

    /// (c) two pipelined requests parse one after the other.
    #[test]
    fn pipelined_requests(a in args(), b in args(), tail in vec(any::<u8>(), 0..3)) {
        let (ea, eb) = (encoded(&a), encoded(&b));
        let buf = [&ea[..], &eb[..], &b"*"[..], &tail[..]].concat();
        let limits = Limits::default();
        let (first, used) = parse_request(&buf, &limits).unwrap().unwrap();
        prop_assert_eq!(&first, &a);
        prop_assert_eq!(used, ea.len());
        let (second, used2) = parse_request(&buf[used..], &limits).unwrap().unwrap();
        prop_assert_eq!(&second, &b);
        prop_assert_eq!(used2, eb.len());

        let mut bm = BytesMut::from(&buf[..]);
        prop_assert_eq!(parse_request_split(&mut bm, &limits).unwrap().unwrap(), a);
        prop_assert_eq!(parse_request_split(&mut bm, &limits).unwrap().unwrap(), b);
        prop_assert_eq!(&bm[..], &[&b"*"[..], &tail[..]].concat()[..]);
    }

    /// (e) RESP3 encoding round-trips through parse_reply (NullArray comes back as Null), and
    /// every strict prefix needs more bytes.
    #[test]
    fn resp3_round_trip(f in frame()) {
        let buf = enc(&f, Proto::Resp3);
        let (got, used) = parse_reply(&buf).unwrap().unwrap();
        prop_assert_eq!(used, buf.len());
        prop_assert!(same(&got, &resp3_view(&f)), "sent {:?}, got {:?}", f, got);
        for n in 0..buf.len() {
            prop_assert_eq!(parse_reply(&buf[..n]), Ok(None), "prefix {}", n);
        }
    }

    /// (f) RESP2 encoding parses back as the documented downgrade.
    #[test]
    fn resp2_downgrade(f in frame()) {
        let buf = enc(&f, Proto::Resp2);
        let (got, used) = parse_reply(&buf).unwrap().unwrap();
        prop_assert_eq!(used, buf.len());
        let want = resp2_view(&f);
        prop_assert!(same(&got, &want), "sent {:?}, want {:?}, got {:?}", f, want, got);
    }

    /// format_double is what clients will parse back: it must round-trip every double.
    #[test]
    fn format_double_round_trips(bits in any::<u64>()) {
        let d = f64::from_bits(bits);
        let s = format_double(d);
        let back: f64 = s.parse().unwrap();
        prop_assert!((d.is_nan() && back.is_nan()) || back.to_bits() == d.to_bits(), "{:e} -> {} -> {:e}", d, s, back);
    }

    /// (d) arbitrary bytes never panic, and results are self-consistent.
    #[test]
    fn arbitrary_bytes_never_panic(buf in vec(any::<u8>(), 0..200)) {
        check_request_invariants(&buf);
        check_reply_invariants(&buf);
    }

    /// (d) the same, from RESP-shaped token soup that gets deeper into the parsers.
    #[test]
    fn token_soup_never_panics(tokens in vec(prop::sample::select(TOKENS.to_vec()), 0..40)) {
        let buf = tokens.concat();
        check_request_invariants(&buf);
        check_reply_invariants(&buf);
    }
}

const TOKENS: &[&[u8]] = &[
    b"*", b"$", b"+", b"-", b":", b"_", b",", b"#", b"!", b"=", b"(", b"%", b"~", b">", b"|", b"\r\n", b"\r", b"\n",
    b"0", b"1", b"2", b"3", b"-1", b"-2", b"?", b"t", b"inf", b"1.5", b"txt:", b"\"", b"'", b"\\x4", b" ", b"\0",
];

/// No panic; a complete result consumed 1..=len bytes; appending bytes does not change it; the
/// split entry point agrees.
fn check_request_invariants(buf: &[u8]) {
    let limits = Limits::default();
    let res = parse_request(buf, &limits);
    if let Ok(Some((args, used))) = &res {
        assert!(*used >= 1 && *used <= buf.len(), "consumed {used} of {}", buf.len());
        let longer = [buf, b"*1\r\n\n"].concat();
        assert_eq!(parse_request(&longer, &limits), res, "extra bytes changed the result for {buf:?}");
        let mut bm = BytesMut::from(buf);
        assert_eq!(parse_request_split(&mut bm, &limits).unwrap().as_ref(), Some(args));
        assert_eq!(bm.len(), buf.len() - used);
    }
}

fn check_reply_invariants(buf: &[u8]) {
    let res = parse_reply(buf);
    if let Ok(Some((frame, used))) = &res {
        assert!(*used >= 3 && *used <= buf.len(), "consumed {used} of {}", buf.len());
        let longer = [buf, b":1\r\n"].concat();
        match parse_reply(&longer) {
            Ok(Some((again, used2))) => assert!(same(&again, frame) && used2 == *used, "extra bytes changed {buf:?}"),
            other => panic!("extra bytes changed {buf:?}: {other:?}"),
        }
    }
}

/// A small deterministic PRNG (SplitMix64), so the mutation loop is reproducible.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

/// (d) 10k mutations of valid encodings (requests, inline lines, RESP2/RESP3 replies): flip a
/// bit, overwrite, insert or delete a byte, or truncate; the parsers must not panic and must stay
/// self-consistent.
#[test]
fn mutated_encodings_never_panic() {
    let nested = Frame::Array(vec![
        Frame::Map(vec![(Frame::bulk("k"), Frame::Double(1.5)), (Frame::Boolean(true), Frame::Null)]),
        Frame::Set(vec![Frame::Integer(-7), Frame::BigNumber("123".into())]),
        Frame::Push(vec![Frame::Verbatim { format: *b"txt", text: Bytes::from("hello") }, Frame::NullArray]),
        Frame::err("ERR x"),
        Frame::ok(),
    ]);
    let seeds: Vec<Vec<u8>> = vec![
        encoded(&[b"SET".to_vec(), b"key".to_vec(), b"va\r\nlue".to_vec()]),
        encoded(&[b"PING".to_vec()]),
        b"set \"a b\" 'c\\'d' \"\\x41\\n\"\r\n".to_vec(),
        b"*0\r\n*-1\r\n\r\n".to_vec(),
        enc(&nested, Proto::Resp3),
        enc(&nested, Proto::Resp2),
        b"|1\r\n+a\r\n+b\r\n!3\r\nERR\r\n".to_vec(),
    ];
    let mut rng = Rng(0x5EED_0000_BA5A_0017);
    let mut completed = 0;
    for _ in 0..10_000 {
        let mut buf = seeds[rng.below(seeds.len())].clone();
        for _ in 0..1 + rng.below(4) {
            let op = rng.below(5);
            if buf.is_empty() {
                buf.push(rng.next() as u8);
                continue;
            }
            let i = rng.below(buf.len());
            match op {
                0 => buf[i] ^= 1 << rng.below(8),
                1 => buf[i] = rng.next() as u8,
                2 => buf.insert(i, rng.next() as u8),
                3 => {
                    buf.remove(i);
                }
                _ => buf.truncate(i),
            }
        }
        check_request_invariants(&buf);
        check_reply_invariants(&buf);
        if matches!(parse_request(&buf, &Limits::default()), Ok(Some(_))) {
            completed += 1;
        }
    }
    // The loop must exercise the success paths too, not only errors and truncations.
    assert!(completed > 1000, "only {completed} mutants parsed as requests");
}
