//! Watches the etcd-API suites share: a replay of a prefix's whole history from revision 1,
//! and a watch held open through a run (as an informer keeps one) that resumes on another
//! member when its stream breaks.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use etcd_client::{Client, ConnectOptions, EventType, GetOptions, GetResponse, WatchOptions, WatchResponse};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// One event as a watch delivered it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub(super) struct Seen {
    pub rev: i64,
    pub put: bool,
    pub key: String,
    pub value: String,
    /// The key's create revision (0 on a delete, as etcd sends it).
    pub create_rev: i64,
    /// When the watching client received it (ns since the run started; 0 in a replay).
    #[serde(skip)]
    pub observed_ns: u64,
}

impl Seen {
    /// What two watches of the same history must agree on (not when each saw it).
    pub fn fact(&self) -> (i64, bool, &str, &str) {
        (self.rev, self.put, &self.key, &self.value)
    }
}

fn events(msg: &WatchResponse, observed_ns: u64) -> impl Iterator<Item = Seen> + '_ {
    msg.events().iter().filter_map(move |e| {
        let kv = e.kv()?;
        Some(Seen {
            rev: kv.mod_revision(),
            put: e.event_type() == EventType::Put,
            key: String::from_utf8_lossy(kv.key()).into_owned(),
            value: String::from_utf8_lossy(kv.value()).into_owned(),
            create_rev: kv.create_revision(),
            observed_ns,
        })
    })
}

/// Every event under `prefix` from revision 1 through `target` (a revision the store has
/// reached): read until an event at `target` or later arrives, or a progress notification
/// says the watch has passed it.
pub(super) async fn replay(client: &mut Client, prefix: &str, target: i64) -> Result<Vec<Seen>, String> {
    let mut stream = client
        .watch(prefix, Some(WatchOptions::new().with_prefix().with_start_revision(1)))
        .await
        .map_err(|e| format!("watch: {e}"))?;
    let mut out: Vec<Seen> = Vec::new();
    let give_up = Instant::now() + Duration::from_secs(30);
    loop {
        let msg = match tokio::time::timeout(Duration::from_secs(1), stream.message()).await {
            Ok(m) => m.map_err(|e| format!("watch: {e}"))?.ok_or("the watch stream ended")?,
            Err(_) if Instant::now() > give_up => {
                return Err(format!("the watch stopped short of revision {target} after {} events", out.len()));
            }
            Err(_) => {
                // Quiet for a second: ask where the watch stands.
                stream.request_progress().await.map_err(|e| format!("watch progress: {e}"))?;
                continue;
            }
        };
        if msg.canceled() {
            return Err(format!("the watch was cancelled: {}", msg.cancel_reason()));
        }
        let progress = !msg.created() && msg.events().is_empty();
        out.extend(events(&msg, 0));
        let through = if progress { msg.header().map_or(0, |h| h.revision()) } else { out.last().map_or(0, |s| s.rev) };
        if through >= target {
            out.retain(|s| s.rev <= target);
            return Ok(out);
        }
    }
}

/// A linearizable read of `prefix` from the first member that answers one (after healing),
/// with a client connected to that member.
pub(super) async fn first_read(addrs: &[String], prefix: &str) -> Result<(Client, GetResponse), String> {
    let give_up = Instant::now() + Duration::from_secs(60);
    loop {
        let mut last = String::new();
        for a in addrs {
            let Ok(mut cl) = Client::connect([a.as_str()], None).await else { continue };
            match cl.get(prefix, Some(GetOptions::new().with_prefix())).await {
                Ok(r) => return Ok((cl, r)),
                Err(e) => last = e.to_string(),
            }
        }
        if Instant::now() > give_up {
            return Err(format!("no node answered a read after healing: {last}"));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// What the open watch has seen, in order.
pub(super) type Followed = Arc<Mutex<Vec<Seen>>>;

/// A watch on `prefix` held open from revision 1 through the whole run, as an etcd client
/// (an informer) keeps one: on a member picked at random; when its stream breaks (the member
/// was killed, lost its power or stopped answering HTTP/2 pings) it resumes on another member
/// from the revision after the last event it saw.
pub(super) async fn follow(addrs: Vec<String>, prefix: &'static str, seed: u64, start: Instant, followed: Followed) {
    let mut rng = StdRng::seed_from_u64(seed ^ 0xf011);
    let options = || {
        Some(
            ConnectOptions::new()
                .with_connect_timeout(Duration::from_secs(2))
                .with_keep_alive(Duration::from_secs(1), Duration::from_secs(2)),
        )
    };
    loop {
        let next = followed.lock().unwrap_or_else(|e| e.into_inner()).last().map_or(1, |s| s.rev + 1);
        let addr = &addrs[rng.random_range(0..addrs.len())];
        let watched = match Client::connect([addr.as_str()], options()).await {
            Ok(mut cl) => cl.watch(prefix, Some(WatchOptions::new().with_prefix().with_start_revision(next))).await,
            Err(e) => Err(e),
        };
        let Ok(mut stream) = watched else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        while let Ok(Some(msg)) = stream.message().await {
            if msg.canceled() {
                break;
            }
            let now = start.elapsed().as_nanos() as u64;
            followed.lock().unwrap_or_else(|e| e.into_inner()).extend(events(&msg, now));
        }
    }
}

/// Waits until the open watch has passed `target`, then compares it with the replay.
pub(super) async fn followed_matches(followed: &Followed, replay: &[Seen], target: i64) -> Result<(), String> {
    let give_up = Instant::now() + Duration::from_secs(60);
    loop {
        let seen = followed.lock().unwrap_or_else(|e| e.into_inner()).clone();
        if seen.last().is_some_and(|s| s.rev >= target) {
            let seen: Vec<&Seen> = seen.iter().filter(|s| s.rev <= target).collect();
            let n = replay.len().max(seen.len());
            if let Some(i) = (0..n).find(|i| replay.get(*i).map(Seen::fact) != seen.get(*i).map(|s| s.fact())) {
                return Err(format!(
                    "the watch held open through the faults differs from the replay at event {i}: {:?} where the \
                     replay has {:?}",
                    seen.get(i),
                    replay.get(i)
                ));
            }
            return Ok(());
        }
        if Instant::now() > give_up {
            return Err(format!(
                "the watch held open through the faults stopped at {:?}, short of revision {target}",
                seen.last()
            ));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub(super) fn check(ok: bool, msg: impl FnOnce() -> String) -> Result<(), String> {
    if ok { Ok(()) } else { Err(msg()) }
}
