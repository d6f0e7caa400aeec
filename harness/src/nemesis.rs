//! The nemesis: faults chosen from a seeded RNG, so a run is reproducible from its seed.
//!
//! Each fault is applied by [`Nemesis::strike`] and undone by [`Nemesis::undo`]; a run picks
//! from the kinds it was given (`--nemesis kill,partition,…`).

use std::str::FromStr;

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde::Serialize;

use crate::cluster::Cluster;

/// The kinds of fault a run may draw from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    /// SIGKILL a random node, restart it on the same data.
    Kill,
    /// SIGKILL the leader, restart it.
    KillLeader,
    /// SIGSTOP a node, then SIGCONT.
    Pause,
    /// Cut one node off from all others.
    Isolate,
    /// Cut the leader off from all others.
    IsolateLeader,
    /// Split the nodes into two sides (a minority and a majority).
    Halves,
    /// Two sides that cannot talk, and one node that talks to both.
    Bridge,
    /// Delay everything one node sends by 50–300 ms.
    Latency,
    /// Move one node's clock by up to ±60 s.
    Clock,
    /// Remove a follower from the membership, then add it back.
    Membership,
    /// Cut the leader's power (any node's on a ring): its disk stalls, and when the fault ends
    /// it is killed and restarts with only what its disk held when the stall began (a copy
    /// taken then), losing everything written since — the page cache too.
    Power,
}

impl Kind {
    pub const ALL: [Kind; 11] = [
        Kind::Kill,
        Kind::KillLeader,
        Kind::Pause,
        Kind::Isolate,
        Kind::IsolateLeader,
        Kind::Halves,
        Kind::Bridge,
        Kind::Latency,
        Kind::Clock,
        Kind::Membership,
        Kind::Power,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Kind::Kill => "kill",
            Kind::KillLeader => "kill-leader",
            Kind::Pause => "pause",
            Kind::Isolate => "isolate",
            Kind::IsolateLeader => "isolate-leader",
            Kind::Halves => "halves",
            Kind::Bridge => "bridge",
            Kind::Latency => "latency",
            Kind::Clock => "clock",
            Kind::Membership => "membership",
            Kind::Power => "power",
        }
    }

    /// `all`, or a comma-separated list of names; `partition` means isolate, isolate-leader,
    /// halves and bridge.
    pub fn parse_list(s: &str) -> Result<Vec<Kind>, String> {
        let mut out = Vec::new();
        for name in s.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            match name {
                "all" => out.extend(Kind::ALL),
                "partition" => out.extend([Kind::Isolate, Kind::IsolateLeader, Kind::Halves, Kind::Bridge]),
                other => out.push(other.parse()?),
            }
        }
        out.dedup();
        if out.is_empty() {
            return Err("name at least one nemesis".into());
        }
        Ok(out)
    }
}

impl FromStr for Kind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Kind::ALL.into_iter().find(|k| k.name() == s).ok_or_else(|| {
            let names: Vec<&str> = Kind::ALL.iter().map(|k| k.name()).collect();
            format!("no nemesis `{s}`; known: all, partition, {}", names.join(", "))
        })
    }
}

/// One thing the nemesis did (recorded beside the history, drawn on the timeline).
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "fault", rename_all = "kebab-case")]
pub enum Fault {
    KillRestart {
        node: usize,
    },
    KillLeader {
        node: usize,
    },
    Pause {
        node: usize,
    },
    /// Links cut (both directions); `kind` is isolate, isolate-leader, halves or bridge.
    Partition {
        kind: &'static str,
        cut: Vec<(usize, usize)>,
    },
    Latency {
        node: usize,
        delay_ms: u64,
    },
    ClockSkew {
        node: usize,
        offset_ms: i64,
    },
    /// Removed from the membership (`removed` false: the cluster refused; nothing to undo).
    Membership {
        node: usize,
        removed: bool,
    },
    /// A ring node left (its data moved to the others), then rejoined.
    RingLeave {
        node: usize,
        left: bool,
    },
    /// The node's disk stalled and was imaged; at the end it is killed and restarted on the image.
    PowerLoss {
        node: usize,
    },
}

impl Fault {
    /// A short label for the timeline.
    pub fn label(&self) -> String {
        match self {
            Fault::KillRestart { node } => format!("kill -9 n{node}"),
            Fault::KillLeader { node } => format!("kill -9 leader n{node}"),
            Fault::Pause { node } => format!("pause n{node}"),
            Fault::Partition { kind, cut } => {
                let links: Vec<String> = cut.iter().map(|(a, b)| format!("{a}-{b}")).collect();
                format!("{kind} (cut {})", links.join(" "))
            }
            Fault::Latency { node, delay_ms } => format!("n{node} +{delay_ms} ms"),
            Fault::ClockSkew { node, offset_ms } => format!("n{node} clock {offset_ms:+} ms"),
            Fault::Membership { node, removed } => {
                format!("remove n{node}{}", if *removed { "" } else { " (refused)" })
            }
            Fault::RingLeave { node, left } => {
                format!("n{node} leaves the ring{}", if *left { "" } else { " (refused)" })
            }
            Fault::PowerLoss { node } => format!("power loss n{node}"),
        }
    }
}

