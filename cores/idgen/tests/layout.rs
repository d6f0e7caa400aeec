//! The Snowflake bit layout: validation and compose/decompose round trips.

use basalt_idgen::{DecodeError, LayoutError, SnowflakeLayout, SnowflakeParts};
use proptest::prelude::*;

#[test]
fn default_layout_is_the_documented_one() {
    let l = SnowflakeLayout::default();
    assert_eq!((l.epoch_ms, l.timestamp_bits, l.worker_bits, l.sequence_bits), (1_704_067_200_000, 41, 10, 12));
    assert_eq!(SnowflakeLayout::new(1_704_067_200_000, 41, 10, 12), Ok(l));
    assert_eq!(l.max_worker(), 1023);
    assert_eq!(l.max_sequence(), 4095);
    assert_eq!(l.ids_per_ms_per_worker(), 4096);
    assert_eq!(l.max_timestamp_ms(), 1_704_067_200_000 + (1 << 41) - 1);
}

#[test]
fn new_rejects_bad_layouts_with_the_right_error() {
    let e = 0;
    assert_eq!(
        SnowflakeLayout::new(e, 41, 10, 13),
        Err(LayoutError::BitSum { timestamp_bits: 41, worker_bits: 10, sequence_bits: 13, sum: 64 })
    );
    assert_eq!(
        SnowflakeLayout::new(e, 40, 10, 12),
        Err(LayoutError::BitSum { timestamp_bits: 40, worker_bits: 10, sequence_bits: 12, sum: 62 })
    );
    assert_eq!(SnowflakeLayout::new(e, 255, 255, 255), Err(LayoutError::WorkerBits(255)));
    assert_eq!(SnowflakeLayout::new(e, 41, 0, 22), Err(LayoutError::WorkerBits(0)));
    assert_eq!(SnowflakeLayout::new(e, 40, 23, 0), Err(LayoutError::WorkerBits(23)));
    assert_eq!(SnowflakeLayout::new(e, 40, 1, 23), Err(LayoutError::SequenceBits(23)));
    assert_eq!(SnowflakeLayout::new(e, 31, 10, 22), Err(LayoutError::TimestampBits(31)));
    assert_eq!(
        SnowflakeLayout::new(u64::MAX - 10, 41, 10, 12),
        Err(LayoutError::EpochOverflow { epoch_ms: u64::MAX - 10, timestamp_bits: 41 })
    );
    let msg = SnowflakeLayout::new(e, 41, 10, 13).unwrap_err().to_string();
    assert!(msg.contains("exactly 63") && msg.contains("41 + 10 + 13 = 64"), "{msg}");
}

#[test]
fn decode_rejects_the_sign_bit() {
    let l = SnowflakeLayout::default();
    let id = 1u64 << 63;
    assert_eq!(l.decode(id), Err(DecodeError::SignBit { id }));
    assert!(l.decode(u64::MAX >> 1).is_ok());
}

/// Any valid layout with in-range field values.
fn layout_and_parts() -> impl Strategy<Value = (SnowflakeLayout, SnowflakeParts)> {
    (1u8..=22, 1u8..=22, 0u64..(1 << 44))
        .prop_filter("timestamp needs at least 32 bits", |(w, s, _)| w + s <= 31)
        .prop_flat_map(|(w, s, epoch)| {
            let layout = SnowflakeLayout::new(epoch, 63 - w - s, w, s).unwrap();
            let parts =
                (layout.epoch_ms..=layout.max_timestamp_ms(), 0..=layout.max_worker(), 0..=layout.max_sequence())
                    .prop_map(|(timestamp_ms, worker, sequence)| SnowflakeParts { timestamp_ms, worker, sequence });
            (Just(layout), parts)
        })
}

proptest! {
    #[test]
    fn compose_decompose_round_trip((layout, parts) in layout_and_parts()) {
        let id = layout.compose(parts.timestamp_ms, parts.worker, parts.sequence);
        prop_assert_eq!(id >> 63, 0, "sign bit set");
        prop_assert_eq!(layout.decompose(id), parts);
        prop_assert_eq!(layout.decode(id), Ok(parts));
    }

    #[test]
    fn ids_order_by_time_then_worker_then_sequence(
        (layout, a) in layout_and_parts(),
        b_seed in any::<(u64, u32, u32)>(),
    ) {
        let b = SnowflakeParts {
            timestamp_ms: layout.epoch_ms + b_seed.0 % (layout.max_timestamp_ms() - layout.epoch_ms + 1),
            worker: b_seed.1 % (layout.max_worker() + 1),
            sequence: b_seed.2 % (layout.max_sequence() + 1),
        };
        let key = |p: &SnowflakeParts| (p.timestamp_ms, p.worker, p.sequence);
        let ia = layout.compose(a.timestamp_ms, a.worker, a.sequence);
        let ib = layout.compose(b.timestamp_ms, b.worker, b.sequence);
        prop_assert_eq!(ia.cmp(&ib), key(&a).cmp(&key(&b)));
    }
}
