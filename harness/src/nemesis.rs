//! The nemesis: faults chosen from a seeded RNG, so a run is reproducible from its seed.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Serialize;

use crate::cluster::Cluster;

/// One thing the nemesis did (recorded beside the history).
#[derive(Debug, Clone, Serialize)]
pub enum Fault {
    /// SIGKILL a node, then restart it on the same data.
    KillRestart { node: usize },
    /// SIGSTOP a node for a while, then SIGCONT.
    Pause { node: usize },
    /// Cut a node off from all others (both directions), then heal.
    Isolate { node: usize },
    /// Kill the current leader, then restart it.
    KillLeader { node: usize },
}

pub struct Nemesis {
    rng: StdRng,
}

impl Nemesis {
    pub fn new(seed: u64) -> Self {
        Self { rng: StdRng::seed_from_u64(seed) }
    }

    /// Pick and apply one fault (it is undone by `undo`).
    pub async fn strike(&mut self, c: &mut Cluster) -> Fault {
        let n = c.nodes.len();
        let node = self.rng.random_range(1..=n);
        match self.rng.random_range(0..4u8) {
            0 => {
                c.kill9(node);
                Fault::KillRestart { node }
            }
            1 => {
                c.pause(node);
                Fault::Pause { node }
            }
            2 => {
                c.isolate(node).await;
                Fault::Isolate { node }
            }
            _ => {
                let leader = c.leader().await;
                c.kill9(leader);
                Fault::KillLeader { node: leader }
            }
        }
    }

    pub async fn undo(&mut self, c: &mut Cluster, f: &Fault) {
        match f {
            Fault::KillRestart { node } | Fault::KillLeader { node } => c.restart(*node).await,
            Fault::Pause { node } => c.resume(*node),
            Fault::Isolate { .. } => c.heal().await,
        }
    }
}
