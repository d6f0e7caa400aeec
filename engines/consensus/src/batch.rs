//! Proposals batched into one Raft entry.
//!
//! openraft 0.9 takes one client write at a time: each entry is its own trip through the core
//! (append, replicate, apply, reply), and a follower forwards each write in its own RPC. A system
//! whose state machine does not need a distinct log index per command can propose through
//! [`Consensus::propose_batched`](crate::Consensus::propose_batched): commands that arrive while a
//! batch is in flight go together as one entry of the reserved system [`BATCH`], applied in order
//! (each with the entry's index) and answered one by one.
//!
//! **Batches forwarded to the leader are batched again there.** A follower sends its batch to the
//! leader, which puts the commands in its own queue as one group: the leader's next entry carries
//! its own clients' commands and every follower's, so the cluster makes one Raft entry (one
//! append, one fsync on each node, one replication message) where it made one per node. A group
//! is never split across entries, so its commands share one fate (committed together, or none of
//! them), and a follower that is told "not the leader" can resend the whole of it.

use std::sync::{Arc, Mutex};

use prometheus_client::metrics::gauge::Gauge;

use std::time::Duration;

use tokio::sync::{Notify, oneshot};

use crate::consensus::ConsensusError;
use crate::types::{Command, Reply};

/// The reserved system name of a batch entry; its payload is a postcard `Vec<Command>`, its
/// reply a postcard `Vec<Reply>`.
pub const BATCH: &str = "__batch";
/// At most this many commands go in one entry.
pub(crate) const BATCH_MAX: usize = 512;
/// Batches in flight at once per node, by default (`batches_in_flight`). One: since the leader
/// batches the whole cluster's commands, a second batch in flight mostly split what one entry
/// would carry (more entries, more fsyncs) — puts and locks were both faster with one.
pub(crate) const IN_FLIGHT: usize = 1;
/// How long a driver may wait, by default (`batch_wait_us`), for the commands it has just
/// answered to come back before it sends the next batch ([`Batcher::gather`]).
pub(crate) const WAIT_US: u64 = 1_000;

pub(crate) type Waiter = oneshot::Sender<Result<Vec<u8>, ConsensusError>>;

pub(crate) struct Batcher {
    pub(crate) state: Mutex<BatchState>,
    /// At most this many drivers (batches in flight) at once.
    in_flight: usize,
    /// Commands waiting in the queue (the `batch_queued` metric).
    queued: Gauge,
    /// Rung whenever commands join the queue.
    arrived: tokio::sync::Notify,
}

#[derive(Default)]
pub(crate) struct BatchState {
    pub(crate) queue: Vec<Queued>,
    /// Driver tasks running.
    pub(crate) drivers: usize,
}

/// A queued command and who waits for its reply.
pub(crate) struct Queued {
    cmd: Command,
    waiter: Waiter,
    /// Goes in the same entry as the next one (a group from [`Batcher::push_group`]).
    joined: bool,
    /// A follower forwarded it (see [`Batch::forwarded`]).
    forwarded: bool,
}

/// The commands of one entry, in order.
pub(crate) struct Batch {
    pub(crate) items: Vec<(Command, Waiter)>,
    /// Which of them a follower forwarded. Those are proposed on this node only, never
    /// forwarded on: if it no longer leads they are answered "not the leader" and their
    /// follower resends them, rather than their coming back to a follower whose own batch slot
    /// waits for them.
    pub(crate) forwarded: Vec<bool>,
}

impl Batcher {
    pub(crate) fn new(in_flight: usize) -> Self {
        Self { state: Mutex::default(), in_flight: in_flight.max(1), queued: Gauge::default(), arrived: Notify::new() }
    }

    /// The number of commands waiting in the queue, kept up to date (for the node's metrics).
    pub(crate) fn queued(&self) -> Gauge {
        self.queued.clone()
    }

    /// Queue a command of this node's, or hand it back to propose at once ([`Push::Alone`]).
    pub(crate) fn push(&self, cmd: Command, waiter: Waiter) -> Push<(Command, Waiter)> {
        match self.push_group(vec![(cmd, waiter)], false) {
            Push::Alone(mut group) => match group.pop() {
                Some(item) => Push::Alone(item),
                None => Push::Queued,
            },
            Push::StartDriver => Push::StartDriver,
            Push::Queued => Push::Queued,
        }
    }

