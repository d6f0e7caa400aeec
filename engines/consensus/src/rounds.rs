//! Read-index rounds shared by concurrent readers.
//!
//! A read-index round costs the leader a heartbeat to a quorum (and a follower an RPC to the
//! leader). Readers that arrive together share one: a reader joins the next round that has not
//! started yet, never one already in flight (whose answer might predate the read), so every
//! reader's round starts after the reader arrived — which is all linearizability needs.

use std::future::Future;
use std::sync::{Arc, Mutex};

use tokio::sync::watch;

use crate::consensus::ConsensusError;

type Outcome = Option<Result<u64, ConsensusError>>;

#[derive(Default)]
pub(crate) struct Rounds {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// A driver task is running rounds.
    running: bool,
    /// The next round's readers (not started yet).
    pending: Option<watch::Sender<Outcome>>,
}

impl Rounds {
    /// Wait for a round that starts after this call; `round` runs one (by whichever caller
    /// finds no driver running, in a task of its own).
    pub(crate) async fn join<F, Fut>(self: &Arc<Self>, round: F) -> Result<u64, ConsensusError>
    where
        F: Fn() -> Fut + Send + 'static,
        Fut: Future<Output = Result<u64, ConsensusError>> + Send + 'static,
    {
        let (mut rx, start) = {
            let mut st = self.state.lock().unwrap_or_else(|e| e.into_inner());
            let rx = st.pending.get_or_insert_with(|| watch::channel(None).0).subscribe();
            let start = !st.running;
            st.running = true;
            (rx, start)
        };
        if start {
            let me = self.clone();
            tokio::spawn(async move {
                loop {
                    let tx = {
                        let mut st = me.state.lock().unwrap_or_else(|e| e.into_inner());
                        match st.pending.take() {
                            Some(tx) => tx,
                            None => {
                                st.running = false;
                                return;
                            }
                        }
                    };
                    tx.send_replace(Some(round().await));
                }
            });
        }
        match rx.wait_for(Option::is_some).await {
            Ok(r) => r.clone().unwrap_or(Err(ConsensusError::NotRunning)),
            Err(_) => Err(ConsensusError::NotRunning),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, Ordering};

    #[tokio::test]
    async fn concurrent_readers_share_rounds_that_start_after_they_arrive() {
        let rounds = Arc::new(Rounds::default());
        let started = Arc::new(AtomicU64::new(0));
        // A round reports how many rounds had started when it started.
        let round = {
            let started = started.clone();
            move || {
                let started = started.clone();
                async move {
                    let n = started.fetch_add(1, Ordering::SeqCst) + 1;
                    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                    Ok(n)
                }
            }
        };
        let mut tasks = Vec::new();
        for _ in 0..50 {
            let (rounds, round, started) = (rounds.clone(), round.clone(), started.clone());
            tasks.push(tokio::spawn(async move {
                let before = started.load(Ordering::SeqCst);
                let got = rounds.join(round).await.unwrap();
                assert!(got > before, "joined a round that started before the call ({got} <= {before})");
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        let n = started.load(Ordering::SeqCst);
        assert!(n < 50, "rounds were shared: {n} rounds for 50 readers");
    }
}
