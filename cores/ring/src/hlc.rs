//! Hybrid logical clocks (Kulkarni et al.): a timestamp that is close to physical time, never
//! goes backwards on a node, and is always after every timestamp the node has seen — so
//! last-writer-wins picks a write that happened after the ones it replaced, even with skewed
//! clocks. Ties between nodes are broken by node id.

use serde::{Deserialize, Serialize};

use crate::ring::NodeId;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Hlc {
    pub wall_ms: u64,
    pub logical: u32,
    pub node: NodeId,
}

/// A node's clock state: the last timestamp it issued or saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HlcClock {
    node: NodeId,
    last: (u64, u32),
}

impl HlcClock {
    pub fn new(node: NodeId) -> Self {
        Self { node, last: (0, 0) }
    }

    /// A timestamp for a local event at physical time `now_ms`.
    pub fn now(&mut self, now_ms: u64) -> Hlc {
        self.last = if now_ms > self.last.0 { (now_ms, 0) } else { (self.last.0, self.last.1.saturating_add(1)) };
        Hlc { wall_ms: self.last.0, logical: self.last.1, node: self.node }
    }

    /// Take in a timestamp seen from elsewhere, so the next local one is after it.
    pub fn observe(&mut self, seen: Hlc) {
        if (seen.wall_ms, seen.logical) > self.last {
            self.last = (seen.wall_ms, seen.logical);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_never_go_back_and_follow_what_was_seen() {
        let mut a = HlcClock::new(1);
        let t1 = a.now(1000);
        let t2 = a.now(900); // the clock stepped back
        assert!(t2 > t1);
        let mut b = HlcClock::new(2);
        b.observe(HlcClock::new(3).now(5000)); // a node far ahead
        let t3 = b.now(1000);
        assert!(t3.wall_ms == 5000 && t3.logical == 1);
        assert!(b.now(6000) > t3);
    }
}
