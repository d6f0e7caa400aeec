//! Properties of the three generators under arbitrary clocks: strictly increasing (so
//! unique) output, timestamps inside `(floor, reservation]`, and refusals exactly when the
//! clock discipline demands them.

use basalt_idgen::{Refusal, Snowflake, SnowflakeLayout, UlidGen, UuidV7Gen, ulid_parts, uuidv7_parts};
use proptest::prelude::*;
use rand::SeedableRng;
use rand::rngs::SmallRng;

/// A moment well inside every generator's range (mid-2025).
const T0: u64 = 1_750_000_000_000;

/// One generator behind a common face, so every property runs against all three.
trait Subject {
    /// Issue up to `n` IDs at `now`, widened to `u128`.
    fn issue(&mut self, now: u64, n: usize) -> Result<Vec<u128>, Refusal>;
    fn timestamp(&self, id: u128) -> u64;
    fn last_ms(&self) -> u64;
    fn reserved_until_ms(&self) -> u64;
    fn set_reserved_until(&mut self, ms: u64);
}

impl Subject for Snowflake {
    fn issue(&mut self, now: u64, n: usize) -> Result<Vec<u128>, Refusal> {
        let mut out = vec![0u64; n];
        let k = self.fill(now, &mut out)?;
        Ok(out[..k].iter().map(|&id| u128::from(id)).collect())
    }
    fn timestamp(&self, id: u128) -> u64 {
        self.layout().decompose(id as u64).timestamp_ms
    }
    fn last_ms(&self) -> u64 {
        Snowflake::last_ms(self)
    }
    fn reserved_until_ms(&self) -> u64 {
        Snowflake::reserved_until_ms(self)
    }
    fn set_reserved_until(&mut self, ms: u64) {
        Snowflake::set_reserved_until(self, ms)
    }
}

struct Ulids(UlidGen, SmallRng);

impl Subject for Ulids {
    fn issue(&mut self, now: u64, n: usize) -> Result<Vec<u128>, Refusal> {
        let mut out = vec![0u128; n];
        let k = self.0.fill(now, &mut self.1, &mut out)?;
        out.truncate(k);
        Ok(out)
    }
    fn timestamp(&self, id: u128) -> u64 {
        ulid_parts(id).timestamp_ms
    }
    fn last_ms(&self) -> u64 {
        self.0.last_ms()
    }
    fn reserved_until_ms(&self) -> u64 {
        self.0.reserved_until_ms()
    }
    fn set_reserved_until(&mut self, ms: u64) {
        self.0.set_reserved_until(ms)
    }
}

struct Uuids(UuidV7Gen, SmallRng);

impl Subject for Uuids {
    fn issue(&mut self, now: u64, n: usize) -> Result<Vec<u128>, Refusal> {
        let mut out = vec![0u128; n];
        let k = self.0.fill(now, &mut self.1, &mut out)?;
        out.truncate(k);
        Ok(out)
    }
    fn timestamp(&self, id: u128) -> u64 {
        uuidv7_parts(id).timestamp_ms
    }
    fn last_ms(&self) -> u64 {
        self.0.last_ms()
    }
    fn reserved_until_ms(&self) -> u64 {
        self.0.reserved_until_ms()
    }
    fn set_reserved_until(&mut self, ms: u64) {
        self.0.set_reserved_until(ms)
    }
}

/// A small Snowflake layout (8 IDs per ms) so the proptest reaches sequence exhaustion often.
fn small_layout() -> SnowflakeLayout {
    SnowflakeLayout::new(SnowflakeLayout::default().epoch_ms, 59, 1, 3).unwrap()
}

#[derive(Debug, Clone)]
enum Step {
    Forward(u64),
    Repeat,
    Back(u64),
    Jump(u64),
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        4 => (1u64..3).prop_map(Step::Forward),
        3 => Just(Step::Repeat),
        2 => (1u64..20).prop_map(Step::Back),
        1 => (20u64..100_000).prop_map(Step::Back),
        1 => (100u64..100_000).prop_map(Step::Jump),
    ]
}

#[derive(Debug, Clone)]
struct Scenario {
    floor: u64,
    initial_reservation: u64,
    start: u64,
    max_wait: u64,
    /// (clock step, IDs requested, extra reservation granted when asked)
    steps: Vec<(Step, usize, u64)>,
    seed: u64,
}

