//! Server-side request parsing: multibulk (`*<n>\r\n$<len>\r\n<bytes>\r\n…`) and inline
//! (`word word "quoted word"\r\n`), following Redis 7's `processMultibulkBuffer`,
//! `processInlineBuffer` and `sdssplitargs`.
//!
//! The parser is stateless: each call starts at the beginning of the buffer, so a request that
//! arrives in many pieces is rescanned (headers only; payloads are skipped by length).

use bytes::{Bytes, BytesMut};

use crate::ProtocolError;

/// Size limits for one request. The defaults are Redis 7's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest accepted `$<len>` (Redis `proto-max-bulk-len`, 512 MiB).
    pub max_bulk_len: usize,
    /// Largest accepted `*<n>` (1024 * 1024).
    pub max_args: usize,
    /// Longest inline request line, and longest `*`/`$` count line (Redis
    /// `PROTO_INLINE_MAX_SIZE`, 64 KiB).
    pub max_inline_len: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { max_bulk_len: 512 * 1024 * 1024, max_args: 1024 * 1024, max_inline_len: 64 * 1024 }
    }
}

/// One parsed argument: a range of the input buffer, or bytes built by the inline unquoter.
enum Arg {
    Range(usize, usize),
    Owned(Vec<u8>),
}

/// Parses one request from the start of `buf`, copying each argument into its own [`Bytes`].
///
/// Returns `Ok(Some((args, consumed)))` for a complete request, `Ok(None)` when more bytes are
/// needed (every strict prefix of a valid request gives `Ok(None)`), or the protocol error the
/// server must reply with before closing the connection. An empty inline line, `*0` and `*-1`
/// are empty commands: `args` is empty and the server should skip them.
pub fn parse_request(buf: &[u8], limits: &Limits) -> Result<Option<(Vec<Bytes>, usize)>, ProtocolError> {
    let Some((args, consumed)) = parse(buf, limits)? else {
        return Ok(None);
    };
    let args = args
        .into_iter()
        .map(|arg| match arg {
            Arg::Range(start, end) => Bytes::copy_from_slice(&buf[start..end]),
            Arg::Owned(v) => Bytes::from(v),
        })
        .collect();
    Ok(Some((args, consumed)))
}

/// Like [`parse_request`], but on success splits the consumed bytes off the front of `buf` and
/// returns multibulk arguments as slices of them, without copying (inline arguments are always
/// fresh allocations). On `Ok(None)` or an error `buf` is left untouched.
///
/// The slices keep the whole split-off region alive: copy an argument
/// (`Bytes::copy_from_slice`) before storing it for long, or a 3-byte value may pin a
/// multi-kilobyte read buffer.
pub fn parse_request_split(buf: &mut BytesMut, limits: &Limits) -> Result<Option<Vec<Bytes>>, ProtocolError> {
    let Some((args, consumed)) = parse(buf, limits)? else {
        return Ok(None);
    };
    let frozen = buf.split_to(consumed).freeze();
    let args = args
        .into_iter()
        .map(|arg| match arg {
            Arg::Range(start, end) => frozen.slice(start..end),
            Arg::Owned(v) => Bytes::from(v),
        })
        .collect();
    Ok(Some(args))
}

type Parsed = Option<(Vec<Arg>, usize)>;

fn parse(buf: &[u8], limits: &Limits) -> Result<Parsed, ProtocolError> {
    match buf.first() {
        None => Ok(None),
        Some(b'*') => parse_multibulk(buf, limits),
        Some(_) => parse_inline(buf, limits),
    }
}

fn parse_multibulk(buf: &[u8], limits: &Limits) -> Result<Parsed, ProtocolError> {
    use ProtocolError::{InvalidBulkLength, InvalidMultibulkLength};

    let Some((line_end, mut pos)) =
        count_line(buf, 0, limits.max_inline_len, ProtocolError::TooBigMbulkCount, InvalidMultibulkLength)?
    else {
        return Ok(None);
    };
    let n = parse_strict_i64(&buf[1..line_end]).ok_or(InvalidMultibulkLength)?;
    if n == 0 || n == -1 {
        return Ok(Some((Vec::new(), pos)));
    }
    let n = usize::try_from(n).map_err(|_| InvalidMultibulkLength)?;
    if n > limits.max_args {
        return Err(InvalidMultibulkLength);
    }

    // Never trust the count for the allocation: the bytes may never arrive.
    let mut args = Vec::with_capacity(n.min(64));
    for _ in 0..n {
        let Some(&first) = buf.get(pos) else {
            return Ok(None);
        };
        if first != b'$' {
            return Err(ProtocolError::ExpectedDollar(first));
        }
        let Some((line_end, start)) =
            count_line(buf, pos, limits.max_inline_len, ProtocolError::TooBigBulkCount, InvalidBulkLength)?
        else {
            return Ok(None);
        };
        let len = parse_strict_i64(&buf[pos + 1..line_end]).ok_or(InvalidBulkLength)?;
        let len = usize::try_from(len).map_err(|_| InvalidBulkLength)?;
        if len > limits.max_bulk_len {
            return Err(InvalidBulkLength);
        }
        let end = start.checked_add(len).ok_or(InvalidBulkLength)?;
        match check_crlf(buf, end) {
            Some(true) => {}
            Some(false) => return Err(ProtocolError::BulkNotTerminated),
            None => return Ok(None),
        }
        args.push(Arg::Range(start, end));
        pos = end + 2;
    }
    Ok(Some((args, pos)))
}

