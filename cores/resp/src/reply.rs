//! Client-side reply parsing (RESP2 and RESP3), for tests and benchmarks.

use bytes::Bytes;

use crate::{Frame, ProtocolError};

/// Deepest nesting of aggregates [`parse_reply`] accepts; deeper input is an error rather than a
/// stack overflow.
pub const MAX_REPLY_DEPTH: usize = 512;

/// Parses one reply from the start of `buf`: `Ok(Some((frame, consumed)))`, `Ok(None)` when
/// more bytes are needed (every strict prefix of a valid reply gives `Ok(None)`), or an error.
///
/// Accepts every RESP2 and RESP3 type. Mappings onto [`Frame`]: `$-1` → `Null`, `*-1` →
/// `NullArray`, `_` → `Null`, blob errors (`!`) → `Error`; attributes (`|`) are parsed and
/// dropped, the frame after them is returned. Simple strings, errors and big numbers are decoded
/// as UTF-8 lossily. Streamed strings and aggregates (`$?`, `*?`) are rejected. Nesting deeper
/// than [`MAX_REPLY_DEPTH`] is rejected.
pub fn parse_reply(buf: &[u8]) -> Result<Option<(Frame, usize)>, ProtocolError> {
    let mut cursor = Cursor { buf, pos: 0 };
    Ok(cursor.frame()?.map(|frame| (frame, cursor.pos)))
}

use ProtocolError::InvalidReply;

struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

/// Unwraps an `Ok(Option)`, returning `Ok(None)` from the caller when more bytes are needed.
macro_rules! need {
    ($e:expr) => {
        match $e? {
            Some(v) => v,
            None => return Ok(None),
        }
    };
}

