//! RFC 9562 UUIDv7 with a dedicated monotonic counter (§6.2, Method 1).
//!
//! Bit layout, most significant first:
//!
//! ```text
//! 48 unix_ts_ms | 4 version (0111) | 12 counter high (rand_a)
//!  2 variant (10) | 30 counter low (top of rand_b) | 32 random (rest of rand_b)
//! ```
//!
//! The 42-bit counter is seeded randomly in each new millisecond with its top bit cleared (a
//! guard bit: at least 2^41 increments before overflow) and incremented per ID. Since the
//! counter sits above the per-ID random bits, IDs of one millisecond strictly increase no
//! matter what the random bits are; the random bits keep IDs unguessable.

use crate::{DecodeError, Kind, Refusal, Tick, TimeGuard};
use rand::RngCore;
use serde::{Deserialize, Serialize};

const COUNTER_BITS: u32 = 42;
const MAX_COUNTER: u64 = (1 << COUNTER_BITS) - 1;
/// Bits of the counter that live in rand_b (the other 12 are rand_a).
const COUNTER_LOW_BITS: u32 = 30;
const MAX_TIMESTAMP_MS: u64 = (1 << 48) - 1;
const VERSION: u128 = 7;
const VARIANT: u128 = 0b10;
const UUID_LEN: usize = 36;
const HYPHENS: [usize; 4] = [8, 13, 18, 23];

/// The fields of a UUIDv7 issued by [`UuidV7Gen`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct UuidV7Parts {
    /// Unix milliseconds.
    pub timestamp_ms: u64,
    /// The 42-bit monotonic counter (rand_a and the top 30 bits of rand_b).
    pub counter: u64,
    /// The low 32 bits of rand_b, random per ID.
    pub random: u32,
}

/// A monotonic UUIDv7 generator.
#[derive(Debug, Clone)]
pub struct UuidV7Gen {
    guard: TimeGuard,
    /// The counter of the next ID at `guard.last_ms()`; meaningful only while the guard's
    /// counter is not exhausted, and then always `<= MAX_COUNTER`.
    next_counter: u64,
}

impl UuidV7Gen {
    /// A generator that issues only timestamps in `(floor_ms, reserved_until_ms]` and waits
    /// out a clock lag of at most `max_wait_ms`.
    pub fn new(floor_ms: u64, reserved_until_ms: u64, max_wait_ms: u64) -> Self {
        Self { guard: TimeGuard::new(floor_ms, reserved_until_ms, max_wait_ms), next_counter: 0 }
    }

    /// One UUIDv7 at `now_ms`, as a `u128` (format it with [`format_uuid`]).
    pub fn next<R: RngCore + ?Sized>(&mut self, now_ms: u64, rng: &mut R) -> Result<u128, Refusal> {
        let mut one = [0u128; 1];
        self.fill(now_ms, rng, &mut one)?;
        Ok(one[0])
    }

