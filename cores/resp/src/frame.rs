//! Reply frames and their encoding in RESP3 or RESP2.

use bytes::{BufMut, Bytes, BytesMut};

/// A RESP3 value. Encoding it with [`Proto::Resp2`] downgrades the RESP3-only types the way
/// Redis 7 does (see [`encode`]).
#[derive(Debug, Clone, PartialEq)]
pub enum Frame {
    /// `+OK`. CR and LF are written as spaces.
    Simple(String),
    /// `-ERR …`: the text after the `-`, starting with the error code (`ERR`, `WRONGTYPE`, …).
    /// CR and LF are written as spaces.
    Error(String),
    /// `:42`.
    Integer(i64),
    /// `$3\r\nfoo`.
    Bulk(Bytes),
    /// Null bulk string: RESP2 `$-1`, RESP3 `_`.
    Null,
    /// Null array: RESP2 `*-1`, RESP3 `_` (so it parses back as [`Frame::Null`] in RESP3).
    NullArray,
    /// `*<n>`.
    Array(Vec<Frame>),
    /// RESP3 `,1.5`; RESP2 a bulk string. Text from [`format_double`].
    Double(f64),
    /// RESP3 `#t`/`#f`; RESP2 `:1`/`:0`.
    Boolean(bool),
    /// RESP3 `%<n>` (n pairs); RESP2 a flat array `k1 v1 k2 v2 …`.
    Map(Vec<(Frame, Frame)>),
    /// RESP3 `~<n>`; RESP2 an array.
    Set(Vec<Frame>),
    /// RESP3 `=<len>\r\nfmt:text`; RESP2 a bulk string of `text`.
    Verbatim {
        /// The three-byte format, e.g. `*b"txt"` or `*b"mkd"`.
        format: [u8; 3],
        /// The text, without the `fmt:` prefix.
        text: Bytes,
    },
    /// RESP3 `(<digits>`; RESP2 a bulk string. CR and LF are written as spaces.
    BigNumber(String),
    /// RESP3 `><n>` (out-of-band, e.g. pub/sub messages); RESP2 an array.
    Push(Vec<Frame>),
}

impl Frame {
    /// `+OK`.
    pub fn ok() -> Frame {
        Frame::Simple("OK".to_owned())
    }

    /// An error reply; `msg` is the text after the `-`, e.g.
    /// `"ERR wrong number of arguments for 'get' command"`.
    pub fn err(msg: impl Into<String>) -> Frame {
        Frame::Error(msg.into())
    }

    /// A bulk string.
    pub fn bulk(data: impl Into<Bytes>) -> Frame {
        Frame::Bulk(data.into())
    }
}

/// The protocol version a connection speaks (`HELLO 2` / `HELLO 3`); RESP2 is the default.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Proto {
    /// RESP2.
    #[default]
    Resp2,
    /// RESP3.
    Resp3,
}

/// Appends `frame` to `out` in `proto`.
///
/// RESP2 downgrades, as Redis 7: `Null` → `$-1`, `NullArray` → `*-1`, `Double` → bulk string
/// ([`format_double`]), `Boolean` → `:1`/`:0`, `Map` → flat array of keys and values,
/// `Set`/`Push` → array, `Verbatim` → bulk string of the text, `BigNumber` → bulk string.
/// In RESP3 both nulls are `_`.
pub fn encode(frame: &Frame, proto: Proto, out: &mut BytesMut) {
    let resp3 = proto == Proto::Resp3;
    match frame {
        Frame::Simple(s) => put_line(out, b'+', s.as_bytes()),
        Frame::Error(s) => put_line(out, b'-', s.as_bytes()),
        Frame::Integer(i) => {
            out.put_u8(b':');
            put_i64(out, *i);
            out.put_slice(b"\r\n");
        }
        Frame::Bulk(b) => put_bulk(out, b),
        Frame::Null if resp3 => out.put_slice(b"_\r\n"),
        Frame::Null => out.put_slice(b"$-1\r\n"),
        Frame::NullArray if resp3 => out.put_slice(b"_\r\n"),
        Frame::NullArray => out.put_slice(b"*-1\r\n"),
        Frame::Array(items) => put_aggregate(out, b'*', items, proto),
        Frame::Double(d) if resp3 => put_line(out, b',', format_double(*d).as_bytes()),
        Frame::Double(d) => put_bulk(out, format_double(*d).as_bytes()),
        Frame::Boolean(b) if resp3 => out.put_slice(if *b { b"#t\r\n" } else { b"#f\r\n" }),
        Frame::Boolean(b) => out.put_slice(if *b { b":1\r\n" } else { b":0\r\n" }),
        Frame::Map(pairs) => {
            if resp3 {
                put_header(out, b'%', pairs.len());
            } else {
                put_header(out, b'*', pairs.len() * 2);
            }
            for (k, v) in pairs {
                encode(k, proto, out);
                encode(v, proto, out);
            }
        }
        Frame::Set(items) => put_aggregate(out, if resp3 { b'~' } else { b'*' }, items, proto),
        Frame::Push(items) => put_aggregate(out, if resp3 { b'>' } else { b'*' }, items, proto),
        Frame::Verbatim { format, text } if resp3 => {
            put_header(out, b'=', text.len() + 4);
            out.put_slice(format);
            out.put_u8(b':');
            out.put_slice(text);
            out.put_slice(b"\r\n");
        }
        Frame::Verbatim { text, .. } => put_bulk(out, text),
        Frame::BigNumber(s) if resp3 => put_line(out, b'(', s.as_bytes()),
        Frame::BigNumber(s) => put_bulk(out, sanitize(s.as_bytes()).as_ref()),
    }
}

