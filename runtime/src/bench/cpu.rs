//! CPU time used by server processes (every thread, user and system), from `/proc/<pid>/stat`
//! (read through the `procfs` crate). Work per operation — operations per server CPU-second —
//! holds up on a shared, noisy machine where throughput does not: another process taking a core
//! halves a server's throughput but not the CPU it spends on each request.

use std::future::Future;
use std::time::Duration;

use super::BenchOpts;

/// The server processes whose CPU a benchmark counts.
#[derive(Debug, Clone)]
pub struct CpuMeter {
    pids: Vec<u32>,
}

impl CpuMeter {
    pub fn new(pids: impl IntoIterator<Item = u32>) -> Self {
        Self { pids: pids.into_iter().collect() }
    }

    /// CPU time the processes have used so far; `None` if one of them cannot be read (gone, or
    /// no `/proc`).
    pub fn used(&self) -> Option<Duration> {
        let mut ticks = 0u64;
        for pid in &self.pids {
            let stat = procfs::process::Process::new(i32::try_from(*pid).ok()?).ok()?.stat().ok()?;
            ticks += stat.utime + stat.stime;
        }
        Some(Duration::from_micros(ticks.saturating_mul(1_000_000) / procfs::ticks_per_second().max(1)))
    }

    /// Run `scenario` (a `measure_*` call with `opts`) and return, beside its result, the CPU the
    /// processes used during its measured window (after the warm-up, for the duration).
    pub async fn during<T>(&self, opts: &BenchOpts, scenario: impl Future<Output = T>) -> (T, Option<Duration>) {
        let sample = async {
            tokio::time::sleep(opts.warmup).await;
            let start = self.used();
            tokio::time::sleep(opts.duration).await;
            Some(self.used()?.saturating_sub(start?))
        };
        tokio::join!(scenario, sample)
    }
}

/// CPU time (user and system) used so far by this process's child processes that have ended
/// and been waited for — a load generator run to completion, say: the difference across one
/// run shows whether the load generator, not the server, was the limit.
pub fn children_cpu() -> Option<Duration> {
    let u = nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_CHILDREN).ok()?;
    let us = |t: nix::sys::time::TimeVal| {
        u64::try_from(t.tv_sec()).unwrap_or(0) * 1_000_000 + u64::try_from(t.tv_usec()).unwrap_or(0)
    };
    Some(Duration::from_micros(us(u.user_time()) + us(u.system_time())))
}

/// Operations per CPU-second (0 when no CPU was counted).
pub fn ops_per_cpu_sec(ops: u64, cpu: Duration) -> f64 {
    if cpu.is_zero() { 0.0 } else { ops as f64 / cpu.as_secs_f64() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_meter_counts_cpu_this_process_burns() {
        // Spin until the meter has seen 100 ms of CPU (however long a busy machine makes that
        // take); it must get there, and never count more CPU than the wall time allows.
        let meter = CpuMeter::new([std::process::id()]);
        let before = meter.used().expect("this process's /proc/<pid>/stat");
        let start = std::time::Instant::now();
        let mut x = 0u64;
        let used = loop {
            for _ in 0..100_000 {
                x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
            }
            let used = meter.used().unwrap() - before;
            if used >= Duration::from_millis(100) {
                break used;
            }
            assert!(start.elapsed() < Duration::from_secs(60), "60 s of spinning counted as {used:?}");
        };
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as u32;
        assert!(used <= start.elapsed() * cores + Duration::from_millis(20), "{used:?} in {:?}", start.elapsed());
        assert!(CpuMeter::new([u32::MAX]).used().is_none(), "a process that does not exist");
        assert_eq!(ops_per_cpu_sec(500, Duration::from_millis(250)), 2000.0);
        assert_eq!(ops_per_cpu_sec(500, Duration::ZERO), 0.0);
    }

    #[test]
    fn children_cpu_counts_a_waited_for_child() {
        // A child that burns CPU until it has used 100 ms of it (however busy the machine).
        let before = children_cpu().expect("getrusage");
        let status = std::process::Command::new("sh")
            .args([
                "-c",
                "while read -r _ _ _ _ _ _ _ _ _ _ _ _ _ t _ < /proc/$$/stat && [ \"$t\" -lt 10 ]; do :; done",
            ])
            .status()
            .expect("sh");
        assert!(status.success());
        let used = children_cpu().unwrap() - before;
        assert!(used >= Duration::from_millis(50), "a child that spun for 100 ms counted as {used:?}");
    }
}
