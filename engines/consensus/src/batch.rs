//! Proposals batched into one Raft entry.
//!
//! openraft 0.9 takes one client write at a time: each entry is its own trip through the core
//! (append, replicate, apply, reply), and a follower forwards each write in its own RPC. A system
//! whose state machine does not need a distinct log index per command can propose through
//! [`Consensus::propose_batched`](crate::Consensus::propose_batched): commands that arrive while a
//! batch is in flight go together as one entry of the reserved system [`BATCH`], applied in order
//! (each with the entry's index) and answered one by one.

use std::sync::{Arc, Mutex};

use tokio::sync::oneshot;

use crate::consensus::ConsensusError;
use crate::types::{Command, Reply};

/// The reserved system name of a batch entry; its payload is a postcard `Vec<Command>`, its
/// reply a postcard `Vec<Reply>`.
pub const BATCH: &str = "__batch";
/// At most this many commands go in one entry.
pub(crate) const BATCH_MAX: usize = 512;
/// Batches in flight at once per node, by default (`batches_in_flight`).
pub(crate) const IN_FLIGHT: usize = 2;

pub(crate) type Waiter = oneshot::Sender<Result<Vec<u8>, ConsensusError>>;

pub(crate) struct Batcher {
    pub(crate) state: Mutex<BatchState>,
    /// At most this many drivers (batches in flight) at once.
    in_flight: usize,
}

impl Default for Batcher {
    fn default() -> Self {
        Self::new(IN_FLIGHT)
    }
}

#[derive(Default)]
pub(crate) struct BatchState {
    pub(crate) queue: Vec<(Command, Waiter)>,
    /// Driver tasks running.
    pub(crate) drivers: usize,
}

impl Batcher {
    pub(crate) fn new(in_flight: usize) -> Self {
        Self { state: Mutex::default(), in_flight: in_flight.max(1) }
    }

    /// Queue a command; `true` if the caller should start a driver.
    pub(crate) fn push(&self, cmd: Command, waiter: Waiter) -> bool {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        st.queue.push((cmd, waiter));
        if st.drivers < self.in_flight {
            st.drivers += 1;
            true
        } else {
            false
        }
    }

    /// For the proposer that was just told to start a driver: its own command back, if it is
    /// the only one queued, to propose it itself (sparing a task hand-off when writes come one
    /// at a time). The caller still holds the driver's slot and must [`release`](Self::release)
    /// it afterwards.
    pub(crate) fn take_lone(&self) -> Option<(Command, Waiter)> {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if st.queue.len() == 1 { st.queue.pop() } else { None }
    }

    /// Give up a driver's slot; `true` if commands were queued meanwhile, in which case the
    /// slot is kept and the caller must start a driver for them.
    pub(crate) fn release(&self) -> bool {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if st.queue.is_empty() {
            st.drivers -= 1;
            false
        } else {
            true
        }
    }

    /// The next batch, or `None` (and the driver stops) when the queue is empty.
    pub(crate) fn next(&self) -> Option<Vec<(Command, Waiter)>> {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if st.queue.is_empty() {
            st.drivers -= 1;
            return None;
        }
        let n = st.queue.len().min(BATCH_MAX);
        Some(st.queue.drain(..n).collect())
    }
}

/// A driver's slot held by a proposer that sends its lone command itself
/// ([`Batcher::take_lone`]). Dropping it — when the proposal ends, or when the caller drops the
/// future midway — frees the slot, or, if commands queued meanwhile, keeps it and calls
/// `restart` to start a driver for them.
pub(crate) struct LoneSlot<'a, F: FnMut()> {
    batcher: &'a Batcher,
    restart: F,
}

impl<'a, F: FnMut()> LoneSlot<'a, F> {
    pub(crate) fn new(batcher: &'a Batcher, restart: F) -> Self {
        Self { batcher, restart }
    }
}

impl<F: FnMut()> Drop for LoneSlot<'_, F> {
    fn drop(&mut self) {
        if self.batcher.release() {
            (self.restart)();
        }
    }
}

/// Answer every waiter of a batch from the batch entry's reply (or its error).
pub(crate) fn answer(batch: Vec<(Command, Waiter)>, result: Result<Vec<u8>, ConsensusError>) {
    let replies: Result<Vec<Reply>, ConsensusError> = result.and_then(|bytes| {
        postcard::from_bytes(&bytes).map_err(|e| ConsensusError::Unknown(format!("a bad batch reply: {e}")))
    });
    match replies {
        Ok(replies) if replies.len() == batch.len() => {
            for ((_, w), r) in batch.into_iter().zip(replies) {
                let _ = w.send(match r {
                    Reply::Data(d) => Ok(d),
                    Reply::NoSuchSystem(s) => Err(ConsensusError::NoSuchSystem(s)),
                    Reply::None => Ok(Vec::new()),
                });
            }
        }
        Ok(replies) => {
            let e = ConsensusError::Unknown(format!("{} replies for {} commands", replies.len(), batch.len()));
            for (_, w) in batch {
                let _ = w.send(Err(e.clone()));
            }
        }
        Err(e) => {
            for (_, w) in batch {
                let _ = w.send(Err(e.clone()));
            }
        }
    }
}