    /// Queue commands that must go in one entry (`forwarded`: a batch a follower forwarded),
    /// or hand them back to propose at once ([`Push::Alone`]).
    pub(crate) fn push_group(&self, group: Vec<(Command, Waiter)>, forwarded: bool) -> Push<Vec<(Command, Waiter)>> {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if st.drivers >= self.in_flight {
            self.enqueue(&mut st, group, forwarded);
            return Push::Queued;
        }
        st.drivers += 1;
        if st.queue.is_empty() {
            return Push::Alone(group);
        }
        self.enqueue(&mut st, group, forwarded);
        Push::StartDriver
    }

    fn enqueue(&self, st: &mut BatchState, group: Vec<(Command, Waiter)>, forwarded: bool) {
        let last = group.len().saturating_sub(1);
        st.queue.extend(group.into_iter().enumerate().map(|(i, (cmd, waiter))| Queued {
            cmd,
            waiter,
            joined: i < last,
            forwarded,
        }));
        self.queued.set(st.queue.len() as i64);
        self.arrived.notify_waiters();
    }

    fn len(&self) -> usize {
        self.state.lock().unwrap_or_else(|e| e.into_inner()).queue.len()
    }

    /// Before a driver takes its next batch: wait, at most `bound`, until the queue has grown by
    /// `answered` — the commands of the batch it has just answered, whose clients (under a
    /// steady load) send their next ones at once.
    ///
    /// Without this the clients split into cohorts: those answered by batch N come back while
    /// batch N+1, which carries everyone who arrived meanwhile, is in flight, so they wait for
    /// N+2 — each client waits about two entries, and each entry carries half the clients.
    /// On a leader and its followers alike (a follower's forward is its batch), at 16 writing
    /// clients over three members the entries carried ~5 commands and each cost about as much
    /// CPU as a lone write's. Gathering merges the cohorts into one entry. A lone writer never
    /// waits: a command that finds no driver running is proposed at once ([`Push::Alone`]).
    pub(crate) async fn gather(&self, answered: usize, bound: Duration) {
        if answered == 0 || bound.is_zero() {
            return;
        }
        let target = self.len() + answered;
        let deadline = tokio::time::sleep(bound);
        tokio::pin!(deadline);
        loop {
            let arrived = self.arrived.notified();
            if self.len() >= target {
                return;
            }
            tokio::select! {
                _ = arrived => {}
                _ = &mut deadline => return,
            }
        }
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

    /// The next batch, or `None` (and the driver stops) when the queue is empty. At most
    /// [`BATCH_MAX`] commands, unless a group runs past it: a group is never split.
    pub(crate) fn next(&self) -> Option<Batch> {
        let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if st.queue.is_empty() {
            st.drivers -= 1;
            return None;
        }
        let mut n = st.queue.len().min(BATCH_MAX);
        while n < st.queue.len() && st.queue[n - 1].joined {
            n += 1;
        }
        let (items, forwarded) = st.queue.drain(..n).map(|q| ((q.cmd, q.waiter), q.forwarded)).unzip();
        self.queued.set(st.queue.len() as i64);
        Some(Batch { items, forwarded })
    }
}

/// What became of a pushed command (or group).
#[derive(Debug)]
pub(crate) enum Push<T> {
    /// Nothing was queued and a driver's slot was free: the caller holds that slot and proposes
    /// this itself, sparing a task hand-off when writes come one at a time (its waiter is not
    /// used). It must hold a [`LoneSlot`] meanwhile.
    Alone(T),
    /// Queued; the caller must start a driver (it holds the driver's slot).
    StartDriver,
    /// Queued behind the drivers running.
    Queued,
}

/// A driver's slot held by a proposer that sends its lone command itself ([`Push::Alone`]).
/// Dropping it — when the proposal ends, or when the caller drops the future midway — frees the
/// slot, or, if commands queued meanwhile, keeps it and calls `restart` to start a driver for
/// them.
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

    /// 'a' alone, 's' start a driver, 'q' queued.
    fn kind<T>(p: Push<T>) -> char {
        match p {
            Push::Alone(_) => 'a',
            Push::StartDriver => 's',
            Push::Queued => 'q',
        }
    }

