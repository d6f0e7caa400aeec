//! Bucketing: a stable hash of `flag_key + "." + salt + "." + value` mapped into `[0, 100_000)`.
//!
//! The hash is written here, byte-exact and platform-independent, because every SDK and server
//! must put a given user in the same bucket forever: 64-bit FNV-1a over the bytes (fed
//! incrementally, no string is built), then the SplitMix64 finalizer to spread FNV's weak high
//! bits, then a multiply-shift (`(h * 100_000) >> 64`) into the range — no modulo bias worth the
//! name (< 1e-14). Literal outputs are pinned by tests.

use serde_json::Number;

use crate::model::TOTAL_WEIGHT;

const FNV_OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// The bucket of `value` for `flag_key` and `salt`: a number in `[0, 100_000)`, stable across
/// builds, platforms and versions of this crate.
///
/// A rollout `[(v0, w0), (v1, w1), …]` serves `v0` for buckets `[0, w0)`, `v1` for `[w0, w0 + w1)`,
/// and so on, in the listed order.
pub fn bucket(flag_key: &str, salt: &str, value: &str) -> u32 {
    bucket_bytes(flag_key, salt, value.as_bytes())
}

/// [`bucket`] over the raw bytes of the value.
pub(crate) fn bucket_bytes(flag_key: &str, salt: &str, value: &[u8]) -> u32 {
    let mut h = FNV_OFFSET_BASIS;
    h = fnv1a(h, flag_key.as_bytes());
    h = fnv1a(h, b".");
    h = fnv1a(h, salt.as_bytes());
    h = fnv1a(h, b".");
    h = fnv1a(h, value);
    let mixed = splitmix64_finalize(h);
    // (h · N) >> 64 < N for every 64-bit h, so the cast never truncates.
    ((u128::from(mixed) * u128::from(TOTAL_WEIGHT)) >> 64) as u32
}

/// A stable 64-bit fingerprint of `bytes` (the same hash without the range mapping): for cache
/// validators that must agree across nodes and builds, such as OFREP's bulk `ETag`.
pub fn fingerprint(bytes: &[u8]) -> u64 {
    splitmix64_finalize(fnv1a(FNV_OFFSET_BASIS, bytes))
}

fn fnv1a(mut h: u64, bytes: &[u8]) -> u64 {
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(FNV_PRIME);
    }
    h
}

fn splitmix64_finalize(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The decimal form of an integer JSON number, written into `buf` (no allocation). `None` for
/// floats (`3.0` included): they are not bucketable.
pub(crate) fn integer_digits<'b>(n: &Number, buf: &'b mut [u8; 20]) -> Option<&'b [u8]> {
    let (negative, mut magnitude) = if let Some(u) = n.as_u64() {
        (false, u)
    } else {
        let i = n.as_i64()?;
        (i < 0, i.unsigned_abs())
    };
    let mut start = buf.len();
    loop {
        start -= 1;
        buf[start] = b'0' + (magnitude % 10) as u8;
        magnitude /= 10;
        if magnitude == 0 {
            break;
        }
    }
    if negative {
        start -= 1;
        buf[start] = b'-';
    }
    Some(&buf[start..])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integer_digits_match_display() {
        let samples: [Number; 7] = [
            0u64.into(),
            7u64.into(),
            u64::MAX.into(),
            (-1i64).into(),
            i64::MIN.into(),
            i64::MAX.into(),
            1_234_567_890u64.into(),
        ];
        for n in samples {
            let mut buf = [0u8; 20];
            let digits = integer_digits(&n, &mut buf).unwrap();
            assert_eq!(std::str::from_utf8(digits).unwrap(), n.to_string());
        }
        let float = Number::from_f64(3.0).unwrap();
        assert!(integer_digits(&float, &mut [0u8; 20]).is_none());
    }

    #[test]
    fn fnv1a_reference_vectors() {
        // Published FNV-1a 64 test vectors.
        assert_eq!(fnv1a(FNV_OFFSET_BASIS, b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(fnv1a(FNV_OFFSET_BASIS, b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(fnv1a(FNV_OFFSET_BASIS, b"foobar"), 0x8594_4171_f739_67e8);
    }

    #[test]
    fn splitmix_finalizer_reference_value() {
        // SplitMix64 seeded with 0 first outputs 0xe220a8397b1dcdaf: finalize(0 + golden gamma).
        assert_eq!(splitmix64_finalize(0x9e37_79b9_7f4a_7c15), 0xe220_a839_7b1d_cdaf);
    }
}
