//! Monotonic ULIDs: 48 bits of Unix milliseconds, then 80 bits of randomness.
//!
//! In a new millisecond the 80 random bits are drawn fresh, with the top bit cleared; within
//! the millisecond they are incremented by one per ID. Clearing the top bit leaves at least
//! 2^79 increments of headroom, so in practice the counter never overflows, and if it ever
//! did the generator would ask the caller to wait for the next millisecond rather than wrap.

use crate::{DecodeError, Kind, Refusal, Tick, TimeGuard};
use rand::RngCore;
use serde::{Deserialize, Serialize};

const RANDOM_BITS: u32 = 80;
const MAX_RANDOM: u128 = (1 << RANDOM_BITS) - 1;
/// ULID timestamps are 48 bits of Unix milliseconds.
const MAX_TIMESTAMP_MS: u64 = (1 << 48) - 1;
const ULID_LEN: usize = 26;
const ALPHABET: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";

/// The fields of a ULID.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct UlidParts {
    /// Unix milliseconds.
    pub timestamp_ms: u64,
    /// The 80-bit random (and, within a millisecond, incrementing) part.
    pub random: u128,
}

/// A monotonic ULID generator.
#[derive(Debug, Clone)]
pub struct UlidGen {
    guard: TimeGuard,
    /// The random part of the next ID at `guard.last_ms()`; meaningful only while the guard's
    /// counter is not exhausted, and then always `<= MAX_RANDOM`.
    next_random: u128,
}

impl UlidGen {
    /// A generator that issues only timestamps in `(floor_ms, reserved_until_ms]` and waits
    /// out a clock lag of at most `max_wait_ms`.
    pub fn new(floor_ms: u64, reserved_until_ms: u64, max_wait_ms: u64) -> Self {
        Self { guard: TimeGuard::new(floor_ms, reserved_until_ms, max_wait_ms), next_random: 0 }
    }

    /// One ULID at `now_ms`, as a `u128` (format it with [`format_ulid`]).
    pub fn next<R: RngCore + ?Sized>(&mut self, now_ms: u64, rng: &mut R) -> Result<u128, Refusal> {
        let mut one = [0u128; 1];
        self.fill(now_ms, rng, &mut one)?;
        Ok(one[0])
    }

    /// Fill a prefix of `out` with ULIDs of the current millisecond; returns its length (at
    /// least 1 on `Ok` unless `out` is empty, which returns `Ok(0)` without touching state).
    pub fn fill<R: RngCore + ?Sized>(&mut self, now_ms: u64, rng: &mut R, out: &mut [u128]) -> Result<usize, Refusal> {
        if out.is_empty() {
            return Ok(0);
        }
        if now_ms > MAX_TIMESTAMP_MS {
            return Err(Refusal::OutOfRange { now_ms });
        }
        if let Tick::Advanced(_) = self.guard.admit(now_ms)? {
            self.next_random = draw_random(rng);
        }
        let room = MAX_RANDOM - self.next_random + 1;
        let n = room.min(out.len() as u128) as usize;
        let first = (u128::from(now_ms) << RANDOM_BITS) | self.next_random;
        for (slot, id) in out[..n].iter_mut().zip(first..) {
            *slot = id;
        }
        self.next_random += n as u128;
        if self.next_random > MAX_RANDOM {
            self.guard.exhaust();
        }
        Ok(n)
    }

    /// Raise the durable reservation (after the driver has persisted it).
    pub fn set_reserved_until(&mut self, ms: u64) {
        self.guard.set_reserved_until(ms);
    }

    /// The last used timestamp (the floor until the first ID).
    pub fn last_ms(&self) -> u64 {
        self.guard.last_ms()
    }

    pub fn reserved_until_ms(&self) -> u64 {
        self.guard.reserved_until_ms()
    }
}

/// 80 random bits with the top one cleared: 15 bits above 64.
fn draw_random<R: RngCore + ?Sized>(rng: &mut R) -> u128 {
    let high = u128::from(rng.next_u32() & 0x7fff);
    (high << 64) | u128::from(rng.next_u64())
}

/// The canonical 26-character Crockford base32 form.
pub fn format_ulid(v: u128) -> String {
    ::ulid::Ulid(v).to_string()
}

/// Parse a 26-character ULID (case-insensitive). Unlike a bare base32 decode it rejects a
/// first character above `7`, which would need more than 128 bits, instead of silently
/// dropping the high bits.
pub fn parse_ulid(s: &str) -> Result<u128, DecodeError> {
    if s.is_empty() {
        return Err(DecodeError::Empty);
    }
    let len = s.chars().count();
    if len != ULID_LEN {
        return Err(DecodeError::WrongLength { kind: Kind::Ulid, expected: ULID_LEN, len });
    }
    let mut value: u128 = 0;
    for (position, c) in s.chars().enumerate() {
        let digit = base32_digit(c).ok_or(DecodeError::BadChar {
            position,
            found: c,
            expected: "a Crockford base32 character (0-9 or A-Z except I, L, O, U)",
        })?;
        if position == 0 && digit > 7 {
            return Err(DecodeError::UlidOverflow);
        }
        value = (value << 5) | u128::from(digit);
    }
    Ok(value)
}

/// Split a ULID into its timestamp and random part.
pub fn ulid_parts(v: u128) -> UlidParts {
    UlidParts { timestamp_ms: (v >> RANDOM_BITS) as u64, random: v & MAX_RANDOM }
}

fn base32_digit(c: char) -> Option<u8> {
    let upper = u8::try_from(c).ok()?.to_ascii_uppercase();
    ALPHABET.iter().position(|&a| a == upper).map(|p| p as u8)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::SmallRng;

    #[test]
    fn overflow_within_a_millisecond_waits_for_the_next() {
        let mut rng = SmallRng::seed_from_u64(1);
        let mut g = UlidGen::new(0, u64::MAX, 10);
        g.next(5, &mut rng).unwrap();
        g.next_random = MAX_RANDOM - 1;
        let mut out = [0u128; 4];
        assert_eq!(g.fill(5, &mut rng, &mut out), Ok(2));
        assert_eq!(ulid_parts(out[1]).random, MAX_RANDOM);
        assert_eq!(g.next(5, &mut rng), Err(Refusal::Wait { until_ms: 6 }));
        assert_eq!(ulid_parts(g.next(6, &mut rng).unwrap()).timestamp_ms, 6);
    }

    #[test]
    fn fresh_random_has_top_bit_clear() {
        let mut rng = SmallRng::seed_from_u64(2);
        for _ in 0..1000 {
            assert!(draw_random(&mut rng) < 1 << 79);
        }
    }

    #[test]
    fn timestamp_range() {
        let mut rng = SmallRng::seed_from_u64(3);
        let mut g = UlidGen::new(0, u64::MAX, 0);
        let over = MAX_TIMESTAMP_MS + 1;
        assert_eq!(g.next(over, &mut rng), Err(Refusal::OutOfRange { now_ms: over }));
        let id = g.next(MAX_TIMESTAMP_MS, &mut rng).unwrap();
        assert_eq!(ulid_parts(id).timestamp_ms, MAX_TIMESTAMP_MS);
    }
}