    fn push(b: &Batcher) -> char {
        kind(b.push(cmd(), waiter().0))
    }

    #[test]
    fn drivers_are_bounded_and_stop_when_the_queue_is_empty() {
        let b = Batcher::new(2);
        let kinds: String = (0..5).map(|_| push(&b)).collect();
        assert_eq!(kinds, "aaqqq", "each into an empty queue while a slot is free, then queued");
        assert!(b.release(), "commands queued meanwhile: a lone proposer's slot passes to a driver");
        assert_eq!(b.next().map(|v| v.items.len()), Some(3));
        assert!(b.next().is_none());
        assert_eq!(b.state.lock().unwrap().drivers, 1, "the other lone proposer still holds its slot");
        assert!(!b.release(), "nothing queued: the slot is freed");
        assert_eq!(push(&b), 'a', "a stopped driver is replaced");
    }

    #[tokio::test]
    async fn a_lone_proposal_dropped_midway_frees_its_slot_or_hands_it_on() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        let restarts = AtomicUsize::new(0);
        let b = Batcher::new(2);
        // The caller proposes its lone command holding the slot; its future is dropped while
        // the proposal is out (the client went away).
        let dropped_midway = || async {
            let proposing = async {
                let _slot = LoneSlot::new(&b, || {
                    restarts.fetch_add(1, Ordering::SeqCst);
                });
                std::future::pending::<()>().await;
            };
            tokio::select! { biased; _ = proposing => unreachable!(), _ = std::future::ready(()) => {} }
        };
        assert_eq!(push(&b), 'a');
        dropped_midway().await;
        assert_eq!((b.state.lock().unwrap().drivers, restarts.load(Ordering::SeqCst)), (0, 0), "slot freed");