fn scenario() -> impl Strategy<Value = Scenario> {
    (
        0u64..5_000,
        0u64..2_000,
        0u64..10_000,
        0u64..50,
        prop::collection::vec((step(), 1usize..20, 0u64..1_000), 1..200),
        any::<u64>(),
    )
        .prop_map(|(floor_off, reservation, start_off, max_wait, steps, seed)| {
            let floor = T0 + floor_off;
            Scenario { floor, initial_reservation: floor + reservation, start: T0 + start_off, max_wait, steps, seed }
        })
}

/// Drive `g` through the scenario's clock and check every result against the rules.
fn check(g: &mut dyn Subject, sc: &Scenario) -> Result<(), TestCaseError> {
    let mut now = sc.start;
    let mut previous: Option<u128> = None;
    for (step, n, extra) in &sc.steps {
        now = match step {
            Step::Forward(d) | Step::Jump(d) => now + d,
            Step::Repeat => now,
            Step::Back(d) => now.saturating_sub(*d).max(T0 - 200_000),
        };
        let last = g.last_ms();
        let mut result = g.issue(now, *n);
        if let Err(Refusal::NeedReservation { through_ms }) = result {
            prop_assert_eq!(through_ms, now);
            prop_assert!(now > g.reserved_until_ms() && now > last);
            g.set_reserved_until(through_ms + extra);
            result = g.issue(now, *n);
        }
        let behind_too_far = now < last && last - now > sc.max_wait;
        prop_assert_eq!(matches!(result, Err(Refusal::ClockBehind { .. })), behind_too_far);
        match result {
            Ok(ids) => {
                prop_assert!(!ids.is_empty() && ids.len() <= *n);
                for id in ids {
                    let ts = g.timestamp(id);
                    prop_assert_eq!(ts, now, "an ID's timestamp is the caller's clock");
                    prop_assert!(ts > sc.floor, "timestamp {} at or below floor {}", ts, sc.floor);
                    prop_assert!(ts <= g.reserved_until_ms());
                    if let Some(p) = previous {
                        prop_assert!(id > p, "not strictly increasing: {:#x} after {:#x}", id, p);
                    }
                    previous = Some(id);
                }
            }
            Err(Refusal::Wait { until_ms }) => {
                prop_assert!(now <= last && last - now <= sc.max_wait);
                prop_assert!(until_ms == last || until_ms == last + 1);
                prop_assert!(until_ms > now);
            }
            Err(Refusal::ClockBehind { behind_ms }) => prop_assert_eq!(behind_ms, last - now),
            Err(other) => prop_assert!(false, "unexpected refusal {:?}", other),
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(200))]

    #[test]
    fn snowflake_monotonic_within_floor_and_reservation(sc in scenario()) {
        for layout in [SnowflakeLayout::default(), small_layout()] {
            let mut g = Snowflake::new(layout, 1, sc.floor, sc.initial_reservation, sc.max_wait).unwrap();
            check(&mut g, &sc)?;
        }
    }

    #[test]
    fn ulid_monotonic_within_floor_and_reservation(sc in scenario()) {
        let g = UlidGen::new(sc.floor, sc.initial_reservation, sc.max_wait);
        check(&mut Ulids(g, SmallRng::seed_from_u64(sc.seed)), &sc)?;
    }

    #[test]
    fn uuidv7_monotonic_within_floor_and_reservation(sc in scenario()) {
        let g = UuidV7Gen::new(sc.floor, sc.initial_reservation, sc.max_wait);
        check(&mut Uuids(g, SmallRng::seed_from_u64(sc.seed)), &sc)?;
    }
}

fn all_subjects(floor: u64, reserved: u64, max_wait: u64) -> Vec<Box<dyn Subject>> {
    vec![
        Box::new(Snowflake::new(SnowflakeLayout::default(), 3, floor, reserved, max_wait).unwrap()),
        Box::new(Ulids(UlidGen::new(floor, reserved, max_wait), SmallRng::seed_from_u64(1))),
        Box::new(Uuids(UuidV7Gen::new(floor, reserved, max_wait), SmallRng::seed_from_u64(2))),
    ]
}

#[test]
fn restart_never_issues_at_or_below_floor() {
    let floor = T0 + 1_000;
    for mut g in all_subjects(floor, floor + 100, 10) {
        assert_eq!(g.issue(floor, 1), Err(Refusal::Wait { until_ms: floor + 1 }));
        assert_eq!(g.issue(floor - 10, 1), Err(Refusal::Wait { until_ms: floor + 1 }));
        assert_eq!(g.issue(floor - 11, 1), Err(Refusal::ClockBehind { behind_ms: 11 }));
        let ids = g.issue(floor + 1, 5).unwrap();
        assert!(ids.iter().all(|&id| g.timestamp(id) == floor + 1));
    }
}

