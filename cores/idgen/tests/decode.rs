//! Decoding untrusted ID strings: never panics, round-trips what the generators issue, and
//! explains what is wrong with what it rejects.

use basalt_idgen::{
    DecodeError, Decoded, Kind, Snowflake, SnowflakeLayout, UlidGen, UuidV7Gen, decode, format_ulid, format_uuid,
    parse_ulid, parse_uuidv7, ulid_parts, uuidv7_parts,
};
use proptest::prelude::*;
use rand::SeedableRng;
use rand::rngs::SmallRng;

const T0: u64 = 1_750_000_000_000;

/// Every entry point on one string: the result does not matter, only that nothing panics.
fn decode_everything(s: &str) {
    let layout = SnowflakeLayout::default();
    for kind in [None, Some(Kind::Snowflake), Some(Kind::Ulid), Some(Kind::UuidV7)] {
        if let Err(e) = decode(s, kind, &layout) {
            assert!(!e.to_string().is_empty());
        }
    }
    let _ = parse_ulid(s);
    let _ = parse_uuidv7(s);
    let _ = s.parse::<Kind>();
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2_000))]

    #[test]
    fn decode_never_panics_on_any_string(s in ".*") {
        decode_everything(&s);
    }

    #[test]
    fn decode_never_panics_on_arbitrary_bytes(bytes in prop::collection::vec(any::<u8>(), 0..64)) {
        decode_everything(&String::from_utf8_lossy(&bytes));
    }

    /// Strings shaped almost like IDs reach deeper into the parsers than random text.
    #[test]
    fn decode_never_panics_on_near_ids(s in "[0-9A-Za-z-]{0,40}") {
        decode_everything(&s);
    }

    #[test]
    fn ulid_format_parse_round_trip(v in any::<u128>()) {
        let s = format_ulid(v);
        prop_assert_eq!(s.len(), 26);
        prop_assert_eq!(parse_ulid(&s), Ok(v));
        prop_assert_eq!(parse_ulid(&s.to_lowercase()), Ok(v));
        prop_assert_eq!(decode(&s, None, &SnowflakeLayout::default()), Ok(Decoded::Ulid(ulid_parts(v))));
    }

    #[test]
    fn uuidv7_format_parse_round_trip(seed in any::<u64>(), ms in 1u64..(1 << 48)) {
        let mut rng = SmallRng::seed_from_u64(seed);
        let v = UuidV7Gen::new(0, u64::MAX, 0).next(ms, &mut rng).unwrap();
        let u = uuid::Uuid::from_u128(v);
        prop_assert_eq!(u.get_version_num(), 7);
        prop_assert_eq!(u.get_variant(), uuid::Variant::RFC4122);
        let s = format_uuid(v);
        prop_assert_eq!(&s, &u.hyphenated().to_string());
        prop_assert_eq!(parse_uuidv7(&s), Ok(v));
        prop_assert_eq!(parse_uuidv7(&s.to_uppercase()), Ok(v));
        let parts = uuidv7_parts(v);
        prop_assert_eq!(parts.timestamp_ms, ms);
        prop_assert_eq!(decode(&s, None, &SnowflakeLayout::default()), Ok(Decoded::UuidV7(parts)));
    }

    #[test]
    fn snowflake_decimal_round_trip(worker in 0u32..1024, offset in 0u64..1_000_000) {
        let layout = SnowflakeLayout::default();
        let now = T0 + offset;
        let id = Snowflake::new(layout, worker, 0, u64::MAX, 0).unwrap().next_id(now).unwrap();
        let decoded = decode(&id.to_string(), None, &layout).unwrap();
        prop_assert_eq!(decoded, Decoded::Snowflake(layout.decompose(id)));
        let Decoded::Snowflake(parts) = decoded else { unreachable!() };
        prop_assert_eq!((parts.timestamp_ms, parts.worker, parts.sequence), (now, worker, 0));
    }
}

#[test]
fn ulid_from_generator_decodes_with_its_timestamp() {
    let mut rng = SmallRng::seed_from_u64(7);
    let v = UlidGen::new(0, u64::MAX, 0).next(T0, &mut rng).unwrap();
    let s = format_ulid(v);
    assert_eq!(s, ulid::Ulid(v).to_string());
    let Ok(Decoded::Ulid(parts)) = decode(&s, Some(Kind::Ulid), &SnowflakeLayout::default()) else {
        panic!("{s} did not decode as a ULID");
    };
    assert_eq!(parts.timestamp_ms, T0);
    assert!(parts.random < 1 << 79, "fresh random part keeps its top bit clear");
}

