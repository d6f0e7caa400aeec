//! The Snowflake generator: one worker id, one [`TimeGuard`], one sequence counter.
//!
//! IDs of one worker within one millisecond differ only in the low `sequence_bits`, so after
//! a single [`TimeGuard::admit`] a whole batch is `first, first + 1, …`: the hot loop in
//! [`Snowflake::fill`] is a plain increment with no branches.

use crate::{LayoutError, Refusal, SnowflakeLayout, Tick, TimeGuard};

/// A Snowflake ID generator for one worker id.
///
/// Uniqueness across generators rests on each live generator having its own worker id (see
/// [`LeaseTable`](crate::LeaseTable)); uniqueness and strict monotonicity within one rest on
/// the guard and the sequence counter.
#[derive(Debug, Clone)]
pub struct Snowflake {
    layout: SnowflakeLayout,
    worker: u32,
    guard: TimeGuard,
    /// The next sequence number to issue at `guard.last_ms()`. Meaningful only while the
    /// guard's counter is not exhausted, and then always `<= max_seq`.
    next_seq: u64,
    /// `compose(last_ms, worker, 0)`, cached so issuing is an OR.
    base: u64,
    max_seq: u64,
}

impl Snowflake {
    /// A generator for `worker` that issues only timestamps in `(floor_ms, reserved_until_ms]`
    /// and waits out a clock lag of at most `max_wait_ms`.
    pub fn new(
        layout: SnowflakeLayout,
        worker: u32,
        floor_ms: u64,
        reserved_until_ms: u64,
        max_wait_ms: u64,
    ) -> Result<Self, LayoutError> {
        layout.validate()?;
        if worker > layout.max_worker() {
            return Err(LayoutError::WorkerOutOfRange { worker, max_worker: layout.max_worker() });
        }
        Ok(Self {
            layout,
            worker,
            guard: TimeGuard::new(floor_ms, reserved_until_ms, max_wait_ms),
            next_seq: 0,
            base: 0,
            max_seq: u64::from(layout.max_sequence()),
        })
    }

    /// One ID at `now_ms`.
    pub fn next_id(&mut self, now_ms: u64) -> Result<u64, Refusal> {
        let mut one = [0u64; 1];
        self.fill(now_ms, &mut one)?;
        Ok(one[0])
    }

    /// Fill `out` with as many IDs as the current millisecond still has sequence numbers for.
    ///
    /// Returns how many were written (the prefix of `out`): at least 1 on `Ok`, unless `out`
    /// is empty, which returns `Ok(0)` without touching the clock state. `Err` only when no ID
    /// could be issued; a short batch means the millisecond ran out and the next call will say
    /// how long to wait.
    pub fn fill(&mut self, now_ms: u64, out: &mut [u64]) -> Result<usize, Refusal> {
        if out.is_empty() {
            return Ok(0);
        }
        self.admit(now_ms)?;
        // Room is >= 1: the guard admitted `now_ms`, so its counter is not exhausted.
        let room = self.max_seq + 1 - self.next_seq;
        let n = room.min(out.len() as u64) as usize;
        let first = self.base | self.next_seq;
        for (slot, id) in out[..n].iter_mut().zip(first..) {
            *slot = id;
        }
        self.next_seq += n as u64;
        if self.next_seq > self.max_seq {
            self.guard.exhaust();
        }
        Ok(n)
    }

    /// Raise the durable reservation (after the driver has persisted it).
    pub fn set_reserved_until(&mut self, ms: u64) {
        self.guard.set_reserved_until(ms);
    }

    pub fn worker(&self) -> u32 {
        self.worker
    }

    pub fn layout(&self) -> &SnowflakeLayout {
        &self.layout
    }

    /// The last used timestamp (the floor until the first ID).
    pub fn last_ms(&self) -> u64 {
        self.guard.last_ms()
    }

    pub fn reserved_until_ms(&self) -> u64 {
        self.guard.reserved_until_ms()
    }

    /// Range-check `now_ms`, ask the guard, and start a fresh sequence on a new millisecond.
    fn admit(&mut self, now_ms: u64) -> Result<(), Refusal> {
        if now_ms < self.layout.epoch_ms || now_ms > self.layout.max_timestamp_ms() {
            return Err(Refusal::OutOfRange { now_ms });
        }
        if let Tick::Advanced(ms) = self.guard.admit(now_ms)? {
            self.base = self.layout.compose(ms, self.worker, 0);
            self.next_seq = 0;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_worker_outside_layout() {
        let layout = SnowflakeLayout::default();
        assert_eq!(
            Snowflake::new(layout, 1024, 0, 0, 0).unwrap_err(),
            LayoutError::WorkerOutOfRange { worker: 1024, max_worker: 1023 }
        );
        let bad = SnowflakeLayout { sequence_bits: 13, ..layout };
        assert!(matches!(Snowflake::new(bad, 0, 0, 0, 0), Err(LayoutError::BitSum { .. })));
    }

    #[test]
    fn ids_carry_worker_and_time() {
        let layout = SnowflakeLayout::default();
        let now = layout.epoch_ms + 12_345;
        let mut g = Snowflake::new(layout, 77, 0, u64::MAX, 0).unwrap();
        let a = g.next_id(now).unwrap();
        let b = g.next_id(now).unwrap();
        assert_eq!(b, a + 1);
        let parts = layout.decompose(b);
        assert_eq!((parts.timestamp_ms, parts.worker, parts.sequence), (now, 77, 1));
    }

    #[test]
    fn out_of_range_timestamps() {
        let layout = SnowflakeLayout::default();
        let mut g = Snowflake::new(layout, 0, 0, u64::MAX, 0).unwrap();
        let before = layout.epoch_ms - 1;
        let after = layout.max_timestamp_ms() + 1;
        assert_eq!(g.next_id(before), Err(Refusal::OutOfRange { now_ms: before }));
        assert_eq!(g.next_id(after), Err(Refusal::OutOfRange { now_ms: after }));
        assert!(g.next_id(layout.epoch_ms).is_ok());
        assert!(g.next_id(layout.max_timestamp_ms()).is_ok());
    }
}