/// Whether `buf[at..at + 2]` is CRLF: `None` if those bytes have not all arrived yet and what has
/// arrived is consistent with CRLF.
fn check_crlf(buf: &[u8], at: usize) -> Option<bool> {
    match (buf.get(at), buf.get(at.saturating_add(1))) {
        (Some(b'\r'), Some(b'\n')) => Some(true),
        (Some(b'\r'), None) | (None, _) => None,
        _ => Some(false),
    }
}

/// Finds the CRLF ending the count line that starts at `start` (at its `*` or `$`). Returns the
/// index of the CR and the index just past the LF. Like Redis, the line ends at the first CR;
/// unlike Redis, a CR not followed by LF is an error (`bad_line`) rather than skipped.
fn count_line(
    buf: &[u8],
    start: usize,
    max: usize,
    too_big: ProtocolError,
    bad_line: ProtocolError,
) -> Result<Option<(usize, usize)>, ProtocolError> {
    let window_end = buf.len().min(start.saturating_add(max).saturating_add(1));
    match buf[start..window_end].iter().position(|&b| b == b'\r') {
        Some(i) => {
            let cr = start + i;
            match buf.get(cr + 1) {
                None => Ok(None),
                Some(b'\n') => Ok(Some((cr, cr + 2))),
                Some(_) => Err(bad_line),
            }
        }
        None if buf.len() - start > max => Err(too_big),
        None => Ok(None),
    }
}

/// Redis's `string2ll`: optional `-`, then digits with no leading zero (except `0` itself), no
/// `+`, no spaces, within `i64`.
fn parse_strict_i64(s: &[u8]) -> Option<i64> {
    if s == b"0" {
        return Some(0);
    }
    let (neg, digits) = match s.split_first() {
        Some((b'-', rest)) => (true, rest),
        _ => (false, s),
    };
    match digits.first() {
        Some(b'1'..=b'9') => {}
        _ => return None,
    }
    let mut v: u64 = 0;
    for &d in digits {
        if !d.is_ascii_digit() {
            return None;
        }
        v = v.checked_mul(10)?.checked_add(u64::from(d - b'0'))?;
    }
    if neg { 0i64.checked_sub_unsigned(v) } else { i64::try_from(v).ok() }
}

fn parse_inline(buf: &[u8], limits: &Limits) -> Result<Parsed, ProtocolError> {
    let max = limits.max_inline_len;
    // The line (without its terminator) may hold `max` bytes; allow for a CRLF after it.
    let window = &buf[..buf.len().min(max.saturating_add(2))];
    let Some(nl) = window.iter().position(|&b| b == b'\n') else {
        // Too big once the line can no longer end within the limit: more than `max` bytes
        // without a newline, unless the byte just past the limit is a CR.
        let too_big = buf.len() > max.saturating_add(1) || (buf.len() == max.saturating_add(1) && buf[max] != b'\r');
        return if too_big { Err(ProtocolError::TooBigInlineRequest) } else { Ok(None) };
    };
    let mut end = nl;
    if end > 0 && buf[end - 1] == b'\r' {
        end -= 1;
    }
    if end > max {
        return Err(ProtocolError::TooBigInlineRequest);
    }
    let mut line = &buf[..end];
    // Redis hands the line to sdssplitargs as a C string: a NUL byte ends it.
    if let Some(nul) = line.iter().position(|&b| b == 0) {
        line = &line[..nul];
    }
    let args = split_args(line).ok_or(ProtocolError::UnbalancedQuotes)?;
    Ok(Some((args.into_iter().map(Arg::Owned).collect(), nl + 1)))
}

/// C `isspace` in the "C" locale.
fn is_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | 0x0b | 0x0c | b'\r')
}

