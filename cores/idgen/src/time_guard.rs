//! The clock discipline shared by every generator.
//!
//! A generator's IDs are ordered first by timestamp, then by a per-millisecond counter. So
//! uniqueness and monotonicity reduce to one rule: never go back to a timestamp already used,
//! and within the current one never reuse a counter value. The guard owns the first half
//! (the time and whether its counter is used up); each generator owns its counter.
//!
//! The durable floor (the high-water mark of a previous life) is modelled as "the last used
//! timestamp is `floor_ms` and its counter is exhausted", so a restarted generator needs no
//! special case: the ordinary rules already keep it strictly above the floor.

use crate::Refusal;
use std::cmp::Ordering;

/// What [`TimeGuard::admit`] allows the generator to do at `now_ms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tick {
    /// The clock still reads the last used millisecond and its counter has room: continue
    /// the counter.
    Same(u64),
    /// The clock moved past the last used millisecond (and within the reservation): this is
    /// now the current millisecond; start a fresh counter.
    Advanced(u64),
}

/// Tracks the last used timestamp, the durable reservation and the tolerated clock lag.
///
/// Invariant: every timestamp it admits is `> floor_ms`, `<= reserved_until_ms`, and `>=`
/// every timestamp admitted before; a timestamp is admitted again (as [`Tick::Same`]) only
/// while the generator has not declared its counter exhausted.
#[derive(Debug, Clone)]
pub struct TimeGuard {
    last_ms: u64,
    /// The counter for `last_ms` is used up: the next ID needs `last_ms + 1` or later.
    exhausted: bool,
    reserved_until_ms: u64,
    max_wait_ms: u64,
}

impl TimeGuard {
    /// A guard that admits only timestamps in `(floor_ms, reserved_until_ms]`, and asks the
    /// caller to wait out a clock that is behind by at most `max_wait_ms`.
    pub fn new(floor_ms: u64, reserved_until_ms: u64, max_wait_ms: u64) -> Self {
        Self { last_ms: floor_ms, exhausted: true, reserved_until_ms, max_wait_ms }
    }

    /// Decide whether an ID may be issued at `now_ms`.
    ///
    /// * `now_ms > last`: needs `now_ms <= reserved_until_ms`, else
    ///   [`Refusal::NeedReservation`]; on success `now_ms` becomes the last used timestamp.
    /// * `now_ms == last`: [`Tick::Same`] if the counter has room, else `Wait { last + 1 }`.
    /// * `now_ms < last`: a lag of at most `max_wait_ms` is [`Refusal::Wait`] (for `last`, or
    ///   `last + 1` if its counter is used up); more is [`Refusal::ClockBehind`]. We never
    ///   issue at `last` while the clock is behind it: an ID's timestamp is always the
    ///   caller's clock reading.
    pub fn admit(&mut self, now_ms: u64) -> Result<Tick, Refusal> {
        match now_ms.cmp(&self.last_ms) {
            Ordering::Greater => {
                if now_ms > self.reserved_until_ms {
                    return Err(Refusal::NeedReservation { through_ms: now_ms });
                }
                self.last_ms = now_ms;
                self.exhausted = false;
                Ok(Tick::Advanced(now_ms))
            }
            Ordering::Equal if !self.exhausted => Ok(Tick::Same(now_ms)),
            Ordering::Equal => Err(Refusal::Wait { until_ms: self.next_usable_ms() }),
            Ordering::Less => {
                let behind_ms = self.last_ms - now_ms;
                if behind_ms > self.max_wait_ms {
                    Err(Refusal::ClockBehind { behind_ms })
                } else {
                    Err(Refusal::Wait { until_ms: self.next_usable_ms() })
                }
            }
        }
    }

    /// The generator has used the last counter value of the current millisecond: the next ID
    /// must wait for the next one.
    pub fn exhaust(&mut self) {
        self.exhausted = true;
    }

    /// Raise the durable reservation. Never lowers it: a reservation, once persisted, stays
    /// valid, and a lower value arriving late (e.g. from a reordered renewal) is harmless.
    pub fn set_reserved_until(&mut self, ms: u64) {
        self.reserved_until_ms = self.reserved_until_ms.max(ms);
    }

    /// The last used timestamp (the floor, until the first ID is issued).
    pub fn last_ms(&self) -> u64 {
        self.last_ms
    }

    /// The largest timestamp the guard may admit.
    pub fn reserved_until_ms(&self) -> u64 {
        self.reserved_until_ms
    }

    /// The largest clock lag that is waited out rather than refused.
    pub fn max_wait_ms(&self) -> u64 {
        self.max_wait_ms
    }

    /// Whether the counter for [`last_ms`](Self::last_ms) is used up.
    pub fn is_exhausted(&self) -> bool {
        self.exhausted
    }

    fn next_usable_ms(&self) -> u64 {
        if self.exhausted { self.last_ms.saturating_add(1) } else { self.last_ms }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floor_is_exclusive() {
        let mut g = TimeGuard::new(100, 200, 10);
        assert_eq!(g.admit(100), Err(Refusal::Wait { until_ms: 101 }));
        assert_eq!(g.admit(95), Err(Refusal::Wait { until_ms: 101 }));
        assert_eq!(g.admit(89), Err(Refusal::ClockBehind { behind_ms: 11 }));
        assert_eq!(g.admit(101), Ok(Tick::Advanced(101)));
        assert_eq!(g.admit(101), Ok(Tick::Same(101)));
    }

    #[test]
    fn behind_within_tolerance_waits_for_last() {
        let mut g = TimeGuard::new(0, 1_000, 5);
        assert_eq!(g.admit(50), Ok(Tick::Advanced(50)));
        assert_eq!(g.admit(45), Err(Refusal::Wait { until_ms: 50 }));
        assert_eq!(g.admit(44), Err(Refusal::ClockBehind { behind_ms: 6 }));
        g.exhaust();
        assert_eq!(g.admit(45), Err(Refusal::Wait { until_ms: 51 }));
        assert_eq!(g.admit(50), Err(Refusal::Wait { until_ms: 51 }));
    }

    #[test]
    fn reservation_is_inclusive_and_only_rises() {
        let mut g = TimeGuard::new(0, 10, 0);
        assert_eq!(g.admit(10), Ok(Tick::Advanced(10)));
        assert_eq!(g.admit(11), Err(Refusal::NeedReservation { through_ms: 11 }));
        g.set_reserved_until(20);
        g.set_reserved_until(5);
        assert_eq!(g.reserved_until_ms(), 20);
        assert_eq!(g.admit(11), Ok(Tick::Advanced(11)));
    }
}