/// Appends a request (`*<n>` then one bulk string per argument), as clients send it.
pub fn encode_request(args: &[&[u8]], out: &mut BytesMut) {
    put_header(out, b'*', args.len());
    for arg in args {
        put_bulk(out, arg);
    }
}

/// Formats a double the way Redis 7.2+ replies with it (`d2string`, both RESP2 bulk and RESP3
/// `,`): `inf`, `-inf`, `nan`, `0`/`-0`; integral values within ±2^62 as integers (`3`, not
/// `3.0`); otherwise the shortest digits that round-trip (Rust's float printing; Redis uses
/// Grisu2, which can rarely give one more digit), laid out like Redis's `fpconv_dtoa`: plain
/// decimals for exponents from -7 to about +20 (`0.1`, `0.00001`, `123.5`,
/// `1234567890123456800000`), scientific otherwise (`1e-7`, `1.5e+20`, `1e+300`).
///
/// Redis 7.0/7.1 sent `%.17g` (`1.1000000000000001`); clients parse both the same.
pub fn format_double(d: f64) -> String {
    if d.is_nan() {
        return "nan".to_owned();
    }
    if d.is_infinite() {
        return if d > 0.0 { "inf" } else { "-inf" }.to_owned();
    }
    if d == 0.0 {
        return if d.is_sign_negative() { "-0" } else { "0" }.to_owned();
    }
    // Redis's double2ll: integral and within ±LLONG_MAX/2.
    const LIMIT: f64 = (i64::MAX / 2) as f64;
    if (-LIMIT..=LIMIT).contains(&d) && d.fract() == 0.0 {
        return (d as i64).to_string();
    }

    // `{:e}` gives the shortest round-trip digits as `d[.ddd]e[-]x`.
    let sci = format!("{:e}", d.abs());
    let (mantissa, exponent) = sci.split_once('e').unwrap_or((&sci, "0"));
    let e: i32 = exponent.parse().unwrap_or(0);
    let digits: Vec<u8> = mantissa.bytes().filter(|b| b.is_ascii_digit()).collect();
    let nd = digits.len() as i32;
    // value = digits * 10^k
    let k = e - (nd - 1);
    let abs_e = e.abs();

    let mut s = String::with_capacity(24);
    if d < 0.0 {
        s.push('-');
    }
    let push = |s: &mut String, bytes: &[u8]| s.extend(bytes.iter().map(|&b| char::from(b)));
    if k >= 0 && abs_e < nd + 7 {
        push(&mut s, &digits);
        s.extend(std::iter::repeat_n('0', k as usize));
    } else if k < 0 && (k > -7 || abs_e < 4) {
        let offset = nd + k;
        if offset <= 0 {
            s.push_str("0.");
            s.extend(std::iter::repeat_n('0', (-offset) as usize));
            push(&mut s, &digits);
        } else {
            let (int, frac) = digits.split_at(offset as usize);
            push(&mut s, int);
            s.push('.');
            push(&mut s, frac);
        }
    } else {
        push(&mut s, &digits[..1]);
        if nd > 1 {
            s.push('.');
            push(&mut s, &digits[1..]);
        }
        s.push('e');
        s.push(if e < 0 { '-' } else { '+' });
        s.push_str(&abs_e.to_string());
    }
    s
}

fn put_aggregate(out: &mut BytesMut, tag: u8, items: &[Frame], proto: Proto) {
    put_header(out, tag, items.len());
    for item in items {
        encode(item, proto, out);
    }
}

fn put_header(out: &mut BytesMut, tag: u8, len: usize) {
    out.put_u8(tag);
    put_u64(out, len as u64);
    out.put_slice(b"\r\n");
}

/// Appends one bulk string (`$<len>\r\n<data>\r\n`, the same in RESP2 and RESP3): what
/// [`encode`] writes for `Frame::Bulk(data)`, without making the frame (and its copy) first.
pub fn encode_bulk(data: &[u8], out: &mut BytesMut) {
    put_bulk(out, data)
}

fn put_bulk(out: &mut BytesMut, data: &[u8]) {
    out.reserve(data.len() + 16);
    put_header(out, b'$', data.len());
    out.put_slice(data);
    out.put_slice(b"\r\n");
}

/// A one-line frame; CR and LF in `text` become spaces so the frame cannot break the stream.
fn put_line(out: &mut BytesMut, tag: u8, text: &[u8]) {
    out.reserve(text.len() + 3);
    out.put_u8(tag);
    out.put_slice(sanitize(text).as_ref());
    out.put_slice(b"\r\n");
}

fn sanitize(text: &[u8]) -> std::borrow::Cow<'_, [u8]> {
    if text.iter().any(|&b| b == b'\r' || b == b'\n') {
        text.iter().map(|&b| if b == b'\r' || b == b'\n' { b' ' } else { b }).collect::<Vec<u8>>().into()
    } else {
        text.into()
    }
}

fn put_u64(out: &mut BytesMut, mut n: u64) {
    let mut buf = [0u8; 20];
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.put_slice(&buf[i..]);
}

fn put_i64(out: &mut BytesMut, n: i64) {
    if n < 0 {
        out.put_u8(b'-');
    }
    put_u64(out, n.unsigned_abs());
}