impl<'a> Cursor<'a> {
    /// The rest of the current line, up to its CRLF, consumed.
    fn line(&mut self) -> Result<Option<&'a [u8]>, ProtocolError> {
        let rest = &self.buf[self.pos..];
        let Some(cr) = rest.iter().position(|&b| b == b'\r') else {
            return Ok(None);
        };
        match rest.get(cr + 1) {
            None => Ok(None),
            Some(b'\n') => {
                self.pos += cr + 2;
                Ok(Some(&rest[..cr]))
            }
            Some(_) => Err(InvalidReply("CR not followed by LF")),
        }
    }

    /// A length-prefixed payload of `len` bytes plus its CRLF, consumed.
    fn blob(&mut self, len: usize) -> Result<Option<&'a [u8]>, ProtocolError> {
        let start = self.pos;
        let end = start.checked_add(len).ok_or(InvalidReply("length too large"))?;
        match (self.buf.get(end), self.buf.get(end.saturating_add(1))) {
            (Some(b'\r'), Some(b'\n')) => {
                self.pos = end + 2;
                Ok(Some(&self.buf[start..end]))
            }
            (Some(b'\r'), None) | (None, _) => Ok(None),
            _ => Err(ProtocolError::BulkNotTerminated),
        }
    }

    /// One complete frame. Iterative: aggregates waiting for children live on an explicit
    /// stack, so hostile nesting costs heap (bounded by [`MAX_REPLY_DEPTH`]), not call stack.
    fn frame(&mut self) -> Result<Option<Frame>, ProtocolError> {
        let mut stack: Vec<Pending> = Vec::new();
        loop {
            let Some(&tag) = self.buf.get(self.pos) else {
                return Ok(None);
            };
            if !b"+-:$*_,#!=(%~>|".contains(&tag) {
                return Err(InvalidReply("unknown type byte"));
            }
            self.pos += 1;
            let line = need!(self.line());
            let mut value = match tag {
                b'+' => Frame::Simple(lossy(line)),
                b'-' => Frame::Error(lossy(line)),
                b':' => Frame::Integer(int(line)?),
                b'$' => match length(line)? {
                    None => Frame::Null,
                    Some(len) => Frame::Bulk(Bytes::copy_from_slice(need!(self.blob(len)))),
                },
                b'!' => {
                    let len = length(line)?.ok_or(InvalidReply("null blob error"))?;
                    Frame::Error(lossy(need!(self.blob(len))))
                }
                b'=' => {
                    let len = length(line)?.ok_or(InvalidReply("null verbatim string"))?;
                    match need!(self.blob(len)) {
                        [a, b, c, b':', text @ ..] => {
                            Frame::Verbatim { format: [*a, *b, *c], text: Bytes::copy_from_slice(text) }
                        }
                        _ => return Err(InvalidReply("verbatim string without a format")),
                    }
                }
                b'*' | b'~' | b'>' | b'%' | b'|' => {
                    let kind = match tag {
                        b'*' => Kind::Array,
                        b'~' => Kind::Set,
                        b'>' => Kind::Push,
                        b'%' => Kind::Map,
                        _ => Kind::Attribute,
                    };
                    match length(line)? {
                        None if kind == Kind::Array => Frame::NullArray,
                        None => return Err(InvalidReply("null aggregate other than an array")),
                        Some(n) => {
                            let children = if matches!(kind, Kind::Map | Kind::Attribute) {
                                n.checked_mul(2).ok_or(InvalidReply("invalid length"))?
                            } else {
                                n
                            };
                            if children > 0 {
                                if stack.len() >= MAX_REPLY_DEPTH {
                                    return Err(InvalidReply("nesting too deep"));
                                }
                                // Each child takes at least 3 bytes: cap the allocation by what
                                // could be in the buffer, never by the announced count.
                                let cap = children.min((self.buf.len() - self.pos) / 3);
                                stack.push(Pending { kind, remaining: children, items: Vec::with_capacity(cap) });
                                continue;
                            }
                            match kind.finish(Vec::new()) {
                                Some(empty) => empty,
                                None => continue, // an empty attribute: read the frame it annotates
                            }
                        }
                    }
                }
                b'_' if line.is_empty() => Frame::Null,
                b'_' => return Err(InvalidReply("null with a payload")),
                b',' => Frame::Double(double(line)?),
                b'#' => match line {
                    b"t" => Frame::Boolean(true),
                    b"f" => Frame::Boolean(false),
                    _ => return Err(InvalidReply("invalid boolean")),
                },
                b'(' => Frame::BigNumber(big_number(line)?),
                _ => return Err(InvalidReply("unknown type byte")),
            };
            // Hand the finished value to its parent, closing every aggregate it completes.
            loop {
                let Some(top) = stack.last_mut() else {
                    return Ok(Some(value));
                };
                top.items.push(value);
                top.remaining -= 1;
                if top.remaining > 0 {
                    break;
                }
                let Some(done) = stack.pop() else {
                    unreachable!("the stack has a top");
                };
                match done.kind.finish(done.items) {
                    Some(frame) => value = frame,
                    None => break, // an attribute: the next frame takes its place
                }
            }
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Array,
    Set,
    Push,
    Map,
    Attribute,
}

impl Kind {
    /// The aggregate built from its children; `None` for an attribute, which is dropped.
    fn finish(self, items: Vec<Frame>) -> Option<Frame> {
        Some(match self {
            Kind::Array => Frame::Array(items),
            Kind::Set => Frame::Set(items),
            Kind::Push => Frame::Push(items),
            Kind::Map => {
                let mut pairs = Vec::with_capacity(items.len() / 2);
                let mut it = items.into_iter();
                while let (Some(k), Some(v)) = (it.next(), it.next()) {
                    pairs.push((k, v));
                }
                Frame::Map(pairs)
            }
            Kind::Attribute => return None,
        })
    }
}

/// An aggregate still waiting for `remaining` children (maps and attributes count keys and
/// values separately).
struct Pending {
    kind: Kind,
    remaining: usize,
    items: Vec<Frame>,
}

fn lossy(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn int(line: &[u8]) -> Result<i64, ProtocolError> {
    std::str::from_utf8(line).ok().and_then(|s| s.parse().ok()).ok_or(InvalidReply("invalid integer"))
}

/// A length: `None` for `-1`; `?` (streamed) and other negatives are errors.
fn length(line: &[u8]) -> Result<Option<usize>, ProtocolError> {
    if line == b"?" {
        return Err(InvalidReply("streamed types are not supported"));
    }
    match int(line).map_err(|_| InvalidReply("invalid length"))? {
        -1 => Ok(None),
        n => usize::try_from(n).map(Some).map_err(|_| InvalidReply("invalid length")),
    }
}

fn double(line: &[u8]) -> Result<f64, ProtocolError> {
    // Rust's parser takes `inf`, `-inf`, `nan`, `1.5`, `1e+20`, `-0`.
    std::str::from_utf8(line).ok().and_then(|s| s.parse().ok()).ok_or(InvalidReply("invalid double"))
}

fn big_number(line: &[u8]) -> Result<String, ProtocolError> {
    let digits = line.strip_prefix(b"-").unwrap_or(line);
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return Err(InvalidReply("invalid big number"));
    }
    Ok(lossy(line))
}