/// The batcher as the consensus handle keeps it.
pub(crate) type Shared = Arc<Batcher>;

#[cfg(test)]
mod tests {
    use super::*;

    fn waiter() -> (Waiter, oneshot::Receiver<Result<Vec<u8>, ConsensusError>>) {
        oneshot::channel()
    }

    fn cmd() -> Command {
        Command { system: "s".into(), payload: vec![] }
    }

    #[test]
    fn each_command_gets_its_own_reply_and_a_failed_batch_fails_them_all() {
        let (a, mut ra) = waiter();
        let (b, mut rb) = waiter();
        let replies = vec![Reply::Data(b"one".to_vec()), Reply::NoSuchSystem("s".into())];
        answer(vec![(cmd(), a), (cmd(), b)], Ok(postcard::to_allocvec(&replies).unwrap()));
        assert_eq!(ra.try_recv().unwrap().unwrap(), b"one");
        assert!(matches!(rb.try_recv().unwrap(), Err(ConsensusError::NoSuchSystem(_))));

        let (a, mut ra) = waiter();
        let (b, mut rb) = waiter();
        answer(vec![(cmd(), a), (cmd(), b)], Err(ConsensusError::Unknown("lost".into())));
        assert!(matches!(ra.try_recv().unwrap(), Err(ConsensusError::Unknown(_))));
        assert!(matches!(rb.try_recv().unwrap(), Err(ConsensusError::Unknown(_))));
    }

    #[test]
    fn drivers_are_bounded_and_stop_when_the_queue_is_empty() {
        let b = Batcher::default();
        let starts: Vec<bool> = (0..4).map(|_| b.push(cmd(), waiter().0)).collect();
        assert_eq!(starts.iter().filter(|s| **s).count(), IN_FLIGHT.min(4));
        assert_eq!(b.next().map(|v| v.len()), Some(4));
        assert!(b.next().is_none());
        assert!(b.next().is_none());
        assert!(b.push(cmd(), waiter().0), "a stopped driver is replaced");
    }

    #[tokio::test]
    async fn a_lone_proposal_dropped_midway_frees_its_slot_or_hands_it_on() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let restarts = AtomicUsize::new(0);
        let b = Batcher::default();
        // The caller takes its lone command and proposes it holding the slot; its future is
        // dropped while the proposal is out (the client went away).
        let dropped_midway = || async {
            let proposing = async {
                let _slot = LoneSlot::new(&b, || {
                    restarts.fetch_add(1, Ordering::SeqCst);
                });
                std::future::pending::<()>().await;
            };
            tokio::select! { biased; _ = proposing => unreachable!(), _ = std::future::ready(()) => {} }
        };
        assert!(b.push(cmd(), waiter().0));
        assert!(b.take_lone().is_some());
        dropped_midway().await;
        assert_eq!((b.state.lock().unwrap().drivers, restarts.load(Ordering::SeqCst)), (0, 0), "slot freed");

        // Commands queued while it was out: the slot is kept and a driver started for them.
        assert!(b.push(cmd(), waiter().0));
        assert!(b.take_lone().is_some());
        assert!(b.push(cmd(), waiter().0), "a second driver starts");
        assert!(!b.push(cmd(), waiter().0), "queued behind both");
        dropped_midway().await;
        assert_eq!((b.state.lock().unwrap().drivers, restarts.load(Ordering::SeqCst)), (IN_FLIGHT, 1));
    }

    #[test]
    fn the_number_of_drivers_follows_the_setting() {
        let b = Batcher::new(3);
        assert_eq!((0..5).filter(|_| b.push(cmd(), waiter().0)).count(), 3);
        let b = Batcher::new(0);
        assert_eq!((0..5).filter(|_| b.push(cmd(), waiter().0)).count(), 1, "never fewer than one");
    }

    #[test]
    fn a_lone_proposal_is_taken_back_and_its_slot_passes_to_what_queued_meanwhile() {
        let b = Batcher::default();
        assert!(b.push(cmd(), waiter().0));
        assert!(b.take_lone().is_some(), "the only command queued is handed back");
        assert!(b.push(cmd(), waiter().0), "a second driver starts while the lone one is out");
        assert!(!b.push(cmd(), waiter().0), "both slots busy: the command waits in the queue");
        assert!(b.release(), "commands queued meanwhile: the slot is kept for a new driver");
        assert_eq!(b.state.lock().unwrap().drivers, IN_FLIGHT);

        let b = Batcher::default();
        assert!(b.push(cmd(), waiter().0));
        assert!(b.push(cmd(), waiter().0));
        assert!(b.take_lone().is_none(), "two queued commands go as a batch");
        assert_eq!(b.next().map(|v| v.len()), Some(2));

        let b = Batcher::default();
        assert!(b.push(cmd(), waiter().0));
        assert!(b.take_lone().is_some());
        assert!(!b.release(), "nothing queued: the slot is freed");
        assert_eq!(b.state.lock().unwrap().drivers, 0);
    }
}