        // Commands queued while it was out: the slot is kept and a driver started for them.
        assert_eq!(push(&b), 'a');
        assert_eq!(push(&b), 'a', "a second lone proposal takes the second slot");
        assert_eq!(push(&b), 'q', "queued behind both");
        dropped_midway().await;
        assert_eq!((b.state.lock().unwrap().drivers, restarts.load(Ordering::SeqCst)), (2, 1));
    }

    #[tokio::test]
    async fn a_driver_gathers_until_the_answered_commands_are_back_or_the_bound_passes() {
        let b = std::sync::Arc::new(Batcher::new(1));
        assert_eq!(push(&b), 'a');
        assert_eq!(push(&b), 'q', "one queued while the lone proposal is out");

        // Three were answered: the driver waits until three more joined the one queued, and
        // not a moment longer (the bound here is far beyond the test's time limit).
        let long = Duration::from_secs(600);
        let gathering = tokio::spawn({
            let b = b.clone();
            async move {
                b.gather(3, long).await;
                b.len()
            }
        });
        for _ in 0..3 {
            tokio::task::yield_now().await;
            assert!(!gathering.is_finished(), "it took the batch before the answered commands were back");
            assert_eq!(push(&b), 'q');
        }
        let queued = tokio::time::timeout(Duration::from_secs(20), gathering).await.unwrap().unwrap();
        assert_eq!(queued, 4, "it took the batch as soon as all three were back");

        // Only one of two comes back: the bound ends the wait.
        let bound = Duration::from_millis(20);
        let t = std::time::Instant::now();
        let gathering = tokio::spawn({
            let b = b.clone();
            async move { b.gather(2, bound).await }
        });
        tokio::task::yield_now().await;
        assert_eq!(push(&b), 'q');
        tokio::time::timeout(Duration::from_secs(20), gathering).await.unwrap().unwrap();
        assert!(t.elapsed() >= bound, "waited out the bound");

        // Nothing answered (a driver's first batch), or waiting turned off: no wait at all.
        tokio::time::timeout(Duration::from_secs(20), async {
            b.gather(0, long).await;
            b.gather(5, Duration::ZERO).await;
        })
        .await
        .unwrap();
    }

    #[test]
    fn the_number_of_drivers_follows_the_setting() {
        let b = Batcher::new(3);
        assert_eq!((0..5).map(|_| push(&b)).collect::<String>(), "aaaqq");
        let b = Batcher::new(0);
        assert_eq!((0..5).map(|_| push(&b)).collect::<String>(), "aqqqq", "never fewer than one");
    }

    #[test]
    fn a_command_is_handed_back_only_into_an_empty_queue() {
        // Handing back and taking the slot happen under one lock: a proposer can never be
        // handed a command another proposer queued (and answer its caller with that reply).
        let b = Batcher::new(2);
        assert_eq!(push(&b), 'a');
        assert_eq!(push(&b), 'a');
        assert_eq!(push(&b), 'q', "both slots busy");
        assert!(b.release(), "commands queued meanwhile: the lone proposer's slot is kept for a new driver");
        assert!(matches!(b.push_group(vec![(cmd(), waiter().0), (cmd(), waiter().0)], true), Push::Queued));
        let batch = b.next().unwrap();
        assert_eq!(batch.items.len(), 3, "what queued goes to the driver, not to a proposer");
        assert_eq!(batch.forwarded, [false, true, true], "the forwarded group is marked as such");
        assert!(!b.release());
        assert_eq!(b.state.lock().unwrap().drivers, 1);
        assert_eq!(push(&b), 'a', "an empty queue and a free slot: handed back");
    }

    fn numbered(ids: std::ops::Range<u32>) -> Vec<(Command, Waiter)> {
        ids.map(|i| (Command { system: "s".into(), payload: i.to_be_bytes().to_vec() }, waiter().0)).collect()
    }

    fn ids(batch: &[(Command, Waiter)]) -> Vec<u32> {
        batch.iter().map(|(c, _)| u32::from_be_bytes(c.payload[..4].try_into().unwrap())).collect()
    }

    #[test]
    fn a_forwarded_group_is_never_split_across_entries() {
        let b = Batcher::new(1);
        assert!(matches!(b.push_group(numbered(0..3), true), Push::Alone(g) if g.len() == 3));
        let max = BATCH_MAX as u32;
        assert!(matches!(b.push_group(numbered(0..max - 2), true), Push::Queued));
        assert!(matches!(b.push_group(numbered(max - 2..max + 3), true), Push::Queued));
        assert!(matches!(b.push_group(numbered(max + 3..max + 5), true), Push::Queued));
        let first = b.next().unwrap().items;
        assert_eq!(ids(&first), (0..max + 3).collect::<Vec<_>>(), "the group crossing BATCH_MAX goes whole");
        assert_eq!(ids(&b.next().unwrap().items), vec![max + 3, max + 4]);
    }

    proptest::proptest! {
        /// Whatever is pushed, alone or in groups, comes out once each, in order, no group split,
        /// and no batch past BATCH_MAX unless one group carries it past.
        #[test]
        fn batches_keep_order_and_groups(groups in proptest::collection::vec(1usize..300, 1..12), in_flight in 1usize..4) {
            let b = Batcher::new(in_flight);
            let mut out: Vec<Vec<u32>> = Vec::new();
            let mut next_id = 0u32;
            let mut bounds = Vec::new();
            for g in &groups {
                let ids_in = next_id..next_id + *g as u32;
                next_id += *g as u32;
                bounds.push(ids_in.clone());
                match b.push_group(numbered(ids_in), true) {
                    Push::Alone(group) => {
                        out.push(ids(&group));
                        b.release();
                    }
                    Push::StartDriver | Push::Queued => {}
                }
            }
            while !b.state.lock().unwrap().queue.is_empty() {
                out.push(ids(&b.next().unwrap().items));
            }
            let flat: Vec<u32> = out.iter().flatten().copied().collect();
            proptest::prop_assert_eq!(flat, (0..next_id).collect::<Vec<_>>());
            for r in &bounds {
                proptest::prop_assert!(out.iter().any(|batch| batch.contains(&r.start) && batch.contains(&(r.end - 1))));
            }
            for batch in &out {
                let (first, last) = (batch[0], batch[batch.len() - 1]);
                let group = bounds.iter().find(|r| r.contains(&last)).unwrap();
                proptest::prop_assert_eq!(group.end - 1, last, "a batch ends where a group does");
                if batch.len() > BATCH_MAX {
                    proptest::prop_assert!(group.start < first + BATCH_MAX as u32, "only a group crossing BATCH_MAX carries a batch past it");
                }
            }
        }
    }
}