pub struct Nemesis {
    rng: StdRng,
    kinds: Vec<Kind>,
}

impl Nemesis {
    pub fn new(seed: u64, kinds: Vec<Kind>) -> Self {
        assert!(!kinds.is_empty(), "a nemesis needs at least one kind of fault");
        Self { rng: StdRng::seed_from_u64(seed), kinds }
    }

    /// Pick and apply one fault (it is undone by `undo`).
    pub async fn strike(&mut self, c: &mut Cluster) -> Fault {
        let n = c.nodes.len();
        let node = self.rng.random_range(1..=n);
        let kind = self.kinds[self.rng.random_range(0..self.kinds.len())];
        match kind {
            Kind::Kill => {
                c.kill9(node);
                Fault::KillRestart { node }
            }
            Kind::KillLeader if c.ring_only => {
                c.kill9(node);
                Fault::KillRestart { node }
            }
            Kind::KillLeader => {
                let leader = c.leader().await;
                c.kill9(leader);
                Fault::KillLeader { node: leader }
            }
            Kind::Pause => {
                c.pause(node);
                Fault::Pause { node }
            }
            Kind::Isolate | Kind::IsolateLeader => {
                let node = if kind == Kind::IsolateLeader && !c.ring_only { c.leader().await } else { node };
                let cut = (1..=n).filter(|p| *p != node).map(|p| (node, p)).collect();
                self.cut(c, kind.name(), cut).await
            }
            Kind::Halves => {
                let mut ids: Vec<usize> = (1..=n).collect();
                ids.shuffle(&mut self.rng);
                let (minority, majority) = ids.split_at(n / 2);
                let cut = minority.iter().flat_map(|a| majority.iter().map(move |b| (*a, *b))).collect();
                self.cut(c, "halves", cut).await
            }
            Kind::Bridge => {
                let mut ids: Vec<usize> = (1..=n).collect();
                ids.shuffle(&mut self.rng);
                let rest = &ids[1..];
                let (a, b) = rest.split_at(rest.len() / 2);
                let cut = a.iter().flat_map(|x| b.iter().map(move |y| (*x, *y))).collect();
                self.cut(c, "bridge", cut).await
            }
            Kind::Latency => {
                let delay_ms = self.rng.random_range(50..=300);
                c.slow(node, delay_ms).await;
                Fault::Latency { node, delay_ms }
            }
            Kind::Clock => {
                let offset_ms = self.rng.random_range(-60_000..=60_000);
                c.skew_clock(node, offset_ms).await;
                Fault::ClockSkew { node, offset_ms }
            }
            Kind::Membership if c.ring_only => {
                let removed = c.ring_leave(node, true).await;
                Fault::RingLeave { node, left: removed }
            }
            Kind::Membership => {
                let leader = c.leader().await;
                let node = (1..=n).filter(|id| *id != leader).nth(self.rng.random_range(0..n - 1)).unwrap_or(node);
                let removed = c.remove_member(node).await;
                Fault::Membership { node, removed }
            }
            Kind::Power => {
                // The leader: only its own entries are reported before their fsync.
                let node = if c.ring_only { node } else { c.leader().await };
                // Nothing is synced from the stall on, so the image loses nothing a real disk
                // would keep.
                c.stall_disk(node, true).await;
                c.image_disk(node).expect("the node's data directory can be copied");
                Fault::PowerLoss { node }
            }
        }
    }

    async fn cut(&mut self, c: &Cluster, kind: &'static str, cut: Vec<(usize, usize)>) -> Fault {
        c.cut(&cut).await;
        Fault::Partition { kind, cut }
    }

    pub async fn undo(&mut self, c: &mut Cluster, f: &Fault) {
        match f {
            Fault::KillRestart { node } | Fault::KillLeader { node } => c.restart(*node).await,
            Fault::Pause { node } => c.resume(*node),
            Fault::Partition { .. } | Fault::Latency { .. } => c.heal().await,
            Fault::ClockSkew { node, .. } => c.skew_clock(*node, 0).await,
            Fault::Membership { node, removed: true } => c.readd_member(*node).await,
            Fault::Membership { removed: false, .. } => {}
            Fault::RingLeave { node, left: true } => {
                c.ring_leave(*node, false).await;
            }
            Fault::RingLeave { left: false, .. } => {}
            Fault::PowerLoss { node } => {
                c.kill9(*node);
                c.revert_disk(*node).expect("the node's disk image can be put back");
                c.restart(*node).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nemesis_lists_parse_and_say_what_is_wrong() {
        assert_eq!(Kind::parse_list("kill,pause").unwrap(), vec![Kind::Kill, Kind::Pause]);
        assert_eq!(Kind::parse_list("all").unwrap().len(), Kind::ALL.len());
        assert_eq!(Kind::parse_list("partition").unwrap().len(), 4);
        let e = Kind::parse_list("kill,fire").unwrap_err();
        assert!(e.contains("fire") && e.contains("membership"), "{e}");
        assert!(Kind::parse_list("").is_err());
    }
}