#[test]
fn reservation_must_be_extended_before_issuing_past_it() {
    let floor = T0;
    for mut g in all_subjects(floor, floor + 10, 10) {
        assert!(g.issue(floor + 10, 1).is_ok());
        assert_eq!(g.issue(floor + 11, 1), Err(Refusal::NeedReservation { through_ms: floor + 11 }));
        g.set_reserved_until(floor + 20);
        assert!(g.issue(floor + 11, 1).is_ok());
    }
}

#[test]
fn empty_buffer_issues_nothing_and_changes_nothing() {
    for mut g in all_subjects(T0, T0 + 10, 0) {
        assert_eq!(g.issue(T0 + 5, 0), Ok(vec![]));
        assert_eq!(g.last_ms(), T0);
    }
}

#[test]
fn sequence_exhaustion_waits_for_next_millisecond() {
    let epoch = SnowflakeLayout::default().epoch_ms;
    for sequence_bits in 1..=3u8 {
        let layout = SnowflakeLayout::new(epoch, 62 - sequence_bits, 1, sequence_bits).unwrap();
        let capacity = layout.ids_per_ms_per_worker() as usize;
        let now = T0;
        let mut g = Snowflake::new(layout, 1, 0, u64::MAX, 5).unwrap();

        let mut out = vec![0u64; capacity * 2];
        assert_eq!(g.fill(now, &mut out), Ok(capacity));
        let seqs: Vec<u32> = out[..capacity].iter().map(|&id| layout.decompose(id).sequence).collect();
        assert_eq!(seqs, (0..capacity as u32).collect::<Vec<_>>());
        assert_eq!(g.fill(now, &mut out), Err(Refusal::Wait { until_ms: now + 1 }));
        assert_eq!(g.next_id(now), Err(Refusal::Wait { until_ms: now + 1 }));
        assert_eq!(g.next_id(now - 3), Err(Refusal::Wait { until_ms: now + 1 }));

        // One at a time reaches the same limit.
        let next = now + 1;
        for _ in 0..capacity {
            g.next_id(next).unwrap();
        }
        assert_eq!(g.next_id(next), Err(Refusal::Wait { until_ms: next + 1 }));
        assert_eq!(layout.decompose(g.next_id(next + 1).unwrap()).sequence, 0);
    }
}

#[test]
fn all_1024_workers_on_one_clock_never_collide() {
    let layout = SnowflakeLayout::default();
    // Repeats, a backward step within tolerance, a forward jump, and one millisecond filled
    // to exhaustion (4,096 IDs) so the top of the sequence field is exercised too.
    let clock = [T0, T0, T0 + 1, T0, T0 + 2, T0 + 2, T0 + 50, T0 + 49, T0 + 51];
    let mut all = Vec::new();
    let mut buf = vec![0u64; 100];
    let mut full = vec![0u64; 4096];
    for worker in 0..=layout.max_worker() {
        let mut g = Snowflake::new(layout, worker, T0 - 1, T0 + 1_000, 5).unwrap();
        for &now in &clock {
            if let Ok(k) = g.fill(now, &mut buf) {
                all.extend_from_slice(&buf[..k]);
            }
        }
        assert_eq!(g.fill(T0 + 60, &mut full), Ok(4096));
        all.extend_from_slice(&full);
    }
    let issued = all.len();
    assert_eq!(issued, 1024 * (7 * 100 + 4096));
    all.sort_unstable();
    all.dedup();
    assert_eq!(all.len(), issued, "duplicate IDs across workers");
}

/// Throughput of the Snowflake hot path. Ignored by default; run with
/// `cargo test --release -p basalt-idgen --test generators -- --ignored --nocapture`.
#[test]
#[ignore]
fn snowflake_fill_throughput() {
    let layout = SnowflakeLayout::default();
    let mut g = Snowflake::new(layout, 1, 0, u64::MAX, 0).unwrap();
    let mut out = vec![0u64; 4096];
    let rounds = 100_000u64;
    let start = std::time::Instant::now();
    let mut checksum = 0u64;
    for ms in 0..rounds {
        let n = g.fill(T0 + ms, std::hint::black_box(&mut out)).unwrap();
        checksum = checksum.wrapping_add(std::hint::black_box(&out)[n - 1]);
    }
    let elapsed = start.elapsed();
    let ids = rounds * 4096;
    println!(
        "{ids} IDs in {elapsed:?}: {:.0}M IDs/s (checksum {checksum:x})",
        ids as f64 / elapsed.as_secs_f64() / 1e6
    );
}