#[test]
fn errors_name_the_problem() {
    let layout = SnowflakeLayout::default();
    let err = |s: &str, kind: Option<Kind>| decode(s, kind, &layout).unwrap_err();

    assert_eq!(err("", None), DecodeError::Empty);
    assert_eq!(err("", Some(Kind::Ulid)), DecodeError::Empty);
    assert_eq!(err(&"1".repeat(37), None), DecodeError::TooLong { len: 37, max: 36 });
    assert!(matches!(err("hello", None), DecodeError::UnknownForm { len: 5 }));
    assert!(err("hello", None).to_string().contains("ULID"));

    // Snowflake: overflow, sign bit, bad digit.
    assert_eq!(err("18446744073709551616", None), DecodeError::SnowflakeOverflow);
    assert_eq!(err("9223372036854775808", None), DecodeError::SignBit { id: 1 << 63 });
    assert!(decode("9223372036854775807", None, &layout).is_ok());
    assert_eq!(
        err("12x4", Some(Kind::Snowflake)),
        DecodeError::BadChar { position: 2, found: 'x', expected: "a decimal digit (0-9)" }
    );

    // ULID: length, alphabet, 128-bit overflow.
    assert_eq!(
        err("01ARZ3NDEK", Some(Kind::Ulid)),
        DecodeError::WrongLength { kind: Kind::Ulid, expected: 26, len: 10 }
    );
    assert_eq!(err("01ARZ3NDEK", Some(Kind::Ulid)).to_string(), "a ULID is 26 characters long, but this one is 10");
    let bad = err("01ARZ3NDEKTSV4RRFFQ69G5FAU", None);
    assert!(matches!(bad, DecodeError::BadChar { position: 25, found: 'U', .. }), "{bad:?}");
    assert!(bad.to_string().contains("position 25"), "{bad}");
    assert_eq!(err("81ARZ3NDEKTSV4RRFFQ69G5FAV", None), DecodeError::UlidOverflow);
    assert!(matches!(err("01ARZ3NDEKTSV4RRFFQ69G5FAé", None), DecodeError::BadChar { position: 25, found: 'é', .. }));

    // UUID: hyphens, hex, version, variant.
    let v4 = "550e8400-e29b-41d4-a716-446655440000";
    assert_eq!(err(v4, None), DecodeError::WrongVersion { found: 4 });
    assert_eq!(err(v4, None).to_string(), "the UUID is version 4, not version 7");
    let bad_variant = "01890a5d-ac96-774b-cd5c-0123456789ab";
    assert_eq!(err(bad_variant, None), DecodeError::WrongVariant { found: 0b11 });
    let no_hyphen = "01890a5d0ac96-774b-bd5c-0123456789ab";
    assert!(matches!(err(no_hyphen, None), DecodeError::BadChar { position: 8, found: '0', .. }));
    let bad_hex = "01890a5d-ac96-774b-bd5c-0123456789ag";
    assert!(matches!(err(bad_hex, None), DecodeError::BadChar { position: 35, found: 'g', .. }));
    assert!(decode("01890a5d-ac96-774b-bd5c-0123456789ab", None, &layout).is_ok());
    assert!(matches!(err("01890a5dac96774bbd5c0123456789ab", None), DecodeError::UnknownForm { len: 32 }));
}

#[test]
fn kind_parsing_lists_valid_kinds() {
    assert_eq!("snowflake".parse::<Kind>(), Ok(Kind::Snowflake));
    assert_eq!("ulid".parse::<Kind>(), Ok(Kind::Ulid));
    assert_eq!("uuidv7".parse::<Kind>(), Ok(Kind::UuidV7));
    assert_eq!(Kind::UuidV7.as_str(), "uuidv7");
    let e = "uuid4".parse::<Kind>().unwrap_err();
    assert_eq!(e.to_string(), "unknown ID kind \"uuid4\": expected one of snowflake, ulid, uuidv7");
}
