//! The codec's error type.

/// A malformed request or reply. After any of these the stream is out of sync: the server sends
/// `-{self}\r\n` (the `Display` text is Redis 7's reply, without the leading `-`) and closes the
/// connection.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProtocolError {
    /// `*<n>` is not a number, is negative other than `-1`, or exceeds `Limits::max_args`.
    #[error("ERR Protocol error: invalid multibulk length")]
    InvalidMultibulkLength,
    /// `$<len>` is not a number, is negative, or exceeds `Limits::max_bulk_len`.
    #[error("ERR Protocol error: invalid bulk length")]
    InvalidBulkLength,
    /// An argument of a multibulk request does not start with `$`; holds the byte found.
    #[error("ERR Protocol error: expected '$', got '{}'", printable(*.0))]
    ExpectedDollar(u8),
    /// An inline request line longer than `Limits::max_inline_len`.
    #[error("ERR Protocol error: too big inline request")]
    TooBigInlineRequest,
    /// A `*<n>` line longer than `Limits::max_inline_len` without its CR.
    #[error("ERR Protocol error: too big mbulk count string")]
    TooBigMbulkCount,
    /// A `$<len>` line longer than `Limits::max_inline_len` without its CR.
    #[error("ERR Protocol error: too big bulk count string")]
    TooBigBulkCount,
    /// An inline request with an unterminated quote, or a closing quote followed by a non-space.
    #[error("ERR Protocol error: unbalanced quotes in request")]
    UnbalancedQuotes,
    /// A bulk payload (request or reply) not followed by CRLF. (Redis skips those two bytes
    /// unchecked; we reject them.)
    #[error("ERR Protocol error: expected CRLF after bulk data")]
    BulkNotTerminated,
    /// A malformed reply (client side only); the text says what was wrong.
    #[error("ERR Protocol error: invalid reply: {0}")]
    InvalidReply(&'static str),
}

/// The byte as Redis's `%c` would show it, except that CR and LF become spaces, as Redis's
/// `addReplyErrorFormat` does, so the reply stays one line. Bytes >= 0x80 map to U+0080..U+00FF.
fn printable(b: u8) -> char {
    match b {
        b'\r' | b'\n' => ' ',
        _ => char::from(b),
    }
}