    /// Fill a prefix of `out` with UUIDv7s of the current millisecond; returns its length (at
    /// least 1 on `Ok` unless `out` is empty, which returns `Ok(0)` without touching state).
    pub fn fill<R: RngCore + ?Sized>(&mut self, now_ms: u64, rng: &mut R, out: &mut [u128]) -> Result<usize, Refusal> {
        if out.is_empty() {
            return Ok(0);
        }
        if now_ms > MAX_TIMESTAMP_MS {
            return Err(Refusal::OutOfRange { now_ms });
        }
        if let Tick::Advanced(_) = self.guard.admit(now_ms)? {
            self.next_counter = rng.next_u64() & (MAX_COUNTER >> 1);
        }
        let room = MAX_COUNTER - self.next_counter + 1;
        let n = room.min(out.len() as u64) as usize;
        for (slot, counter) in out[..n].iter_mut().zip(self.next_counter..) {
            *slot = compose(now_ms, counter, rng.next_u32());
        }
        self.next_counter += n as u64;
        if self.next_counter > MAX_COUNTER {
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

fn compose(unix_ms: u64, counter: u64, random: u32) -> u128 {
    let counter = u128::from(counter);
    (u128::from(unix_ms) << 80)
        | (VERSION << 76)
        | ((counter >> COUNTER_LOW_BITS) << 64)
        | (VARIANT << 62)
        | ((counter & ((1 << COUNTER_LOW_BITS) - 1)) << 32)
        | u128::from(random)
}

/// The canonical lowercase hyphenated form, `xxxxxxxx-xxxx-7xxx-xxxx-xxxxxxxxxxxx`.
pub fn format_uuid(v: u128) -> String {
    uuid::Uuid::from_u128(v).hyphenated().to_string()
}

/// Parse a hyphenated UUID (hex digits in either case) and require version 7 and the RFC 9562
/// variant.
pub fn parse_uuidv7(s: &str) -> Result<u128, DecodeError> {
    if s.is_empty() {
        return Err(DecodeError::Empty);
    }
    let len = s.chars().count();
    if len != UUID_LEN {
        return Err(DecodeError::WrongLength { kind: Kind::UuidV7, expected: UUID_LEN, len });
    }
    let mut value: u128 = 0;
    for (position, c) in s.chars().enumerate() {
        if HYPHENS.contains(&position) {
            if c != '-' {
                return Err(DecodeError::BadChar { position, found: c, expected: "a hyphen '-'" });
            }
            continue;
        }
        let digit = c.to_digit(16).ok_or(DecodeError::BadChar {
            position,
            found: c,
            expected: "a hexadecimal digit (0-9, a-f)",
        })?;
        value = (value << 4) | u128::from(digit);
    }
    let version = ((value >> 76) & 0xf) as u8;
    if u128::from(version) != VERSION {
        return Err(DecodeError::WrongVersion { found: version });
    }
    let variant = ((value >> 62) & 0b11) as u8;
    if u128::from(variant) != VARIANT {
        return Err(DecodeError::WrongVariant { found: variant });
    }
    Ok(value)
}

/// Split a UUIDv7 into timestamp, counter and random bits (version and variant are dropped).
pub fn uuidv7_parts(v: u128) -> UuidV7Parts {
    let high = ((v >> 64) & 0xfff) as u64;
    let low = ((v >> 32) & ((1 << COUNTER_LOW_BITS) - 1)) as u64;
    UuidV7Parts { timestamp_ms: (v >> 80) as u64, counter: (high << COUNTER_LOW_BITS) | low, random: v as u32 }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::SmallRng;

    #[test]
    fn compose_and_parts_agree() {
        let v = compose(0xABCD_EF01_2345, MAX_COUNTER, 0xDEAD_BEEF);
        let parts = uuidv7_parts(v);
        assert_eq!(parts, UuidV7Parts { timestamp_ms: 0xABCD_EF01_2345, counter: MAX_COUNTER, random: 0xDEAD_BEEF });
        let u = uuid::Uuid::from_u128(v);
        assert_eq!(u.get_version_num(), 7);
        assert_eq!(u.get_variant(), uuid::Variant::RFC4122);
    }

    #[test]
    fn counter_overflow_waits_for_the_next_millisecond() {
        let mut rng = SmallRng::seed_from_u64(1);
        let mut g = UuidV7Gen::new(0, u64::MAX, 10);
        g.next(5, &mut rng).unwrap();
        g.next_counter = MAX_COUNTER - 1;
        let mut out = [0u128; 4];
        assert_eq!(g.fill(5, &mut rng, &mut out), Ok(2));
        assert!(out[0] < out[1]);
        assert_eq!(uuidv7_parts(out[1]).counter, MAX_COUNTER);
        assert_eq!(g.next(5, &mut rng), Err(Refusal::Wait { until_ms: 6 }));
        assert_eq!(uuidv7_parts(g.next(6, &mut rng).unwrap()).timestamp_ms, 6);
    }

    #[test]
    fn fresh_counter_has_guard_bit_clear() {
        let mut rng = SmallRng::seed_from_u64(2);
        let mut g = UuidV7Gen::new(0, u64::MAX, 0);
        for ms in 1..1000 {
            let parts = uuidv7_parts(g.next(ms, &mut rng).unwrap());
            assert!(parts.counter < 1 << (COUNTER_BITS - 1));
        }
    }
}