fn hex_val(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

/// Redis's `sdssplitargs` over a line without NUL bytes; `None` on unbalanced quotes.
///
/// Words are separated by spaces; `"…"` understands `\n \r \t \b \a \xHH` and `\<any>`, `'…'`
/// only `\'`; a closing quote must be followed by whitespace or the end of the line. Quotes may
/// start mid-word (`a"b c"` is `ab c`), as in Redis.
fn split_args(line: &[u8]) -> Option<Vec<Vec<u8>>> {
    // Reading past the end gives 0, the C string terminator.
    let at = |i: usize| line.get(i).copied().unwrap_or(0);
    let mut args = Vec::new();
    let mut p = 0;
    loop {
        while at(p) != 0 && is_space(at(p)) {
            p += 1;
        }
        if at(p) == 0 {
            return Some(args);
        }
        let (mut in_dq, mut in_sq) = (false, false);
        let mut cur = Vec::new();
        loop {
            let c = at(p);
            let mut done = false;
            if in_dq {
                if c == b'\\'
                    && at(p + 1) == b'x'
                    && let (Some(hi), Some(lo)) = (hex_val(at(p + 2)), hex_val(at(p + 3)))
                {
                    cur.push(hi * 16 + lo);
                    p += 3;
                } else if c == b'\\' && at(p + 1) != 0 {
                    p += 1;
                    cur.push(match at(p) {
                        b'n' => b'\n',
                        b'r' => b'\r',
                        b't' => b'\t',
                        b'b' => 0x08,
                        b'a' => 0x07,
                        other => other,
                    });
                } else if c == b'"' {
                    if at(p + 1) != 0 && !is_space(at(p + 1)) {
                        return None;
                    }
                    done = true;
                } else if c == 0 {
                    return None;
                } else {
                    cur.push(c);
                }
            } else if in_sq {
                if c == b'\\' && at(p + 1) == b'\'' {
                    p += 1;
                    cur.push(b'\'');
                } else if c == b'\'' {
                    if at(p + 1) != 0 && !is_space(at(p + 1)) {
                        return None;
                    }
                    done = true;
                } else if c == 0 {
                    return None;
                } else {
                    cur.push(c);
                }
            } else {
                match c {
                    b' ' | b'\n' | b'\r' | b'\t' | 0 => done = true,
                    b'"' => in_dq = true,
                    b'\'' => in_sq = true,
                    _ => cur.push(c),
                }
            }
            if at(p) != 0 {
                p += 1;
            }
            if done {
                break;
            }
        }
        args.push(cur);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(line: &str) -> Option<Vec<String>> {
        split_args(line.as_bytes()).map(|v| v.into_iter().map(|w| String::from_utf8_lossy(&w).into_owned()).collect())
    }

    #[test]
    fn strict_integers_follow_string2ll() {
        assert_eq!(parse_strict_i64(b"0"), Some(0));
        assert_eq!(parse_strict_i64(b"12"), Some(12));
        assert_eq!(parse_strict_i64(b"-1"), Some(-1));
        assert_eq!(parse_strict_i64(b"9223372036854775807"), Some(i64::MAX));
        assert_eq!(parse_strict_i64(b"-9223372036854775808"), Some(i64::MIN));
        for bad in [
            &b""[..],
            b"-",
            b"-0",
            b"01",
            b"+1",
            b" 1",
            b"1 ",
            b"1a",
            b"9223372036854775808",
            b"99999999999999999999999",
        ] {
            assert_eq!(parse_strict_i64(bad), None, "{:?}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn split_args_follows_sdssplitargs() {
        assert_eq!(words("  a  b\tc "), Some(vec!["a".into(), "b".into(), "c".into()]));
        assert_eq!(words(r#"a"b c"d"#), None, "closing quote followed by a non-space");
        assert_eq!(words(r#"a"b c" d"#), Some(vec!["ab c".into(), "d".into()]));
        assert_eq!(words(r#""\n\r\t\b\a\q\"\\""#), Some(vec!["\n\r\t\u{8}\u{7}q\"\\".into()]));
        assert_eq!(words(r#""\x4a\x4B\x4g""#), Some(vec!["JKx4g".into()]));
        assert_eq!(words(r"'it\'s' 'a\nb'"), Some(vec!["it's".into(), "a\\nb".into()]));
        assert_eq!(words(r#""""#), Some(vec![String::new()]));
        assert_eq!(words("''"), Some(vec![String::new()]));
        assert_eq!(words(r#""abc"#), None);
        assert_eq!(words("'abc"), None);
        assert_eq!(words(r#""abc\"#), None);
        assert_eq!(words("'a'b"), None);
        assert_eq!(words("\u{b}a\u{c}"), Some(vec!["a\u{c}".into()]), "\\v and \\f only separate between words");
        assert_eq!(words(""), Some(vec![]));
    }
}
