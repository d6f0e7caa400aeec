//! The node's one source of wall-clock time. Pure cores never read a clock; the runtime reads
//! this one and passes `now` in. The offset lets fault tests skew a node's clock (at start with
//! `clock_offset_ms`, or while it runs) without touching the host's clock.

use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

#[derive(Debug, Clone, Default)]
pub struct Clock {
    offset_ms: Arc<AtomicI64>,
}

impl Clock {
    pub fn with_offset_ms(offset_ms: i64) -> Self {
        Self { offset_ms: Arc::new(AtomicI64::new(offset_ms)) }
    }

    /// Unix time in milliseconds, skewed by the offset. Saturates at 0 rather than wrapping.
    pub fn now_ms(&self) -> u64 {
        let wall = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0);
        wall.saturating_add(self.offset_ms.load(Ordering::Relaxed)).max(0) as u64
    }

    /// Move this node's clock by `delta_ms` (negative sets it back).
    pub fn skew(&self, delta_ms: i64) {
        self.offset_ms.fetch_add(delta_ms, Ordering::Relaxed);
    }

    pub fn offset_ms(&self) -> i64 {
        self.offset_ms.load(Ordering::Relaxed)
    }
}

/// `2026-11-24T22:25:27.123Z`.
pub fn format_rfc3339_ms(t: std::time::SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn skew_moves_the_reading() {
        let base = Clock::default();
        let skewed = Clock::with_offset_ms(-60_000);
        let (a, b) = (base.now_ms(), skewed.now_ms());
        assert!(a >= b + 59_000 && a <= b + 61_000, "{a} vs {b}");
        skewed.skew(60_000);
        assert!(skewed.now_ms() + 1_000 >= base.now_ms());
    }
}
