//! Turning an ID string from outside back into its fields.
//!
//! Input here is untrusted (it arrives over HTTP), so every function in this module returns
//! an error rather than panicking, on any string, and the error names the problem precisely
//! enough for a human to fix the input.

use crate::{SnowflakeLayout, SnowflakeParts, UlidParts, UuidV7Parts, parse_ulid, parse_uuidv7};
use crate::{ulid_parts, uuidv7_parts};
use std::fmt;
use std::str::FromStr;

/// The longest accepted form: a hyphenated UUID.
const MAX_LEN: usize = 36;
/// How much of an unknown kind name is echoed back in the error.
const ECHO_LIMIT: usize = 64;

/// The kinds of ID this crate issues.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    Snowflake,
    Ulid,
    UuidV7,
}

impl Kind {
    /// The lowercase name accepted by [`FromStr`]: `snowflake`, `ulid` or `uuidv7`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Kind::Snowflake => "snowflake",
            Kind::Ulid => "ulid",
            Kind::UuidV7 => "uuidv7",
        }
    }

    /// The name used in sentences.
    fn display_name(&self) -> &'static str {
        match self {
            Kind::Snowflake => "Snowflake ID",
            Kind::Ulid => "ULID",
            Kind::UuidV7 => "UUIDv7",
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Kind {
    type Err = DecodeError;

    /// Accepts `snowflake`, `ulid` and `uuidv7`, in any ASCII case.
    fn from_str(s: &str) -> Result<Self, DecodeError> {
        [Kind::Snowflake, Kind::Ulid, Kind::UuidV7]
            .into_iter()
            .find(|k| k.as_str().eq_ignore_ascii_case(s))
            .ok_or_else(|| DecodeError::UnknownKind { given: s.chars().take(ECHO_LIMIT).collect() })
    }
}

/// A decoded ID.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decoded {
    Snowflake(SnowflakeParts),
    Ulid(UlidParts),
    UuidV7(UuidV7Parts),
}

/// Why a string is not a valid ID. Positions count characters from 0.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("the ID is empty")]
    Empty,
    #[error("the ID is {len} characters long; no accepted form is longer than {max}")]
    TooLong { len: usize, max: usize },
    #[error(
        "cannot tell what kind of ID this is ({len} characters): expected a Snowflake ID \
         (decimal digits), a ULID (26 Crockford base32 characters) or a UUIDv7 (36 characters: \
         hexadecimal digits in 8-4-4-4-12 groups separated by hyphens)"
    )]
    UnknownForm { len: usize },
    #[error("a {} is {expected} characters long, but this one is {len}", .kind.display_name())]
    WrongLength { kind: Kind, expected: usize, len: usize },
    #[error("unexpected character {found:?} at position {position}: expected {expected}")]
    BadChar { position: usize, found: char, expected: &'static str },
    #[error("the number is too large for a Snowflake ID: it does not fit in 64 bits")]
    SnowflakeOverflow,
    #[error(
        "{id} has its sign bit set: Snowflake IDs are positive 63-bit numbers (at most \
         9223372036854775807)"
    )]
    SignBit { id: u64 },
    #[error("the ULID is larger than 128 bits: its first character must be between 0 and 7")]
    UlidOverflow,
    #[error("the UUID is version {found}, not version 7")]
    WrongVersion { found: u8 },
    #[error("the UUID's variant bits are {found:#04b}, not the RFC 9562 variant 0b10")]
    WrongVariant { found: u8 },
    #[error("unknown ID kind {given:?}: expected one of snowflake, ulid, uuidv7")]
    UnknownKind { given: String },
}

/// Decode `s` as `kind`, or, without a kind, as whichever kind its form shows:
///
/// * 26 characters: a ULID (checked first because no 26-digit number fits a Snowflake ID);
/// * only ASCII digits: a Snowflake ID (it must fit 64 bits and have the sign bit clear);
/// * 36 characters with a hyphen: a UUIDv7.
///
/// Snowflake IDs are split with `layout`, which must be the layout they were issued with.
pub fn decode(s: &str, kind: Option<Kind>, layout: &SnowflakeLayout) -> Result<Decoded, DecodeError> {
    let kind = match kind {
        Some(kind) => kind,
        None => infer_kind(s)?,
    };
    Ok(match kind {
        Kind::Snowflake => Decoded::Snowflake(layout.decode(parse_snowflake(s)?)?),
        Kind::Ulid => Decoded::Ulid(ulid_parts(parse_ulid(s)?)),
        Kind::UuidV7 => Decoded::UuidV7(uuidv7_parts(parse_uuidv7(s)?)),
    })
}

fn infer_kind(s: &str) -> Result<Kind, DecodeError> {
    if s.is_empty() {
        return Err(DecodeError::Empty);
    }
    let len = s.chars().count();
    if len > MAX_LEN {
        return Err(DecodeError::TooLong { len, max: MAX_LEN });
    }
    if len == 26 {
        Ok(Kind::Ulid)
    } else if s.bytes().all(|b| b.is_ascii_digit()) {
        Ok(Kind::Snowflake)
    } else if len == MAX_LEN && s.contains('-') {
        Ok(Kind::UuidV7)
    } else {
        Err(DecodeError::UnknownForm { len })
    }
}

/// A decimal `u64` (leading zeros allowed, no sign, no whitespace).
fn parse_snowflake(s: &str) -> Result<u64, DecodeError> {
    if s.is_empty() {
        return Err(DecodeError::Empty);
    }
    let mut value: u64 = 0;
    for (position, c) in s.chars().enumerate() {
        let digit =
            c.to_digit(10).ok_or(DecodeError::BadChar { position, found: c, expected: "a decimal digit (0-9)" })?;
        value = value
            .checked_mul(10)
            .and_then(|v| v.checked_add(u64::from(digit)))
            .ok_or(DecodeError::SnowflakeOverflow)?;
    }
    Ok(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kind_names_round_trip() {
        for k in [Kind::Snowflake, Kind::Ulid, Kind::UuidV7] {
            assert_eq!(k.as_str().parse::<Kind>(), Ok(k));
        }
        assert_eq!("UUIDv7".parse::<Kind>(), Ok(Kind::UuidV7));
        let err = "uuid".parse::<Kind>().unwrap_err();
        assert!(err.to_string().contains("snowflake, ulid, uuidv7"), "{err}");
    }

    #[test]
    fn snowflake_digits() {
        assert_eq!(parse_snowflake("0042"), Ok(42));
        assert_eq!(parse_snowflake("18446744073709551615"), Ok(u64::MAX));
        assert_eq!(parse_snowflake("18446744073709551616"), Err(DecodeError::SnowflakeOverflow));
        assert_eq!(
            parse_snowflake("12a"),
            Err(DecodeError::BadChar { position: 2, found: 'a', expected: "a decimal digit (0-9)" })
        );
    }
}
